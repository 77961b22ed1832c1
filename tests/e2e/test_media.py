"""Relayed media end to end: real sipp with RTP -> a billing node -> a real rtpengine -> sipp.

One rtpengine and one node for the module (heavy: run under ``flock /tmp/ss-heavy.lock``).
Addresses of their own in 127.0.78.0/24: the node .1, the relaying customer's phone .2, the
suppliers carrier-a .3 and carrier-b .4, the direct customer's phone .6, rtpengine .10. The
suppliers listen on ports chosen when the module starts (the provisioning names them).

- relay-trunk (from .2) has ``media: relay``; direct-trunk (from .6) the default, direct.
- carrier-b allows only PCMA: a caller offering G.729, PCMU, PCMA gets PCMA to it.
- The route tries carrier-a, then carrier-b (priority).

What is checked is what the parties and rtpengine see: the SDP each sipp received (the relay's
address or the other party's), rtpengine's ``list`` and ``query`` over its ng port, the CDRs.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from media.rtpengine import NG_PORT, Rtpengine, rtp, start_rtpengine
from smartswitch.media import bencode
from smartswitch.media.ng import parse_stats
from smartswitch.sip.sdp import SdpError, SessionDescription

from .conftest import SippFactory
from .node import Node, NodeSpec
from .sipp import Sipp, SippOptions, SippResult, free_port

pytestmark = pytest.mark.e2e

NODE = "127.0.78.1"
RELAY_CALLER = "127.0.78.2"
CARRIER_A = "127.0.78.3"
CARRIER_B = "127.0.78.4"
DIRECT_CALLER = "127.0.78.6"
RTPENGINE = "127.0.78.10"
DIALLED = "15551234567"
SDP_VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sdp" / "bad"
SIPP_PCAPS = Path("/usr/share/sip-tester")


# --------------------------------------------------------------------------- rtpengine


def ng(command: str, **params: Any) -> dict[str, Any]:
    """One ng request over a plain socket (the test must not depend on the client it tests)."""
    cookie = b"t%d" % time.monotonic_ns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        message = {"command": command, **params}
        sock.sendto(cookie + b" " + bencode.encode(message), (RTPENGINE, NG_PORT))
        data = sock.recv(65535)
    reply = bencode.decode(data.partition(b" ")[2])
    assert isinstance(reply, dict)
    return {str(k): v for k, v in reply.items()}


def sessions() -> list[str]:
    calls = ng("list", limit=100).get("calls", [])
    assert isinstance(calls, list)
    return [str(c) for c in calls]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def new_session(before: set[str]) -> str:
    """The one relayed session not in ``before``, once rtpengine has it (from the offer)."""
    wait_for("the relayed session", lambda: bool(set(sessions()) - before), timeout=10)
    (session,) = set(sessions()) - before
    return session


def packets_by_tag(call_id: str) -> dict[str, int]:
    """RTP packets rtpengine received from each side of a relayed session."""
    stats = parse_stats(ng("query", **{"call-id": call_id}))
    return {tag.tag: tag.rtp.packets for tag in stats.tags}


# --------------------------------------------------------------------------- the module's set-up


def document(port_a: int, port_b: int) -> dict[str, Any]:
    return {
        "accounts": [
            {"name": "relayco", "currency": "USD", "balance": "100.00", "credit_limit": "0"},
            {"name": "directco", "currency": "USD", "balance": "100.00", "credit_limit": "0"},
            {"name": "carrier-a", "currency": "USD", "balance": "0"},
            {"name": "carrier-b", "currency": "USD", "balance": "0"},
        ],
        "tariffs": [
            {"name": "retail", "rates": [{"prefix": "1", "price_per_minute": "0.0100"}]},
            {"name": "buy", "rates": [{"prefix": "1", "price_per_minute": "0.0040"}]},
        ],
        "peers": [
            {
                "name": "relay-trunk",
                "role": "customer",
                "account": "relayco",
                "tariff": "retail",
                "acl": [f"{RELAY_CALLER}/32"],
                "media": "relay",
            },
            {
                "name": "direct-trunk",
                "role": "customer",
                "account": "directco",
                "tariff": "retail",
                "acl": [f"{DIRECT_CALLER}/32"],
            },
            {
                "name": "carrier-a",
                "role": "supplier",
                "account": "carrier-a",
                "tariff": "buy",
                "address": f"{CARRIER_A}:{port_a}",
            },
            {
                "name": "carrier-b",
                "role": "supplier",
                "account": "carrier-b",
                "tariff": "buy",
                "address": f"{CARRIER_B}:{port_b}",
                "codecs": ["PCMA"],
            },
        ],
        "routes": [{"prefix": "", "strategy": "priority", "suppliers": ["carrier-a", "carrier-b"]}],
    }


class Lab:
    def __init__(self, node: Node, engine: Rtpengine, port_a: int, port_b: int) -> None:
        self.node = node
        self.engine = engine
        self.ports = {CARRIER_A: port_a, CARRIER_B: port_b}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("media")
    engine = start_rtpengine(RTPENGINE, workdir / "rtpengine")
    port_a, port_b = free_port(CARRIER_A), free_port(CARRIER_B)
    spec = NodeSpec(workdir=workdir / "node", sip_host=NODE)
    spec.config = {
        "log_level": "info",
        "media_relay": [{"name": "rtp1", "address": f"{RTPENGINE}:{NG_PORT}"}],
        "media_ping_interval": 0.5,
        "media_timeout": 0.2,
        "media_tries": 2,
        "no_answer_timeout": 10,
    }
    node = Node(spec)
    try:
        node.provision(document(port_a, port_b))
        node.start()
        yield Lab(node, engine, port_a, port_b)
        node.stop_cleanly()
    finally:
        if node.running:
            node.kill()
        engine.stop()


def carrier(
    sipp: SippFactory, lab: Lab, ip: str, scenario: str = "uas", rtp_port: int = 16000
) -> Sipp:
    """A supplier at its provisioned address, echoing RTP (``-rtp_echo``)."""
    options = SippOptions(
        scenario=scenario,
        local_ip=ip,
        local_port=lab.ports[ip],
        calls=1,
        timeout_s=40,
        recv_timeout_ms=15000,
        extra=("-mi", ip, "-mp", str(rtp_port), "-rtp_echo"),
    )
    proc = sipp._new(f"carrier-{ip}", "uas", options).start()
    proc.wait_until_listening()
    return proc


def caller(
    sipp: SippFactory,
    lab: Lab,
    scenario: str | Path = "uac",
    *,
    ip: str = RELAY_CALLER,
    duration_ms: int = 500,
    rtp_port: int = 18000,
) -> Sipp:
    options = SippOptions(
        scenario=scenario,
        local_ip=ip,
        local_port=free_port(ip),
        remote=lab.node.sip_address,
        service=DIALLED,
        calls=1,
        rate=1,
        duration_ms=duration_ms,
        timeout_s=40,
        recv_timeout_ms=15000,
        extra=("-mi", ip, "-mp", str(rtp_port)),
    )
    proc = sipp._new(None, "uac", options)
    if scenario == "uac_pcap":
        (proc.workdir / "pcap").mkdir(exist_ok=True)
        for pcap in SIPP_PCAPS.glob("*.pcap"):
            shutil.copy(pcap, proc.workdir / "pcap" / pcap.name)
    return proc.start()


def sdp_of(text: str) -> SessionDescription:
    body = text.split("\n\n", 1)[1]
    return SessionDescription.parse(body.replace("\n", "\r\n"))


def media_hosts(result: SippResult, what: str) -> set[str]:
    """The media addresses in the SDP of the INVITEs (``"INVITE"``) or 200s (``"200"``)
    a sipp received."""
    messages = result.received_responses(200) if what == "200" else result.received_requests(what)
    hosts: set[str] = set()
    for message in messages:
        if "\n\n" in message.text and message.text.split("\n\n", 1)[1].strip():
            hosts |= {e.address or "" for e in sdp_of(message.text).endpoints()}
    return hosts


def metrics(node: Node) -> list[str]:
    url = f"http://{node.http_host}:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=2.0) as response:
        text: str = response.read().decode()
    return text.splitlines()


def no_session_left(before: set[str]) -> None:
    wait_for("rtpengine's sessions of the test to go", lambda: set(sessions()) <= before)


# --------------------------------------------------------------------------- tests


def test_relayed_call_rtp_flows_both_ways_and_nothing_is_left(lab: Lab, sipp: SippFactory) -> None:
    before = set(sessions())
    callee = carrier(sipp, lab, CARRIER_A)
    call = caller(sipp, lab, "uac_pcap", duration_ms=0)
    session = new_session(before)
    time.sleep(1.0)
    first = packets_by_tag(session)
    time.sleep(1.5)
    second = packets_by_tag(session)
    assert len(second) == 2, second
    for tag, count in second.items():
        assert count > first.get(tag, 0) > 0, (first, second)  # RTP from both sides, growing
    result = call.wait()
    assert result.successful == 1, result.describe()
    callee_result = callee.wait()
    # Both parties were given rtpengine's address, never each other's.
    assert media_hosts(callee_result, "INVITE") == {RTPENGINE}
    assert media_hosts(result, "200") == {RTPENGINE}
    no_session_left(before)
    cdr = lab.node.wait_cdrs(1)[-1]
    assert cdr["customer_peer"] == "relay-trunk" and cdr["hangup_reason"] == "bye"


def test_direct_call_keeps_the_sdp_untouched(lab: Lab, sipp: SippFactory) -> None:
    before = set(sessions())
    callee = carrier(sipp, lab, CARRIER_A)
    result = caller(sipp, lab, ip=DIRECT_CALLER).wait()
    assert result.successful == 1, result.describe()
    assert media_hosts(callee.wait(), "INVITE") == {DIRECT_CALLER}
    assert media_hosts(result, "200") == {CARRIER_A}
    assert set(sessions()) <= before


def test_a_peer_allowed_only_pcma_never_sees_other_codecs(lab: Lab, sipp: SippFactory) -> None:
    before = set(sessions())
    first = carrier(sipp, lab, CARRIER_A, scenario="uas_503")
    second = carrier(sipp, lab, CARRIER_B, rtp_port=16100)
    result = caller(sipp, lab, "uac_codecs").wait()
    assert result.successful == 1, result.describe()
    first.wait()
    (invite,) = second.wait().received_requests("INVITE")
    codecs = {(c.name or "?").upper() for m in sdp_of(invite.text).media for c in m.codecs()}
    assert codecs == {"PCMA"}, invite.text
    # carrier-a (no codec rule) saw the caller's four codecs.
    (offered,) = first.wait().received_requests("INVITE")
    assert {(c.name or "?").upper() for m in sdp_of(offered.text).media for c in m.codecs()} >= {
        "G729",
        "PCMU",
        "PCMA",
    }
    no_session_left(before)


def test_route_advance_reoffers_and_leaves_no_session(lab: Lab, sipp: SippFactory) -> None:
    """carrier-a answers 503: the call moves to carrier-b with a new relayed session (its own
    rtpengine address in the SDP); the first session is gone, and the second after the BYE."""
    before = set(sessions())
    first = carrier(sipp, lab, CARRIER_A, scenario="uas_503")
    second = carrier(sipp, lab, CARRIER_B, rtp_port=16100)
    result = caller(sipp, lab, "uac_codecs").wait()
    assert result.successful == 1, result.describe()
    assert media_hosts(first.wait(), "INVITE") == {RTPENGINE}
    assert media_hosts(second.wait(), "INVITE") == {RTPENGINE}
    no_session_left(before)
    attempts = lab.node.cdr_attempts()
    assert attempts, "no attempts recorded"


def test_503_everywhere_leaves_no_session(lab: Lab, sipp: SippFactory) -> None:
    before = set(sessions())
    first = carrier(sipp, lab, CARRIER_A, scenario="uas_503")
    second = carrier(sipp, lab, CARRIER_B, scenario="uas_503", rtp_port=16100)
    result = caller(sipp, lab, "uac_expect_503").wait()
    assert result.successful == 1, result.describe()
    first.wait()
    second.wait()
    no_session_left(before)


def test_cancel_leaves_no_session(lab: Lab, sipp: SippFactory) -> None:
    before = set(sessions())
    callee = carrier(sipp, lab, CARRIER_A, scenario="uas_ring_noanswer")
    result = caller(sipp, lab, "uac_cancel").wait()
    assert result.successful == 1, result.describe()
    callee.wait()
    no_session_left(before)


def caller_streams(call_id: str) -> dict[str, tuple[str, int]]:
    """Each side's endpoint at rtpengine, by the address rtpengine sends it media to:
    address -> (that address, rtpengine's local port the side sends to)."""
    found: dict[str, tuple[str, int]] = {}
    tags = ng("query", **{"call-id": call_id}).get("tags", {})
    for tag in tags.values():
        for media in tag.get("medias", []):
            for stream in media.get("streams", []):
                address = str(stream.get("endpoint", {}).get("address", ""))
                if address and "RTCP" not in stream.get("flags", []):
                    found[address] = (address, int(stream["local port"]))
    return found


def test_a_caller_behind_nat_gets_its_media_at_its_sip_source(lab: Lab, sipp: SippFactory) -> None:
    before = set(sessions())
    callee = carrier(sipp, lab, CARRIER_A)
    options = SippOptions(
        scenario="uac_sdp_at",
        local_ip=RELAY_CALLER,
        local_port=free_port(RELAY_CALLER),
        remote=lab.node.sip_address,
        service=DIALLED,
        calls=1,
        rate=1,
        duration_ms=3000,
        timeout_s=40,
        recv_timeout_ms=15000,
        # The phone writes its private address; its SIP and RTP come from RELAY_CALLER.
        keys={"rtp_ip": "192.168.1.23", "rtp_port": "18400"},
        extra=("-mi", RELAY_CALLER, "-mp", "18000"),
    )
    call = sipp._new(None, "uac", options).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind((RELAY_CALLER, 18400))
        phone.settimeout(0.2)
        session = new_session(before)
        wait_for("both sides at the relay", lambda: len(caller_streams(session)) == 2)
        # Before any packet (nothing learnt yet): the caller's media goes to its SIP source.
        sides = caller_streams(session)
        assert RELAY_CALLER in sides and "192.168.1.23" not in sides, sides
        _, relay_port = sides[RELAY_CALLER]
        # And it arrives there: the callee's sipp echoes what the phone sends.
        echoed = 0
        for n in range(50):
            phone.sendto(rtp(8, n, n * 160, 0x4242, bytes(160)), (RTPENGINE, relay_port))
            try:
                phone.recv(2048)
                echoed += 1
            except TimeoutError:
                pass
            if echoed >= 5:
                break
        assert echoed >= 5
    result = call.wait()
    assert result.successful == 1, result.describe()
    callee.wait()
    no_session_left(before)


def _invite(body: bytes, call_id: str, port: int) -> bytes:
    head = (
        f"INVITE sip:{DIALLED}@{NODE} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {RELAY_CALLER}:{port};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:caller@{RELAY_CALLER}>;tag=t{call_id}\r\n"
        f"To: <sip:{DIALLED}@{NODE}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{RELAY_CALLER}:{port}>\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _ack(call_id: str, port: int, reply: str) -> bytes:
    """The ACK of a final non-2xx answer (RFC 3261 17.1.1.3): ends its retransmissions."""
    to = next(line for line in reply.split("\r\n") if line.startswith("To:"))
    return (
        f"ACK sip:{DIALLED}@{NODE} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {RELAY_CALLER}:{port};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:caller@{RELAY_CALLER}>;tag=t{call_id}\r\n"
        f"{to}\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 ACK\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_malformed_sdp_gets_its_4xx_with_a_reason_and_the_node_lives(lab: Lab) -> None:
    host, _, port_text = lab.node.sip_address.rpartition(":")
    vectors = sorted(SDP_VECTORS.iterdir())
    assert vectors
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((RELAY_CALLER, 0))
        sock.settimeout(3.0)
        port = sock.getsockname()[1]
        for index, vector in enumerate(vectors):
            body = vector.read_bytes()
            if not body:
                continue  # no SDP at all: a delayed offer, a valid INVITE
            try:
                SessionDescription.parse(body)
            except SdpError as exc:
                expected = exc.status
            else:  # pragma: no cover - every bad vector is refused (tests/sip/test_sdp.py)
                pytest.fail(f"{vector.name} parses")
            call_id = f"badsdp{index}x{time.monotonic_ns()}"
            sock.sendto(_invite(body, call_id, port), (host, int(port_text)))
            while True:  # skip provisional answers and earlier calls' retransmissions
                reply = sock.recv(65535).decode("utf-8", "replace")
                status = int(reply.split(" ", 2)[1])
                if status >= 200 and f"Call-ID: {call_id}" in reply:
                    break
            sock.sendto(_ack(call_id, port, reply), (host, int(port_text)))
            assert status == expected, (vector.name, reply)
            assert re.search(rf"^Reason: SIP;cause={expected};text=\"", reply, re.M), reply
    assert lab.node.running
    lab.node.health()  # still answering
    assert "smartswitch_media_up 1" in metrics(lab.node)


def test_node_shutdown_deletes_its_relayed_sessions(
    lab: Lab, sipp: SippFactory, tmp_path: Path
) -> None:
    """A second node on the same rtpengine, stopped (SIGTERM) during a relayed call: it ends
    the call and deletes the session before it exits."""
    before = set(sessions())
    spec = NodeSpec(workdir=tmp_path / "node2", sip_host=NODE)
    spec.config = {
        "log_level": "info",
        "media_relay": [{"name": "rtp1", "address": f"{RTPENGINE}:{NG_PORT}"}],
    }
    other = Node(spec)
    try:
        other.provision(document(lab.ports[CARRIER_A], lab.ports[CARRIER_B]))
        other.start()
        callee = carrier(sipp, lab, CARRIER_A)
        options = SippOptions(
            scenario="uac_wait_bye",
            local_ip=RELAY_CALLER,
            local_port=free_port(RELAY_CALLER),
            remote=other.sip_address,
            service=DIALLED,
            calls=1,
            timeout_s=40,
            recv_timeout_ms=15000,
            extra=("-mi", RELAY_CALLER, "-mp", "18000"),
        )
        call = sipp._new("uac-shutdown", "uac", options).start()
        session = new_session(before)
        # The session exists from the offer, while the call still rings: stopped then, the
        # node answers the caller 503 instead of ending an answered call with a BYE.
        wait_for("the call answered at the relay", lambda: len(caller_streams(session)) == 2)
        other.stop_cleanly()
        assert set(sessions()) <= before  # deleted before the node exited
        assert call.wait().successful == 1  # the caller got the node's BYE
        callee.wait()
    finally:
        if other.running:
            other.kill()


def test_rtpengine_stopped_relay_call_503_direct_call_completes(
    lab: Lab, sipp: SippFactory
) -> None:
    """Last in the module: it stops the module's rtpengine."""
    lab.engine.stop()
    wait_for(
        "/metrics to say media is down",
        lambda: "smartswitch_media_up 0" in metrics(lab.node),
    )
    result = caller(sipp, lab, "uac_expect_503").wait()
    assert result.successful == 1, result.describe()
    (refusal,) = result.received_responses(503)
    assert "Reason: SIP;cause=503" in refusal.text and "media relay" in refusal.text
    callee = carrier(sipp, lab, CARRIER_A)
    direct = caller(sipp, lab, ip=DIRECT_CALLER).wait()
    assert direct.successful == 1, direct.describe()
    assert media_hosts(callee.wait(), "INVITE") == {DIRECT_CALLER}
    assert lab.node.running
