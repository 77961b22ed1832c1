"""CDR queries (filters, pages, CSV) and the calls in progress, for the API and the UI."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import StreamingResponse
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from smartswitch.admin.reports import CDR_FIELDS, _cdr_dict, _cdr_query
from smartswitch.store.schema import CdrRow, PeerRow
from smartswitch.store.types import utc_ms
from smartswitch.web.ports import NodePort

Sessions = async_sessionmaker[AsyncSession]
CSV_LIMIT = 1_000_000  # one export; narrow the time range for more


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class CdrFilter:
    since: datetime | None = None
    until: datetime | None = None
    peer: str | None = None
    number: str | None = None
    sip_code: int | None = None

    def query_string(self) -> str:
        from urllib.parse import urlencode

        pairs = {
            "since": iso(self.since) or "",
            "until": iso(self.until) or "",
            "peer": self.peer or "",
            "number": self.number or "",
            "sip_code": "" if self.sip_code is None else str(self.sip_code),
        }
        return urlencode({k: v for k, v in pairs.items() if v})


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return utc_ms(value if value.tzinfo else value.replace(tzinfo=UTC))


def api_filter(
    since: Annotated[datetime | None, Query(description="setup time from (UTC if no zone)")] = None,
    until: Annotated[datetime | None, Query(description="setup time before")] = None,
    peer: Annotated[str | None, Query(max_length=64, description="customer or supplier")] = None,
    number: Annotated[str | None, Query(max_length=64, description="caller or callee")] = None,
    sip_code: Annotated[int | None, Query(ge=100, le=699)] = None,
) -> CdrFilter:
    return CdrFilter(_utc(since), _utc(until), peer or None, number or None, sip_code)


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


async def query(
    sessions: Sessions, flt: CdrFilter, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    async with sessions() as session:
        where = await _where(session, flt)
        total = await session.scalar(select(func.count()).select_from(CdrRow).where(*where))
        rows = await session.execute(
            _cdr_query(None)
            .where(*where)
            .order_by(None)
            .order_by(CdrRow.setup_time.desc(), CdrRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return total or 0, [_cdr_dict(row[0], row[1:]) for row in rows]


async def csv_response(sessions: Sessions, flt: CdrFilter) -> StreamingResponse:
    """The filtered CDRs as CSV, oldest first, streamed (the same columns as
    ``smartswitch cdr export``)."""

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CDR_FIELDS, lineterminator="\n")
        writer.writeheader()
        async with sessions() as session:
            where = await _where(session, flt)
            result = await session.stream(
                _cdr_query(None).where(*where).limit(CSV_LIMIT).execution_options(yield_per=1000)
            )
            async for row in result:
                writer.writerow(
                    {k: "" if v is None else v for k, v in _cdr_dict(row[0], row[1:]).items()}
                )
                if out.tell() > 64 * 1024:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
        yield out.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="cdrs.csv"'},
    )


# --------------------------------------------------------------------------------------------
# Calls in progress


def calls_in_progress_list(node: NodePort) -> list[dict[str, Any]]:
    """The calls in progress, longest first."""
    calls = sorted(node.calls(), key=lambda call: -call.age_seconds)
    return [asdict(call) for call in calls]


def hangup(node: NodePort, key: str) -> bool:
    return node.hang_up(key)
