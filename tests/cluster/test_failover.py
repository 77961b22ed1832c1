"""Replacing a dead primary with running nodes: real MariaDB, real nodes, real sipp.

One cluster for the module (the tests run in order, each from where the last left it):
nodes on 127.0.0.11-.13, each with its own mariadbd on 127.0.0.61-.63; node1's is the primary.

1. node1's ``mariadbd`` SIGKILLed under 2 x 15 calls/s through node2 and node3, after an
   errant transaction was made on it on purpose (the replicas' IO threads stopped first: the
   CDRs delivered meanwhile are lost with it, and the outboxes must send them again);
   ``cluster promote`` makes the newest replica the primary; a configuration change is accepted
   there and reaches the routing of every live node; no call fails; every call sipp completed
   has exactly one CDR on the new primary; the audit is exact.
2. node1's ``mariadbd`` restarted: node1 sees the newer epoch and stays read-only, reports its
   errant transactions; ``cluster rejoin`` makes it a replica from a snapshot, and it converges.
3. ``cluster promote`` as a switchover (the primary alive): made read-only, drained, replaced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from functools import partial

import pytest

from e2e.sipp import completed_call_ids
from smartswitch.cluster.gtid import behind

from .harness import (
    ClusterNode,
    ReplicatedCluster,
    Sipps,
    balances_are,
    caller,
    cdr_call_ids,
    config_above,
    delivered,
    outbox_settled,
    replicated_cluster,
)
from .mariadb import MariaDBInstance, skip_without_mariadb, wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.e2e]

DB_HOSTS = ("127.0.0.61", "127.0.0.62", "127.0.0.63")
RATE = 15
SECONDS = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedCluster]:
    skip_without_mariadb()
    with replicated_cluster(tmp_path_factory.mktemp("failover"), DB_HOSTS) as made:
        yield made


def primary_of(cluster: ReplicatedCluster) -> ClusterNode:
    """The member whose database is writable and replicates from nobody."""
    for member in cluster.members:
        db = member.db
        if (
            db.is_running
            and not db.query("SELECT @@global.read_only")[0][0]
            and not db.query("SHOW SLAVE STATUS")
        ):
            return member
    raise AssertionError("no writable primary")


def epoch_at_least(member: ClusterNode, epoch: int) -> bool:
    return int(member.status()["db"]["epoch"]) >= epoch


def _position(db: MariaDBInstance) -> str:
    return str(db.query("SELECT @@global.gtid_current_pos")[0][0] or "")


def _routes_44(member: ClusterNode, sipps: Sipps, name: str) -> bool:
    result = caller(sipps, name, member.node, 1, 1, service="441234567", timeout_s=20).wait(30)
    return result.successful == 1


def test_primary_killed_under_load_a_replica_is_promoted_and_no_record_is_lost(
    cluster: ReplicatedCluster, sipps: Sipps, cluster_timings: dict[str, float]
) -> None:
    node1, node2, node3 = cluster.members
    for member in cluster.members:
        wait_until(partial(epoch_at_least, member, 1), 15, "epoch 1 everywhere")
    assert node1.status()["read_only"] is False
    callers = [
        caller(sipps, "via-node2", node2.node, calls=RATE * SECONDS, rate=RATE),
        caller(sipps, "via-node3", node3.node, calls=RATE * SECONDS, rate=RATE),
    ]
    for member in (node2, node3):
        wait_until(partial(delivered, member, 20), 30, "CDRs delivered to the primary")

    # The replicas stop receiving; what node1 takes now is errant: a marker written on
    # purpose, and the CDRs the nodes deliver meanwhile (their outboxes keep them: not seen in
    # their own replica).
    for db in (node2.db, node3.db):
        db.query("STOP SLAVE IO_THREAD")
    node1.db.query("CREATE TABLE smartswitch.errant_marker (id INT PRIMARY KEY)")
    before = {m.node.spec.config["node_name"]: int(m.status()["delivered"]) for m in (node2, node3)}
    wait_until(
        lambda: all(
            int(m.status()["delivered"]) > before[m.node.spec.config["node_name"]]
            for m in (node2, node3)
        ),
        15,
        "CDRs delivered to node1 after the replicas stopped receiving",
    )
    node1.db.kill()
    killed = time.monotonic()

    # The newest replica is the candidate (the other may have received a little less).
    pos2, pos3 = _position(node2.db), _position(node3.db)
    new = node3 if behind(pos2, pos3) else node2
    promoted = new.cli("cluster", "promote", new.node.spec.config["node_name"], check=False)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "primary of epoch 2" in promoted.stdout, promoted.stdout
    cluster_timings["failover: SIGKILL to promoted (manual)"] = time.monotonic() - killed
    version = int(new.status()["config_version"])
    wait_until(lambda: new.status()["read_only"] is False, 10, "the new primary writable")
    changed = cluster.change_config(new)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    accepted = time.monotonic() - killed
    cluster_timings["failover: SIGKILL to config change accepted"] = accepted
    assert accepted < 20, accepted
    for member in (node2, node3):
        wait_until(partial(config_above, member, version), 10, "the change reaches the node")
        wait_until(partial(epoch_at_least, member, 2), 10, "epoch 2 on the node")
    assert _routes_44(node2, sipps, "uk-node2") and _routes_44(node3, sipps, "uk-node3")

    results = [c.wait(timeout=180) for c in callers]
    for result in results:
        assert result.failed == 0, result.describe()
    finished: set[str] = set()
    for result in results:
        finished |= completed_call_ids(result.received)
    assert len(finished) == 2 * RATE * SECONDS
    for member in (node2, node3):
        wait_until(partial(outbox_settled, member), 60, "every outbox confirmed")
    ids = cdr_call_ids(new.db)
    assert finished <= set(ids), sorted(finished - set(ids))[:5]
    assert len(ids) == len(set(ids))  # one CDR per call (plus the two 44 calls)
    requeued = sum(int(m.status().get("requeued", 0)) for m in (node2, node3))
    assert requeued > 0, "no CDR was sent again, but some reached only the dead primary"
    audit = new.cli("audit", "--database-url", new.db.url, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    expected = new.balances()
    for member in (node2, node3):
        wait_until(partial(balances_are, member, expected), 30, "balances converge")


def test_old_primary_restarted_stays_read_only_reports_errant_and_rejoins(
    cluster: ReplicatedCluster, sipps: Sipps
) -> None:
    node1 = cluster.member("node1")
    primary = primary_of(cluster)
    node1.db.start()
    wait_until(lambda: node1.status()["read_only"] is True, 20, "node1 fenced")

    def errant_reported() -> bool:
        return "errant transactions 0-1-" in str(node1.status()["db"]["last_error"])

    wait_until(errant_reported, 20, "node1 reports its errant transactions")
    assert node1.db.query("SELECT @@global.read_only")[0][0] == 1
    refused = cluster.change_config(node1)
    assert refused.returncode != 0 and "not writable" in refused.stderr, refused.stderr

    rejoined = node1.cli("cluster", "rejoin", check=False)
    assert rejoined.returncode == 0, rejoined.stdout + rejoined.stderr
    assert "errant transactions" in rejoined.stdout and "0-1-" in rejoined.stdout
    assert f"a replica of {primary.node.spec.config['node_name']}" in rejoined.stdout
    wait_until(lambda: node1.status()["db"]["role"] == "replica", 10, "node1 a replica")
    assert not node1.db.query(
        "SELECT 1 FROM information_schema.tables WHERE table_name = 'errant_marker'"
    )
    version = int(primary.status()["config_version"])
    wait_until(lambda: int(node1.status()["config_version"]) == version, 10, "config converges")
    expected = primary.balances()
    wait_until(partial(balances_are, node1, expected), 30, "balances converge")
    assert _routes_44(node1, sipps, "uk-node1")
    assert sorted(cdr_call_ids(node1.db)) == sorted(cdr_call_ids(primary.db))


def test_switchover_by_hand(cluster: ReplicatedCluster, sipps: Sipps) -> None:
    old = primary_of(cluster)
    target = next(m for m in cluster.members if m is not old)
    name = target.node.spec.config["node_name"]
    traffic = caller(sipps, "during-switchover", target.node, calls=60, rate=10)
    wait_until(partial(delivered, target, 5), 30, "calls delivered before the switchover")
    done = old.cli("cluster", "promote", name, "--reason", "maintenance", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read-only and drained" in done.stdout and "rejoined as a replica" in done.stdout
    wait_until(lambda: target.status()["read_only"] is False, 10, "the target writable")
    changed = cluster.change_config(target)
    assert changed.returncode == 0, changed.stderr
    refused = cluster.change_config(old)
    assert refused.returncode != 0
    result = traffic.wait(timeout=60)
    assert result.failed == 0, result.describe()
    for member in cluster.members:
        wait_until(partial(outbox_settled, member), 30, "outboxes confirmed")
    ids = cdr_call_ids(target.db)
    assert completed_call_ids(result.received) <= set(ids)
    assert len(ids) == len(set(ids))
    for member in cluster.members:
        wait_until(partial(balances_are, member, target.balances()), 30, "balances converge")
    assert Decimal(0) < Decimal(1000) - target.balances()["acme"]
