"""What every bench script records or needs: the commit measured, and a SIGTERM that unwinds."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
