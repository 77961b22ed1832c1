"""The call timers in the node's TOML configuration: the dialog keepalive's interval and
timeout reach the B2BUA, bad values are refused with their line named."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartswitch.runtime.config import ConfigError, NodeConfig, load_config


def _load(tmp_path: Path, text: str) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return load_config(path)


def test_ping_defaults_and_values(tmp_path: Path) -> None:
    config = load_config(None)
    # Timer F (64 x T1): what an unanswered OPTIONS lasted before the setting existed.
    assert (config.dialog_ping_interval, config.dialog_ping_timeout) == (60.0, 32.0)
    config = _load(tmp_path, "dialog_ping_interval = 20\ndialog_ping_timeout = 4\n")
    assert (config.dialog_ping_interval, config.dialog_ping_timeout) == (20.0, 4.0)
    assert isinstance(config.dialog_ping_timeout, float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dialog_ping_timeout = 0\n", "node.toml:1: dialog_ping_timeout: more than 0"),
        ("dialog_ping_timeout = -3\n", "dialog_ping_timeout: more than 0"),
        ("node_id = 'a'\ndialog_ping_timeout = 40\n", "node.toml:2: .*at most 32"),
        ('dialog_ping_timeout = "5s"\n', "dialog_ping_timeout"),
        ("dialog_ping_interval = -1\n", "dialog_ping_interval: must not be negative"),
    ],
)
def test_bad_ping_values_name_their_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)
