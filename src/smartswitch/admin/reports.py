"""Operator commands on the database, as plain async functions the CLI wraps.

Output conventions, the same for every command: money as fixed-point decimal text (never a
float, also in JSON, so a spreadsheet or ``jq`` cannot round it), times as ISO 8601 UTC with
milliseconds and a ``Z``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TextIO

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from smartswitch.store.database import session_factory
from smartswitch.store.schema import AccountRow, CdrRow, PeerRow, SubscriberRow
from smartswitch.store.types import utc_ms

__all__ = ["CDR_FIELDS", "export_cdrs", "list_accounts"]

# The exported columns, in order: the CDR table with peer and account names resolved.
CDR_FIELDS = (
    "id",
    "call_id",
    "node",
    "setup_time",
    "answer_time",
    "end_time",
    "duration_ms",
    "billed_seconds",
    "customer_peer",
    "customer_account",
    "caller",
    "callee",
    "caller_out",
    "callee_out",
    "supplier_peer",
    "supplier_account",
    "price",
    "cost",
    "profit",
    "currency",
    "sip_code",
    "sip_reason",
    "hangup_side",
    "hangup_reason",
    "subscriber",  # the registrar's subscriber calling out, or taking a DID call
)


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _time(value)
    return value


def _cdr_query(since: datetime | None) -> Select[CdrRow, str, str, str, str, str]:
    customer_peer = aliased(PeerRow)
    supplier_peer = aliased(PeerRow)
    customer_account = aliased(AccountRow)
    supplier_account = aliased(AccountRow)
    query = (
        select(
            CdrRow,
            customer_peer.name,
            customer_account.name,
            supplier_peer.name,
            supplier_account.name,
            SubscriberRow.username,
        )
        .outerjoin(customer_peer, customer_peer.id == CdrRow.customer_peer_id)
        .outerjoin(customer_account, customer_account.id == CdrRow.customer_account_id)
        .outerjoin(supplier_peer, supplier_peer.id == CdrRow.supplier_peer_id)
        .outerjoin(supplier_account, supplier_account.id == CdrRow.supplier_account_id)
        .outerjoin(SubscriberRow, SubscriberRow.id == CdrRow.subscriber_id)
        .order_by(CdrRow.setup_time, CdrRow.id)
    )
    if since is not None:
        query = query.where(CdrRow.setup_time >= utc_ms(since))
    return query


def _cdr_dict(cdr: CdrRow, names: Sequence[str | None]) -> dict[str, Any]:
    # A peer or account deleted since the call has no name any more: show its id instead.
    c_peer, c_account, s_peer, s_account, subscriber = names
    return {
        "id": cdr.id,
        "call_id": cdr.call_id,
        "node": cdr.node,
        "setup_time": _time(cdr.setup_time),
        "answer_time": _time(cdr.answer_time),
        "end_time": _time(cdr.end_time),
        "duration_ms": cdr.duration_ms,
        "billed_seconds": cdr.billed_seconds,
        # A subscriber's call has no customer peer (id 0): the subscriber column names it.
        "customer_peer": c_peer
        or (None if cdr.customer_peer_id == 0 else f"#{cdr.customer_peer_id}"),
        "customer_account": c_account or f"#{cdr.customer_account_id}",
        "caller": cdr.caller,
        "callee": cdr.callee,
        "caller_out": cdr.caller_out,
        "callee_out": cdr.callee_out,
        "supplier_peer": s_peer
        or (None if cdr.supplier_peer_id is None else f"#{cdr.supplier_peer_id}"),
        "supplier_account": s_account
        or (None if cdr.supplier_account_id is None else f"#{cdr.supplier_account_id}"),
        "price": str(cdr.price),
        "cost": str(cdr.cost),
        "profit": str(cdr.profit),
        "currency": cdr.currency,
        "sip_code": cdr.sip_code,
        "sip_reason": cdr.sip_reason,
        "hangup_side": cdr.hangup_side.value,
        "hangup_reason": cdr.hangup_reason,
        "subscriber": subscriber
        or (None if cdr.subscriber_id is None else f"#{cdr.subscriber_id}"),
    }


async def export_cdrs(
    engine: AsyncEngine,
    fmt: Literal["csv", "json"],
    since: datetime | None,
    out: TextIO,
) -> int:
    """Write the CDRs set up at or after ``since`` (all if None; timezone-aware) to ``out``,
    oldest first, as CSV with a header row or as a JSON array of objects; the count.

    Rows are streamed, so an export of millions of CDRs needs little memory.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"format must be csv or json, not {fmt!r}")
    count = 0
    writer = (
        csv.DictWriter(out, fieldnames=CDR_FIELDS, lineterminator="\n") if fmt == "csv" else None
    )
    if writer is not None:
        writer.writeheader()
    else:
        out.write("[")
    async with session_factory(engine)() as session:
        result = await session.stream(_cdr_query(since).execution_options(yield_per=1000))
        async for row in result:
            record = _cdr_dict(row[0], row[1:])
            if writer is not None:
                writer.writerow({k: "" if v is None else v for k, v in record.items()})
            else:
                out.write(",\n" if count else "\n")
                out.write(json.dumps(record, ensure_ascii=False))
            count += 1
    if writer is None:
        out.write("\n]\n" if count else "]\n")
    return count


_ACCOUNT_FIELDS = ("name", "currency", "balance", "credit_limit", "available", "prepaid")


async def list_accounts(engine: AsyncEngine, fmt: Literal["table", "json"], out: TextIO) -> int:
    """Write every account (by name) with its balance to ``out`` as an aligned text table or
    a JSON array; the count.  ``available`` is balance + credit limit: what calls may spend."""
    if fmt not in ("table", "json"):
        raise ValueError(f"format must be table or json, not {fmt!r}")
    async with session_factory(engine)() as session:
        rows = list(await session.scalars(select(AccountRow).order_by(AccountRow.name)))
    records = [
        {
            "name": a.name,
            "currency": a.currency,
            "balance": str(a.balance),
            "credit_limit": str(a.credit_limit),
            "available": str(a.balance + a.credit_limit),
            "prepaid": a.prepaid,
        }
        for a in rows
    ]
    if fmt == "json":
        json.dump(records, out, indent=2)
        out.write("\n")
        return len(records)
    cells = [list(_ACCOUNT_FIELDS)] + [
        [_text(r[f]) if f != "prepaid" else ("yes" if r[f] else "no") for f in _ACCOUNT_FIELDS]
        for r in records
    ]
    numeric = {"balance", "credit_limit", "available"}
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(_ACCOUNT_FIELDS))]
    for row in cells:
        parts = [
            str(v).rjust(w) if f in numeric else str(v).ljust(w)
            for f, v, w in zip(_ACCOUNT_FIELDS, row, widths, strict=True)
        ]
        out.write("  ".join(parts).rstrip() + "\n")
    return len(records)
