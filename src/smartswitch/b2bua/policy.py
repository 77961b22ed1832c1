"""What the B2BUA asks of routing and billing, and what it tells them.

The B2BUA knows SIP; a :class:`CallPolicy` knows who may call where, for how long, and what a
call costs. The policy answers synchronously from in-memory views: the call path never waits on
a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from smartswitch.sip.message import Request
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

    def call_answered(self, call: Call) -> None:
        """The call was answered (suppliers' concurrent-call counts start here)."""

    def call_ended(self, call: Call) -> None:
        """The call is over (answered or not): rate it, write its CDR, release its limits."""
