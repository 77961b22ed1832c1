"""What every bench script records or needs: the commit measured, a SIGTERM that unwinds,
and a directory per run. Scripts put tests/ on sys.path before importing this (the sipp runner
is shared with the end-to-end tests)."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e.sipp import sipp_version

ROOT = Path(__file__).resolve().parents[1]
# The probe's loop: about 20 ms of one core on these machines.
PROBE_LOOPS = 200_000


def git_commit() -> str:
    """The short commit the figures belong to ("unknown" outside a checkout)."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def exit_on_sigterm(signum: int, frame: object) -> None:
    # Unwind through the finally blocks, which stop the node and sipp by PID;
    # the default action would leave them running on their own.
    raise SystemExit(128 + signum)


def cpu_ticks() -> tuple[int, int]:
    """The machine's CPU time so far in clock ticks, ``(stolen, all)``, from ``/proc/stat``.
    Stolen time is the hypervisor running something else while this machine's CPUs wanted to
    run: a figure measured under it measured the host too. It is the visible part only: a
    host's load also makes the same work slower with nothing stolen (:func:`probe_ms`)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    ticks = [int(value) for value in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the machine's CPU time stolen between two :func:`cpu_ticks` readings."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total > 0 else None


def probe_ms(rounds: int = 5) -> float:
    """How long a fixed piece of pure-Python work takes now, best of ``rounds``, in ms: the
    same work every time, so when it changes between two quiet moments of a run the machine
    changed, not the code (2026-12-05: one billing node cost 1.24-1.38 ms per call at 11:20-11:30 UTC
    and 1.99 ms at 12:20, with under 1.5 % of the CPU time stolen)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        total = 0
        for i in range(PROBE_LOOPS):
            total += i * i % 7
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 2)


def start_run(out: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """Begin a run: SIGTERM unwinds from now on; a fresh ``out/NAME-<UTC time>`` directory;
    and the facts its results begin with (when, the commit, sipp, Python, the cores)."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = out / f"{name}-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir, {
        "started": stamp,
        "commit": git_commit(),
        "sipp": sipp_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def save_results(workdir: Path, results: dict[str, Any]) -> Path:
    """The run's figures as ``<workdir>.json`` beside its directory; says where."""
    path = workdir.with_suffix(".json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return path
