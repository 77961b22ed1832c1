"""The shared IP's health check against a real node: it passes while the node's SIP loop
serves and fails as soon as the loop is stuck (keepalived then gives the address up)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from smartswitch.cluster.vip import VipSettings, render_check_script

from .conftest import StartNode

pytestmark = pytest.mark.e2e


def _check(script: Path) -> tuple[int, float]:
    started = time.monotonic()
    done = subprocess.run([str(script)], capture_output=True, timeout=10, check=False)
    return done.returncode, time.monotonic() - started


@pytest.mark.parametrize("accept_any_source", [None, True])
def test_health_check_follows_the_node_sip_loop(
    start_node: StartNode, tmp_path: Path, accept_any_source: bool | None
) -> None:
    # None: the node's default admission (unknown sources refused): the check must pass anyway.
    node = start_node(accept_any_source=accept_any_source)
    settings = VipSettings(
        shared_ip="192.0.2.10",
        interface="eth0",
        virtual_router_id=51,
        priority=100,
        unicast_src_ip=node.sip_host,
        peers=(),
        sip_check_host=node.sip_host,
        sip_check_port=node.sip_port,
    )
    script = tmp_path / "vip-check.sh"
    script.write_text(render_check_script(settings))
    script.chmod(0o700)
    assert _check(script)[0] == 0
    os.kill(node.pid, signal.SIGSTOP)
    try:
        status, took = _check(script)
    finally:
        os.kill(node.pid, signal.SIGCONT)
    assert status != 0
    assert took < 1.0
    assert _check(script)[0] == 0
