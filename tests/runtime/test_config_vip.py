"""The shared-IP settings of the node configuration: what keepalived is given, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartswitch.runtime.config import ConfigError, load_config

GOOD = """
sip_listen = "10.77.0.11:5060"
dedicated_ip = "10.77.0.11"
shared_ip = "10.77.0.100"
node_name = "n1"
vip_interface = "eth0"
vip_prefix_len = 24
vip_router_id = 51
vip_priority = 150
vip_advert_interval = 0.1
vip_peers = ["10.77.0.12", "10.77.0.13"]
vip_garp_refresh = 2
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return load_config(path)


def test_the_vip_settings_become_keepalived_settings(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(GOOD)
    settings = load_config(path).vip_settings()
    assert settings is not None
    assert settings.shared_ip == "10.77.0.100" and settings.interface == "eth0"
    assert settings.virtual_router_id == 51 and settings.priority == 150
    assert settings.unicast_src_ip == "10.77.0.11"
    assert settings.peers == ("10.77.0.12", "10.77.0.13")
    # The health check asks the node's own SIP loop.
    assert (settings.sip_check_host, settings.sip_check_port) == ("10.77.0.11", 5060)
    assert settings.node_name == "n1" and settings.garp_master_refresh == 2


def test_no_interface_no_keepalived(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('shared_ip = "10.77.0.100"\n')
    assert load_config(path).vip_settings() is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('shared_ip = "10.77.0.100"', "shared_ip is empty"),
        ("vip_priority = 150", "priority"),
        ('vip_peers = ["10.77.0.12", "10.77.0.13"]', "peer"),
        ("vip_advert_interval = 0.1", "advert_interval"),
    ],
)
def test_bad_vip_settings_are_refused_with_the_line(
    tmp_path: Path, change: str, message: str
) -> None:
    replacement = {
        "shared_ip": "",
        "vip_priority": "vip_priority = 255",
        "vip_peers": 'vip_peers = ["10.77.0.11"]',
        "vip_advert_interval": "vip_advert_interval = 0.005",
    }[change.split(" ")[0]]
    text = GOOD.replace(change, replacement)
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, text)
    assert str(tmp_path / "node.toml") in str(info.value)
