"""``smartswitch cluster dns ZONE``: the nodes of the cluster's database and the shared IP."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from smartswitch.cli import main


def test_records_of_the_registered_nodes_and_the_shared_ip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["db", "upgrade", "--data-dir", str(data)]) == 0
    db = sqlite3.connect(data / "smartswitch.db")
    with db:
        for name, ip in (("n1", "10.77.0.11"), ("n2", "10.77.0.12")):
            db.execute(
                "INSERT INTO nodes (name, dedicated_ip, sip_address, http_address, shared_ip,"
                " db_scheme, registered_at) VALUES (?, ?, ?, '', '10.77.0.100', 'replication',"
                " '2026-12-02 00:00:00')",
                (name, ip, f"{ip}:5070"),
            )
    db.close()
    capsys.readouterr()
    assert main(["cluster", "dns", "voice.example.net", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("; smartswitch cluster dns voice.example.net: 2 node(s)")
    assert "sip.voice.example.net. 60 IN A 10.77.0.100" in out
    assert "n2.voice.example.net. 60 IN A 10.77.0.12" in out
    assert "_sip._tcp.voice.example.net. 60 IN SRV 20 10 5070 n1.voice.example.net." in out
    assert "_sip._udp.voice.example.net. 60 IN SRV 10 0 5070 sip.voice.example.net." in out


def test_a_bad_zone_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'data_dir = "{tmp_path / "d"}"\ndedicated_ip = "10.0.0.1"\n')
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["cluster", "dns", "bad zone", "--config", str(config)]) == 1
    assert "not a DNS zone name" in capsys.readouterr().err
    # This node alone (its own database): its dedicated IP.
    assert main(["cluster", "dns", "example.net", "--config", str(config)]) == 0
    assert "node1.example.net. 60 IN A 10.0.0.1" in capsys.readouterr().out
