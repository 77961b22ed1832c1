"""sd_notify, the watchdog and the journal, against real Unix datagram sockets standing where
systemd's would be."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from pathlib import Path

import pytest

from smartswitch.runtime import systemd


@pytest.fixture
def listener(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2.0)
    return sock


def test_notify_outside_systemd_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_sends_the_assignments(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.getsockname())
    assert systemd.notify("READY=1", "STATUS=serving")
    assert listener.recv(4096) == b"READY=1\nSTATUS=serving"


def test_watchdog_interval_is_half_the_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert systemd.watchdog_interval() is None


def test_watchdog_is_fed_by_the_loop_and_stops_when_it_is_stuck(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    listener.setblocking(False)

    def pings() -> int:
        count = 0
        while True:
            try:
                assert listener.recv(64) == b"WATCHDOG=1"
            except BlockingIOError:
                return count
            count += 1

    async def scenario() -> tuple[int, int]:
        task = asyncio.create_task(systemd.watchdog_task())
        await asyncio.sleep(0.3)
        fed = pings()
        time.sleep(0.3)  # the loop is stuck: nothing may feed the watchdog meanwhile
        stuck = pings()
        task.cancel()
        return fed, stuck

    fed, stuck = asyncio.run(scenario())
    assert fed >= 4
    assert stuck == 0


def _fields(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, sep, tail = rest.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
            rest = tail
        else:  # binary-safe form: NAME\n<u64 length><data>\n
            (length,) = struct.unpack("<Q", tail[:8])
            fields[line.decode()] = tail[8 : 8 + length].decode()
            rest = tail[8 + length + 1 :]
        del sep
    return fields


def test_journal_entries_carry_the_call_id(listener: socket.socket) -> None:
    handler = systemd.JournalHandler(listener.getsockname())
    logger = logging.getLogger("smartswitch.test.journal")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("call %s: no ACK", "abc@host", extra={"call_id": "abc@host"})
        logger.error("two\nlines")
    finally:
        logger.removeHandler(handler)
        handler.close()
    first = _fields(listener.recv(65536))
    assert first["MESSAGE"] == "call abc@host: no ACK"
    assert first["CALL_ID"] == "abc@host"
    assert first["PRIORITY"] == "4"
    assert first["SYSLOG_IDENTIFIER"] == "smartswitch"
    second = _fields(listener.recv(65536))
    assert second["MESSAGE"] == "two\nlines"
    assert second["PRIORITY"] == "3"
    assert "CALL_ID" not in second


def test_the_call_paths_lines_carry_their_call_id(listener: socket.socket) -> None:
    handler = systemd.JournalHandler(listener.getsockname())
    logger = logging.getLogger("smartswitch.test.journal2")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("call %s: no answer in %.0f s", "xyz@10.0.0.1", 30.0)
        logger.warning("calls %s", "not-a-call")
    finally:
        logger.removeHandler(handler)
        handler.close()
    first = _fields(listener.recv(65536))
    assert first["MESSAGE"] == "call xyz@10.0.0.1: no answer in 30 s"
    assert first["CALL_ID"] == "xyz@10.0.0.1"
    assert "CALL_ID" not in _fields(listener.recv(65536))


def test_watchdog_is_not_fed_while_the_service_does_not_answer(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    listener.setblocking(False)
    answering = [True]

    async def alive(timeout: float) -> bool:
        assert 0 < timeout < 0.05
        return answering[0]

    def pings() -> int:
        count = 0
        while True:
            try:
                listener.recv(64)
            except BlockingIOError:
                return count
            count += 1

    async def scenario() -> tuple[int, int, int]:
        task = asyncio.create_task(systemd.watchdog_task(alive))
        await asyncio.sleep(0.3)
        fed = pings()
        answering[0] = False
        await asyncio.sleep(0.3)
        starved = pings()
        answering[0] = True
        await asyncio.sleep(0.3)
        again = pings()
        task.cancel()
        return fed, starved, again

    fed, starved, again = asyncio.run(scenario())
    assert fed >= 4 and again >= 4
    assert starved <= 1  # at most the ping already decided when it stopped answering


def test_the_call_id_survives_the_nodes_log_queue(listener: socket.socket) -> None:
    import logging.handlers
    import queue

    journal = systemd.JournalHandler(listener.getsockname())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queued = logging.handlers.QueueHandler(records)
    queued.addFilter(systemd.CallIdFilter())
    listener_thread = logging.handlers.QueueListener(records, journal)
    listener_thread.start()
    logger = logging.getLogger("smartswitch.test.journal3")
    logger.addHandler(queued)
    logger.propagate = False
    try:
        logger.warning("call %s: BYE from the %s", "q1@10.0.0.2", "caller")
    finally:
        listener_thread.stop()
        logger.removeHandler(queued)
        journal.close()
    fields = _fields(listener.recv(65536))
    assert fields["MESSAGE"].endswith("call q1@10.0.0.2: BYE from the caller")
    assert fields["CALL_ID"] == "q1@10.0.0.2"
