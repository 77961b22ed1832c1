"""The node's durable outbox: every CDR is on disk before the call's end is acknowledged.

A local SQLite file in WAL mode with ``synchronous=FULL`` (an fsync per commit), written by one
thread so the event loop never waits on the disk. That thread gives up the GIL at every SQLite
step (a row read or written) and waits to take it back while the event loop's thread runs, up to
the interpreter's switch interval (5 ms) each time: a busy loop stretched a 54-row commit to 70 ms
and more, and held the 200 to every BYE past sipp's 500 ms retransmission (``bench/README.md``).
So each of its operations makes a handful of steps whatever its size: many rows in one
statement, and a batch read back as one row (a JSON array). Appends are group-committed: the first append
after a commit waits ``commit_window`` seconds for others to join it, and while one commit is
being synced the next appends gather, so a busy node makes few, larger commits. Each append
carries a callback run on the loop once its record is durable; the B2BUA holds back the 200 to
a BYE (and the BYE to the other leg) until then, so a call the far end sees finished always has
its CDR, even if the node is killed the next instant.

The forwarder (:mod:`smartswitch.store.forwarder`) drains the outbox into the database that
keeps the money (the embedded database of a single node, the primary of a cluster). Delivery
is idempotent (the CDR id), so a crash between delivering and recording it is harmless.

A record has two states here:

* **pending** (``delivered_epoch`` NULL): not delivered yet; :meth:`Outbox.read_batch` reads
  these, oldest first.
* **delivered, unconfirmed** (``delivered_epoch`` = the cluster's epoch when it was delivered):
  the primary committed it, but that alone does not make it safe: a primary that dies before
  its replicas received the transaction takes it with it, and the promoted replica never
  had it. So the record stays here until its CDR id is seen in the node's **own** database
  (:meth:`Outbox.confirm`; on a replica that means replication brought it back, and a
  promotion never picks a replica behind another), and when the epoch moves on (a new
  primary) every record delivered in an older epoch and still unconfirmed becomes pending
  again (:meth:`Outbox.requeue_before`) and is delivered to the new primary, where the CDR id
  makes it count once whether or not the old primary's copy survived.

A forwarder that is not given a way to confirm deletes on delivery (:meth:`delete_through`),
as a single node whose money database is its own may.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from types import NoneType
from typing import Any, get_args, get_type_hints

from smartswitch.model.cdr import CdrAttempt, CdrRecord, HangupSide

log = logging.getLogger("smartswitch.outbox")

Done = Callable[[], None]
_Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _JsonFields:
    """How the values of one dataclass become a JSON object, worked out once from its fields'
    types: their names, one getter for all of their values, and which of them need converting
    (and how) to be JSON values. Appending is on the call path: per record, only the values
    are read and converted."""

    names: tuple[str, ...]
    values: Callable[[Any], tuple[Any, ...]]
    conversions: tuple[tuple[int, _Convert], ...]

    @classmethod
    def of(cls, kind: type[Any], convert: dict[Any, _Convert]) -> _JsonFields:
        hints = get_type_hints(kind)
        names = tuple(f.name for f in fields(kind))
        conversions: list[tuple[int, _Convert]] = []
        for index, name in enumerate(names):
            hint = hints[name]
            args = get_args(hint)
            if NoneType in args:  # None is JSON's null: the other type says what to convert
                (hint,) = (a for a in args if a is not NoneType)
            if hint in convert:
                conversions.append((index, convert[hint]))
            elif hint not in (str, int):
                # A new field's type must be given a conversion here: failing at import
                # beats a payload the forwarder cannot read back.
                raise TypeError(f"{kind.__name__}.{name}: no JSON conversion for {hint}")
        return cls(names, attrgetter(*names), tuple(conversions))

    def as_dict(self, obj: Any) -> dict[str, Any]:
        values = list(self.values(obj))
        for index, convert in self.conversions:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
        return dict(zip(self.names, values, strict=True))


_ATTEMPT = _JsonFields.of(CdrAttempt, {datetime: datetime.isoformat})
_RECORD = _JsonFields.of(
    CdrRecord,
    {
        Decimal: str,
        datetime: datetime.isoformat,
        HangupSide: attrgetter("value"),
        tuple[CdrAttempt, ...]: lambda attempts: [_ATTEMPT.as_dict(a) for a in attempts],
    },
)
# What json.dumps(..., separators=(",", ":")) uses, without making one per record.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def record_to_json(record: CdrRecord) -> str:
    """The record as the outbox keeps it: one compact JSON object, money and times as text."""
    return _ENCODER.encode(_RECORD.as_dict(record))


def record_from_json(text: str) -> CdrRecord:
    data = json.loads(text)
    for key in ("price", "cost"):
        data[key] = Decimal(data[key])
    for key in ("setup_time", "end_time", "answer_time"):
        if data[key] is not None:
            data[key] = datetime.fromisoformat(data[key])
    data["attempts"] = tuple(
        CdrAttempt(
            **{
                **a,
                "start_time": datetime.fromisoformat(a["start_time"]),
                "end_time": datetime.fromisoformat(a["end_time"]),
            }
        )
        for a in data["attempts"]
    )
    return CdrRecord(**data)


# Rows of one INSERT: two parameters each, well under SQLite's smallest limit of parameters in a
# statement (999 before 3.32).
_ROWS_PER_INSERT = 400


@functools.lru_cache(maxsize=8)
def _insert(rows: int) -> str:
    values = ",".join(["(?,?)"] * rows)
    return f"INSERT OR IGNORE INTO outbox (id, payload) VALUES {values}"


def _json_list(values: list[int] | list[str]) -> str:
    """A list as one parameter, read back in SQL by ``json_each``."""
    return json.dumps(values, separators=(",", ":"))


class Outbox:
    def __init__(self, path: Path, *, commit_window: float = 0.0) -> None:
        self.path = path
        # How long the first record of a commit waits for others (the node's
        # outbox_commit_window). Each commit costs a thread hand-off, SQLite's locks, WAL page
        # writes and an fdatasync: at 300 calls/s on 2 cores, 10 ms took the billing node's
        # CPU per call from 1.51 to 1.37 ms (bench/README.md), for 10 ms more before a BYE's 200.
        self.commit_window = commit_window
        self._window: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._queue: list[tuple[str, str, Done | None]] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.appended = asyncio.Event()
        self.depth = 0  # records durable and not yet delivered (pending)
        self.unconfirmed = 0  # delivered, not yet seen in the node's own database

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.depth, self.unconfirmed = await self._run(self._open)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    def _open(self) -> tuple[int, int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " id TEXT NOT NULL UNIQUE,"
            " payload TEXT NOT NULL,"
            " delivered_epoch INTEGER)"
        )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
        if "delivered_epoch" not in columns:  # a file written before the column existed
            conn.execute("ALTER TABLE outbox ADD COLUMN delivered_epoch INTEGER")
        conn.execute(
            "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq)"
            " WHERE delivered_epoch IS NULL"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox_rejected ("
            " seq INTEGER PRIMARY KEY,"
            " id TEXT NOT NULL,"
            " payload TEXT NOT NULL,"
            " error TEXT NOT NULL)"
        )
        self._conn = conn
        return self._counts()

    def _counts(self) -> tuple[int, int]:
        assert self._conn is not None
        pending, delivered = self._conn.execute(
            "SELECT COUNT(*) - COUNT(delivered_epoch), COUNT(delivered_epoch) FROM outbox"
        ).fetchone()
        return int(pending), int(delivered)

    # --- appending (call path: never blocks) ---------------------------------------------------

    def append(self, record: CdrRecord, done: Done | None = None) -> None:
        """Queue ``record`` for the next commit; ``done`` runs on the loop once it is durable.
        Called on the event loop's thread (the commit window is one of its timers)."""
        payload = record_to_json(record)
        with self._lock:
            self._queue.append((record.id, payload, done))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        if self.commit_window > 0 and self._loop is not None:
            self._window = self._loop.call_later(self.commit_window, self._window_over)
        else:
            self._executor.submit(self._flush)

    def _window_over(self) -> None:
        self._window = None
        self._executor.submit(self._flush)

    def _flush(self) -> None:
        with self._lock:
            batch = self._queue
            self._queue = []
            self._flush_scheduled = False
        if not batch:
            return
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN")
            before = conn.total_changes
            for start in range(0, len(batch), _ROWS_PER_INSERT):
                chunk = batch[start : start + _ROWS_PER_INSERT]
                conn.execute(
                    _insert(len(chunk)),
                    [value for record_id, payload, _ in chunk for value in (record_id, payload)],
                )
            inserted = conn.total_changes - before  # an id already there is not a new record
            conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("outbox write of %d records failed; retrying", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            with self._lock:
                self._queue[:0] = batch
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._executor.submit(self._flush)
            return
        callbacks = [done for _, _, done in batch if done is not None]
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._durable, inserted, callbacks)

    def _durable(self, count: int, callbacks: list[Done]) -> None:
        self.depth += count
        self.appended.set()
        for done in callbacks:
            try:
                done()
            except Exception:
                log.exception("outbox callback failed")

    # --- draining (the forwarder) ---------------------------------------------------------------

    async def read_batch(self, limit: int) -> list[tuple[int, CdrRecord]]:
        """The oldest ``limit`` pending records. One that cannot be read back (a payload written by
        another version, a damaged row) would block every later record for ever: it is moved
        to the ``outbox_rejected`` table with the reason, for an operator, and logged."""
        rows: list[tuple[int, str]] = await self._run(self._read, limit)
        return await self._decode(rows, delivered=False)

    async def read_delivered(self, limit: int) -> list[tuple[int, CdrRecord]]:
        """The oldest ``limit`` delivered, unconfirmed records (at start, their charges are
        not in the replicated balances yet either)."""
        rows: list[tuple[int, str]] = await self._run(self._read, limit, "IS NOT NULL")
        return await self._decode(rows, delivered=True)

    async def _decode(
        self, rows: list[tuple[int, str]], *, delivered: bool
    ) -> list[tuple[int, CdrRecord]]:
        batch: list[tuple[int, CdrRecord]] = []
        for seq, payload in rows:
            try:
                batch.append((seq, record_from_json(payload)))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error("outbox record %d cannot be read (%s): set aside", seq, error)
                moved: int = await self._run(self._set_aside, seq, error)
                if delivered:
                    self.unconfirmed -= moved
                else:
                    self.depth -= moved
        return batch

    def _read(self, limit: int, state: str = "IS NULL") -> list[tuple[int, str]]:
        assert self._conn is not None
        (rows,) = self._conn.execute(
            "SELECT json_group_array(json_array(seq, payload)) FROM"
            f" (SELECT seq, payload FROM outbox WHERE delivered_epoch {state} ORDER BY seq LIMIT ?)",
            (limit,),
        ).fetchone()
        # The aggregate's order is not promised: sorted again here.
        return sorted((int(seq), str(payload)) for seq, payload in json.loads(rows))

    def _set_aside(self, seq: int, error: str) -> int:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            conn.execute(
                "INSERT OR REPLACE INTO outbox_rejected (seq, id, payload, error)"
                " SELECT seq, id, payload, ? FROM outbox WHERE seq = ?",
                (error, seq),
            )
            before = conn.total_changes
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            moved = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return moved

    async def delete_through(self, seqs: list[int]) -> None:
        """Forget delivered records at once (no confirmation wanted)."""
        deleted: int = await self._run(self._delete, seqs)
        self.depth -= deleted

    async def mark_delivered(self, seqs: list[int], epoch: int) -> None:
        """``seqs`` were committed by the primary of ``epoch``: kept until confirmed."""
        marked: int = await self._run(
            self._write,
            "UPDATE outbox SET delivered_epoch = ?"
            " WHERE seq IN (SELECT value FROM json_each(?)) AND delivered_epoch IS NULL",
            [(epoch, _json_list(seqs))],
        )
        self.depth -= marked
        self.unconfirmed += marked

    async def delivered_ids(self, limit: int = 5000) -> list[str]:
        """CDR ids of the oldest delivered, unconfirmed records: to look for in the node's
        own database."""
        assert self._conn is not None
        conn = self._conn

        def read() -> list[str]:
            (rows,) = conn.execute(
                "SELECT json_group_array(id) FROM (SELECT id FROM outbox"
                " WHERE delivered_epoch IS NOT NULL ORDER BY seq LIMIT ?)",
                (limit,),
            ).fetchone()
            return [str(i) for i in json.loads(rows)]

        ids: list[str] = await self._run(read)
        return ids

    async def confirm(self, ids: list[str]) -> int:
        """These CDR ids are in the node's own database: their records are done (delivered
        or not: one seen there was delivered by an earlier run). Returns how many left."""
        if not ids:
            return 0
        # Counted by state in the same transaction, and applied as changes: a recount here
        # could race with an append whose "durable" callback has not run on the loop yet.
        listed = _json_list(ids)
        pending: int = await self._run(
            self._write,
            "DELETE FROM outbox"
            " WHERE id IN (SELECT value FROM json_each(?)) AND delivered_epoch IS NULL",
            [(listed,)],
        )
        delivered: int = await self._run(
            self._write,
            "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
            [(listed,)],
        )
        self.depth -= pending
        self.unconfirmed -= delivered
        return pending + delivered

    async def requeue_before(self, epoch: int) -> int:
        """The primary changed: every record delivered in an epoch before ``epoch`` and not
        confirmed is pending again, to be delivered to the new primary. Returns how many."""
        requeued: int = await self._run(
            self._write,
            "UPDATE outbox SET delivered_epoch = NULL WHERE delivered_epoch < ?",
            [(epoch,)],
        )
        if requeued:
            self.depth += requeued
            self.unconfirmed -= requeued
            self.appended.set()
        return requeued

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            before = conn.total_changes
            conn.executemany(sql, rows)
            changed = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return changed

    def _delete(self, seqs: list[int]) -> int:
        return self._write(
            "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
            [(_json_list(seqs),)],
        )

    async def drain_appends(self) -> None:
        """Wait until every record appended so far is durable (without waiting for the
        commit window: the node is stopping, or a caller needs them now)."""
        if self._window is not None:
            self._window.cancel()
            self._window = None
        await self._run(self._flush)

    async def close(self) -> None:
        await self.drain_appends()
        if self._conn is not None:
            await self._run(self._conn.close)
        self._executor.shutdown(wait=True)
