#!/usr/bin/env python3
"""Money across nodes: how soon a grant on one node is seen by the others, and how much a
prepaid balance is overspent with calls through 1, 2 and 3 nodes at once and during a
partition, each next to its documented bound.

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
   Before money was cluster state the same with two nodes ended at -0.84. Documented bound
   (docs/money.md): one billing increment per call in progress.
3. **overspend during a partition**: the same balance and slices; node 3's bus traffic cut
   both ways with the partition test's nftables rule (``moneylab.bus_cut``) and, at once,
   one long call through node 2 and one through node 3, so that each side grants its first
   slice before it notices the cut (3 s after the last heartbeat it heard: the window of the
   documented bound). Polling the nodes' own view (``GET /cluster/reservations``) says when
   each call was granted and when each side noticed. Measured overspend next to the bound of
   docs/money.md, ``(k - 1) * min(A, n * slice cost) + calls * increment`` with ``k = 2``
   groups, ``A = 1.00``, ``n`` the calls one side granted before noticing; then the cut is
   healed, the cluster is whole again and the audit must be exact.

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
from cluster.mariadb import missing_programs, wait_until  # noqa: E402
from cluster.moneylab import (  # noqa: E402
    PER_SECOND,
    MoneyCluster,
    audit,
    bus_cut,
    call,
    cdrs_of,
    money_cluster,
    money_state,
    new_customer,
    nft_missing,
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


BALANCE = Decimal("1.0000")
SLICE_SECONDS = 10


def overspend(cluster: MoneyCluster, nodes: int) -> dict[str, Any]:
    customer = new_customer(cluster, str(BALANCE), reserve_seconds=SLICE_SECONDS)
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
        "bound": str(nodes * PER_SECOND),  # one increment per call in progress
        "bound_formula": f"{nodes} calls x {PER_SECOND}",
        "billed_seconds": [int(r[0]) for r in rows],
        "seconds": round(took, 1),
        "audit_exact": returncode == 0,
    }


def _own_reserved(state: dict[str, Any]) -> bool:
    """The node holds a reservation of its own (the experiment's one account)."""
    return any(
        h["node"] == state["node"] and Decimal(h["reserved"]) > 0
        for account in state["accounts"].values()
        for h in account["nodes"]
    )


def partition(cluster: MoneyCluster) -> dict[str, Any]:
    """Item 3 of the module: calls through node 2 and node 3 started at the cut."""
    customer = new_customer(cluster, str(BALANCE), reserve_seconds=SLICE_SECONDS)
    node2, node3 = cluster.members[1], cluster.members[2]
    sides = {"node2": node2, "node3": node3}
    alone = {"node2": ["node1", "node2"], "node3": ["node3"]}
    granted: dict[str, dict[str, Any]] = {}
    noticed: dict[str, float] = {}
    with bus_cut(cluster, 2):
        cut = time.monotonic()
        callers = [call(cluster, customer, m, f"partition-{n}") for n, m in sides.items()]
        while len(noticed) < 2 and time.monotonic() - cut < 15:
            for name, member in sides.items():
                state = money_state(member)
                at = round(time.monotonic() - cut, 3)
                if name not in granted and _own_reserved(state):
                    granted[name] = {"after_s": at, "whole": state["whole"]}
                if name not in noticed and state["live"] == alone[name]:
                    noticed[name] = at
            time.sleep(0.02)
        results = [c.wait(timeout=170) for c in callers]
        balance = settled_balance(cluster, customer)  # CDRs go by the databases: not cut
        rows = cdrs_of(cluster, customer)
    wait_until(lambda: all(money_state(m)["whole"] for m in cluster.members), 15, "healed")
    returncode, _ = audit(cluster)
    # Calls one side granted before it noticed the cut (each side placed one).
    in_window = max((1 for g in granted.values() if g["whole"]), default=0)
    groups, calls = 2, len(sides)
    slice_cost = SLICE_SECONDS * PER_SECOND
    bound = (groups - 1) * min(BALANCE, in_window * slice_cost) + calls * PER_SECOND
    return {
        "granted": granted,
        "noticed_after_s": noticed,
        "calls_answered": sum(r.successful for r in results),
        "cut_by_switch": sum(1 for r in results if r.received_requests("BYE")),
        "final_balance": str(balance),
        "overspent": str(max(Decimal(0), -balance)),
        "bound": str(bound),
        "bound_formula": (
            f"({groups} - 1) x min({BALANCE}, {in_window} x {slice_cost}) + {calls} x {PER_SECOND}"
        ),
        "billed_seconds": [int(r[0]) for r in rows],
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
        spent = [overspend(cluster, nodes) for nodes in (1, 2, 3)]
        cut = partition(cluster) if not nft_missing() else None
    print(f"{'overspend':<28} {'final balance':>13} {'overspent':>9} {'bound':>6}  billed s")
    rows = [(f"{r['nodes']} node(s) at once", r) for r in spent]
    if cut is not None:
        rows.append(("partition (node 3 cut off)", cut))
    for label, r in rows:
        print(
            f"{label:<28} {r['final_balance']:>13} {r['overspent']:>9} "
            f"{Decimal(r['bound']):>6}  {r['billed_seconds']}  (bound: {r['bound_formula']}; "
            f"audit {'exact' if r['audit_exact'] else 'FAILED'})"
        )
    if cut is None:
        print("partition: nftables not installed (apt-get install nftables), not measured")
    else:
        print(
            f"partition: granted {cut['granted']} s after the cut; noticed after "
            f"{cut['noticed_after_s']} s"
        )
    save_results(workdir, {**facts, "visibility": seen, "overspend": spent, "partition": cut})
    return 0


if __name__ == "__main__":
    sys.exit(main())
