"""The dashboard, the cluster page and the calls in progress."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from smartswitch.admin.cluster import promotions
from smartswitch.admin.reports import last_hour
from smartswitch.web import cdrs as cdr_queries
from smartswitch.web.cluster import cluster_overview
from smartswitch.web.pages.common import back, page_user, posted, render
from smartswitch.web.shared import web_of
from smartswitch.web.stats import calls_in_progress, dashboard_charts

router = APIRouter()


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
        "media": web.node.counters().media,
        "cps": web.sampler.cps(),
        "hour_attempts": attempts,
        "hour_asr": (100.0 * answered / attempts) if attempts else None,
        "hour_acd": (talk / 1000.0 / answered) if answered else None,
        "capture": web.node.capture_state(),
        "file_sync": await web.node.file_sync_state(),
    }


@router.get("/cluster")
async def cluster_page(request: Request) -> Response:
    """Nodes, roles, replication state and lag, outbox depth; refreshed by htmx."""
    user, session = await page_user(request)
    node = web_of(request).node
    nodes = await cluster_overview(node)
    history = await promotions(node.sessions) if node.sessions is not None else []
    template = "_cluster.html" if request.headers.get("hx-request") else "cluster.html"
    return render(request, template, user, session, nodes=nodes, promotions=history)


@router.get("/calls")
async def calls_page(request: Request) -> Response:
    user, session = await page_user(request)
    calls = cdr_queries.calls_in_progress_list(web_of(request).node)
    template = "_calls.html" if request.headers.get("hx-request") else "calls.html"
    return render(request, template, user, session, calls=calls)


@router.post("/calls/{key}/hangup")
async def hangup(request: Request, key: str) -> Response:
    user, session = await page_user(request)
    await posted(request, session)
    if not user.can_write:
        raise HTTPException(403, f"the {user.role.value} role cannot hang up calls")
    ended = cdr_queries.hangup(web_of(request).node, key)
    return back("/calls", "call hung up" if ended else "that call had already ended")
