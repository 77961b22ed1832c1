"""Accounts: the list, one account with its audit trail, top-ups and adjustments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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
    field_errors,
    form_page,
    money,
    page_user,
    render,
    writer_form,
)
from smartswitch.web.security import Session
from smartswitch.web.shared import admin_of, web_of

router = APIRouter()


@router.get("/accounts")
async def accounts_page(request: Request) -> Response:
    user, session = await page_user(request)
    return await _accounts(request, user, session)


async def _accounts(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    web = web_of(request)
    rows = []
    for account in await admin_of(request).list_accounts():
        live, available = web.live_balance(account.id)
        rows.append({"row": account, "live": live, "available": available})
    return form_page(
        request,
        "accounts.html",
        user,
        session,
        values or {"currency": "USD", "prepaid": "true"},
        errors,
        accounts=rows,
        money=money,
    )


@router.post("/accounts")
async def create_account(request: Request) -> Response:
    user, session, data = await writer_form(request)
    checkboxes(data, "prepaid", "record")
    try:
        spec = read_form(readers.account, SOURCE, data)
        await admin_of(request).save(spec, source=SOURCE, actor=user.name, create_only=True)
    except ConfigInvalid as exc:
        return await _accounts(request, user, session, data, field_errors(exc))
    except Conflict as exc:
        return await _accounts(request, user, session, data, {"name": str(exc)})
    return back(f"/accounts/{quote(spec.name)}", f"account {spec.name} created")


@router.get("/accounts/{name}")
async def account_page(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    return await _account(request, user, session, name)


async def _account(
    request: Request,
    user: User,
    session: Session,
    name: str,
    *,
    values: Mapping[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    balance_values: Mapping[str, Any] | None = None,
    balance_errors: dict[str, str] | None = None,
) -> Response:
    web = web_of(request)
    account = await admin_of(request).get_account(name)
    live, available = web.live_balance(account.id)
    changes = await admin_of(request).balance_changes(account.id, limit=100)
    return render(
        request,
        "account.html",
        user,
        session,
        status_code=422 if (errors or balance_errors) else 200,
        account=account,
        live=live,
        available=available,
        changes=changes,
        holdings=web.node.holdings(account.id),
        values=values
        or {
            "credit_limit": money(account.credit_limit),
            "prepaid": "true" if account.prepaid else "",
            "reserve_seconds": account.reserve_seconds or "",
            "record": "true" if account.record else "",
        },
        errors=errors or {},
        balance_values=balance_values or {"kind": "topup"},
        balance_errors=balance_errors or {},
        money=money,
    )


@router.post("/accounts/{name}")
async def update_account(request: Request, name: str) -> Response:
    user, session, data = await writer_form(request)
    admin = admin_of(request)
    data["currency"] = (await admin.get_account(name)).currency  # not on the form: it stays
    checkboxes(data, "prepaid", "record")
    try:
        spec = read_form(readers.account, SOURCE, data, key=("name", name))
        await admin.save(spec, source=SOURCE, actor=user.name)
    except ConfigInvalid as exc:
        return await _account(request, user, session, name, values=data, errors=field_errors(exc))
    return back(f"/accounts/{quote(name)}", "account saved")


@router.post("/accounts/{name}/balance")
async def change_balance(request: Request, name: str) -> Response:
    user, session, data = await writer_form(request)
    kind = "topup" if data.get("kind") != "adjustment" else "adjustment"
    try:
        balance, _ = await admin_of(request).change_balance(
            name, kind, data, actor=user.name, source=SOURCE
        )
    except ConfigInvalid as exc:
        return await _account(
            request, user, session, name, balance_values=data, balance_errors=field_errors(exc)
        )
    what = "top-up" if kind == "topup" else "adjustment"
    return back(f"/accounts/{quote(name)}", f"{what} recorded: balance {balance:f}")


@router.post("/accounts/{name}/delete")
async def delete_account(request: Request, name: str) -> Response:
    user, session, _data = await writer_form(request)
    try:
        await admin_of(request).delete_account(name)
    except Conflict as exc:
        return await _account(request, user, session, name, errors={"_": str(exc)})
    return back("/accounts", f"account {name} deleted")
