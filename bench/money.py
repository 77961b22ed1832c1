#!/usr/bin/env python3
"""Money across nodes: how soon a grant on one node is seen by the others, and how much a
prepaid balance is overspent with calls through 1, 2 and 3 nodes at once.

Builds the lab of ``tests/cluster/test_money.py`` (``tests/cluster/moneylab.py``: three
private ``mariadbd`` in GTID replication, three nodes on 127.0.0.11-13, a sipp supplier) and
measures, in one run:

1. **visibility**: ``--grants`` short calls through nodes 2 and 3 in turn on a large balance;
   every grant, slice extension and end is published on the bus at once. Each node records,
   for every publication that carries a change, the time from the change on the publisher to
   its receipt (one host, one clock): median, 90th percentile and max over all nodes. The
   reference, taken in the same run: a signed bus request's round trip (``GET
   /cluster/reservations``) from this process to node 2.
2. **overspend**: a balance of 1.00 at 0.60/min billed 1/1 (100 s of calls), 10 s slices; one
   call through each of 1, 2 and 3 nodes at once, each waiting for the switch to cut it; the
   balance the primary settles on (after every outbox drained) and the seconds billed.
   Before money was cluster state the same with two nodes ended at -0.84.

Traffic stays on 127.0.0.0/8; every load is bounded in calls and time; every process started
here is stopped by its PID (also on Ctrl-C). Run it alone, under the heavy lock:

    flock /tmp/ss-heavy.lock env PYTHONPATH=$PWD/src .venv/bin/python bench/money.py

Results: a table on stdout, JSON in bench/results/ (git-ignored), logs beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import save_results, start_run  # noqa: E402
from cluster.harness import SECRET  # noqa: E402
from cluster.mariadb import missing_programs  # noqa: E402
from cluster.moneylab import (  # noqa: E402
    MoneyCluster,
    audit,
    call,
    cdrs_of,
    money_cluster,
    money_state,
    new_customer,
    settled_balance,
)
from smartswitch.cluster.bus import BusClient, Peer  # noqa: E402
from smartswitch.cluster.signing import Signer, derive_key  # noqa: E402
from smartswitch.runtime.money import RESERVATIONS_PATH  # noqa: E402


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def bus_round_trip(cluster: MoneyCluster, rounds: int = 50) -> list[float]:
    member = cluster.members[1]
    peer = Peer("node2", f"{member.node.http_host}:{member.node.http_port}")

    async def measure() -> list[float]:
        client = BusClient(Signer("node1", derive_key(SECRET)), timeout=2)
        times = []
        try:
            for _ in range(rounds):
                started = time.perf_counter()
                await client.get(peer, RESERVATIONS_PATH)
                times.append(time.perf_counter() - started)
        finally:
            await client.aclose()
        return times

    return asyncio.run(measure())


def visibility(cluster: MoneyCluster, grants: int) -> dict[str, Any]:
    before = {i: len(money_state(m)["lags"]) for i, m in enumerate(cluster.members)}
    customer = new_customer(cluster, "1000.0000", reserve_seconds=30)
    per_node = grants // 2
    callers = [
        call(
            cluster,
            customer,
            member,
            f"visibility-{i}",
            scenario="uac",
            calls=per_node,
            rate=4,
            duration_ms=1000,
            recv_timeout_ms=10_000,
        )
        for i, member in enumerate(cluster.members[1:])
    ]
    results = [c.wait(timeout=120) for c in callers]
    lags: list[float] = []
    for i, member in enumerate(cluster.members):
        lags += money_state(member)["lags"][before[i] :]
    return {
        "calls": sum(r.successful for r in results),
        "failed": sum(r.failed for r in results),
        "lag": _ms(lags),
        "bus_round_trip": _ms(bus_round_trip(cluster)),
    }


def overspend(cluster: MoneyCluster, nodes: int) -> dict[str, Any]:
    customer = new_customer(cluster, "1.0000", reserve_seconds=10)
    started = time.monotonic()
    callers = [
        call(cluster, customer, member, f"overspend-{nodes}-{i}")
        for i, member in enumerate(cluster.members[-nodes:])
    ]
    results = [c.wait(timeout=170) for c in callers]
    took = time.monotonic() - started
    balance = settled_balance(cluster, customer)
    rows = cdrs_of(cluster, customer)
    returncode, _ = audit(cluster)
    return {
        "nodes": nodes,
        "calls_answered": sum(r.successful for r in results),
        "cut_by_switch": sum(1 for r in results if r.received_requests("BYE")),
        "final_balance": str(balance),
        "overspent": str(max(Decimal(0), -balance)),
        "billed_seconds": [int(r[0]) for r in rows],
        "seconds": round(took, 1),
        "audit_exact": returncode == 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=40, help="short calls for visibility")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if missing := missing_programs():
        print("MariaDB server not installed: missing " + ", ".join(missing))
        return 2
    workdir, facts = start_run(args.out, "money")
    with money_cluster(workdir) as cluster:
        seen = visibility(cluster, args.grants)
        print(
            f"visibility: {seen['lag']['count']} changes, median {seen['lag']['median_ms']} ms, "
            f"p90 {seen['lag']['p90_ms']} ms, max {seen['lag']['max_ms']} ms; bus round trip "
            f"median {seen['bus_round_trip']['median_ms']} ms "
            f"(max {seen['bus_round_trip']['max_ms']} ms)"
        )
        spent = []
        for nodes in (1, 2, 3):
            result = overspend(cluster, nodes)
            spent.append(result)
            print(
                f"overspend, {nodes} node(s): final balance {result['final_balance']}, "
                f"billed {result['billed_seconds']} s, cut {result['cut_by_switch']}/"
                f"{result['calls_answered']}, audit {'exact' if result['audit_exact'] else 'FAILED'}"
            )
    save_results(workdir, {**facts, "visibility": seen, "overspend": spent})
    return 0


if __name__ == "__main__":
    sys.exit(main())
