"""Money across nodes, the lab the cluster tests and ``bench/money.py`` share: the replicated
cluster of ``harness.py`` (three nodes on real MariaDB replication, node 1's database the
primary, one sipp supplier), a customer per experiment (its own account, peer address and the
0.60/min tariff billed 1/1, i.e. 0.01 a second) so experiments in one cluster do not share
money, and the cut of one node's bus traffic (nftables) the partition test and bench use."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from e2e.node import dump_yaml
from e2e.sipp import Sipp, SippOptions, free_port
from smartswitch.runtime.money import RESERVATIONS_PATH

from .harness import (
    ClusterNode,
    Sipps,
    bus_get,
    config_above,
    outbox_empty,
    replicated_cluster,
)
from .mariadb import wait_until

PER_SECOND = Decimal("0.0100")  # 0.60/min, 1/1: one increment
MIN_GRANT = 10
DB_HOSTS = ("127.0.0.1",) * 3


@dataclass
class MoneyCluster:
    members: list[ClusterNode]
    workdir: Path
    sipps: Sipps


@contextlib.contextmanager
def money_cluster(base: Path, **config: Any) -> Iterator[MoneyCluster]:
    """The three nodes started and whole (each hears the others' holdings); everything
    stopped by PID at the end."""
    settings = {
        "min_grant_seconds": MIN_GRANT,
        # sipp's uac_wait_bye leaves the switch's in-dialog OPTIONS unanswered: with the
        # default 60 s ping a call of over 60 s is ended 32 s later (Timer F), not by money
        # (the 92 s of the bench's one-node call before this).
        "dialog_ping_interval": 0,
        **config,
    }
    with replicated_cluster(base, DB_HOSTS, **settings) as made:
        sipps = Sipps(base)
        try:
            members = made.members
            wait_until(lambda: all(money_state(m)["whole"] for m in members), 30, "whole")
            yield MoneyCluster(members, base, sipps)
        finally:
            sipps.stop_all()


def money_state(member: ClusterNode) -> dict[str, Any]:
    """What ``member`` sees of the money across nodes (a signed GET on the bus)."""
    state: dict[str, Any] = bus_get(member.bus_address, member.name, RESERVATIONS_PATH)
    return state


NFT_TABLE = "smartswitch_money_test"


def nft_missing() -> bool:
    return shutil.which("nft") is None


@contextlib.contextmanager
def bus_cut(cluster: MoneyCluster, isolated: int) -> Iterator[None]:
    """Every bus packet (the nodes' HTTP ports) between node ``isolated`` (0-based) and the
    others dropped both ways, in a table of our own (SIP and the databases untouched); the
    table deleted at the end, whatever happened."""
    nodes = [m.node for m in cluster.members]
    cut = nodes[isolated]
    others = [n for i, n in enumerate(nodes) if i != isolated]
    addresses = ", ".join(n.http_host for n in others)
    ports = ", ".join(str(n.http_port) for n in others)
    rules = f"""
table inet {NFT_TABLE} {{
    chain out {{
        type filter hook output priority 0; policy accept;
        ip saddr {cut.http_host} ip daddr {{ {addresses} }} tcp dport {{ {ports} }} drop
        ip saddr {{ {addresses} }} ip daddr {cut.http_host} tcp dport {cut.http_port} drop
    }}
}}
"""
    _heal_bus()  # a table left by an interrupted run
    try:
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, timeout=10)
        yield
    finally:
        _heal_bus()


def _heal_bus() -> None:
    subprocess.run(
        ["nft", "delete", "table", "inet", NFT_TABLE],
        check=False,
        timeout=10,
        capture_output=True,
    )


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
