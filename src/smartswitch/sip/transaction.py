"""RFC 3261 section 17 transactions, sans-IO, with the RFC 6026 "Accepted" state for 2xx.

Theory of operation
-------------------

:class:`TransactionLayer` is fed messages with :meth:`~TransactionLayer.receive` (a datagram,
or a message framed off a stream), the passing of time with
:meth:`~TransactionLayer.handle_timer` and the transport's failures with
:meth:`~TransactionLayer.transport_error`; its user sends through
:meth:`~TransactionLayer.send_request`, :meth:`~TransactionLayer.send_cancel` and
:meth:`~TransactionLayer.respond`, and reports the ACK of a 2xx with
:meth:`~TransactionLayer.ack_received`. Every one of these entry points takes ``now``: the
layer never reads a clock, so every timer path runs in tests without sleeping. It matches each
message to a transaction (17.1.3, 17.2.3), moves that transaction's state machine, and tells
its :class:`TransactionUser` what the user must see; a transaction carries the user's typed
owner (:class:`ClientOwner`, :class:`ServerOwner`) for the user to hand those events on. What
the layer wants sent is appended to ``outgoing`` as ``(bytes, Address)``; the transport drains
that list after each call. Timers live in one :class:`~smartswitch.sip.timers.TimerHeap`, for
which the transport keeps a single ``call_at`` armed; the deadlines of the states a transaction
lingers in (``LINGERING``) in FIFO lanes of that heap.

There are four machines (:class:`Machine`), one per figure of RFC 3261 17 (5 to 8, with the
Accepted state of RFC 6026 in figures 5 and 7). Everything that can happen to a transaction is
an :class:`Event`: a response received (client), a response sent (server), a request or an ACK
received again (server), a timer firing, the transport failing, the user matching the ACK of
our 2xx. ``TRANSITIONS[machine][state][event]`` is the state that event leads to and the
:class:`Effect` the layer carries out (hand the message up, send it, resend the last one,
acknowledge a failure, report a failure). An event missing from a state's row is ignored
there: a stray or late message, or a timer of a state already left.

Entering a state stops the timers of the one left and arms the timers listed for the new state
in ``STATE_TIMERS``: a retransmission timer (only on unreliable transports) and one deadline,
both firing events of their own. The exception is the client non-INVITE Proceeding state,
where E and F keep running (17.1.2.2). On reliable transports the lingering timers (D, I, J,
K) are zero (17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2). Entering Terminated drops the transaction.

One thing lives beside the table: the 2xx of a server INVITE is retransmitted until the user
reports its ACK (RFC 3261 13.3.1.4, a duty of the UAS core that the layer carries out for it),
and a 2xx never ACKed by Timer L is reported to the user (:meth:`TransactionUser.on_ack_timeout`).

A transaction lingers up to 64*T1 after its final response to absorb or answer
retransmissions, which takes only its key, addresses, timers and the bytes it sends again. As
soon as it has nothing more to tell its owner, it lets go of the owner (which reaches a whole
call) and of its request and last response: a client one in Completed once the response is
handed up, a server one in Completed once its 3xx-6xx is sent, a server INVITE in Accepted once
the user reported the ACK. A client INVITE in Accepted hands up every 2xx: its user lets go of
it (:meth:`TransactionLayer.let_go`) when done with it, leaving it the ACK it sent for the 2xx,
which the transaction sends again itself if the 2xx comes again (the ACK was lost). Reading
``request`` after that raises.

A let-go transaction in a lingering state will only ever absorb or answer retransmissions
until its deadline; under load there are tens of thousands of them, and every object is walked
at each full garbage collection. The layer then keeps it as a *ghost* (:data:`Ghost`, in
``client_ghosts`` and ``server_ghosts``, :class:`Ghosts`): strings, bytes and numbers, none of
them an object the collector tracks. The transaction object leaves the layer: one the user
still holds stays as it was (answered, let go of) and no longer moves.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.flood import GATED_METHODS, FloodGate
from smartswitch.sip.message import (
    Headers,
    PartialMessage,
    Request,
    Response,
    make_response,
    parse_message,
    response_from_partial,
)
from smartswitch.sip.timers import Lane, Timer, TimerHeap

log = logging.getLogger("smartswitch.sip")

T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMER_F = 64 * T1  # how long a client non-INVITE transaction waits for its final answer

MAGIC_COOKIE = "z9hG4bK"


class Address(NamedTuple):
    transport: str  # "udp" or "tcp"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


# Past this many different addresses (a flood from everywhere, not a few peers) the cache of
# shared_address starts over rather than grow.
SHARED_ADDRESSES = 4096
_shared: dict[tuple[str, str, int], Address] = {}


def shared_address(transport: str, host: str, port: int) -> Address:
    """``Address(transport, host, port)``, as the same object each time while it is in use.

    CPython's collector untracks an exact tuple of atomic values, never a tuple subclass such
    as a NamedTuple: every Address a lingering transaction keeps is one more object walked at
    each full collection. A node talks to a few peers; one object each, not one per call.
    """
    key = (transport, host, port)
    address = _shared.get(key)
    if address is None:
        if len(_shared) >= SHARED_ADDRESSES:
            _shared.clear()
        address = _shared[key] = Address(transport, host, port)
    return address


class IdGenerator:
    """Branches, tags and Call-IDs: a random per-process prefix plus a counter.

    Unique across restarts thanks to the prefix, and far cheaper than a random value each time.
    """

    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:x}"

    def branch(self) -> str:
        return MAGIC_COOKIE + self.next()


# --- the state machines, as data -------------------------------------------------------------


class _IdentityEnum(enum.Enum):
    """Members hash by identity, in C. ``Enum.__hash__`` hashes the member's name in a Python
    call, and every step of a machine looks up three members in dicts (machine, state, event).
    Members are singletons compared by identity, so the identity hash agrees with ``==``."""

    __hash__ = object.__hash__


class Machine(_IdentityEnum):
    """Which of the four transaction state machines of RFC 3261 17 a transaction runs."""

    CLIENT_INVITE = "client INVITE"  # 17.1.1, figure 5
    CLIENT_NON_INVITE = "client non-INVITE"  # 17.1.2, figure 6
    SERVER_INVITE = "server INVITE"  # 17.2.1, figure 7
    SERVER_NON_INVITE = "server non-INVITE"  # 17.2.2, figure 8


class State(_IdentityEnum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # RFC 6026
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Event(_IdentityEnum):
    # client: a response received
    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_3XX_6XX = "3xx-6xx received"
    # server: a response the user sends
    SEND_1XX = "1xx sent"
    SEND_2XX = "2xx sent"
    SEND_3XX_6XX = "3xx-6xx sent"
    # server: the request again, or an ACK, received
    RECV_REQUEST = "request retransmission received"
    RECV_ACK = "ACK received"
    # server INVITE: the user matched the ACK of our 2xx (it has its own branch, 13.2.2.4)
    ACKED = "ACK of the 2xx reported by the user"
    TRANSPORT_ERROR = "transport error"
    # timers (17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2; L and M from RFC 6026)
    TIMER_A = "timer A"  # client INVITE retransmission
    TIMER_B = "timer B"  # client INVITE timeout
    TIMER_D = "timer D"  # client INVITE: wait for response retransmissions
    TIMER_E = "timer E"  # client non-INVITE retransmission
    TIMER_F = "timer F"  # client non-INVITE timeout
    TIMER_K = "timer K"  # client non-INVITE: wait for response retransmissions
    TIMER_M = "timer M"  # client INVITE: wait for 2xx retransmissions
    TIMER_G = "timer G"  # server INVITE: retransmit the 3xx-6xx
    TIMER_H = "timer H"  # server INVITE: wait for the ACK
    TIMER_I = "timer I"  # server INVITE: wait for ACK retransmissions
    TIMER_J = "timer J"  # server non-INVITE: wait for request retransmissions
    TIMER_L = "timer L"  # server INVITE: wait for INVITE retransmissions after a 2xx
    TIMER_2XX = "2xx retransmission"  # server INVITE: retransmit the 2xx (13.3.1.4)


class Effect(enum.Flag):
    """What the layer does on a transition, besides changing state and timers."""

    NONE = 0
    PASS = enum.auto()  # hand the message up: a response (client), an ACK (server, Accepted)
    SEND = enum.auto()  # send the response the user gave, and keep it for retransmissions
    RESEND = enum.auto()  # send the last message again (the request; the last response)
    ACK = enum.auto()  # acknowledge a 3xx-6xx inside the transaction (17.1.1.3)
    REPORT = enum.auto()  # tell the user it failed: on_timeout, or on_ack_timeout if not ACKed
    SETTLE = enum.auto()  # the 2xx was ACKed: stop resending it; Timer L ends it quietly


# Short names for the tables below (deleted after them).
CI, CN, SI, SN = Machine
CALLING, TRYING, PROCEEDING, ACCEPTED, COMPLETED, CONFIRMED, TERMINATED = State
E = Event
NONE, PASS, SEND, RESEND = Effect.NONE, Effect.PASS, Effect.SEND, Effect.RESEND
ACK, REPORT, SETTLE = Effect.ACK, Effect.REPORT, Effect.SETTLE

Step = tuple[State, Effect]

TRANSITIONS: Mapping[Machine, Mapping[State, Mapping[Event, Step]]] = {
    CI: {
        CALLING: {
            E.RECV_1XX: (PROCEEDING, PASS),
            E.RECV_2XX: (ACCEPTED, PASS),
            E.RECV_3XX_6XX: (COMPLETED, ACK | PASS),
            E.TIMER_A: (CALLING, RESEND),
            E.TIMER_B: (TERMINATED, REPORT),
            E.TRANSPORT_ERROR: (TERMINATED, REPORT),
        },
        PROCEEDING: {
            E.RECV_1XX: (PROCEEDING, PASS),
            E.RECV_2XX: (ACCEPTED, PASS),
            E.RECV_3XX_6XX: (COMPLETED, ACK | PASS),
            E.TRANSPORT_ERROR: (TERMINATED, REPORT),
        },
        # Every 2xx goes up (retransmissions, other forks' answers): the user ACKs each.
        ACCEPTED: {E.RECV_2XX: (ACCEPTED, PASS), E.TIMER_M: (TERMINATED, NONE)},
        # Our ACK was lost: the failure comes again and is ACKed again, the user not told.
        COMPLETED: {E.RECV_3XX_6XX: (COMPLETED, ACK), E.TIMER_D: (TERMINATED, NONE)},
    },
    CN: {
        TRYING: {
            E.RECV_1XX: (PROCEEDING, PASS),
            E.RECV_2XX: (COMPLETED, PASS),
            E.RECV_3XX_6XX: (COMPLETED, PASS),
            E.TIMER_E: (TRYING, RESEND),
            E.TIMER_F: (TERMINATED, REPORT),
            E.TRANSPORT_ERROR: (TERMINATED, REPORT),
        },
        PROCEEDING: {
            E.RECV_1XX: (PROCEEDING, PASS),
            E.RECV_2XX: (COMPLETED, PASS),
            E.RECV_3XX_6XX: (COMPLETED, PASS),
            E.TIMER_E: (PROCEEDING, RESEND),
            E.TIMER_F: (TERMINATED, REPORT),
            E.TRANSPORT_ERROR: (TERMINATED, REPORT),
        },
        COMPLETED: {E.TIMER_K: (TERMINATED, NONE)},
    },
    SI: {
        PROCEEDING: {
            E.SEND_1XX: (PROCEEDING, SEND),
            E.SEND_2XX: (ACCEPTED, SEND),
            E.SEND_3XX_6XX: (COMPLETED, SEND),
            E.RECV_REQUEST: (PROCEEDING, RESEND),
            E.RECV_ACK: (PROCEEDING, NONE),  # before any final response: nothing to acknowledge
        },
        # RFC 6026 7.1: the 2xx has its own retransmission, so INVITE retransmissions are
        # absorbed; an ACK that matches (an RFC 2543 peer's) goes up like any 2xx ACK.
        ACCEPTED: {
            E.RECV_REQUEST: (ACCEPTED, NONE),
            E.RECV_ACK: (ACCEPTED, PASS),
            E.ACKED: (ACCEPTED, SETTLE),
            E.TIMER_2XX: (ACCEPTED, RESEND),
            E.TIMER_L: (TERMINATED, REPORT),
        },
        COMPLETED: {
            E.RECV_REQUEST: (COMPLETED, RESEND),
            E.RECV_ACK: (CONFIRMED, NONE),
            E.TIMER_G: (COMPLETED, RESEND),
            E.TIMER_H: (TERMINATED, NONE),
        },
        # Absorbs ACK and INVITE retransmissions alike.
        CONFIRMED: {
            E.RECV_REQUEST: (CONFIRMED, NONE),
            E.RECV_ACK: (CONFIRMED, NONE),
            E.TIMER_I: (TERMINATED, NONE),
        },
    },
    SN: {
        TRYING: {
            E.SEND_1XX: (PROCEEDING, SEND),
            E.SEND_2XX: (COMPLETED, SEND),
            E.SEND_3XX_6XX: (COMPLETED, SEND),
            E.RECV_REQUEST: (TRYING, NONE),  # nothing sent yet to send again
        },
        PROCEEDING: {
            E.SEND_1XX: (PROCEEDING, SEND),
            E.SEND_2XX: (COMPLETED, SEND),
            E.SEND_3XX_6XX: (COMPLETED, SEND),
            E.RECV_REQUEST: (PROCEEDING, RESEND),
        },
        COMPLETED: {E.RECV_REQUEST: (COMPLETED, RESEND), E.TIMER_J: (TERMINATED, NONE)},
    },
}


@dataclass(frozen=True, slots=True)
class StateTimers:
    """The timers a state arms when it is entered."""

    retransmit: Event | None = None
    """Fires first after T1, then after each doubling of the interval up to ``cap``; only on
    unreliable transports."""
    cap: float = T2
    deadline: Event | None = None
    unreliable: float = 0.0
    """Seconds until the deadline on UDP ..."""
    reliable: float = 0.0
    """... and on TCP."""


STATE_TIMERS: Mapping[tuple[Machine, State], StateTimers] = {
    # Timer A doubles without bound (Timer B ends it first), 17.1.1.2.
    (CI, CALLING): StateTimers(E.TIMER_A, float("inf"), E.TIMER_B, 64 * T1, 64 * T1),
    (CI, ACCEPTED): StateTimers(None, T2, E.TIMER_M, 64 * T1, 64 * T1),
    (CI, COMPLETED): StateTimers(None, T2, E.TIMER_D, 32.0, 0.0),
    (CN, TRYING): StateTimers(E.TIMER_E, T2, E.TIMER_F, TIMER_F, TIMER_F),
    (CN, COMPLETED): StateTimers(None, T2, E.TIMER_K, T4, 0.0),
    (SI, ACCEPTED): StateTimers(E.TIMER_2XX, T2, E.TIMER_L, 64 * T1, 64 * T1),
    (SI, COMPLETED): StateTimers(E.TIMER_G, T2, E.TIMER_H, 64 * T1, 64 * T1),
    (SI, CONFIRMED): StateTimers(None, T2, E.TIMER_I, T4, 0.0),
    (SN, COMPLETED): StateTimers(None, T2, E.TIMER_J, 64 * T1, 0.0),
}
NO_TIMERS = StateTimers()

# Entering these states keeps the timers that run: in the client non-INVITE Proceeding state,
# E goes on (at T2 from now on) and F still ends the transaction (17.1.2.2).
KEEPS_TIMERS = frozenset({(CN, PROCEEDING)})

# How each retransmission timer backs off: its interval doubles up to this.
RETRANSMIT_CAP: Mapping[Event, float] = {
    t.retransmit: t.cap for t in STATE_TIMERS.values() if t.retransmit is not None
}

# The states a transaction lingers in after its final response (D, I, J, K, L, M): left only
# when their deadline fires, always the same time after they are entered, so their deadlines
# come due in the order they are set and go in FIFO lanes, not the timer heap (see
# smartswitch.sip.timers). Derived from the table: a state given an earlier way out goes back
# to the heap, whose timers can be cancelled.
LINGERING: frozenset[tuple[Machine, State]] = frozenset(
    key
    for key, timers in STATE_TIMERS.items()
    if timers.deadline is not None
    and all(
        to is key[1]
        for event, (to, _) in TRANSITIONS[key[0]][key[1]].items()
        if event is not timers.deadline
    )
)

# A let-go transaction lingering (module docstring): the state, by the value of its deadline's
# event ("timer J": a lingering state has one deadline, no other has it); the bytes it sends
# again (the last response; the ACK of the final response), or None; the address they go to
# (transport, host, port); whether they are metered (ServerTransaction.metered); its epoch.
Ghost = tuple[str, bytes | None, str, str, int, bool, int]
_HAUNTS: Mapping[str, Mapping[Event, Step]] = {
    timers.deadline.value: TRANSITIONS[key[0]][key[1]]
    for key, timers in STATE_TIMERS.items()
    if key in LINGERING and timers.deadline is not None
}
assert len(_HAUNTS) == len(LINGERING)  # one deadline event per lingering state

del CI, CN, SI, SN, CALLING, TRYING, PROCEEDING, ACCEPTED, COMPLETED, CONFIRMED, TERMINATED, E
del NONE, PASS, SEND, RESEND, ACK, REPORT, SETTLE


_IGNORES_ALL: Mapping[Event, Step] = {}  # Terminated: no transaction is kept in it


def _received(status: int) -> Event:
    if status < 200:
        return Event.RECV_1XX
    return Event.RECV_2XX if status < 300 else Event.RECV_3XX_6XX


def _sent(status: int) -> Event:
    if status < 200:
        return Event.SEND_1XX
    return Event.SEND_2XX if status < 300 else Event.SEND_3XX_6XX


# --- who hears what -------------------------------------------------------------------------


class TransactionUser(Protocol):
    """What the layer tells its user (the node's SIP application)."""

    def on_request(self, tx: ServerTransaction, request: Request, now: float) -> None: ...

    def on_ack(self, request: Request, source: Address, now: float) -> None:
        """An ACK matching no transaction: the ACK of a 2xx, end to end (RFC 3261 13.2.2.4)."""

    def on_cancel(self, invite_tx: ServerTransaction, now: float) -> None:
        """The caller CANCELled a pending INVITE; the CANCEL itself is answered already."""

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None: ...

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        """No final response in time (Timer B or F), or the transport failed."""

    def on_ack_timeout(self, tx: ServerTransaction, now: float) -> None:
        """A 2xx we sent was never ACKed (64*T1): the session must be torn down (13.3.1.4)."""


class ClientOwner(Protocol):
    """Whoever sent a request and waits for its answer (a call attempt, a relayed request,
    an outbound registration): the user hands it what the layer reports of the transaction."""

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None: ...

    def on_timeout(self, tx: ClientTransaction, now: float) -> None: ...


class ServerOwner(Protocol):
    """Whoever took charge of a request (a call): the user hands it what happens later to the
    transaction."""

    def on_cancel(self, tx: ServerTransaction, now: float) -> None: ...

    def on_ack_timeout(self, tx: ServerTransaction, now: float) -> None: ...


# --- transactions ----------------------------------------------------------------------------


class ClientTransaction:
    __slots__ = (
        "_deadline",
        "_epoch",
        "_interval",
        "_request",
        "_retransmit",
        "ack",
        "ack_dest",
        "data",
        "dest",
        "is_invite",
        "key",
        "machine",
        "owner",
        "state",
    )

    def __init__(
        self,
        key: str,
        request: Request,
        data: bytes,
        dest: Address,
        owner: ClientOwner | None,
    ) -> None:
        self.key = key
        self._request: Request | None = request
        self.data = data
        self.dest = dest
        # The ACK of our INVITE's 3xx-6xx (17.1.1.3), or of its 2xx once let go of (the
        # user's, 13.2.2.4), and where it goes: sent again when the response comes again.
        self.ack: bytes | None = None
        self.ack_dest: Address | None = None
        self.is_invite = request.method == "INVITE"
        self.machine = Machine.CLIENT_INVITE if self.is_invite else Machine.CLIENT_NON_INVITE
        self.state = State.CALLING if self.is_invite else State.TRYING
        self.owner = owner
        self._retransmit: Timer | None = None
        self._deadline: Timer | None = None
        self._epoch = 0  # given by TransactionLayer._stop_timers
        self._interval = T1

    @property
    def branch(self) -> str:
        return self.key.rpartition(" ")[0]

    @property
    def request(self) -> Request:
        """The request sent; read only until the final response is handled (see
        :func:`_let_go`)."""
        request = self._request
        if request is None:
            raise _released(self)
        return request


class ServerTransaction:
    __slots__ = (
        "_deadline",
        "_epoch",
        "_interval",
        "_request",
        "_retransmit",
        "acked",
        "is_invite",
        "key",
        "last_response",
        "last_response_data",
        "machine",
        "metered",
        "owner",
        "source",
        "state",
    )

    def __init__(self, key: str, request: Request, source: Address) -> None:
        self.key = key
        self._request: Request | None = request
        self.source = source
        self.is_invite = request.method == "INVITE"
        self.machine = Machine.SERVER_INVITE if self.is_invite else Machine.SERVER_NON_INVITE
        self.state = State.PROCEEDING if self.is_invite else State.TRYING
        self.last_response: Response | None = None
        self.last_response_data: bytes | None = None
        self.owner: ServerOwner | None = None
        self.acked = False  # the user reported the ACK of our 2xx
        # A request from an unidentified source over UDP: its answers are paid from the
        # source's byte credit (smartswitch.sip.flood). The user lifts it once it has
        # identified the sender.
        self.metered = False
        self._retransmit: Timer | None = None
        self._deadline: Timer | None = None
        self._epoch = 0  # given by TransactionLayer._stop_timers
        self._interval = T1

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def answered(self) -> bool:
        """A final response has been sent."""
        return self.state not in (State.PROCEEDING, State.TRYING)

    @property
    def request(self) -> Request:
        """The request received; read only until it is answered (see :func:`_let_go`)."""
        request = self._request
        if request is None:
            raise _released(self)
        return request


Transaction = ClientTransaction | ServerTransaction


# States before the final response (sent or received).
_BEFORE_FINAL = frozenset({State.CALLING, State.TRYING, State.PROCEEDING})


def _let_go(tx: Transaction) -> None:
    """Keep only what absorbing and answering retransmissions takes: the key, the address,
    the bytes to send again, the timers.

    A transaction lingers for up to 64*T1 after its final response (Timers D, J, K, L, M)
    and its owner reaches a whole call; kept, every call's objects would stay alive 32 s
    after its end, for each full garbage collection to walk. Done once the owner can hear
    nothing more of the transaction: a client one in Completed (the final response handed
    up), a server one in Completed (its 3xx-6xx sent; Timer H reports nothing) or in
    Accepted once the user reported the ACK (only an ACK never reported is reported at
    Timer L). A client INVITE in Accepted hands every 2xx up: its user lets go of it
    (:meth:`TransactionLayer.let_go`).
    """
    tx.owner = None
    tx._request = None
    if isinstance(tx, ServerTransaction):
        tx.last_response = None


def _released(tx: Transaction) -> RuntimeError:
    return RuntimeError(
        f"{tx.machine.value} transaction {tx.key} in state {tx.state.value}: "
        "its request was let go of"
    )


def _client_key(branch: str, method: str) -> str:
    return f"{branch} {method}"


def _server_key(request: Request, method: str) -> str:
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return f"{branch} {via.host} {via.port or ''} {method}"
    # RFC 2543 peers: no magic cookie, match on the dialog-ish identifiers (17.2.3).
    return f"2543 {request.call_id} {request.from_.tag or ''} {request.cseq.number} {via} {method}"


class Ghosts:
    """Let-go lingering transactions by key (module docstring): a :data:`Ghost` each, kept as
    values the collector never tracks, in three dictionaries by key: its epoch (read at its
    deadline), what it sends again (when it has something), and its state, metering and
    address as one string (read on a retransmission).

    Not as a tuple each, which the collector tracks until its generation's next collection:
    under a steady rate generation 0's collections come seconds apart (the ghosts made now
    balance the allocation count against those of 32 s ago freed), and the one that comes
    walks every ghost made since, tens of thousands of them (smartswitch.sip.timers)."""

    __slots__ = ("_epochs", "_marks", "_sends")

    def __init__(self) -> None:
        self._epochs: dict[str, int] = {}
        self._sends: dict[str, bytes] = {}
        # "state|metered|transport|port|host": the host last, the one part a peer writes.
        self._marks: dict[str, str] = {}

    def add(
        self, key: str, state: str, data: bytes | None, to: Address, metered: bool, epoch: int
    ) -> None:
        self._epochs[key] = epoch
        self._marks[key] = f"{state}|{int(metered)}|{to.transport}|{to.port}|{to.host}"
        if data is not None:
            self._sends[key] = data
        else:
            self._sends.pop(key, None)

    def get(self, key: str) -> Ghost | None:
        """The ghost of ``key``, or None: made for the moment (a retransmission's)."""
        epoch = self._epochs.get(key)
        if epoch is None:
            return None
        state, metered, transport, port, host = self._marks[key].split("|", 4)
        data = self._sends.get(key)
        return (state, data, transport, host, int(port), metered == "1", epoch)

    def epoch(self, key: str) -> int | None:
        return self._epochs.get(key)

    def remove(self, key: str) -> None:
        del self._epochs[key], self._marks[key]
        self._sends.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._epochs

    def __len__(self) -> int:
        return len(self._epochs)


def _haunted(ghost: Ghost, event: Event) -> Effect | None:
    """The effects of ``event`` on a ghost: its state's row of the table (which it never
    leaves but by its deadline)."""
    step = _HAUNTS[ghost[0]].get(event)
    return None if step is None else step[1]


class TransactionLayer:
    def __init__(
        self,
        user: TransactionUser,
        local: dict[str, tuple[str, int]],
        timers: TimerHeap | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        """``local`` maps a transport ("udp", "tcp") to the host and port we put in our Via."""
        self.user = user
        self.local = local
        self.timers = timers if timers is not None else TimerHeap()
        self.ids = ids if ids is not None else IdGenerator()
        self.outgoing: list[tuple[bytes, Address]] = []
        # Where the node listens on a wildcard address, the transport tells which of its
        # addresses reaches a destination.
        self.local_for: Callable[[Address], tuple[str, int]] | None = None
        self._now = 0.0
        # Transactions by key: a string, not a tuple of the parts, since a key outlives its
        # transaction by 64*T1 in a ghost's place and a lane's entry, and a tuple is a tracked
        # object (see smartswitch.sip.timers on why those pile up). A client key is its
        # branch and method, a server key its Via's branch, host and port and its method (or
        # RFC 2543's identifiers), joined by spaces: the method last, a token.
        self.client: dict[str, ClientTransaction] = {}
        self.server: dict[str, ServerTransaction] = {}
        # Let-go transactions lingering, by the same keys (module docstring).
        self.client_ghosts = Ghosts()
        self.server_ghosts = Ghosts()
        self.stats_malformed = 0
        # Requests from unidentified sources: a bounded rate, no amplification (sip/flood.py).
        self.gate: FloodGate | None = None
        # Lingering deadlines (LINGERING), one FIFO lane per side and length of wait.
        self._client_lanes: dict[float, Lane] = {}
        self._server_lanes: dict[float, Lane] = {}
        # Unique across the layer's transactions: a lane entry names its transaction by key,
        # and a key comes back (a request again after its transaction ended).
        self._epochs = itertools.count(1)

    @property
    def now(self) -> float:
        """The time of the latest entry point, for status readers; the layer and its user go
        by the ``now`` each entry point is given."""
        return self._now

    # --- the machine ---------------------------------------------------------------------------

    def _step(self, tx: Transaction, event: Event, now: float) -> Effect | None:
        """Move ``tx`` on ``event``; the effects to carry out, or None if it ignores it."""
        step = TRANSITIONS[tx.machine].get(tx.state, _IGNORES_ALL).get(event)
        if step is None:
            return None
        state, effects = step
        if state is not tx.state:
            self._enter(tx, state, now)
        return effects

    def _enter(self, tx: Transaction, state: State, now: float) -> None:
        tx.state = state
        if state is State.TERMINATED:
            self._stop_timers(tx)
            if isinstance(tx, ClientTransaction):
                self.client.pop(tx.key, None)
            else:
                self.server.pop(tx.key, None)
            return
        if (tx.machine, state) in KEEPS_TIMERS:
            return
        self._stop_timers(tx)
        timers = STATE_TIMERS.get((tx.machine, state), NO_TIMERS)
        reliable = (tx.dest if isinstance(tx, ClientTransaction) else tx.source).reliable
        if timers.retransmit is not None and not reliable:
            tx._interval = T1
            tx._retransmit = self.timers.schedule(now + T1, self._fire, tx, timers.retransmit)
        if timers.deadline is not None:
            wait = timers.reliable if reliable else timers.unreliable
            if (tx.machine, state) in LINGERING:
                client = isinstance(tx, ClientTransaction)
                lanes = self._client_lanes if client else self._server_lanes
                lane = lanes.get(wait)
                if lane is None:
                    over = self._client_linger_over if client else self._server_linger_over
                    lane = lanes[wait] = self.timers.lane(over)
                # The key, not the transaction: a string, a float and an int are nothing the
                # collector walks, where the transaction would be walked at every full
                # collection, by the ten thousand under load.
                lane.push(now + wait, tx.key, tx._epoch)
                if tx._request is None:  # let go of already: a 3xx-6xx sent, now ACKed
                    self._haunt(tx)
            else:
                tx._deadline = self.timers.schedule(now + wait, self._fire, tx, timers.deadline)

    def _stop_timers(self, tx: Transaction) -> None:
        for timer in (tx._retransmit, tx._deadline):
            if timer is not None:
                timer.cancel()
        tx._retransmit = tx._deadline = None
        # A lane entry cannot be cancelled: it carries the epoch it was set in, and is
        # ignored once this has moved on.
        tx._epoch = next(self._epochs)

    def _client_linger_over(self, now: float, key: str, epoch: int) -> None:
        self._linger_over(now, key, epoch, True)

    def _server_linger_over(self, now: float, key: str, epoch: int) -> None:
        self._linger_over(now, key, epoch, False)

    def _linger_over(self, now: float, key: str, epoch: int, client: bool) -> None:
        """The deadline of a lingering state went off, unless the transaction of ``key`` left
        the state since (or ended, another one of the same key in its place)."""
        ghosts = self.client_ghosts if client else self.server_ghosts
        ghost_epoch = ghosts.epoch(key)
        if ghost_epoch is not None:
            if ghost_epoch == epoch:
                # Terminated, with nothing to report: it was let go of.
                ghosts.remove(key)
            return
        tx: Transaction | None = self.client.get(key) if client else self.server.get(key)
        if tx is None or epoch != tx._epoch:
            return
        event = STATE_TIMERS[(tx.machine, tx.state)].deadline
        assert event is not None  # only states with a deadline are in LINGERING
        self._fire(now, tx, event)

    def _fire(self, now: float, tx: Transaction, event: Event) -> None:
        """A timer of ``tx`` went off."""
        effects = self._step(tx, event, now)
        if effects is None:
            return
        if Effect.RESEND in effects:
            self._resend(tx)
            cap = RETRANSMIT_CAP.get(event)
            if cap is not None:  # a retransmission timer: again, later
                tx._interval = _next_interval(tx, cap)
                tx._retransmit = self.timers.schedule(now + tx._interval, self._fire, tx, event)
        if Effect.REPORT in effects:
            self._report(tx, now)

    def _resend(self, tx: Transaction) -> None:
        if isinstance(tx, ClientTransaction):
            self.outgoing.append((tx.data, tx.dest))
            return
        data = tx.last_response_data
        if data is None:
            return
        if tx.metered and self.gate is not None and not self.gate.spend(tx.source.host, len(data)):
            return  # not covered (yet): a retransmission of the request may pay for it
        self.outgoing.append((data, tx.source))

    def _report(self, tx: Transaction, now: float) -> None:
        if isinstance(tx, ClientTransaction):
            self.user.on_timeout(tx, now)
        elif not tx.acked:
            self.user.on_ack_timeout(tx, now)

    def _release(self, tx: Transaction) -> None:
        """Let go of what ``tx`` no longer needs (:func:`_let_go`); lingering, it becomes a
        ghost."""
        _let_go(tx)
        if (tx.machine, tx.state) in LINGERING:
            self._haunt(tx)

    def _haunt(self, tx: Transaction) -> None:
        """Keep ``tx``, let go of and lingering, as a :data:`Ghost` in its place."""
        if tx._retransmit is not None or tx._deadline is not None:
            # A 2xx never ACKed, still sent again: stopped only by Timer L, on the object.
            return
        deadline = STATE_TIMERS[(tx.machine, tx.state)].deadline
        assert deadline is not None  # only states with a deadline are in LINGERING
        # What it sends again (the ACK of its final response; the last response), to whom.
        if isinstance(tx, ClientTransaction):
            if self.client.get(tx.key) is not tx:
                return  # ended, or a ghost already: the object no longer moves
            del self.client[tx.key]
            ghosts, data, to, metered = self.client_ghosts, tx.ack, tx.ack_dest or tx.dest, False
        else:
            if self.server.get(tx.key) is not tx:
                return
            del self.server[tx.key]
            ghosts, data, to = self.server_ghosts, tx.last_response_data, tx.source
            metered = tx.metered
        ghosts.add(tx.key, deadline.value, data, to, metered, tx._epoch)

    def _resend_ghost(self, ghost: Ghost) -> None:
        """Send again what a ghost sends again: the last response (server), the ACK of the
        final response (client); a ghost with none absorbs the retransmission."""
        _, data, transport, host, port, metered, _ = ghost
        if data is None:
            return
        if metered and self.gate is not None and not self.gate.spend(host, len(data)):
            return  # not covered (yet), as in _resend
        self.outgoing.append((data, shared_address(transport, host, port)))

    # --- input ---------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """One message from the network. Never raises: faults become answers or log lines."""
        self._now = now
        try:
            message = parse_message(data, require_content_length=source.reliable)
        except SipParseError as exc:
            self._malformed(exc, source, len(data), now)
            return
        except Exception:
            # A bug in the parser must cost one message, not the transport's receive loop.
            self.stats_malformed += 1
            log.exception("parser failure on a message from %s", source)
            return
        try:
            if isinstance(message, Request):
                self._receive_request(message, source, now, len(data))
            else:
                self._receive_response(message, source, now)
        except SipParseError as exc:
            # A header parsed lazily by the user turned out to be malformed.
            if isinstance(message, Request):
                self._reject(message, source, exc.status, exc.reason, now)
            else:
                self.stats_malformed += 1
                log.info("dropped malformed response from %s: %s", source, exc.reason)
        except Exception:
            log.exception("error handling a message from %s", source)
            if isinstance(message, Request):
                self._reject(message, source, 500, "Server Internal Error", now)

    def _malformed(self, exc: SipParseError, source: Address, size: int, now: float) -> None:
        self.stats_malformed += 1
        partial = exc.partial
        if not isinstance(partial, PartialMessage) or not partial.is_request:
            log.info("dropped malformed response from %s: %s", source, exc.reason)
            return
        if partial.first_line.startswith("ACK "):
            return  # never answer an ACK (RFC 3261 17.2.1)
        gate = self.gate
        unknown = gate is not None and not gate.identified(*source)
        if unknown:
            assert gate is not None
            method = partial.first_line.partition(" ")[0]
            method = method if method in GATED_METHODS else "other"
            if not gate.admit(source.host, method, now, size):
                return
        log.info("malformed request from %s: %s", source, exc.reason)
        reason = f"Bad Request ({exc.reason})" if exc.status == 400 else exc.reason
        reason = reason.replace("\r", " ").replace("\n", " ")
        data = response_from_partial(partial, exc.status, reason, self.ids.next())
        if unknown and source.transport == "udp":
            assert gate is not None
            if not gate.spend(source.host, len(data)):
                return
        self.outgoing.append((data, source))

    def _reject(
        self, request: Request, source: Address, status: int, reason: str, now: float
    ) -> None:
        if request.method == "ACK":
            return
        try:
            key = _server_key(request, request.method)
            tx = self.server.get(key)
            response = make_response(request, status, reason, self.ids.next())
            if tx is not None:
                if not tx.answered:
                    self.respond(tx, response, now)
            elif key not in self.server_ghosts:  # a ghost was answered
                self.outgoing.append((response.to_bytes(), source))
        except SipParseError:
            return
        except Exception:
            # Called from receive()'s error handlers, which must not raise in turn.
            log.exception("could not answer a request from %s", source)

    def _receive_request(
        self, request: Request, source: Address, now: float, size: int = 0
    ) -> None:
        via = request.top_via
        # RFC 3581 / RFC 3261 18.2.1: remember where the request really came from.
        if "rport" in via.params or via.host != source.host:
            if "rport" in via.params:
                via.params["rport"] = str(source.port)
            via.params["received"] = source.host
            self._rewrite_top_via(request)
        method = request.method
        if method == "ACK":
            # The ACK of a 3xx-6xx belongs to the INVITE's transaction; the ACK of a 2xx has a
            # branch of its own and matches nothing (13.2.2.4): both of those go up.
            invite_key = _server_key(request, "INVITE")
            invite_tx = self.server.get(invite_key)
            if invite_tx is not None:
                effects = self._step(invite_tx, Event.RECV_ACK, now)
            else:
                ghost = self.server_ghosts.get(invite_key)
                effects = Effect.PASS if ghost is None else _haunted(ghost, Event.RECV_ACK)
            if effects == Effect.PASS:
                self.user.on_ack(request, source, now)
            return
        metered = False
        gate = self.gate
        if (
            gate is not None
            and method in GATED_METHODS
            and not request.to.tag
            and not gate.identified(*source)
        ):
            if not gate.admit(source.host, method, now, size):
                return  # dropped (counted): no answer to reflect
            metered = source.transport == "udp"
        key = _server_key(request, method)
        tx = self.server.get(key)
        if tx is not None:
            # A retransmission: answered with what we answered last (17.2.1, 17.2.2).
            if self._step(tx, Event.RECV_REQUEST, now) == Effect.RESEND:
                self._resend(tx)
            return
        ghost = self.server_ghosts.get(key)
        if ghost is not None:
            if _haunted(ghost, Event.RECV_REQUEST) == Effect.RESEND:
                self._resend_ghost(ghost)
            return
        tx = ServerTransaction(key, request, source)
        tx.metered = metered
        self.server[key] = tx
        if method == "CANCEL":
            self._receive_cancel(tx, request, now)
            return
        if tx.is_invite:
            if not metered:
                # 17.2.1: the transaction answers 100 itself so the caller stops
                # retransmitting.
                self.respond(tx, make_response(request, 100), now)
            else:
                # Metered, a final answer given at once is the only one sent.
                self.user.on_request(tx, request, now)
                if not tx.answered and tx.last_response is None:
                    self.respond(tx, make_response(request, 100), now)
                return
        self.user.on_request(tx, request, now)

    def _receive_cancel(self, cancel_tx: ServerTransaction, cancel: Request, now: float) -> None:
        invite_key = _server_key(cancel, "INVITE")
        invite_tx = self.server.get(invite_key)
        # A terminated transaction has left ``server`` (``_enter``): None covers it.
        if invite_tx is None and invite_key not in self.server_ghosts:
            self.respond(cancel_tx, make_response(cancel, 481, None, self.ids.next()), now)
            return
        self.respond(cancel_tx, make_response(cancel, 200, None, self.ids.next()), now)
        if invite_tx is not None and not invite_tx.answered:
            self.user.on_cancel(invite_tx, now)

    def _rewrite_top_via(self, request: Request) -> None:
        headers = request.headers
        values = headers.get_all("via")
        values[0] = str(request.top_via)
        items = [it for it in headers.items() if it[0] != "via"]
        first = next(i for i, it in enumerate(headers.items()) if it[0] == "via")
        new = Headers()
        new._items = items[:first] + [("via", "Via", v) for v in values] + items[first:]
        request.headers = new

    def _receive_response(self, response: Response, source: Address, now: float) -> None:
        via = response.top_via
        key = _client_key(via.branch or "", response.cseq.method)
        tx = self.client.get(key)
        if tx is None:
            ghost = self.client_ghosts.get(key)
            if ghost is not None:
                # The final response again: our ACK was lost (a 3xx-6xx's; a 2xx's, which
                # the user let go of with its ACK).
                effects = _haunted(ghost, _received(response.status))
                if effects is not None and effects & (Effect.ACK | Effect.PASS):
                    self._resend_ghost(ghost)
            else:
                log.debug("stray response %s from %s", response.status, source)
            return
        effects = self._step(tx, _received(response.status), now)
        if effects is None:
            return
        if Effect.ACK in effects:
            self._send_ack_for_error(tx, response)
        if Effect.PASS in effects:
            self.user.on_response(tx, response, now)
        if tx.state is State.COMPLETED:
            self._release(tx)

    # --- client side ---------------------------------------------------------------------------

    def local_address(self, dest: Address) -> tuple[str, int]:
        """The host and port we put in Via and Contact for messages to ``dest``."""
        if self.local_for is not None:
            return self.local_for(dest)
        return self.local.get(dest.transport) or self.local["udp"]

    def _via(self, dest: Address, branch: str) -> str:
        transport = dest.transport
        host, port = self.local_address(dest)
        host_text = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{transport.upper()} {host_text}:{port};branch={branch};rport"

    def send_request(
        self, request: Request, dest: Address, now: float, owner: ClientOwner | None = None
    ) -> ClientTransaction:
        """Start a client transaction: adds our Via and sends ``request`` to ``dest``.

        ``owner`` is kept on the transaction for the user, who hands it the answers."""
        self._now = now
        branch = self.ids.branch()
        request.headers.add("Via", self._via(dest, branch), first=True)
        request.invalidate()
        return self._start_client(request, dest, branch, owner, now)

    def _start_client(
        self,
        request: Request,
        dest: Address,
        branch: str,
        owner: ClientOwner | None,
        now: float,
    ) -> ClientTransaction:
        data = request.to_bytes()
        tx = ClientTransaction(_client_key(branch, request.method), request, data, dest, owner)
        self.client[tx.key] = tx
        self.outgoing.append((data, dest))
        self._enter(tx, tx.state, now)
        return tx

    def send_cancel(self, invite_tx: ClientTransaction, now: float) -> ClientTransaction | None:
        """CANCEL a pending INVITE (RFC 3261 9.1); only after a provisional response arrived.

        Nobody waits for the CANCEL's own answer: the INVITE's final response tells."""
        self._now = now
        if invite_tx.state is not State.PROCEEDING:
            return None
        invite = invite_tx.request
        headers = Headers()
        for key, name, value in invite.headers.items():
            # The top Via only (ours: an INVITE we sent has just one), From, To, Call-ID,
            # Route and Max-Forwards as the INVITE had them (9.1).
            if key in ("via", "from", "to", "call-id", "route", "max-forwards"):
                headers.add(name, value)
        headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        cancel = Request("CANCEL", invite.uri, headers)
        return self._start_client(cancel, invite_tx.dest, invite_tx.branch, None, now)

    def send_stateless(self, request: Request, dest: Address) -> bytes:
        """Send a request outside any transaction: the ACK of a 2xx (RFC 3261 13.2.2.4).

        No state and no timer, hence no ``now``; returns the bytes sent (the user resends
        them when the 2xx comes again)."""
        request.headers.add("Via", self._via(dest, self.ids.branch()), first=True)
        request.invalidate()
        data = request.to_bytes()
        self.outgoing.append((data, dest))
        return data

    def _send_ack_for_error(self, tx: ClientTransaction, response: Response) -> None:
        """The ACK of a 3xx-6xx belongs to the INVITE's transaction (17.1.1.3); the response
        again (our ACK lost) gets the same ACK, the INVITE being let go of by then."""
        if tx.ack is None:
            tx.ack = self._ack_for_error(tx.request, response)
            tx.ack_dest = tx.dest
        self.outgoing.append((tx.ack, tx.dest))

    @staticmethod
    def _ack_for_error(invite: Request, response: Response) -> bytes:
        headers = Headers()
        for key, name, value in invite.headers.items():
            if key == "via":
                headers.add(name, value)
                break
        for key, name, value in invite.headers.items():
            if key in ("from", "call-id", "route", "max-forwards"):
                headers.add(name, value)
        to_value = response.headers.get("to")
        headers.add("To", to_value if to_value is not None else invite.headers.get("to") or "")
        headers.add("CSeq", f"{invite.cseq.number} ACK")
        return Request("ACK", invite.uri, headers).to_bytes()

    def transport_error(self, dest: Address, now: float) -> None:
        """The transport could not reach ``dest``: fail every transaction waiting on it."""
        self._now = now
        for tx in [t for t in self.client.values() if t.dest == dest]:
            effects = self._step(tx, Event.TRANSPORT_ERROR, now)
            if effects is not None and Effect.REPORT in effects:
                self._report(tx, now)

    # --- server side ---------------------------------------------------------------------------

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        """Send a response within a server transaction and move its state machine."""
        self._now = now
        effects = self._step(tx, _sent(response.status), now)
        if effects is None:
            log.debug("late response %s on a finished transaction", response.status)
            return
        data = response.to_bytes()
        tx.last_response = response
        gate = self.gate
        if tx.metered and gate is not None:
            credit = gate.credit(tx.source.host)
            if len(data) > credit:
                data = self._fit(response, data, credit)
            tx.last_response_data = data
            # More than the source has sent, to an address that may be forged: kept for the
            # request's retransmission to pay for; else never sent.
            if gate.spend(tx.source.host, len(data)):
                self.outgoing.append((data, tx.source))
        else:
            tx.last_response_data = data
            self.outgoing.append((data, tx.source))
        if tx.state is State.COMPLETED:
            self._release(tx)

    def _fit(self, response: Response, data: bytes, budget: int) -> bytes:
        """A challenge that offers several algorithms, with the later offers left out until
        it fits ``budget`` (the first, preferred, one always kept); else ``data``."""
        items = response.headers._items
        for name in ("www-authenticate", "proxy-authenticate"):
            offers = sum(1 for it in items if it[0] == name)
            for keep in range(offers - 1, 0, -1):
                kept: list[tuple[str, str, str]] = []
                seen = 0
                for item in items:
                    if item[0] == name:
                        seen += 1
                        if seen > keep:
                            continue
                    kept.append(item)
                trimmed = Response(response.status, response.reason, Headers(), response.body)
                trimmed.headers._items = kept
                out = trimmed.to_bytes()
                if len(out) <= budget:
                    if self.gate is not None:
                        self.gate.stats["trimmed"] += 1
                    return out
        return data

    def ack_received(self, tx: ServerTransaction, now: float) -> None:
        """The user matched the ACK of our 2xx to this INVITE: stop retransmitting it.

        The transaction stays in Accepted until Timer L (64*T1 after the 2xx), so that a
        retransmission of the INVITE still in flight is absorbed instead of arriving at the user
        as a new request (RFC 6026 7.1, 8.7).
        """
        self._now = now
        effects = self._step(tx, Event.ACKED, now)
        if effects is not None and Effect.SETTLE in effects:
            tx.acked = True
            if tx._retransmit is not None:
                tx._retransmit.cancel()
                tx._retransmit = None
            self._release(tx)

    def let_go(self, tx: Transaction, ack: tuple[bytes, Address] | None = None) -> None:
        """The user will neither read ``tx``'s request again nor need to hear of it (the
        call it served has ended): the transaction keeps only what its retransmissions take
        (in a lingering state, as a ghost: the object leaves the layer). Before the final
        response, nothing is let go of: the request is needed to answer it, to CANCEL it or
        to ACK its failure. A client INVITE in Accepted hands no 2xx up any more.

        ``ack``: for a client INVITE in Accepted, the ACK the user sent for its 2xx
        (:meth:`send_stateless`) and where to: the transaction sends it again for every 2xx
        until Timer M. Kept as bytes and an address rather than by an owner object: the
        lingering transaction becomes a ghost, nothing the collector walks."""
        if tx.state in _BEFORE_FINAL:
            return
        if ack is not None and isinstance(tx, ClientTransaction) and tx.state is State.ACCEPTED:
            tx.ack, tx.ack_dest = ack
        self._release(tx)

    # --- time ----------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``. Never raises."""
        self._now = now
        try:
            self.timers.run_due(now)
        except Exception:
            log.exception("error in a timer")

    def drain(self) -> list[tuple[bytes, Address]]:
        out = self.outgoing
        self.outgoing = []
        return out


def _next_interval(tx: Transaction, cap: float) -> float:
    """The retransmission interval doubles up to ``cap`` (17.1.1.2, 17.1.2.2, 17.2.1); a client
    non-INVITE that heard a provisional response retransmits every T2 (17.1.2.2)."""
    if tx.machine is Machine.CLIENT_NON_INVITE and tx.state is State.PROCEEDING:
        return T2
    return min(tx._interval * 2, cap)
