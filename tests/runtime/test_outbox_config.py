"""The outbox's commit window as a node setting: a default that pays, bounds that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartswitch.runtime.config import ConfigError, load_config


def test_the_default_window_is_ten_milliseconds_and_zero_commits_at_once(tmp_path: Path) -> None:
    assert load_config(None).outbox_commit_window == 0.01
    path = tmp_path / "node.toml"
    path.write_text("outbox_commit_window = 0\n")
    assert load_config(path).outbox_commit_window == 0.0


@pytest.mark.parametrize("value", ["2", "-0.01", '"10ms"'])
def test_a_window_out_of_bounds_is_refused_with_the_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'node_name = "n1"\noutbox_commit_window = {value}\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert ":2:" in str(refused.value) and "outbox_commit_window" in str(refused.value)
