#!/usr/bin/env python3
"""REGISTER transactions per second with digest authentication through one node (issue 4).

A node in billing mode is provisioned with ``--subscribers`` subscribers; a sipp UAC on
127.0.0.2 registers them in turn (an injection file gives each call its user and password):
REGISTER -> 401 with a fresh nonce -> REGISTER with MD5 credentials -> 200. Each registration
is two REGISTER transactions, both carried by the registrar: the challenge (a nonce: an HMAC
and 16 random bytes) and the verification (HMAC of the nonce, one digest, the replay table,
the binding written to the location service and queued for the database).

The sweep runs ``rate * --seconds`` registrations per step at increasing ``--rates``, each
step bounded by ``--step-timeout``; a step passes when sipp exits 0 with every registration
successful and none failed; the sweep stops at the first failing step (``--keep-going`` to go
on). The figure reported is the highest passing step, in REGISTER transactions per second
(twice the registrations per second). Every step registers the same users with the same
Contact (a fixed port: sipp's own changes from step to step), so later steps refresh the
bindings of earlier ones instead of piling up to ``max_contacts``.

The node's source guard and its flood gate are configured off (``source_rate_limit = 0``,
``flood_rate = 0``, ``flood_total_rate = 0``): every request of the bench comes from one
address, which the default throttles (50 per second) would rightly slow down. The failure ban
stays on (no registration of the bench fails).

Traffic stays on loopback; processes started here are stopped by PID; results go to
bench/results/register-<UTC time>.json (git-ignored) with the sipp and node logs beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import start_run  # noqa: E402
from e2e.node import Node, NodeSpec  # noqa: E402
from e2e.sipp import Sipp, SippOptions, free_port  # noqa: E402

NODE_IP = "127.0.0.1"
PHONES_IP = "127.0.0.2"
DEFAULT_RATES = (100, 200, 400, 600, 800, 1000, 1500, 2000)

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="register with digest (bench)">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:5060>
      Expires: 3600
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:5060>
      [field1]
      Expires: 3600
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" rtd="true"/>
</scenario>
"""


@dataclass
class Step:
    rate: int
    registrations: int
    returncode: int
    successful: int
    failed: int
    elapsed_s: float
    achieved_per_s: float
    """sipp's CallRate(C): registrations per second over the step."""
    retransmissions: int
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful == self.registrations

    @property
    def transactions_per_s(self) -> float:
        return round(2 * self.achieved_per_s, 1)


def password(n: int) -> str:
    """Subscriber ``n``'s password: one the password policy accepts."""
    return f"bench-{n:05d}-kettle-quartz"


def provisioning(subscribers: int) -> str:
    lines = [
        "accounts:",
        "  - {name: phones, currency: USD}",
        "subscribers:",
    ]
    lines += [
        f"  - {{username: u{n:05d}, password: {password(n)}, account: phones}}"
        for n in range(subscribers)
    ]
    return "\n".join(lines) + "\n"


def injection(subscribers: int) -> str:
    rows = ["SEQUENTIAL"]
    rows += [
        f"u{n:05d};[authentication username=u{n:05d} password={password(n)}]"
        for n in range(subscribers)
    ]
    return "\n".join(rows) + "\n"


def run_step(args: argparse.Namespace, node: Node, rate: int, workdir: Path) -> Step:
    count = max(1, int(rate * args.seconds))
    options = SippOptions(
        scenario=workdir / "register.xml",
        local_ip=PHONES_IP,
        local_port=free_port(PHONES_IP),
        remote=node.sip_address,
        calls=count,
        rate=rate,
        timeout_s=args.step_timeout,
        recv_timeout_ms=5000,
        trace_messages=False,
        extra=("-inf", str(workdir / "users.csv"), "-l", str(count)),
    )
    proc = Sipp(f"register-{rate}", options, workdir / f"register-{rate}ps").start()
    note = ""
    try:
        result = proc.wait(args.step_timeout + 15)
    except TimeoutError:
        result = proc.result()
        note = "sipp did not finish in time"
    finally:
        proc.stop()
    return Step(
        rate=rate,
        registrations=count,
        returncode=result.returncode,
        successful=result.successful,
        failed=result.failed,
        elapsed_s=round(result.elapsed, 2),
        achieved_per_s=round(float(result.stats.get("CallRate(C)", "0") or 0), 1),
        retransmissions=result.stat("Retransmissions"),
        note=note,
    )


def _line(step: Step) -> str:
    verdict = "pass" if step.passed else "FAIL"
    return (
        f"  {step.rate:>5}/s  {verdict}  {step.successful}/{step.registrations} registered, "
        f"{step.failed} failed, {step.achieved_per_s:g} registrations/s = "
        f"{step.transactions_per_s:g} REGISTER transactions/s, "
        f"retrans {step.retransmissions}, {step.elapsed_s:g} s {step.note}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rates",
        type=lambda s: [int(r) for r in s.split(",") if r],
        default=list(DEFAULT_RATES),
        help="comma-separated registrations/s (default %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of traffic per step")
    parser.add_argument("--step-timeout", type=float, default=30.0, help="bound of one step (s)")
    parser.add_argument("--subscribers", type=int, default=2000, help="how many to provision")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after a step (s)")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at a failed step")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, facts = start_run(args.out, "register")
    (workdir / "register.xml").write_text(SCENARIO)
    (workdir / "users.csv").write_text(injection(args.subscribers))
    results: dict[str, Any] = {
        **facts,
        "settings": {
            "rates": args.rates,
            "seconds_per_step": args.seconds,
            "step_timeout_s": args.step_timeout,
            "subscribers": args.subscribers,
        },
        "logs": str(workdir),
    }
    spec = NodeSpec(
        workdir=workdir / "node",
        sip_host=NODE_IP,
        config={
            "log_level": "warning",
            "digest_algorithms": ["MD5"],  # sipp's digest is MD5 only
            "source_rate_limit": 0,  # one source sends everything here (see the docstring)
            "flood_rate": 0,
            "flood_total_rate": 0,
        },
    )
    node = Node(spec)
    print(f"smartswitch REGISTER bench, {results['sipp']}, logs in {workdir}")
    started = time.monotonic()
    node.provision(provisioning(args.subscribers))
    print(f"provisioned {args.subscribers} subscribers in {time.monotonic() - started:.1f} s")
    steps: list[Step] = []
    exit_code = 0
    try:
        node.start()
        for rate in args.rates:
            step = run_step(args, node, rate, workdir)
            steps.append(step)
            print(_line(step), flush=True)
            time.sleep(args.settle)
            if not node.running:
                step.note += f" node died (exit {node.stop()})"
                break
            if not step.passed and not args.keep_going:
                break
    except KeyboardInterrupt:
        exit_code = 130
    finally:
        code = node.stop()
        if code != 0:
            print(f"warning: node exited with {code}; log: {node.log_path}", file=sys.stderr)
    passing = [s for s in steps if s.passed]
    best = max(passing, key=lambda s: s.achieved_per_s) if passing else None
    results["steps"] = [asdict(s) | {"passed": s.passed} for s in steps]
    results["best_registrations_per_s"] = best.achieved_per_s if best else 0
    results["best_register_transactions_per_s"] = best.transactions_per_s if best else 0
    path = workdir.with_suffix(".json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    if best is not None:
        print(
            f"best passing step: {best.rate}/s offered, {best.achieved_per_s:g} registrations/s "
            f"= {best.transactions_per_s:g} REGISTER transactions/s with digest, 0 failures"
        )
    else:
        print("no step passed")
        exit_code = exit_code or 1
    print(f"results: {path}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
