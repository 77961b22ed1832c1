"""The node's media settings in node.toml, and the rtpengine command line made from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartswitch.runtime.config import ConfigError, MediaRelaySetting, load_config
from smartswitch.runtime.media import rtpengine_config


def test_own_and_external_rtpengines(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            """
media_rtpengine = true
media_interface = "192.0.2.10"
media_ng = "127.0.0.1:2299"
media_port_min = 31000
media_port_max = 31099

[[media_relay]]
name = "rtp2"
address = "192.0.2.20:2223"
weight = 3
""",
        )
    )
    assert config.media_enabled
    assert config.media_relay == (MediaRelaySetting("rtp2", "192.0.2.20:2223", 3),)
    argv = rtpengine_config(config, config.media_interface).command_line()
    assert "--interface=192.0.2.10" in argv and "--listen-ng=127.0.0.1:2299" in argv
    assert "--delete-delay=0" in argv and "--recording-method=pcap" in argv
    assert f"--recording-dir={config.data_dir / 'rtpengine'}" in argv
    assert "--no-fallback" not in argv


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('media_ng = "nowhere"', "media_ng: expected HOST:PORT"),
        ("media_port_min = 80", "a UDP port between 1024 and 65535"),
        ("media_port_min = 31000\nmedia_port_max = 31001", "at least 4 ports"),
        ('[[media_relay]]\nname = "local"\naddress = "127.0.0.1:1"', "other than 'local'"),
        ('[[media_relay]]\nname = "x"\naddress = "127.0.0.1"', "x: expected HOST:PORT"),
        ('[[media_relay]]\nname = "x"\naddress = "127.0.0.1:1"\nweight = -1', "weight"),
        ('[[media_relay]]\nname = "x"\naddress = "127.0.0.1:1"\nport = 2', "name, address"),
        ('media_interface = "eth0"', "not an IP address"),
        ("media_timeout = 0", "must be positive"),
    ],
)
def test_bad_media_settings_are_refused_with_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_config(_write(tmp_path, text))
    assert "node.toml:" in str(error.value)
