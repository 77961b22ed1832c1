"""DIDs: the numbers we host, each to a subscriber or a peer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.users import User
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.pages.common import (
    SOURCE,
    back,
    checkboxes,
    field_errors,
    form_page,
    page_user,
    writer_form,
)
from smartswitch.web.security import Session
from smartswitch.web.shared import admin_of

router = APIRouter()


@router.get("/dids")
async def dids_page(request: Request) -> Response:
    user, session = await page_user(request)
    return await _dids(request, user, session)


async def _dids(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    admin = admin_of(request)
    names = await admin.names()
    return form_page(
        request,
        "dids.html",
        user,
        session,
        values or {"enabled": "true"},
        errors,
        dids=await admin.list_dids(),
        subscriber_names=sorted(names.subscribers.values()),
        peer_names=sorted(names.peers.values()),
    )


@router.post("/dids")
async def save_did(request: Request) -> Response:
    user, session, data = await writer_form(request)
    checkboxes(data, "enabled")
    try:
        spec = read_form(readers.did, SOURCE, data)
        await admin_of(request).save(spec, source=SOURCE, actor=user.name)
    except ConfigInvalid as exc:
        return await _dids(request, user, session, data, field_errors(exc))
    return back("/dids", f"DID {spec.number} saved")


@router.post("/dids/{number}/delete")
async def delete_did(request: Request, number: str) -> Response:
    await writer_form(request)
    await admin_of(request).delete_did(number)
    return back("/dids", f"DID {number} deleted")
