"""Installing as an operator does: a wheel built from this checkout, a fresh virtualenv,
``smartswitch init``, ``provision``, ``run``, and a sipp call through the node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import CALLER_IP, SippFactory
from .sipp import free_port
from .wheel import Installed

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "provision.yaml"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, built_wheel: Installed) -> Iterator[Path]:
    """The ``smartswitch`` command of a fresh virtualenv with only the wheel installed (built
    as ``pip install .`` builds it: tests/conftest.py)."""
    where = tmp_path_factory.mktemp("install")
    wheel = built_wheel.wheel
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # Not the test run's PYTHONPATH: the installed package alone must be what runs.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True,
        timeout=600,
        env=env,
    )
    yield venv / "bin" / "smartswitch"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_wheel_installs_and_its_node_completes_a_call(
    installed: Path, tmp_path: Path, sipp: SippFactory
) -> None:
    env = _clean_env()
    config = tmp_path / "node.toml"
    sip_port = free_port("127.0.0.1")
    http_port = free_port("127.0.0.1")
    done = subprocess.run(
        [
            str(installed),
            "init",
            str(config),
            "--node-name",
            "fresh",
            "--dedicated-ip",
            "127.0.0.1",
            "--data-dir",
            str(tmp_path / "data"),
            "--sip-listen",
            f"127.0.0.1:{sip_port}",
            "--http-listen",
            f"127.0.0.1:{http_port}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

    supplier = sipp.uas(calls=1)
    document = yaml.safe_load(EXAMPLE.read_text())
    for peer in document["peers"]:
        if peer["role"] == "supplier":
            peer["address"] = SippFactory.address(supplier)
    provision = tmp_path / "provision.yaml"
    provision.write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [str(installed), "provision", str(provision), "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = subprocess.Popen(
            [str(installed), "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert node.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/health", timeout=1
                ) as answer:
                    if json.loads(answer.read()).get("status") == "ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        result = sipp.uac(f"127.0.0.1:{sip_port}", ip=CALLER_IP, calls=1)
        assert (result.successful, result.failed) == (1, 0), result.describe()
    finally:
        node.send_signal(signal.SIGTERM)
        code = node.wait(timeout=30)
    assert code == 0, log.read_text()
    # The one-time admin password is printed once, at the first start.
    assert "one-time password" in log.read_text()
