"""The HEP sender: a real UDP collector receives and decodes every message of a call."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from smartswitch.capture.hep import IPPROTO_TCP, IPPROTO_UDP, decode
from smartswitch.capture.recorder import CaptureMode, CapturePolicy, CaptureRecorder
from smartswitch.capture.sender import HepSender

from .calls import A_CALL_ID, two_leg_call
from .fakes import ListSink
from .test_recorder import play

CAPTURE_ID = 0xDEADBEEF  # above 2**31: the whole uint32 must survive


@contextlib.contextmanager
def collector(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((host, 0))
        sock.settimeout(5)
        yield sock


def receive(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65_536) for _ in range(count)]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_a_collector_decodes_every_message_of_a_call(transport: str, ipv6: bool) -> None:
    messages = two_leg_call(transport, ipv6)
    with collector() as sock:
        sender = HepSender("127.0.0.1", sock.getsockname()[1], CAPTURE_ID, auth_key=b"secret")
        recorder = CaptureRecorder(CapturePolicy(CaptureMode.ALL), ListSink(), sender, linger=0)
        play(recorder, messages)
        received = [decode(packet) for packet in receive(sock, len(messages))]
        sender.close()
    assert [(m.src, m.dst, m.payload) for m in received] == [
        (m.src, m.dst, m.data) for m in messages
    ]
    for hep, wire in zip(received, messages, strict=True):
        assert hep.time == pytest.approx(wire.time, abs=1e-6)
        assert hep.capture_id == CAPTURE_ID
        assert hep.correlation_id == A_CALL_ID.encode()  # both legs: one call in Homer
        assert hep.auth_key == b"secret"
        assert hep.ip_protocol == (IPPROTO_UDP if transport == "udp" else IPPROTO_TCP)
    assert (sender.sent, sender.errors) == (14, 0)
    assert recorder.stats().hep_sent == 14


def test_a_collector_on_ipv6() -> None:
    try:
        ctx = collector("::1")
        sock = ctx.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        sender = HepSender("::1", sock.getsockname()[1], 1)
        wire = two_leg_call()[0]
        sender.send(b"c", "udp", wire.src, wire.dst, wire.data, wire.time)
        assert decode(sock.recv(65_536)).payload == wire.data
        sender.close()
    finally:
        ctx.__exit__(None, None, None)


def test_an_absent_collector_costs_errors_not_exceptions() -> None:
    with collector() as sock:
        port = sock.getsockname()[1]
    # Nobody listens on the port now: loopback answers with ICMP port unreachable, which a
    # connected UDP socket reports on a later send.
    sender = HepSender("127.0.0.1", port, 1)
    wire = two_leg_call()[0]
    deadline = time.monotonic() + 5
    while sender.errors == 0 and time.monotonic() < deadline:
        sender.send(b"c", "udp", wire.src, wire.dst, wire.data, wire.time)
    assert sender.errors > 0
    sender.send(b"c", "udp", ("example.com", 1), wire.dst, wire.data, wire.time)  # no raise
    sender.close()


def test_the_capture_id_is_a_uint32() -> None:
    with pytest.raises(ValueError, match="uint32"):
        HepSender("127.0.0.1", 9060, 2**32)
