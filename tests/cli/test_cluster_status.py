"""``smartswitch cluster status`` on the signed bus: two bus nodes serving in this process
(tests/cluster/busnet.py, 127.0.0.31-32), the ``nodes`` table in an embedded database naming
them and a third that never ran. The command signs as the node whose config it is given, reads
that node's membership table, asks the nodes up for their status, and exits non-zero unless
every node is up."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from cluster.busnet import SECRET, cluster, running, until
from smartswitch.cli.cluster import status
from smartswitch.cluster.bus import Peer
from smartswitch.cluster.nodes import register_node
from smartswitch.runtime.config import NodeConfig
from smartswitch.store.database import create_engine, database_url, session_factory
from smartswitch.store.migrate import upgrade_async

INTERVAL = 0.2


async def _nodes_table(data_dir: Path, nodes: dict[str, str]) -> None:
    url = database_url(data_dir)
    await upgrade_async(url)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            for name, address in nodes.items():
                host = address.rsplit(":", 1)[0]
                await register_node(session, name, host, f"{host}:5060", address, "", "replication")
    finally:
        await engine.dispose()


async def _status(config: NodeConfig, fmt: str = "json") -> tuple[int, Any]:
    out = io.StringIO()
    code = await status(config, fmt, out)
    text = out.getvalue()
    return code, json.loads(text) if fmt == "json" else text


def test_cluster_status_reads_the_membership_on_the_bus(tmp_path: Path) -> None:
    async def scenario() -> None:
        nodes = cluster(2, INTERVAL)
        node1, node2 = nodes
        table = {n.name: n.peer.address for n in nodes} | {"node3": "127.0.0.33:9"}
        await _nodes_table(tmp_path, table)

        async def peers() -> list[Peer]:  # what a node reads from its nodes table
            return [Peer(name, address) for name, address in table.items()]

        for node in nodes:
            node.peers = peers  # type: ignore[method-assign]
        config = NodeConfig(
            data_dir=tmp_path, node_name="node1", cluster_secret=SECRET, db_scheme="replication"
        )
        # What a node following the primary adds to its status (runtime/primary.py).
        node2.status = {
            "db": {"role": "fenced", "epoch": 3, "failover": "automatic; no leader"},
            "database_address": "127.0.0.32:3306",
            "unconfirmed": 2,
            "requeued": 5,
        }
        async with running(nodes):
            await until(lambda: node1.sees("node2"), within=3)
            code, rows = await _status(config)
            by_name = {row["node"]: row for row in rows}
            assert code == 1  # node3 never ran
            assert {n: r["state"] for n, r in by_name.items()} == {
                "node1": "up",
                "node2": "up",
                "node3": "never heard",
            }
            row = by_name["node2"]
            assert row["reachable"] and row["seen_by"] == "node1"
            assert (row["calls"], row["cps"], row["capacity"], row["outbox_depth"]) == (
                40,
                2.5,
                500,
                3,
            )
            assert row["db_role"] == "replica" and row["last_seen"] < 1.0
            assert row["db"]["epoch"] == 3 and row["database_address"] == "127.0.0.32:3306"
            assert (row["unconfirmed"], row["requeued"]) == (2, 5)
            assert not by_name["node3"]["reachable"]  # down: not asked
            text = (await _status(config, "table"))[1]
            header, *lines = text.splitlines()
            assert header.split()[:3] == ["node", "state", "last"]
            assert header.split()[-3:] == ["epoch", "failover", "error"]
            node2_line = next(line for line in lines if line.startswith("node2"))
            cells = node2_line.split()
            assert "fenced" in cells and cells[-4:] == ["3", "automatic;", "no", "leader"]
            assert "never heard" in text

            await node2.stop()
            await until(lambda: not node1.sees("node2"), within=3)
            code, rows = await _status(config)
            assert code == 1 and {r["node"]: r["state"] for r in rows}["node2"] == "down"

            # This node's own table unreachable: the next node that answers gives its own.
            await node2.start()
            await until(lambda: node2.sees("node1"), within=3)
            await node1.stop()
            await until(lambda: not node2.sees("node1"), within=3)
            code, rows = await _status(config)
            by_name = {row["node"]: row for row in rows}
            assert by_name["node1"]["state"] == "down" and by_name["node1"]["seen_by"] == "node2"
            assert by_name["node2"]["state"] == "up"

    asyncio.run(scenario())


def test_cluster_status_needs_the_cluster_secret(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path, node_name="node1", db_scheme="replication")
    assert asyncio.run(status(config, "json", io.StringIO())) == 1
