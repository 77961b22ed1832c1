"""Automatic promotion, run by the nodes: real etcd (one member per node, supervised by the
node), real MariaDB, real sipp.

One cluster for the module, the tests in order: nodes on 127.0.0.11-.13 with
``failover = "automatic"``, each with its own mariadbd (127.0.0.71-.73) and its own etcd
member on its dedicated IP.

1. The primary's ``mariadbd`` SIGKILLed under 2 x 15 calls/s through the other two nodes:
   the nodes promote the newest replica by themselves within 20 s; a configuration change is
   accepted there and reaches every live node's routing; no call fails; every completed call
   has exactly one CDR on the new primary; the audit is exact. The old primary's database,
   restarted, stays read-only; ``cluster rejoin`` makes it a replica and it converges.
2. A second failure within the anti-flap period: no automatic promotion (the Cluster page's
   failover column says why); ``cluster promote`` by hand works.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from functools import partial

import pytest

from e2e.sipp import completed_call_ids

from .harness import (
    ClusterNode,
    ReplicatedCluster,
    Sipps,
    balances_are,
    caller,
    cdr_call_ids,
    config_above,
    delivered,
    etcd_settings,
    outbox_settled,
    replicated_cluster,
)
from .mariadb import skip_without_mariadb, wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.etcd, pytest.mark.e2e]

DB_HOSTS = ("127.0.0.71", "127.0.0.72", "127.0.0.73")
RATE = 15
SECONDS = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedCluster]:
    skip_without_mariadb()
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (Debian etcd-server)")
    workdir = tmp_path_factory.mktemp("autofailover")
    with replicated_cluster(workdir, DB_HOSTS, **etcd_settings()) as made:
        yield made


def _failover_text(member: ClusterNode) -> str:
    return str(member.status()["db"].get("failover", ""))


def _holds_lease(member: ClusterNode) -> bool:
    return "holds the leader lease" in _failover_text(member)


def test_primary_killed_under_load_is_replaced_automatically(
    cluster: ReplicatedCluster, sipps: Sipps, cluster_timings: dict[str, float]
) -> None:
    node1, node2, node3 = cluster.members
    wait_until(partial(_holds_lease, node1), 60, "node1 (the primary) holds the leader lease")
    callers = [
        caller(sipps, "via-node2", node2.node, calls=RATE * SECONDS, rate=RATE),
        caller(sipps, "via-node3", node3.node, calls=RATE * SECONDS, rate=RATE),
    ]
    for member in (node2, node3):
        wait_until(partial(delivered, member, 20), 30, "CDRs delivered to the primary")
    node1.db.kill()
    killed = time.monotonic()

    def promoted() -> ClusterNode | None:
        found = [m for m in cluster.writable() if m is not node1]
        return found[0] if found else None

    wait_until(promoted, 20, "a replica promoted by the nodes")
    new = promoted()
    assert new is not None
    cluster_timings["auto failover: SIGKILL to a writable new primary"] = time.monotonic() - killed
    version = int(new.status()["config_version"])
    changed = cluster.change_config(new)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    accepted = time.monotonic() - killed
    cluster_timings["auto failover: SIGKILL to config change accepted"] = accepted
    assert accepted < 20, accepted
    for member in (node2, node3):
        wait_until(partial(config_above, member, version), 10, "the change reaches the node")
    history = new.db.query(
        "SELECT node, previous_node, automatic FROM promotions ORDER BY epoch DESC LIMIT 1",
        database="smartswitch",
    )
    assert history[0][1:] == ("node1", 1), history

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
    assert len(ids) == len(set(ids))
    audit = new.cli("audit", "--database-url", new.db.url, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr

    # The old primary comes back: read-only, then a replica by hand.
    node1.db.start()
    wait_until(lambda: node1.status()["read_only"] is True, 20, "node1 stays read-only")
    assert node1 not in cluster.writable()
    rejoined = node1.cli("cluster", "rejoin", check=False)
    assert rejoined.returncode == 0, rejoined.stdout + rejoined.stderr
    wait_until(lambda: node1.status()["db"]["role"] == "replica", 10, "node1 a replica")
    expected = new.balances()
    for member in cluster.members:
        wait_until(partial(balances_are, member, expected), 30, "balances converge")


def test_second_failure_within_anti_flap_is_not_promoted_automatically(
    cluster: ReplicatedCluster, cluster_timings: dict[str, float]
) -> None:
    (primary,) = cluster.writable()
    wait_until(partial(_holds_lease, primary), 30, "the new primary holds the leader lease")
    survivors = [m for m in cluster.members if m is not primary]
    primary.db.kill()
    # Long enough for a promotion to have happened (the first took well under this).
    time.sleep(15)
    assert cluster.writable() == [], "promoted automatically within the anti-flap period"
    assert any("anti-flap" in _failover_text(m) for m in survivors), [
        _failover_text(m) for m in survivors
    ]
    target = survivors[0]
    name = str(target.node.spec.config["node_name"])
    started = time.monotonic()
    done = target.cli("cluster", "promote", name, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promotion by hand recorded" in done.stdout
    # Configuration is taken only by the node holding the primary lease (the write fence):
    # the command returns once the promoted node's lease round took it.
    assert f"etcd: {name} holds the leader lease" in done.stdout, done.stdout
    wait_until(partial(_holds_lease, target), 5, "the promoted node reports the leader lease")
    changed = cluster.change_config(target)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    cluster_timings["manual promotion after anti-flap refusal"] = time.monotonic() - started
