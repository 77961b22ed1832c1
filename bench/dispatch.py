#!/usr/bin/env python3
"""Many cores on one host: cluster throughput with 1, 2 and 3 node processes behind the
dispatcher, the scaling ratio, and sipp -> sipp as the reference in the same run.

Builds three node processes on 127.0.0.11-13 (replication scheme: three private ``mariadbd``,
the first the primary), the dispatcher on node 1 (``dispatch_mode``, default ``proxy``) at
127.0.0.20, a sipp customer on 127.0.0.21 and a sipp supplier (UAS) on 127.0.0.31. First the
reference: the customer's sipp straight to the supplier's. Then for 1, 2 and 3 processes (the
others stopped: not up, so not chosen) a sweep of ``--rates`` to the dispatch address.

Each count begins with a warm-up step at the lowest rate (not judged: a node just started
answers its first calls slowly). The sweeps are bench/speed.py's (:func:`speed.sweep`):
each step ``rate * --seconds`` calls, **clean** with 0 failed calls, at least 98 % of its
calls completed within the step's bound and sipp's retransmissions at most 1 % of its calls;
the clean rate is the highest step of the unbroken run of clean steps from the bottom. The scaling ratio is each count's clean rate
over the 1-process one, measured in the same run. The dispatcher's own counters say how the
calls were spread; a step that is not clean prints every node's dispatch gate counters (a
forwarded call refused shows as ``forged_header``) and the tail of sipp's errors.

Node 1 is the dispatcher *and* a node: its share of the calls costs it the dispatching on
top. On a 2-core machine shared with sipp and three MariaDB, expect the ratio to flatten.

Every load is bounded in calls and time; every process is stopped by its PID. Results: a
table on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# After tests/: bench/cluster.py must not hide the tests' cluster package.
sys.path.append(str(ROOT / "bench"))

from benchutil import save_results, start_run  # noqa: E402
from cluster.harness import (  # noqa: E402
    CUSTOMER_IP,
    NODE_IPS,
    SUPPLIER_IP,
    ClusterNode,
    Sipps,
    cluster_member,
    provisioning,
    start_supplier,
)
from cluster.mariadb import MariaDBInstance, missing_programs, wait_until  # noqa: E402
from e2e.sipp import free_port  # noqa: E402
from speed import Step, clean_rate, sweep  # noqa: E402

DISPATCH_IP = "127.0.0.20"
DEFAULT_RATES = "100,200,300,400,500,600,800,1000,1200"
NAMES = ("node1", "node2", "node3")


def _metrics(member: ClusterNode, name: str, label: str) -> dict[str, int]:
    url = f"http://{member.bus_address}/metrics"
    with urllib.request.urlopen(url, timeout=2) as answer:
        text = answer.read().decode()
    found = re.findall(rf'{name}\{{{label}="([^"]+)"\}} (\d+)', text)
    return {key: int(count) for key, count in found}


def chosen(member: ClusterNode) -> dict[str, int]:
    """Calls the dispatcher on ``member`` sent to each node."""
    return _metrics(member, "smartswitch_dispatch_chosen_total", "node")


def gates(members: Sequence[ClusterNode]) -> dict[str, dict[str, int]]:
    """Each running node's dispatch gate counters."""
    return {
        m.name: _metrics(m, "smartswitch_dispatch_gate_total", "outcome")
        for m in members
        if m.node.running
    }


def dispatcher_sees(members: Sequence[ClusterNode], count: int) -> bool:
    """The dispatcher's (node 1's) membership table has the first ``count`` nodes up and the
    others down: what it chooses from. Only its view: a node it sees up gets calls at once,
    whether or not that node has heard the dispatcher yet (the race this bench once lost
    calls to, see bench/README.md)."""
    table = members[0].members()
    up = {name for name, row in table.items() if row.get("up")}
    return up == {m.name for m in members[:count]}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--rates",
        type=lambda text: [int(r) for r in text.split(",") if r],
        default=[int(r) for r in DEFAULT_RATES.split(",")],
        help=f"calls/s steps (default {DEFAULT_RATES})",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="each step's length")
    parser.add_argument("--duration-ms", type=int, default=100, help="each call's length")
    parser.add_argument("--settle", type=float, default=1.5, help="pause after a step (s)")
    parser.add_argument("--keep-going", action="store_true", help="sweep past a step not clean")
    parser.add_argument("--counts", default="1,2,3", help="node processes to measure")
    parser.add_argument("--mode", choices=("proxy", "redirect"), default="proxy")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def _ratio(value: float, reference: float) -> float | None:
    return round(value / reference, 3) if reference else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_programs():
        print("MariaDB server not installed: missing " + ", ".join(missing))
        return 2
    counts = [int(c) for c in args.counts.split(",")]
    if any(c not in (1, 2, 3) for c in counts):
        print("--counts: each of 1, 2, 3")
        return 2
    if args.mode == "redirect":
        print("--mode redirect: sipp's built-in UAC does not follow a 302; use proxy")
        return 2
    workdir, results = start_run(args.out, "dispatch")
    results.update(
        mode=args.mode,
        rates=args.rates,
        seconds_per_step=args.seconds,
        call_duration_ms=args.duration_ms,
        clean="0 failed, >= 98 % completed in the step, retransmissions <= 1 % of calls",
        counts={},
        logs=str(workdir),
    )
    tmp = Path(tempfile.mkdtemp(prefix="ss-bench-dispatch-"))  # short: MariaDB socket paths
    sipps = Sipps(workdir)
    dbs = [MariaDBInstance(tmp, f"db{i + 1}", server_id=i + 1) for i in range(3)]
    members: list[ClusterNode] = []
    dispatch = f"{DISPATCH_IP}:{free_port(DISPATCH_IP)}"
    try:
        for db in dbs:
            db.initialize()
            db.start()
        # The supplier answers for the whole run (the harness's default stops it after
        # 300 s, shorter than a sweep of three counts), with no message log (costly).
        supplier = start_supplier(sipps, timeout_s=4 * 3600, trace_messages=False)
        supplier_address = f"{SUPPLIER_IP}:{supplier.options.local_port}"
        print(f"direct: sipp -> sipp ({supplier_address}), logs in {workdir}", flush=True)
        direct = sweep(args, "direct", supplier_address, workdir, caller_ip=CUSTOMER_IP)
        results["direct"] = {
            "steps": [asdict(s) | {"clean": s.clean} for s in direct],
            "clean_cps": clean_rate(direct),
        }
        members = [
            cluster_member(
                workdir / name,
                ip,
                name,
                db,
                db_scheme="replication",
                primary_database_url=dbs[0].url,
                capacity=5000,
                **({"dispatch_mode": args.mode, "dispatch_listen": dispatch} if i == 0 else {}),
            )
            for i, (name, ip, db) in enumerate(zip(NAMES, NODE_IPS, dbs, strict=True))
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
                return dispatcher_sees(members, count)

            wait_until(settled, 30, f"{count} nodes up on the dispatcher")
            print(f"{count} process(es) behind the dispatcher at {dispatch}", flush=True)
            # A node just started answers its first calls slowly (a first run's 100 calls/s
            # step had 2 % retransmissions, none at 100 calls/s later): a warm-up at the
            # lowest rate, not judged, before the sweep.
            warm = sweep(
                argparse.Namespace(**{**vars(args), "rates": args.rates[:1], "keep_going": True}),
                f"{count} warm",
                dispatch,
                workdir,
                caller_ip=CUSTOMER_IP,
            )
            before = chosen(members[0])
            steps: list[Step] = sweep(
                args, f"{count} proc", dispatch, workdir, caller_ip=CUSTOMER_IP
            )
            after = chosen(members[0])
            if steps and not steps[-1].clean:
                print(f"  not clean: gate counters {gates(members)}", flush=True)
            results["counts"][str(count)] = {
                "steps": [asdict(s) | {"clean": s.clean} for s in steps],
                "clean_cps": clean_rate(steps),
                "spread": {n: after.get(n, 0) - before.get(n, 0) for n in after},
                "warm_up": [asdict(s) | {"clean": s.clean} for s in warm],
            }
        base = results["counts"].get("1", {}).get("clean_cps") or 0
        reference = results["direct"]["clean_cps"]
        top = max(args.rates)
        print(f"\nmode {args.mode}, {args.seconds:g} s steps, calls of {args.duration_ms} ms")
        print(f"{'system':>12}  {'clean calls/s':>13}  {'to 1 proc':>9}  {'to sipp':>7}  spread")
        shown = f"{reference}{' (top)' if reference == top else ''}"
        print(f"{'sipp->sipp':>12}  {shown:>13}  {'':>9}  {'1':>7}")
        for count, figures in results["counts"].items():
            figures["ratio_to_1"] = _ratio(figures["clean_cps"], base)
            figures["ratio_to_direct"] = _ratio(figures["clean_cps"], reference)
            shown = f"{figures['clean_cps']}{' (top)' if figures['clean_cps'] == top else ''}"
            print(
                f"{count + ' proc':>12}  {shown:>13}  {figures['ratio_to_1']!s:>9}"
                f"  {figures['ratio_to_direct']!s:>7}  {figures['spread']}"
            )
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
