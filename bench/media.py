#!/usr/bin/env python3
"""Direct against relayed media through one node and its rtpengine, in one run.

1. **signalling**: the same fixed-rate sipp run (``--calls`` at ``--rate``, short calls, no
   RTP) from a customer with direct media and from one with relayed media, to the same sipp
   supplier: calls completed, mean INVITE-to-answer time, and CPU per call of the node and of
   rtpengine (utime+stime from /proc/PID/stat across the run). Direct is the reference.
2. **RTP at scale**, in steps of concurrent calls (``--rtp-steps``, 100, 200, 400, 800), each
   step twice: **rtpengine alone** (the reference: the bench offers and answers each call over
   ng itself) and **node + rtpengine** (sipp places the calls through the node at
   ``--rtp-rate``, to a sipp supplier; both SDPs name the bench's generator). Once every call
   is up at the relay (``list``), ``bench/rtpgen.py`` streams 20 ms G.711 A-law packets both
   ways for every call for ``--rtp-seconds`` (one socket and one process per side) and counts
   them: loss = 1 - packets received by one side / packets sent by the other, per call and in
   all; rtpengine's ``query`` counts what reached it from each side (so a loss is placed
   before or after the relay). One codec both ways: no transcoding, packets compare one to
   one. The CPU of rtpengine (and the node) during the streaming, in cores and per packet.
   The largest step under ``--max-loss`` (1 %) with every call up is what each carries.

Processes are stopped by PID; every step is bounded in calls and in time; traffic stays on
127.0.80.0/24. Run under ``flock /tmp/ss-heavy.lock``.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import save_results, start_run  # noqa: E402
from e2e.node import Node, NodeSpec, cpu_seconds  # noqa: E402
from e2e.sipp import Sipp, SippOptions, free_port  # noqa: E402
from media.rtpengine import NG_PORT, start_rtpengine  # noqa: E402
from rtpgen import Side, run_sides  # noqa: E402
from smartswitch.media import bencode  # noqa: E402

NODE = "127.0.80.1"
RELAY_CALLER = "127.0.80.2"
CARRIER = "127.0.80.3"
DIRECT_CALLER = "127.0.80.6"
RTPENGINE = "127.0.80.10"
RTP_CARRIER = "127.0.80.4"  # the supplier of the RTP calls (its SDP names the generator)
GEN_A, GEN_PORT_A = "127.0.80.7", 16000  # the generator's callers' side
GEN_B, GEN_PORT_B = "127.0.80.8", 16002  # its callees' side
DIALLED = "15551234567"
RTP_DIALLED = "25551234567"  # routed to RTP_CARRIER
PORT_MIN, PORT_MAX = 20000, 29999  # rtpengine's: 4 a call, out of the ephemeral range


def ng(command: str, **params: Any) -> dict[str, Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        cookie = b"b%d" % time.monotonic_ns()
        sock.sendto(
            cookie + b" " + bencode.encode({"command": command, **params}), (RTPENGINE, NG_PORT)
        )
        reply = bencode.decode(sock.recv(65535).partition(b" ")[2])
    assert isinstance(reply, dict)
    return dict(reply)


def document(carrier_port: int, rtp_carrier_port: int) -> dict[str, Any]:
    customer = {"role": "customer", "tariff": "t", "max_calls": 5000}
    supplier = {"role": "supplier", "account": "c", "tariff": "t"}
    rates = [{"prefix": p, "price_per_minute": "0.0100"} for p in ("1", "2")]
    return {
        "accounts": [
            {"name": "a", "currency": "USD", "balance": "100000.00", "credit_limit": "0"},
            {"name": "c", "currency": "USD", "balance": "0"},
        ],
        "tariffs": [{"name": "t", "rates": rates}],
        "peers": [
            {
                **customer,
                "name": "relay",
                "account": "a",
                "acl": [f"{RELAY_CALLER}/32"],
                "media": "relay",
            },
            {**customer, "name": "direct", "account": "a", "acl": [f"{DIRECT_CALLER}/32"]},
            {**supplier, "name": "carrier", "address": f"{CARRIER}:{carrier_port}"},
            {**supplier, "name": "carrier-rtp", "address": f"{RTP_CARRIER}:{rtp_carrier_port}"},
        ],
        "routes": [
            {"prefix": "1", "strategy": "priority", "suppliers": ["carrier"]},
            {"prefix": "2", "strategy": "priority", "suppliers": ["carrier-rtp"]},
        ],
    }


def signalling(
    node: Node, engine_pid: int, workdir: Path, ip: str, calls: int, rate: float
) -> dict[str, Any]:
    node_cpu, engine_cpu = node.cpu_seconds(), cpu_seconds(engine_pid)
    started = time.monotonic()
    options = SippOptions(
        scenario="uac",
        local_ip=ip,
        local_port=free_port(ip),
        remote=node.sip_address,
        service=DIALLED,
        calls=calls,
        rate=rate,
        duration_ms=100,
        timeout_s=calls / rate + 60,
        trace_messages=False,
        extra=("-mi", ip, "-mp", "19000"),
    )
    result = Sipp(f"uac-{ip}", options, workdir / f"uac-{ip}").start().wait()
    elapsed = time.monotonic() - started
    node_used = node.cpu_seconds() - node_cpu
    engine_used = cpu_seconds(engine_pid) - engine_cpu
    return {
        "calls": calls,
        "rate": rate,
        "successful": result.successful,
        "failed": result.failed,
        "retransmissions": result.stat("Retransmissions(C)")
        if "Retransmissions(C)" in result.stats
        else None,
        "response_time_ms": result.stats.get("ResponseTime1(C)", ""),
        "elapsed_s": round(elapsed, 2),
        "calls_per_second": round(result.successful / elapsed, 1),
        "node_cpu_ms_per_call": round(1000 * node_used / max(1, result.successful), 3),
        "rtpengine_cpu_ms_per_call": round(1000 * engine_used / max(1, result.successful), 3),
    }


# --------------------------------------------------------------------------- RTP at scale


def offer_sdp(ip: str, port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    ).encode()


def listed() -> list[str]:
    return [str(c) for c in ng("list", limit=5000).get("calls", [])]


def wait_listed(count: int, timeout: float) -> list[str]:
    """The relay's calls once there are ``count`` of them (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        ids = listed()
        if len(ids) == count or time.monotonic() > deadline:
            return ids
        time.sleep(0.2)


def streams(call_id: str) -> dict[str, tuple[int, int]]:
    """The relay's view of one call by generator side ("a": the callers' socket, "b": the
    callees'): (its local port that side sends to, RTP packets received from that side)."""
    reply = ng("query", **{"call-id": call_id})
    found: dict[str, tuple[int, int]] = {}
    tags = reply.get("tags")
    for tag in tags.values() if isinstance(tags, dict) else ():
        for media in tag.get("medias", []):
            for stream in media.get("streams", []):
                if "RTCP" in stream.get("flags", []) and "RTP" not in stream.get("flags", []):
                    continue
                endpoint = stream.get("advertised endpoint") or stream.get("endpoint") or {}
                address = str(endpoint.get("address", ""))
                side = {GEN_A: "a", GEN_B: "b"}.get(address)
                packets = int(stream.get("stats", {}).get("packets", 0))
                if side is not None:
                    found[side] = (int(stream["local port"]), packets)
    return found


def stream_calls(
    ids: list[str], seconds: float, engine_pid: int, node: Node | None
) -> dict[str, Any]:
    """G.711 both ways for every call of ``ids`` for ``seconds``; the loss from the
    generator's counts (sent by one side, received by the other) and rtpengine's (received
    from each side), and the CPU it took."""
    ports = [streams(call_id) for call_id in ids]
    ports = [p for p in ports if "a" in p and "b" in p]
    if ids and not ports:
        # Nothing recognised in rtpengine's answer: show it rather than measure nothing.
        raise SystemExit(
            f"no streams found in the query of {ids[0]}: {ng('query', **{'call-id': ids[0]})}"
        )
    sides = (
        Side(GEN_A, GEN_PORT_A, RTPENGINE, tuple(p["a"][0] for p in ports), 0x1000000),
        Side(GEN_B, GEN_PORT_B, RTPENGINE, tuple(p["b"][0] for p in ports), 0x2000000),
    )
    engine_cpu = cpu_seconds(engine_pid)
    node_cpu = node.cpu_seconds() if node is not None else 0.0
    started = time.monotonic()
    a, b = run_sides(sides, seconds)
    elapsed = time.monotonic() - started
    engine_used = cpu_seconds(engine_pid) - engine_cpu
    node_used = node.cpu_seconds() - node_cpu if node is not None else None
    # What the relay received of each side, per call, read once the streams stopped.
    relay_in = [0, 0]
    for call_id in ids:
        view = streams(call_id)
        relay_in[0] += view.get("a", (0, 0))[1]
        relay_in[1] += view.get("b", (0, 0))[1]
    sent = (sum(a.sent), sum(b.sent))
    # A call's media reaches a side from the relay's port that side sends that call's to.
    received = (
        sum(b.received.get(p["b"][0], 0) for p in ports),  # callers -> callees
        sum(a.received.get(p["a"][0], 0) for p in ports),  # callees -> callers
    )
    lossy = sum(
        1
        for i, p in enumerate(ports)
        if b.received.get(p["b"][0], 0) < a.sent[i] or a.received.get(p["a"][0], 0) < b.sent[i]
    )
    total_sent = sum(sent)
    relayed = sum(received)
    return {
        "calls": len(ports),
        "seconds": seconds,
        "packets_sent": list(sent),
        "packets_at_relay": relay_in,
        "packets_received": list(received),
        "loss_percent": round(100 * (1 - relayed / total_sent), 4) if total_sent else None,
        "loss_before_relay_percent": round(100 * (1 - sum(relay_in) / total_sent), 4)
        if total_sent
        else None,
        "calls_with_loss": lossy,
        "generator_late_ms": max(a.late_ms, b.late_ms),
        # Dropped by the kernel at the generator's own sockets: lost, but not by the relay.
        "generator_drops": a.drops + b.drops,
        "rtpengine_cores": round(engine_used / elapsed, 3),
        # Per packet rtpengine took in (and forwarded, or not).
        "rtpengine_us_per_packet": round(1e6 * engine_used / max(1, sum(relay_in)), 2),
        "node_cores": round(node_used / elapsed, 3) if node_used is not None else None,
    }


def through_node(
    node: Node, engine_pid: int, workdir: Path, calls: int, rate: float, seconds: float
) -> dict[str, Any]:
    """``calls`` relayed calls placed by sipp through the node to the RTP supplier, held
    while the generator streams, then hung up by sipp."""
    hold = calls / rate + seconds + 20
    options = SippOptions(
        scenario="uac_sdp_at",
        local_ip=RELAY_CALLER,
        local_port=free_port(RELAY_CALLER),
        remote=node.sip_address,
        service=RTP_DIALLED,
        calls=calls,
        rate=rate,
        duration_ms=int(hold * 1000),
        timeout_s=hold + calls / rate + 60,
        recv_timeout_ms=None,
        trace_messages=False,
        keys={"rtp_ip": GEN_A, "rtp_port": str(GEN_PORT_A)},
        extra=("-mi", RELAY_CALLER, "-mp", "22000", "-l", str(calls + 10)),
    )
    caller = Sipp(f"uac-rtp-{calls}", options, workdir / f"uac-rtp-{calls}").start()
    ids = wait_listed(calls, calls / rate + 30)
    measured = stream_calls(ids, seconds, engine_pid, node)
    result = caller.wait()
    measured.update(placed=calls, answered=result.successful, failed=result.failed)
    measured["left_at_relay"] = len(wait_listed(0, 30))
    return measured


def engine_alone(engine_pid: int, calls: int, seconds: float) -> dict[str, Any]:
    """The same streams with no node: the bench offers and answers each call over ng."""
    ids = []
    for i in range(calls):
        call_id = f"alone-{calls}-{i}"
        ng("offer", **{"call-id": call_id, "from-tag": "a", "sdp": offer_sdp(GEN_A, GEN_PORT_A)})
        ng(
            "answer",
            **{
                "call-id": call_id,
                "from-tag": "a",
                "to-tag": "b",
                "sdp": offer_sdp(GEN_B, GEN_PORT_B),
            },
        )
        ids.append(call_id)
    measured = stream_calls(ids, seconds, engine_pid, None)
    for call_id in ids:
        ng("delete", **{"call-id": call_id, "delete-delay": 0})
    measured.update(placed=calls, answered=calls, failed=0)
    measured["left_at_relay"] = len(wait_listed(0, 30))
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument(
        "--rtp-steps", default="100,200,400,800", help="concurrent calls with RTP, per step"
    )
    parser.add_argument("--rtp-rate", type=float, default=100, help="calls/s placing them")
    parser.add_argument("--rtp-seconds", type=float, default=10, help="streaming per step")
    parser.add_argument("--max-loss", type=float, default=1.0, help="percent: carried below it")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    steps = [int(n) for n in args.rtp_steps.split(",")]
    if max(steps) * 4 > PORT_MAX - PORT_MIN:
        parser.error(
            f"rtpengine's ports ({PORT_MIN}-{PORT_MAX}) hold {(PORT_MAX - PORT_MIN) // 4} calls"
        )
    workdir, results = start_run(args.out, "media")
    engine = start_rtpengine(RTPENGINE, workdir / "rtpengine", port_min=PORT_MIN, port_max=PORT_MAX)
    carrier_port = free_port(CARRIER)
    rtp_carrier_port = free_port(RTP_CARRIER)
    spec = NodeSpec(workdir=workdir / "node", sip_host=NODE)
    spec.config = {
        "log_level": "warning",
        "media_relay": [{"name": "r", "address": f"{RTPENGINE}:{NG_PORT}"}],
    }
    node = Node(spec)
    carriers: list[Sipp] = []
    try:
        node.provision(document(carrier_port, rtp_carrier_port))
        node.start()
        carriers.append(
            Sipp(
                "carrier",
                SippOptions(
                    scenario="uas",
                    local_ip=CARRIER,
                    local_port=carrier_port,
                    timeout_s=3600,
                    recv_timeout_ms=None,
                    trace_messages=False,
                    extra=("-mi", CARRIER, "-mp", "21000", "-rtp_echo"),
                ),
                workdir / "carrier",
            ).start()
        )
        carriers.append(
            Sipp(
                "carrier-rtp",
                SippOptions(
                    scenario="uas_sdp_at",
                    local_ip=RTP_CARRIER,
                    local_port=rtp_carrier_port,
                    timeout_s=3600,
                    recv_timeout_ms=None,
                    trace_messages=False,
                    keys={"rtp_ip": GEN_B, "rtp_port": str(GEN_PORT_B)},
                    extra=("-mi", RTP_CARRIER, "-mp", "21000"),
                ),
                workdir / "carrier-rtp",
            ).start()
        )
        for carrier in carriers:
            carrier.wait_until_listening()
        pid = engine.process.pid
        results["direct"] = signalling(node, pid, workdir, DIRECT_CALLER, args.calls, args.rate)
        results["relay"] = signalling(node, pid, workdir, RELAY_CALLER, args.calls, args.rate)
        results["rtp"] = []
        for calls in steps:
            # The reference first, then the node, at each step: the machine's other load
            # drifts less between the two than across the whole run.
            alone = engine_alone(pid, calls, args.rtp_seconds)
            alone["mode"] = "rtpengine alone"
            results["rtp"].append(alone)
            print_step(alone)
            relayed = through_node(node, pid, workdir, calls, args.rtp_rate, args.rtp_seconds)
            relayed["mode"] = "node + rtpengine"
            results["rtp"].append(relayed)
            print_step(relayed)
    finally:
        for carrier in carriers:
            if carrier.running:
                carrier.stop()
        if node.running:
            node.stop()
        engine.stop()
    for name in ("direct", "relay"):
        r = results[name]
        print(
            f"{name:6} {r['successful']}/{r['calls']} at {r['rate']:g}/s ({r['calls_per_second']} calls/s),"
            f" response {r['response_time_ms']} ms, node {r['node_cpu_ms_per_call']} ms/call,"
            f" rtpengine {r['rtpengine_cpu_ms_per_call']} ms/call"
        )
    for mode in ("rtpengine alone", "node + rtpengine"):
        carried = [
            r["calls"]
            for r in results["rtp"]
            if r["mode"] == mode
            and r["loss_percent"] is not None
            and r["loss_percent"] < args.max_loss
            and r["calls"] == r["placed"]
        ]
        results[f"carried {mode}"] = max(carried, default=0)
        print(
            f"{mode}: {max(carried, default=0)} concurrent calls carried under {args.max_loss} % loss"
        )
    save_results(workdir, results)
    return 0


def print_step(r: dict[str, Any]) -> None:
    print(
        f"{r['mode']:17} {r['calls']:4}/{r['placed']} calls: loss {r['loss_percent']} %"
        f" (before the relay {r['loss_before_relay_percent']} %, {r['calls_with_loss']} calls),"
        f" rtpengine {r['rtpengine_cores']} cores, {r['rtpengine_us_per_packet']} us/packet,"
        f" node {r['node_cores']} cores, generator late {r['generator_late_ms']} ms,"
        f" dropped at the generator {r['generator_drops']},"
        f" left {r['left_at_relay']}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
