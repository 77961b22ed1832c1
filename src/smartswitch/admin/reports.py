"""Reports on the database for every front door: the CLI's exports and listings, the web's
CDR search and export and the dashboard's last hour.

Output conventions, the same everywhere: money as fixed-point decimal text (never a float,
also in JSON, so a spreadsheet or ``jq`` cannot round it), times as ISO 8601 UTC with
milliseconds and a ``Z``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TextIO
from urllib.parse import urlencode

from sqlalchemy import Select, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased

from smartswitch.store.database import Sessions, session_factory
from smartswitch.store.schema import AccountRow, CdrRow, PeerRow, SubscriberRow
from smartswitch.store.types import typed_utc_ms

__all__ = [
    "CDR_FIELDS",
    "Bucket",
    "CdrFilter",
    "cdr_page",
    "cdr_records",
    "csv_row",
    "export_cdrs",
    "iso_time",
    "last_hour",
    "list_accounts",
]

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


def iso_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso_time(value)
    return value


def _cdr_query() -> Select[CdrRow, str, str, str, str, str]:
    customer_peer = aliased(PeerRow)
    supplier_peer = aliased(PeerRow)
    customer_account = aliased(AccountRow)
    supplier_account = aliased(AccountRow)
    return (
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


def _cdr_dict(cdr: CdrRow, names: Sequence[str | None]) -> dict[str, Any]:
    # A peer or account deleted since the call has no name any more: show its id instead.
    c_peer, c_account, s_peer, s_account, subscriber = names
    return {
        "id": cdr.id,
        "call_id": cdr.call_id,
        "node": cdr.node,
        "setup_time": iso_time(cdr.setup_time),
        "answer_time": iso_time(cdr.answer_time),
        "end_time": iso_time(cdr.end_time),
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


@dataclass(frozen=True, slots=True)
class CdrFilter:
    """What the CDR search matches: setup time in [since, until), a peer (customer or
    supplier) by name, a number (caller, callee or the callee sent on), a final SIP code."""

    since: datetime | None = None
    until: datetime | None = None
    peer: str | None = None
    number: str | None = None
    sip_code: int | None = None

    def __post_init__(self) -> None:
        # The CDR table stores UTC to the millisecond: a finer bound would miss the row it names.
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, typed_utc_ms(value))

    def query_string(self) -> str:
        """The filter as URL query parameters (links to the next page, to the CSV)."""
        pairs = {
            "since": iso_time(self.since) or "",
            "until": iso_time(self.until) or "",
            "peer": self.peer or "",
            "number": self.number or "",
            "sip_code": "" if self.sip_code is None else str(self.sip_code),
        }
        return urlencode({k: v for k, v in pairs.items() if v})


async def _where(session: AsyncSession, flt: CdrFilter) -> list[Any]:
    where: list[Any] = []
    if flt.since is not None:
        where.append(CdrRow.setup_time >= flt.since)
    if flt.until is not None:
        where.append(CdrRow.setup_time < flt.until)
    if flt.peer:
        peer_id = await session.scalar(select(PeerRow.id).where(PeerRow.name == flt.peer))
        peer_id = -1 if peer_id is None else peer_id  # an unknown peer matches nothing
        where.append(or_(CdrRow.customer_peer_id == peer_id, CdrRow.supplier_peer_id == peer_id))
    if flt.number:
        where.append(
            or_(
                CdrRow.callee.contains(flt.number, autoescape=True),
                CdrRow.caller.contains(flt.number, autoescape=True),
                CdrRow.callee_out.contains(flt.number, autoescape=True),
            )
        )
    if flt.sip_code is not None:
        where.append(CdrRow.sip_code == flt.sip_code)
    return where


async def cdr_page(
    sessions: Sessions, flt: CdrFilter, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """The number of CDRs the filter matches and one page of them, newest first."""
    async with sessions() as session:
        where = await _where(session, flt)
        total = await session.scalar(select(func.count()).select_from(CdrRow).where(*where))
        rows = await session.execute(
            _cdr_query()
            .where(*where)
            .order_by(None)
            .order_by(CdrRow.setup_time.desc(), CdrRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return total or 0, [_cdr_dict(row[0], row[1:]) for row in rows]


async def cdr_records(
    sessions: Sessions, flt: CdrFilter, limit: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The CDRs the filter matches, oldest first, at most ``limit``, streamed from the
    database (an export of millions of CDRs needs little memory); all if ``limit`` is None."""
    async with sessions() as session:
        where = await _where(session, flt)
        result = await session.stream(
            _cdr_query().where(*where).limit(limit).execution_options(yield_per=1000)
        )
        async for row in result:
            yield _cdr_dict(row[0], row[1:])


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """A CDR record as a CSV row: an absent value is an empty cell."""
    return {k: "" if v is None else v for k, v in record.items()}


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
    async for record in cdr_records(session_factory(engine), CdrFilter(since=since)):
        if writer is not None:
            writer.writerow(csv_row(record))
        else:
            out.write(",\n" if count else "\n")
            out.write(json.dumps(record, ensure_ascii=False))
        count += 1
    if writer is None:
        out.write("\n]\n" if count else "]\n")
    return count


BUCKET_MINUTES = 5


@dataclass(frozen=True, slots=True)
class Bucket:
    """Calls set up in ``BUCKET_MINUTES`` from ``start``: attempts, answered, talk time."""

    start: datetime
    attempts: int
    answered: int
    talk_ms: int

    @property
    def asr(self) -> float | None:
        return 100.0 * self.answered / self.attempts if self.attempts else None

    @property
    def acd(self) -> float | None:
        return self.talk_ms / 1000.0 / self.answered if self.answered else None


async def last_hour(sessions: Sessions, now: datetime | None = None) -> list[Bucket]:
    """The last hour's CDRs in twelve buckets, oldest first: twelve indexed range queries,
    portable between SQLite and MariaDB and cheap with the setup_time index."""
    now = datetime.now(UTC) if now is None else now
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    buckets = []
    answered = case((CdrRow.answer_time.is_not(None), 1), else_=0)
    talk = case((CdrRow.answer_time.is_not(None), CdrRow.duration_ms), else_=0)
    async with sessions() as session:
        for i in range(60 // BUCKET_MINUTES, 0, -1):
            start = end - timedelta(minutes=i * BUCKET_MINUTES)
            stop = start + timedelta(minutes=BUCKET_MINUTES)
            row = (
                await session.execute(
                    select(func.count(), func.sum(answered), func.sum(talk)).where(
                        CdrRow.setup_time >= start, CdrRow.setup_time < stop
                    )
                )
            ).one()
            buckets.append(Bucket(start, int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)))
    return buckets


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
