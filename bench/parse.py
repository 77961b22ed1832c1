#!/usr/bin/env python3
"""Parse/serialise speed and whole calls through the sans-IO B2BUA, in one process, no sockets
(issue 13): source trees compared in the same run.

Two figures per tree, each from the CPU time (``time.process_time``) of a fixed amount of work:

1. **messages/s**: the messages of one call through the B2BUA, as they cross the wire (the
   caller's INVITE, ACK and BYE, the callee's 180, 200 and BYE 200, and what the switch sends
   each side: 13 messages, bodies included), each parsed with ``parse_message`` (the mandatory
   headers checked, as every received message is) and written back with ``to_bytes``.
2. **calls/s**: whole calls (INVITE, 180, 200, ACK, BYE, 200 on both legs) through the real
   :class:`~smartswitch.b2bua.application.SipApplication` driven by ``tests/b2bua/harness.py``
   on its virtual clock: the transaction layer, the engine and the timers included. The
   harness parses what the switch sends, as the far ends would, so about half of this figure's
   parsing is the far ends'.

Each ``--tree NAME=SRC`` (a ``src`` directory: a worktree's, or a copy with mypyc-compiled
modules beside the sources) is measured in a child process with ``PYTHONPATH=SRC``, the trees
taking turns for ``--rounds`` rounds (A B A B ...: the machine's speed drifts); the medians are
printed with their ratio to the first tree, and JSON is written to
``bench/results/parse-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from benchutil import save_results, start_run  # noqa: E402


def call_messages() -> list[bytes]:
    """The bytes of one call's messages, captured from the in-process switch."""
    from b2bua.harness import ALICE, BOB, Calls, Phone, Switch, connect
    from smartswitch.sip.message import parse_message
    from smartswitch.sip.transaction import Address

    captured: list[bytes] = []

    class Recording(Switch):
        def receive(self, data: bytes, source: Address) -> None:
            captured.append(data)
            super().receive(data, source)

        def _collect(self) -> None:
            for data, dest in self.layer.drain():
                captured.append(data)
                self.sent.append((parse_message(data), dest))

    switch = Recording(Calls((BOB,)))
    alice, bob = Phone(switch, ALICE, "alice"), Phone(switch, BOB, "bob")
    connect(switch, alice, bob)
    alice.request("BYE")
    bob.answer(switch.request(BOB, "BYE"), 200)
    return captured


def measure(work: Callable[[int], None], seconds: float) -> float:
    """Rounds of ``work`` per CPU second, after a warm-up, over about ``seconds``; each round
    gets its own number (a call its own Call-ID)."""
    work(0)
    done = 0
    start = time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        done += 1
        work(done)
    return done / elapsed


def child(seconds: float) -> dict[str, Any]:
    """The figures of the tree this process imports ``smartswitch`` from."""
    import smartswitch.sip.message as message_module
    from b2bua.harness import ALICE, BOB, Calls, Phone, Switch, connect
    from smartswitch.sip.message import parse_message

    messages = call_messages()

    def parse_all(_: int) -> None:
        for data in messages:
            parse_message(data).to_bytes()

    calls = Calls((BOB,))
    switch = Switch(calls)

    def one_call(n: int) -> None:
        alice, bob = Phone(switch, ALICE, f"a{n}"), Phone(switch, BOB, "bob")
        connect(switch, alice, bob)
        alice.request("BYE")
        switch.responses(ALICE)
        bob.answer(switch.request(BOB, "BYE"), 200)
        # Time passes so that the transactions' timers fire and their state goes.
        switch.advance(switch.now + 0.01)
        calls.sessions.clear()

    gc.collect()
    gc.freeze()  # as the node does after start-up
    return {
        "compiled": not message_module.__file__.endswith(".py"),
        "messages_per_call": len(messages),
        "messages_per_s": measure(parse_all, seconds) * len(messages),
        "calls_per_s": measure(one_call, seconds),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=SRC",
        help="a source tree to measure (repeat; the first is the reference); "
        "default: this checkout's src",
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns each tree takes")
    parser.add_argument("--seconds", type=float, default=3.0, help="CPU seconds per figure")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.seconds)))
        return 0
    trees: list[tuple[str, Path]] = []
    for spec in args.tree or [f"this={ROOT / 'src'}"]:
        name, _, src = spec.partition("=")
        trees.append((name, Path(src).resolve()))
    workdir, results = start_run(args.out, "parse")
    workdir.rmdir()  # nothing to keep beside the JSON
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for round_ in range(args.rounds):
        for name, src in trees:
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--seconds", str(args.seconds)],
                env={**os.environ, "PYTHONPATH": str(src)},
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(done.stdout)
            runs[name].append(figures)
            print(
                f"round {round_ + 1} {name:>12}: {figures['messages_per_s']:9.0f} messages/s "
                f"{figures['calls_per_s']:7.0f} calls/s"
                + (" (compiled)" if figures["compiled"] else ""),
                flush=True,
            )
    reference = trees[0][0]
    medians = {
        name: {
            key: statistics.median(run[key] for run in runs[name])
            for key in ("messages_per_s", "calls_per_s")
        }
        for name in runs
    }
    print(f"\n{'tree':>12} {'messages/s':>11} {'ratio':>6} {'calls/s':>8} {'ratio':>6}  (medians)")
    for name, figures in medians.items():
        ref = medians[reference]
        print(
            f"{name:>12} {figures['messages_per_s']:11.0f} "
            f"{figures['messages_per_s'] / ref['messages_per_s']:6.2f} "
            f"{figures['calls_per_s']:8.0f} {figures['calls_per_s'] / ref['calls_per_s']:6.2f}"
        )
    results.update(
        trees={name: str(src) for name, src in trees},
        rounds=args.rounds,
        seconds=args.seconds,
        runs=runs,
        medians=medians,
    )
    save_results(workdir, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
