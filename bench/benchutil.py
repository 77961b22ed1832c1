"""What every bench script records or needs: the commit measured, a SIGTERM that unwinds,
and a directory per run. Scripts put tests/ on sys.path before importing this (the sipp runner
is shared with the end-to-end tests)."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e.sipp import sipp_version

ROOT = Path(__file__).resolve().parents[1]


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
