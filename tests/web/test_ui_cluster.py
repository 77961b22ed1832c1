"""The cluster page: every node with its role, replication, lag and outbox."""

from __future__ import annotations

import asyncio

from smartswitch.cluster.replication import DatabaseRole
from smartswitch.store.cluster_state import record_promotion
from smartswitch.store.database import create_engine, session_factory

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
