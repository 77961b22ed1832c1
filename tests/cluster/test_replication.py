"""The replication scheme end to end: real MariaDB primary and replicas, real nodes, real sipp.

Addresses: nodes on 127.0.0.11, .12, .13 (each its own dedicated IP), the customer's sipp on
127.0.0.21, the supplier's sipp on 127.0.0.31. Each node has its own mariadbd; node 1's is the
primary, the others GTID replicas set up by ``smartswitch cluster add-replica``.

One cluster for the module: the tests run in order, each from where the last left it (a
selling rate for 44 added, the primary's database stopped and back, node 2 killed and
restarted), and count what they add themselves (CDRs, balances) rather than totals.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest

from e2e.node import dump_yaml
from e2e.sipp import SCENARIOS, SippOptions, completed_call_ids, free_port

from .harness import (
    ClusterNode,
    ReplicatedCluster,
    Sipps,
    balances_are,
    caller,
    cdr_call_ids,
    config_above,
    delivered,
    has_binding,
    outbox_empty,
    provisioning,
    replicated_cluster,
)
from .mariadb import skip_without_mariadb, wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.e2e]

DB_HOSTS = ("127.0.0.1",) * 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedCluster]:
    skip_without_mariadb()
    with replicated_cluster(tmp_path_factory.mktemp("replication"), DB_HOSTS) as made:
        yield made


def cdr_counts(primary: ClusterNode) -> tuple[int, int]:
    """The CDRs on the primary, and their distinct Call-IDs."""
    call_ids = cdr_call_ids(primary.db)
    return len(call_ids), len(set(call_ids))


def test_config_change_on_primary_reaches_replicas_and_their_routing(
    cluster: ReplicatedCluster, sipps: Sipps, tmp_path: Path
) -> None:
    members, supplier = cluster.members, cluster.supplier
    primary, replica2, replica3 = members
    assert primary.status()["read_only"] is False
    for replica in (replica2, replica3):
        status = replica.status()
        assert status["read_only"] is True
        assert status["db"]["role"] == "replica"
        assert status["db"]["io_running"] == "Yes"

    # Every node registered itself on the primary; replication told the others.
    def every_node_listed() -> bool:
        done = replica3.cli("cluster", "status", "--format", "json", check=False)
        rows = json.loads(done.stdout or "[]")
        return done.returncode == 0 and len(rows) == 3

    wait_until(every_node_listed, 15, "cluster status lists three reachable nodes")
    table = replica3.cli("cluster", "status").stdout
    assert "node1" in table and "primary" in table and table.count("replica") == 2, table

    # No selling rate for 44 yet: 404 on a replica.
    refused = caller(sipps, "uk-before", replica3.node, 1, 1, service="441234567").wait()
    assert refused.successful == 0

    # The change is made on the primary; replicas refuse it.
    changed = tmp_path / "change.yaml"
    changed.write_text(
        provisioning(
            supplier.options.local_port,
            [{"prefix": "44", "price_per_minute": "0.0200", "increment": "1/1"}],
        )
    )
    done = replica2.cli("provision", str(changed), check=False)
    assert done.returncode != 0 and "primary" in done.stderr
    version = primary.status()["config_version"]
    started = time.monotonic()
    primary.cli("provision", str(changed))
    for replica in (replica2, replica3):
        wait_until(partial(config_above, replica, version), 10, "config reaches replica")
    took = time.monotonic() - started
    assert took < 2.0 + 1.0, f"configuration took {took:.2f} s to reach every node"
    ok = caller(sipps, "uk-after", replica3.node, 2, 2, service="441234567").wait()
    assert ok.successful == 2, ok.describe()

    # The audit log replicates like configuration (issue 14, item 5): every replica shows the
    # change made on the primary, who made it and how, entry for entry as the primary does.
    def audit(member: ClusterNode) -> list[dict[str, object]]:
        out = member.cli("audit-log", "export", "--format", "json", "--entity", "tariff").stdout
        return [json.loads(line) for line in out.splitlines()]

    expected = audit(primary)
    last = expected[-1]
    assert (last["action"], last["entity"], last["name"], last["actor"]) == (
        "update",
        "tariff",
        "retail",
        "provision",
    ), last
    for replica in (replica2, replica3):
        assert audit(replica) == expected


def test_primary_down_calls_keep_flowing_and_money_arrives_once(
    cluster: ReplicatedCluster, sipps: Sipps
) -> None:
    members = cluster.members
    primary, node2, node3 = members
    # What the module's earlier tests left: their CDRs delivered, counted before this one's.
    for member in members:
        wait_until(partial(outbox_empty, member), 30, "earlier CDRs delivered")
    before = cdr_counts(primary)
    start_balance = node2.status()["balances"]["acme"]
    delivered_before = [int(m.status()["delivered"]) for m in (node2, node3)]
    callers = [
        caller(sipps, "via-node2", node2.node, calls=240, rate=10),
        caller(sipps, "via-node3", node3.node, calls=240, rate=10),
    ]
    # Calls flow through both nodes and their CDRs reach the primary; then it goes away.
    for member, already in zip((node2, node3), delivered_before, strict=True):
        wait_until(partial(delivered, member, already + 10), 30, "CDRs delivered to the primary")
    primary.db.stop()
    outage_started = time.monotonic()
    falling: list[Decimal] = []
    depths: list[int] = []
    while time.monotonic() - outage_started < 8:
        status = node2.status()
        falling.append(Decimal(status["balances"]["acme"]))
        depths.append(int(status["outbox_depth"]))
        time.sleep(1)
    primary.db.start()
    results = [c.wait(timeout=120) for c in callers]
    for result in results:
        assert result.failed == 0, result.describe()
    completed = sum(r.successful for r in results)
    assert completed == 480

    # During the outage the node kept charging from its own outbox.
    assert max(depths) > 0, depths
    assert falling == sorted(falling, reverse=True) and falling[-1] < falling[0], falling
    assert Decimal(start_balance) > falling[-1]

    # The primary is back: every outbox drains, every replica converges.
    for member in members:
        wait_until(partial(outbox_empty, member), 30, "outbox drained")
    expected = primary.balances()
    for member in members:
        wait_until(partial(balances_are, member, expected), 30, "balances converge")
    # Exactly once: one CDR per completed call, none twice, however the outage cut delivery.
    assert cdr_counts(primary) == (before[0] + completed, before[1] + completed)
    audit = primary.cli("audit", "--database-url", primary.db.url, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert expected["acme"] < Decimal("1000.0000")


def test_node_killed_mid_traffic_loses_no_cdr_of_a_finished_call(
    cluster: ReplicatedCluster, sipps: Sipps
) -> None:
    members = cluster.members
    primary, node2, _ = members
    already = int(node2.status()["delivered"])  # the module's earlier tests' CDRs
    traffic = caller(sipps, "killed", node2.node, calls=100, rate=20, timeout_s=30)
    wait_until(partial(delivered, node2, already + 20), 30, "calls finished and delivered")
    node2.node.kill()
    result = traffic.wait(timeout=60)
    finished = completed_call_ids(result.received)
    assert finished, "no call finished before the kill"
    node2.node.start()
    wait_until(lambda: node2.status()["outbox_depth"] == 0, 30, "outbox drained")
    recorded = set(cdr_call_ids(primary.db))
    assert finished <= recorded, sorted(finished - recorded)[:5]
    audit = primary.cli("audit", "--database-url", primary.db.url, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr


PHONE_IP = "127.0.0.22"
PROVIDER_IP = "127.0.0.23"
DID = "15550001000"


def test_phone_registered_on_one_node_gets_the_did_calls_arriving_on_another(
    cluster: ReplicatedCluster, sipps: Sipps, tmp_path: Path
) -> None:
    members = cluster.members
    primary, _, node3 = members
    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text(
        dump_yaml(
            {
                "accounts": [{"name": "alice-acct", "currency": "USD", "balance": "10"}],
                "peers": [
                    {
                        "name": "did-provider",
                        "role": "supplier",
                        "account": "carrier",
                        "address": f"{PROVIDER_IP}:5060",
                        "acl": [PROVIDER_IP],
                        "deliver_dids": True,
                    }
                ],
                "subscribers": [
                    {"username": "alice", "password": "alice-phone-pass-7", "account": "alice-acct"}
                ],
                "dids": [{"number": DID, "subscriber": "alice"}],
            }
        )
    )
    version = primary.status()["config_version"]
    primary.cli("provision", str(subscribers))
    wait_until(partial(config_above, node3, version), 10, "subscribers reach node 3")
    # The phone registers on node 1: it must have loaded them too (its own poll, not node 3's).
    wait_until(partial(config_above, primary, version), 10, "subscribers loaded on node 1")

    phone = sipps.start(
        "phone",
        SippOptions(
            scenario="reg_phone",
            local_ip=PHONE_IP,
            local_port=free_port(PHONE_IP),
            remote=primary.node.sip_address,  # registers on node 1
            service="alice",
            calls=1,
            duration_ms=8000,
            timeout_s=40,
            keys={"expires": "600"},
            extra=(
                "-au",
                "alice",
                "-ap",
                "alice-phone-pass-7",
                "-oocsf",
                str(SCENARIOS / "did_phone_answer.xml"),
            ),
        ),
    )
    wait_until(partial(has_binding, node3, "alice"), 10, "alice's binding pushed to node 3")
    provider = caller(
        sipps, "provider", node3.node, 1, 1, service=DID, duration_ms=500, ip=PROVIDER_IP
    )
    provider_result = provider.wait(timeout=30)
    phone_result = phone.wait(timeout=60)
    assert provider_result.successful == 1, provider_result.describe()
    invites = phone_result.received_requests("INVITE")
    assert len(invites) == 1, phone_result.describe()
    assert DID in (invites[0].header("to") or "")
