"""What call capture costs: per message on the event loop, and per file in the writer thread.

    PYTHONPATH=src python bench/capture.py [--calls N] [--json]

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
import time
from collections.abc import Callable
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the best counts")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
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
