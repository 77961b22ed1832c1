"""One timer heap per endpoint: every SIP timer and call timer is an entry here.

The asyncio adapter re-arms a single ``loop.call_at`` for :meth:`TimerHeap.next_deadline`
instead of running a task per transaction; tests drive time by calling :meth:`run_due` with a
clock of their own. A callback is called with the time it runs at, then its own arguments:
``callback(now, *args)``, so nothing it does reads a clock. Cancelled timers stay in the heap
until they reach its top (lazy deletion).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


def _nothing(now: float, *args: Any) -> None:
    return None


class Timer:
    __slots__ = ("args", "callback", "cancelled", "deadline")

    def __init__(
        self, deadline: float, callback: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        self.deadline = deadline
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        # The entry stays in the heap until its deadline (lazy deletion), which may be minutes
        # away (Timer K, keep-alive, a call's maximum duration): let go of what the callback
        # would have reached (a transaction, a whole call) now, not then.
        self.cancelled = True
        self.callback = _nothing
        self.args = ()


class TimerHeap:
    __slots__ = ("_counter", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()

    def schedule(self, deadline: float, callback: Callable[..., None], *args: Any) -> Timer:
        """Call ``callback(now, *args)`` once ``now`` reaches ``deadline``."""
        timer = Timer(deadline, callback, args)
        heapq.heappush(self._heap, (deadline, next(self._counter), timer))
        return timer

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer due at ``now``, in deadline order, passing it ``now``; return how many
        fired."""
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            timer.cancelled = True
            fired += 1
            timer.callback(now, *timer.args)
        return fired

    def __len__(self) -> int:
        return len(self._heap)
