"""Which calls are captured, and each captured call's messages until it has ended.

Theory of operation
-------------------
The recorder lives on the event loop and never touches a disk.  The B2BUA tells it when a call
starts (with the A leg's Call-ID and the customer), when it adds a B leg (with that leg's
Call-ID and the supplier), and when the call ends (with the CDR id that names the file).  The
transport hands it every message it sends or receives; the recorder finds the message's Call-ID
and, when that Call-ID belongs to a captured call, appends ``(time, transport, src, dst, bytes)``
to the call's list: one dictionary look-up and one append.  When no call is being captured it
returns at once.

A call is *captured* when the policy says so: every call (``ALL``), or when its customer or one
of its suppliers is selected (``SELECTED``).  The supplier is only known once the call is routed,
after the A leg's INVITE crossed the wire, so while suppliers are selected every call is kept
*tentatively* from its start: if a selected supplier's leg is added the call becomes captured
and nothing is missing; if the call ends without one its messages are dropped.

An ended call is kept *lingering* for ``linger`` seconds, because the messages that finish it
(the BYE relayed to the other party, the 200s) cross the wire after the CDR is written.  Then
its messages go, as one :class:`CaptureJob`, to the sink (the writer thread of
``smartswitch.capture.writer``), which writes the pcap file.  Messages that arrive after that
(a retransmitted BYE) find no call and are not captured.

Time: ``now`` (the loop's monotonic clock) is passed into ``start``, ``end`` and ``poll``; a
message carries its own wall-clock time (seconds since the epoch), which goes into the file.

When the sink reports an error (a full or unwritable capture directory), new calls get no file:
the recorder counts them in ``calls_skipped``; HEP, which needs no disk, carries on.  The sink
clears its error by itself once the directory is writable again.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from smartswitch.capture.pcap import CapturedMessage

__all__ = [
    "CaptureJob",
    "CaptureMode",
    "CapturePolicy",
    "CaptureRecorder",
    "CaptureSink",
    "CaptureStats",
    "HepSink",
    "WireRecord",
    "call_id_of",
]

Address = tuple[str, int]
# What message() stores per message, (wall time, transport, src, dst, bytes): a plain tuple
# costs a fraction of a dataclass; the writer thread turns it into a CapturedMessage.
WireRecord = tuple[float, str, Address, Address, bytes]


class CaptureMode(enum.StrEnum):
    OFF = "off"
    ALL = "all"
    SELECTED = "selected"  # the calls of the selected customers and suppliers


@dataclass(frozen=True, slots=True)
class CapturePolicy:
    """The capture setting: which calls are captured."""

    mode: CaptureMode = CaptureMode.OFF
    customers: frozenset[int] = frozenset()
    """Peer ids whose calls as a customer are captured (mode SELECTED)."""
    suppliers: frozenset[int] = frozenset()
    """Peer ids whose calls as a supplier are captured (mode SELECTED)."""

    def wants_customer(self, peer_id: int | None) -> bool:
        if self.mode is CaptureMode.ALL:
            return True
        return self.mode is CaptureMode.SELECTED and peer_id in self.customers

    def wants_supplier(self, peer_id: int | None) -> bool:
        return self.mode is CaptureMode.SELECTED and peer_id in self.suppliers

    @property
    def may_want_supplier(self) -> bool:
        """Whether a call not captured for its customer may still be captured for a supplier."""
        return self.mode is CaptureMode.SELECTED and bool(self.suppliers)


@dataclass(frozen=True, slots=True)
class CaptureJob:
    """One finished call for the writer: the file ``name`` (the CDR id) and its messages."""

    name: str
    correlation_id: str
    """The A leg's Call-ID."""
    messages: tuple[WireRecord, ...]

    def captured(self) -> list[CapturedMessage]:
        """The messages in the order they crossed the wire (a stable sort by time: the
        transport may report a received message after the replies it caused)."""
        ordered = sorted(self.messages, key=lambda wire: wire[0])
        return [CapturedMessage(*wire) for wire in ordered]


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Counters for /metrics and the dashboard."""

    error: str | None
    """Why calls are not being captured to files, or None."""
    calls_active: int
    """Calls being captured now (tentative ones included)."""
    calls_captured: int
    """Calls whose file was handed to the writer."""
    calls_skipped: int
    """Calls that would have been captured but got no file because of the error state."""
    files_written: int
    write_errors: int
    messages_dropped: int
    """Messages captured but not written (a failed file, a full queue, a call over its cap)."""
    files_deleted: int
    """Files removed by retention."""
    hep_sent: int
    hep_errors: int


class CaptureSink(Protocol):
    """Where finished calls go: the writer thread (``smartswitch.capture.writer``)."""

    @property
    def error(self) -> str | None:
        """Why files cannot be written now (None when they can)."""

    @property
    def files_written(self) -> int: ...
    @property
    def write_errors(self) -> int: ...
    @property
    def messages_dropped(self) -> int: ...
    @property
    def files_deleted(self) -> int: ...

    def submit(self, job: CaptureJob) -> None:
        """Take a finished call; must not block."""


class HepSink(Protocol):
    """Where each captured message is also sent as HEP3 (``smartswitch.capture.sender``)."""

    def send(
        self,
        correlation_id: bytes,
        transport: str,
        src: Address,
        dst: Address,
        data: bytes,
        wall_time: float,
    ) -> None:
        """Send one message; must not block and must not raise."""

    @property
    def sent(self) -> int: ...
    @property
    def errors(self) -> int: ...


# RFC 3261 section 7.3.3: header names are case-insensitive and Call-ID has the compact form
# "i".  The common spelling is tried first with bytes.find (no regex on the usual path).
_CALL_ID = re.compile(rb"(?:^|\n)(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID of a SIP message, from its head only, or None if it has none."""
    # The usual spelling, and no blank line before it: it is in the head.  (The head's end is
    # looked for only up to the header, about half the search of finding it outright.)
    start = data.find(b"\nCall-ID:")
    if start >= 0 and data.find(b"\r\n\r\n", 0, start + 1) < 0:
        end = data.find(b"\n", start + 9)
        value = data[start + 9 : end] if end >= 0 else data[start + 9 :]
        return value.strip() or None
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        head_end = data.find(b"\n\n")
    match = _CALL_ID.search(data, 0, head_end if head_end >= 0 else len(data))
    if match is None:
        return None
    return match.group(1).strip() or None


class _Call:
    __slots__ = ("captured", "correlation", "due", "file", "legs", "messages", "name")

    def __init__(self, correlation: bytes, captured: bool, file: bool) -> None:
        self.correlation = correlation
        self.captured = captured  # False: tentative (waiting for a selected supplier)
        self.file = file  # a pcap file is wanted (False while the sink is in error)
        self.legs: list[bytes] = [correlation]
        self.messages: list[WireRecord] = []
        self.name: str | None = None
        self.due = 0.0


class CaptureRecorder:
    """The per-call capture manager (see the module docstring)."""

    def __init__(
        self,
        policy: CapturePolicy,
        sink: CaptureSink,
        hep: HepSink | None = None,
        *,
        linger: float = 4.0,
        max_messages: int = 1000,
    ) -> None:
        self.policy = policy
        """The setting; replace it whenever the configuration changes (calls already being
        captured keep their decision)."""
        self.sink = sink
        self.hep = hep
        self.linger = linger
        self.max_messages = max_messages
        self._legs: dict[bytes, _Call] = {}
        self._ending: deque[_Call] = deque()
        self._active = 0
        self.calls_captured = 0
        self.calls_skipped = 0
        self.messages_dropped = 0

    # --- the B2BUA's side ---------------------------------------------------------------------

    def start(self, call_id: str, now: float, customer: int | None = None) -> bool:
        """A call begins; ``call_id`` is its A leg's Call-ID, ``customer`` the customer's peer
        id.  Call it before the A leg's INVITE is reported to :meth:`message` (or in the same
        turn of the loop: messages are sorted by time when the file is written).  Returns
        whether the call is being captured (or kept tentatively for its suppliers)."""
        self.poll(now)
        policy = self.policy
        captured = policy.wants_customer(customer)
        if not captured and not policy.may_want_supplier:
            return False
        key = call_id.encode()
        old = self._legs.get(key)
        if old is not None:
            if old.name is None:
                return True  # started twice: one call
            self._finish(old)  # a new call reusing a lingering call's Call-ID
        file = self.sink.error is None
        if not file and self.hep is None:
            if captured:
                self.calls_skipped += 1
            return False
        call = _Call(key, captured, file)
        self._legs[key] = call
        self._active += 1
        return True

    def add_leg(self, call_id: str, leg_call_id: str, supplier: int | None = None) -> None:
        """The call with A leg ``call_id`` has a new B leg (a fork, a failover to another
        supplier) with Call-ID ``leg_call_id``, towards ``supplier``'s peer id.  A selected
        supplier makes a tentative call captured, with everything seen so far."""
        call = self._legs.get(call_id.encode())
        if call is None:
            return
        key = leg_call_id.encode()
        if key not in self._legs:
            self._legs[key] = call
            call.legs.append(key)
        if not call.captured and self.policy.wants_supplier(supplier):
            call.captured = True
            if self.hep is not None:
                for wire in call.messages:
                    self.hep.send(call.correlation, *wire[1:], wire[0])
            if not call.file:
                call.messages.clear()

    def end(self, call_id: str, name: str, now: float) -> None:
        """The call is over; its file will be named after ``name`` (the CDR id; see
        :func:`smartswitch.capture.writer.relative_path`).  Messages keep being captured for
        ``linger`` seconds, then the call goes to the writer."""
        call = self._legs.get(call_id.encode())
        if call is not None and call.name is None:
            call.name = name
            call.due = now + self.linger
            self._ending.append(call)
        self.poll(now)

    def discard(self, call_id: str) -> None:
        """Forget a call without writing anything (it will have no CDR)."""
        call = self._legs.get(call_id.encode())
        if call is not None:
            call.captured = False
            self._finish(call)

    def poll(self, now: float) -> None:
        """Hand the calls whose linger is over to the writer.  ``start`` and ``end`` call it;
        the node also calls it about once a second so the last call of a quiet spell goes."""
        ending = self._ending
        while ending and ending[0].due <= now:
            self._finish(ending.popleft())

    def close(self) -> None:
        """Hand every ended call to the writer now (at shutdown); forget the others."""
        for call in list(self._ending):
            self._finish(call)
        self._ending.clear()
        for call in list(self._legs.values()):
            call.captured = False
            self._finish(call)

    def _finish(self, call: _Call) -> None:
        if self._legs.get(call.correlation) is not call:
            return  # already finished
        for key in call.legs:
            if self._legs.get(key) is call:
                del self._legs[key]
        self._active -= 1
        if not call.captured or call.name is None:
            return
        if not call.file:
            self.calls_skipped += 1
            return
        self.calls_captured += 1
        self.sink.submit(CaptureJob(call.name, call.correlation.decode(), tuple(call.messages)))

    # --- the transport's side -----------------------------------------------------------------

    def message(
        self, transport: str, src: Address, dst: Address, data: bytes, wall_time: float
    ) -> None:
        """A message crossed the wire: ``data`` as sent or received, from ``src`` to ``dst``
        (real IP addresses and ports), at ``wall_time`` (seconds since the epoch)."""
        if not self._legs:
            return
        call_id = call_id_of(data)
        if call_id is None:
            return
        call = self._legs.get(call_id)
        if call is None:
            return
        if call.file or not call.captured:
            if len(call.messages) < self.max_messages:
                call.messages.append((wall_time, transport, src, dst, data))
            else:
                self.messages_dropped += 1
        if call.captured and self.hep is not None:
            self.hep.send(call.correlation, transport, src, dst, data, wall_time)

    # --- status -------------------------------------------------------------------------------

    @property
    def error(self) -> str | None:
        return self.sink.error

    @property
    def calls_active(self) -> int:
        return self._active

    def stats(self) -> CaptureStats:
        sink, hep = self.sink, self.hep
        return CaptureStats(
            error=sink.error,
            calls_active=self._active,
            calls_captured=self.calls_captured,
            calls_skipped=self.calls_skipped,
            files_written=sink.files_written,
            write_errors=sink.write_errors,
            messages_dropped=self.messages_dropped + sink.messages_dropped,
            files_deleted=sink.files_deleted,
            hep_sent=hep.sent if hep is not None else 0,
            hep_errors=hep.errors if hep is not None else 0,
        )

    def active_call_ids(self) -> Iterable[str]:
        """The A-leg Call-IDs being captured (for tests and diagnostics)."""
        return {call.correlation.decode() for call in self._legs.values()}
