"""The node-wide settings (an admin's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from smartswitch.admin.operations import SETTINGS
from smartswitch.admin.users import User
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.pages.common import SOURCE, back, form_page, page_user, writer_form
from smartswitch.web.security import Session
from smartswitch.web.shared import admin_of

router = APIRouter()


@router.get("/settings")
async def settings_page(request: Request) -> Response:
    user, session = await page_user(request)
    return await _settings(request, user, session)


async def _settings(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    current = await admin_of(request).get_settings()
    return form_page(
        request,
        "settings.html",
        user,
        session,
        values or current,
        errors,
        settings=[s for s, _ in SETTINGS.values()],
    )


@router.post("/settings")
async def save_settings(request: Request) -> Response:
    user, session, data = await writer_form(request)
    if not user.is_admin:
        raise HTTPException(403, "only an admin can change settings")
    admin = admin_of(request)
    current = await admin.get_settings()
    errors: dict[str, str] = {}
    for name in SETTINGS:
        if name not in data:
            continue  # a form of some settings only leaves the others as they are
        value = str(data[name])
        if value == current.get(name):
            continue
        try:
            await admin.set_setting(name, value, source=SOURCE)
        except ConfigInvalid as exc:
            errors[name] = exc.issues[0].message
    if errors:
        return await _settings(request, user, session, data, errors)
    return back("/settings", "settings saved")
