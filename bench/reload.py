#!/usr/bin/env python3
"""Signalling while a billing node reloads a carrier-size configuration, measured with sipp.

A billing node (bench/calls.py's provisioning: customer ``bench``, supplier ``uas``, one
least-cost route) whose supplier buys from a deck of ``--rates`` rates (500 000), carries
``--calls`` calls at ``--rate`` calls/s twice:

1. **steady**: nothing else happens;
2. **reload**: ``--reload-at`` seconds in, ``smartswitch provision`` changes ONE rate (the
   customer's selling rate for prefix ``1``). That bumps the configuration version, and the
   node reads and indexes its whole configuration again (every one of the deck's rates).

For each run: sipp's per-call INVITE-to-answer time (``-trace_rtt``: ResponseTime1, the 200
of the INVITE, 1 ms resolution), its worst and 99th percentile, failed calls and
retransmissions; the slowest answer of ``GET /health`` polled every 20 ms, which waits for the
node's event loop like SIP does (the longest loop stall, as seen from outside); the node's CPU
per call. The reload run's figures are also given for two windows: **provision** (the
``smartswitch provision`` process running beside the node: its CPU is the machine's, not the
node's) and **reload** (from its end until one second after the node reports the new version
loaded, on ``/health``).

The deck is written straight into the node's SQLite file with ``sqlite3`` (prices as the
store keeps them, scaled integers) and the configuration version bumped, before the node
starts: the provisioning YAML of half a million rates would take minutes to parse and check.
Its prefixes are unique digit strings of 2-10 digits (from a fixed seed), plus ``1``.

Results: a table on stdout and JSON in bench/results/ (git-ignored), with the node's and
sipp's files beside it. Traffic stays on 127.0.0.0/8; processes are stopped by their PID.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import save_results, start_run  # noqa: E402
from calls import CALLEE_IP, NODE_IP, billing_document, caller_options, start_uas  # noqa: E402
from e2e.node import Node, NodeError, NodeSpec  # noqa: E402
from e2e.sipp import Sipp, stat_int  # noqa: E402

#: The deck's tariff: the supplier's buying tariff in bench/calls.py's provisioning.
DECK_TARIFF = "buy"
#: The store's scale for prices (smartswitch.model.money.PRICE_SCALE): 0.0040 is 4000.
PRICE_UNITS = 10**6
PROBE_INTERVAL = 0.02


# --------------------------------------------------------------------------- the deck


def deck_prefixes(count: int, seed: int = 1) -> Iterator[str]:
    """``count`` unique prefixes: ``1`` (what the bench dials) and random ones of 2-10 digits."""
    rng = random.Random(seed)
    seen = {"1"}
    yield "1"
    while len(seen) < count:
        length = rng.randint(2, 10)
        prefix = f"{rng.randrange(10**length):0{length}d}"
        if prefix not in seen:
            seen.add(prefix)
            yield prefix


def load_deck(node: Node, count: int) -> float:
    """Replace the deck tariff's rates with ``count`` rates; the seconds it took."""
    started = time.monotonic()
    db = sqlite3.connect(node.data_dir / "smartswitch.db")
    try:
        (tariff_id,) = db.execute(
            "SELECT id FROM tariffs WHERE name = ?", (DECK_TARIFF,)
        ).fetchone()
        db.execute("DELETE FROM rates WHERE tariff_id = ?", (tariff_id,))
        db.executemany(
            "INSERT INTO rates (tariff_id, prefix, price_per_minute, connect_fee, increment_min,"
            " increment_step, free_seconds, effective_from, effective_to)"
            " VALUES (?, ?, ?, 0, 60, 60, 0, NULL, NULL)",
            (
                # 0.0040/min for "1" (bench/calls.py's buying price), 0.0010-0.0059 elsewhere
                (tariff_id, prefix, 4000 if prefix == "1" else 1000 + (i * 7919) % 5000)
                for i, prefix in enumerate(deck_prefixes(count))
            ),
        )
        db.execute("UPDATE config_version SET version = version + 1 WHERE id = 1")
        db.commit()
    finally:
        db.close()
    return time.monotonic() - started


def one_rate_change(price: str) -> dict[str, Any]:
    """The change made during the reload run: the customer's selling rate for ``1``."""
    return {
        "tariffs": [
            {
                "name": "sell",
                "rates": [{"prefix": "1", "price_per_minute": price, "increment": "60/60"}],
            }
        ]
    }


def collector_off(workdir: Path) -> dict[str, str]:
    """The environment of a node whose garbage collector is off from its first line (a
    ``sitecustomize`` of the run's own): its full collections, which pause the loop for
    0.2-0.9 s every few seconds at 200 calls/s with or without a reload, then do not hide
    what the reload itself costs."""
    site = workdir / "collector-off"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text("import gc\n\ngc.disable()\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


# --------------------------------------------------------------------------- observation


def loaded_version(node: Node) -> int | None:
    """The configuration version the node runs on: /health, else /cluster/status; None when
    the node does not answer in time (its event loop is busy)."""
    try:
        return _loaded_version(node)
    except OSError:  # a timeout included
        return None


def _loaded_version(node: Node) -> int | None:
    version = node.health().get("config_version")
    return version if isinstance(version, int) else None


class Prober:
    """GET /health every PROBE_INTERVAL in a thread: (start time, seconds to answer)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.node.health_url, timeout=30) as response:
                    response.read()
            except OSError:
                pass
            self.samples.append((started, time.monotonic() - started))
            self._stop.wait(PROBE_INTERVAL)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def worst_ms(self, window: tuple[float, float] | None = None) -> float:
        inside = [
            took
            for at, took in self.samples
            if window is None or (at <= window[1] and at + took >= window[0])
        ]
        return round(max(inside, default=0.0) * 1000, 1)


def read_rtts(workdir: Path, started: float) -> list[tuple[float, float]]:
    """sipp's ``-trace_rtt`` file: (monotonic time of the answer, INVITE-to-answer in s)."""
    rows: list[tuple[float, float]] = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                rows.append((started + float(parts[0]) / 1000, float(parts[1]) / 1000))
    return sorted(rows)


def _percentile_ms(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    label: str
    calls: int
    successful: int
    failed: int
    retransmissions: int
    answer_max_ms: float | None
    answer_p99_ms: float | None
    answer_p50_ms: float | None
    health_max_ms: float
    """The slowest GET /health of the run."""
    cpu_ms_per_call: float = 0.0
    """The node's CPU time over the run, per call (steadier than any latency here)."""
    window_s: float | None = None
    """Reload run: from the provision command's start to the new version seen, in s."""
    provision_s: float | None = None
    """How long ``smartswitch provision`` took (a process of its own on the same cores)."""
    provision: Window | None = None
    reload: Window | None = None
    note: str = ""


@dataclass
class Window:
    """The calls in progress during part of a run, and the slowest /health then."""

    seconds: float
    calls: int
    answer_max_ms: float | None
    answer_p99_ms: float | None
    health_max_ms: float

    @classmethod
    def of(
        cls, rtts: Sequence[tuple[float, float]], prober: Prober, start: float, end: float
    ) -> Window:
        inside = [took for at, took in rtts if at >= start and at - took <= end]
        return cls(
            round(end - start, 2),
            len(inside),
            _percentile_ms(inside, 1.0),
            _percentile_ms(inside, 0.99),
            prober.worst_ms((start, end)),
        )

    def __str__(self) -> str:
        return (
            f"{self.seconds} s, {self.calls} calls: answer max {self.answer_max_ms} ms, "
            f"p99 {self.answer_p99_ms}; /health max {self.health_max_ms} ms"
        )


def run_calls(args: argparse.Namespace, node: Node, workdir: Path, label: str, reload: bool) -> Run:
    options = caller_options(
        node.sip_address,
        args.calls,
        args.rate,
        args.duration_ms,
        timeout_s=args.calls / args.rate + 120,
        extra=("-trace_rtt", "-rtt_freq", "1"),  # every call's INVITE-to-answer time
    )
    uac = Sipp(label, options, workdir / label)
    marks: tuple[float, float, float] | None = None  # provision start and end, version seen
    run = Run(label, args.calls, 0, 0, 0, None, None, None, 0.0)
    cpu = node.cpu_seconds()
    with Prober(node) as prober:
        started = time.monotonic()
        uac.start()
        try:
            if reload:
                time.sleep(args.reload_at)  # traffic flows steadily before the change
                before = _loaded_version(node) or 0
                provision_start = time.monotonic()
                node.provision(one_rate_change(args.new_price))
                provision_end = time.monotonic()
                while (loaded_version(node) or 0) <= before:
                    if time.monotonic() - provision_start > args.reload_timeout:
                        run.note = "the new version was not seen in time"
                        break
                    time.sleep(0.01)
                marks = (provision_start, provision_end, time.monotonic())
            result = uac.wait(options.timeout_s + 30)
        finally:
            uac.stop()
    run.cpu_ms_per_call = round((node.cpu_seconds() - cpu) * 1000 / args.calls, 2)
    rtts = read_rtts(uac.workdir, started)
    times = [took for _, took in rtts]
    run.successful, run.failed = result.successful, result.failed
    run.retransmissions = stat_int(result.stats, "Retransmissions")
    run.answer_max_ms = _percentile_ms(times, 1.0)
    run.answer_p99_ms = _percentile_ms(times, 0.99)
    run.answer_p50_ms = _percentile_ms(times, 0.5)
    run.health_max_ms = prober.worst_ms()
    if marks is not None:
        provision_start, provision_end, seen = marks
        run.window_s = round(seen - provision_start, 2)
        run.provision_s = round(provision_end - provision_start, 2)
        run.provision = Window.of(rtts, prober, provision_start, provision_end)
        # ... and a second after the new version is seen: what follows it (a collection, say).
        run.reload = Window.of(rtts, prober, provision_end, seen + 1.0)
    return run


def verdict(steady: Run, reloading: Run) -> dict[str, Any]:
    """What the reload added to the worst answer time: over its window and over the whole run
    (each against the steady run's worst), and the calls that failed."""
    worst = steady.answer_max_ms or 0.0
    window = reloading.reload.answer_max_ms if reloading.reload is not None else None
    added_window = None if window is None else round(window - worst, 1)
    added_run = round((reloading.answer_max_ms or 0.0) - worst, 1)
    met = added_window is not None and added_window <= 20 and reloading.failed == 0
    return {
        "added_in_reload_window_ms": added_window,
        "added_over_the_run_ms": added_run,
        "failed": reloading.failed,
        "target_met": met,
        "text": f"worst answer: steady {worst} ms; the reload window added {added_window} ms, "
        f"the reload run {added_run} ms; {reloading.failed} failed calls "
        f"(target: <= 20 ms and 0: {'met' if met else 'NOT met'})",
    }


def _line(run: Run) -> str:
    text = (
        f"  {run.label:7} {run.successful:5d}/{run.calls} ok {run.failed:3d} failed "
        f"{run.retransmissions:4d} retrans  answer max {run.answer_max_ms} ms, "
        f"p99 {run.answer_p99_ms}, p50 {run.answer_p50_ms}; /health max {run.health_max_ms} ms; "
        f"node CPU {run.cpu_ms_per_call} ms per call"
    )
    if run.provision is not None and run.reload is not None:
        text += f"\n          provision {run.provision}\n          reload    {run.reload}"
    return text + (f"  {run.note}" if run.note else "")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rates", type=int, default=500_000, help="rates in the deck")
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--calls", type=int, default=6000, help="calls per run")
    parser.add_argument("--duration-ms", type=int, default=500, help="call length (sipp -d)")
    parser.add_argument("--reload-at", type=float, default=8.0, help="s into the reload run")
    parser.add_argument("--reload-timeout", type=float, default=300.0)
    parser.add_argument("--new-price", default="0.0101", help="the changed selling price")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="node start (s)")
    parser.add_argument("--pause", type=float, default=5.0, help="between the two runs (s)")
    parser.add_argument(
        "--collector-off",
        action="store_true",
        help="run the node with its garbage collector off (isolates the reload's own cost)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, facts = start_run(args.out, "reload")
    results: dict[str, Any] = {
        **facts,
        "code": os.environ.get("PYTHONPATH", ""),  # the "before" figures run other code
        "settings": {k: str(v) for k, v in vars(args).items()},
        "logs": str(workdir),
    }
    uas, uas_port = start_uas(workdir, recv_timeout_ms=30000)
    spec = NodeSpec(
        workdir=workdir / "node",
        sip_host=NODE_IP,
        config={"log_level": "warning"},
        env=collector_off(workdir) if args.collector_off else {},
    )
    node = Node(spec)
    print(f"smartswitch reload bench, {results['sipp']}, logs in {workdir}")
    exit_code = 0
    try:
        uas.wait_until_listening()
        node.provision(billing_document(f"{CALLEE_IP}:{uas_port}"))
        results["deck_load_s"] = round(load_deck(node, args.rates), 1)
        started = time.monotonic()
        node.start(health_timeout=args.start_timeout)
        results["node_start_s"] = round(time.monotonic() - started, 1)
        results["rss_mb"] = round(node.rss_bytes() / 1e6, 1)
        print(
            f"deck of {args.rates} rates written in {results['deck_load_s']} s; node up in "
            f"{results['node_start_s']} s, {results['rss_mb']} MB"
        )
        runs = [run_calls(args, node, workdir, "steady", reload=False)]
        print(_line(runs[-1]), flush=True)
        time.sleep(args.pause)
        runs.append(run_calls(args, node, workdir, "reload", reload=True))
        print(_line(runs[-1]), flush=True)
        results["runs"] = [asdict(r) for r in runs]
        results["verdict"] = verdict(*runs)
        print(results["verdict"]["text"])
    except (NodeError, TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        results["error"] = str(exc)
        exit_code = 1
    finally:
        if node.started:
            results["node_exit"] = node.stop()
        uas.stop()
    save_results(workdir, results)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
