"""What call capture costs: per message on the event loop, and per file in the writer thread;
and, with ``--node``, on a real billing node carrying sipp calls.

    PYTHONPATH=src python bench/capture.py [--calls N] [--json]
    PYTHONPATH=src python bench/capture.py --node [--rate 200] [--seconds 10] [--rounds 2]

``--node``: one billing node (as bench/calls.py's billing sweep: ACL, tariff, least cost, CDR
through the outbox), sipp UAC -> node -> sipp UAS, the same fixed-rate batch of calls in each
of three capture settings, switched by provisioning ``settings:`` while the node runs: **off**,
**pcap** (every call, one file each) and **pcap+hep** (also HEP3 to a local UDP socket). The
modes alternate for ``--rounds`` rounds so drift on a shared machine hits them alike. Per mode:
the node's CPU per call (utime+stime from /proc across the batch and the settle after it, so
the writer thread's files count), the implied calls/s per core (1 / CPU per call) and its ratio
to capture off, whether the batch was clean, files written and HEP packets received.
``--sweep 300,600,...`` also finds each mode's highest clean rate (first failure stops it).

Measures, on the synthetic two-leg call of tests/capture/calls.py (14 messages, UDP):

- ``message()`` per message with no call captured (mode off: the early return), for a message
  of a call that is not captured while others are (finding the Call-ID, one look-up), and for
  a captured call's message (the same plus one append), with the call's start/add_leg/end
  spread over its 14 messages;
- the same captured message also sent as HEP3 over UDP to a local socket;
- writing one call's pcap file in the writer thread's code (``CaptureWriter.write``: building
  the packets, writing a temporary file, renaming), as microseconds per file and files/s,
  and building the file's bytes alone.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import git_commit  # noqa: E402
from capture.calls import A_CALL_ID, B_CALL_ID, two_leg_call  # noqa: E402
from smartswitch.capture.pcap import pcap_bytes  # noqa: E402
from smartswitch.capture.recorder import (  # noqa: E402
    CaptureJob,
    CaptureMode,
    CapturePolicy,
    CaptureRecorder,
)
from smartswitch.capture.sender import HepSender  # noqa: E402
from smartswitch.capture.writer import CaptureWriter  # noqa: E402

MESSAGES = two_leg_call("udp")


class NullSink:
    """Takes jobs and forgets them: the loop's side only."""

    error: str | None = None
    files_written = 0
    write_errors = 0
    messages_dropped = 0
    files_deleted = 0

    def submit(self, job: CaptureJob) -> None:
        pass


def best_of(runs: int, work: Callable[[], int]) -> float:
    """Nanoseconds per unit of the fastest of ``runs`` runs (``work`` returns its units)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter_ns()
        units = work()
        best = min(best, (time.perf_counter_ns() - start) / units)
    return best


def calls_through(recorder: CaptureRecorder, calls: int, captured: bool) -> Callable[[], int]:
    wires = [(m.transport, m.src, m.dst, m.data, m.time) for m in MESSAGES]
    invite, rest = wires[:2], wires[2:]

    def work() -> int:
        now = 0.0
        for index in range(calls):
            if captured:
                recorder.start(A_CALL_ID, now)
            for wire in invite:
                recorder.message(*wire)
            if captured:
                recorder.add_leg(A_CALL_ID, B_CALL_ID)
            for wire in rest:
                recorder.message(*wire)
            if captured:
                recorder.end(A_CALL_ID, f"c{index}", now)
            now += 1.0
        return calls * len(wires)

    return work


MODES = ("off", "pcap", "pcap+hep")


class HepCounter:
    """A UDP socket counting the HEP packets it gets (in a thread)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.packets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(65_536)
            except TimeoutError:
                continue
            self.packets += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def count_files(directory: Path) -> int:
    return sum(1 for _ in directory.rglob("*.pcap")) if directory.exists() else 0


def node_modes(args: argparse.Namespace) -> dict[str, Any]:
    from benchutil import save_results, start_run
    from calls import (
        CALLEE_IP,
        NODE_IP,
        billing_document,
        billing_node_config,
        run_step,
        start_uas,
    )
    from e2e.node import Node, NodeSpec

    workdir, results = start_run(args.out, "capture-node")
    results.update(rate=args.rate, seconds=args.seconds, rounds=args.rounds)
    uas, uas_port = start_uas(workdir, 5000)
    hep = HepCounter()
    node: Node | None = None
    settings = {
        "off": {"capture_mode": "off", "capture_hep": ""},
        "pcap": {"capture_mode": "all", "capture_hep": ""},
        "pcap+hep": {"capture_mode": "all", "capture_hep": f"127.0.0.1:{hep.port}"},
    }
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        uas.wait_until_listening()
        spec = NodeSpec(
            workdir=workdir / "node",
            sip_host=NODE_IP,
            config=billing_node_config({"capture_linger": 0.5}),
        )
        node = Node(spec)
        node.provision(billing_document(f"{CALLEE_IP}:{uas_port}"))
        node.start()
        target = node.sip_address
        captures = node.data_dir / "captures"

        def switch(mode: str) -> None:
            assert node is not None
            before = node.stored_config_version()
            node.provision({"settings": settings[mode]})
            if node.stored_config_version() > before:
                node.wait_config_version(before + 1)

        for round_ in range(args.rounds):
            for mode in MODES:
                switch(mode)
                files, packets = count_files(captures), hep.packets
                cpu = node.cpu_seconds()
                step = run_step(args, f"r{round_}-{mode}", target, args.rate, workdir)
                # Every captured call's file written (after its linger, by the writer
                # thread, which lags on a loaded machine) before the CPU is read, so each
                # mode pays for its own files.
                wanted = files + (step.successful if mode != "off" else 0)
                deadline = time.monotonic() + 30
                while count_files(captures) < wanted and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(args.settle)
                used = node.cpu_seconds() - cpu
                per_call = used / step.successful if step.successful else None
                # ENVIRONMENT.md's "clean": no failure, every call, retransmissions <= 1 %.
                clean = (
                    step.returncode == 0
                    and step.failed == 0
                    and step.successful == step.calls
                    and step.retransmissions <= step.calls / 100
                )
                runs[mode].append(
                    {
                        "clean": clean,
                        "calls": step.calls,
                        "successful": step.successful,
                        "retransmissions": step.retransmissions,
                        "cpu_ms_per_call": None if per_call is None else per_call * 1000,
                        "files": count_files(captures) - files,
                        "hep_packets": hep.packets - packets,
                    }
                )
                print(f"round {round_} {mode:9} {runs[mode][-1]}", flush=True)
        sweeps: dict[str, int] = {}
        for mode in MODES if args.sweep else ():
            switch(mode)
            best = 0
            for rate in args.sweep:
                step = run_step(args, f"sweep-{mode}", target, rate, workdir)
                time.sleep(args.settle)
                if (
                    step.returncode != 0
                    or step.failed
                    or step.successful < step.calls
                    or step.retransmissions > step.calls / 100
                ):
                    break
                best = rate
            sweeps[mode] = best
            print(f"sweep {mode:9} highest clean rate {best} calls/s", flush=True)
    finally:
        if node is not None:
            node.stop()
        uas.stop()
        hep.close()

    summary: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        costs = [r["cpu_ms_per_call"] for r in runs[mode] if r["cpu_ms_per_call"]]
        cost = min(costs) if costs else None  # the least disturbed round
        summary[mode] = {
            "cpu_ms_per_call": cost,
            "calls_per_s_per_core": None if not cost else 1000.0 / cost,
            "all_clean": all(r["clean"] for r in runs[mode]),
            "files": sum(r["files"] for r in runs[mode]),
            "hep_packets": sum(r["hep_packets"] for r in runs[mode]),
        }
    base = summary["off"]["calls_per_s_per_core"]
    for mode in MODES:
        per_core = summary[mode]["calls_per_s_per_core"]
        summary[mode]["ratio_to_off"] = per_core / base if per_core and base else None
    results.update(runs=runs, summary=summary, sweeps=sweeps)
    print(f"capture on a billing node, {args.rate} calls/s for {args.seconds:g} s a batch")
    for mode in MODES:
        s = summary[mode]
        print(
            f"  {mode:9} {s['cpu_ms_per_call'] or 0:.2f} ms CPU/call, "
            f"{s['calls_per_s_per_core'] or 0:.0f} calls/s per core, "
            f"ratio {s['ratio_to_off'] or 0:.2f}, clean {s['all_clean']}, "
            f"{s['files']} files, {s['hep_packets']} HEP packets"
            + (f", highest clean rate {sweeps[mode]}" if mode in sweeps else "")
        )
    save_results(workdir, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the best counts")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--node", action="store_true", help="off / pcap / pcap+hep on a node")
    parser.add_argument("--rate", type=int, default=200, help="--node: calls per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="--node: seconds a batch")
    parser.add_argument("--rounds", type=int, default=2, help="--node: rounds of the 3 modes")
    parser.add_argument("--settle", type=float, default=2.0, help="--node: pause after a batch")
    parser.add_argument("--duration-ms", type=int, default=100, help="--node: call length")
    parser.add_argument("--step-timeout", type=float, default=60.0, help="--node: batch bound")
    parser.add_argument(
        "--sweep",
        type=lambda text: [int(r) for r in text.split(",") if r],
        default=[],
        help="--node: rates to sweep per mode, e.g. 300,600,900",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.node:
        node_modes(args)
        return
    calls, runs = int(args.calls), int(args.runs)
    results: dict[str, float | str] = {"commit": git_commit(), "calls": calls}

    off = CaptureRecorder(CapturePolicy(CaptureMode.OFF), NullSink(), linger=0)
    results["message_off_us"] = best_of(runs, calls_through(off, calls, False)) / 1000

    busy = CaptureRecorder(CapturePolicy(CaptureMode.ALL), NullSink(), linger=0)
    busy.start("some-other-call", 0.0)  # others are captured, this call is not
    results["message_not_captured_us"] = best_of(runs, calls_through(busy, calls, False)) / 1000

    captured = CaptureRecorder(CapturePolicy(CaptureMode.ALL), NullSink(), linger=0)
    results["message_captured_us"] = best_of(runs, calls_through(captured, calls, True)) / 1000

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        collector.bind(("127.0.0.1", 0))
        collector.setblocking(False)
        sender = HepSender("127.0.0.1", collector.getsockname()[1], capture_id=1)
        with_hep = CaptureRecorder(CapturePolicy(CaptureMode.ALL), NullSink(), sender, linger=0)
        hep_calls = min(calls, 500)  # what the collector's buffer holds between runs
        timed = calls_through(with_hep, hep_calls, True)

        def drained() -> int:
            units = timed()
            try:
                while True:
                    collector.recv(65_536)
            except BlockingIOError:
                pass
            return units

        results["message_captured_hep_us"] = best_of(runs, drained) / 1000
        results["hep_errors"] = sender.errors
        sender.close()

    wires = tuple((m.time, m.transport, m.src, m.dst, m.data) for m in MESSAGES)
    job = CaptureJob("bench", A_CALL_ID, wires)
    files = min(calls, 1000)

    def build() -> int:
        for _ in range(files):
            pcap_bytes(job.captured())
        return files

    results["file_build_us"] = best_of(runs, build) / 1000
    with tempfile.TemporaryDirectory() as directory:
        writer = CaptureWriter(Path(directory))
        names = [CaptureJob(f"c{i}", A_CALL_ID, wires) for i in range(files)]

        def write() -> int:
            for each in names:
                writer.write(each)
            return files

        per_file_ns = best_of(runs, write)
        results["file_write_us"] = per_file_ns / 1000
        results["files_per_s"] = 1e9 / per_file_ns
        results["file_bytes"] = (Path(directory) / "c0.pcap").stat().st_size

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"capture benchmark, commit {results['commit']}, {calls} calls of 14 messages a run")
    print(f"  message(), capture off:                  {results['message_off_us']:.2f} us/msg")
    print(
        f"  message(), call not captured:            {results['message_not_captured_us']:.2f} us/msg"
    )
    print(
        f"  message(), call captured (incl. start/end): {results['message_captured_us']:.2f} us/msg"
    )
    print(
        f"  message(), captured + HEP3 over UDP:     {results['message_captured_hep_us']:.2f} us/msg"
    )
    print(f"  pcap bytes of a 14-message call:         {results['file_build_us']:.1f} us/file")
    print(
        f"  writing a call's file (writer thread):   {results['file_write_us']:.1f} us/file, "
        f"{results['files_per_s']:.0f} files/s ({results['file_bytes']} bytes each)"
    )


if __name__ == "__main__":
    main()
