"""The cluster page: every node with its role, replication, lag and outbox."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from smartswitch.cluster.replication import DatabaseRole
from smartswitch.cluster.vip import VipStatus, VrrpState

from .conftest import WebEnv
from .test_ui import login


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
