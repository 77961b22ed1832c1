"""Delivers the outbox to the database that keeps the money, in batches, idempotently.

One path for normal running and for failure: when that database is unreachable (a cluster's
primary is down) delivery fails, the outbox grows, and the forwarder keeps retrying with
back-off; when it is back, the outbox drains without anyone acting. A batch is one transaction
(:func:`smartswitch.store.ledger.apply_cdrs`, which skips records already there), and its
records leave the outbox only after that transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from smartswitch.model.cdr import CdrRecord
from smartswitch.store.outbox import Outbox

log = logging.getLogger("smartswitch.forwarder")

Deliver = Callable[[Sequence[CdrRecord]], Awaitable[int]]


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        deliver: Deliver,
        *,
        batch_size: int = 500,
        retry_delay: float = 0.2,
        max_retry_delay: float = 2.0,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.deliver = deliver
        self.batch_size = batch_size
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.on_delivered = on_delivered
        self.delivered = 0
        self.last_delivery: float | None = None  # wall time
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="forwarder")

    async def run(self) -> None:
        delay = self.retry_delay
        while True:
            # Cleared before the read, not after it: a record made durable while the read
            # runs sets the event again, so an empty read never sleeps on a waiting record.
            self.outbox.appended.clear()
            try:
                batch = await self.outbox.read_batch(self.batch_size)
            except Exception as exc:  # the outbox file itself: keep trying, never die
                log.error("outbox read failed, will retry: %s", exc)
                self.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outbox.appended.wait(), 1.0)
                continue
            try:
                await self.deliver([record for _, record in batch])
            except Exception as exc:
                if self.last_error is None:
                    log.warning("outbox delivery failing, will retry: %s", exc)
                self.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            if self.last_error is not None:
                log.info("outbox delivery works again")
            self.last_error = None
            delay = self.retry_delay
            try:
                await self.outbox.delete_through([seq for seq, _ in batch])
            except Exception as exc:  # delivered: sent again next time, applied once
                log.error("outbox delete after delivery failed, will retry: %s", exc)
                await asyncio.sleep(delay)
                continue
            self.delivered += len(batch)
            self.last_delivery = time.time()
            if self.on_delivered is not None:
                self.on_delivered()

    async def drain(self, timeout: float) -> bool:
        """Wait (at shutdown) until the outbox is empty or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.outbox.depth == 0

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
