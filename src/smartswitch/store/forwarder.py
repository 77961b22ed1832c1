"""Delivers the outbox to the database that keeps the money, in batches, idempotently.

One path for normal running and for failure: when that database is unreachable (a cluster's
primary is down) delivery fails, the outbox grows, and the forwarder keeps retrying with
back-off; when it is back, the outbox drains without anyone acting. A batch is one transaction
(:func:`smartswitch.store.ledger.apply_cdrs`, which skips records already there), and its
records leave the outbox only after that transaction committed.

In a cluster that alone is not enough: the primary that committed a batch may die before its
replicas have it. Given ``confirm`` (which of these CDR ids does the node's own database
hold?) and ``epoch`` (the cluster's epoch as the node last read it), the forwarder keeps every
delivered record, stamped with the epoch it was delivered in, until ``confirm`` sees it, and
when the epoch moves on it makes the unconfirmed records of older epochs pending again: they
are delivered to the new primary, and the CDR id makes them count once
(:mod:`smartswitch.store.outbox`). One task does all of it (epoch check, delivery,
confirmation), so a batch in flight during an epoch change can never miss the re-queue: it is
stamped with the epoch read before it was sent, and the next turn re-queues it.

``linger``: after a delivery that left less than a whole batch waiting, the forwarder waits
that long before reading again, so records gather into batches. The first record after a
quiet spell leaves at once; the money is counted on the node from the moment it is durable
(its charges are pending in the accounting), so only the CDR's arrival in the database waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from smartswitch.model.cdr import CdrRecord
from smartswitch.store.outbox import Outbox

log = logging.getLogger("smartswitch.forwarder")

Deliver = Callable[[Sequence[CdrRecord]], Awaitable[int]]
Confirm = Callable[[Sequence[str]], Awaitable[Iterable[str]]]


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
        confirm: Confirm | None = None,
        epoch: Callable[[], int] | None = None,
        confirm_interval: float = 1.0,
        linger: float = 0.0,
    ) -> None:
        self.outbox = outbox
        self.deliver = deliver
        self.batch_size = batch_size
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.on_delivered = on_delivered
        self.confirm = confirm
        self.epoch = epoch or (lambda: 0)
        self.confirm_interval = confirm_interval
        self.linger = linger
        self.requeued = 0  # records sent again after an epoch change
        self._epoch: int | None = None  # the newest epoch seen
        self._confirmed_at = 0.0
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
                epoch = await self._follow_epoch()
                await self._confirm_due()
                batch = await self.outbox.read_batch(self.batch_size)
            except Exception as exc:  # the outbox file itself: keep trying, never die
                log.error("outbox read failed, will retry: %s", exc)
                self.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            if not batch:
                wait = self.confirm_interval if self.outbox.unconfirmed else 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outbox.appended.wait(), wait)
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
            seqs = [seq for seq, _ in batch]
            try:
                if self.confirm is None:
                    await self.outbox.delete_through(seqs)
                else:
                    await self.outbox.mark_delivered(seqs, epoch)
                    self._confirmed_at = 0.0  # look for them soon
            except Exception as exc:  # delivered: sent again next time, applied once
                log.error("outbox update after delivery failed, will retry: %s", exc)
                await asyncio.sleep(delay)
                continue
            self.delivered += len(batch)
            self.last_delivery = time.time()
            if self.on_delivered is not None:
                self.on_delivered()
            if self.linger and self.outbox.depth < self.batch_size:
                # Under steady traffic, one batch per linger instead of one per wake-up:
                # a batch's fixed cost (outbox read and delete, the ledger's transaction,
                # the balance refresh it triggers) is most of a small batch's.
                await asyncio.sleep(self.linger)

    async def _follow_epoch(self) -> int:
        """The epoch to stamp the next delivery with; re-queues on a change."""
        epoch = self.epoch()
        if self.confirm is None:
            return epoch
        if self._epoch is None or epoch > self._epoch:
            requeued = await self.outbox.requeue_before(epoch)
            if requeued:
                log.warning(
                    "epoch %s (a new primary): %d delivered records not seen in this node's "
                    "database are sent again",
                    epoch,
                    requeued,
                )
                self.requeued += requeued
            self._epoch = epoch
        return self._epoch

    async def _confirm_due(self) -> None:
        """Every ``confirm_interval`` (sooner after a delivery): drop the delivered records
        whose CDR ids the node's own database holds."""
        if self.confirm is None or not self.outbox.unconfirmed:
            return
        now = time.monotonic()
        if now - self._confirmed_at < self.confirm_interval:
            return
        self._confirmed_at = now
        ids = await self.outbox.delivered_ids()
        if ids:
            try:
                present = list(await self.confirm(ids))
            except Exception as exc:  # the node's database may be down: try again later
                log.warning("confirming delivered records failed, will retry: %s", exc)
                return
            await self.outbox.confirm(present)

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
