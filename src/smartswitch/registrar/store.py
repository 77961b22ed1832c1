"""The location service persisted: write-behind to the ``registrations`` table, read at start.

Nothing here is on the SIP path. The location service tells :meth:`RegistrationStore.on_change`
of every change (a dict assignment, no IO); a background task writes what changed every
``interval`` seconds in one transaction, the latest state of each binding only (a phone that
refreshed five times since the last write costs one row). At start :meth:`load` reads back the
bindings this node persisted that have not expired, and deletes the rest.

A crash loses at most ``interval`` seconds of changes: a phone whose REGISTER was lost that
way is found again at its next refresh. A database that is down delays the writes (they are
kept and retried, newest state winning); calls and REGISTERs go on from memory.

Rows are per node (``node`` column): each node persists and reloads the bindings it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from smartswitch.registrar.location import Binding, BindingChange, ChangeKind
from smartswitch.sip.transaction import Address
from smartswitch.store.schema import RegistrationRow

__all__ = ["RegistrationStore", "binding_row_id"]

log = logging.getLogger("smartswitch.registrar.store")

_CHUNK = 500


def binding_row_id(binding: Binding) -> str:
    """The row id of a binding: a digest of its AOR and normalised contact (40 hex digits)."""
    return hashlib.sha1(
        f"{binding.aor}\x00{binding.key}".encode(), usedforsecurity=False
    ).hexdigest()


def _time(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


def _values(node: str, row_id: str, b: Binding) -> dict[str, object]:
    return {
        "node": node,
        "id": row_id,
        "aor": b.aor,
        "contact": b.contact,
        "expires_at": _time(b.expires_at),
        "registered_at": _time(b.registered_at),
        "call_id": b.call_id[:255],
        "cseq": b.cseq,
        "transport": b.source.transport,
        "source_host": b.source.host,
        "source_port": b.source.port,
        "user_agent": b.user_agent[:255],
        "q": b.q,
        "origin_node": b.node or node,
    }


class RegistrationStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], node: str, interval: float = 0.5
    ) -> None:
        self.sessions = sessions
        self.node = node
        self.interval = interval
        self._pending: dict[str, Binding | None] = {}  # row id -> latest state (None: gone)
        self._task: asyncio.Task[None] | None = None
        self.stats = {"written": 0, "deleted": 0, "failures": 0}
        self._failing = 0  # consecutive failed writes

    def on_change(self, change: BindingChange) -> None:
        """A location listener: remember the binding's latest state for the next write."""
        binding = change.binding
        self._pending[binding_row_id(binding)] = binding if change.kind is ChangeKind.SET else None

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def load(self, now: float) -> list[Binding]:
        """The bindings this node persisted that are still live at wall-clock ``now``.

        Expired rows are deleted on the way; where the database refuses writes (a cluster's
        read-only replica) that is logged and the node starts all the same."""
        cutoff = _time(now)
        try:
            async with self.sessions() as session, session.begin():
                await session.execute(
                    delete(RegistrationRow).where(
                        RegistrationRow.node == self.node, RegistrationRow.expires_at <= cutoff
                    )
                )
        except Exception as exc:
            log.warning("expired registrations not deleted: %s", exc)
        async with self.sessions() as session:
            rows = await session.scalars(
                select(RegistrationRow).where(
                    RegistrationRow.node == self.node, RegistrationRow.expires_at > cutoff
                )
            )
            return [
                Binding(
                    aor=row.aor,
                    contact=row.contact,
                    expires_at=row.expires_at.timestamp(),
                    call_id=row.call_id,
                    cseq=row.cseq,
                    source=Address(row.transport, row.source_host, row.source_port),
                    registered_at=row.registered_at.timestamp(),
                    user_agent=row.user_agent,
                    q=row.q,
                    node=row.origin_node,
                )
                for row in rows
            ]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registrations-store")

    async def _run(self) -> None:
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            # A database that refuses (down, or a read-only replica) is asked less and less
            # often, up to every 30 s; the changes wait in memory, the newest state winning.
            delay = self.interval if await self.flush() else min(30.0, delay * 2)

    async def flush(self) -> bool:
        """Write every pending change now, in one transaction; on failure keep them (False)."""
        if not self._pending:
            return True
        batch = self._pending
        self._pending = {}
        try:
            async with self.sessions() as session, session.begin():
                ids = list(batch)
                for start in range(0, len(ids), _CHUNK):
                    await session.execute(
                        delete(RegistrationRow).where(
                            RegistrationRow.node == self.node,
                            RegistrationRow.id.in_(ids[start : start + _CHUNK]),
                        )
                    )
                rows = [_values(self.node, i, b) for i, b in batch.items() if b is not None]
                if rows:
                    await session.execute(insert(RegistrationRow), rows)
        except Exception as exc:
            self.stats["failures"] += 1
            level = logging.WARNING if self._failing == 0 else logging.DEBUG
            self._failing += 1
            log.log(level, "registrations not persisted yet (%d kept): %s", len(batch), exc)
            # Changes made meanwhile are newer than the batch's: they win.
            batch.update(self._pending)
            self._pending = batch
            return False
        if self._failing:
            log.info("registrations persisted again after %d failed writes", self._failing)
            self._failing = 0
        self.stats["written"] += len(rows)
        self.stats["deleted"] += len(batch) - len(rows)
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
