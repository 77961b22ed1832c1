"""Floods without amplification (issue 14, item 4), end to end: a bounded flood of INVITEs
from unidentified UDP sources while the customer's sipp calls through the node.

The flood: 50 sources (127.0.1.1-50, in no ACL) sending small INVITEs (no body, each a new
transaction) for 3 s at about 4 000 a second in total, from a thread of the test, which also
reads everything the node sends back. The node keeps its flood defaults (50 a second per
source, 1 000 a second overall): most of the flood is dropped and counted, what is answered
(407 challenges) never adds up to more bytes than the source sent. Meanwhile the customer
(acme-trunk, known by its ACL at 127.0.0.2) makes 20 calls a second and loses none.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from .attacker import metrics
from .conftest import CALLEE_IP, SippFactory, StartBillingNode
from .node import Node
from .sipp import SippResult
from .test_billing import EXAMPLE, peer

pytestmark = pytest.mark.e2e

FLOOD_SOURCES = [f"127.0.1.{n}" for n in range(1, 51)]
FLOOD_SECONDS = 3.0
FLOOD_RATE = 4000  # INVITEs a second, all sources together
TICK = 0.01


@dataclass
class Tally:
    sent: dict[str, int] = field(default_factory=dict)  # bytes, by source
    received: dict[str, int] = field(default_factory=dict)  # bytes the node sent it
    packets_sent: int = 0
    answers: dict[bytes, int] = field(default_factory=dict)  # by status line start
    seconds: float = 0.0


def flood_invite(source: str, port: int, node: Node, n: int) -> bytes:
    return (
        f"INVITE sip:15551234567@{node.sip_host}:{node.sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-flood-{n};rport\r\n"
        f"From: <sip:{n % 1000}@{source}>;tag=fl{n}\r\n"
        f"To: <sip:15551234567@{node.sip_host}>\r\n"
        f"Call-ID: flood-{n}@{source}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:{n % 1000}@{source}:{port}>\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def flood(node: Node, stop_after: float) -> Tally:
    """Send for ``stop_after`` seconds at FLOOD_RATE, paced by ticks; read every answer, and
    go on reading for a second after the last send (late answers count too)."""
    tally = Tally()
    sockets = []
    for source in FLOOD_SOURCES:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.setblocking(False)
        sockets.append(sock)
        tally.sent[source] = tally.received[source] = 0
    target = (node.sip_host, node.sip_port)
    per_tick = int(FLOOD_RATE * TICK)

    def drain() -> None:
        for sock in sockets:
            source = sock.getsockname()[0]
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                tally.received[source] += len(data)
                head = data[:11]
                tally.answers[head] = tally.answers.get(head, 0) + 1

    try:
        started = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - started) < stop_after:
            due = int(elapsed / TICK) * per_tick + per_tick
            while tally.packets_sent < due:
                sock = sockets[n % len(sockets)]
                source, port = sock.getsockname()
                data = flood_invite(source, port, node, n)
                try:
                    sock.sendto(data, target)
                except BlockingIOError:
                    break
                tally.sent[source] += len(data)
                tally.packets_sent += 1
                n += 1
            drain()
            time.sleep(TICK / 2)
        tally.seconds = time.monotonic() - started
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            drain()
            time.sleep(TICK)
    finally:
        for sock in sockets:
            sock.close()
    return tally


def _example(callee: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    peer(doc, "carrier-a")["address"] = callee
    doc["peers"] = [p for p in doc["peers"] if p["name"] != "carrier-b"]
    doc["routes"] = [{"prefix": "", "strategy": "least_cost", "suppliers": ["carrier-a"]}]
    # A digest customer too: strangers are challenged (407), as on a node with phones.
    doc["accounts"].append({"name": "dialup", "currency": "USD", "balance": "5"})
    doc["peers"].append(
        {
            "name": "dialup-phone",
            "role": "customer",
            "account": "dialup",
            "tariff": "retail",
            "username": "dialup",
            "password": "dialup-phone-secret-9",
        }
    )
    return doc


def test_a_flood_of_unidentified_invites_costs_the_customer_nothing(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    uas = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None, timeout_s=60)
    node = start_billing_node(_example(SippFactory.address(uas)), log_level="warning")
    customer = sipp.uac_background(
        node.sip_address, "uac", calls=120, rate=20, duration_ms=1000, timeout_s=40
    )
    time.sleep(1.0)  # calls in progress when the flood starts
    result: list[Tally] = []
    sender = threading.Thread(target=lambda: result.append(flood(node, FLOOD_SECONDS)))
    sender.start()
    sender.join(FLOOD_SECONDS + 10)
    assert not sender.is_alive()
    [tally] = result
    calls: SippResult = customer.wait(60)

    print(
        f"flood: {tally.packets_sent} INVITEs in {tally.seconds:.2f} s "
        f"({tally.packets_sent / tally.seconds:.0f}/s) from {len(FLOOD_SOURCES)} sources; "
        f"{sum(tally.sent.values())} bytes in, {sum(tally.received.values())} bytes out; "
        f"answers {tally.answers}"
    )
    assert calls.returncode == 0, calls.describe()
    assert (calls.successful, calls.failed) == (120, 0), calls.describe()
    assert tally.packets_sent >= FLOOD_RATE * FLOOD_SECONDS * 0.5, "the flood did not run"
    # No amplification: no source got back more bytes than it sent.
    over = {s: (tally.sent[s], tally.received[s]) for s in FLOOD_SOURCES}
    assert all(received <= sent for sent, received in over.values()), over
    assert set(tally.answers) <= {b"SIP/2.0 407"}, tally.answers  # challenges, nothing else
    m = metrics(node)
    dropped = m.get('smartswitch_flood_dropped_total{method="INVITE"}', 0)
    admitted = m.get("smartswitch_flood_admitted_total", 0)
    assert dropped > 0 and admitted > 0, m
    # Every flood INVITE was seen and sorted (loopback may lose a few in a full buffer).
    assert 0.99 * tally.packets_sent <= dropped + admitted <= tally.packets_sent
    assert admitted <= 2000 + 1000 * (tally.seconds + 1)  # the overall bound (and its burst)
    assert m.get("smartswitch_flood_oversize_dropped_total", 0) > 0
    assert node.running
