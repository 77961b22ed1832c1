"""A call as the B2BUA holds it: the caller's leg (A), the callee's leg (B), and its history."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from smartswitch.b2bua.ports import CallAttempt, CallSession, CallSummary, Destination
from smartswitch.model.cdr import HangupSide
from smartswitch.sip.dialog import Dialog
from smartswitch.sip.message import Request
from smartswitch.sip.timers import Timer
from smartswitch.sip.transaction import Address, ClientTransaction, ServerTransaction


class CallState(enum.Enum):
    CALLING = "calling"  # B leg INVITE sent, nothing heard
    EARLY = "early"  # a provisional response relayed to the caller
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(slots=True)
class Attempt:
    """One destination tried for the call."""

    index: int  # the destination's place in the session's destinations
    destination: Destination
    started: float
    ended: float | None = None
    status: int | None = None
    reason: str = ""
    media_id: str | None = None  # its relayed media session (the relay's call-id), if any

    def freeze(self, now: float) -> CallAttempt:
        """The attempt as the policy sees it; one still going counts as ended at ``now``."""
        return CallAttempt(
            self.index,
            self.destination,
            self.started,
            self.ended if self.ended is not None else now,
            self.status or 0,
            self.reason,
        )


@dataclass(slots=True)
class Leg:
    call: Call
    side: str  # "a" or "b"
    dialog: Dialog
    ack: tuple[bytes, Address] | None = None  # our ACK of its 2xx, re-sent on retransmissions
    pinging: bool = False  # an in-dialog OPTIONS of ours is waiting for its answer
    ping_timer: Timer | None = None  # its deadline (B2buaSettings.dialog_ping_timeout)


@dataclass(frozen=True, slots=True)
class PendingAck:
    """A re-INVITE's 2xx we relayed: its ACK ends the 2xx's retransmission in ``server_tx``
    and goes on to ``to_leg`` with our CSeq there, the ACK of our re-INVITE ``client_tx``."""

    server_tx: ServerTransaction
    to_leg: Leg
    cseq: int
    client_tx: ClientTransaction


@dataclass(slots=True)
class Call:
    id: str  # the caller's Call-ID: what operators grep logs for
    a_tx: ServerTransaction
    a_request: Request
    a_tag: str
    session: CallSession
    setup_time: float
    state: CallState = CallState.CALLING
    a_leg: Leg | None = None
    b_leg: Leg | None = None
    b_tx: ClientTransaction | None = None  # the INVITE that was answered
    pending: dict[ClientTransaction, Attempt] = field(default_factory=dict)  # INVITEs out now
    b_call_id: str = ""
    b_tag: str = ""
    attempt_index: int = -1  # the last destination started (serial hunting)
    answered_attempt: Attempt | None = None
    attempts: list[Attempt] = field(default_factory=list)
    cancelled: bool = False
    ringing_time: float | None = None
    answer_time: float | None = None
    end_time: float | None = None
    final_status: int | None = None
    final_reason: str = ""
    hangup_side: HangupSide | None = None
    hangup_reason: str = ""
    no_answer_timer: Timer | None = None
    duration_timer: Timer | None = None
    ping_timer: Timer | None = None
    deferred_b_ack: bool = False  # delayed offer: B's ACK carries the caller's answer
    # By the side the re-INVITE came from and its CSeq there.
    pending_acks: dict[tuple[str, int], PendingAck] = field(default_factory=dict)
    # Relayed media: sessions open at the relay (one per attempt), offers still out, and the
    # answered attempt's session with the relay's tags of the caller's and the callee's side.
    media_ids: set[str] = field(default_factory=set)
    offering: int = 0
    media_id: str | None = None
    media_tags: tuple[str, str] = ("", "")

    @property
    def attempt(self) -> Attempt | None:
        """The attempt that answered, else the last one started."""
        if self.answered_attempt is not None:
            return self.answered_attempt
        return self.attempts[-1] if self.attempts else None

    def summary(self) -> CallSummary:
        """The call, frozen, for the policy: at its end, or as far as it went."""
        end = self.end_time if self.end_time is not None else self.setup_time
        attempts = tuple(a.freeze(end) for a in self.attempts)
        answered = next(
            (f for a, f in zip(self.attempts, attempts, strict=True) if a is self.answered_attempt),
            None,
        )
        return CallSummary(
            call_id=self.id,
            setup_time=self.setup_time,
            ringing_time=self.ringing_time,
            answer_time=self.answer_time,
            end_time=end,
            status=self.final_status or 0,
            reason=self.final_reason,
            hangup_side=self.hangup_side or HangupSide.SWITCH,
            hangup_reason=self.hangup_reason,
            attempts=attempts,
            answered=answered,
        )
