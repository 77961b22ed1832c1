"""``smartswitch user add``: the password printed once, the user in the audit log as made from
the command line (docs/security.md), never the password or its hash."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from smartswitch.cli import main


def _user_changes(data: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    capsys.readouterr()
    assert main(["audit-log", "export", "--entity", "user", "--data-dir", str(data)]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def test_a_user_added_from_the_cli_is_in_the_audit_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    assert main(["user", "add", "alice", "--role", "operator", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "user alice (operator) added"
    password = out[1].removeprefix("password: ")
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough pass phrase\n"))
    argv = ["user", "add", "bob", "--role", "read-only", "--password-stdin"]
    assert main([*argv, "--data-dir", str(data)]) == 0
    rows = _user_changes(data, capsys)
    made = {(row["name"], row["actor"], row["source"], row["action"]) for row in rows}
    assert made == {("alice", "cli", "cli", "create"), ("bob", "cli", "cli", "create")}
    text = repr(rows)
    assert password not in text and "a long enough pass phrase" not in text
    assert "argon2" not in text and "$" not in text  # no hash either


def test_a_name_taken_is_refused_and_not_logged_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    argv = ["user", "add", "carol", "--role", "admin", "--data-dir", str(data)]
    assert main(argv) == 0
    assert main(argv) == 1
    assert "name: user 'carol' exists already" in capsys.readouterr().err
    assert [row["name"] for row in _user_changes(data, capsys)] == ["carol"]
