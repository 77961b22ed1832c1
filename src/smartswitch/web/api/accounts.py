"""``/api/v1/accounts``: accounts, balances and their audit trail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.reports import iso_time
from smartswitch.admin.users import User
from smartswitch.admin.views import Account
from smartswitch.web.api.common import (
    SOURCE,
    In,
    Reader,
    Writer,
    body_data,
    money,
    report_out,
)
from smartswitch.web.context import Web
from smartswitch.web.shared import admin_of, web_of

router = APIRouter()


class AccountIn(In):
    currency: str = Field(description="ISO 4217 code, e.g. USD")
    credit_limit: str | None = Field(None, description="decimal string, >= 0")
    prepaid: bool | None = None
    reserve_seconds: int | None = Field(
        None, description="prepaid seconds granted to a call at a time; null: the node's"
    )
    record: bool | None = Field(None, description="its relayed calls are recorded")
    balance: str | None = Field(None, description="opening balance (on creation only)")


class AccountCreate(AccountIn):
    name: str


class BalanceChangeIn(In):
    amount: str = Field(description="decimal string; a top-up is positive")
    note: str = Field(description="why: goes into the audit trail")


def account_out(web: Web, account: Account) -> dict[str, Any]:
    live, available = web.live_balance(account.id)
    return {
        "name": account.name,
        "currency": account.currency,
        "balance": money(account.balance),
        "live_balance": money(live),
        "available": money(available),
        "credit_limit": money(account.credit_limit),
        "prepaid": account.prepaid,
        "reserve_seconds": account.reserve_seconds,
        "record": account.record,
        # What each node of the cluster holds of it now (empty on a single node).
        "held_by_node": [
            {
                "node": h.node,
                "reserved": money(h.reserved),
                "unconfirmed": money(h.unconfirmed),
                "live": h.live,
                "this_node": h.own,
            }
            for h in web.node.holdings(account.id)
        ],
    }


@router.get("/accounts")
async def list_accounts(request: Request, user: Reader) -> list[dict[str, Any]]:
    web = web_of(request)
    return [account_out(web, account) for account in await admin_of(request).list_accounts()]


@router.post("/accounts", status_code=201)
async def create_account(request: Request, body: AccountCreate, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = read_form(readers.account, SOURCE, body_data(body))
    await admin_of(request).save(spec, source=SOURCE, actor=user.name, create_only=True)
    return account_out(web, await admin_of(request).get_account(spec.name))


@router.get("/accounts/{name}")
async def get_account(request: Request, name: str, user: Reader) -> dict[str, Any]:
    web = web_of(request)
    return account_out(web, await admin_of(request).get_account(name))


@router.put("/accounts/{name}")
async def put_account(request: Request, name: str, body: AccountIn, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = read_form(readers.account, SOURCE, body_data(body), ("name", name))
    report = await admin_of(request).save(spec, source=SOURCE, actor=user.name)
    return {**report_out(report), **account_out(web, await admin_of(request).get_account(name))}


@router.delete("/accounts/{name}", status_code=204)
async def delete_account(request: Request, name: str, user: Writer) -> Response:
    await admin_of(request).delete_account(name)
    return Response(status_code=204)


async def _balance(
    request: Request, name: str, kind: str, body: BalanceChangeIn, user: User
) -> dict[str, Any]:
    balance, change_id = await admin_of(request).change_balance(
        name, kind, body_data(body), actor=user.name, source=SOURCE
    )
    return {"account": name, "balance": money(balance), "change_id": change_id}


@router.post("/accounts/{name}/topup")
async def topup(request: Request, name: str, body: BalanceChangeIn, user: Writer) -> dict[str, Any]:
    """Credit the account (amount > 0); recorded with who and why."""
    return await _balance(request, name, "topup", body, user)


@router.post("/accounts/{name}/adjustments")
async def adjustment(
    request: Request, name: str, body: BalanceChangeIn, user: Writer
) -> dict[str, Any]:
    """A signed correction of the balance; recorded with who and why."""
    return await _balance(request, name, "adjustment", body, user)


@router.get("/accounts/{name}/changes")
async def account_changes(
    request: Request,
    name: str,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    """The audit trail of the balance: every change, newest first."""
    admin = admin_of(request)
    account = await admin.get_account(name)
    return [
        {
            "id": c.id,
            "amount": money(c.amount),
            "kind": c.kind.value,
            "reference": c.reference,
            "created_at": iso_time(c.created_at),
            "actor": c.actor,
            "note": c.note,
        }
        for c in await admin.balance_changes(account.id, limit, offset)
    ]
