"""What every page shares: the logged-in user, the CSRF-checked form, rendering, field errors."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from smartswitch.admin import users
from smartswitch.admin.users import User
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.security import COOKIE, CSRF_FIELD, CSRF_HEADER, Session
from smartswitch.web.shared import web_of

SOURCE = "web"
PAGE = 50


class LoginRequired(Exception):
    pass


async def session_user(request: Request) -> tuple[User, Session] | None:
    web = web_of(request)
    session = web.signer.read(request.cookies.get(COOKIE))
    if session is None or session in web.revoked:
        return None
    async with web.sessions() as db:
        user = await users.load_user(db, session.user_id)
    return None if user is None else (user, session)


async def page_user(request: Request) -> tuple[User, Session]:
    found = await session_user(request)
    if found is None:
        raise LoginRequired
    request.state.user = found[0]  # for the audit log (shared.who_of)
    return found


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = "/login?" + urlencode({"next": target})
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


async def posted(request: Request, session: Session) -> dict[str, Any]:
    """The posted form, after the CSRF check (field or htmx header)."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key, value in form.multi_items():
        data[key] = value  # repeated fields (checkboxes) keep the last
    token = data.pop(CSRF_FIELD, None) or request.headers.get(CSRF_HEADER)
    if not web_of(request).signer.check_csrf(session, token if isinstance(token, str) else None):
        raise HTTPException(403, "the form has expired or did not come from this site: reload it")
    return data


def checkboxes(data: dict[str, Any], *names: str) -> None:
    """An unticked checkbox is not posted at all: say "false" for it."""
    for name in names:
        data[name] = "true" if data.get(name) else "false"


async def may_write(request: Request, user: User) -> None:
    if not user.can_write:
        raise HTTPException(403, f"the {user.role.value} role cannot change anything")
    refusal = await web_of(request).write_refusal()
    if refusal:
        raise HTTPException(409, refusal)


async def writer_form(request: Request) -> tuple[User, Session, dict[str, Any]]:
    """A posted change: the user, who must be allowed to write here, and the form."""
    user, session = await page_user(request)
    data = await posted(request, session)
    await may_write(request, user)
    return user, session, data


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


def form_page(
    request: Request,
    template: str,
    user: User,
    session: Session,
    values: Mapping[str, Any],
    errors: dict[str, str] | None,
    **context: Any,
) -> HTMLResponse:
    """A page with a form: its values, and its errors by field (422 when there are any)."""
    return render(
        request,
        template,
        user,
        session,
        status_code=422 if errors else 200,
        values=values,
        errors=errors or {},
        **context,
    )


def field_errors(exc: ConfigInvalid) -> dict[str, str]:
    """Field -> message, by the first segment of each issue's path (``acl[1]`` -> ``acl``)."""
    out: dict[str, str] = {}
    for issue in exc.issues:
        field = issue.path.split(".")[0].split("[")[0] or "_"
        message = issue.message if issue.line is None else f"line {issue.line}: {issue.message}"
        out[field] = f"{out[field]}; {message}" if field in out else message
    return out


def back(url: str, message: str) -> RedirectResponse:
    return RedirectResponse(f"{url}?{urlencode({'ok': message})}", status_code=303)


def money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:f}"


def page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    return max(1, min(int(text), 10**6)) if text.isdigit() else 1


def existing_key(data: dict[str, Any]) -> str | None:
    """The entity a form edits (its hidden ``existing`` field), None for a new one."""
    return str(data.pop("existing", "") or "") or None
