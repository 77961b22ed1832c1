"""What the B2BUA asks of routing and billing, and what it tells them.

The B2BUA knows SIP; a :class:`CallPolicy` knows who may call where, for how long, and what a
call costs. The policy answers synchronously from in-memory views: the call path never waits on
a database.

The seam, in the order of a call:

* :meth:`CallPolicy.route` refuses the call (a :class:`Rejection`) or takes it on: it returns
  a :class:`CallSession`, the policy's own object for this one call (a billed call, a DID
  call, a lab call), which keeps whatever the policy needs until the call's end.
* The session says where to try the call (:attr:`CallSession.destinations`, one after the
  other or all at once with :attr:`CallSession.fork`) and for how long it may last once
  answered (:attr:`CallSession.max_duration`).
* :meth:`CallSession.answered` names the attempt that was answered;
  :meth:`CallSession.extend` is asked for more time each time the granted time runs out.
* :meth:`CallSession.ended` gets a :class:`CallSummary`, a frozen account of the call, never
  the B2BUA's live call.

Times are the B2BUA's clock (the event loop's), as passed to :meth:`CallPolicy.route`.

Media (:class:`MediaRelay`): a destination whose :attr:`Destination.media` says ``relay`` has
its SDP offered to the relay before the INVITE leaves and answered before the 18x/200 reaches
the caller; the relay's session ends with the attempt (a failure, a route advance) or the call
(every end, every failure path). The relay answers later (it is a network service): each call
takes a ``reply`` that is called once, outside the B2BUA's input, and the B2BUA resumes from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from smartswitch.model.cdr import HangupSide
from smartswitch.model.media import DIRECT, CallRef, MediaFailure, MediaOptions, MediaSettings
from smartswitch.sip.message import Request, Response
from smartswitch.sip.transaction import Address


@dataclass(frozen=True, slots=True)
class Destination:
    """One place to try the call: the B leg's Request-URI, where to send it, what to present."""

    uri: str
    address: Address
    callee: str
    caller: str
    label: str = ""  # a peer name, for logs and CDRs
    flow: bool = False  # in-dialog requests follow the INVITE's address, not the callee's
    # Contact: a registered phone behind NAT is reached only through the mapping it keeps open
    media: MediaSettings = DIRECT  # the call's media with this destination (both parties')


@dataclass(frozen=True, slots=True)
class Rejection:
    """Refuse the call with this final response (e.g. 403, 404, 402, 503 with Reason)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CallAttempt:
    """One destination tried, as it ended (or, handed to :meth:`CallSession.answered`, as it
    was answered)."""

    index: int
    """The destination's place in :attr:`CallSession.destinations`."""
    destination: Destination
    started: float
    ended: float
    status: int
    """Its final response; 0 if none came."""
    reason: str


@dataclass(frozen=True, slots=True)
class CallSummary:
    """A finished call, answered or not, as :meth:`CallSession.ended` is told of it."""

    call_id: str  # the caller's Call-ID
    setup_time: float  # the INVITE's arrival
    ringing_time: float | None  # the first provisional response relayed
    answer_time: float | None
    end_time: float
    status: int  # the final response the caller got (200 for an answered call)
    reason: str
    hangup_side: HangupSide
    hangup_reason: str  # "bye", "cancel", "max duration", "no route left", ...
    attempts: tuple[CallAttempt, ...]  # in the order they were started
    answered: CallAttempt | None  # the one of ``attempts`` that answered

    @property
    def duration(self) -> float:
        """Seconds of answered time (0 for an unanswered call)."""
        if self.answer_time is None:
            return 0.0
        return max(0.0, self.end_time - self.answer_time)

    @property
    def last_attempt(self) -> CallAttempt | None:
        return self.attempts[-1] if self.attempts else None


class CallSession(Protocol):
    """The policy's side of one call, from :meth:`CallPolicy.route` to its end."""

    @property
    def destinations(self) -> tuple[Destination, ...]:
        """Where to try the call, in order (never empty)."""

    @property
    def fork(self) -> bool:
        """Try every destination at once (a subscriber's contacts): the first answer wins."""

    @property
    def max_duration(self) -> float | None:
        """Seconds of answered time granted at the answer (None: the node's maximum)."""

    def answered(self, attempt: CallAttempt) -> None:
        """The call was answered by ``attempt`` (suppliers' concurrent-call counts start
        here)."""

    def extend(self, now: float) -> float:
        """The granted time ran out at ``now``: seconds more the call may last (0: cut it).

        Prepaid time is granted in slices so one call does not hold a customer's whole balance;
        asking at the boundary makes the cut exact when the money is gone. The B2BUA counts
        the new slice from the end of the last one, not from ``now``."""

    def ended(self, summary: CallSummary, done: Callable[[], None]) -> None:
        """The call is over (answered or not): rate it, write its CDR, release its limits.

        ``done`` must be called once the CDR is durable: the B2BUA holds back the messages
        that tell the parties the call ended until then."""


class CallPolicy(Protocol):
    def route(self, request: Request, source: Address, now: float) -> CallSession | Rejection:
        """Identify the caller, authorise and route the call."""


class InviteGate(Protocol):
    """What a node behind a dispatcher checks on each new INVITE before routing it."""

    def admit(self, request: Request, source: Address, now: float) -> Address | Rejection:
        """The address to identify the caller by (the real source a trusted dispatcher
        passed on, else ``source``), or the refusal (an INVITE that did not come through
        the dispatcher where one is required)."""


class Registrations(Protocol):
    """The registrar, as the SIP application hands it REGISTERs."""

    def register(self, request: Request, source: Address, now: float) -> Response:
        """The response to a REGISTER received from ``source`` at ``now`` (the loop's clock)."""


class CallObserver(Protocol):
    """Told of each call's legs as the B2BUA makes them (call capture links both legs of a
    call by it). Called on the call path: it must only take note, never block."""

    def call_started(self, call_id: str, session: CallSession, now: float) -> None:
        """A call was taken on (``call_id``: the caller's Call-ID), before its first B leg."""

    def leg_started(self, call_id: str, leg_call_id: str, session: CallSession, index: int) -> None:
        """A B leg with Call-ID ``leg_call_id`` to ``session.destinations[index]``, before its
        INVITE is sent."""

    def call_ended(self, call_id: str, now: float) -> None:
        """The call is over; its session was told (and its CDR made) just before."""


MediaReply = Callable[[bytes | MediaFailure], None]
"""Called once with the rewritten SDP, or with the failure (its ``status`` is the answer)."""


class MediaRelay(Protocol):
    """The media relay (rtpengine over ng), as the B2BUA drives it for relayed calls.

    ``call.call_id`` names one relayed session (the B2BUA uses one per attempt: a route
    advance re-offers for the new B leg); its ``from_tag`` is the offerer's tag."""

    @property
    def available(self) -> bool:
        """Whether any relay is up (a relayed call without one gets 503 or falls back)."""

    def offer(self, call: CallRef, sdp: bytes, options: MediaOptions, reply: MediaReply) -> None:
        """Offer ``sdp``; ``reply`` gets it rewritten (the relay's address in it)."""

    def answer(self, call: CallRef, sdp: bytes, options: MediaOptions, reply: MediaReply) -> None:
        """Answer the session's offer with ``sdp`` (``call.to_tag`` set); ``reply`` gets it
        rewritten."""

    def delete(self, call_id: str, record_as: str | None = None) -> None:
        """End the session (never fails; unknown ids are ignored). ``record_as``: the session
        was recorded for the call with this Call-ID: file its recording under that name."""

    def instance_of(self, call_id: str) -> str | None:
        """The relay holding the session (for the CDR and the lost-relay hang-up)."""
