"""The Audit page (admins): the audit log of configuration and balance changes, filtered,
paged, and as CSV."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from smartswitch.admin import fields
from smartswitch.admin.audit_log import AuditFilter
from smartswitch.admin.users import User
from smartswitch.web.pages.common import PAGE, page_number, page_user, render
from smartswitch.web.shared import admin_of

router = APIRouter()

ENTITIES = ("account", "tariff", "peer", "route", "subscriber", "did", "setting", "user", "token")


def audit_filter(query: Any) -> tuple[AuditFilter, dict[str, str]]:
    """The filter the query parameters ask for (the page's, the CSV's, the API's), and the
    problems by parameter."""
    errors: dict[str, str] = {}
    times: dict[str, Any] = {}
    for name in ("since", "until"):
        text = str(query.get(name, "") or "").strip()
        if text:
            try:
                times[name] = fields.parse_datetime(text)
            except ValueError as exc:
                errors[name] = str(exc)
    entity = str(query.get("entity", "") or "").strip()
    if entity and entity not in ENTITIES:
        errors["entity"] = f"one of {', '.join(ENTITIES)}"
    name = str(query.get("name", "") or "").strip()[:255]
    actor = str(query.get("actor", "") or "").strip()[:128]
    return AuditFilter(entity, name, actor, times.get("since"), times.get("until")), errors


def _admin(user: User) -> None:
    if not user.is_admin:
        raise HTTPException(403, "only an admin can read the audit log")


@router.get("/audit")
async def audit_page(request: Request) -> Response:
    user, session = await page_user(request)
    _admin(user)
    where, errors = audit_filter(request.query_params)
    page = page_number(request)
    entries = (
        [] if errors else await admin_of(request).audit_log(where, PAGE + 1, (page - 1) * PAGE)
    )
    query = {k: v for k, v in request.query_params.items() if k != "page" and v}
    return render(
        request,
        "audit.html",
        user,
        session,
        status_code=422 if errors else 200,
        entries=entries[:PAGE],
        more=len(entries) > PAGE,
        page=page,
        query=dict(request.query_params),
        filter_qs=urlencode(query),
        errors=errors,
        entities=ENTITIES,
    )


@router.get("/audit.csv")
async def audit_csv(request: Request) -> Response:
    user, _session = await page_user(request)
    _admin(user)
    where, errors = audit_filter(request.query_params)
    if errors:
        raise HTTPException(422, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    return csv_response(await admin_of(request).export_audit_log(where))


def csv_response(text: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit-log.csv"'},
    )
