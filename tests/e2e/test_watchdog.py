"""The node under a service manager's eye: ``sd_notify`` against a real node process, with a
Unix datagram socket standing where systemd's ``NOTIFY_SOCKET`` would be.

READY=1 once it serves, WATCHDOG=1 every half ``WATCHDOG_USEC`` while its loop runs and its
SIP port answers, nothing while the process is stopped (SIGSTOP: a stuck node), pings again
after SIGCONT, STOPPING=1 when it shuts down.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .node import Node, NodeSpec, route, sip_uri

pytestmark = pytest.mark.e2e


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    yield sock
    sock.close()


def _collect(sock: socket.socket, seconds: float) -> list[bytes]:
    """Every datagram that arrives within ``seconds``."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096))
        except TimeoutError:
            break
    return got


def _until(sock: socket.socket, wanted: bytes, seconds: float) -> list[bytes]:
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            datagram = sock.recv(4096)
        except TimeoutError:
            break
        got.append(datagram)
        if wanted in datagram.split(b"\n"):
            return got
    raise AssertionError(f"no {wanted!r} within {seconds} s: {got}")


def test_ready_watchdog_pings_silence_when_stuck_and_stopping(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    spec = NodeSpec(workdir=tmp_path / "node", sip_host="127.0.0.1")
    spec.config = {
        "log_level": "info",
        "accept_any_source": True,
        "route": [route("1", sip_uri("127.0.0.3", 9))],
    }
    spec.env = {
        "NOTIFY_SOCKET": notify_socket.getsockname(),
        "WATCHDOG_USEC": "1000000",  # WatchdogSec=1: a ping every 0.5 s
    }
    node = Node(spec)
    try:
        node.start()
        first = _until(notify_socket, b"READY=1", 10)
        assert b"READY=1" in first[0].split(b"\n"), first  # nothing before READY
        pings = [d for d in _collect(notify_socket, 2.2) if d == b"WATCHDOG=1"]
        assert 3 <= len(pings) <= 6, pings

        os.kill(node.pid, signal.SIGSTOP)  # a node that no longer runs
        try:
            _collect(notify_socket, 0.3)  # a ping on its way when it stopped
            assert _collect(notify_socket, 2.0) == []
        finally:
            os.kill(node.pid, signal.SIGCONT)
        assert b"WATCHDOG=1" in _collect(notify_socket, 1.5)

        assert node.stop() == 0, node.log_tail()
        assert any(b"STOPPING=1" in d.split(b"\n") for d in _collect(notify_socket, 0.5))
    finally:
        node.stop()
