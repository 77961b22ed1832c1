"""Logging in and out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from smartswitch.admin import users
from smartswitch.web.pages.common import page_user, posted, render
from smartswitch.web.security import COOKIE, SESSION_SECONDS
from smartswitch.web.shared import web_of

router = APIRouter()


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
    # A new session at every login; the one the browser came with (a fixated id, another
    # user's) ends here.
    before = web.signer.read(request.cookies.get(COOKIE))
    if before is not None:
        web.revoked.revoke(before)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        web.signer.issue(user.id),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=web.config.cookie_secure,
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    _user, session = await page_user(request)
    await posted(request, session)
    web_of(request).revoked.revoke(session)  # the cookie is worth nothing from now on
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
