"""CDRs and money: applied once however often delivered, exact to the last 0.0001, and
written in batches off the call path."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin.provisioning import provision
from smartswitch.model.cdr import CdrAttempt, CdrRecord, HangupSide
from smartswitch.model.ids import new_ulid
from smartswitch.store.database import session_factory
from smartswitch.store.ledger import (
    UnknownAccountError,
    adjust,
    apply_cdrs,
    topup,
)
from smartswitch.store.migrate import upgrade
from smartswitch.store.schema import (
    AccountRow,
    BalanceChangeKind,
    BalanceChangeRow,
    CdrAttemptRow,
    CdrRow,
    PeerRow,
)

from .helpers import EXAMPLE, run_with_engine

T0 = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def make_cdr(ids: dict[str, int], price: str, cost: str, **overrides: Any) -> CdrRecord:
    """A CDR of acme-trunk's call answered by carrier-a (ids: names -> ids from the DB)."""
    values: dict[str, Any] = {
        "id": new_ulid(),
        "call_id": f"{new_ulid()}@127.0.0.2",
        "node": "node-1",
        "customer_peer_id": ids["peer:acme-trunk"],
        "customer_account_id": ids["account:acme"],
        "caller": "15550001111",
        "callee": "15551234567",
        "caller_out": "15550001111",
        "callee_out": "+15551234567",
        "setup_time": T0,
        "answer_time": T0 + timedelta(seconds=2),
        "end_time": T0 + timedelta(seconds=63, milliseconds=5),
        "duration_ms": 61_005,
        "billed_seconds": 120,
        "price": Decimal(price),
        "cost": Decimal(cost),
        "currency": "USD",
        "sip_code": 200,
        "sip_reason": "OK",
        "hangup_side": HangupSide.CALLER,
        "hangup_reason": "BYE",
        "supplier_peer_id": ids["peer:carrier-a"],
        "supplier_account_id": ids["account:carrier-a"],
        "attempts": (
            CdrAttempt(
                1, ids["peer:carrier-b"], 503, "Service Unavailable", T0, T0 + timedelta(seconds=1)
            ),
            CdrAttempt(2, ids["peer:carrier-a"], 200, "OK", T0 + timedelta(seconds=1), T0),
        ),
    }
    values.update(overrides)
    return CdrRecord(**values)


async def _setup(engine: AsyncEngine) -> dict[str, int]:
    await provision(engine, EXAMPLE)
    async with session_factory(engine)() as session:
        ids = {f"account:{a.name}": a.id for a in await session.scalars(select(AccountRow))}
        ids.update({f"peer:{p.name}": p.id for p in await session.scalars(select(PeerRow))})
    return ids


async def _balances(engine: AsyncEngine) -> dict[str, Decimal]:
    async with session_factory(engine)() as session:
        return {a.name: a.balance for a in await session.scalars(select(AccountRow))}


async def _audit(engine: AsyncEngine) -> None:
    """balance == SUM(balance_changes.amount) for every account: the cluster audit's rule."""
    async with session_factory(engine)() as session:
        query = select(BalanceChangeRow.account_id, func.sum(BalanceChangeRow.amount))
        # dict(result) would treat the Result as a mapping (it has keys()): unpack rows.
        sums = {
            account_id: total
            for account_id, total in await session.execute(
                query.group_by(BalanceChangeRow.account_id)
            )
        }
        for account in await session.scalars(select(AccountRow)):
            assert account.balance == sums.get(account.id, 0), account.name


async def _apply(engine: AsyncEngine, records: Sequence[CdrRecord]) -> int:
    async with session_factory(engine)() as session, session.begin():
        return await apply_cdrs(session, records)


def test_apply_twice_applies_once(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        ids = await _setup(engine)
        first = make_cdr(ids, "0.0200", "0.0120")
        unanswered = make_cdr(
            ids,
            "0",
            "0",
            answer_time=None,
            duration_ms=0,
            billed_seconds=0,
            sip_code=486,
            sip_reason="Busy Here",
            hangup_side=HangupSide.CALLEE,
            supplier_peer_id=None,
            supplier_account_id=None,
            attempts=(),
        )
        assert await _apply(engine, [first, unanswered, first]) == 2  # repeated in the batch
        assert await _apply(engine, [first, unanswered]) == 0  # delivered again
        second = make_cdr(ids, "0.0100", "0.0060")
        assert await _apply(engine, [first, second]) == 1  # a batch mixing old and new
        balances = await _balances(engine)
        assert balances["acme"] == Decimal("100") - Decimal("0.0300")
        assert balances["carrier-a"] == Decimal("-0.0180")
        assert balances["carrier-b"] == 0
        await _audit(engine)
        async with session_factory(engine)() as session:
            assert await session.scalar(select(func.count()).select_from(CdrRow)) == 3
            stored = await session.get(CdrRow, first.id)
            assert stored is not None
            assert stored.profit == Decimal("0.0080") and stored.price == Decimal("0.02")
            assert stored.setup_time == T0 and stored.end_time == first.end_time
            assert stored.answer_time == T0 + timedelta(seconds=2)
            assert stored.hangup_side is HangupSide.CALLER
            attempts = list(
                await session.scalars(
                    select(CdrAttemptRow)
                    .where(CdrAttemptRow.cdr_id == first.id)
                    .order_by(CdrAttemptRow.seq)
                )
            )
            assert [(a.seq, a.sip_code, a.reason) for a in attempts] == [
                (1, 503, "Service Unavailable"),
                (2, 200, "OK"),
            ]
            changes = {
                c.id: (c.amount, c.kind, c.reference)
                for c in await session.scalars(
                    select(BalanceChangeRow).where(BalanceChangeRow.reference == first.id)
                )
            }
            assert changes == {
                f"{first.id}:c": (Decimal("-0.02"), BalanceChangeKind.CDR, first.id),
                f"{first.id}:s": (Decimal("-0.012"), BalanceChangeKind.CDR, first.id),
            }
            # An unanswered call moves no money: no rows for it.
            assert not list(
                await session.scalars(
                    select(BalanceChangeRow).where(BalanceChangeRow.reference == unanswered.id)
                )
            )

    run_with_engine(db_url, scenario)


def test_a_batch_is_a_few_statements_on_sqlite(tmp_path: Path) -> None:
    # aiosqlite's thread gives up the GIL at each statement SQLite runs and waits up to the
    # switch interval to take it back from a busy event loop: a statement per row took a
    # forwarder's batch of 311 CDRs to 4.5 s on a loaded node. Rows go a page per statement.
    url = f"sqlite+aiosqlite:///{tmp_path / 'money.db'}"
    upgrade(url)
    statements: list[str] = []

    async def scenario(engine: AsyncEngine) -> None:
        ids = await _setup(engine)
        records = [make_cdr(ids, "0.0200", "0.0120") for _ in range(500)]
        async with session_factory(engine)() as session, session.begin():
            raw = await (await session.connection()).get_raw_connection()
            driver = raw.driver_connection  # aiosqlite's Connection
            assert driver is not None
            await driver.set_trace_callback(statements.append)
            assert await apply_cdrs(session, records) == 500
            await driver.set_trace_callback(None)
        assert len(statements) <= 10, statements
        async with session_factory(engine)() as session:
            assert await session.scalar(select(func.count()).select_from(CdrRow)) == 500
            assert await session.scalar(select(func.count()).select_from(CdrAttemptRow)) == 1000
        await _audit(engine)

    run_with_engine(url, scenario)


def test_ten_thousandths_sum_exactly(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        ids = await _setup(engine)
        records = [make_cdr(ids, "0.0001", "0.0001", attempts=()) for _ in range(3000)]
        assert await _apply(engine, records) == 3000
        balances = await _balances(engine)
        assert balances["acme"] == Decimal("99.7000")
        assert balances["carrier-a"] == Decimal("-0.3000")
        async with session_factory(engine)() as session:
            total = await session.scalar(select(func.sum(CdrRow.price)))
            assert total == Decimal("0.3000") and isinstance(total, Decimal)
        await _audit(engine)
        # The largest amounts the columns hold survive too.
        big = make_cdr(ids, "99999999999999.9999", "0", attempts=())
        await _apply(engine, [big])
        async with session_factory(engine)() as session:
            stored = await session.get(CdrRow, big.id)
            assert stored is not None and str(stored.price) == "99999999999999.9999"

    run_with_engine(db_url, scenario)


def test_records_are_validated_when_made() -> None:
    ids = dict.fromkeys(
        (
            "peer:acme-trunk",
            "account:acme",
            "peer:carrier-a",
            "peer:carrier-b",
            "account:carrier-a",
        ),
        1,
    )
    with pytest.raises(ValueError, match="more than 4 decimal places"):
        make_cdr(ids, "0.00001", "0")
    with pytest.raises(ValueError, match="Decimal"):
        dataclasses.replace(make_cdr(ids, "0", "0"), cost=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="naive"):
        make_cdr(ids, "0", "0", setup_time=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="supplier_account_id"):
        make_cdr(ids, "1", "1", supplier_account_id=None)
    record = make_cdr(ids, "1", "0.25", hangup_side="switch")
    assert record.hangup_side is HangupSide.SWITCH and record.profit == Decimal("0.75")
    assert record.end_time.microsecond % 1000 == 0


def test_topup_and_adjust_keep_the_audit_trail(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        await _setup(engine)
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            result = await topup(session, "acme", Decimal("25.5"), "admin", "wire transfer 42")
        assert result.balance == Decimal("125.5")
        async with sessions() as session, session.begin():
            result = await adjust(session, "acme", Decimal("-0.0001"), "admin", "rounding")
        assert result.balance == Decimal("125.4999")
        async with sessions() as session:
            change = await session.get(BalanceChangeRow, result.change_id)
            assert change is not None
            assert (change.kind, change.amount, change.actor, change.note) == (
                BalanceChangeKind.ADJUSTMENT,
                Decimal("-0.0001"),
                "admin",
                "rounding",
            )
        async with sessions() as session:
            with pytest.raises(UnknownAccountError):
                await topup(session, "nobody", Decimal(1), "admin")
            with pytest.raises(ValueError, match="positive"):
                await topup(session, "acme", Decimal(-1), "admin")
            with pytest.raises(ValueError, match="decimal places"):
                await topup(session, "acme", Decimal("0.00001"), "admin")
        await _audit(engine)

    run_with_engine(db_url, scenario)
