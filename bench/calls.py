#!/usr/bin/env python3
"""Call-setup rate and memory per call of a smartswitch node, measured with sipp.

Three measurements in one run (bench/README.md tells how to read them):

1. **direct**: sipp UAC -> sipp UAS at increasing rates: the load tool's own
   ceiling on this machine, so that the node's figure can be judged against it.
2. **node**: sipp UAC -> node -> sipp UAS at the same rates. Each step places
   ``rate * seconds`` calls within a bounded time; a step passes when sipp
   exits 0 with every call successful and none failed. The sweep
   stops at the first step that does not pass (``--keep-going`` to go on).
3. **billing**: the same sweep through a node in billing mode (no
   ``[[route]]``): every call identified by the customer's ACL, authorised
   against its tariff and balance, routed by least cost to a supplier (the
   UAS), rated, and its CDR written through the durable outbox. After the
   sweep every successful call must have its CDR and ``smartswitch audit``
   must pass. The summary gives billing / lab (issue 3's target: no more than
   20 % below the lab figure, and at least 500 calls/s).
4. **memory**: a fresh node carrying ``--memory-calls`` long calls at once;
   its resident memory (VmRSS, summed over its processes) when they are all
   up, minus the idle figure, divided by the number of calls.

The node is started here with a config routing every dialled number to the
UAS; ``--config FILE`` merges more TOML into it (billing, tariffs, ...) and
``--node-args`` adds ``smartswitch run`` arguments. Results: a table on
stdout and JSON in bench/results/ (git-ignored), with every sipp and node log
of the run beside it.

Traffic stays on 127.0.0.0/8; every step is bounded in calls and in time; the
processes started here are stopped by their PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sqlite3
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The runner is shared with the end-to-end tests (tests/e2e/), one copy only.
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import save_results, start_run  # noqa: E402
from e2e.node import Node, NodeError, NodeSpec, route, sip_uri  # noqa: E402
from e2e.sipp import (  # noqa: E402
    Sipp,
    SippOptions,
    free_port,
    stat_int,
)

NODE_IP = "127.0.0.1"
CALLER_IP = "127.0.0.2"
CALLEE_IP = "127.0.0.3"
DIALLED = "15551234567"
DEFAULT_RATES = (100, 200, 400, 600, 800, 1000, 1500)


@dataclass
class Step:
    """One rate of one sweep."""

    target: str
    rate: int
    calls: int
    returncode: int
    successful: int
    failed: int
    achieved_cps: float
    """sipp's CallRate(C): calls over the whole step, drain included (a
    little under ``rate``)."""
    elapsed_s: float
    retransmissions: int
    response_ms: float | None
    """Mean INVITE -> 200 time (sipp ResponseTime1, cumulative)."""
    node_calls_after: int | None = None
    """Calls the node still held after the step drained (leak check)."""
    cdrs: int | None = None
    """Billing sweep: the CDRs the step added to the node's database (one per call)."""
    note: str = ""

    @property
    def passed(self) -> bool:
        # sipp cannot quietly lower the rate (its -l allows every call at
        # once), so a slow node shows as failed calls or a missed timeout.
        # Calls still held by the node also fail the step: sipp's built-in
        # uac takes any 200 for its BYE's, so when an overloaded node drops
        # the BYE and resends the INVITE's 200, sipp counts a success while
        # the call stays up on the node (and, billing on, is never rated).
        return (
            self.returncode == 0
            and self.failed == 0
            and self.successful == self.calls
            and self.node_calls_after in (None, 0)
            and self.cdrs in (None, self.calls)
        )


@dataclass
class Memory:
    calls_wanted: int
    idle_rss: int
    peak_rss: int
    calls_at_peak: int
    bytes_per_call: float | None
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds since start, calls up, RSS bytes)."""
    successful: int = 0
    failed: int = 0
    node: str = "lab"
    """The node measured: ``lab`` (routes only) or ``billing`` (every call identified, rated,
    reserved against the balance and its CDR written)."""
    billing_check: dict[str, Any] | None = None
    """Billing: the CDRs once the outbox drained and ``smartswitch audit``."""


# --------------------------------------------------------------------------- helpers


def _duration_ms(value: str) -> float | None:
    """sipp's "00:00:00:001000" (h:m:s:microseconds) in milliseconds."""
    parts = value.split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    hours, minutes, seconds, micros = (int(p) for p in parts)
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + micros / 1000


def _health(node: Node) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(node.health_url, timeout=2) as response:
            data = json.loads(response.read())
            return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _node_calls(node: Node) -> int | None:
    health = _health(node)
    calls = health.get("calls") if health else None
    return calls if isinstance(calls, int) else None


def node_config(uas_uri: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The bench's config, with ``extra`` (from --config) merged on top; its
    routes come after the bench's (which routes prefix "1" to the UAS)."""
    config: dict[str, Any] = {
        "log_level": "warning",  # logging every call would measure logging
        "accept_any_source": True,
    }
    extra = dict(extra)
    extra_routes = extra.pop("route", [])
    config.update(extra)
    config["route"] = [route("1", uas_uri), *extra_routes]
    return config


@contextlib.contextmanager
def running_node(
    args: argparse.Namespace, workdir: Path, uas_uri: str, env: Mapping[str, str] | None = None
) -> Iterator[Node]:
    spec = NodeSpec(
        workdir=workdir,
        sip_host=NODE_IP,
        config=node_config(uas_uri, args.extra_config),
        extra_args=shlex.split(args.node_args),
        env=env or {},
    )
    node = Node(spec).start()
    try:
        yield node
    finally:
        code = node.stop()
        if code != 0:
            print(f"warning: node exited with {code}; log: {node.log_path}", file=sys.stderr)


#: The billing sweep's provisioning: customer "bench" calls from the caller's address, the
#: UAS is supplier "uas", least cost; a balance no sweep can spend.
BILLING_BALANCE = "1000000.0000"


def billing_document(uas_address: str) -> dict[str, Any]:
    return {
        "accounts": [
            {"name": "bench", "currency": "USD", "balance": BILLING_BALANCE},
            {"name": "uas", "currency": "USD", "balance": "0"},
        ],
        "tariffs": [
            {
                "name": "sell",
                "rates": [{"prefix": "1", "price_per_minute": "0.0100", "increment": "60/60"}],
            },
            {
                "name": "buy",
                "rates": [{"prefix": "1", "price_per_minute": "0.0040", "increment": "60/60"}],
            },
        ],
        "peers": [
            {
                "name": "bench",
                "role": "customer",
                "account": "bench",
                "tariff": "sell",
                "acl": [f"{CALLER_IP}/32"],
            },
            {
                "name": "uas",
                "role": "supplier",
                "account": "uas",
                "tariff": "buy",
                "address": uas_address,
            },
        ],
        "routes": [{"prefix": "", "strategy": "least_cost", "suppliers": ["uas"]}],
    }


def billing_node_config(extra: dict[str, Any]) -> dict[str, Any]:
    """Billing mode: no [[route]] and no accept_any_source; --config's other keys apply."""
    config: dict[str, Any] = {"log_level": "warning"}
    config.update({k: v for k, v in extra.items() if k not in ("route", "accept_any_source")})
    return config


@contextlib.contextmanager
def running_billing_node(
    args: argparse.Namespace, workdir: Path, uas_address: str, env: Mapping[str, str] | None = None
) -> Iterator[Node]:
    spec = NodeSpec(
        workdir=workdir,
        sip_host=NODE_IP,
        config=billing_node_config(args.extra_config),
        extra_args=shlex.split(args.node_args),
        env=env or {},
    )
    node = Node(spec)
    node.provision(billing_document(uas_address))
    node.start()
    try:
        yield node
    finally:
        code = node.stop()
        if code != 0:
            print(f"warning: node exited with {code}; log: {node.log_path}", file=sys.stderr)


def start_uas(workdir: Path, recv_timeout_ms: int) -> tuple[Sipp, int]:
    """The callee of a whole run, sipp's built-in UAS on CALLEE_IP (not yet listening: then
    ``wait_until_listening``), and its port."""
    port = free_port(CALLEE_IP)
    uas = Sipp(
        "uas",
        SippOptions(
            scenario="uas",
            local_ip=CALLEE_IP,
            local_port=port,
            timeout_s=3600,
            recv_timeout_ms=recv_timeout_ms,
            trace_messages=False,
        ),
        workdir / "uas",
    ).start()
    return uas, port


def count_cdrs(node: Node) -> int:
    db = sqlite3.connect(f"file:{node.data_dir / 'smartswitch.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM cdrs").fetchone()[0])
    finally:
        db.close()


def wait_cdrs(node: Node, count: int, timeout: float = 15.0) -> int:
    """The number of CDRs in the node's database once it reaches ``count`` (the outbox
    drained) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    cdrs = count_cdrs(node)
    while cdrs < count and time.monotonic() < deadline:
        time.sleep(0.2)
        cdrs = count_cdrs(node)
    return cdrs


def check_billing(node: Node) -> dict[str, Any]:
    """After the billing sweep: every CDR and its money, ``smartswitch audit``."""
    audit = node.audit()
    return {
        "cdrs": count_cdrs(node),
        "audit_exit": audit.returncode,
        "audit": audit.stdout.strip().splitlines()[-1:] or [audit.stderr.strip()],
        "ok": audit.returncode == 0,
    }


# --------------------------------------------------------------------------- measurements


def caller_options(
    target: str,
    calls: int,
    rate: float,
    duration_ms: int,
    timeout_s: float,
    recv_timeout_ms: int = 5000,
    stats_period_s: int | None = None,
    extra: Sequence[str] = (),
    local_ip: str = CALLER_IP,
) -> SippOptions:
    """sipp's built-in UAC on ``local_ip`` dialling DIALLED at ``target``, no message log."""
    return SippOptions(
        scenario="uac",
        local_ip=local_ip,
        local_port=free_port(local_ip),
        remote=target,
        service=DIALLED,
        calls=calls,
        rate=rate,
        duration_ms=duration_ms,
        timeout_s=timeout_s,
        recv_timeout_ms=recv_timeout_ms,
        trace_messages=False,
        stats_period_s=stats_period_s,
        # -l: room for every call at once, so sipp never throttles the rate
        # quietly when answers slow down; a slow node must show as failures
        # or a missed rate, not as a lower load.
        extra=("-l", str(calls), *extra),
    )


def run_step(args: argparse.Namespace, label: str, target: str, rate: int, workdir: Path) -> Step:
    calls = max(1, int(rate * args.seconds))
    options = caller_options(target, calls, rate, args.duration_ms, args.step_timeout)
    proc = Sipp(f"{label}-{rate}", options, workdir / f"{label}-{rate}cps").start()
    note = ""
    try:
        result = proc.wait(args.step_timeout + 15)
    except TimeoutError:
        result = proc.result()  # wait() has stopped it
        note = "sipp did not finish in time"
    finally:
        proc.stop()  # on SIGTERM or Ctrl-C; a no-op once it has exited
    achieved = float(result.stats.get("CallRate(C)", "0") or 0)
    return Step(
        target=label,
        rate=rate,
        calls=calls,
        returncode=result.returncode,
        successful=result.successful,
        failed=result.failed,
        achieved_cps=round(achieved, 1),
        elapsed_s=round(result.elapsed, 2),
        retransmissions=result.stat("Retransmissions"),
        response_ms=_duration_ms(result.stats.get("ResponseTime1(C)", "")),
        note=note,
    )


def sweep(
    args: argparse.Namespace,
    label: str,
    target: str,
    workdir: Path,
    node: Node | None = None,
    billing: bool = False,
) -> list[Step]:
    """With ``billing``, each step must also leave one CDR per call in the node's
    database (counted once the outbox has drained)."""
    steps: list[Step] = []
    for rate in args.rates:
        before = count_cdrs(node) if billing and node is not None else 0
        step = run_step(args, label, target, rate, workdir)
        if node is not None:
            # Let the last calls end (UAS timewait, BYE retransmissions), then
            # ask the node how many it still holds: they should all be gone.
            time.sleep(args.settle)
            if not node.running:
                step.note = f"node died (exit {node.stop()})"
            else:
                step.node_calls_after = _node_calls(node)
                if billing:
                    step.cdrs = wait_cdrs(node, before + step.successful) - before
        else:
            time.sleep(min(args.settle, 1.0))
        steps.append(step)
        print(_step_line(step), flush=True)
        if not step.passed and not args.keep_going:
            break
    return steps


def measure_memory(args: argparse.Namespace, workdir: Path, uas_port: int) -> Memory:
    billing = args.memory_node == "billing"
    running = (
        running_billing_node(args, workdir / "node-memory", f"{CALLEE_IP}:{uas_port}")
        if billing
        else running_node(args, workdir / "node-memory", sip_uri(CALLEE_IP, uas_port))
    )
    with running as node:
        time.sleep(1.0)  # let start-up allocations settle
        idle = node.rss_bytes()
        options = caller_options(
            node.sip_address,
            args.memory_calls,
            args.memory_rate,
            args.memory_duration_ms,
            timeout_s=args.memory_calls / args.memory_rate + args.memory_duration_ms / 1000 + 30,
            recv_timeout_ms=10000,
            stats_period_s=1,
        )
        uac = Sipp("memory", options, workdir / "memory").start()
        started = time.monotonic()
        samples: list[tuple[float, int, int]] = []
        try:
            while uac.running and node.running:
                # The node's own count when its /health gives one, else the
                # calls sipp has up (dumped once a second, so it lags).
                up = _node_calls(node)
                if up is None:
                    up = stat_int(uac.current_stats(), "CurrentCall")
                samples.append((round(time.monotonic() - started, 2), up, node.rss_bytes()))
                time.sleep(0.5)
        finally:
            result = uac.stop()  # returns at once if it has finished
        check = None
        if billing:
            wait_cdrs(node, result.successful, timeout=60.0)
            check = check_billing(node)
    # RSS when the most calls were up; among equal counts, the latest (most grown).
    _, peak_calls, peak_rss = max(samples, key=lambda s: (s[1], s[0]), default=(0, 0, 0))
    per_call = (peak_rss - idle) / peak_calls if peak_calls else None
    return Memory(
        calls_wanted=args.memory_calls,
        idle_rss=idle,
        peak_rss=peak_rss,
        calls_at_peak=peak_calls,
        bytes_per_call=round(per_call, 1) if per_call is not None else None,
        samples=samples,
        successful=result.successful,
        failed=result.failed,
        node=args.memory_node,
        billing_check=check,
    )


# --------------------------------------------------------------------------- report


def _step_line(step: Step) -> str:
    response = f"{step.response_ms:7.1f}" if step.response_ms is not None else "      -"
    left = "" if step.node_calls_after in (None, 0) else f" {step.node_calls_after} calls left"
    if step.cdrs is not None and step.cdrs != step.calls:
        left += f" {step.cdrs} CDRs"
    verdict = "ok" if step.passed else "FAIL"
    return (
        f"  {step.target:7} {step.rate:5d} cps  {step.successful:6d}/{step.calls:<6d} ok "
        f"{step.failed:5d} failed  {step.achieved_cps:7.1f} cps  "
        f"{response} ms to 200  {step.retransmissions:5d} retrans  {verdict}"
        f"{left}{' ' + step.note if step.note else ''}"
    )


def best_rate(steps: Sequence[Step], clean: bool = False) -> int:
    """The highest rate of the unbroken run of passing steps from the bottom; with
    ``clean``, of steps that also needed no retransmission (every answer within sipp's
    500 ms timer: the node kept up rather than caught up)."""
    best = 0
    for step in steps:
        if not step.passed or (clean and step.retransmissions):
            break
        best = step.rate
    return best


def _mb(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rates",
        type=lambda s: [int(r) for r in s.split(",") if r],
        default=list(DEFAULT_RATES),
        help="comma-separated calls/s (default %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of calls per step")
    parser.add_argument("--step-timeout", type=float, default=30.0, help="bound of one step (s)")
    parser.add_argument("--duration-ms", type=int, default=100, help="call length (sipp -d)")
    parser.add_argument("--settle", type=float, default=2.0, help="pause after a step (s)")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at a failed step")
    parser.add_argument("--no-direct", action="store_true", help="skip sipp -> sipp")
    parser.add_argument("--no-node", action="store_true", help="skip sipp -> node -> sipp")
    parser.add_argument(
        "--no-billing", action="store_true", help="skip the sweep through a billing node"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--memory-calls", type=int, default=2000)
    parser.add_argument("--memory-rate", type=float, default=200.0)
    parser.add_argument("--memory-duration-ms", type=int, default=20000)
    parser.add_argument(
        "--memory-node",
        choices=("lab", "billing"),
        default="lab",
        help="the node the memory is measured on (default %(default)s)",
    )
    parser.add_argument("--config", type=Path, help="TOML merged into the node's config")
    parser.add_argument("--node-args", default="", help="more `smartswitch run` arguments")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.extra_config = tomllib.loads(args.config.read_text()) if args.config else {}
    if args.memory_duration_ms * args.memory_rate / 1000 < args.memory_calls:
        parser.error(
            "--memory-duration-ms too short for all --memory-calls to be up at once "
            "(needs duration * rate >= calls)"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, facts = start_run(args.out, "calls")
    results: dict[str, Any] = {
        **facts,
        "settings": {
            "rates": args.rates,
            "seconds_per_step": args.seconds,
            "call_duration_ms": args.duration_ms,
            "step_timeout_s": args.step_timeout,
            "node_args": args.node_args,
            "extra_config": args.extra_config,
        },
        "logs": str(workdir),
    }

    # One callee for the whole run. Its receive timeout outlasts the memory
    # test's long calls (sipp's built-in UAS waits for the BYE).
    uas, uas_port = start_uas(workdir, recv_timeout_ms=args.memory_duration_ms + 15000)
    uas_uri = sip_uri(CALLEE_IP, uas_port)
    print(f"smartswitch call bench, {results['sipp']}, logs in {workdir}")
    exit_code = 0
    try:
        uas.wait_until_listening()
        if not args.no_direct:
            print("direct: sipp UAC -> sipp UAS")
            direct = sweep(args, "direct", f"{CALLEE_IP}:{uas_port}", workdir)
            results["direct"] = [asdict(s) | {"passed": s.passed} for s in direct]
            results["direct_best_cps"] = best_rate(direct)
        if not args.no_node:
            print("node: sipp UAC -> smartswitch -> sipp UAS")
            with running_node(args, workdir / "node-sweep", uas_uri) as node:
                steps = sweep(args, "node", node.sip_address, workdir, node)
            results["node"] = [asdict(s) | {"passed": s.passed} for s in steps]
            results["node_best_cps"] = best_rate(steps)
            results["node_clean_cps"] = best_rate(steps, clean=True)
        if not args.no_billing:
            print("billing: sipp UAC -> smartswitch (ACL, tariff, balance, LCR, CDRs) -> sipp UAS")
            with running_billing_node(
                args, workdir / "billing-sweep", f"{CALLEE_IP}:{uas_port}"
            ) as node:
                steps = sweep(args, "billing", node.sip_address, workdir, node, billing=True)
                results["billing_check"] = check_billing(node)
            results["billing"] = [asdict(s) | {"passed": s.passed} for s in steps]
            results["billing_best_cps"] = best_rate(steps)
            results["billing_clean_cps"] = best_rate(steps, clean=True)
            check = results["billing_check"]
            print(f"  {check['cdrs']} CDRs in all, {' '.join(check['audit'])}")
        if not args.no_memory:
            print(
                f"memory: {args.memory_calls} calls of {args.memory_duration_ms} ms "
                f"at {args.memory_rate:g} cps through a {args.memory_node} node"
            )
            memory = measure_memory(args, workdir, uas_port)
            results["memory"] = asdict(memory)
    except (NodeError, TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        results["error"] = str(exc)
        exit_code = 1
    finally:
        uas.stop()

    print()
    print("summary (highest rate with every call successful):")
    if "direct_best_cps" in results:
        print(f"  sipp -> sipp (the load tool's ceiling): {results['direct_best_cps']} calls/s")
    if "node_best_cps" in results:
        print(f"  sipp -> node -> sipp:                   {results['node_best_cps']} calls/s")
    if results.get("direct_best_cps") and "node_best_cps" in results:
        ratio = results["node_best_cps"] / results["direct_best_cps"]
        results["node_to_direct_ratio"] = round(ratio, 3)
        print(f"  node / direct:                          {ratio:.2f}")
        if results["direct_best_cps"] == max(args.rates):
            print("  (the direct sweep passed its top rate: the ceiling is higher still)")
    if "billing_best_cps" in results:
        print(f"  sipp -> billing node -> sipp:           {results['billing_best_cps']} calls/s")
    if results.get("node_best_cps") and "billing_best_cps" in results:
        ratio = results["billing_best_cps"] / results["node_best_cps"]
        results["billing_to_lab_ratio"] = round(ratio, 3)
        target = ratio >= 0.8 and results["billing_best_cps"] >= 500
        results["billing_target_met"] = target and results["billing_check"]["ok"]
        print(
            f"  billing / lab:                          {ratio:.2f} "
            f"(target >= 0.80 and >= 500 calls/s: {'met' if target else 'NOT met'})"
        )
        if results["node_best_cps"] == max(args.rates):
            print("  (the lab sweep passed its top rate: its ceiling is higher still)")
        if results.get("node_clean_cps") and results.get("billing_clean_cps") is not None:
            clean = results["billing_clean_cps"] / results["node_clean_cps"]
            results["billing_to_lab_clean_ratio"] = round(clean, 3)
            print(
                f"  without retransmissions: lab {results['node_clean_cps']}, billing "
                f"{results['billing_clean_cps']} calls/s, billing / lab {clean:.2f}"
            )
    if "memory" in results:
        mem = results["memory"]
        per_call = mem["bytes_per_call"]
        print(
            f"  memory: idle {_mb(mem['idle_rss'])}, {mem['calls_at_peak']} calls up "
            f"{_mb(mem['peak_rss'])}"
            + (f", {per_call / 1024:.1f} KiB per call" if per_call is not None else "")
            + f" ({mem['node']} node; {mem['successful']} calls successful, {mem['failed']} failed)"
        )
        if mem["billing_check"] is not None:
            check = mem["billing_check"]
            print(f"  memory run's billing: {check['cdrs']} CDRs, {' '.join(check['audit'])}")
            if not check["ok"] or check["cdrs"] != mem["successful"]:
                exit_code = 1
    save_results(workdir, results)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
