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

Deadlines that always lie the same time ahead of when they are set (a transaction lingering
64*T1 after its final response) come due in the order they are set: a :class:`Lane` keeps
them in a FIFO queue instead, against a :class:`Timer`, a heap entry, a bound method and an
argument tuple in the heap (tens of thousands of lingering transactions under load, each
object walked at every full collection). A lane keeps an entry's deadline, subject and tag in
three queues side by side, not as a tuple: a tuple is a tracked object until the collector's
next pass over its generation, and a steady rate starves generation 0's collections (the
tuples made now balance the allocation count against those of half a minute ago freed), so
such tuples piled up by the ten thousand for one long collection.
:meth:`TimerHeap.next_deadline` and :meth:`TimerHeap.run_due` see the heap and its lanes as
one, in deadline order. An entry cannot be cancelled: its callback tells whether it still
stands.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

# Below this many cancelled entries a rebuild is not worth its pass over the heap.
COMPACT_MIN = 256

_NEVER = float("inf")


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


class Lane:
    """Deadlines set in the order they come due, each ``callback(now, subject, tag)`` once
    ``now`` reaches it; made by :meth:`TimerHeap.lane`, run by its heap."""

    __slots__ = ("_callback", "_deadlines", "_heap", "_subjects", "_tags")

    def __init__(self, heap: TimerHeap, callback: Callable[..., None]) -> None:
        self._heap = heap
        self._callback = callback
        self._deadlines: deque[float] = deque()
        self._subjects: deque[Any] = deque()
        self._tags: deque[Any] = deque()

    def push(self, deadline: float, subject: Any, tag: Any) -> None:
        deadlines = self._deadlines
        if deadlines and deadline < deadlines[-1]:
            # Earlier than the last one (a clock that went back): only the heap can keep
            # it in its place.
            self._heap.schedule(deadline, self._callback, subject, tag)
            return
        deadlines.append(deadline)
        self._subjects.append(subject)
        self._tags.append(tag)

    def _pop(self, now: float) -> None:
        """Run the first entry (the caller saw it due)."""
        self._deadlines.popleft()
        self._callback(now, self._subjects.popleft(), self._tags.popleft())

    def __len__(self) -> int:
        return len(self._deadlines)


class TimerHeap:
    __slots__ = ("_cancelled", "_counter", "_heap", "_lanes")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._cancelled = 0  # entries in the heap whose timer was cancelled
        self._lanes: list[Lane] = []

    def schedule(self, deadline: float, callback: Callable[..., None], *args: Any) -> Timer:
        """Call ``callback(now, *args)`` once ``now`` reaches ``deadline``."""
        timer = Timer(deadline, callback, args, self)
        heapq.heappush(self._heap, (deadline, next(self._counter), timer))
        return timer

    def lane(self, callback: Callable[..., None]) -> Lane:
        """A FIFO queue of deadlines run with this heap: for deadlines set in the order they
        come due (a fixed wait from now), which ``callback`` tells apart by subject and
        tag."""
        lane = Lane(self, callback)
        self._lanes.append(lane)
        return lane

    def next_deadline(self) -> float | None:
        """The earliest deadline, of the heap's timers and the lanes' entries."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        deadline, first = self._earliest()
        return deadline if heap or first is not None else None

    def run_due(self, now: float) -> int:
        """Fire every timer and lane entry due at ``now``, in deadline order (the heap's first
        on a tie), passing it ``now``; return how many fired."""
        heap = self._heap
        fired = 0
        while True:
            deadline, first = self._earliest()
            if deadline > now:
                return fired
            if first is not None:
                fired += 1
                first._pop(now)
                continue
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            timer.cancelled = True
            timer._heap = None
            fired += 1
            timer.callback(now, *timer.args)

    def _earliest(self) -> tuple[float, Lane | None]:
        """The earliest deadline (``_NEVER`` if none) and the lane it heads, None if the heap's
        top (cancelled or not) comes first: the heap wins a tie."""
        heap = self._heap
        deadline = heap[0][0] if heap else _NEVER
        first: Lane | None = None
        for lane in self._lanes:
            deadlines = lane._deadlines
            if deadlines and deadlines[0] < deadline:
                deadline = deadlines[0]
                first = lane
        return deadline, first

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
        """Entries in the heap and its lanes, cancelled timers included: at most twice
        ``len()``, or ``len()`` + :data:`COMPACT_MIN`, whichever is more."""
        return len(self._heap) + sum(len(lane) for lane in self._lanes)

    def __len__(self) -> int:
        """The timers still to fire, and the lanes' entries."""
        return len(self._heap) - self._cancelled + sum(len(lane) for lane in self._lanes)
