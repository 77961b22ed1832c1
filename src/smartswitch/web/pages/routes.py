"""Routes: the list and the form (suppliers one a line: ``PEER [PRIORITY [WEIGHT]]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.operations import Conflict
from smartswitch.admin.users import User
from smartswitch.admin.views import RouteView
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.pages.common import (
    SOURCE,
    back,
    existing_key,
    field_errors,
    form_page,
    page_user,
    render,
    writer_form,
)
from smartswitch.web.security import Session
from smartswitch.web.shared import admin_of, prefix_of

router = APIRouter()


def _route_values(route: RouteView) -> dict[str, Any]:
    return {
        "prefix": route.prefix,
        "strategy": route.strategy.value,
        "name": route.name or "",
        "suppliers": "\n".join(f"{s.peer or '?'} {s.priority} {s.weight}" for s in route.suppliers),
    }


@router.get("/routes")
async def routes_page(request: Request) -> Response:
    user, session = await page_user(request)
    routes = await admin_of(request).list_routes()
    return render(request, "routes.html", user, session, routes=routes)


async def _route_form(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any],
    *,
    existing: str | None,
    errors: dict[str, str] | None = None,
) -> Response:
    peers = await admin_of(request).list_peers()
    return form_page(
        request,
        "route_form.html",
        user,
        session,
        values,
        errors,
        existing=existing,
        supplier_names=sorted(p.name for p in peers if p.role.value != "customer"),
    )


@router.get("/routes/new")
async def new_route(request: Request) -> Response:
    user, session = await page_user(request)
    return await _route_form(request, user, session, {"strategy": "priority"}, existing=None)


@router.get("/routes/{key}")
async def route_page(request: Request, key: str) -> Response:
    user, session = await page_user(request)
    route = await admin_of(request).get_route(prefix_of(key))
    return await _route_form(request, user, session, _route_values(route), existing=key)


@router.post("/routes")
async def save_route(request: Request) -> Response:
    user, session, data = await writer_form(request)
    existing = existing_key(data)
    # A new route's prefix may be empty: the default route.
    prefix = str(data.get("prefix") or "") if existing is None else prefix_of(existing)
    try:
        spec = read_form(readers.route, SOURCE, data, ("prefix", prefix))
        await admin_of(request).save(
            spec, source=SOURCE, actor=user.name, create_only=existing is None
        )
    except ConfigInvalid as exc:
        return await _route_form(
            request, user, session, data, existing=existing, errors=field_errors(exc)
        )
    except Conflict as exc:
        return await _route_form(
            request, user, session, data, existing=existing, errors={"prefix": str(exc)}
        )
    return back("/routes", f"route {spec.prefix or '(default)'} saved")


@router.post("/routes/{key}/delete")
async def delete_route(request: Request, key: str) -> Response:
    await writer_form(request)
    await admin_of(request).delete_route(prefix_of(key))
    return back("/routes", "route deleted")
