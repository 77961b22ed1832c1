"""The fail2ban filter we ship (contrib/fail2ban) against what the guard really logs, read by
the real fail2ban-regex (Debian's fail2ban, scripts/install-system-deps.sh)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from smartswitch.registrar.guard import GuardSettings, SourceGuard
from smartswitch.sip.digest import AuthResult

FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "smartswitch.conf"
# The node's log format when it writes to standard error (cli._setup_logging).
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _log_of_an_attack(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("smartswitch.security")
    logger.addHandler(handler)
    try:
        guard = SourceGuard(GuardSettings(rate=0, fail_limit=3, account_fail_limit=4))
        wrong = AuthResult(False, "alice", False, "wrong password")
        for n in range(4):  # four sources: the account goes into back-off
            guard.failed(f"192.0.2.{n + 1}", 0, wrong)
        assert not guard.admit("2001:db8::5", 'Digest username="alice"', 1)
        forged = AuthResult(False, "x source=198.51.100.1", False, "unknown user")
        guard.failed("203.0.113.9", 2, forged)
        for _ in range(3):
            guard.failed("203.0.113.10", 3, wrong)
        guard.check("203.0.113.10", 4)  # banned now: a refused line
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_the_filter_finds_every_offending_source_and_nothing_else(tmp_path: Path) -> None:
    binary = shutil.which("fail2ban-regex")
    if binary is None:
        pytest.fail("fail2ban is not installed: run scripts/install-system-deps.sh")
    log = tmp_path / "node.log"
    _log_of_an_attack(log)
    done = subprocess.run(
        [binary, "-o", "ip", str(log), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = done.stdout.split()
    assert set(found) == {
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "2001:db8::5",
        "203.0.113.10",
        "203.0.113.9",
    }
    assert found.count("203.0.113.10") == 4  # three failures and the refusal once banned
    assert "198.51.100.1" not in found  # the username's forged "source=" is not read
