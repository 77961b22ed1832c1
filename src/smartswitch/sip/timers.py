"""One timer heap per endpoint: every SIP timer and call timer is an entry here.

The asyncio adapter re-arms a single ``loop.call_at`` for :meth:`TimerHeap.next_deadline`
instead of running a task per transaction; tests drive time by calling :meth:`run_due` with a
clock of their own. A callback is called with the time it runs at, then its own arguments:
``callback(now, *args)``, so nothing it does reads a clock.

A cancelled timer stays in the heap until it reaches its top (lazy deletion), unless
cancelled entries come to outnumber the live ones: then the heap is rebuilt without them, as
asyncio's event loop does with its own. Many timers are cancelled long before their deadline
(Timers B and F 32 s ahead, a call's maximum duration hours ahead): without the rebuild they
would pile up by the hundred thousand, and every one is an object the garbage collector walks
at each full collection, pausing the event loop for longer.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

# Below this many cancelled entries a rebuild is not worth its pass over the heap.
COMPACT_MIN = 256


def _nothing(now: float, *args: Any) -> None:
    return None


class Timer:
    __slots__ = ("_heap", "args", "callback", "cancelled", "deadline")

    def __init__(
        self,
        deadline: float,
        callback: Callable[..., None],
        args: tuple[Any, ...],
        heap: TimerHeap | None,
    ) -> None:
        self.deadline = deadline
        self.callback = callback
        self.args = args
        self.cancelled = False
        # The heap that holds the entry, told of its cancellation; None once out of it.
        self._heap = heap

    def cancel(self) -> None:
        # Let go of what the callback would have reached (a transaction, a whole call) now,
        # not when the entry leaves the heap.
        self.callback = _nothing
        self.args = ()
        if self.cancelled:
            return  # fired, or cancelled already: counted once, if at all
        self.cancelled = True
        heap = self._heap
        if heap is not None:
            self._heap = None
            heap._cancelled_one()


class TimerHeap:
    __slots__ = ("_cancelled", "_counter", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._cancelled = 0  # entries in the heap whose timer was cancelled

    def schedule(self, deadline: float, callback: Callable[..., None], *args: Any) -> Timer:
        """Call ``callback(now, *args)`` once ``now`` reaches ``deadline``."""
        timer = Timer(deadline, callback, args, self)
        heapq.heappush(self._heap, (deadline, next(self._counter), timer))
        return timer

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer due at ``now``, in deadline order, passing it ``now``; return how many
        fired."""
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            timer.cancelled = True
            timer._heap = None
            fired += 1
            timer.callback(now, *timer.args)
        return fired

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > COMPACT_MIN and 2 * self._cancelled > len(self._heap):
            # In place: run_due may be iterating over this very list (a callback cancelling).
            heap = self._heap
            heap[:] = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._cancelled = 0

    @property
    def entries(self) -> int:
        """Entries in the heap, cancelled ones included: at most twice ``len()``, or
        ``len()`` + :data:`COMPACT_MIN`, whichever is more."""
        return len(self._heap)

    def __len__(self) -> int:
        """The timers still to fire."""
        return len(self._heap) - self._cancelled
