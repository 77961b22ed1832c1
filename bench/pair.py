#!/usr/bin/env python3
"""Two billing nodes side by side: CPU per call of a lever against its baseline, interleaved.

On these shared machines the same node measures 1.4 ms of CPU per call at 300 calls/s one
quarter of an hour and 1.9 ms the next (bench/README.md, tenth session): a lever measured
before/after, a node at a time, is compared with the machine's drift. Here both nodes run at
once, **A** (the baseline) and **B** (the lever), from the same build unless ``--b-site`` says
otherwise, and the fixed-rate runs alternate (A then B, B then A, ...) for ``--rounds`` rounds,
so each B run has an A run beside it in time and neither side always goes first. It prints each
run, each side's median and the median of the pairwise differences (B - A), with how many
rounds B was cheaper.

``--a KEY=VALUE`` / ``--b KEY=VALUE`` (repeatable) set node configuration keys for one side
(TOML values: ``--b outbox_commit_window=0.02``); ``--b-site DIR`` runs B from another
unpacked tree (a wheel of the lever's commit: ``tests/e2e/wheel.py``), first on its
``PYTHONPATH``. Traffic stays on 127.0.0.0/8; every run is bounded; the nodes and sipp are
stopped by their PID.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from benchutil import save_results, start_run  # noqa: E402
from calls import CALLEE_IP, check_billing, running_billing_node, start_uas  # noqa: E402
from speed import (  # noqa: E402
    OPERATOR_CONFIG,
    FixedRun,
    core_loaded,
    cpu_run,
    machine_note,
    node_core,
    node_path,
    wait_quiet,
)

SIDES = ("A", "B")


def config_items(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` arguments as configuration keys, the values read as TOML."""
    config: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        try:
            config.update(tomllib.loads(f"{key.strip()} = {value.strip()}"))
        except tomllib.TOMLDecodeError as exc:
            raise SystemExit(f"{item!r}: not a TOML value ({exc})") from None
    return config


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b-site", type=Path, help="B's code: a directory first on PYTHONPATH")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=300.0, help="calls/s of every run")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of calls per run")
    parser.add_argument("--duration-ms", type=int, default=100, help="call length (sipp -d)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs")
    parser.add_argument(
        "--core",
        choices=("installed", "sources"),
        default="installed",
        help="as bench/speed.py: the wheel an install builds, or the checkout's sources",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--rounds, --rate and --seconds must be positive")
    args.config = {"A": config_items(args.a), "B": config_items(args.b)}
    # What speed.py's helpers read.
    args.systems = ["billing"]
    args.cpu_rate = args.rate
    args.cpu_seconds = args.seconds
    args.node_args = ""
    return args


def side_args(args: argparse.Namespace, side: str) -> argparse.Namespace:
    """The arguments ``running_billing_node`` and ``cpu_run`` read, for one side."""
    mine = copy.copy(args)
    mine.extra_config = {**OPERATOR_CONFIG, **args.config[side]}
    return mine


def summary(runs: dict[str, list[FixedRun]]) -> dict[str, Any]:
    cost = {side: [r.cpu_ms_per_call for r in runs[side]] for side in SIDES}
    if any(value is None for side in SIDES for value in cost[side]):
        return {"error": "a run completed no call"}
    a = [float(v) for v in cost["A"] if v is not None]
    b = [float(v) for v in cost["B"] if v is not None]
    differences = [y - x for x, y in zip(a, b, strict=True)]
    return {
        "median_ms": {"A": statistics.median(a), "B": statistics.median(b)},
        "median_difference_ms": round(statistics.median(differences), 3),
        "b_cheaper_rounds": sum(d < 0 for d in differences),
        "rounds": len(differences),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, facts = start_run(args.out, "pair")
    results: dict[str, Any] = {
        **facts,
        "settings": {
            "rate": args.rate,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "config": args.config,
            "b_site": str(args.b_site) if args.b_site else None,
        },
        "logs": str(workdir),
    }
    build_dir = Path(tempfile.mkdtemp(prefix="smartswitch-bench-"))
    uas, uas_port = start_uas(workdir, recv_timeout_ms=15000)
    try:
        env = node_core(args, build_dir / "install", results)
        envs = {"A": env, "B": node_path(args.b_site) if args.b_site else env}
        uas.wait_until_listening()
        uas_address = f"{CALLEE_IP}:{uas_port}"
        per_side = {side: side_args(args, side) for side in SIDES}
        with contextlib.ExitStack() as stack:
            nodes = {
                side: stack.enter_context(
                    running_billing_node(per_side[side], workdir / side, uas_address, envs[side])
                )
                for side in SIDES
            }
            loaded: dict[str, bool] = {}
            for side, node in nodes.items():
                print(f"{side}: {args.config[side] or 'defaults'}", end=", ")
                # B may run other code (--b-site): whether each loaded the compiled core.
                loaded[side] = core_loaded(node.pid)
            results["core"]["node_loaded_compiled_core"] = loaded
            runs: dict[str, list[FixedRun]] = {side: [] for side in SIDES}
            for round_ in range(1, args.rounds + 1):
                # Each side goes first in every other round, and a run starts once both nodes
                # are quiet: the other's last calls (their CDRs' delivery) land in neither.
                for side in SIDES if round_ % 2 else SIDES[::-1]:
                    node = nodes[side]
                    for other in nodes.values():
                        wait_quiet(other.pid)
                    run = cpu_run(
                        per_side[side], f"{side}{round_}", node.sip_address, node.pid, workdir
                    )
                    runs[side].append(run)
                    print(
                        f"  round {round_} {side}: {run.cpu_ms_per_call} ms per call "
                        f"({run.successful}/{run.calls} ok, {run.retransmissions} retrans)"
                        f"{machine_note(run.machine)}",
                        flush=True,
                    )
                    time.sleep(args.pause)
            results["runs"] = {side: [asdict(r) for r in runs[side]] for side in SIDES}
            results["summary"] = summary(runs)
            results["billing_check"] = {side: check_billing(nodes[side]) for side in SIDES}
    finally:
        uas.stop()
        shutil.rmtree(build_dir, ignore_errors=True)
    print(f"summary: {results['summary']}")
    for side in SIDES:
        print(f"  {side} billing check: {results['billing_check'][side]}")
    save_results(workdir, results)
    return 0 if all(results["billing_check"][side]["ok"] for side in SIDES) else 1


if __name__ == "__main__":
    sys.exit(main())
