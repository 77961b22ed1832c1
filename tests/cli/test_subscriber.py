"""``smartswitch subscriber password``: a generated password printed once, or one from standard
input judged by the password policy; the hashes change, the rest of the subscriber does not."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from smartswitch.cli import main
from smartswitch.sip.digest import compute_ha1

DOCUMENT = """
accounts: [{name: a, currency: USD}]
subscribers:
  - {username: alice, password: "first-pass-quartz-1", account: a, max_contacts: 2,
     caller_id: "15550001000"}
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    file = tmp_path / "p.yaml"
    file.write_text(DOCUMENT)
    assert main(["provision", str(file), "--data-dir", str(data)]) == 0
    return data


def _row(data: Path) -> tuple[str, str, int, str]:
    db = sqlite3.connect(data / "smartswitch.db")
    try:
        row: tuple[str, str, int, str] = db.execute(
            "SELECT realm, ha1_md5, max_contacts, caller_id FROM subscribers"
        ).fetchone()
        return row
    finally:
        db.close()


def test_generate_prints_a_strong_password_once_and_sets_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["subscriber", "password", "alice", "--generate", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "subscriber alice: password set"
    password = out[1].removeprefix("password: ")
    assert len(password) >= 20
    realm, ha1, max_contacts, caller_id = _row(data_dir)
    assert ha1 == compute_ha1("alice", realm, password, "MD5")
    assert (max_contacts, caller_id) == (2, "15550001000")  # the rest as it was


def test_password_stdin_is_judged_by_the_policy(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _row(data_dir)
    monkeypatch.setattr("sys.stdin", io.StringIO("letmein300\n"))
    assert (
        main(["subscriber", "password", "alice", "--password-stdin", "--data-dir", str(data_dir)])
        == 1
    )
    assert "password: too short: at least 12 characters" in capsys.readouterr().err
    assert _row(data_dir) == before
    monkeypatch.setattr("sys.stdin", io.StringIO("a much-better pass phrase\n"))
    assert (
        main(["subscriber", "password", "alice", "--password-stdin", "--data-dir", str(data_dir)])
        == 0
    )
    realm, ha1, _, _ = _row(data_dir)
    assert ha1 == compute_ha1("alice", realm, "a much-better pass phrase", "MD5")
    assert "a much-better" not in capsys.readouterr().out


def test_an_unknown_subscriber(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["subscriber", "password", "bob", "--generate", "--data-dir", str(data_dir)]) == 1
    assert "no subscriber named 'bob'" in capsys.readouterr().err
