"""The durable file queue: which of this node's files still has to reach which peer.

The CDR outbox's idea (:mod:`smartswitch.store.outbox`) applied to files: one row per (file,
peer) in a local SQLite file in WAL mode, written by one thread so the event loop never waits
on the disk. Writes from the loop (:meth:`FileQueue.add`, :meth:`FileQueue.forget`) return at
once; they are applied in order and group-committed, and each may carry a callback run on the
loop once it is committed (the pushers are woken that way, so no wake-up is lost).

A row leaves the queue only when the pusher has verified the file on the peer
(:meth:`FileQueue.delivered`, by ``seq``: a file added again while it was being pushed has a
new row with a new ``seq`` and stays queued). ``synchronous=NORMAL``, not ``FULL``: a row lost
to a power cut is found again by reconciliation, which compares the files themselves, so an
fsync per captured file would buy nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger("smartswitch.cluster.filequeue")

Done = Callable[[], None]


class Op(StrEnum):
    PUSH = "push"  # the peer must have this file, with our content
    DELETE = "delete"  # the peer must not have it (an explicit removal, not retention)


@dataclass(frozen=True, slots=True)
class QueuedFile:
    seq: int
    relpath: str
    peer: str
    op: Op
    added: float  # wall time of the add, for the delay figures
    attempts: int  # verifications that failed with the peer reachable


@dataclass(frozen=True, slots=True)
class PeerDepth:
    queued: int
    oldest: float | None  # wall time the oldest row was added


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS file_queue ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " relpath TEXT NOT NULL,"
    " peer TEXT NOT NULL,"
    " op TEXT NOT NULL,"
    " added REAL NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_try REAL NOT NULL,"
    " UNIQUE (relpath, peer))",
    "CREATE INDEX IF NOT EXISTS file_queue_due ON file_queue (peer, next_try)",
)

_Write = tuple[str, Sequence[tuple[Any, ...]]]  # statement, parameter rows


class FileQueue:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filequeue")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[_Write, Done | None]] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<FileQueue {self.path}>"

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._run(self._open)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            conn.execute(statement)
        self._conn = conn

    def _transaction(self, writes: Iterable[_Write]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            for statement, rows in writes:
                conn.executemany(statement, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # --- writes from the loop: never wait ---------------------------------------------------

    def add(
        self,
        relpaths: Sequence[str],
        peers: Sequence[str],
        now: float,
        op: Op = Op.PUSH,
        done: Done | None = None,
    ) -> None:
        """Queue ``relpaths`` for every one of ``peers``; a row already there for a (file,
        peer) is replaced (new ``seq``, attempts reset): the file changed or was removed."""
        rows = [(r, p, op.value, now, now) for r in relpaths for p in peers]
        self._submit(
            (
                "INSERT OR REPLACE INTO file_queue (relpath, peer, op, added, next_try)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            ),
            done,
        )

    def forget(self, relpaths: Sequence[str], done: Done | None = None) -> None:
        """Drop every row of these files (deleted here by retention: nothing to send)."""
        self._submit(("DELETE FROM file_queue WHERE relpath = ?", [(r,) for r in relpaths]), done)

    def _submit(self, write: _Write, done: Done | None) -> None:
        with self._lock:
            self._pending.append((write, done))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._executor.submit(self._flush)

    def _flush(self) -> None:
        with self._lock:
            batch = self._pending
            self._pending = []
            self._flush_scheduled = False
        if not batch:
            return
        try:
            self._transaction(write for write, _ in batch)
        except sqlite3.Error:
            log.exception("file queue write of %d changes failed; retrying", len(batch))
            time.sleep(0.5)  # a full or failing disk: do not spin
            with self._lock:
                self._pending[:0] = batch
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._executor.submit(self._flush)
            return
        callbacks = [done for _, done in batch if done is not None]
        loop = self._loop
        if callbacks and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_run_callbacks, callbacks)

    async def flush(self) -> None:
        """Wait until every write submitted so far is committed."""
        await self._run(self._flush)

    # --- the pushers and reconciliation ---------------------------------------------------------

    async def enqueue_missing(self, relpaths: Sequence[str], peer: str, now: float) -> int:
        """Queue files reconciliation found lacking on ``peer``; rows already queued keep
        their state. Returns how many were new."""
        result: int = await self._run(self._enqueue_missing, relpaths, peer, now)
        return result

    def _enqueue_missing(self, relpaths: Sequence[str], peer: str, now: float) -> int:
        conn = self._conn
        assert conn is not None
        before = conn.total_changes
        self._transaction(
            [
                (
                    "INSERT OR IGNORE INTO file_queue (relpath, peer, op, added, next_try)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(r, peer, Op.PUSH.value, now, now) for r in relpaths],
                )
            ]
        )
        return conn.total_changes - before

    async def due(self, peer: str, now: float, limit: int) -> tuple[list[QueuedFile], float | None]:
        """The oldest ``limit`` rows for ``peer`` due at ``now``, and when the next row not
        due yet will be (None: nothing else queued)."""
        result: tuple[list[QueuedFile], float | None] = await self._run(self._due, peer, now, limit)
        return result

    def _due(self, peer: str, now: float, limit: int) -> tuple[list[QueuedFile], float | None]:
        conn = self._conn
        assert conn is not None
        rows = conn.execute(
            "SELECT seq, relpath, op, added, attempts FROM file_queue"
            " WHERE peer = ? AND next_try <= ? ORDER BY next_try, seq LIMIT ?",
            (peer, now, limit),
        ).fetchall()
        later = conn.execute(
            "SELECT MIN(next_try) FROM file_queue WHERE peer = ? AND next_try > ?", (peer, now)
        ).fetchone()[0]
        files = [
            QueuedFile(seq, relpath, peer, Op(op), added, attempts)
            for seq, relpath, op, added, attempts in rows
        ]
        return files, later

    async def delivered(self, seqs: Sequence[int]) -> None:
        await self._run(
            self._transaction, [("DELETE FROM file_queue WHERE seq = ?", [(s,) for s in seqs])]
        )

    async def retry(self, retries: Sequence[tuple[int, float]]) -> None:
        """(seq, next_try) for rows whose verification failed with the peer reachable."""
        await self._run(
            self._transaction,
            [
                (
                    "UPDATE file_queue SET attempts = attempts + 1, next_try = ? WHERE seq = ?",
                    [(next_try, seq) for seq, next_try in retries],
                )
            ],
        )

    async def drop_peer(self, peer: str) -> None:
        """A node left the cluster: its rows go (reconciliation serves it if it returns)."""
        await self._run(self._transaction, [("DELETE FROM file_queue WHERE peer = ?", [(peer,)])])

    async def depth(self) -> dict[str, PeerDepth]:
        result: dict[str, PeerDepth] = await self._run(self._depth)
        return result

    def _depth(self) -> dict[str, PeerDepth]:
        assert self._conn is not None
        return {
            peer: PeerDepth(count, oldest)
            for peer, count, oldest in self._conn.execute(
                "SELECT peer, COUNT(*), MIN(added) FROM file_queue GROUP BY peer"
            )
        }

    async def close(self) -> None:
        if self._loop is None:
            return
        await self.flush()
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)


def _run_callbacks(callbacks: list[Done]) -> None:
    for done in callbacks:
        try:
            done()
        except Exception:
            log.exception("file queue callback failed")
