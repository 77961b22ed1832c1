"""A node that joins while the dispatcher runs takes its share of the calls at once, none
refused: the replication scheme, where a node registers itself on the primary only when it
starts, on 127.0.0.11-12 (a MariaDB primary and a GTID replica), the dispatcher on node 1 in
proxy mode at 127.0.0.20, real sipp.

The race this guards: node 2's heartbeats reach node 1 at once, so node 1's dispatcher sees it
up and forwards it calls, but node 1 starts sending heartbeats to node 2 only at its next peer
refresh (up to 5 s, once replication brought node 2's row). A node that believed the source
header only from the members it had heard refused those calls (the caller taken for node 1's
address: no customer there; bench/dispatch.py lost 43 calls of 500 so). It now believes the
members of the ``nodes`` table, which replication brought before it started.

The load balancing itself (both modes, 3 000 calls, a node killed, a forged header, tokens)
is tested across network namespaces with the shared IP: tests/ha/test_dispatch_nodes.py.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e.sipp import SippOptions, free_port

from .harness import (
    CUSTOMER_IP,
    DIALLED,
    NODE_IPS,
    ClusterNode,
    Sipps,
    cluster_member,
    provisioning,
    start_supplier,
)
from .mariadb import MariaDBInstance, skip_without_mariadb, wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.e2e]

DISPATCH_IP = "127.0.0.20"
CALLS = 500
RATE = 100


@dataclass
class Cluster:
    members: list[ClusterNode]
    dispatch: str
    sipps: Sipps


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    skip_without_mariadb()
    tmp = tmp_path_factory.mktemp("dispatch")
    sipps = Sipps(tmp)
    dbs = [MariaDBInstance(tmp, f"db{i + 1}", server_id=i + 1) for i in range(2)]
    members: list[ClusterNode] = []
    dispatch = f"{DISPATCH_IP}:{free_port(DISPATCH_IP)}"
    try:
        for db in dbs:
            db.initialize()
            db.start()
        supplier = start_supplier(sipps)
        members = [
            cluster_member(
                tmp / f"node{i + 1}",
                ip,
                f"node{i + 1}",
                db,
                db_scheme="replication",
                primary_database_url=dbs[0].url,
                capacity=1000,
                **({"dispatch_mode": "proxy", "dispatch_listen": dispatch} if i == 0 else {}),
            )
            for i, (ip, db) in enumerate(zip(NODE_IPS[:2], dbs, strict=True))
        ]
        dbs[0].create_database()
        members[0].cli("cluster", "init-primary")
        document = tmp / "provision.yaml"
        document.write_text(provisioning(supplier.options.local_port))
        members[0].cli("provision", str(document))
        members[1].cli("cluster", "add-replica")
        yield Cluster(members, dispatch, sipps)
    finally:
        sipps.stop_all()
        for member in members:
            if member.node.running:
                member.node.stop()
        for db in dbs:
            if db.is_running:
                db.stop()


def _counters(member: ClusterNode, name: str, label: str) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{member.bus_address}/metrics", timeout=2) as answer:
        text = answer.read().decode()
    found = re.findall(rf'{name}\{{{label}="([^"]+)"\}} (\d+)', text)
    return {key: int(count) for key, count in found}


def test_a_node_joining_takes_forwarded_calls_as_soon_as_the_dispatcher_sees_it_up(
    cluster: Cluster,
) -> None:
    node1, node2 = cluster.members
    node1.node.start()
    wait_until(lambda: node1.members().get("node1", {}).get("up"), 30, "node 1 up")
    node2.node.start()
    # Only the dispatcher's view: from this moment it forwards node 2 its share.
    wait_until(lambda: node1.members().get("node2", {}).get("up"), 30, "node 2 up on node 1")
    sipp = cluster.sipps.start(
        "joiner",
        SippOptions(
            scenario="uac",
            local_ip=CUSTOMER_IP,
            local_port=free_port(CUSTOMER_IP),
            remote=cluster.dispatch,
            service=DIALLED,
            calls=CALLS,
            rate=RATE,
            duration_ms=200,
            timeout_s=60,
            recv_timeout_ms=10000,
            trace_messages=False,
        ),
    )
    result = sipp.wait(timeout=90)
    chosen = _counters(node1, "smartswitch_dispatch_chosen_total", "node")
    gate = _counters(node2, "smartswitch_dispatch_gate_total", "outcome")
    print(f"\nnode 2 joining: chosen {chosen}, node 2's gate {gate}; {result.describe()}")
    assert chosen.get("node2", 0) >= CALLS // 3, chosen
    # Every forwarded INVITE believed (retransmissions included), none taken for forged.
    assert gate.get("forged_header", 0) == 0, gate
    assert gate.get("forwarded", 0) >= chosen["node2"], gate
    assert result.failed == 0 and result.successful == CALLS, result.describe()
