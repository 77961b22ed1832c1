#!/usr/bin/env python3
"""Replacing a dead primary: time from the SIGKILL of its ``mariadbd`` to the first
configuration change accepted on the new primary, and the CDRs delivered again after it.

The cluster of ``tests/cluster/test_auto_failover.py`` (``tests/cluster/harness.py``:
three nodes on 127.0.0.11-13, each with its own mariadbd and its own etcd member, automatic
promotion; a sipp supplier on 127.0.0.31), with the anti-flap period set to 0 so that one
cluster serves every run. Each run:

1. sipp sends ``--rate`` calls/s through each of the two nodes whose database is not the
   primary, for ``--seconds`` seconds;
2. once CDRs flow, the primary's ``mariadbd`` is SIGKILLed; from then on ``smartswitch
   provision`` (a new selling rate) is tried on the other two nodes in turn until one accepts
   it: the figure is the time from the kill to that acceptance;
3. the calls finish (failed calls counted), the outboxes settle, and the nodes' ``requeued``
   counters say how many delivered CDRs were delivered again to the new primary (those the
   dead primary had taken but not replicated);
4. the killed ``mariadbd`` is restarted and its node made a replica (``cluster rejoin``).

Prints the median and the maximum, and writes ``bench/results/promotion-<UTC>.json``.
Traffic stays on 127.0.0.0/8; every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import save_results, start_run  # noqa: E402
from cluster.harness import (  # noqa: E402
    ClusterNode,
    ReplicatedCluster,
    Sipps,
    caller,
    delivered,
    etcd_settings,
    outbox_settled,
    replicated_cluster,
)
from cluster.mariadb import missing_programs, wait_until  # noqa: E402

DB_HOSTS = ("127.0.0.71", "127.0.0.72", "127.0.0.73")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=int, default=15, help="calls/s through each live node")
    parser.add_argument("--seconds", type=int, default=20, help="length of each run's load")
    parser.add_argument("--ttl", type=int, default=10, help="the leader lease, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def _primary(cluster: ReplicatedCluster) -> ClusterNode:
    wait_until(lambda: len(cluster.writable()) == 1, 60, "one writable primary")
    (primary,) = cluster.writable()
    wait_until(
        lambda: "holds the leader lease" in str(primary.status()["db"]["failover"]),
        60,
        "the primary's node holds the leader lease",
    )
    return primary


def one_run(cluster: ReplicatedCluster, sipps: Sipps, args: argparse.Namespace) -> dict[str, Any]:
    primary = _primary(cluster)
    others = [m for m in cluster.members if m is not primary]
    requeued_before = sum(int(m.status()["requeued"]) for m in cluster.members)
    callers = [
        caller(sipps, f"via-{i}", m.node, calls=args.rate * args.seconds, rate=args.rate)
        for i, m in enumerate(others)
    ]
    for member in others:
        wait_until(partial(delivered, member, 10), 30, "CDRs delivered")
    primary.db.kill()
    killed = time.monotonic()
    accepted_on = ""
    attempts = 0
    while not accepted_on:
        if time.monotonic() - killed > 120:
            raise RuntimeError("no configuration change accepted within 120 s of the kill")
        for member in others:
            attempts += 1
            if cluster.change_config(member).returncode == 0:
                accepted_on = str(member.node.spec.config["node_name"])
                break
        else:
            time.sleep(0.2)
    accepted = time.monotonic() - killed
    results = [c.wait(timeout=180) for c in callers]
    for member in others:
        wait_until(partial(outbox_settled, member), 60, "outboxes settled")
    requeued = sum(int(m.status()["requeued"]) for m in cluster.members) - requeued_before
    primary.db.start()
    wait_until(lambda: primary.status()["read_only"] is True, 30, "old primary read-only")
    rejoined = primary.cli("cluster", "rejoin", check=False)
    if rejoined.returncode != 0:
        raise RuntimeError(f"rejoin failed: {rejoined.stderr}")
    wait_until(lambda: primary.status()["db"]["role"] == "replica", 30, "old primary a replica")
    run = {
        "killed": primary.node.spec.config["node_name"],
        "new_primary": accepted_on,
        "kill_to_config_accepted_s": round(accepted, 3),
        "provision_attempts": attempts,
        "cdrs_redelivered": requeued,
        "calls_completed": sum(r.successful for r in results),
        "calls_failed": sum(r.failed for r in results),
    }
    print(
        f"  run: {run['killed']} killed, {accepted_on} took configuration after "
        f"{accepted:.2f} s; {requeued} CDRs delivered again; "
        f"{run['calls_failed']} failed of {run['calls_completed'] + run['calls_failed']} calls"
    )
    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_programs():
        print("MariaDB not installed: missing " + ", ".join(missing), file=sys.stderr)
        return 2
    workdir, results = start_run(args.out, "promotion")
    results["settings"] = {"runs": args.runs, "rate": args.rate, "seconds": args.seconds}
    print(f"promotion bench: {args.runs} runs, 2 x {args.rate} calls/s, lease {args.ttl} s")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="promotion-bench-") as base:
        settings = etcd_settings(failover_anti_flap=0, failover_ttl=args.ttl)
        with replicated_cluster(Path(base), DB_HOSTS, **settings) as cluster:
            sipps = Sipps(Path(base))
            try:
                for _ in range(args.runs):
                    runs.append(one_run(cluster, sipps, args))
            finally:
                sipps.stop_all()
    times = [r["kill_to_config_accepted_s"] for r in runs]
    results["runs"] = runs
    results["kill_to_config_accepted_s"] = {
        "median": statistics.median(times),
        "max": max(times),
    }
    results["cdrs_redelivered"] = [r["cdrs_redelivered"] for r in runs]
    print(
        f"SIGKILL to first configuration change accepted: median {statistics.median(times):.2f} s,"
        f" max {max(times):.2f} s over {len(times)} runs; CDRs delivered again per run: "
        f"{results['cdrs_redelivered']}"
    )
    save_results(workdir, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
