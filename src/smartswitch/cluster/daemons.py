"""What the node's daemon supervisors share (the rsync daemon, keepalived): whether a PID
runs, stopping a daemon an earlier run left behind, files replaced whole."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """``pid`` runs. A zombie (dead, not yet reaped by its parent) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_pid(pid: int, term_wait: float = 3.0, kill_wait: float = 2.0) -> None:
    """SIGTERM ``pid``, give it ``term_wait`` seconds, then SIGKILL and ``kill_wait`` more."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.02)


def write_file(path: Path, text: str, mode: int, *, fsync: bool = False) -> None:
    """Write ``text`` to ``path`` with ``mode`` from the first byte, replacing it atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an existing tmp file keeps its mode through O_CREAT
        os.write(fd, text.encode())
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
