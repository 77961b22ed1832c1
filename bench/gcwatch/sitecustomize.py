"""Logs a node's event-loop stalls, for bench runs: put this directory first on PYTHONPATH and
set ``SS_GCWATCH=<prefix>``; every ``smartswitch`` process started so writes
``<prefix>.<pid>`` with one line per garbage collection over 5 ms (generation, milliseconds,
objects collected; the live tracked objects when it took over 50 ms) and per event-loop
callback over 15 ms. How issue 13's collector pauses were found (bench/README.md)::

    SS_GCWATCH=/tmp/gc PYTHONPATH=bench/gcwatch:src .venv/bin/python bench/speed.py \\
        --systems billing --rates 150,300

Never in a measured CPU figure: timing every callback costs the loop a little.
"""

from __future__ import annotations

import asyncio.events
import gc
import os
import sys
import time
from typing import Any

_PREFIX = os.environ.get("SS_GCWATCH")


def _install(prefix: str) -> None:
    out = open(f"{prefix}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 - the process's life
    clock = time.perf_counter
    run = asyncio.events.Handle._run
    started: list[float] = [0.0]

    def timed_run(handle: asyncio.events.Handle) -> None:
        began = clock()
        run(handle)
        took = clock() - began
        if took > 0.015:
            callback = repr(handle._callback)[:200]  # type: ignore[attr-defined]
            out.write(f"{time.time():.3f} callback {took * 1000:.1f}ms {callback}\n")

    def collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = clock()
            return
        took = clock() - started[0]
        if took > 0.005:
            live = len(gc.get_objects()) if took > 0.05 else -1
            out.write(
                f"{time.time():.3f} gc gen{info['generation']} {took * 1000:.1f}ms "
                f"collected={info['collected']} objects={live}\n"
            )

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
    gc.callbacks.append(collection)


if _PREFIX and "smartswitch" in " ".join(sys.argv):
    _install(_PREFIX)
