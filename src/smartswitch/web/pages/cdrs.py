"""The CDR pages: filters, pages of results, CSV."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from smartswitch.admin import fields
from smartswitch.admin.reports import CdrFilter, cdr_page
from smartswitch.web import captures, recordings
from smartswitch.web import cdrs as cdr_queries
from smartswitch.web.pages.common import PAGE, page_number, page_user, render
from smartswitch.web.shared import admin_of, web_of

router = APIRouter()


def _cdr_filter(request: Request) -> tuple[CdrFilter, dict[str, str]]:
    q = request.query_params
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in ("since", "until"):
        text = q.get(name, "").strip()
        if text:
            try:
                values[name] = fields.parse_datetime(text)
            except ValueError as exc:
                errors[name] = str(exc)
    code = q.get("sip_code", "").strip()
    if code:
        try:
            values["sip_code"] = fields.parse_integer(code, minimum=100, maximum=699)
        except ValueError as exc:
            errors["sip_code"] = str(exc)
    peer = q.get("peer", "").strip()[:64]
    number = q.get("number", "").strip()[:64]
    return (
        CdrFilter(
            values.get("since"),
            values.get("until"),
            peer or None,
            number or None,
            values.get("sip_code"),
        ),
        errors,
    )


@router.get("/cdrs")
async def cdrs_page(request: Request) -> Response:
    user, session = await page_user(request)
    flt, errors = _cdr_filter(request)
    page = page_number(request)
    total: int = 0
    rows: list[dict[str, Any]] = []
    if not errors:
        total, rows = await cdr_page(web_of(request).sessions, flt, PAGE, (page - 1) * PAGE)
        captures.with_links(web_of(request).node, "", rows)
    peers = sorted(p.name for p in await admin_of(request).list_peers())
    # A call's recording is named by its Call-ID (here, or synced from the node that relayed
    # it): the CDR links to it when the file is there.
    recordings.with_links(web_of(request).node.config.data_dir, "", rows)
    return render(
        request,
        "cdrs.html",
        user,
        session,
        status_code=422 if errors else 200,
        cdrs=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE)),
        query=dict(request.query_params),
        filter_qs=flt.query_string(),
        errors=errors,
        peer_names=peers,
    )


@router.get("/cdrs.csv")
async def cdrs_csv(request: Request) -> Response:
    await page_user(request)
    flt, errors = _cdr_filter(request)
    if errors:
        raise HTTPException(422, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    return await cdr_queries.csv_response(web_of(request).sessions, flt)


@router.get("/captures/{origin}/{cdr_id}.pcap")
async def capture_download(request: Request, origin: str, cdr_id: str) -> Response:
    """The call's capture, from this node's copy (any node serves any node's captures)."""
    await page_user(request)
    return captures.download(web_of(request).node, origin, cdr_id)


@router.get("/recordings/{name}")
async def recording(request: Request, name: str) -> Response:
    """A call's recording, ``<Call-ID>.wav`` or ``.pcap`` (the Call-ID URL-encoded in the
    link): the WAV plays in the page's audio element; ``?download=1`` downloads either."""
    await page_user(request)
    attachment = request.query_params.get("download") == "1"
    return recordings.download(web_of(request).node.config.data_dir, name, attachment)
