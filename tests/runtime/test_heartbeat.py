"""The node's heartbeat figures (runtime.node): calls in progress and calls/s from a real
B2BUA, the configured capacity, the version and database role, alive until it stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smartswitch import __version__
from smartswitch.b2bua.application import SipApplication
from smartswitch.routing.static import StaticPolicy, StaticRoute
from smartswitch.runtime.config import ConfigError, NodeConfig, load_config
from smartswitch.runtime.node import CallRate, Node

from .test_webport import CALLER, INVITE


def test_call_rate_is_the_count_s_slope_over_the_last_seconds() -> None:
    rate = CallRate(window=5.0)
    assert rate.sample(0, 100.0) == 0.0  # one sample: no slope yet
    assert rate.sample(10, 101.0) == 10.0
    assert rate.sample(30, 103.0) == 10.0
    # Over the last 5 s: from the newest sample at least 5 s old (103 s, 30 calls).
    for second, count in ((104, 40), (105, 50), (106, 60), (107, 70), (108, 90)):
        last = rate.sample(count, float(second))
    assert last == pytest.approx((90 - 30) / (108 - 103))
    assert rate.sample(90, 120.0) == 0.0  # quiet for longer than the window


def test_the_heartbeat_carries_the_node_s_real_figures() -> None:
    routes = (StaticRoute("1", ("sip:127.0.0.4:5070",)),)
    config = NodeConfig(
        node_id="lab1",
        node_name="n1",
        dedicated_ip="127.0.0.11",
        http_listen="127.0.0.11:8080",
        route=routes,
        accept_any_source=True,
        capacity=250,
    )
    node = Node(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        node.sip = SipApplication(StaticPolicy(routes, True), {"udp": ("127.0.0.1", 5060)})
        node.b2bua = node.sip.b2bua
        first = node._heartbeat()
        assert (first.node, first.calls, first.cps, first.capacity) == ("n1", 0, 0.0, 250)
        assert first.alive and first.version == __version__ and first.db_role == "single"
        assert (first.dedicated_ip, first.http_address) == ("127.0.0.11", "127.0.0.11:8080")
        node.b2bua.layer.receive(INVITE, CALLER, loop.time())
        await asyncio.sleep(0.05)
        beat = node._heartbeat()
        assert beat.calls == 1 and beat.cps > 0
        assert beat.free == 249
        node.stopping.set()
        assert not node._heartbeat().alive

    asyncio.run(main())


def test_capacity_is_a_node_setting(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    assert NodeConfig().capacity == 1000
    path.write_text("capacity = 40\n")
    assert load_config(path).capacity == 40
    path.write_text("capacity = -1\n")
    with pytest.raises(ConfigError, match="capacity"):
        load_config(path)
    path.write_text('capacity = "many"\n')
    with pytest.raises(ConfigError, match="capacity"):
        load_config(path)
