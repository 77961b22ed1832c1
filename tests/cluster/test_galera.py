"""The multi-primary scheme (experimental): three Galera nodes, each smartswitch node writing to
its own. Configuration is editable on any node in the primary component; a node that lost its
database keeps serving calls through its outbox and refuses configuration changes."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from e2e.sipp import Sipp

from .harness import (
    NODE_IPS,
    ClusterNode,
    Sipps,
    balances_are,
    caller,
    cluster_member,
    provisioning,
    start_supplier,
)
from .mariadb import GaleraCluster, wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.e2e]


@pytest.fixture
def galera_nodes(
    tmp_path: Path, galera_cluster: GaleraCluster, sipps: Sipps
) -> Iterator[tuple[list[ClusterNode], Sipp]]:
    supplier = start_supplier(sipps)
    members = [
        cluster_member(
            tmp_path / f"node{i + 1}", ip, f"galera{i + 1}", galera_cluster[i], db_scheme="galera"
        )
        for i, ip in enumerate(NODE_IPS)
    ]
    galera_cluster[0].create_database()
    for i in range(1, 3):
        wait_until(
            partial(galera_cluster[i].query, "SHOW DATABASES LIKE 'smartswitch'"),
            10,
            "the database reaches every Galera node",
        )
    document = tmp_path / "provision.yaml"
    document.write_text(provisioning(supplier.options.local_port))
    members[0].cli("provision", str(document))
    for member in members:
        member.node.start()
    yield members, supplier
    for member in members:
        if member.node.running:
            member.node.stop()


def test_config_edited_on_any_node_and_a_killed_node_does_not_stop_the_others(
    galera_nodes: tuple[list[ClusterNode], Sipp],
    galera_cluster: GaleraCluster,
    sipps: Sipps,
    tmp_path: Path,
) -> None:
    members, supplier = galera_nodes
    for member in members:
        status = member.status()
        assert status["read_only"] is False, status
        assert status["db"]["role"] == "galera"

    # Edited on node 3, seen by node 1's routing.
    version = members[0].status()["config_version"]
    changed = tmp_path / "change.yaml"
    changed.write_text(
        provisioning(
            supplier.options.local_port,
            [{"prefix": "44", "price_per_minute": "0.0200", "increment": "1/1"}],
        )
    )
    members[2].cli("provision", str(changed))
    wait_until(lambda: members[0].status()["config_version"] > version, 5, "config on node 1")
    ok = caller(sipps, "uk", members[0].node, 2, 2, service="441234567").wait()
    assert ok.successful == 2, ok.describe()

    # Node 3's database dies: nodes 1 and 2 keep working, node 3 keeps calling through its
    # outbox and refuses configuration.
    galera_cluster[2].kill()
    wait_until(lambda: members[2].status()["read_only"] is True, 10, "node 3 read-only")
    traffic = [
        caller(sipps, f"after-kill-{i}", m.node, calls=20, rate=10) for i, m in enumerate(members)
    ]
    results = [t.wait(timeout=60) for t in traffic]
    for result in results:
        assert result.failed == 0, result.describe()
    assert members[2].status()["outbox_depth"] > 0
    refused = members[2].cli("provision", str(changed), check=False)
    assert refused.returncode != 0
    members[1].cli("provision", str(changed))  # still editable on a node with quorum

    # Node 3's database is back: its outbox drains into it and Galera spreads the money.
    galera_cluster.start_node(2)
    galera_cluster.wait_synced()
    wait_until(lambda: members[2].status()["outbox_depth"] == 0, 30, "node 3 outbox drained")
    completed = 2 + sum(r.successful for r in results)
    rows = galera_cluster[0].query("SELECT COUNT(*) FROM cdrs", database="smartswitch")
    assert rows[0][0] == completed
    expected = members[0].balances()
    for member in members:
        wait_until(partial(balances_are, member, expected), 15, "balances converge")
    audit = members[0].cli("audit", check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
