"""The cluster page: every node with its role, replication, lag and outbox."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smartswitch.cluster.membership import Heartbeat
from smartswitch.cluster.nodebus import NodeBus
from smartswitch.cluster.replication import DatabaseRole
from smartswitch.cluster.signing import Signer, derive_key
from smartswitch.cluster.vip import VipStatus, VrrpState
from smartswitch.store.cluster_state import record_promotion
from smartswitch.store.database import create_engine, session_factory

from .conftest import WebEnv, make_env
from .fakes import FakeNode
from .test_ui import login

SECRET = "test-cluster-secret-0123456789"


def test_cluster_page_shows_the_node_its_role_and_replication(web: WebEnv) -> None:
    web.node.db_role = DatabaseRole(
        "replication",
        False,
        "replica",
        primary="10.0.0.11:3306",
        io_running="Connecting",
        sql_running="Yes",
        lag=None,
        last_error="error reconnecting to master",
    )
    login(web)
    html = web.client.get("/cluster").text
    assert "<h1>Cluster</h1>" in html
    assert "test1" in html and "replica" in html
    assert "Connecting / Yes" in html and "error reconnecting to master" in html
    assert 'hx-get="/cluster"' in html  # refreshed live
    assert 'href="/cluster"' in html  # in the menu


def test_cluster_page_needs_a_login(web: WebEnv) -> None:
    response = web.client.get("/cluster", follow_redirects=False)
    assert response.status_code in (302, 303, 401)


def _heartbeat(node: str, **figures: Any) -> Heartbeat:
    values: dict[str, Any] = {
        "node": node,
        "dedicated_ip": "127.0.0.1",
        # Nothing listens on port 1: a status read there fails at once, on loopback.
        "http_address": "127.0.0.1:1",
        "sip_address": "127.0.0.1:5060",
        "alive": True,
        "calls": 0,
        "cps": 0.0,
        "capacity": 1000,
        "outbox_depth": 0,
        "version": "0.1.0",
        "schema": "0007",
        "db_role": "replica",
    }
    return Heartbeat(**{**values, **figures})


def test_a_cluster_node_mounts_the_signed_bus_and_shows_its_membership(tmp_path: Path) -> None:
    bus = NodeBus("test1", SECRET, lambda: _heartbeat("test1"), _no_peers)

    def cluster_node(node: FakeNode) -> None:
        node.bus = bus
        node.config.db_scheme = "replication"
        node.config.cluster_secret = SECRET

    with make_env(tmp_path, cluster_node) as web:
        now = time.monotonic()
        table = bus.membership
        table.expect(["test1", "node2", "node3", "node4"])
        table.heard(_heartbeat("test1", db_role="primary"), now)
        table.heard(_heartbeat("node2", calls=40, cps=2.5, capacity=500, outbox_depth=3), now)
        table.heard(_heartbeat("node3"), now - 3.5)  # missed three heartbeats: down

        # The bus routes answer a signed request, and only that.
        signer = Signer("node2", derive_key(SECRET))
        headers = signer.sign("GET", "/cluster/status", b"", "test1", time.time())
        answer = web.client.get("/cluster/status", headers=headers)
        assert answer.status_code == 200 and answer.json()["node"] == "test1"
        signer.check_response(headers, 200, dict(answer.headers), answer.content)
        assert web.client.get("/cluster/status", headers=headers).status_code == 401  # replay
        assert web.client.get("/cluster/status").json() == {"detail": "missing"}

        metrics = web.client.get("/metrics").text
        assert 'smartswitch_cluster_bus_requests_refused_total{reason="replayed"} 1' in metrics
        assert 'smartswitch_cluster_bus_requests_refused_total{reason="missing"} 1' in metrics
        assert 'smartswitch_cluster_node_up{node="node2"} 1' in metrics
        assert 'smartswitch_cluster_node_up{node="node3"} 0' in metrics

        login(web)
        html = web.client.get("/cluster", headers={"HX-Request": "true"}).text
        rows = {
            m.group(1): m.group(2)
            for m in re.finditer(r"<tr>\s*<td>(\w+)</td>(.*?)</tr>", html, re.DOTALL)
        }
        assert set(rows) == {"test1", "node2", "node3", "node4"}
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in rows["node2"].split("</td>")]
        assert re.fullmatch(r"\d+\.\d s ago", cells[1]), cells  # last seen, on the node's clock
        assert cells[:1] + cells[2:8] == ["up", "40", "2.5", "500", "3", "0.1.0", "replica"]
        assert ">down<" in rows["node3"] and re.search(r"[3-9]\.\d s ago", rows["node3"])
        assert ">never heard<" in rows["node4"]
        assert ">up<" in rows["test1"]  # itself; its role from its own status, not a heartbeat
    asyncio.run(bus.client.aclose())


async def _no_peers() -> list[tuple[str, str]]:
    return []


def test_cluster_page_shows_each_nodes_schema(web: WebEnv) -> None:
    from smartswitch.web.ports import Release

    web.node.release = Release("0.2.0", "0009", "0008")
    login(web)
    html = web.client.get("/cluster").text
    assert "0009 / 0008" in html  # the code's newest migration / the database's revision


def test_cluster_page_shows_who_holds_the_shared_ip_and_since_when(web: WebEnv) -> None:
    since = datetime(2026, 12, 2, 3, 4, 5, 678000, UTC).timestamp()
    web.node.vip = VipStatus(
        node="test1",
        shared_ip="10.77.0.100",
        interface="eth0",
        state=VrrpState.MASTER,
        since=since,
        priority=150,
        keepalived_pid=1234,
        restarts=0,
        last_error=None,
    )
    login(web)
    html = web.client.get("/cluster").text
    assert "holds 10.77.0.100" in html
    assert "since 2026-12-02 03:04:05.678 UTC" in html
    web.node.vip = replace(web.node.vip, state=VrrpState.BACKUP)
    html = web.client.get("/cluster").text
    assert "holds 10.77.0.100" not in html and "backup since 2026-12-02 03:04:05.678" in html


def test_cluster_page_shows_the_epoch_the_failover_state_and_the_promotion_history(
    web: WebEnv,
) -> None:
    async def promote() -> None:
        engine = create_engine(web.url)
        try:
            async with session_factory(engine)() as session, session.begin():
                await record_promotion(
                    session, "db1", "10.0.0.11:3306", reason="initial primary",
                    automatic=False, from_gtid="",
                )  # fmt: skip
                await record_promotion(
                    session, "db2", "10.0.0.12:3306", reason="automatic: lease lapsed",
                    automatic=True, from_gtid="0-1-42",
                )  # fmt: skip
        finally:
            await engine.dispose()

    asyncio.run(promote())
    web.node.db_role = DatabaseRole(
        "replication",
        True,
        "primary",
        epoch=2,
        primary_node="db2",
        failover="automatic promotion; holds the leader lease (epoch 57)",
    )
    login(web)
    html = web.client.get("/cluster").text
    assert "holds the leader lease (epoch 57)" in html
    assert "<h2>Promotions</h2>" in html
    assert "automatic: lease lapsed" in html and "0-1-42" in html
    assert html.index("automatic: lease lapsed") < html.index("initial primary")  # newest first
    assert "by hand" in html and ">automatic<" in html
