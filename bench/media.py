#!/usr/bin/env python3
"""Direct against relayed media through one node and its rtpengine, in one run.

1. **signalling**: the same fixed-rate sipp run (``--calls`` at ``--rate``, short calls, no
   RTP) from a customer with direct media and from one with relayed media, to the same sipp
   supplier: calls completed, mean INVITE-to-answer time, and CPU per call of the node and of
   rtpengine (utime+stime from /proc/PID/stat across the run). Direct is the reference.
2. **RTP**: ``--rtp-calls`` relayed calls at ``--rtp-rate`` calls/s, each playing sipp's
   ``g711a.pcap`` (20 ms G.711 A-law packets, about 8 s) to a supplier echoing it
   (``-rtp_echo``). In the steady state the script reads rtpengine's counters of every call
   (``query``): seconds of audio received from the callers and echoed back by the callees
   (bytes, not packets: rtpengine transcodes PCMA to the callee's PCMU in 30 ms packets); the
   loss is 1 - echoed / sent (what was lost both ways plus the echo's in-flight audio), with
   the number of calls up at that moment.

Not measured here (bench/README.md says so): rtpengine alone with the same streams.

Processes are stopped by PID; every step is bounded in calls and in time; traffic stays on
127.0.80.0/24. Run under ``flock /tmp/ss-heavy.lock``.
"""

from __future__ import annotations

import argparse
import shutil
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
from smartswitch.media import bencode  # noqa: E402
from smartswitch.media.ng import parse_stats  # noqa: E402

NODE = "127.0.80.1"
RELAY_CALLER = "127.0.80.2"
CARRIER = "127.0.80.3"
DIRECT_CALLER = "127.0.80.6"
RTPENGINE = "127.0.80.10"
DIALLED = "15551234567"


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


def document(carrier_port: int) -> dict[str, Any]:
    customer = {"role": "customer", "tariff": "t", "max_calls": 5000}
    return {
        "accounts": [
            {"name": "a", "currency": "USD", "balance": "100000.00", "credit_limit": "0"},
            {"name": "c", "currency": "USD", "balance": "0"},
        ],
        "tariffs": [{"name": "t", "rates": [{"prefix": "1", "price_per_minute": "0.0100"}]}],
        "peers": [
            {
                **customer,
                "name": "relay",
                "account": "a",
                "acl": [f"{RELAY_CALLER}/32"],
                "media": "relay",
            },
            {**customer, "name": "direct", "account": "a", "acl": [f"{DIRECT_CALLER}/32"]},
            {
                "name": "carrier",
                "role": "supplier",
                "account": "c",
                "tariff": "t",
                "address": f"{CARRIER}:{carrier_port}",
            },
        ],
        "routes": [{"prefix": "", "strategy": "priority", "suppliers": ["carrier"]}],
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
        "node_cpu_ms_per_call": round(1000 * node_used / max(1, result.successful), 3),
        "rtpengine_cpu_ms_per_call": round(1000 * engine_used / max(1, result.successful), 3),
    }


def rtp_load(node: Node, engine_pid: int, workdir: Path, calls: int, rate: float) -> dict[str, Any]:
    uac_dir = workdir / "uac-rtp"
    (uac_dir / "pcap").mkdir(parents=True, exist_ok=True)
    for pcap in Path("/usr/share/sip-tester").glob("*.pcap"):
        shutil.copy(pcap, uac_dir / "pcap" / pcap.name)
    options = SippOptions(
        scenario="uac_pcap",
        local_ip=RELAY_CALLER,
        local_port=free_port(RELAY_CALLER),
        remote=node.sip_address,
        service=DIALLED,
        calls=calls,
        rate=rate,
        timeout_s=calls / rate + 60,
        trace_messages=False,
        extra=("-mi", RELAY_CALLER, "-mp", "20000"),
    )
    engine_cpu = cpu_seconds(engine_pid)
    node_cpu = node.cpu_seconds()
    caller = Sipp("uac-rtp", options, uac_dir).start()
    # Steady state: every call placed has been up a while, the first ones not yet ended
    # (each lasts about 9 s).
    time.sleep(min(calls / rate, 8.5) * 0.9)
    ids = [str(c) for c in ng("list", limit=1000).get("calls", [])]
    sent = echoed = 0.0
    packets = [0, 0]
    up = 0
    for call_id in ids:
        try:
            stats = parse_stats(ng("query", **{"call-id": call_id}))
        except (OSError, ValueError):
            continue
        # Seconds of G.711 audio received from each side (8000 bytes a second, less the 12
        # bytes of RTP header of each packet): rtpengine transcodes to the callee's PCMU and
        # repacketises (30 ms packets out of 20 ms ones), so packets do not compare, audio does.
        sides = sorted(
            ((t.rtp.bytes - 12 * t.rtp.packets) / 8000, t.rtp.packets) for t in stats.tags
        )
        if len(sides) == 2 and sides[1][0] > 0:
            up += 1
            sent += sides[1][0]
            echoed += sides[0][0]
            packets[0] += sides[1][1]
            packets[1] += sides[0][1]
    result = caller.wait()
    return {
        "calls": calls,
        "rate": rate,
        "successful": result.successful,
        "failed": result.failed,
        "calls_up_when_measured": up,
        "audio_s_from_callers": round(sent, 2),
        "audio_s_echoed": round(echoed, 2),
        "packets_from_callers": packets[0],
        "packets_echoed": packets[1],
        "loss_percent": round(100 * (1 - echoed / sent), 3) if sent else None,
        "rtpengine_cpu_s": round(cpu_seconds(engine_pid) - engine_cpu, 2),
        "node_cpu_s": round(node.cpu_seconds() - node_cpu, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--rtp-calls", type=int, default=100)
    parser.add_argument("--rtp-rate", type=float, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    workdir, results = start_run(args.out, "media")
    engine = start_rtpengine(RTPENGINE, workdir / "rtpengine")
    carrier_port = free_port(CARRIER)
    spec = NodeSpec(workdir=workdir / "node", sip_host=NODE)
    spec.config = {
        "log_level": "warning",
        "media_relay": [{"name": "r", "address": f"{RTPENGINE}:{NG_PORT}"}],
    }
    node = Node(spec)
    carrier: Sipp | None = None
    try:
        node.provision(document(carrier_port))
        node.start()
        carrier = Sipp(
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
        carrier.wait_until_listening()
        pid = engine.process.pid
        results["direct"] = signalling(node, pid, workdir, DIRECT_CALLER, args.calls, args.rate)
        results["relay"] = signalling(node, pid, workdir, RELAY_CALLER, args.calls, args.rate)
        results["rtp"] = rtp_load(node, pid, workdir, args.rtp_calls, args.rtp_rate)
    finally:
        if carrier is not None and carrier.running:
            carrier.stop()
        if node.running:
            node.stop()
        engine.stop()
    for name in ("direct", "relay"):
        r = results[name]
        print(
            f"{name:6} {r['successful']}/{r['calls']} at {r['rate']:g}/s, response {r['response_time_ms']} ms,"
            f" node {r['node_cpu_ms_per_call']} ms/call, rtpengine {r['rtpengine_cpu_ms_per_call']} ms/call"
        )
    rtp = results["rtp"]
    print(
        f"rtp    {rtp['calls_up_when_measured']} calls up, loss {rtp['loss_percent']} %,"
        f" {rtp['successful']}/{rtp['calls']} completed"
    )
    save_results(workdir, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
