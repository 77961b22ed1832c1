"""The cluster bus, server side: a FastAPI router the node's HTTP server includes.

Every route verifies the request (:class:`~smartswitch.cluster.signing.Verifier`) before
anything else: a refused request gets ``401 {"detail": "<reason>"}`` and its body is never
read when its headers already condemn it (forged, stale, replayed, ...), never parsed in any
case. An accepted one reaches its handler as a :class:`SignedRequest` (authenticated sender,
raw body); the handler's result is answered as JSON with a signature bound to the request.

    router = cluster_router(
        verifier,
        heartbeater=heartbeater,              # POST /cluster/heartbeat, GET /cluster/members
        status=lambda: node_status(node),     # GET /cluster/status
        registrations=registration_sync,      # GET and POST /cluster/registrations
    )
    app.include_router(router)

A later message kind is one more handler: ``extra={("POST", "/cluster/reservations"):
handler}``, or :func:`bus_router` for a router of its own. Handlers raise
:class:`~smartswitch.cluster.bus.MessageError` for a request they cannot take.
:func:`metrics_text` gives the refusal counters and the membership for ``/metrics``.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from smartswitch.cluster.bus import PATHS, MessageError
from smartswitch.cluster.signing import BusAuthError, Refusal, SignedRequest, Verifier

if TYPE_CHECKING:
    from smartswitch.cluster.membership import Heartbeater, Membership
    from smartswitch.cluster.registrations import RegistrationSync

__all__ = ["Handler", "bus_router", "cluster_router", "metrics_text", "request_target"]

Handler = Callable[[SignedRequest], Awaitable[Any]]
"""Takes a verified request, returns its JSON answer (or raises MessageError)."""

Status = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]


def request_target(scope: Mapping[str, Any]) -> str:
    """The path and query as the client sent them (what the client signed)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else str(scope["path"])
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


def _endpoint(
    verifier: Verifier, handler: Handler, clock: Callable[[], float]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            pending = verifier.check_headers(
                request.method, request_target(request.scope), request.headers, clock()
            )
            signed = verifier.check_body(pending, await request.body(), clock())
        except BusAuthError as exc:
            return JSONResponse({"detail": str(exc.reason)}, status_code=401)
        try:
            result = await handler(signed)
        except MessageError as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status)
        body = json.dumps(result, separators=(",", ":"), default=str).encode()
        return Response(
            body,
            200,
            headers=verifier.sign_response(signed, 200, body),
            media_type="application/json",
        )

    return endpoint


def bus_router(
    verifier: Verifier,
    routes: Mapping[tuple[str, str], Handler],
    *,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """A router with one verified route per ``(method, path)``. ``clock`` is the wall clock
    the requests' times are checked against."""
    router = APIRouter()
    for (method, path), handler in routes.items():
        router.add_api_route(
            path,
            _endpoint(verifier, handler, clock),
            methods=[method],
            include_in_schema=False,
        )
    return router


def _not_served(what: str) -> Handler:
    async def handler(request: SignedRequest) -> Any:
        raise MessageError(409, f"this node does not serve {what}")

    return handler


def cluster_router(
    verifier: Verifier,
    *,
    heartbeater: Heartbeater | None = None,
    status: Status | None = None,
    registrations: RegistrationSync | None = None,
    extra: Mapping[tuple[str, str], Handler] | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The node's bus routes. A part left out (None) still has its routes, which answer a
    signed request with 409: a peer learns that this node does not serve it."""

    async def node_status(request: SignedRequest) -> Any:
        assert status is not None
        result = status()
        return await result if inspect.isawaitable(result) else result

    routes: dict[tuple[str, str], Handler] = {
        ("POST", PATHS.heartbeat): (
            heartbeater.receive if heartbeater else _not_served("heartbeats")
        ),
        ("GET", PATHS.members): heartbeater.members if heartbeater else _not_served("members"),
        ("GET", PATHS.status): node_status if status else _not_served("status"),
        ("GET", PATHS.registrations): (
            registrations.serve_own if registrations else _not_served("registrations")
        ),
        ("POST", PATHS.registrations): (
            registrations.take if registrations else _not_served("registrations")
        ),
        **(extra or {}),
    }
    return bus_router(verifier, routes, clock=clock)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(
    verifier: Verifier, membership: Membership | None = None, now: float | None = None
) -> str:
    """Prometheus text for ``/metrics``: bus requests accepted and refused (by reason), the
    nonce cache, and each node's state (``now`` on the membership's clock)."""
    lines = [
        "# HELP smartswitch_cluster_bus_requests_refused_total Cluster bus requests refused, by reason.",
        "# TYPE smartswitch_cluster_bus_requests_refused_total counter",
        *(
            f'smartswitch_cluster_bus_requests_refused_total{{reason="{reason}"}} '
            f"{verifier.refused[reason]}"
            for reason in Refusal
        ),
        "# HELP smartswitch_cluster_bus_requests_accepted_total Cluster bus requests accepted.",
        "# TYPE smartswitch_cluster_bus_requests_accepted_total counter",
        f"smartswitch_cluster_bus_requests_accepted_total {verifier.accepted}",
        "# HELP smartswitch_cluster_bus_nonces Nonces remembered against replays.",
        "# TYPE smartswitch_cluster_bus_nonces gauge",
        f"smartswitch_cluster_bus_nonces {len(verifier.nonces)}",
    ]
    if membership is not None:
        states = membership.state(time.monotonic() if now is None else now)
        lines += [
            "# HELP smartswitch_cluster_node_up 1 if the node is up (heard and alive), else 0.",
            "# TYPE smartswitch_cluster_node_up gauge",
            *(
                f'smartswitch_cluster_node_up{{node="{_label(s.node)}"}} {int(s.up)}'
                for s in states
            ),
            "# HELP smartswitch_cluster_node_heartbeat_age_seconds Seconds since last heard.",
            "# TYPE smartswitch_cluster_node_heartbeat_age_seconds gauge",
            *(
                f'smartswitch_cluster_node_heartbeat_age_seconds{{node="{_label(s.node)}"}} '
                f"{s.age:.3f}"
                for s in states
                if s.age is not None
            ),
        ]
    return "\n".join(lines) + "\n"
