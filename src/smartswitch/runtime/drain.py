"""Draining a node before it is stopped for an upgrade (``smartswitch drain``).

The order matters and is the whole point:

1. **refuse new calls**: every new INVITE is answered 503 with ``Retry-After`` (RFC 3261
   21.5.4), so the customer's equipment (or the dispatcher) takes the call to another node;
   calls in progress, and every request within a dialog, go on untouched;
2. **wait for the calls to end**, up to a deadline; the calls still up at the deadline are
   ended cleanly (BYE to both legs, a CDR each), as at any stop;
3. **flush the outbox**: every finished call's CDR is delivered to the money database before
   the node goes, so nothing waits on this node's disk while it is down (a CDR that cannot be
   delivered within the flush time stays in the durable outbox and leaves at the next start);
4. **stop**: the node exits 0 (under systemd, ``Restart=on-failure`` leaves it stopped), ready
   for the operator to upgrade and start it again.

Everything here runs on the node's event loop; it polls the node's own counters (a few times a
second) instead of hooking into the B2BUA, which does not need to know it is draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from smartswitch.web.ports import DrainStatus

__all__ = ["DrainTarget", "Drainer"]

log = logging.getLogger("smartswitch.runtime.drain")

#: How often the drain looks at the calls and the outbox.
POLL = 0.2


@dataclass(slots=True)
class DrainTarget:
    """What a drain drives, as plain callables (the node supplies them)."""

    refuse_calls: Callable[[int], None]
    calls: Callable[[], int]
    end_calls: Callable[[], None]
    outbox_depth: Callable[[], int | None]  # None: no outbox (lab mode)
    flush_appends: Callable[[], Awaitable[None]]
    stop: Callable[[], None]


class Drainer:
    """One drain of one node: started once, observed by :meth:`status` (see the module
    docstring for the steps). ``clock`` is the loop's monotonic time."""

    def __init__(
        self,
        target: DrainTarget,
        clock: Callable[[], float],
        *,
        deadline: float,
        retry_after: int,
        flush_timeout: float,
    ) -> None:
        self.target = target
        self.clock = clock
        self.started = clock()
        self.deadline = self.started + max(0.0, deadline)
        self.retry_after = retry_after
        self.flush_timeout = flush_timeout
        self.phase = "draining"
        self.calls_ended_at_deadline = 0
        self.finished = asyncio.Event()
        self.started_wall = time.time()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.target.refuse_calls(self.retry_after)
        log.warning(
            "draining: new calls refused (503, Retry-After %d s); %d calls in progress, "
            "deadline in %.0f s",
            self.retry_after,
            self.target.calls(),
            self.deadline - self.started,
        )
        self._task = asyncio.create_task(self._run(), name="drain")

    async def _run(self) -> None:
        target = self.target
        while target.calls() > 0 and self.clock() < self.deadline:
            await asyncio.sleep(POLL)
        left = target.calls()
        if left:
            log.warning("drain deadline: ending the %d calls still in progress", left)
            self.calls_ended_at_deadline = left
            target.end_calls()
            # Their ends (BYE answered, CDR written) take a round trip; bounded anyway.
            grace = self.clock() + 5.0
            while target.calls() > 0 and self.clock() < grace:
                await asyncio.sleep(POLL)
        self.phase = "flushing"
        await target.flush_appends()
        flush_until = self.clock() + self.flush_timeout
        while (target.outbox_depth() or 0) > 0 and self.clock() < flush_until:
            await asyncio.sleep(POLL)
        depth = target.outbox_depth() or 0
        if depth:
            log.warning(
                "drain: %d CDRs not delivered within %.0f s; they stay in the outbox and "
                "leave at the next start",
                depth,
                self.flush_timeout,
            )
        self.phase = "drained"
        log.warning("drained: stopping (outbox %d)", depth)
        self.finished.set()
        target.stop()

    def status(self) -> DrainStatus:
        """Where the drain stands, as the drain command shows it."""
        now = self.clock()
        return DrainStatus(
            phase=self.phase,
            calls=self.target.calls(),
            outbox_depth=self.target.outbox_depth(),
            retry_after=self.retry_after,
            seconds_left=round(max(0.0, self.deadline - now), 1),
            elapsed=round(now - self.started, 1),
            calls_ended_at_deadline=self.calls_ended_at_deadline,
        )

    def cancel(self) -> None:
        """The node stops for another reason (SIGTERM) while draining."""
        if self._task is not None:
            self._task.cancel()

    async def wait(self, timeout: float) -> DrainStatus:
        """The status once the drain finished, or after ``timeout`` s."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), timeout)
        return self.status()
