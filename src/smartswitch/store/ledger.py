"""The ledger: CDRs and the money they move, written in one transaction per batch.

:func:`apply_cdrs` is what the outbox's forwarder delivers with: the CDRs, their attempts, one
``balance_changes`` row per money movement, and the balance updates, as ONE transaction.
:func:`topup` and :func:`adjust` are the operator's audited credits and corrections.

Money rule, the one the audit checks: every movement *decreases* the balance it touches by the
rated amount, for customers (price) and suppliers (cost) alike, so for every account
``balance == SUM(balance_changes.amount)`` (opening balances and top-ups are rows there too).
A supplier's balance thus goes negative by what we owe it.

Idempotency: a CDR id that is already in the database is skipped together with its money
movements, so a batch delivered twice (a retry after a lost commit acknowledgement, or an outbox
re-sending after a crash) is applied once.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from smartswitch.model.cdr import CdrRecord
from smartswitch.model.ids import new_ulid
from smartswitch.store.schema import (
    AccountRow,
    BalanceChangeKind,
    BalanceChangeRow,
    CdrAttemptRow,
    CdrRow,
)
from smartswitch.store.types import AMOUNT_SCALE, Money, exact_decimal

__all__ = [
    "BalanceChangeResult",
    "UnknownAccountError",
    "adjust",
    "apply_cdrs",
    "existing_cdr_ids",
    "topup",
]

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) list
# Balance updates go through Core (balance = balance + :delta, one executemany), not the ORM.
_ACCOUNTS = AccountRow.metadata.tables[AccountRow.__tablename__]
# CDR batches too: Core executemany on the tables (attribute and column names are the same),
# without the ORM bulk path's per-row mapping step.
_CDRS = CdrRow.metadata.tables[CdrRow.__tablename__]
_CDR_ATTEMPTS = CdrAttemptRow.metadata.tables[CdrAttemptRow.__tablename__]
_BALANCE_CHANGES = BalanceChangeRow.metadata.tables[BalanceChangeRow.__tablename__]


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


async def existing_cdr_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` the database holds: a forwarder's ``confirm`` reads the node's own
    database with it (a delivered record is done once its CDR is seen there)."""
    return await _existing_ids(session, list(ids))


class ReadOnlyDatabase(RuntimeError):
    """The database refuses CDR batches: it is read-only (no longer, or not yet, the primary)."""


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
    if session.get_bind().dialect.name in ("mysql", "mariadb") and await session.scalar(
        text("SELECT @@global.read_only")
    ):
        # A primary being replaced is made read-only, which does not stop a privileged account
        # (root): a batch written then would be a transaction the new primary never gets.
        # Refused here, inside the transaction the promotion's drain waits for; the forwarder
        # retries, and follows the new primary once the epoch moves on.
        raise ReadOnlyDatabase("the database is read-only (a primary being replaced)")
    existing = await _existing_ids(session, list(unique))
    new = [r for cdr_id, r in unique.items() if cdr_id not in existing]
    if not new:
        return 0

    await session.execute(insert(_CDRS), [_cdr_values(r) for r in new])
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
        await session.execute(insert(_CDR_ATTEMPTS), attempts)
    movements = [m for r in new for m in _money_movements(r)]
    if movements:
        await session.execute(insert(_BALANCE_CHANGES), movements)

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
