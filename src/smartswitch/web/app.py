"""The node's HTTP side: the admin UI, the REST API (``/api/v1``), ``/health`` and ``/metrics``.

It runs in the node's event loop beside SIP, so every database call is async and CPU-heavy
work (password hashing, CSV parsing) goes to a thread.  Only ``/health``, ``/metrics``, the
login page and the static assets answer without a login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from smartswitch.admin import users
from smartswitch.admin.operations import Conflict, NotFound
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web import api, pages
from smartswitch.web.cluster import node_status
from smartswitch.web.context import HERE, LabMode, Web
from smartswitch.web.control import control_router
from smartswitch.web.ports import NodePort
from smartswitch.web.registrations import registrations_router
from smartswitch.web.security import inline_script_hashes, security_headers
from smartswitch.web.stats import metrics_text

log = logging.getLogger("smartswitch.web")

SWAGGER_CDN = "https://cdn.jsdelivr.net"


def create_app(node: NodePort) -> FastAPI:
    app = FastAPI(
        title="smartswitch",
        version="0.1.0",
        description="The smartswitch REST API. Authenticate with `Authorization: Bearer TOKEN` "
        "(make a token on the UI's API tokens page). Money is a decimal string.",
        docs_url=None,  # served below, behind the login
        redoc_url=None,
        openapi_url=None,
    )
    web = Web(node)
    app.state.web = web

    @app.middleware("http")
    async def secure_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """The security headers (web/security.py) on every response, unless it set its own."""
        response = await call_next(request)
        for name, value in security_headers(web.config.cookie_secure):
            if name not in response.headers:
                response.headers[name] = value
        return response

    # /health and /metrics are async: they read the node's live state on its event loop.
    @app.get("/health", tags=["public"])
    async def health() -> dict[str, object]:
        """Up, the configuration version the calls run on (null in lab mode), the SIP
        engine's sizes."""
        engine = node.engine_state()
        return {
            "status": "ok",
            "node": node.config.node_id,
            "config_version": node.config_version,
            "calls": engine.calls,
            "call_states": dict(engine.call_states),
            "transactions": {
                "client": engine.client_transactions,
                "server": engine.server_transactions,
            },
            "timers": engine.timers,
            "dialogs": engine.dialogs,
        }

    @app.get("/metrics", tags=["public"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text format (on the event loop: the counters live there)."""
        sync = await node.file_sync_state()
        text = metrics_text(node, web.sampler, sync)
        if node.bus is not None:  # bus requests refused by reason, nodes up
            text += node.bus.metrics()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    # Node to node: the cluster bus, every request signed with the cluster secret's key and
    # verified by its routes instead of a login (cluster/endpoints.py).
    if node.bus is not None:
        app.include_router(node.bus.router(lambda: node_status(node)))
    # The registrar's state, read by `smartswitch registrations` (web/registrations.py).
    app.include_router(registrations_router(node), dependencies=[Depends(api.api_user)])
    # Draining the node, for `smartswitch drain` and admins (web/control.py).
    app.include_router(control_router(node))

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        await pages.page_user(request)  # behind the login like every page
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        await pages.page_user(request)
        page = get_swagger_ui_html(openapi_url="/api/v1/openapi.json", title="smartswitch API")
        # FastAPI's Swagger UI: its script and style from its CDN, one inline script (by hash).
        scripts = " ".join(inline_script_hashes(bytes(page.body).decode()))
        page.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src 'self' {SWAGGER_CDN} {scripts}; "
            f"style-src 'self' {SWAGGER_CDN}; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        )
        return page

    app.include_router(pages.router)

    @app.exception_handler(ConfigInvalid)
    async def invalid(request: Request, exc: ConfigInvalid) -> Response:
        detail = [
            {
                "loc": ["body", *(p for p in _path(issue.path))],
                "msg": issue.message
                if issue.line is None
                else f"line {issue.line}: {issue.message}",
                "type": "value_error",
                **({"line": issue.line} if issue.line is not None else {}),
            }
            for issue in exc.issues
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return await _error(request, 404, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> Response:
        return await _error(request, 409, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_api(request):
            return await http_exception_handler(request, exc)
        return await _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(LabMode)
    async def lab_mode(request: Request, exc: LabMode) -> Response:
        return PlainTextResponse(
            "lab mode: this node has no database, so no UI or API (see /health and /metrics)",
            status_code=503,
        )

    @app.exception_handler(pages.LoginRequired)
    async def login_required(request: Request, exc: pages.LoginRequired) -> Response:
        return pages.to_login(request)

    _start_background(web)
    return app


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


_TITLES = {403: "Not allowed", 404: "Not found", 409: "Not possible here", 422: "Invalid"}


async def _error(request: Request, status: int, message: str) -> Response:
    """JSON for the API, a page for a person."""
    if _is_api(request):
        return JSONResponse({"detail": message}, status_code=status)
    found = None
    with contextlib.suppress(Exception):
        found = await pages.session_user(request)
    user, session = found if found is not None else (None, None)
    return pages.render(
        request,
        "error.html",
        user,
        session,
        status_code=status,
        status=status,
        title=_TITLES.get(status, "Error"),
        message=message,
    )


def _path(path: str) -> list[str | int]:
    """``suppliers[0].peer`` -> ["suppliers", 0, "peer"]."""
    out: list[str | int] = []
    for part in path.replace("]", "").split("."):
        name, *indexes = part.split("[")
        if name:
            out.append(name)
        out.extend(int(i) for i in indexes if i.isdigit())
    return out or [""]


def _start_background(web: Web) -> None:
    """The sampler, and the first admin of an empty database; only inside a running loop (the
    node's): tests call :func:`bootstrap` themselves."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    web.sampler.start()
    web.tasks.append(loop.create_task(bootstrap(web), name="web-bootstrap"))


async def bootstrap(web: Web) -> str | None:
    """Create ``admin`` with a one-time password if there is no user at all, and print it once
    (the only secret the node ever logs)."""
    if not web.has_database or web.read_only:
        # A replica must not write: MariaDB's read_only does not stop root, and a write of
        # its own would break its replication. The primary makes the first admin.
        return None
    try:
        async with web.sessions() as session, session.begin():
            password = await users.ensure_first_admin(session)
    except Exception as exc:  # a replica cannot write: its primary made the users
        log.warning("could not check for a first admin user: %s", exc)
        return None
    if password is not None:
        log.warning(
            "no user existed: created user 'admin' with the one-time password %s "
            "(log in and change it; this is shown only once)",
            password,
        )
    return password
