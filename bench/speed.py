#!/usr/bin/env python3
"""The benchmark that decides (issue 13): clean call rates and CPU per call of the billing
node, against Kamailio measured in the same run.

Four systems, one run, the same sipp UAC and UAS on loopback:

1. **direct**: sipp UAC -> sipp UAS, the load tool's own ceiling.
2. **kamailio**: Debian's Kamailio as a minimal stateful proxy (``bench/kamailio.cfg``,
   2 children, ``-m 1024``): the C reference every ratio is taken against.
3. **lab**: a smartswitch node routing by prefix only (the bare B2BUA).
4. **billing**: a smartswitch node identifying the customer by ACL, routing by least cost,
   rating, reserving prepaid time and writing every CDR through its durable outbox.

For each: a sweep of rates, each step ``rate * --seconds`` calls, judged **clean** when it has
0 failed calls, at least 98 % of its calls completed within the step's bound, and sipp's
retransmissions at most 1 % of its calls (one means an answer took over 500 ms). The clean
rate is the highest step of the unbroken run of clean steps from the bottom. Then CPU per
call at a fixed rate (``--cpu-rate``, 300/s), read from ``/proc`` (utime + stime of the
system's processes, children included) across the run, and INVITE-to-200 p50/p99 at half the
clean rate (sipp's ``-trace_rtt``, per call), over the calls after a warm-up of 35 s at that
rate (the node's steady state at it: see :func:`latency_run`). After the billing node's runs,
one CDR per successful call and ``smartswitch audit`` exact. Each run also records the machine
as it was (:class:`Machine`: CPU time its host stole, a fixed probe's time), and the summary
warns when it changed during the run: on these virtual machines it does, by half.

The nodes run what an operator installs (``--core installed``, the default): the wheel built as
``pip install .`` builds it, with the SIP core and B2BUA engine compiled by mypyc where a C
compiler is present (setup.py), unpacked and put first on the nodes' ``PYTHONPATH``.
``--core sources`` runs the checkout's pure-Python sources instead.

Output: a table, ratios to Kamailio, JSON in ``bench/results/speed-<UTC>.json``. Traffic
stays on 127.0.0.0/8; every step is bounded in calls and time; the processes started here are
stopped by their PID.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from benchutil import cpu_ticks, probe_ms, save_results, start_run, steal_percent  # noqa: E402
from calls import (  # noqa: E402
    CALLEE_IP,
    CALLER_IP,
    _duration_ms,
    caller_options,
    check_billing,
    count_cdrs,
    running_billing_node,
    running_node,
    start_uas,
)
from e2e.node import sip_uri, tree_cpu_seconds  # noqa: E402
from e2e.sipp import Sipp, free_port  # noqa: E402
from e2e.wheel import build_wheel  # noqa: E402

_EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))

KAMAILIO_IP = "127.0.0.5"
DEFAULT_RATES = (100, 200, 300, 400, 600, 800, 1000, 1200, 1600, 2000, 2500, 3000)
CLEAN_COMPLETED = 0.98
CLEAN_RETRANSMISSIONS = 0.01
# A run with more of the machine's CPU time stolen than this (percent) is flagged in the summary,
STEAL_WARNING = 2.0
# ... or whose probe's slowest time is more than this times its fastest.
PROBE_WARNING = 1.2
# What an operator runs: the default log level (nothing per call at INFO).
OPERATOR_CONFIG = {"log_level": "info"}


@dataclass
class Machine:
    """The machine while a run went on: the share of its CPU time the host took during it
    (:func:`benchutil.cpu_ticks`) and, for a run that starts on a quiet machine (a system's
    first step, the fixed runs), how long the fixed probe took just before it
    (:func:`benchutil.probe_ms`; after a busy step the system still at work would slow it).
    Figures of runs whose probe took longer, or that had time stolen, measured a slower
    machine: compared with each other they mislead."""

    steal_pct: float | None
    probe_ms: float | None = None


@dataclass
class Step:
    system: str
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    response_ms: float | None
    elapsed_s: float
    cdrs: int | None = None
    machine: Machine | None = None

    @property
    def clean(self) -> bool:
        return (
            self.failed == 0
            and self.successful >= CLEAN_COMPLETED * self.calls
            and self.retransmissions <= CLEAN_RETRANSMISSIONS * self.calls
            and self.cdrs in (None, self.successful)
        )


@dataclass
class FixedRun:
    """A run at one rate: CPU per call, or latency percentiles."""

    system: str
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    cpu_seconds: float | None = None
    cpu_ms_per_call: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    machine: Machine | None = None


# --------------------------------------------------------------------------- Kamailio


@contextlib.contextmanager
def running_kamailio(workdir: Path, uas: str) -> Iterator[tuple[str, int]]:
    """Kamailio on KAMAILIO_IP relaying everything to ``uas``; yields (address, pid)."""
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    modules = next(Path("/usr/lib").glob("*/kamailio/modules"), Path("/usr/lib/kamailio/modules"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(KAMAILIO_IP)
    listen = f"{KAMAILIO_IP}:{port}"
    config = (ROOT / "bench" / "kamailio.cfg").read_text()
    config = config.replace("@LISTEN@", listen).replace("@UAS@", uas)
    config = config.replace("@MPATH@", f"{modules}/")
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(config)
    pidfile = workdir / "kamailio.pid"
    # -DD: in the foreground, with its children; -E: log to stderr.
    command = [binary, "-f", str(cfg), "-m", "1024", "-M", "16", "-P", str(pidfile)]
    command += ["-w", str(workdir), "-E", "-DD"]
    with open(workdir / "kamailio.log", "wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is not None or not pidfile.exists():
            raise RuntimeError(f"kamailio did not start; see {workdir / 'kamailio.log'}")
        time.sleep(0.3)  # its children bind after the pid file
        yield listen, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# --------------------------------------------------------------------------- runs


def run_calls(
    args: argparse.Namespace,
    name: str,
    target: str,
    rate: float,
    calls: int,
    workdir: Path,
    extra: Sequence[str] = (),
    caller_ip: str = CALLER_IP,
    quiet: bool = True,
) -> tuple[Any, Path, Machine]:
    """sipp's result, its directory, and the machine as it was (:class:`Machine`)."""
    # The bound: the step's own length, the calls' length and 3 s of drain; a call not
    # done by then did not complete within the step.
    bound = calls / rate + args.duration_ms / 1000 + 3
    options = caller_options(
        target, calls, rate, args.duration_ms, bound, extra=extra, local_ip=caller_ip
    )
    directory = workdir / name
    probe = probe_ms() if quiet else None
    ticks = cpu_ticks()
    proc = Sipp(name, options, directory).start()
    try:
        result = proc.wait(bound + 15)
    except TimeoutError:
        result = proc.result()
    finally:
        proc.stop()
    return result, directory, Machine(steal_percent(ticks, cpu_ticks()), probe)


def sweep(
    args: argparse.Namespace,
    system: str,
    target: str,
    workdir: Path,
    cdr_count: Callable[[], int] | None = None,
    caller_ip: str = CALLER_IP,
) -> list[Step]:
    """Steps of ``args.rates`` until one is not clean (``args.keep_going``: all of them),
    each ``rate * args.seconds`` calls from sipp's UAC on ``caller_ip`` to ``target``."""
    steps: list[Step] = []
    for rate in args.rates:
        calls = max(1, int(rate * args.seconds))
        before = cdr_count() if cdr_count else 0
        result, _, machine = run_calls(
            args,
            f"{system}-{rate}cps",
            target,
            rate,
            calls,
            workdir,
            caller_ip=caller_ip,
            quiet=not steps,
        )
        step = Step(
            system=system,
            rate=rate,
            calls=calls,
            successful=result.successful,
            failed=result.failed,
            retransmissions=result.stat("Retransmissions"),
            response_ms=_duration_ms(result.stats.get("ResponseTime1(C)", "")),
            elapsed_s=round(result.elapsed, 2),
            machine=machine,
        )
        time.sleep(args.settle)
        if cdr_count is not None:
            step.cdrs = wait_cdrs_by(cdr_count, before + step.successful) - before
        steps.append(step)
        print(_line(step), flush=True)
        if not step.clean and not args.keep_going:
            break
    return steps


def wait_cdrs_by(count: Callable[[], int], wanted: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    seen = count()
    while seen < wanted and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = count()
    return seen


def wait_quiet(pid: int | None, *, below: float = 0.05, timeout: float = 30.0) -> None:
    """Wait until the system's processes use under ``below`` of a core (over 0.5 s)."""
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        time.sleep(0.5)
        if tree_cpu_seconds(pid) - before < below * 0.5:
            return


def clean_rate(steps: Sequence[Step]) -> int:
    best = 0
    for step in steps:
        if not step.clean:
            break
        best = step.rate
    return best


def cpu_run(
    args: argparse.Namespace, system: str, target: str, pid: int, workdir: Path
) -> FixedRun:
    calls = int(args.cpu_rate * args.cpu_seconds)
    before = tree_cpu_seconds(pid)
    result, _, machine = run_calls(args, f"{system}-cpu", target, args.cpu_rate, calls, workdir)
    time.sleep(0.5)  # the last BYEs
    used = tree_cpu_seconds(pid) - before
    return FixedRun(
        system=system,
        rate=args.cpu_rate,
        calls=calls,
        successful=result.successful,
        failed=result.failed,
        retransmissions=result.stat("Retransmissions"),
        cpu_seconds=round(used, 3),
        cpu_ms_per_call=round(1000 * used / result.successful, 3) if result.successful else None,
        machine=machine,
    )


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def latency_run(
    args: argparse.Namespace, system: str, target: str, rate: int, workdir: Path
) -> FixedRun | None:
    """INVITE-to-200 per call (sipp's rtt file, whole milliseconds) at ``rate``, over the
    calls placed after ``args.latency_warmup`` seconds at that rate.

    The warm-up is the node's steady state at the rate: a transaction lingers 64*T1 = 32 s
    after its final answer, so for that long the node still holds the sweep's last (and
    overloaded) step, and its garbage collections walk it. Measured straight after the sweep,
    the figure was that step's after-effect, not the latency at this rate."""
    if rate <= 0:
        return None
    calls = int(rate * (args.latency_warmup + args.latency_seconds))
    warm_ms = args.latency_warmup * 1000
    result, directory, machine = run_calls(
        args,
        f"{system}-latency",
        target,
        rate,
        calls,
        workdir,
        extra=("-trace_rtt", "-rtt_freq", "1"),
    )
    times: list[float] = []
    for path in directory.glob("*_rtt.csv"):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle, delimiter=";"):
                with contextlib.suppress(KeyError, ValueError):
                    if float(row["Date_ms"]) >= warm_ms:
                        times.append(float(row["response_time_ms"]))
    return FixedRun(
        system=system,
        rate=rate,
        calls=calls,
        successful=result.successful,
        failed=result.failed,
        retransmissions=result.stat("Retransmissions"),
        p50_ms=percentile(times, 0.50),
        p99_ms=percentile(times, 0.99),
        machine=machine,
    )


# --------------------------------------------------------------------------- report


def _line(step: Step) -> str:
    response = f"{step.response_ms:7.1f}" if step.response_ms is not None else "      -"
    cdrs = "" if step.cdrs in (None, step.successful) else f" {step.cdrs} CDRs"
    return (
        f"  {step.system:8} {step.rate:5d} cps  {step.successful:6d}/{step.calls:<6d} ok "
        f"{step.failed:5d} failed  {step.retransmissions:5d} retrans  {response} ms to 200  "
        f"{'clean' if step.clean else 'NOT clean'}{cdrs}{machine_note(step.machine)}"
    )


def machine_note(machine: Machine | None) -> str:
    if machine is None:
        return ""
    notes = [f"probe {machine.probe_ms:g} ms"] if machine.probe_ms is not None else []
    if machine.steal_pct:
        notes.append(f"steal {machine.steal_pct:g} %")
    return f"  ({', '.join(notes)})" if notes else ""


def machine_summary(results: dict[str, Any], systems: Sequence[str]) -> dict[str, float]:
    """Over every step and fixed run of ``systems`` in ``results``: the probe's fastest and
    slowest time, and the largest share of CPU time stolen."""
    machines = [
        run["machine"]
        for system in systems
        for run in [
            *results.get(system, {}).get("steps", []),
            results.get(system, {}).get("latency", {}),
            results.get(system, {}).get("cpu", {}),
        ]
        if run.get("machine")
    ]
    if not machines:
        return {}
    summary = {"most_steal_pct": max(m["steal_pct"] or 0.0 for m in machines)}
    probes = [m["probe_ms"] for m in machines if m["probe_ms"] is not None]
    if probes:
        summary |= {"probe_ms_min": min(probes), "probe_ms_max": max(probes)}
    return summary


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return round(value / reference, 3)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--rates",
        type=lambda s: [int(r) for r in s.split(",") if r],
        default=list(DEFAULT_RATES),
        help="comma-separated calls/s of the sweeps (default %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of calls per step")
    parser.add_argument("--duration-ms", type=int, default=100, help="call length (sipp -d)")
    parser.add_argument("--settle", type=float, default=1.5, help="pause after a step (s)")
    parser.add_argument("--keep-going", action="store_true", help="sweep past a step not clean")
    parser.add_argument("--cpu-rate", type=float, default=300.0, help="fixed rate for CPU/call")
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--latency-warmup",
        type=float,
        default=35.0,
        help="seconds at the latency rate before the measured calls (64*T1 and a margin)",
    )
    parser.add_argument(
        "--systems",
        default="direct,kamailio,lab,billing",
        help="which to measure, comma-separated (default %(default)s)",
    )
    parser.add_argument("--node-args", default="", help="more `smartswitch run` arguments")
    parser.add_argument(
        "--core",
        choices=("installed", "sources"),
        default="installed",
        help="run the nodes from the wheel an install builds (the compiled core where a C "
        "compiler is present) or from the checkout's sources (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.extra_config = dict(OPERATOR_CONFIG)
    args.systems = [s for s in args.systems.split(",") if s]
    return args


def measure(
    args: argparse.Namespace,
    system: str,
    target: str,
    pid: int | None,
    workdir: Path,
    results: dict[str, Any],
    cdr_count: Callable[[], int] | None = None,
) -> None:
    steps = sweep(args, system, target, workdir, cdr_count)
    rate = clean_rate(steps)
    entry: dict[str, Any] = {
        "steps": [asdict(s) | {"clean": s.clean} for s in steps],
        "clean_cps": rate,
    }
    # Latency first, at half the clean rate, on a node that has gone quiet: the CPU run at a
    # fixed rate may overload a slow system, and a backlog it leaves behind (retransmissions,
    # CDRs still in the outbox) would be measured as latency.
    wait_quiet(pid)
    latency = latency_run(args, system, target, rate // 2, workdir)
    if latency is not None:
        entry["latency"] = asdict(latency)
        print(
            f"  {system}: INVITE-to-200 p50 {latency.p50_ms} ms, p99 {latency.p99_ms} ms "
            f"at {latency.rate} cps{machine_note(latency.machine)}"
        )
    if pid is not None:
        wait_quiet(pid)
        cpu = cpu_run(args, system, target, pid, workdir)
        entry["cpu"] = asdict(cpu)
        print(
            f"  {system}: CPU {cpu.cpu_ms_per_call} ms per call at {args.cpu_rate:g} cps "
            f"({cpu.successful}/{cpu.calls} ok, {cpu.retransmissions} retrans)"
            f"{machine_note(cpu.machine)}"
        )
    results[system] = entry


def node_path(*first: Path) -> dict[str, str]:
    """A node's ``PYTHONPATH``: ``first`` (a wheel's site, a lever's tree), then the caller's,
    made absolute (a node runs in its own directory). A probe such as bench/gcwatch (a
    sitecustomize) so still loads, and a checkout's src on the caller's path cannot shadow the
    code put first."""
    caller = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    entries = [*map(str, first), *caller]
    return {"PYTHONPATH": os.pathsep.join(entries)} if entries else {}


def node_core(args: argparse.Namespace, build_dir: Path, results: dict[str, Any]) -> dict[str, str]:
    """The nodes' environment for ``args.core`` (:func:`node_path`); what they run goes into
    ``results["core"]``. ``build_dir`` is outside the checkout: the copy of the project built
    there is a second ``smartswitch`` package to mypy and the tests."""
    if args.core == "sources" or not {"lab", "billing"} & set(args.systems):
        results["core"] = {"from": "sources"}
        return node_path()
    print("building the wheel as `pip install .` does (about a minute with the compiled core)")
    installed = build_wheel(build_dir)
    results["core"] = {
        "from": "wheel",
        "wheel": installed.wheel.name,
        "compiled_modules": sorted(installed.compiled),
    }
    print(f"  {installed.wheel.name}: {len(installed.compiled)} modules compiled")
    return node_path(installed.site)


def core_loaded(pid: int) -> bool:
    """Whether the node runs the compiled core: mypyc's shared library is in its memory map (the
    per-module shims are too small to be sure of). Says which."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    loaded = any(line.endswith("__mypyc" + _EXT_SUFFIX) for line in maps.splitlines())
    print(f"  the node runs the {'compiled' if loaded else 'pure-Python'} core")
    return loaded


def report_core(pid: int, results: dict[str, Any]) -> None:
    results["core"]["node_loaded_compiled_core"] = core_loaded(pid)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, facts = start_run(args.out, "speed")
    results: dict[str, Any] = {
        **facts,
        "settings": {
            "rates": args.rates,
            "seconds_per_step": args.seconds,
            "call_duration_ms": args.duration_ms,
            "cpu_rate": args.cpu_rate,
            "clean": "0 failed, >= 98 % completed in the step, retransmissions <= 1 % of calls",
        },
        "logs": str(workdir),
    }
    build_dir = Path(tempfile.mkdtemp(prefix="smartswitch-bench-"))
    try:
        node_env = node_core(args, build_dir / "install", results)
        return run_systems(args, workdir, results, node_env)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)


def run_systems(
    args: argparse.Namespace, workdir: Path, results: dict[str, Any], node_env: dict[str, str]
) -> int:
    uas, uas_port = start_uas(workdir, recv_timeout_ms=15000)
    uas_address = f"{CALLEE_IP}:{uas_port}"
    print(f"smartswitch speed bench, {results['sipp']}, logs in {workdir}")
    exit_code = 0
    try:
        uas.wait_until_listening()
        if "direct" in args.systems:
            print("direct: sipp -> sipp")
            measure(args, "direct", uas_address, None, workdir, results)
        if "kamailio" in args.systems:
            print("kamailio: sipp -> Kamailio stateful proxy -> sipp")
            with running_kamailio(workdir / "kamailio", uas_address) as (address, pid):
                measure(args, "kamailio", address, pid, workdir, results)
        if "lab" in args.systems:
            print("lab: sipp -> smartswitch (prefix routing only) -> sipp")
            lab_uri = sip_uri(CALLEE_IP, uas_port)
            with running_node(args, workdir / "lab", lab_uri, node_env) as node:
                report_core(node.pid, results)
                measure(args, "lab", node.sip_address, node.pid, workdir, results)
        if "billing" in args.systems:
            print("billing: sipp -> smartswitch (ACL, LCR, rating, reservation, CDR) -> sipp")
            with running_billing_node(args, workdir / "billing", uas_address, node_env) as node:
                report_core(node.pid, results)
                measure(
                    args,
                    "billing",
                    node.sip_address,
                    node.pid,
                    workdir,
                    results,
                    cdr_count=lambda: count_cdrs(node),
                )
                results["billing_check"] = check_billing(node)
            print(f"  billing check: {results['billing_check']}")
            if not results["billing_check"]["ok"]:
                exit_code = 1
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        results["error"] = str(exc)
        exit_code = 1
    finally:
        uas.stop()

    reference = results.get("kamailio", {})
    print()
    print("summary (clean calls/s; CPU ms per call; p99 INVITE-to-200 at half the clean rate)")
    for system in args.systems:
        entry = results.get(system)
        if not entry:
            continue
        cpu = entry.get("cpu", {}).get("cpu_ms_per_call")
        p99 = entry.get("latency", {}).get("p99_ms")
        entry["clean_to_kamailio"] = _ratio(entry["clean_cps"], reference.get("clean_cps"))
        entry["cpu_to_kamailio"] = _ratio(cpu, reference.get("cpu", {}).get("cpu_ms_per_call"))
        top = " (top of the sweep)" if entry["clean_cps"] == max(args.rates) else ""
        print(
            f"  {system:8} {entry['clean_cps']:5d}{top:19}  CPU {cpu if cpu is not None else '-'}"
            f"  p99 {p99 if p99 is not None else '-'}  vs kamailio: rate "
            f"{entry['clean_to_kamailio']}, CPU {entry['cpu_to_kamailio']}"
        )
    machine = results["machine"] = machine_summary(results, args.systems)
    if machine:
        fastest = machine.get("probe_ms_min", 0.0)
        slowest = machine.get("probe_ms_max", 0.0)
        print(
            f"machine: the probe took {fastest:g}-{slowest:g} ms on the quiet machine, up to "
            f"{machine['most_steal_pct']:g} % of the CPU time stolen during a run"
        )
        if machine["most_steal_pct"] >= STEAL_WARNING or slowest > PROBE_WARNING * fastest:
            print(
                "warning: the machine changed under the run (its host took CPU time, or the "
                "probe slowed): figures of different steps and systems measured different "
                "machines; run again when it is quiet"
            )
    save_results(workdir, results)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
