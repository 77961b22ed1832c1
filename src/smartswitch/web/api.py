"""The REST API, ``/api/v1``: the same domain services as provisioning and the web UI.

Authentication is a bearer token (``Authorization: Bearer sst_...``, made on the UI's
"API tokens" page or by ``POST /api/v1/tokens``).  No token or a wrong one: 401.  Writes need
the admin or operator role (403 otherwise) and a writable node: on a read-only replica they
answer 409 naming the primary.  A bad field answers 422 with the field in ``loc`` (the shape
FastAPI uses for its own validation errors).  Money is always a decimal string.
"""

from __future__ import annotations

import hmac
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from smartswitch.admin import forms, operations, users
from smartswitch.admin.users import User
from smartswitch.admin.writer import ChangeReport
from smartswitch.store.schema import AccountRow, PeerRow, RateRow, RouteRow, UserRole
from smartswitch.web import cdrs as cdr_queries
from smartswitch.web.context import Web
from smartswitch.web.security import LOCAL_PREFIX, local_token
from smartswitch.web.stats import calls_in_progress

SOURCE = "api"


def web_of(request: Request) -> Web:
    return request.app.state.web  # type: ignore[no-any-return]


async def api_user(request: Request) -> User:
    web = web_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "an API token is required", {"WWW-Authenticate": "Bearer"})
    token = token.strip()
    if token.startswith(LOCAL_PREFIX):  # a command on the node's machine (read-only)
        expected = local_token(Path(web.config.data_dir))
        if expected is not None and hmac.compare_digest(token, expected):
            return User(0, "local", UserRole.READ_ONLY)
        raise HTTPException(401, "invalid API token", {"WWW-Authenticate": "Bearer"})
    async with web.sessions() as session:
        user = await users.user_for_token(session, token)
    if user is None:
        raise HTTPException(401, "invalid API token", {"WWW-Authenticate": "Bearer"})
    return user


async def api_writer(request: Request, user: Annotated[User, Depends(api_user)]) -> User:
    if not user.can_write:
        raise HTTPException(403, f"the {user.role.value} role cannot change anything")
    web = web_of(request)
    if web.read_only:
        raise HTTPException(409, web.read_only_message)
    return user


async def api_admin(request: Request, user: Annotated[User, Depends(api_writer)]) -> User:
    if not user.is_admin:
        raise HTTPException(403, "only an admin can do this")
    return user


Reader = Annotated[User, Depends(api_user)]
Writer = Annotated[User, Depends(api_writer)]
Admin = Annotated[User, Depends(api_admin)]

router = APIRouter(prefix="/api/v1", tags=["api"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _data(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_none=True)


def _report(report: ChangeReport) -> dict[str, Any]:
    return {"changed": report.changed, "config_version": report.config_version}


def _changed(request: Request, report: ChangeReport) -> dict[str, Any]:
    if report.changed:
        web_of(request).config_changed()
    return _report(report)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"


# --------------------------------------------------------------------------------------------
# Accounts


class AccountIn(_In):
    currency: str = Field(description="ISO 4217 code, e.g. USD")
    credit_limit: str | None = Field(None, description="decimal string, >= 0")
    prepaid: bool | None = None
    balance: str | None = Field(None, description="opening balance (on creation only)")


class AccountCreate(AccountIn):
    name: str


class BalanceChangeIn(_In):
    amount: str = Field(description="decimal string; a top-up is positive")
    note: str = Field(description="why: goes into the audit trail")


def account_out(web: Web, row: AccountRow) -> dict[str, Any]:
    live, available = web.live_balance(row.id)
    return {
        "name": row.name,
        "currency": row.currency,
        "balance": _money(row.balance),
        "live_balance": _money(live),
        "available": _money(available),
        "credit_limit": _money(row.credit_limit),
        "prepaid": row.prepaid,
    }


@router.get("/accounts")
async def list_accounts(request: Request, user: Reader) -> list[dict[str, Any]]:
    web = web_of(request)
    return [account_out(web, row) for row in await operations.list_accounts(web.sessions)]


@router.post("/accounts", status_code=201)
async def create_account(request: Request, body: AccountCreate, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.account_spec(SOURCE, _data(body))
    report = await web.save(spec, source=SOURCE, actor=user.name, create_only=True)
    _changed(request, report)
    return account_out(web, await operations.get_account(web.sessions, spec.name))


@router.get("/accounts/{name}")
async def get_account(request: Request, name: str, user: Reader) -> dict[str, Any]:
    web = web_of(request)
    return account_out(web, await operations.get_account(web.sessions, name))


@router.put("/accounts/{name}")
async def put_account(request: Request, name: str, body: AccountIn, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.account_spec(SOURCE, _data(body), name)
    report = await web.save(spec, source=SOURCE, actor=user.name)
    return {
        **_changed(request, report),
        **account_out(web, await operations.get_account(web.sessions, name)),
    }


@router.delete("/accounts/{name}", status_code=204)
async def delete_account(request: Request, name: str, user: Writer) -> Response:
    await operations.delete_account(web_of(request).sessions, name)
    web_of(request).config_changed()
    return Response(status_code=204)


async def _balance(
    request: Request, name: str, kind: str, body: BalanceChangeIn, user: User
) -> dict[str, Any]:
    web = web_of(request)
    balance, change_id = await operations.change_balance(
        web.sessions, name, kind, _data(body), actor=user.name, source=SOURCE
    )
    web.config_changed()  # the node re-reads balances with its next refresh
    return {"account": name, "balance": _money(balance), "change_id": change_id}


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
    web = web_of(request)
    row = await operations.get_account(web.sessions, name)
    return [
        {
            "id": c.id,
            "amount": _money(c.amount),
            "kind": c.kind.value,
            "reference": c.reference,
            "created_at": cdr_queries.iso(c.created_at),
            "actor": c.actor,
            "note": c.note,
        }
        for c in await operations.balance_changes(web.sessions, row.id, limit, offset)
    ]


# --------------------------------------------------------------------------------------------
# Tariffs and rates


class TariffIn(_In):
    currency: str | None = Field(None, description="ISO 4217 code; USD if left out")


class TariffCreate(TariffIn):
    name: str


def tariff_out(info: operations.TariffInfo) -> dict[str, Any]:
    return {"name": info.row.name, "currency": info.row.currency, "rates": info.rates}


def rate_out(r: RateRow) -> dict[str, Any]:
    return {
        "prefix": r.prefix,
        "price_per_minute": _money(r.price_per_minute),
        "connect_fee": _money(r.connect_fee),
        "increment": f"{r.increment_min}/{r.increment_step}",
        "free_seconds": r.free_seconds,
        "effective_from": cdr_queries.iso(r.effective_from),
        "effective_to": cdr_queries.iso(r.effective_to),
    }


@router.get("/tariffs")
async def list_tariffs(request: Request, user: Reader) -> list[dict[str, Any]]:
    return [tariff_out(i) for i in await operations.list_tariffs(web_of(request).sessions)]


@router.post("/tariffs", status_code=201)
async def create_tariff(request: Request, body: TariffCreate, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.tariff_spec(SOURCE, _data(body))
    report = await web.save(spec, source=SOURCE, actor=user.name, create_only=True)
    _changed(request, report)
    return tariff_out(await operations.get_tariff(web.sessions, spec.name))


@router.get("/tariffs/{name}")
async def get_tariff(request: Request, name: str, user: Reader) -> dict[str, Any]:
    return tariff_out(await operations.get_tariff(web_of(request).sessions, name))


@router.put("/tariffs/{name}")
async def put_tariff(request: Request, name: str, body: TariffIn, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.tariff_spec(SOURCE, _data(body), name)
    report = await web.save(spec, source=SOURCE, actor=user.name)
    return {
        **_changed(request, report),
        **tariff_out(await operations.get_tariff(web.sessions, name)),
    }


@router.delete("/tariffs/{name}", status_code=204)
async def delete_tariff(request: Request, name: str, user: Writer) -> Response:
    await operations.delete_tariff(web_of(request).sessions, name)
    web_of(request).config_changed()
    return Response(status_code=204)


@router.get("/tariffs/{name}/rates")
async def list_rates(
    request: Request,
    name: str,
    user: Reader,
    prefix: Annotated[str, Query(max_length=32)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict[str, Any]:
    web = web_of(request)
    info = await operations.get_tariff(web.sessions, name)
    total, rows = await operations.list_rates(web.sessions, info.row.id, prefix, limit, offset)
    return {"total": total, "rates": [rate_out(r) for r in rows]}


@router.get("/tariffs/{name}/rates.csv", response_class=PlainTextResponse)
async def export_rates(request: Request, name: str, user: Reader) -> Response:
    text = await operations.export_rates(web_of(request).sessions, name)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-rates.csv"'},
    )


@router.put(
    "/tariffs/{name}/rates.csv",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def import_rates(request: Request, name: str, user: Writer) -> dict[str, Any]:
    """Replace the tariff's rates with the CSV's (header: prefix, price_per_minute, and any of
    connect_fee, increment, free_seconds, effective_from, effective_to).  A bad line answers
    422 naming its line and column, and nothing changes."""
    web = web_of(request)
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(422, "the CSV must be UTF-8 text") from None
    started = time.monotonic()
    count, report = await operations.import_rates(
        web.sessions, name, text, actor=user.name, source="rates.csv"
    )
    return {
        **_changed(request, report),
        "rates": count,
        "seconds": round(time.monotonic() - started, 3),
    }


# --------------------------------------------------------------------------------------------
# Peers


class RewriteIn(_In):
    match: str
    replace: str = ""


class RegisterIn(_In):
    username: str
    password: str = Field(description="never returned")
    registrar: str = Field(description="HOST[:PORT]")
    expires: int | None = None


class PeerIn(_In):
    role: Literal["customer", "supplier", "both"]
    account: str
    tariff: str | None = None
    acl: list[str] | None = None
    username: str | None = None
    password: str | None = Field(None, description="digest secret; never returned")
    address: str | None = Field(None, description="HOST[:PORT] of a supplier")
    transport: Literal["udp", "tcp"] | None = None
    max_calls: int | None = None
    max_cps: int | None = None
    caller_rewrite: list[RewriteIn] | None = None
    callee_rewrite: list[RewriteIn] | None = None
    profit_control: Literal["allow_loss", "no_loss", "profit_only"] | None = None
    enabled: bool | None = None
    deliver_dids: bool | None = Field(None, description="INVITEs from it to our DIDs")
    # "register" would shadow BaseModel.register: the JSON name is an alias.
    registration: RegisterIn | None = Field(
        None, alias="register", description="the switch registers with it"
    )


class PeerCreate(PeerIn):
    name: str


def peer_out(row: PeerRow, accounts: dict[int, str], tariffs: dict[int, str]) -> dict[str, Any]:
    return {
        "name": row.name,
        "role": row.role.value,
        "account": accounts.get(row.account_id),
        "tariff": None if row.tariff_id is None else tariffs.get(row.tariff_id),
        "acl": list(row.acl),
        "username": row.username,
        "has_password": row.password is not None,
        "address": row.address,
        "transport": row.transport,
        "max_calls": row.max_calls,
        "max_cps": row.max_cps,
        "caller_rewrite": list(row.caller_rewrite),
        "callee_rewrite": list(row.callee_rewrite),
        "profit_control": row.profit_control.value,
        "enabled": row.enabled,
        "deliver_dids": row.deliver_dids,
        "register": None
        if row.register_registrar is None
        else {
            "username": row.register_username,
            "registrar": row.register_registrar,
            "expires": row.register_expires,
        },
    }


async def _names(web: Web) -> tuple[dict[int, str], dict[int, str]]:
    accounts = {a.id: a.name for a in await operations.list_accounts(web.sessions)}
    tariffs = {t.row.id: t.row.name for t in await operations.list_tariffs(web.sessions)}
    return accounts, tariffs


def _peer_data(body: PeerIn) -> dict[str, Any]:
    return body.model_dump(exclude_none=True, by_alias=True)


@router.get("/peers")
async def list_peers(request: Request, user: Reader) -> list[dict[str, Any]]:
    web = web_of(request)
    accounts, tariffs = await _names(web)
    return [peer_out(p, accounts, tariffs) for p in await operations.list_peers(web.sessions)]


@router.post("/peers", status_code=201)
async def create_peer(request: Request, body: PeerCreate, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.peer_spec(SOURCE, _peer_data(body))
    report = await web.save(spec, source=SOURCE, actor=user.name, create_only=True)
    _changed(request, report)
    accounts, tariffs = await _names(web)
    return peer_out(await operations.get_peer(web.sessions, spec.name), accounts, tariffs)


@router.get("/peers/{name}")
async def get_peer(request: Request, name: str, user: Reader) -> dict[str, Any]:
    web = web_of(request)
    accounts, tariffs = await _names(web)
    return peer_out(await operations.get_peer(web.sessions, name), accounts, tariffs)


@router.put("/peers/{name}")
async def put_peer(request: Request, name: str, body: PeerIn, user: Writer) -> dict[str, Any]:
    """Create or replace the peer: fields left out take their defaults (as in provisioning)."""
    web = web_of(request)
    spec = forms.peer_spec(SOURCE, _peer_data(body), name)
    report = await web.save(spec, source=SOURCE, actor=user.name)
    accounts, tariffs = await _names(web)
    return {
        **_changed(request, report),
        **peer_out(await operations.get_peer(web.sessions, name), accounts, tariffs),
    }


@router.delete("/peers/{name}", status_code=204)
async def delete_peer(request: Request, name: str, user: Writer) -> Response:
    await operations.delete_peer(web_of(request).sessions, name)
    web_of(request).config_changed()
    return Response(status_code=204)


# --------------------------------------------------------------------------------------------
# Routes ("default" in a path is the route of prefix "")


class SupplierIn(_In):
    peer: str
    priority: int | None = None
    weight: int | None = None


class RouteIn(_In):
    strategy: Literal["priority", "least_cost", "weighted"] | None = None
    name: str | None = None
    suppliers: list[SupplierIn]


class RouteCreate(RouteIn):
    prefix: str = Field(description='digits; "" is the default route')


def _prefix_of(key: str) -> str:
    return "" if key == "default" else key


def route_out(row: RouteRow, peers: dict[int, str]) -> dict[str, Any]:
    return {
        "prefix": row.prefix,
        "key": row.prefix or "default",
        "strategy": row.strategy.value,
        "name": row.name,
        "suppliers": [
            {"peer": peers.get(s.peer_id), "priority": s.priority, "weight": s.weight}
            for s in row.suppliers
        ],
    }


def _route_data(body: RouteIn) -> dict[str, Any]:
    data = body.model_dump(exclude_none=True)
    data["suppliers"] = [s.model_dump(exclude_none=True) for s in body.suppliers]
    return data


@router.get("/routes")
async def list_routes(request: Request, user: Reader) -> list[dict[str, Any]]:
    web = web_of(request)
    peers = await operations.peer_names(web.sessions)
    return [route_out(r, peers) for r in await operations.list_routes(web.sessions)]


@router.post("/routes", status_code=201)
async def create_route(request: Request, body: RouteCreate, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.route_spec(SOURCE, _route_data(body))
    report = await web.save(spec, source=SOURCE, actor=user.name, create_only=True)
    _changed(request, report)
    return route_out(
        await operations.get_route(web.sessions, spec.prefix),
        await operations.peer_names(web.sessions),
    )


@router.get("/routes/{key}")
async def get_route(request: Request, key: str, user: Reader) -> dict[str, Any]:
    web = web_of(request)
    row = await operations.get_route(web.sessions, _prefix_of(key))
    return route_out(row, await operations.peer_names(web.sessions))


@router.put("/routes/{key}")
async def put_route(request: Request, key: str, body: RouteIn, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.route_spec(SOURCE, _route_data(body), _prefix_of(key))
    report = await web.save(spec, source=SOURCE, actor=user.name)
    row = await operations.get_route(web.sessions, spec.prefix)
    return {
        **_changed(request, report),
        **route_out(row, await operations.peer_names(web.sessions)),
    }


@router.delete("/routes/{key}", status_code=204)
async def delete_route(request: Request, key: str, user: Writer) -> Response:
    await operations.delete_route(web_of(request).sessions, _prefix_of(key))
    web_of(request).config_changed()
    return Response(status_code=204)


# --------------------------------------------------------------------------------------------
# Subscribers and DIDs (the registrar's); registrations are /api/v1/registrations


class SubscriberIn(_In):
    account: str
    tariff: str | None = Field(None, description="what its outgoing calls cost")
    password: str | None = Field(
        None, description="hashed into HA1s for the node's realm, never stored or returned"
    )
    allowed_cidrs: list[str] | None = None
    max_contacts: int | None = None
    max_calls: int | None = None
    caller_id: str | None = None
    enabled: bool | None = None


class SubscriberCreate(SubscriberIn):
    username: str


def subscriber_out(row: Any, accounts: dict[int, str], tariffs: dict[int, str]) -> dict[str, Any]:
    return {
        "username": row.username,
        "account": accounts.get(row.account_id),
        "tariff": None if row.tariff_id is None else tariffs.get(row.tariff_id),
        "allowed_cidrs": list(row.allowed_cidrs),
        "max_contacts": row.max_contacts,
        "max_calls": row.max_calls,
        "caller_id": row.caller_id,
        "enabled": row.enabled,
    }


@router.get("/subscribers")
async def list_subscribers(request: Request, user: Reader) -> list[dict[str, Any]]:
    web = web_of(request)
    accounts, tariffs = await _names(web)
    return [
        subscriber_out(s, accounts, tariffs)
        for s in await operations.list_subscribers(web.sessions)
    ]


@router.post("/subscribers", status_code=201)
async def create_subscriber(
    request: Request, body: SubscriberCreate, user: Writer
) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.subscriber_spec(SOURCE, body.model_dump(exclude_none=True))
    report = await web.save(spec, source=SOURCE, actor=user.name, create_only=True)
    _changed(request, report)
    accounts, tariffs = await _names(web)
    return subscriber_out(
        await operations.get_subscriber(web.sessions, spec.username), accounts, tariffs
    )


@router.get("/subscribers/{username}")
async def get_subscriber(request: Request, username: str, user: Reader) -> dict[str, Any]:
    web = web_of(request)
    accounts, tariffs = await _names(web)
    return subscriber_out(
        await operations.get_subscriber(web.sessions, username), accounts, tariffs
    )


@router.put("/subscribers/{username}")
async def put_subscriber(
    request: Request, username: str, body: SubscriberIn, user: Writer
) -> dict[str, Any]:
    """Create or replace; a password left out keeps the stored hashes."""
    web = web_of(request)
    spec = forms.subscriber_spec(SOURCE, body.model_dump(exclude_none=True), username)
    report = await web.save(spec, source=SOURCE, actor=user.name)
    accounts, tariffs = await _names(web)
    return {
        **_changed(request, report),
        **subscriber_out(
            await operations.get_subscriber(web.sessions, username), accounts, tariffs
        ),
    }


@router.delete("/subscribers/{username}", status_code=204)
async def delete_subscriber(request: Request, username: str, user: Writer) -> Response:
    await operations.delete_subscriber(web_of(request).sessions, username)
    web_of(request).config_changed()
    return Response(status_code=204)


class DidIn(_In):
    subscriber: str | None = Field(None, description="the owner: a subscriber ...")
    peer: str | None = Field(None, description="... or a peer (one of the two)")
    enabled: bool | None = None


class DidCreate(DidIn):
    number: str


async def _did_out(web: Web, row: Any) -> dict[str, Any]:
    subscribers = await operations.subscriber_names(web.sessions)
    peers = await operations.peer_names(web.sessions)
    return {
        "number": row.number,
        "subscriber": None if row.subscriber_id is None else subscribers.get(row.subscriber_id),
        "peer": None if row.peer_id is None else peers.get(row.peer_id),
        "enabled": row.enabled,
    }


@router.get("/dids")
async def list_dids(request: Request, user: Reader) -> list[dict[str, Any]]:
    web = web_of(request)
    return [await _did_out(web, d) for d in await operations.list_dids(web.sessions)]


@router.post("/dids", status_code=201)
async def create_did(request: Request, body: DidCreate, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.did_spec(SOURCE, body.model_dump(exclude_none=True))
    report = await web.save(spec, source=SOURCE, actor=user.name, create_only=True)
    _changed(request, report)
    return await _did_out(web, await operations.get_did(web.sessions, spec.number))


@router.get("/dids/{number}")
async def get_did(request: Request, number: str, user: Reader) -> dict[str, Any]:
    web = web_of(request)
    return await _did_out(web, await operations.get_did(web.sessions, number))


@router.put("/dids/{number}")
async def put_did(request: Request, number: str, body: DidIn, user: Writer) -> dict[str, Any]:
    web = web_of(request)
    spec = forms.did_spec(SOURCE, body.model_dump(exclude_none=True), number)
    report = await web.save(spec, source=SOURCE, actor=user.name)
    return {
        **_changed(request, report),
        **await _did_out(web, await operations.get_did(web.sessions, number)),
    }


@router.delete("/dids/{number}", status_code=204)
async def delete_did(request: Request, number: str, user: Writer) -> Response:
    await operations.delete_did(web_of(request).sessions, number)
    web_of(request).config_changed()
    return Response(status_code=204)


# --------------------------------------------------------------------------------------------
# Settings


class SettingIn(_In):
    value: str


@router.get("/settings")
async def get_settings(request: Request, user: Reader) -> dict[str, str]:
    return await operations.get_settings(web_of(request).sessions)


@router.put("/settings/{name}")
async def put_setting(request: Request, name: str, body: SettingIn, user: Admin) -> dict[str, str]:
    value = await operations.set_setting(web_of(request).sessions, name, body.value, source=SOURCE)
    web_of(request).config_changed()
    return {"name": name, "value": value}


# --------------------------------------------------------------------------------------------
# CDRs


CdrQuery = Annotated[cdr_queries.CdrFilter, Depends(cdr_queries.api_filter)]


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
    total, rows = await cdr_queries.query(web_of(request).sessions, flt, limit, offset)
    return {"total": total, "cdrs": rows}


@router.get("/cdrs.csv", response_class=PlainTextResponse)
async def export_cdrs(request: Request, user: Reader, flt: CdrQuery) -> Response:
    return await cdr_queries.csv_response(web_of(request).sessions, flt)


# --------------------------------------------------------------------------------------------
# Calls in progress


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


# --------------------------------------------------------------------------------------------
# Users and tokens


class UserIn(_In):
    name: str
    role: Literal["admin", "operator", "read-only"]
    password: str | None = Field(None, description="at least 10 characters; random if left out")


class TokenIn(_In):
    name: str = Field("api", max_length=64)


@router.get("/users")
async def list_users(request: Request, user: Reader) -> list[dict[str, Any]]:
    if not user.is_admin:
        raise HTTPException(403, "only an admin can list users")
    async with web_of(request).sessions() as session:
        return [
            {"name": u.name, "role": u.role.value, "enabled": u.enabled}
            for u in await users.list_users(session)
        ]


@router.post("/users", status_code=201)
async def create_user(request: Request, body: UserIn, user: Admin) -> dict[str, Any]:
    async with web_of(request).sessions() as session, session.begin():
        new, password = await users.create_user(session, body.name, body.role, body.password)
    out: dict[str, Any] = {"name": new.name, "role": new.role.value}
    if body.password is None:
        out["password"] = password  # made here: the caller's only chance to see it
    return out


@router.post("/tokens", status_code=201)
async def create_token(
    request: Request, user: Reader, body: Annotated[TokenIn | None, Body()] = None
) -> dict[str, str]:
    """A new token for the caller (read-only users too: tokens carry the user's role)."""
    async with web_of(request).sessions() as session, session.begin():
        token = await users.create_token(session, user, (body or TokenIn(name="api")).name)
    return {"token": token}
