"""The cluster page: every node with its role, replication, lag and outbox."""

from __future__ import annotations

from smartswitch.cluster.replication import DatabaseRole

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
