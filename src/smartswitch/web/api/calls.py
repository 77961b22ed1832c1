"""``/api/v1/cdrs``, ``/api/v1/calls`` and ``/api/v1/status``: the calls, done and in progress."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse

from smartswitch.admin.reports import CdrFilter, cdr_page
from smartswitch.web import captures, recordings
from smartswitch.web import cdrs as cdr_queries
from smartswitch.web.api.common import Reader, Writer
from smartswitch.web.shared import web_of
from smartswitch.web.stats import calls_in_progress

router = APIRouter()

CdrQuery = Annotated[CdrFilter, Depends(cdr_queries.api_filter)]


@router.get("/cdrs")
async def list_cdrs(
    request: Request,
    user: Reader,
    flt: CdrQuery,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict[str, Any]:
    """CDRs newest first, filtered by time range, peer (customer or supplier), number
    (caller or callee contains it) and SIP code."""
    total, rows = await cdr_page(web_of(request).sessions, flt, limit, offset)
    captures.with_links(web_of(request).node, "/api/v1", rows)
    recordings.with_links(web_of(request).node.config.data_dir, "/api/v1", rows)
    return {"total": total, "cdrs": rows}


@router.get("/recordings/{name}", response_class=FileResponse)
async def recording_download(
    request: Request, user: Reader, name: str, download: bool = False
) -> Response:
    """A call's recording (``recording`` in a CDR of ``/cdrs``): ``<Call-ID>.wav`` or
    ``.pcap``, from this node's copy (synced from the node that relayed the call)."""
    return recordings.download(web_of(request).node.config.data_dir, name, download)


@router.get("/captures/{origin}/{cdr_id}.pcap", response_class=FileResponse)
async def capture_download(request: Request, user: Reader, origin: str, cdr_id: str) -> Response:
    """The pcap of a call (``capture`` in a CDR of ``/cdrs``), from this node's copy."""
    return captures.download(web_of(request).node, origin, cdr_id)


@router.get("/cdrs.csv", response_class=PlainTextResponse)
async def export_cdrs(request: Request, user: Reader, flt: CdrQuery) -> Response:
    return await cdr_queries.csv_response(web_of(request).sessions, flt)


@router.get("/calls")
async def list_calls(request: Request, user: Reader) -> list[dict[str, Any]]:
    return cdr_queries.calls_in_progress_list(web_of(request).node)


@router.delete("/calls/{key}", status_code=204)
async def hangup_call(request: Request, key: str, user: Writer) -> Response:
    """Hang the call up (BYE to both sides, or CANCEL/503 before the answer)."""
    if not cdr_queries.hangup(web_of(request).node, key):
        raise HTTPException(404, f"no call {key!r} in progress")
    return Response(status_code=204)


@router.get("/status")
async def status(request: Request, user: Reader) -> dict[str, Any]:
    web = web_of(request)
    return {
        "node": web.config.node_id,
        "read_only": web.read_only,
        "primary": web.primary if web.read_only else None,
        "calls_in_progress": calls_in_progress(web.node),
        "calls_per_second": round(web.sampler.cps(), 3),
    }
