"""Writing CDRs and moving money, off the call path.

The call path hands a finished, rated call to :meth:`CdrWriter.submit`, which only appends to
an in-memory queue.  A background task (:meth:`CdrWriter.run`) writes the queue in batches,
each batch ONE transaction made by :func:`apply_cdrs`: the CDRs, their attempts, one
``balance_changes`` row per money movement, and the balance updates.

Money rule, the one the cluster audit checks: every movement *decreases* the balance it
touches by the rated amount, for customers (price) and suppliers (cost) alike, so for every
account ``balance == SUM(balance_changes.amount)`` (opening balances and top-ups are rows there
too).  A supplier's balance thus goes negative by what we owe it.

Idempotency: a CDR id that is already in the database is skipped together with its money
movements, so a batch delivered twice (a retry after a lost commit acknowledgement, or the
cluster outbox re-sending after a crash) is applied once.  :func:`apply_cdrs` is a plain
database function on purpose: the outbox's forwarder will call it as its delivery function.

Durability: this queue is memory.  Records not yet written when the process dies (at most
one flush interval, or longer while the database is unreachable) are lost until the durable
outbox takes the queue's place.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from smartswitch.store.database import session_factory
from smartswitch.store.ids import new_ulid
from smartswitch.store.schema import (
    AccountRow,
    BalanceChangeKind,
    BalanceChangeRow,
    CdrAttemptRow,
    CdrRow,
    HangupSide,
)
from smartswitch.store.types import AMOUNT_SCALE, Money, exact_decimal, utc_ms

__all__ = [
    "BalanceChangeResult",
    "CdrAttempt",
    "CdrRecord",
    "CdrWriter",
    "UnknownAccountError",
    "adjust",
    "apply_cdrs",
    "topup",
]

log = logging.getLogger(__name__)

MAX_CDR_ID_LENGTH = 38  # leaves room for the ":c" / ":s" suffix in balance_changes.id (40)
_CHUNK = 500  # ids per IN (...) list
# Balance updates go through Core (balance = balance + :delta, one executemany), not the ORM.
_ACCOUNTS = AccountRow.metadata.tables[AccountRow.__tablename__]


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class CdrAttempt:
    """One supplier tried for the call, in order from ``seq`` 1."""

    seq: int
    supplier_peer_id: int
    sip_code: int
    reason: str
    start_time: datetime
    end_time: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_time", utc_ms(self.start_time))
        object.__setattr__(self, "end_time", utc_ms(self.end_time))


@dataclass(frozen=True, slots=True)
class CdrRecord:
    """A finished call, rated: what the CDR table stores, plus its attempts.

    Validated when made (so a bad record fails in the code that built it, not later in the
    background writer): ``price`` and ``cost`` are Decimals with at most 4 places (the rating
    code rounds; the store never does), times are timezone-aware (kept as UTC, millisecond
    precision, as stored), and a cost needs the supplier's account to charge.
    """

    id: str  # a ULID from store.ids.new_ulid(), made by the node
    call_id: str  # the A leg's Call-ID
    node: str
    customer_peer_id: int
    customer_account_id: int
    caller: str  # as received
    callee: str
    caller_out: str  # as sent to the supplier
    callee_out: str
    setup_time: datetime
    answer_time: datetime | None
    end_time: datetime
    duration_ms: int
    billed_seconds: int
    price: Decimal  # charged to the customer
    cost: Decimal  # owed to the supplier
    currency: str
    sip_code: int
    sip_reason: str
    hangup_side: HangupSide
    hangup_reason: str
    supplier_peer_id: int | None = None  # the supplier that answered, if any
    supplier_account_id: int | None = None
    attempts: tuple[CdrAttempt, ...] = ()
    subscriber_id: int | None = None  # the registrar's subscriber of the call, if any

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > MAX_CDR_ID_LENGTH:
            raise ValueError(f"CDR id must be 1-{MAX_CDR_ID_LENGTH} characters: {self.id!r}")
        for name in ("price", "cost"):
            value = getattr(self, name)
            if not isinstance(value, Decimal):
                raise ValueError(f"CDR {name} must be a Decimal, got {value!r}")
            exact_decimal(value, AMOUNT_SCALE)
        if self.cost and self.supplier_account_id is None:
            raise ValueError("a CDR with a cost needs supplier_account_id (whom we owe)")
        object.__setattr__(self, "hangup_side", HangupSide(self.hangup_side))
        object.__setattr__(self, "setup_time", utc_ms(self.setup_time))
        object.__setattr__(self, "end_time", utc_ms(self.end_time))
        if self.answer_time is not None:
            object.__setattr__(self, "answer_time", utc_ms(self.answer_time))
        object.__setattr__(self, "attempts", tuple(self.attempts))

    @property
    def profit(self) -> Decimal:
        return self.price - self.cost

    def charges(self) -> list[tuple[int, Decimal]]:
        """The amounts this call takes from accounts: (account id, amount), customer first."""
        charges = [(self.customer_account_id, self.price)]
        if self.supplier_account_id is not None:
            charges.append((self.supplier_account_id, self.cost))
        return charges


# --------------------------------------------------------------------------------------------
# The database side


def _fit(text: str, length: int) -> str:
    # SIP headers are the remote party's to choose; a CDR with a cut caller beats a CDR that
    # MariaDB's strict mode refuses (and that would block the batch).
    return text if len(text) <= length else text[:length]


def _cdr_values(r: CdrRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "call_id": _fit(r.call_id, 255),
        "node": _fit(r.node, 64),
        "customer_peer_id": r.customer_peer_id,
        "customer_account_id": r.customer_account_id,
        "caller": _fit(r.caller, 128),
        "callee": _fit(r.callee, 128),
        "caller_out": _fit(r.caller_out, 128),
        "callee_out": _fit(r.callee_out, 128),
        "setup_time": r.setup_time,
        "answer_time": r.answer_time,
        "end_time": r.end_time,
        "duration_ms": r.duration_ms,
        "billed_seconds": r.billed_seconds,
        "price": r.price,
        "cost": r.cost,
        "profit": r.profit,
        "currency": r.currency,
        "supplier_peer_id": r.supplier_peer_id,
        "supplier_account_id": r.supplier_account_id,
        "sip_code": r.sip_code,
        "sip_reason": _fit(r.sip_reason, 255),
        "hangup_side": r.hangup_side,
        "hangup_reason": _fit(r.hangup_reason, 255),
        "subscriber_id": r.subscriber_id,
    }


def _money_movements(r: CdrRecord) -> list[dict[str, Any]]:
    """The balance_changes rows of a CDR: ids derived from the CDR id, so they are unique and
    the same on every delivery; the time is the call's end, when the money was due."""
    rows = []
    if r.price:
        rows.append(
            {
                "id": f"{r.id}:c",
                "account_id": r.customer_account_id,
                "amount": -r.price,
                "kind": BalanceChangeKind.CDR,
                "reference": r.id,
                "created_at": r.end_time,
                "actor": _fit(r.node, 64),
                "note": None,
            }
        )
    if r.cost and r.supplier_account_id is not None:
        rows.append(
            {
                "id": f"{r.id}:s",
                "account_id": r.supplier_account_id,
                "amount": -r.cost,
                "kind": BalanceChangeKind.CDR,
                "reference": r.id,
                "created_at": r.end_time,
                "actor": _fit(r.node, 64),
                "note": None,
            }
        )
    return rows


async def _existing_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        found.update(await session.scalars(select(CdrRow.id).where(CdrRow.id.in_(chunk))))
    return found


async def apply_cdrs(session: AsyncSession, records: Sequence[CdrRecord]) -> int:
    """Write ``records`` and their money movements in the session's transaction; how many
    were new.  Records whose id is already stored (or repeated in ``records``) are skipped
    with their money, which makes delivery idempotent.  The caller commits.
    """
    unique: dict[str, CdrRecord] = {}
    for record in records:
        unique.setdefault(record.id, record)
    if not unique:
        return 0
    existing = await _existing_ids(session, list(unique))
    new = [r for cdr_id, r in unique.items() if cdr_id not in existing]
    if not new:
        return 0

    await session.execute(insert(CdrRow), [_cdr_values(r) for r in new])
    attempts = [
        {
            "cdr_id": r.id,
            "seq": a.seq,
            "supplier_peer_id": a.supplier_peer_id,
            "sip_code": a.sip_code,
            "reason": _fit(a.reason, 255),
            "start_time": a.start_time,
            "end_time": a.end_time,
        }
        for r in new
        for a in r.attempts
    ]
    if attempts:
        await session.execute(insert(CdrAttemptRow), attempts)
    movements = [m for r in new for m in _money_movements(r)]
    if movements:
        await session.execute(insert(BalanceChangeRow), movements)

    deltas: dict[int, Decimal] = collections.defaultdict(Decimal)
    for m in movements:
        deltas[m["account_id"]] += m["amount"]
    deltas = {account_id: d for account_id, d in deltas.items() if d}
    if deltas:
        known = set(
            await session.scalars(select(AccountRow.id).where(AccountRow.id.in_(list(deltas))))
        )
        for account_id in sorted(set(deltas) - known):
            # Kept, not refused: the CDR is a fact, and refusing it would block delivery.  The
            # audit reports the orphan movement.
            log.error("CDR money for unknown account id %s (%s)", account_id, deltas[account_id])
        # One UPDATE per account, in id order: concurrent batches from several nodes then
        # lock accounts in the same order and cannot deadlock each other.
        await session.execute(
            update(_ACCOUNTS)
            .where(_ACCOUNTS.c.id == bindparam("b_id"))
            .values(balance=_ACCOUNTS.c.balance + bindparam("b_delta", type_=Money(AMOUNT_SCALE))),
            [{"b_id": account_id, "b_delta": deltas[account_id]} for account_id in sorted(deltas)],
        )
    return len(new)


class UnknownAccountError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no account named {name!r}")
        self.name = name


@dataclass(frozen=True, slots=True)
class BalanceChangeResult:
    change_id: str  # the balance_changes row
    account_id: int
    balance: Decimal  # the account's balance after the change


async def _change_balance(
    session: AsyncSession,
    account_name: str,
    amount: Decimal,
    kind: BalanceChangeKind,
    actor: str,
    note: str | None,
) -> BalanceChangeResult:
    account = await session.scalar(
        select(AccountRow).where(AccountRow.name == account_name).with_for_update()
    )
    if account is None:
        raise UnknownAccountError(account_name)
    await session.execute(
        update(_ACCOUNTS)
        .where(_ACCOUNTS.c.id == account.id)
        .values(balance=_ACCOUNTS.c.balance + bindparam("delta", amount, type_=Money(AMOUNT_SCALE)))
    )
    change_id = new_ulid()
    await session.execute(
        insert(BalanceChangeRow).values(
            id=change_id,
            account_id=account.id,
            amount=amount,
            kind=kind,
            reference=None,
            created_at=datetime.now(UTC),
            actor=_fit(actor, 64),
            note=note,
        )
    )
    balance = await session.scalar(select(_ACCOUNTS.c.balance).where(_ACCOUNTS.c.id == account.id))
    assert balance is not None
    return BalanceChangeResult(change_id, account.id, balance)


async def topup(
    session: AsyncSession, account_name: str, amount: Decimal, actor: str, note: str | None = None
) -> BalanceChangeResult:
    """Credit ``amount`` (> 0, at most 4 places) to the account, with its audit row, in the
    session's transaction (the caller commits).  ``actor`` says who did it (a user name)."""
    amount = exact_decimal(amount, AMOUNT_SCALE)
    if amount <= 0:
        raise ValueError(f"a top-up must be positive, got {amount}")
    return await _change_balance(
        session, account_name, amount, BalanceChangeKind.TOPUP, actor, note
    )


async def adjust(
    session: AsyncSession, account_name: str, amount: Decimal, actor: str, note: str | None = None
) -> BalanceChangeResult:
    """A signed correction of the balance (a refund, a write-off), recorded like a top-up."""
    amount = exact_decimal(amount, AMOUNT_SCALE)
    if not amount:
        raise ValueError("an adjustment of 0 changes nothing")
    return await _change_balance(
        session, account_name, amount, BalanceChangeKind.ADJUSTMENT, actor, note
    )


# --------------------------------------------------------------------------------------------
# The writer


def _is_transient(exc: BaseException) -> bool:
    """Whether retrying the same batch later may succeed (the database is down or busy,
    a deadlock or lock timeout) rather than the batch itself being bad."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.TimeoutError
        | sa_exc.DisconnectionError
        | OSError
        | TimeoutError,
    )


Deliver = Callable[[Sequence[CdrRecord]], Awaitable[int]]


class CdrWriter:
    """Batches CDRs from the call path into the database (see the module docstring).

    Use from the event loop's thread::

        writer = CdrWriter(engine)
        writer.start()            # or: asyncio.create_task(writer.run())
        writer.submit(record)     # from the call path: never waits
        await writer.close()      # at shutdown: writes everything left

    A batch that fails because the database is unreachable or busy is retried, whole, with
    back-off, and nothing is dropped.  A batch that fails for any other reason is retried one
    record at a time so that one bad record cannot hold up the others; a record that still
    fails is logged and kept in :attr:`rejected`.
    """

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
        deliver: Deliver | None = None,
    ) -> None:
        if deliver is None:
            if engine is None:
                raise TypeError("CdrWriter needs an engine or a deliver function")
            deliver = self._deliver_to(engine)
        self._deliver = deliver
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._queue: collections.deque[CdrRecord] = collections.deque()
        self._not_empty = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.written = 0  # records applied (new) so far
        self.rejected: list[CdrRecord] = []

    @staticmethod
    def _deliver_to(engine: AsyncEngine) -> Deliver:
        sessions = session_factory(engine)

        async def deliver(batch: Sequence[CdrRecord]) -> int:
            async with sessions() as session, session.begin():
                return await apply_cdrs(session, batch)

        return deliver

    @property
    def pending(self) -> int:
        """Records submitted and not yet written."""
        return len(self._queue)

    def pending_records(self) -> list[CdrRecord]:
        """A copy of the unwritten records (for a last-resort dump at shutdown)."""
        return list(self._queue)

    def submit(self, record: CdrRecord) -> None:
        """Queue ``record`` for writing; returns at once."""
        if self._closing:
            raise RuntimeError("CdrWriter is closed")
        self._queue.append(record)
        if len(self._queue) == 1:
            self._not_empty.set()
        if len(self._queue) >= self.batch_size:
            self._batch_ready.set()

    def start(self) -> asyncio.Task[None]:
        """Start :meth:`run` as a task of the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="cdr-writer")
        return self._task

    async def run(self) -> None:
        """Write batches until :meth:`close`; then write what is left and return."""
        if self._task is None or self._task.done():
            self._task = asyncio.current_task()
        delay = self.retry_delay
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._not_empty.clear()
                await self._not_empty.wait()
                continue
            if len(self._queue) < self.batch_size and not self._closing:
                # Give the batch up to one interval to fill: fewer, larger transactions.
                self._batch_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_ready.wait(), self.flush_interval)
            if await self._write_batch():
                delay = self.retry_delay
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)

    async def _write_batch(self) -> bool:
        """Write the oldest batch; False if the database is unavailable (retry later)."""
        batch = list(itertools.islice(self._queue, self.batch_size))
        try:
            self.written += await self._deliver(batch)
        except Exception as exc:
            if _is_transient(exc):
                log.warning("CDR batch of %d not written, will retry: %s", len(batch), exc)
                return False
            log.error("CDR batch of %d refused (%s); writing one by one", len(batch), exc)
            for record in batch:
                try:
                    self.written += await self._deliver([record])
                except Exception as one_exc:
                    if _is_transient(one_exc):
                        return False  # the ones before it were written; skipped next time
                    log.error("CDR %s refused, set aside: %s: %r", record.id, one_exc, record)
                    self.rejected.append(record)
                self._queue.popleft()
            return True
        for _ in batch:
            self._queue.popleft()
        return True

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting records and write everything queued.

        Waits at most ``timeout`` seconds (None: for ever) for the database; records still
        unwritten then are logged as lost and left in :meth:`pending_records`.
        """
        self._closing = True
        self._not_empty.set()
        self._batch_ready.set()
        task = self._task
        if task is None or task.done():
            task = self._task = asyncio.ensure_future(self.run())
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.error("CdrWriter closed with %d CDRs unwritten", len(self._queue))
