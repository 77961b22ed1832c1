"""Calls through a real node: sipp caller -> smartswitch -> sipp callee(s).

Each test starts its callees first (the route needs their ports), then a node
routing the dialled number (prefix "1") to them, then runs the caller to
completion. Assertions use three sources: sipp's exit code, its statistics
(successful/failed calls), and the messages each side received.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from dataclasses import dataclass

import pytest

from .conftest import CALLEE2_IP, CALLEE_IP, CALLER_IP, DIALLED, SippFactory, StartNode
from .node import Node, route
from .sipp import SippResult, Transport, free_port, topology_leaks

pytestmark = pytest.mark.e2e


def _ok(result: SippResult, calls: int = 1) -> None:
    """sipp exited 0 with exactly ``calls`` successful calls and no failed one."""
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()


def _nothing_received(result: SippResult) -> None:
    assert not result.received, "expected no message at all:\n" + result.describe()


# --------------------------------------------------------------------------- calls


def test_basic_call(start_node: StartNode, sipp: SippFactory) -> None:
    uas = sipp.uas("uas_answer", calls=3)
    node = start_node(route("1", sipp.uri(uas)))

    uac = sipp.uac(node.sip_address, "uac", calls=3, rate=10, duration_ms=200)

    _ok(uac, 3)
    _ok(uas.wait(15), 3)
    # 100 at once: the caller's first response to each INVITE is 100 Trying.
    first: dict[str, int] = {}
    for message in uac.received:
        if message.call_id and message.status and message.call_id not in first:
            first[message.call_id] = message.status
    assert list(first.values()) == [100, 100, 100], uac.describe()
    assert len(uac.received_responses(180)) >= 3, uac.describe()


def test_callee_hangs_up(start_node: StartNode, sipp: SippFactory) -> None:
    uas = sipp.uas("uas_answer_bye")
    node = start_node(route("1", sipp.uri(uas)))

    uac = sipp.uac(node.sip_address, "uac_wait_bye")

    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)
    assert len(uac.received_requests("BYE")) >= 1
    # The 180 carried SDP (early media); the node relays its body.
    ringing = uac.received_responses(180)
    assert ringing and "m=audio" in ringing[0].text, uac.describe()


def test_cancel_while_ringing(start_node: StartNode, sipp: SippFactory) -> None:
    uas = sipp.uas("uas_ring_noanswer")
    node = start_node(route("1", sipp.uri(uas)))

    uac = sipp.uac(node.sip_address, "uac_cancel")

    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)
    assert callee.received_requests("CANCEL"), callee.describe()
    assert uac.received_responses(487), uac.describe()


def test_503_advances_to_the_next_destination(start_node: StartNode, sipp: SippFactory) -> None:
    first = sipp.uas("uas_503", ip=CALLEE_IP)
    second = sipp.uas("uas_answer", ip=CALLEE2_IP)
    node = start_node(route("1", sipp.uri(first), sipp.uri(second)))

    uac = sipp.uac(node.sip_address, "uac")

    _ok(uac)
    _ok(first.wait(15))
    _ok(second.wait(15))
    assert not uac.received_responses(503), "the 503 must not reach the caller"


def test_503_when_every_destination_fails(start_node: StartNode, sipp: SippFactory) -> None:
    first = sipp.uas("uas_503", ip=CALLEE_IP)
    second = sipp.uas("uas_503", ip=CALLEE2_IP)
    node = start_node(route("1", sipp.uri(first), sipp.uri(second)))

    uac = sipp.uac(node.sip_address, "uac_expect_503")

    _ok(uac)
    _ok(first.wait(15))
    _ok(second.wait(15))


def test_no_answer_timeout_advances(start_node: StartNode, sipp: SippFactory) -> None:
    ringing = sipp.uas("uas_ring_noanswer", ip=CALLEE_IP)
    answering = sipp.uas("uas_answer", ip=CALLEE2_IP)
    node = start_node(route("1", sipp.uri(ringing), sipp.uri(answering)), no_answer_timeout=1)

    uac = sipp.uac(node.sip_address, "uac")

    _ok(uac)
    _ok(ringing.wait(15))  # it got its CANCEL, answered 487 and got the ACK
    _ok(answering.wait(15))


def test_486_is_not_advanced(start_node: StartNode, sipp: SippFactory) -> None:
    busy = sipp.uas("uas_486", ip=CALLEE_IP)
    spare = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    node = start_node(route("1", sipp.uri(busy), sipp.uri(spare)))

    uac = sipp.uac(node.sip_address, "uac_expect_486")

    _ok(uac)
    _ok(busy.wait(15))
    time.sleep(0.5)  # give a wrong advance the time to show
    _nothing_received(spare.stop())


def test_call_cut_at_max_duration(start_node: StartNode, sipp: SippFactory) -> None:
    uas = sipp.uas("uas_answer")
    node = start_node(route("1", sipp.uri(uas)), max_call_duration=2)

    started = time.monotonic()
    uac = sipp.uac(node.sip_address, "uac_wait_bye", recv_timeout_ms=10000)
    took = time.monotonic() - started

    _ok(uac)  # it received a BYE and answered it
    callee = uas.wait(15)
    _ok(callee)  # so did the callee
    assert uac.received_requests("BYE") and callee.received_requests("BYE")
    assert 1.5 <= took <= 6.0, f"call lasted {took:.1f}s, limit 2s"


@pytest.mark.parametrize(("caller", "callee"), [("tcp", "udp"), ("udp", "tcp"), ("tcp", "tcp")])
def test_tcp(
    start_node: StartNode, sipp: SippFactory, caller: Transport, callee: Transport
) -> None:
    uas = sipp.uas("uas_answer", transport=callee, calls=2)
    node = start_node(route("1", sipp.uri(uas)))

    uac = sipp.uac(node.sip_address, "uac", transport=caller, calls=2, rate=10)

    _ok(uac, 2)
    callee_result = uas.wait(15)
    _ok(callee_result, 2)
    assert {m.transport for m in uac.received} == {caller.upper()}
    assert {m.transport for m in callee_result.received} == {callee.upper()}


def test_403_when_the_source_is_not_accepted(start_node: StartNode, sipp: SippFactory) -> None:
    uas = sipp.uas("uas_answer", calls=None)
    node = start_node(route("1", sipp.uri(uas)), accept_any_source=None)  # the default: false

    uac = sipp.uac(node.sip_address, "uac_expect_403")

    _ok(uac)
    _nothing_received(uas.stop())


def test_options_out_of_dialog(start_node: StartNode, sipp: SippFactory) -> None:
    node = start_node()
    _ok(sipp.uac(node.sip_address, "uac_options"))


def test_topology_hiding(start_node: StartNode, sipp: SippFactory) -> None:
    uas = sipp.uas("uas_topology")
    node = start_node(route("1", sipp.uri(uas)))

    uac = sipp.uac(node.sip_address, "uac_topology", duration_ms=300)

    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)
    caller_call_ids = {m.call_id for m in uac.sent if m.call_id}
    callee_call_ids = {m.call_id for m in callee.received if m.call_id}
    assert caller_call_ids and callee_call_ids
    assert not caller_call_ids & callee_call_ids, "the legs must have distinct Call-IDs"

    leaks = topology_leaks(callee.received, [CALLER_IP, *caller_call_ids])
    assert not leaks, "the callee saw the caller's side:\n" + "\n".join(leaks)
    leaks = topology_leaks(uac.received, [CALLEE_IP, *callee_call_ids])
    assert not leaks, "the caller saw the callee's side:\n" + "\n".join(leaks)


def test_caller_record_route_is_echoed(start_node: StartNode, sipp: SippFactory) -> None:
    """The node is the caller's UAS: its 2xx copies the INVITE's Record-Route
    (RFC 3261 12.1.1), or in-dialog requests to the caller skip the caller's
    proxies. (Copying it to the callee's leg would be a leak, tested above.)"""
    uas = sipp.uas("uas_topology")
    node = start_node(route("1", sipp.uri(uas)))

    uac = sipp.uac(node.sip_address, "uac_topology", duration_ms=100)

    _ok(uac)
    _ok(uas.wait(15))
    sent_rr = next(m for m in uac.sent if m.method == "INVITE").headers("record-route")
    answer = uac.received_responses(200)[0]
    assert answer.headers("record-route") == sent_rr, answer.text


# --------------------------------------------------------------------------- malformed


def test_malformed_invite_from_sipp(start_node: StartNode, sipp: SippFactory) -> None:
    uas = sipp.uas("uas_answer", calls=None)
    node = start_node(route("1", sipp.uri(uas)))

    uac = sipp.uac(node.sip_address, "uac_malformed_via")

    _ok(uac)
    reason = uac.received_responses(400)[0].reason
    assert re.search(r"(?i)\bvia\b", reason), f"reason {reason!r} does not name the Via"
    _nothing_received(uas.stop())


@dataclass(frozen=True)
class Vector:
    """A broken INVITE and the word its 400's reason phrase must contain."""

    name: str
    names: str
    """Regex the reason phrase must match (the faulty header's name)."""
    drop: tuple[str, ...] = ()
    """Header names to leave out."""
    replace: tuple[tuple[str, str], ...] = ()
    """(header name, whole new line) to put instead of the good one."""
    body: str = ""


VECTORS = (
    Vector("missing CSeq", r"(?i)cseq", drop=("CSeq",)),
    Vector("CSeq not a number", r"(?i)cseq", replace=(("CSeq", "CSeq: one INVITE"),)),
    Vector(
        "CSeq method is not the request's", r"(?i)cseq|method", replace=(("CSeq", "CSeq: 1 BYE"),)
    ),
    Vector("missing Call-ID", r"(?i)call-?id", drop=("Call-ID",)),
    Vector("missing From", r"(?i)\bfrom\b", drop=("From",)),
    # Case-sensitive: "to" is also an English word ("unable to parse").
    Vector("missing To", r"\bTo\b", drop=("To",)),
    Vector(
        "Via without sent-by",
        r"(?i)\bvia\b",
        replace=(("Via", "Via: SIP/2.0/UDP ;branch=z9hG4bK-raw-{n}"),),
    ),
    Vector(
        "Max-Forwards not a number",
        r"(?i)max-forwards",
        replace=(("Max-Forwards", "Max-Forwards: seventy"),),
    ),
    # RFC 3261 18.3: a datagram shorter than its Content-Length is answered 400.
    Vector(
        "Content-Length beyond the datagram",
        r"(?i)content-length",
        replace=(("Content-Length", "Content-Length: 500"),),
        body="v=0\r\n",
    ),
)


def _broken_invite(vector: Vector, n: int, ip: str, port: int, node: Node) -> bytes:
    lines = {
        "Via": f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK-raw-{n}",
        "From": f"From: <sip:raw@{ip}:{port}>;tag=raw{n}",
        "To": f"To: <sip:{DIALLED}@{node.sip_address}>",
        "Call-ID": f"Call-ID: raw-{n}-{time.time_ns()}@{ip}",
        "CSeq": "CSeq: 1 INVITE",
        "Contact": f"Contact: <sip:raw@{ip}:{port}>",
        "Max-Forwards": "Max-Forwards: 70",
        "Content-Length": f"Content-Length: {len(vector.body.encode())}",
    }
    for name, line in vector.replace:
        lines[name] = line.format(n=n)
    head = [f"INVITE sip:{DIALLED}@{node.sip_address} SIP/2.0"]
    head += [line for name, line in lines.items() if name not in vector.drop]
    return ("\r\n".join(head) + "\r\n\r\n" + vector.body).encode()


def _final_response(sock: socket.socket, timeout: float) -> str | None:
    """The first non-1xx response's status line, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
        status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        if not re.match(r"SIP/2\.0 1\d\d ", status_line):
            return status_line
    return None


def test_malformed_invites_over_udp(start_node: StartNode, sipp: SippFactory) -> None:
    """Each broken INVITE gets 400 with a reason naming the fault: never
    silence, never a 500, never a forwarded call."""
    uas = sipp.uas("uas_answer", calls=None)
    node = start_node(route("1", sipp.uri(uas)))
    problems: list[str] = []
    for n, vector in enumerate(VECTORS):
        # A socket per message: a retransmitted 400 of the one before (no ACK
        # is sent for it) must not be taken for this one's answer.
        port = free_port(CALLER_IP)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((CALLER_IP, port))
            message = _broken_invite(vector, n, CALLER_IP, port, node)
            sock.sendto(message, (node.sip_host, node.sip_port))
            status_line = _final_response(sock, timeout=2.0)
        if status_line is None:
            problems.append(f"{vector.name}: no answer within 2 s")
            continue
        parts = status_line.split(" ", 2)
        reason = parts[2] if len(parts) > 2 else ""
        if parts[1] != "400":
            problems.append(f"{vector.name}: {status_line!r}, expected 400")
        elif not re.search(vector.names, reason):
            problems.append(f"{vector.name}: reason {reason!r} does not match {vector.names}")
    assert not problems, "\n".join(problems)
    with urllib.request.urlopen(node.health_url, timeout=2) as response:
        assert response.status == 200, "the node must survive broken input"
    _nothing_received(uas.stop())
