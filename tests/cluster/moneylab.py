"""Money across nodes, the lab the cluster tests and ``bench/money.py`` share: three nodes on
real MariaDB replication (node 1's database the primary), one sipp supplier, and a customer
per experiment (its own account, peer address and the 0.60/min tariff billed 1/1, i.e. 0.01 a
second), so experiments in one cluster do not share money."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from e2e.node import dump_yaml
from e2e.sipp import Sipp, SippOptions, free_port
from smartswitch.cluster.bus import BusClient, Peer
from smartswitch.cluster.signing import Signer, derive_key
from smartswitch.runtime.money import RESERVATIONS_PATH

from .harness import (
    NODE_IPS,
    SECRET,
    ClusterNode,
    Sipps,
    cluster_member,
    config_above,
    outbox_empty,
    provisioning,
    start_supplier,
)
from .mariadb import MariaDBInstance, wait_until

PER_SECOND = Decimal("0.0100")  # 0.60/min, 1/1: one increment
MIN_GRANT = 10


@dataclass
class MoneyCluster:
    members: list[ClusterNode]
    workdir: Path
    sipps: Sipps


@contextlib.contextmanager
def money_cluster(base: Path, **config: Any) -> Iterator[MoneyCluster]:
    """The three nodes started and whole (each hears the others' holdings); everything
    stopped by PID at the end."""
    sipps = Sipps(base)
    dbs: list[MariaDBInstance] = []
    members: list[ClusterNode] = []
    try:
        supplier = start_supplier(sipps)
        for i in range(3):
            db = MariaDBInstance(base, f"db{i + 1}", server_id=i + 1)
            dbs.append(db)
            db.initialize()
            db.start()
        members = [
            cluster_member(
                base / f"node{i + 1}",
                ip,
                f"node{i + 1}",
                db,
                db_scheme="replication",
                primary_database_url=dbs[0].url,
                min_grant_seconds=MIN_GRANT,
                **config,
            )
            for i, (ip, db) in enumerate(zip(NODE_IPS, dbs, strict=True))
        ]
        dbs[0].create_database()
        members[0].cli("cluster", "init-primary")
        document = base / "provision.yaml"
        document.write_text(provisioning(supplier.options.local_port))
        members[0].cli("provision", str(document))
        for member in members[1:]:
            member.cli("cluster", "add-replica")
        for member in members:
            member.node.start()
        wait_until(lambda: all(money_state(m)["whole"] for m in members), 30, "cluster whole")
        yield MoneyCluster(members, base, sipps)
    finally:
        sipps.stop_all()
        for member in members:
            if member.node.running:
                member.node.stop()
        for db in dbs:
            db.stop()


def money_state(member: ClusterNode) -> dict[str, Any]:
    """What ``member`` sees of the money across nodes (a signed GET on the bus)."""
    name = str(member.node.spec.config["node_name"])
    asker = "node1" if name != "node1" else "node2"

    async def ask() -> dict[str, Any]:
        client = BusClient(Signer(asker, derive_key(SECRET)), timeout=2)
        try:
            address = f"{member.node.http_host}:{member.node.http_port}"
            state: dict[str, Any] = await client.get(Peer(name, address), RESERVATIONS_PATH)
            return state
        finally:
            await client.aclose()

    return asyncio.run(ask())


_CUSTOMERS = itertools.count(1)


@dataclass
class Customer:
    name: str
    ip: str


def new_customer(cluster: MoneyCluster, balance: str, reserve_seconds: int) -> Customer:
    """An account with ``balance`` and its own slice, its customer peer on a fresh address,
    provisioned on the primary and loaded by every node."""
    n = next(_CUSTOMERS)
    customer = Customer(f"money{n}", f"127.0.0.{40 + n}")
    document = cluster.workdir / f"customer{n}.yaml"
    document.write_text(
        dump_yaml(
            {
                "accounts": [
                    {
                        "name": customer.name,
                        "currency": "USD",
                        "balance": balance,
                        "reserve_seconds": reserve_seconds,
                    }
                ],
                "tariffs": [
                    {
                        "name": "per-second",
                        "rates": [
                            {"prefix": "1", "price_per_minute": "0.6000", "increment": "1/1"}
                        ],
                    }
                ],
                "peers": [
                    {
                        "name": f"{customer.name}-trunk",
                        "role": "customer",
                        "account": customer.name,
                        "tariff": "per-second",
                        "acl": [f"{customer.ip}/32"],
                    }
                ],
            }
        )
    )
    versions = [int(m.status()["config_version"]) for m in cluster.members]
    cluster.members[0].cli("provision", str(document))
    for member, version in zip(cluster.members, versions, strict=True):
        wait_until(partial(config_above, member, version), 15, "the customer reaches the node")
    return customer


def call(
    cluster: MoneyCluster,
    customer: Customer,
    member: ClusterNode,
    name: str,
    *,
    scenario: str = "uac_wait_bye",
    calls: int = 1,
    rate: float = 1,
    duration_ms: int | None = None,
    recv_timeout_ms: int = 150_000,
) -> Sipp:
    """sipp calls from the customer through ``member`` (by default one call that waits for
    the switch to cut it)."""
    return cluster.sipps.start(
        name,
        SippOptions(
            scenario=scenario,
            local_ip=customer.ip,
            local_port=free_port(customer.ip),
            remote=member.node.sip_address,
            service="15551234567",
            calls=calls,
            rate=rate,
            duration_ms=duration_ms,
            timeout_s=180,
            recv_timeout_ms=recv_timeout_ms,
        ),
    )


def settled_balance(cluster: MoneyCluster, customer: Customer) -> Decimal:
    """The account's balance on the primary once every node delivered its CDRs."""
    for member in cluster.members:
        wait_until(partial(outbox_empty, member), 30, "outbox drained")
    return cluster.members[0].balances()[customer.name]


def audit(cluster: MoneyCluster) -> tuple[int, str]:
    primary = cluster.members[0]
    done = primary.cli("audit", "--database-url", primary.db.url, check=False)
    return done.returncode, done.stdout + done.stderr


def cdrs_of(cluster: MoneyCluster, customer: Customer) -> list[tuple[Any, ...]]:
    """(billed seconds, price, hangup reason) of the customer's CDRs, on the primary."""
    return cluster.members[0].db.query(
        "SELECT c.billed_seconds, c.price, c.hangup_reason FROM cdrs c "
        "JOIN accounts a ON a.id = c.customer_account_id WHERE a.name = %s",
        (customer.name,),
        database="smartswitch",
    )
