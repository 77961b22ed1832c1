"""The registrar's keys in the node's TOML configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartswitch.runtime.config import ConfigError, NodeConfig, load_config


def _load(tmp_path: Path, text: str) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return load_config(path)


def test_defaults_and_values(tmp_path: Path) -> None:
    config = load_config(None)
    assert (config.reg_min_expires, config.reg_default_expires, config.reg_max_expires) == (
        60,
        3600,
        3600,
    )
    assert config.digest_algorithms == ("SHA-256", "MD5")
    config = _load(
        tmp_path,
        'auth_fail_limit = 3\nauth_ban_time = 60\nsource_rate_limit = 0\ndigest_algorithms = ["MD5"]\n'
        "reg_min_expires = 10\nreg_default_expires = 300\n",
    )
    assert config.auth_fail_limit == 3
    assert config.auth_ban_time == 60.0
    assert config.source_rate_limit == 0.0
    assert config.digest_algorithms == ("MD5",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('digest_algorithms = ["SHA-512"]\n', "digest_algorithms"),
        ("digest_algorithms = []\n", "digest_algorithms"),
        ("auth_fail_limit = -1\n", "must not be negative"),
        ("auth_ban_time = true\n", "expected a number"),
        ("reg_min_expires = 0\n", "at least 1"),
        ("reg_default_expires = 30\n", "between reg_min_expires and reg_max_expires"),
    ],
)
def test_bad_values_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, "node_id = 'n'\n" + text)
    assert ":2: " in str(info.value)
