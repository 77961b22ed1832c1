"""Logs a node's event-loop stalls, for bench runs: put this directory first on PYTHONPATH and
set ``SS_GCWATCH=<prefix>``; every ``smartswitch`` process started so writes
``<prefix>.<pid>`` with one line per garbage collection over 5 ms (generation, milliseconds,
objects collected; the live tracked objects when it took over 50 ms) and one each time the
node's event loop ran a 10 ms timer over 15 ms late (a stall, whatever held the loop: the
node's loop is uvloop's, whose callbacks cannot be timed one by one from Python). SIGUSR1
writes a count by type of the live tracked objects, then each generation's size, commonest
tuple shapes (a generation 0 of tens of thousands of objects is the collector's allocation
count held down by as many frees) and largest containers (each collection of a generation
visits every entry of every container in it); SIGUSR2 the same count of the garbage a full
collection finds in reference cycles (what only the collector frees). How issue 13's collector
pauses were found (bench/README.md)::

    SS_GCWATCH=/tmp/gc PYTHONPATH=bench/gcwatch:src .venv/bin/python bench/speed.py \\
        --systems billing --rates 150,300

Never in a measured CPU figure: the 10 ms timer costs the loop a little.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import signal
import sys
import time
from typing import Any

_PREFIX = os.environ.get("SS_GCWATCH")


def _shapes(objects: list[Any]) -> collections.Counter[str]:
    """Tuples by their elements' types: which ones the collector could not untrack."""
    return collections.Counter(
        "(" + ", ".join(type(e).__qualname__ for e in o[:8]) + ")"
        for o in objects
        if type(o) is tuple
    )


def _largest(objects: list[Any], count: int = 4) -> list[tuple[int, str]]:
    """The biggest containers: a collection walks every entry of each one it visits, so one
    large dictionary in a young generation makes every collection of it slow."""
    sizes = []
    for o in objects:
        try:
            sizes.append((len(o), type(o).__qualname__))
        except Exception:  # no length, or one that cannot be taken here
            continue
    return sorted(sizes, reverse=True)[:count]


def _install(prefix: str) -> None:
    out = open(f"{prefix}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 - the process's life
    clock = time.perf_counter
    started: list[float] = [0.0]
    freeze = gc.freeze

    def watch_loop() -> None:
        """The node freezes its start-up objects once, on its running loop: from then on, a
        10 ms timer on that loop tells how late the loop ran it."""
        freeze()
        loop = asyncio.get_running_loop()

        def arm() -> None:
            loop.call_later(0.01, tick, loop.time() + 0.01)

        def tick(due: float) -> None:
            late = loop.time() - due
            if late > 0.015:
                out.write(f"{time.time():.3f} loop late {late * 1000:.1f}ms\n")
            arm()

        arm()

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

    def census(signum: int, frame: Any) -> None:
        """SIGUSR1: the live tracked objects by type; SIGUSR2: the same of what a full
        collection finds in reference cycles (the garbage that only the collector frees)."""
        if signum == signal.SIGUSR2:
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            gc.set_debug(0)
            objects, what = list(gc.garbage), "garbage"
            gc.garbage.clear()
        else:
            objects, what = gc.get_objects(), "live"
        counts = collections.Counter(type(o).__qualname__ for o in objects)
        out.write(f"{time.time():.3f} census {what} {len(objects)}\n")
        for name, n in counts.most_common(40):
            out.write(f"  {n:8} {name}\n")
        for shape, n in _shapes(objects).most_common(10):
            out.write(f"  {n:8} tuple {shape}\n")
        del objects
        if signum == signal.SIGUSR1:
            counts_now = gc.get_count()
            for generation in range(3):
                young = gc.get_objects(generation=generation)
                shapes = _shapes(young)
                out.write(
                    f"  generation {generation}: {len(young)} objects, "
                    f"{shapes.total()} tuples, count {counts_now[generation]}\n"
                )
                for shape, n in shapes.most_common(4):
                    out.write(f"    {n:8} tuple {shape}\n")
                for size, name in _largest(young):
                    out.write(f"    {size:8} entries in a {name}\n")
                del young

    gc.freeze = watch_loop
    gc.callbacks.append(collection)
    signal.signal(signal.SIGUSR1, census)
    signal.signal(signal.SIGUSR2, census)


if _PREFIX and "smartswitch" in " ".join(sys.argv):
    _install(_PREFIX)
