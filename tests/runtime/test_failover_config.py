"""The node settings of replacing the primary: etcd members, failover mode, lease, anti-flap;
and pointing a database URL at another server."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartswitch.runtime.config import ConfigError, load_config
from smartswitch.runtime.primary import url_at


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_etcd_members_and_failover_settings_are_read(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            'etcd_members = ["n1=10.0.0.11", "n2=10.0.0.12", "n3=10.0.0.13"]\n'
            "etcd_client_port = 12379\n"
            'failover = "automatic"\n'
            "failover_ttl = 6\n"
            "failover_anti_flap = 600\n",
        )
    )
    assert config.etcd_cluster == {"n1": "10.0.0.11", "n2": "10.0.0.12", "n3": "10.0.0.13"}
    assert config.etcd_endpoints[0] == "http://10.0.0.11:12379"
    assert (config.failover, config.failover_ttl, config.failover_anti_flap) == (
        "automatic",
        6,
        600.0,
    )


def test_defaults_are_manual_with_a_ten_second_lease_and_an_hour_of_anti_flap() -> None:
    config = load_config(None)
    assert (config.failover, config.failover_ttl, config.failover_anti_flap) == (
        "manual",
        10,
        3600.0,
    )
    assert config.etcd_members == ()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('etcd_members = ["n1"]', 'each entry "NAME=IP"'),
        ('etcd_members = ["n1=not-an-ip"]', 'each entry "NAME=IP"'),
        ('etcd_members = ["=10.0.0.1"]', 'each entry "NAME=IP"'),
        ('failover = "sometimes"', "manual or automatic"),
        ("failover_ttl = 1", "at least 2 seconds"),
        ("etcd_peer_port = 70000", "a port between"),
        ("failover_anti_flap = -1", "must not be negative"),
    ],
)
def test_bad_settings_are_refused_with_the_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(_config(tmp_path, f'node_name = "n1"\n{line}\n'))
    assert ":2:" in str(refused.value)


def test_url_at_keeps_driver_credentials_and_database() -> None:
    url = "mysql+aiomysql://root:s%40cret@127.0.0.1:3307/smartswitch"
    moved = url_at(url, "10.0.0.12:3308")
    assert moved == "mysql+aiomysql://root:s%40cret@10.0.0.12:3308/smartswitch"
