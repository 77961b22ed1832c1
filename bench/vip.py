#!/usr/bin/env python3
"""Fail-over of the shared IP with real nodes: time to the first new answered call, and the
calls lost, per fail-over, over ``--runs`` fail-overs.

Builds the lab of ``tests/ha/test_vip_nodes.py`` with its harness (``tests/netlab.py``,
``tests/ha/switchnodes.py``): network namespaces n1-n3 (``smartswitch run`` each, with its own
SQLite database provisioned with the same document, each node running its own keepalived,
VRRPv3 adverts every 0.1 s), a customer host (sipp calling the shared IP at ``--rate`` calls/s,
calls of ``--hold-ms``) and a supplier host (sipp UAS and registrar; the "bind address" is the
shared IP). Each run: one holder, the customer's load for ``--warmup`` s, then the holder's
keepalived and node process groups SIGKILLed; measured:

- **VRRP move** (the reference, measured in the same run): kill -> the shared IP on another
  node's interface (``ip addr`` polled every 10 ms);
- **first new call answered**: kill -> the first answer time in the new holder's CDRs;
- **calls lost**: sipp's failed calls (those in progress on the dead node, and any sent while
  the address moved and not saved by a retransmission).

The dead node is restarted (its stale address removed) before the next run. Needs root,
keepalived, sipp, iproute2, nftables. Run it alone: ``flock /tmp/ss-heavy.lock``.
Results: a table on stdout, JSON in bench/results/ (git-ignored), logs beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The harness is the tests' (tests/netlab.py, tests/ha): one copy only.
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import save_results, start_run  # noqa: E402
from ha.switchnodes import (  # noqa: E402
    NodeCluster,
    answered_after,
    customer_load,
    start_cluster,
)
from netlab import NetLab, remove_stale, standard_hosts, wait_for  # noqa: E402

NODES = ["n1", "n2", "n3"]


def one_failover(
    cluster: NodeCluster, run: int, rate: float, hold_ms: int, warmup: float
) -> dict[str, Any]:
    holder = cluster.ready()
    dead = cluster.nodes[holder]
    calls = int(rate * (warmup + 8))
    load = customer_load(
        cluster.sipps, cluster.lab, f"load-{run}", rate=rate, calls=calls, hold_ms=hold_ms
    )
    time.sleep(warmup)  # the steady load before the crash: part of the scenario
    killed = dead.crash()
    killed_mono = time.monotonic()

    def new_holder() -> str | None:
        others = [n for n in cluster.holders() if n != holder]
        return others[0] if len(others) == 1 else None

    new = wait_for(new_holder, 10.0, what="a new holder")
    moved = time.monotonic() - killed_mono
    result = load.wait(calls / rate + 90)
    answered = answered_after(cluster.nodes[new], killed)
    first = answered[0] - killed if answered else float("nan")
    dead.start()  # back as a backup (its stale address removed) for the next run
    return {
        "run": run,
        "killed": holder,
        "new_holder": new,
        "vrrp_move_s": moved,
        "first_answer_s": first,
        "calls": calls,
        "failed": result.failed,
        "successful": result.successful,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="customer calls/s")
    parser.add_argument("--hold-ms", type=int, default=1000, help="each call's length")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before the crash, s")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/vip.py: network namespaces need root", file=sys.stderr)
        return 2
    if not 1 <= args.runs <= 20 or not 1 <= args.rate <= 200:
        print("bench/vip.py: --runs 1-20, --rate 1-200", file=sys.stderr)
        return 2
    workdir, results = start_run(args.out, "vip")
    results.update(rate=args.rate, hold_ms=args.hold_ms, advert_interval=0.1, runs=[])
    remove_stale()
    with NetLab(standard_hosts(3)) as lab:
        cluster = start_cluster(lab, workdir, NODES)
        try:
            for run in range(1, args.runs + 1):
                row = one_failover(cluster, run, args.rate, args.hold_ms, args.warmup)
                results["runs"].append(row)
                print(
                    f"run {run}: {row['killed']} killed -> {row['new_holder']}: VRRP move"
                    f" {row['vrrp_move_s'] * 1000:.0f} ms, first new call answered"
                    f" {row['first_answer_s'] * 1000:.0f} ms, {row['failed']} of"
                    f" {row['calls']} calls failed",
                    flush=True,
                )
        finally:
            cluster.stop()
    runs = results["runs"]
    for key in ("vrrp_move_s", "first_answer_s"):
        values = [r[key] for r in runs]
        results[key] = {"median": statistics.median(values), "max": max(values)}
    lost = [r["failed"] for r in runs]
    results["failed"] = {"median": statistics.median(lost), "max": max(lost)}
    results["ratio_first_answer_to_vrrp_move"] = (
        results["first_answer_s"]["median"] / results["vrrp_move_s"]["median"]
    )
    in_progress = args.rate * args.hold_ms / 1000
    print()
    print(f"{'':34} {'median':>9} {'max':>9}")
    print(
        f"{'VRRP move (reference)':34} {results['vrrp_move_s']['median'] * 1000:>6.0f} ms"
        f" {results['vrrp_move_s']['max'] * 1000:>6.0f} ms"
    )
    print(
        f"{'kill -> first new call answered':34} {results['first_answer_s']['median'] * 1000:>6.0f}"
        f" ms {results['first_answer_s']['max'] * 1000:>6.0f} ms"
    )
    print(
        f"{'calls lost per fail-over':34} {results['failed']['median']:>9g}"
        f" {results['failed']['max']:>9g}   (in progress on the holder: ~{in_progress:g})"
    )
    print(f"first answer / VRRP move: {results['ratio_first_answer_to_vrrp_move']:.2f}")
    save_results(workdir, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
