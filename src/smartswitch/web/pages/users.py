"""Users (an admin's), API tokens, and one's own password."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from smartswitch.admin import users
from smartswitch.admin.users import User
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.pages.common import (
    back,
    field_errors,
    form_page,
    page_user,
    posted,
    render,
    writer_form,
)
from smartswitch.web.security import Session
from smartswitch.web.shared import web_of, who_of

router = APIRouter()


@router.get("/users")
async def users_page(request: Request) -> Response:
    user, session = await page_user(request)
    return await _users(request, user, session)


async def _users(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    created: str | None = None,
) -> Response:
    if not user.is_admin:
        raise HTTPException(403, "only an admin can manage users")
    async with web_of(request).sessions() as db:
        rows = await users.list_users(db)
    return form_page(
        request,
        "users.html",
        user,
        session,
        values or {"role": "operator"},
        errors,
        users=rows,
        roles=users.ROLES,
        created=created,
    )


@router.post("/users")
async def create_user(request: Request) -> Response:
    user, session, data = await writer_form(request)
    if not user.is_admin:
        raise HTTPException(403, "only an admin can manage users")
    password = str(data.get("password", "")) or None
    try:
        async with web_of(request).sessions() as db, db.begin():
            new, made = await users.create_user(
                db,
                str(data.get("name", "")).strip(),
                str(data.get("role", "")),
                password,
                who=who_of(request),
            )
    except ConfigInvalid as exc:
        data.pop("password", None)
        return await _users(request, user, session, data, field_errors(exc))
    shown = None if password else f"user {new.name} created with the password {made} (shown once)"
    if shown:
        return await _users(request, user, session, created=shown)
    return back("/users", f"user {new.name} created")


@router.get("/tokens")
async def tokens_page(request: Request) -> Response:
    user, session = await page_user(request)
    return render(request, "tokens.html", user, session, token=None)


@router.post("/tokens")
async def create_token(request: Request) -> Response:
    user, session = await page_user(request)
    data = await posted(request, session)
    async with web_of(request).sessions() as db, db.begin():
        name = str(data.get("name", "") or "api")[:64]
        token = await users.create_token(db, user, name, who=who_of(request))
    return render(request, "tokens.html", user, session, token=token)


@router.get("/me")
async def me_page(request: Request) -> Response:
    user, session = await page_user(request)
    return render(request, "me.html", user, session, errors={})


@router.post("/me")
async def change_password(request: Request) -> Response:
    user, session = await page_user(request)
    data = await posted(request, session)
    web = web_of(request)
    errors: dict[str, str] = {}
    async with web.sessions() as db, db.begin():
        if await users.verify_login(db, user.name, str(data.get("current", ""))) is None:
            errors["current"] = "wrong password"
        else:
            try:
                password = str(data.get("password", ""))
                await users.set_password(db, user.id, password, who=who_of(request))
            except ConfigInvalid as exc:
                errors = field_errors(exc)
    if errors:
        return render(request, "me.html", user, session, errors=errors, status_code=422)
    return back("/me", "password changed")
