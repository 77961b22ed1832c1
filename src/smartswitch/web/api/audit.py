"""``/api/v1/audit-log``: the audit log of configuration and balance changes (admins; a
replica's too: it is read-only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from smartswitch.web.api.common import Reader
from smartswitch.web.pages.audit import audit_filter, csv_response
from smartswitch.web.shared import admin_of

router = APIRouter()


@router.get("/audit-log", response_model=None)
async def audit_log(
    request: Request,
    user: Reader,
    entity: str = "",
    name: str = "",
    actor: str = "",
    since: str = "",
    until: str = "",
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]] | Response:
    """Entries newest first, filtered (``name`` and ``actor`` match a part; ``since`` and
    ``until`` are ISO 8601, UTC without a zone); ``format=csv``: all that match, as CSV."""
    if not user.is_admin:
        raise HTTPException(403, "only an admin can read the audit log")
    query = {"entity": entity, "name": name, "actor": actor, "since": since, "until": until}
    where, errors = audit_filter(query)
    if errors:
        raise HTTPException(422, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    admin = admin_of(request)
    if format == "csv":
        return csv_response(await admin.export_audit_log(where))
    return [e.as_dict() for e in await admin.audit_log(where, limit, offset)]
