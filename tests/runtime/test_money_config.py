"""Money across nodes in the node's TOML configuration: the slice, the minimum grant and the
partition share, each checked with its line named."""

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
    assert (config.reserve_seconds, config.min_grant_seconds, config.money_share) == (300, 10, 0)
    config = _load(tmp_path, "reserve_seconds = 30\nmin_grant_seconds = 5\nmoney_share = 0.5\n")
    assert (config.reserve_seconds, config.min_grant_seconds, config.money_share) == (30, 5, 0.5)
    assert _load(tmp_path, "money_share = 1\n").money_share == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reserve_seconds = 0\n", "node.toml:1: reserve_seconds: must be at least 1"),
        ("min_grant_seconds = -1\n", "node.toml:1: min_grant_seconds: must be at least 1"),
        ("min_grant_seconds = 2.5\n", "min_grant_seconds"),
        (
            "reserve_seconds = 30\nmoney_share = 1.5\n",
            "node.toml:2: money_share: a fraction from 0",
        ),
        ("money_share = -0.1\n", "money_share"),
        ('money_share = "half"\n', "money_share"),
    ],
)
def test_bad_values_name_their_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)
