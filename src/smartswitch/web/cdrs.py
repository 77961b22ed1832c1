"""The CDR search's web glue (the API's query parameters, the CSV stream) and the calls in
progress, for the API and the UI; the queries themselves are admin's (admin.reports)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import StreamingResponse

from smartswitch.admin.reports import CDR_FIELDS, CdrFilter, cdr_records, csv_row
from smartswitch.web.ports import NodePort, Sessions

CSV_LIMIT = 1_000_000  # one export; narrow the time range for more


def api_filter(
    since: Annotated[datetime | None, Query(description="setup time from (UTC if no zone)")] = None,
    until: Annotated[datetime | None, Query(description="setup time before")] = None,
    peer: Annotated[str | None, Query(max_length=64, description="customer or supplier")] = None,
    number: Annotated[str | None, Query(max_length=64, description="caller or callee")] = None,
    sip_code: Annotated[int | None, Query(ge=100, le=699)] = None,
) -> CdrFilter:
    return CdrFilter(since, until, peer or None, number or None, sip_code)


async def csv_response(sessions: Sessions, flt: CdrFilter) -> StreamingResponse:
    """The filtered CDRs as CSV, oldest first, streamed (the same columns as
    ``smartswitch cdr export``)."""

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CDR_FIELDS, lineterminator="\n")
        writer.writeheader()
        async for record in cdr_records(sessions, flt, CSV_LIMIT):
            writer.writerow(csv_row(record))
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
