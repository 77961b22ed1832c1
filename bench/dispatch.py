#!/usr/bin/env python3
"""Many cores on one host: cluster throughput with 1, 2 and 3 node processes behind the
dispatcher, and the scaling ratio.

Builds three node processes on 127.0.0.11-13 (replication scheme: three private ``mariadbd``,
the first the primary), the dispatcher on node 1 (``dispatch_mode``, default ``proxy``) at
127.0.0.20, a sipp customer on 127.0.0.21 and a sipp supplier on 127.0.0.31. For 1, 2, then 3
processes (the others stopped: not up, so not chosen) it sends ``--seconds`` of calls at each
rate of ``--rates`` to the dispatch address. A step is clean when it has 0 failed calls and
at least 98 % of its calls completed within its length plus the call length plus 5 s; the
clean rate of a count is the highest step of the unbroken run of clean steps from the bottom.
The scaling ratio is each count's clean rate over the 1-process one, measured in the same
run. The dispatcher's own counters say how the calls were spread.

Node 1 is the dispatcher *and* a node: its share of the calls costs it the dispatching on top.
On a 2-core machine shared with sipp and three MariaDB, expect the ratio to flatten past 2.

Every load is bounded in calls and time; every process is stopped by its PID. Results: a
table on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import save_results, start_run  # noqa: E402
from cluster.harness import (  # noqa: E402
    CUSTOMER_IP,
    DIALLED,
    NODE_IPS,
    ClusterNode,
    Sipps,
    cluster_member,
    provisioning,
    start_supplier,
)
from cluster.mariadb import MariaDBInstance, missing_programs, wait_until  # noqa: E402
from e2e.sipp import SippOptions, free_port  # noqa: E402

DISPATCH_IP = "127.0.0.20"


def chosen(member: ClusterNode) -> dict[str, int]:
    url = f"http://{member.bus_address}/metrics"
    with urllib.request.urlopen(url, timeout=2) as answer:
        text = answer.read().decode()
    found = re.findall(r'smartswitch_dispatch_chosen_total\{node="([^"]+)"\} (\d+)', text)
    return {node: int(count) for node, count in found}


def step(
    sipps: Sipps, dispatch: str, rate: float, seconds: float, duration_ms: int, name: str
) -> dict[str, Any]:
    calls = max(1, int(rate * seconds))
    bound = seconds + duration_ms / 1000 + 5
    started = time.monotonic()
    sipp = sipps.start(
        name,
        SippOptions(
            scenario="uac",
            local_ip=CUSTOMER_IP,
            local_port=free_port(CUSTOMER_IP),
            remote=dispatch,
            service=DIALLED,
            calls=calls,
            rate=rate,
            duration_ms=duration_ms,
            timeout_s=bound + 30,
            recv_timeout_ms=10000,
            trace_messages=False,
        ),
    )
    result = sipp.wait(timeout=bound + 60)
    took = time.monotonic() - started
    clean = result.failed == 0 and result.successful >= 0.98 * calls and took <= bound
    return {
        "rate": rate,
        "calls": calls,
        "successful": result.successful,
        "failed": result.failed,
        "seconds": round(took, 2),
        "clean": clean,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rates", default="100,200,300,400", help="calls/s steps")
    parser.add_argument("--seconds", type=float, default=10.0, help="each step's length")
    parser.add_argument("--duration-ms", type=int, default=1000, help="each call's length")
    parser.add_argument("--counts", default="1,2,3", help="node processes to measure")
    parser.add_argument("--mode", choices=("proxy", "redirect"), default="proxy")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_programs():
        print("MariaDB server not installed: missing " + ", ".join(missing))
        return 2
    rates = [float(r) for r in args.rates.split(",")]
    counts = [int(c) for c in args.counts.split(",")]
    if any(c not in (1, 2, 3) for c in counts):
        print("--counts: each of 1, 2, 3")
        return 2
    workdir, results = start_run(args.out, "dispatch")
    results.update(mode=args.mode, rates=rates, seconds=args.seconds, counts={})
    tmp = Path(tempfile.mkdtemp(prefix="ss-bench-dispatch-"))  # short: MariaDB socket paths
    sipps = Sipps(workdir)
    dbs = [MariaDBInstance(tmp, f"db{i + 1}", server_id=i + 1) for i in range(3)]
    members: list[ClusterNode] = []
    dispatch = f"{DISPATCH_IP}:{free_port(DISPATCH_IP)}"
    try:
        for db in dbs:
            db.initialize()
            db.start()
        supplier = start_supplier(sipps)
        members = [
            cluster_member(
                workdir / f"node{i + 1}",
                ip,
                f"node{i + 1}",
                db,
                db_scheme="replication",
                primary_database_url=dbs[0].url,
                log_level="warning",
                capacity=5000,
                **({"dispatch_mode": args.mode, "dispatch_listen": dispatch} if i == 0 else {}),
            )
            for i, (ip, db) in enumerate(zip(NODE_IPS, dbs, strict=True))
        ]
        dbs[0].create_database()
        members[0].cli("cluster", "init-primary")
        document = workdir / "provision.yaml"
        document.write_text(provisioning(supplier.options.local_port))
        members[0].cli("provision", str(document))
        for member in members[1:]:
            member.cli("cluster", "add-replica")
        for count in counts:
            for i, member in enumerate(members):
                if i < count and not member.node.running:
                    member.node.start()
                elif i >= count and member.node.running:
                    member.node.stop()

            def settled(count: int = count) -> bool:
                table = members[0].members()
                return sum(1 for m in members if table.get(m.name, {}).get("up")) == count

            wait_until(settled, 30, f"{count} nodes up")
            time.sleep(2)  # the dispatcher's chooser and probes follow the membership
            steps = []
            before = chosen(members[0])
            for rate in rates:
                outcome = step(
                    sipps, dispatch, rate, args.seconds, args.duration_ms, f"n{count}-r{rate:g}"
                )
                steps.append(outcome)
                print(f"{count} process(es), {rate:g} calls/s: {outcome}", flush=True)
                if not outcome["clean"]:
                    break
            after = chosen(members[0])
            clean = 0.0
            for outcome in steps:
                if not outcome["clean"]:
                    break
                clean = outcome["rate"]
            spread = {n: after.get(n, 0) - before.get(n, 0) for n in after}
            results["counts"][str(count)] = {"steps": steps, "clean_rate": clean, "spread": spread}
        base = results["counts"].get("1", {}).get("clean_rate") or 0.0
        print(f"\nmode {args.mode}, {args.seconds:g} s steps, calls of {args.duration_ms} ms")
        print(f"{'processes':>9}  {'clean calls/s':>13}  {'ratio to 1':>10}  spread")
        for count, figures in results["counts"].items():
            ratio = figures["clean_rate"] / base if base else None
            figures["ratio"] = ratio
            shown = "-" if ratio is None else f"{ratio:.2f}"
            print(f"{count:>9}  {figures['clean_rate']:>13g}  {shown:>10}  {figures['spread']}")
        save_results(workdir, results)
        return 0
    finally:
        sipps.stop_all()
        for member in members:
            if member.node.running:
                member.node.stop()
        for db in dbs:
            if db.is_running:
                db.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
