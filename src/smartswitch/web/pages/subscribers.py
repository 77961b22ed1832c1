"""Subscribers, with this node's registrations of each (a password left empty stays)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.operations import Conflict
from smartswitch.admin.users import User
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.pages.common import (
    SOURCE,
    back,
    checkboxes,
    existing_key,
    field_errors,
    form_page,
    page_user,
    writer_form,
)
from smartswitch.web.pages.security import account_row
from smartswitch.web.security import Session
from smartswitch.web.shared import admin_of, web_of

router = APIRouter()


@router.get("/subscribers")
async def subscribers_page(request: Request) -> Response:
    user, session = await page_user(request)
    return await _subscribers(request, user, session)


async def _subscribers(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    existing: str | None = None,
) -> Response:
    web = web_of(request)
    guard = web.guard()
    security = None
    if existing is not None and guard is not None:
        now = time.time()
        security = account_row(guard.account_status(existing, now), now)
    names = await admin_of(request).names()
    live = web.live_bindings()
    by_aor: dict[str, list[dict[str, Any]]] = {}
    for binding in live or []:
        by_aor.setdefault(str(binding["aor"]), []).append(binding)
    return form_page(
        request,
        "subscribers.html",
        user,
        session,
        values or {"max_contacts": "5", "enabled": "true"},
        errors,
        subscribers=await admin_of(request).list_subscribers(),
        bindings=by_aor,
        registrar=live is not None,
        existing=existing,
        security=security,
        account_names=sorted(names.accounts.values()),
        tariff_names=sorted(names.tariffs.values()),
    )


@router.get("/subscribers/{username}")
async def subscriber_page(request: Request, username: str) -> Response:
    user, session = await page_user(request)
    subscriber = await admin_of(request).get_subscriber(username)
    values = {
        "username": subscriber.username,
        "account": subscriber.account or "",
        "tariff": subscriber.tariff or "",
        "allowed_cidrs": "\n".join(subscriber.allowed_cidrs),
        "max_contacts": str(subscriber.max_contacts),
        "max_calls": "" if subscriber.max_calls is None else str(subscriber.max_calls),
        "caller_id": subscriber.caller_id or "",
        "enabled": "true" if subscriber.enabled else "",
    }
    return await _subscribers(request, user, session, values, existing=username)


@router.post("/subscribers")
async def save_subscriber(request: Request) -> Response:
    user, session, data = await writer_form(request)
    existing = existing_key(data)
    checkboxes(data, "enabled")
    try:
        key = None if existing is None else ("username", existing)
        spec = read_form(readers.subscriber, SOURCE, data, key)
        await admin_of(request).save(
            spec, source=SOURCE, actor=user.name, create_only=existing is None
        )
    except ConfigInvalid as exc:
        data.pop("password", None)
        return await _subscribers(request, user, session, data, field_errors(exc), existing)
    except Conflict as exc:
        data.pop("password", None)
        return await _subscribers(request, user, session, data, {"username": str(exc)}, existing)
    return back("/subscribers", f"subscriber {spec.username} saved")


@router.post("/subscribers/{username}/delete")
async def delete_subscriber(request: Request, username: str) -> Response:
    user, session, _data = await writer_form(request)
    try:
        await admin_of(request).delete_subscriber(username)
    except Conflict as exc:
        return await _subscribers(request, user, session, errors={"_": str(exc)})
    return back("/subscribers", f"subscriber {username} deleted")
