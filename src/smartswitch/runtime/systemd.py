"""Running under systemd: readiness, the watchdog, and structured logs to the journal.

Nothing here needs systemd's Python bindings: the notification and journal protocols are
datagrams on Unix sockets whose paths systemd passes in the environment (``NOTIFY_SOCKET``,
``JOURNAL_STREAM``), documented in sd_notify(3) and systemd's "Native Journal Protocol".
Outside systemd every function here does nothing.

The watchdog is fed from the node's event loop, by a task that wakes every half period: a
loop that is stuck (a blocking call, an endless loop) stops feeding it, and systemd restarts
the node after ``WatchdogSec``. A thread would keep feeding a dead loop; that is the point of
doing it on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import sys
from collections.abc import Awaitable, Callable

__all__ = [
    "CallIdFilter",
    "JournalHandler",
    "journal_wanted",
    "notify",
    "watchdog_interval",
    "watchdog_task",
]

log = logging.getLogger("smartswitch.node")

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def _socket_address(path: str) -> str | bytes:
    # An abstract socket is given with a leading "@" and addressed with a leading NUL.
    return b"\0" + path[1:].encode() if path.startswith("@") else path


def notify(*assignments: str) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...`` to the service manager;
    False (and nothing sent) outside systemd or if the socket is gone."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    message = "\n".join(assignments).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message, _socket_address(path))
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``WatchdogSec``), or None when systemd set no
    watchdog for this process (sd_watchdog_enabled(3): ``WATCHDOG_PID`` names us, if set)."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        period = int(usec) / 1_000_000
    except ValueError:
        return None
    return period / 2 if period > 0 else None


async def watchdog_task(alive: Callable[[float], Awaitable[bool]] | None = None) -> None:
    """Feed the watchdog from the event loop until cancelled (see the module docstring).

    With ``alive``, each ping is sent only if ``await alive(timeout)`` says the service
    itself answers (the node: its SIP port answers an OPTIONS) within ``timeout`` (a third of
    the interval): a loop that runs but no longer serves is restarted too.
    """
    interval = watchdog_interval()
    if interval is None:
        return
    failing = False
    while True:
        started = asyncio.get_running_loop().time()
        ok = True if alive is None else await alive(interval / 3)
        if ok:
            notify("WATCHDOG=1")
            if failing:
                log.warning("watchdog: the node answers again")
        elif not failing:
            log.error("watchdog: the node does not answer; not feeding systemd's watchdog")
        failing = not ok
        spent = asyncio.get_running_loop().time() - started
        await asyncio.sleep(max(0.0, interval - spent))


def journal_wanted() -> bool:
    """Whether our standard error is the journal (systemd sets ``JOURNAL_STREAM`` to the
    device and inode of the stream it connected; sd_journal_stream_fd(3))."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device or not inode:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{stat.st_dev}:{stat.st_ino}" == stream


_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _field(name: str, value: str) -> bytes:
    data = value.encode("utf-8", "replace")
    if b"\n" in data:
        # A multi-line value: the name, a newline, its length as little-endian uint64, itself.
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def _call_id_of(record: logging.LogRecord) -> str | None:
    # The call path's convention: a line about a call starts "call %s: ..." with the Call-ID
    # as its first argument (b2bua/engine.py, routing/policy.py). Read here, in the handler,
    # so the call path builds nothing more per line for a journal it may not log to.
    if isinstance(record.msg, str) and record.msg.startswith("call %s"):
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], str):
            return args[0]
    return None


class CallIdFilter(logging.Filter):
    """Keeps a record's call id as its ``call_id`` attribute before the record is queued (a
    ``QueueHandler`` merges the arguments into the message, and the Call-ID with them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_id", None) is None:
            call_id = _call_id_of(record)
            if call_id is not None:
                record.call_id = call_id
        return True


class JournalHandler(logging.Handler):
    """Log records as journal entries with fields: ``MESSAGE``, ``PRIORITY``,
    ``SYSLOG_IDENTIFIER``, ``LOGGER``, and ``CALL_ID`` when the record is about a call
    (``extra={"call_id": ...}``, or the call path's ``"call %s: ..."`` lines), so
    ``journalctl CALL_ID=...`` finds a call's lines. A datagram the journal refuses (too
    large, socket gone) falls back to stderr."""

    def __init__(self, path: str = JOURNAL_SOCKET, identifier: str = "smartswitch") -> None:
        super().__init__()
        self.address = _socket_address(path)
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            parts = [
                _field("MESSAGE", message),
                _field("PRIORITY", str(_PRIORITY.get(record.levelno, 6))),
                _field("SYSLOG_IDENTIFIER", self.identifier),
                _field("LOGGER", record.name),
            ]
            call_id = getattr(record, "call_id", None) or _call_id_of(record)
            if call_id:
                parts.append(_field("CALL_ID", str(call_id)))
            self.sock.sendto(b"".join(parts), self.address)
        except OSError:
            with contextlib.suppress(Exception):
                sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()
