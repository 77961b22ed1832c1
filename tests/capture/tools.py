"""Real tools the capture tests drive: tshark reads our pcap files, sngrep speaks HEP."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TSHARK = shutil.which("tshark")
SNGREP = shutil.which("sngrep")
KAMAILIO = shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin:/sbin")

needs_tshark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (scripts/install-system-deps.sh)"
)
needs_sngrep = pytest.mark.skipif(
    SNGREP is None, reason="sngrep is not installed (scripts/install-system-deps.sh)"
)
needs_kamailio = pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed (apt)")


def tshark_fields(
    path: Path, *fields: str, display_filter: str = "sip", options: tuple[str, ...] = ()
) -> list[list[str]]:
    """One row per packet matching ``display_filter``, one column per field ("" when the
    packet has none); ``options`` are tshark preferences (``name:value``)."""
    assert TSHARK is not None
    command = [TSHARK, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for option in options:
        command += ["-o", option]
    for field in fields:
        command += ["-e", field]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]
