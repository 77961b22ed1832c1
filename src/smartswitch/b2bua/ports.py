"""What the B2BUA asks of routing and billing, and what it tells them.

The B2BUA knows SIP; a :class:`CallPolicy` knows who may call where, for how long, and what a
call costs. The policy answers synchronously from in-memory views: the call path never waits on
a database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from smartswitch.sip.message import Request, Response
from smartswitch.sip.transaction import Address

if TYPE_CHECKING:
    from smartswitch.b2bua.call import Call


@dataclass(frozen=True, slots=True)
class Destination:
    """One place to try the call: the B leg's Request-URI, where to send it, what to present."""

    uri: str
    address: Address
    callee: str
    caller: str
    label: str = ""  # a peer name, for logs and CDRs
    context: object = None  # the policy's own data for this attempt (supplier, buying rate)
    flow: bool = False  # in-dialog requests follow the INVITE's address, not the callee's
    # Contact: a registered phone behind NAT is reached only through the mapping it keeps open


@dataclass(frozen=True, slots=True)
class RouteDecision:
    destinations: tuple[Destination, ...]
    max_duration: float | None = None  # seconds of answered time this call may last
    context: object = None  # the policy's own data for the call (customer, selling rate)
    fork: bool = False  # try every destination at once (a subscriber's contacts), first wins


@dataclass(frozen=True, slots=True)
class Rejection:
    """Refuse the call with this final response (e.g. 403, 404, 402, 503 with Reason)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


class CallPolicy(Protocol):
    def route(self, request: Request, source: Address, now: float) -> RouteDecision | Rejection:
        """Identify the caller, authorise and route the call."""

    def extend_call(self, call: Call) -> float:
        """The call reached the end of its granted time: seconds more it may last (0: cut it).

        Prepaid time is granted in slices so one call does not hold a customer's whole balance;
        asking at the boundary makes the cut exact when the money is gone."""

    def call_answered(self, call: Call) -> None:
        """The call was answered (suppliers' concurrent-call counts start here)."""

    def call_ended(self, call: Call, done: Callable[[], None]) -> None:
        """The call is over (answered or not): rate it, write its CDR, release its limits.

        ``done`` must be called once the CDR is durable: the B2BUA holds back the messages
        that tell the parties the call ended until then."""


class Registrations(Protocol):
    """The registrar, as the SIP application hands it REGISTERs."""

    def register(self, request: Request, source: Address, now: float) -> Response:
        """The response to a REGISTER received from ``source`` at ``now`` (the loop's clock)."""
