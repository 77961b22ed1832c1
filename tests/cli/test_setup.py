"""``smartswitch init`` and ``smartswitch units``: a config that loads, units systemd accepts."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from smartswitch.cli import main
from smartswitch.cli.setup import UNITS, default_data_dir, render_config
from smartswitch.runtime.config import load_config


def test_init_writes_a_config_that_loads_with_a_fresh_secret(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "node.toml"
    assert main(["init", str(path), "--node-name", "sw1", "--dedicated-ip", "10.0.0.11"]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load_config(path)
    assert config.node_name == config.node_id == "sw1"
    assert config.dedicated_ip == "10.0.0.11"
    assert len(config.cluster_secret) >= 48
    assert config.data_dir == Path("smartswitch-data")  # not under /etc: a checkout's default

    other = tmp_path / "other.toml"
    assert main(["init", str(other), "--node-name", "sw2"]) == 0
    assert load_config(other).cluster_secret != config.cluster_secret


def test_init_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('node_id = "mine"\n')
    assert main(["init", str(path)]) == 1
    assert path.read_text() == 'node_id = "mine"\n'
    assert main(["init", str(path), "--force", "--node-name", "x"]) == 0
    assert load_config(path).node_id == "x"


def test_every_key_of_the_template_is_a_setting(tmp_path: Path) -> None:
    # The commented-out keys too: an operator uncommenting one must get a working file.
    text = render_config(node_name="n", dedicated_ip="127.0.0.1", data_dir=Path("/d"))
    uncommented = "\n".join(
        line.removeprefix("# ") if line.startswith("# ") and " = " in line else line
        for line in text.splitlines()
    )
    path = tmp_path / "uncommented.toml"
    path.write_text(uncommented)
    config = load_config(path)
    assert config.db_scheme == "single"


def test_service_data_dir_under_etc() -> None:
    assert default_data_dir(Path("/etc/smartswitch/node.toml")) == Path("/var/lib/smartswitch")
    assert default_data_dir(Path("node.toml")) == Path("smartswitch-data")


def test_state_directory_is_the_default_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert load_config(None).data_dir == tmp_path / "state"
    path = tmp_path / "node.toml"
    path.write_text(f'data_dir = "{tmp_path / "mine"}"\n')
    assert load_config(path).data_dir == tmp_path / "mine"  # the file wins


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    units = tmp_path / "units"
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "node.toml"
    assert (
        main(["units", "--dir", str(units), "--config", str(config), "--data-dir", str(data)]) == 0
    )
    for name in UNITS:
        text = (units / name).read_text()
        assert "{" not in text, f"{name}: a placeholder was not filled in"
        # The daemons the units start must exist for verify to accept them; the project's
        # system dependencies install them.
        for program in ("/usr/bin/rsync", "/usr/sbin/keepalived"):
            if program in text and not Path(program).exists():
                pytest.skip(f"{program} is not installed")
        result = subprocess.run(
            ["systemd-analyze", "verify", str(units / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == "", f"{name}: {result.stderr}"
