"""The admin pages: server-rendered Jinja2, htmx for the live parts, a form per change.

Every form posts the session's CSRF token; a bad field re-renders the form with the message
next to that field (the same :class:`ConfigInvalid` issues the API turns into 422s).  Write
controls are shown only to admins and operators, and to nobody on a read-only node, whose
pages carry a banner naming the primary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from smartswitch.admin import forms, operations, users
from smartswitch.admin.users import User
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.store.schema import PeerRow, RouteRow
from smartswitch.web import cdrs as cdr_queries
from smartswitch.web.cluster import cluster_overview
from smartswitch.web.context import Web
from smartswitch.web.security import COOKIE, CSRF_FIELD, CSRF_HEADER, SESSION_SECONDS, Session
from smartswitch.web.stats import calls_in_progress, dashboard_charts, last_hour

router = APIRouter(include_in_schema=False)
SOURCE = "web"
PAGE = 50


class LoginRequired(Exception):
    pass


def web_of(request: Request) -> Web:
    return request.app.state.web  # type: ignore[no-any-return]


async def _session_user(request: Request) -> tuple[User, Session] | None:
    web = web_of(request)
    session = web.signer.read(request.cookies.get(COOKIE))
    if session is None:
        return None
    async with web.sessions() as db:
        user = await users.load_user(db, session.user_id)
    return None if user is None else (user, session)


async def page_user(request: Request) -> tuple[User, Session]:
    found = await _session_user(request)
    if found is None:
        raise LoginRequired
    return found


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = "/login?" + urlencode({"next": target})
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


async def _form(request: Request, session: Session) -> dict[str, Any]:
    """The posted form, after the CSRF check (field or htmx header)."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in data:  # repeated fields (checkboxes) keep the last
            pass
        data[key] = value
    token = data.pop(CSRF_FIELD, None) or request.headers.get(CSRF_HEADER)
    if not web_of(request).signer.check_csrf(session, token if isinstance(token, str) else None):
        raise HTTPException(403, "the form has expired or did not come from this site: reload it")
    return data


def _writer(request: Request, user: User) -> None:
    web = web_of(request)
    if not user.can_write:
        raise HTTPException(403, f"the {user.role.value} role cannot change anything")
    if web.read_only:
        raise HTTPException(409, web.read_only_message)


def render(
    request: Request,
    template: str,
    user: User | None,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    web = web_of(request)
    can_write = user is not None and user.can_write and not web.read_only
    return web.templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "web": web,
            "node_id": web.config.node_id,
            "read_only": web.read_only,
            "primary": web.primary,
            "can_write": can_write,
            "is_admin": user is not None and user.is_admin and not web.read_only,
            "csrf": web.signer.csrf(session) if session is not None else "",
            "path": request.url.path,
            "flash": request.query_params.get("ok", ""),
            **context,
        },
        status_code=status_code,
    )


def _errors(exc: ConfigInvalid) -> dict[str, str]:
    """Field -> message, by the first segment of each issue's path (``acl[1]`` -> ``acl``)."""
    out: dict[str, str] = {}
    for issue in exc.issues:
        field = issue.path.split(".")[0].split("[")[0] or "_"
        message = issue.message if issue.line is None else f"line {issue.line}: {issue.message}"
        out[field] = f"{out[field]}; {message}" if field in out else message
    return out


def _back(url: str, message: str) -> RedirectResponse:
    return RedirectResponse(f"{url}?{urlencode({'ok': message})}", status_code=303)


def _money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:f}"


# --------------------------------------------------------------------------------------------
# Login


@router.get("/login")
async def login_page(request: Request) -> Response:
    if not web_of(request).has_database:
        return HTMLResponse("lab mode: no database, no UI (see /health and /metrics)", 503)
    return render(
        request, "login.html", None, None, next=_safe_next(request.query_params.get("next"))
    )


def _safe_next(target: str | None) -> str:
    # Only our own paths: never an open redirect to another site.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@router.post("/login")
async def login(request: Request) -> Response:
    web = web_of(request)
    form = await request.form()
    name = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    client = request.client.host if request.client else "?"
    keys = [f"ip:{client}", f"user:{name}"]
    wait = web.limiter.retry_after(keys)
    if wait > 0:
        return render(
            request,
            "login.html",
            None,
            None,
            status_code=429,
            next=target,
            username=name,
            error=f"too many failed logins: try again in {int(wait) + 1} s",
        )
    async with web.sessions() as session:
        user = await users.verify_login(session, name, password)
    if user is None:
        web.limiter.failed(keys)
        return render(
            request,
            "login.html",
            None,
            None,
            status_code=401,
            next=target,
            username=name,
            error="wrong user name or password",
        )
    web.limiter.succeeded(keys)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        web.signer.issue(user.id),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=bool(getattr(web.config, "cookie_secure", False)),
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    _user, session = await page_user(request)
    await _form(request, session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# --------------------------------------------------------------------------------------------
# Dashboard and calls


@router.get("/")
async def dashboard(request: Request) -> Response:
    user, session = await page_user(request)
    return render(request, "dashboard.html", user, session, **await _dashboard(request))


@router.get("/dashboard/live")
async def dashboard_live(request: Request) -> Response:
    user, session = await page_user(request)
    return render(request, "_dashboard_live.html", user, session, **await _dashboard(request))


async def _dashboard(request: Request) -> dict[str, Any]:
    web = web_of(request)
    web.sampler.sample()
    buckets = await last_hour(web.sessions)
    attempts = sum(b.attempts for b in buckets)
    answered = sum(b.answered for b in buckets)
    talk = sum(b.talk_ms for b in buckets)
    return {
        "charts": dashboard_charts(web.sampler, buckets),
        "in_progress": calls_in_progress(web.node),
        "cps": web.sampler.cps(),
        "hour_attempts": attempts,
        "hour_asr": (100.0 * answered / attempts) if attempts else None,
        "hour_acd": (talk / 1000.0 / answered) if answered else None,
    }


@router.get("/cluster")
async def cluster_page(request: Request) -> Response:
    """Nodes, roles, replication state and lag, outbox depth; refreshed by htmx."""
    user, session = await page_user(request)
    nodes = await cluster_overview(web_of(request).node)
    template = "_cluster.html" if request.headers.get("hx-request") else "cluster.html"
    return render(request, template, user, session, nodes=nodes)


@router.get("/calls")
async def calls_page(request: Request) -> Response:
    user, session = await page_user(request)
    calls = cdr_queries.calls_in_progress_list(web_of(request).node)
    template = "_calls.html" if request.headers.get("hx-request") else "calls.html"
    return render(request, template, user, session, calls=calls)


@router.post("/calls/{key}/hangup")
async def hangup(request: Request, key: str) -> Response:
    user, session = await page_user(request)
    await _form(request, session)
    if not user.can_write:
        raise HTTPException(403, f"the {user.role.value} role cannot hang up calls")
    ended = cdr_queries.hangup(web_of(request).node, key)
    return _back("/calls", "call hung up" if ended else "that call had already ended")


# --------------------------------------------------------------------------------------------
# Accounts


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
    for row in await operations.list_accounts(web.sessions):
        live, available = web.live_balance(row.id)
        rows.append({"row": row, "live": live, "available": available})
    return render(
        request,
        "accounts.html",
        user,
        session,
        status_code=422 if errors else 200,
        accounts=rows,
        values=values or {"currency": "USD", "prepaid": "true"},
        errors=errors or {},
        money=_money,
    )


@router.post("/accounts")
async def create_account(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    data["prepaid"] = "true" if data.get("prepaid") else "false"
    web = web_of(request)
    try:
        spec = forms.account_spec(SOURCE, data)
        await web.save(spec, source=SOURCE, actor=user.name, create_only=True)
    except ConfigInvalid as exc:
        return await _accounts(request, user, session, data, _errors(exc))
    except operations.Conflict as exc:
        return await _accounts(request, user, session, data, {"name": str(exc)})
    web.config_changed()
    return _back(f"/accounts/{quote(spec.name)}", f"account {spec.name} created")


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
    row = await operations.get_account(web.sessions, name)
    live, available = web.live_balance(row.id)
    changes = await operations.balance_changes(web.sessions, row.id, limit=100)
    return render(
        request,
        "account.html",
        user,
        session,
        status_code=422 if (errors or balance_errors) else 200,
        account=row,
        live=live,
        available=available,
        changes=changes,
        values=values
        or {
            "credit_limit": _money(row.credit_limit),
            "prepaid": "true" if row.prepaid else "",
        },
        errors=errors or {},
        balance_values=balance_values or {"kind": "topup"},
        balance_errors=balance_errors or {},
        money=_money,
    )


@router.post("/accounts/{name}")
async def update_account(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    web = web_of(request)
    row = await operations.get_account(web.sessions, name)
    data["currency"] = row.currency
    data["prepaid"] = "true" if data.get("prepaid") else "false"
    try:
        spec = forms.account_spec(SOURCE, data, name)
        await web.save(spec, source=SOURCE, actor=user.name)
    except ConfigInvalid as exc:
        return await _account(request, user, session, name, values=data, errors=_errors(exc))
    web.config_changed()
    return _back(f"/accounts/{quote(name)}", "account saved")


@router.post("/accounts/{name}/balance")
async def change_balance(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    kind = "topup" if data.get("kind") != "adjustment" else "adjustment"
    web = web_of(request)
    try:
        balance, _ = await operations.change_balance(
            web.sessions, name, kind, data, actor=user.name, source=SOURCE
        )
    except ConfigInvalid as exc:
        return await _account(
            request, user, session, name, balance_values=data, balance_errors=_errors(exc)
        )
    web.config_changed()
    what = "top-up" if kind == "topup" else "adjustment"
    return _back(f"/accounts/{quote(name)}", f"{what} recorded: balance {balance:f}")


@router.post("/accounts/{name}/delete")
async def delete_account(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    await _form(request, session)
    _writer(request, user)
    try:
        await operations.delete_account(web_of(request).sessions, name)
    except operations.Conflict as exc:
        return await _account(request, user, session, name, errors={"_": str(exc)})
    web_of(request).config_changed()
    return _back("/accounts", f"account {name} deleted")


# --------------------------------------------------------------------------------------------
# Tariffs and rates


@router.get("/tariffs")
async def tariffs_page(request: Request) -> Response:
    user, session = await page_user(request)
    return await _tariffs(request, user, session)


async def _tariffs(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    tariffs = await operations.list_tariffs(web_of(request).sessions)
    return render(
        request,
        "tariffs.html",
        user,
        session,
        status_code=422 if errors else 200,
        tariffs=tariffs,
        values=values or {"currency": "USD"},
        errors=errors or {},
    )


@router.post("/tariffs")
async def create_tariff(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    web = web_of(request)
    try:
        spec = forms.tariff_spec(SOURCE, data)
        await web.save(spec, source=SOURCE, actor=user.name, create_only=True)
    except ConfigInvalid as exc:
        return await _tariffs(request, user, session, data, _errors(exc))
    except operations.Conflict as exc:
        return await _tariffs(request, user, session, data, {"name": str(exc)})
    web.config_changed()
    return _back(f"/tariffs/{quote(spec.name)}", f"tariff {spec.name} created")


@router.get("/tariffs/{name}")
async def tariff_page(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    return await _tariff(request, user, session, name)


async def _tariff(
    request: Request,
    user: User,
    session: Session,
    name: str,
    *,
    import_errors: list[str] | None = None,
) -> Response:
    web = web_of(request)
    info = await operations.get_tariff(web.sessions, name)
    prefix = request.query_params.get("prefix", "")[:32]
    page = _page(request)
    total, rates = await operations.list_rates(
        web.sessions, info.row.id, prefix if prefix.isdigit() else "", PAGE, (page - 1) * PAGE
    )
    return render(
        request,
        "tariff.html",
        user,
        session,
        status_code=422 if import_errors else 200,
        tariff=info,
        rates=rates,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE)),
        prefix=prefix,
        import_errors=import_errors or [],
        money=_money,
    )


def _page(request: Request) -> int:
    text = request.query_params.get("page", "1")
    return max(1, min(int(text), 10**6)) if text.isdigit() else 1


@router.post("/tariffs/{name}/import")
async def import_rates(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    upload = data.get("file")
    if upload is None or isinstance(upload, str):
        return await _tariff(request, user, session, name, import_errors=["choose a CSV file"])
    raw = await upload.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return await _tariff(
            request, user, session, name, import_errors=["the file is not UTF-8 text"]
        )
    web = web_of(request)
    started = time.monotonic()
    try:
        count, _ = await operations.import_rates(
            web.sessions, name, text, actor=user.name, source=upload.filename or "rates.csv"
        )
    except ConfigInvalid as exc:
        return await _tariff(
            request, user, session, name, import_errors=[str(i) for i in exc.issues]
        )
    web.config_changed()
    return _back(
        f"/tariffs/{quote(name)}",
        f"imported {count} rates in {time.monotonic() - started:.1f} s",
    )


@router.get("/tariffs/{name}/rates.csv")
async def export_rates(request: Request, name: str) -> Response:
    await page_user(request)
    text = await operations.export_rates(web_of(request).sessions, name)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-rates.csv"'},
    )


@router.post("/tariffs/{name}/delete")
async def delete_tariff(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    await _form(request, session)
    _writer(request, user)
    try:
        await operations.delete_tariff(web_of(request).sessions, name)
    except operations.Conflict as exc:
        return await _tariff(request, user, session, name, import_errors=[str(exc)])
    web_of(request).config_changed()
    return _back("/tariffs", f"tariff {name} deleted")


# --------------------------------------------------------------------------------------------
# Peers


def _peer_values(row: PeerRow, accounts: dict[int, str], tariffs: dict[int, str]) -> dict[str, Any]:
    return {
        "name": row.name,
        "role": row.role.value,
        "account": accounts.get(row.account_id, ""),
        "tariff": "" if row.tariff_id is None else tariffs.get(row.tariff_id, ""),
        "acl": "\n".join(row.acl),
        "username": row.username or "",
        "password": "",  # secrets never go back to the browser; empty keeps the stored one
        "address": row.address or "",
        "transport": row.transport,
        "max_calls": row.max_calls or "",
        "max_cps": row.max_cps or "",
        "caller_rewrite": "\n".join(f"{r['match']} -> {r['replace']}" for r in row.caller_rewrite),
        "callee_rewrite": "\n".join(f"{r['match']} -> {r['replace']}" for r in row.callee_rewrite),
        "profit_control": row.profit_control.value,
        "enabled": "true" if row.enabled else "",
        "deliver_dids": "true" if row.deliver_dids else "",
        "register_registrar": row.register_registrar or "",
        "register_username": row.register_username or "",
        "register_password": "",
        "register_expires": "" if row.register_expires is None else str(row.register_expires),
    }


async def _lookups(web: Web) -> tuple[dict[int, str], dict[int, str]]:
    accounts = {a.id: a.name for a in await operations.list_accounts(web.sessions)}
    tariffs = {t.row.id: t.row.name for t in await operations.list_tariffs(web.sessions)}
    return accounts, tariffs


@router.get("/peers")
async def peers_page(request: Request) -> Response:
    user, session = await page_user(request)
    web = web_of(request)
    accounts, tariffs = await _lookups(web)
    peers = await operations.list_peers(web.sessions)
    return render(
        request, "peers.html", user, session, peers=peers, accounts=accounts, tariffs=tariffs
    )


async def _peer_form(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any],
    *,
    existing: str | None,
    errors: dict[str, str] | None = None,
) -> Response:
    accounts, tariffs = await _lookups(web_of(request))
    return render(
        request,
        "peer_form.html",
        user,
        session,
        status_code=422 if errors else 200,
        values=values,
        existing=existing,
        errors=errors or {},
        account_names=sorted(accounts.values()),
        tariff_names=sorted(tariffs.values()),
    )


@router.get("/peers/new")
async def new_peer(request: Request) -> Response:
    user, session = await page_user(request)
    values = {
        "role": "customer",
        "transport": "udp",
        "profit_control": "allow_loss",
        "enabled": "true",
    }
    return await _peer_form(request, user, session, values, existing=None)


@router.get("/peers/{name}")
async def peer_page(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    web = web_of(request)
    row = await operations.get_peer(web.sessions, name)
    accounts, tariffs = await _lookups(web)
    return await _peer_form(
        request, user, session, _peer_values(row, accounts, tariffs), existing=name
    )


@router.post("/peers")
async def save_peer(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    existing = str(data.pop("existing", "") or "") or None
    data["enabled"] = "true" if data.get("enabled") else "false"
    data["deliver_dids"] = "true" if data.get("deliver_dids") else "false"
    web = web_of(request)
    if existing is not None:  # an empty password field keeps the stored secret
        with contextlib.suppress(operations.NotFound):
            row = await operations.get_peer(web.sessions, existing)
            if not data.get("password") and data.get("username"):
                data["password"] = row.password or ""
            if not data.get("register_password") and data.get("register_registrar"):
                data["register_password"] = row.register_password or ""
    try:
        spec = forms.peer_spec(SOURCE, data, existing)
        await web.save(spec, source=SOURCE, actor=user.name, create_only=existing is None)
    except ConfigInvalid as exc:
        return await _peer_form(
            request, user, session, data, existing=existing, errors=_errors(exc)
        )
    except operations.Conflict as exc:
        return await _peer_form(
            request, user, session, data, existing=existing, errors={"name": str(exc)}
        )
    web.config_changed()
    return _back("/peers", f"peer {spec.name} saved")


@router.post("/peers/{name}/delete")
async def delete_peer(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    try:
        await operations.delete_peer(web_of(request).sessions, name)
    except operations.Conflict as exc:
        web = web_of(request)
        accounts, tariffs = await _lookups(web)
        row = await operations.get_peer(web.sessions, name)
        _ = data
        return await _peer_form(
            request,
            user,
            session,
            _peer_values(row, accounts, tariffs),
            existing=name,
            errors={"_": str(exc)},
        )
    web_of(request).config_changed()
    return _back("/peers", f"peer {name} deleted")


# --------------------------------------------------------------------------------------------
# Routes


def _route_values(row: RouteRow, peers: dict[int, str]) -> dict[str, Any]:
    return {
        "prefix": row.prefix,
        "strategy": row.strategy.value,
        "name": row.name or "",
        "suppliers": "\n".join(
            f"{peers.get(s.peer_id, '?')} {s.priority} {s.weight}" for s in row.suppliers
        ),
    }


@router.get("/routes")
async def routes_page(request: Request) -> Response:
    user, session = await page_user(request)
    web = web_of(request)
    peers = await operations.peer_names(web.sessions)
    routes = await operations.list_routes(web.sessions)
    return render(request, "routes.html", user, session, routes=routes, peers=peers)


async def _route_form(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any],
    *,
    existing: str | None,
    errors: dict[str, str] | None = None,
) -> Response:
    web = web_of(request)
    suppliers = sorted(
        p.name for p in await operations.list_peers(web.sessions) if p.role.value != "customer"
    )
    return render(
        request,
        "route_form.html",
        user,
        session,
        status_code=422 if errors else 200,
        values=values,
        existing=existing,
        errors=errors or {},
        supplier_names=suppliers,
    )


@router.get("/routes/new")
async def new_route(request: Request) -> Response:
    user, session = await page_user(request)
    return await _route_form(request, user, session, {"strategy": "priority"}, existing=None)


@router.get("/routes/{key}")
async def route_page(request: Request, key: str) -> Response:
    user, session = await page_user(request)
    web = web_of(request)
    prefix = "" if key == "default" else key
    row = await operations.get_route(web.sessions, prefix)
    values = _route_values(row, await operations.peer_names(web.sessions))
    return await _route_form(request, user, session, values, existing=key)


@router.post("/routes")
async def save_route(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    existing = str(data.pop("existing", "") or "") or None
    web = web_of(request)
    prefix = None if existing is None else ("" if existing == "default" else existing)
    try:
        spec = forms.route_spec(SOURCE, data, prefix)
        await web.save(spec, source=SOURCE, actor=user.name, create_only=existing is None)
    except ConfigInvalid as exc:
        return await _route_form(
            request, user, session, data, existing=existing, errors=_errors(exc)
        )
    except operations.Conflict as exc:
        return await _route_form(
            request, user, session, data, existing=existing, errors={"prefix": str(exc)}
        )
    web.config_changed()
    return _back("/routes", f"route {spec.prefix or '(default)'} saved")


@router.post("/routes/{key}/delete")
async def delete_route(request: Request, key: str) -> Response:
    user, session = await page_user(request)
    await _form(request, session)
    _writer(request, user)
    await operations.delete_route(web_of(request).sessions, "" if key == "default" else key)
    web_of(request).config_changed()
    return _back("/routes", "route deleted")


# --------------------------------------------------------------------------------------------
# CDRs


def _cdr_filter(request: Request) -> tuple[cdr_queries.CdrFilter, dict[str, str]]:
    from smartswitch.admin import fields

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
        cdr_queries.CdrFilter(
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
    page = _page(request)
    total: int = 0
    rows: list[dict[str, Any]] = []
    if not errors:
        total, rows = await cdr_queries.query(
            web_of(request).sessions, flt, PAGE, (page - 1) * PAGE
        )
    web = web_of(request)
    peers = sorted(p.name for p in await operations.list_peers(web.sessions))
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


# --------------------------------------------------------------------------------------------
# Settings, users, tokens, own password


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
    current = await operations.get_settings(web_of(request).sessions)
    return render(
        request,
        "settings.html",
        user,
        session,
        status_code=422 if errors else 200,
        settings=[s for s, _ in operations.SETTINGS.values()],
        values=values or current,
        errors=errors or {},
    )


@router.post("/settings")
async def save_settings(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    if not user.is_admin:
        raise HTTPException(403, "only an admin can change settings")
    web = web_of(request)
    current = await operations.get_settings(web.sessions)
    errors: dict[str, str] = {}
    for name in operations.SETTINGS:
        value = str(data.get(name, ""))
        if value == current.get(name):
            continue
        try:
            await operations.set_setting(web.sessions, name, value, source=SOURCE)
        except ConfigInvalid as exc:
            errors[name] = exc.issues[0].message
    if errors:
        return await _settings(request, user, session, data, errors)
    web.config_changed()
    return _back("/settings", "settings saved")


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
    return render(
        request,
        "users.html",
        user,
        session,
        status_code=422 if errors else 200,
        users=rows,
        roles=users.ROLES,
        values=values or {"role": "operator"},
        errors=errors or {},
        created=created,
    )


@router.post("/users")
async def create_user(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    if not user.is_admin:
        raise HTTPException(403, "only an admin can manage users")
    password = str(data.get("password", "")) or None
    try:
        async with web_of(request).sessions() as db, db.begin():
            new, made = await users.create_user(
                db, str(data.get("name", "")).strip(), str(data.get("role", "")), password
            )
    except ConfigInvalid as exc:
        data.pop("password", None)
        return await _users(request, user, session, data, _errors(exc))
    shown = None if password else f"user {new.name} created with the password {made} (shown once)"
    if shown:
        return await _users(request, user, session, created=shown)
    return _back("/users", f"user {new.name} created")


@router.get("/tokens")
async def tokens_page(request: Request) -> Response:
    user, session = await page_user(request)
    return render(request, "tokens.html", user, session, token=None)


@router.post("/tokens")
async def create_token(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    async with web_of(request).sessions() as db, db.begin():
        token = await users.create_token(db, user, str(data.get("name", "") or "api")[:64])
    return render(request, "tokens.html", user, session, token=token)


@router.get("/me")
async def me_page(request: Request) -> Response:
    user, session = await page_user(request)
    return render(request, "me.html", user, session, errors={})


@router.post("/me")
async def change_password(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    web = web_of(request)
    errors: dict[str, str] = {}
    async with web.sessions() as db, db.begin():
        if await users.verify_login(db, user.name, str(data.get("current", ""))) is None:
            errors["current"] = "wrong password"
        else:
            try:
                await users.set_password(db, user.id, str(data.get("password", "")))
            except ConfigInvalid as exc:
                errors = _errors(exc)
    if errors:
        return render(request, "me.html", user, session, errors=errors, status_code=422)
    return _back("/me", "password changed")


# --------------------------------------------------------------------------------------------
# Subscribers (with their registrations) and DIDs


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
    accounts, tariffs = await _lookups(web)
    rows = await operations.list_subscribers(web.sessions)
    live = web.live_bindings()
    by_aor: dict[str, list[dict[str, Any]]] = {}
    for binding in live or []:
        by_aor.setdefault(str(binding["aor"]), []).append(binding)
    return render(
        request,
        "subscribers.html",
        user,
        session,
        status_code=422 if errors else 200,
        subscribers=rows,
        accounts=accounts,
        tariffs=tariffs,
        bindings=by_aor,
        registrar=live is not None,
        values=values or {"max_contacts": "5", "enabled": "true"},
        errors=errors or {},
        existing=existing,
        account_names=sorted(accounts.values()),
        tariff_names=sorted(tariffs.values()),
    )


@router.get("/subscribers/{username}")
async def subscriber_page(request: Request, username: str) -> Response:
    user, session = await page_user(request)
    web = web_of(request)
    row = await operations.get_subscriber(web.sessions, username)
    accounts, tariffs = await _lookups(web)
    values = {
        "username": row.username,
        "account": accounts.get(row.account_id, ""),
        "tariff": "" if row.tariff_id is None else tariffs.get(row.tariff_id, ""),
        "allowed_cidrs": "\n".join(row.allowed_cidrs),
        "max_contacts": str(row.max_contacts),
        "max_calls": "" if row.max_calls is None else str(row.max_calls),
        "caller_id": row.caller_id or "",
        "enabled": "true" if row.enabled else "",
    }
    return await _subscribers(request, user, session, values, existing=username)


@router.post("/subscribers")
async def save_subscriber(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    existing = str(data.pop("existing", "") or "") or None
    data["enabled"] = "true" if data.get("enabled") else "false"
    web = web_of(request)
    try:
        spec = forms.subscriber_spec(SOURCE, data, existing)
        await web.save(spec, source=SOURCE, actor=user.name, create_only=existing is None)
    except ConfigInvalid as exc:
        data.pop("password", None)
        return await _subscribers(request, user, session, data, _errors(exc), existing)
    except operations.Conflict as exc:
        data.pop("password", None)
        return await _subscribers(request, user, session, data, {"username": str(exc)}, existing)
    web.config_changed()
    return _back("/subscribers", f"subscriber {spec.username} saved")


@router.post("/subscribers/{username}/delete")
async def delete_subscriber(request: Request, username: str) -> Response:
    user, session = await page_user(request)
    await _form(request, session)
    _writer(request, user)
    try:
        await operations.delete_subscriber(web_of(request).sessions, username)
    except operations.Conflict as exc:
        return await _subscribers(request, user, session, errors={"_": str(exc)})
    web_of(request).config_changed()
    return _back("/subscribers", f"subscriber {username} deleted")


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
    web = web_of(request)
    subscribers = await operations.subscriber_names(web.sessions)
    peers = await operations.peer_names(web.sessions)
    return render(
        request,
        "dids.html",
        user,
        session,
        status_code=422 if errors else 200,
        dids=await operations.list_dids(web.sessions),
        subscribers=subscribers,
        peers=peers,
        subscriber_names=sorted(subscribers.values()),
        peer_names=sorted(peers.values()),
        values=values or {"enabled": "true"},
        errors=errors or {},
    )


@router.post("/dids")
async def save_did(request: Request) -> Response:
    user, session = await page_user(request)
    data = await _form(request, session)
    _writer(request, user)
    data["enabled"] = "true" if data.get("enabled") else "false"
    web = web_of(request)
    try:
        spec = forms.did_spec(SOURCE, data)
        await web.save(spec, source=SOURCE, actor=user.name)
    except ConfigInvalid as exc:
        return await _dids(request, user, session, data, _errors(exc))
    web.config_changed()
    return _back("/dids", f"DID {spec.number} saved")


@router.post("/dids/{number}/delete")
async def delete_did(request: Request, number: str) -> Response:
    user, session = await page_user(request)
    await _form(request, session)
    _writer(request, user)
    await operations.delete_did(web_of(request).sessions, number)
    web_of(request).config_changed()
    return _back("/dids", f"DID {number} deleted")
