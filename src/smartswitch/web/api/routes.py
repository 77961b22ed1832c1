"""``/api/v1/routes`` ("default" in a path is the route of prefix "")."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.views import RouteView
from smartswitch.web.api.common import SOURCE, In, Reader, Writer, body_data, report_out
from smartswitch.web.shared import admin_of, prefix_of

router = APIRouter()


class SupplierIn(In):
    peer: str
    priority: int | None = None
    weight: int | None = None


class RouteIn(In):
    strategy: Literal["priority", "least_cost", "weighted"] | None = None
    name: str | None = None
    suppliers: list[SupplierIn]


class RouteCreate(RouteIn):
    prefix: str = Field(description='digits; "" is the default route')


def route_out(route: RouteView) -> dict[str, Any]:
    return {
        "prefix": route.prefix,
        "key": route.prefix or "default",
        "strategy": route.strategy.value,
        "name": route.name,
        "suppliers": [
            {"peer": s.peer, "priority": s.priority, "weight": s.weight} for s in route.suppliers
        ],
    }


@router.get("/routes")
async def list_routes(request: Request, user: Reader) -> list[dict[str, Any]]:
    return [route_out(r) for r in await admin_of(request).list_routes()]


@router.post("/routes", status_code=201)
async def create_route(request: Request, body: RouteCreate, user: Writer) -> dict[str, Any]:
    admin = admin_of(request)
    spec = read_form(readers.route, SOURCE, body_data(body), ("prefix", body.prefix))
    await admin.save(spec, source=SOURCE, actor=user.name, create_only=True)
    return route_out(await admin.get_route(spec.prefix))


@router.get("/routes/{key}")
async def get_route(request: Request, key: str, user: Reader) -> dict[str, Any]:
    return route_out(await admin_of(request).get_route(prefix_of(key)))


@router.put("/routes/{key}")
async def put_route(request: Request, key: str, body: RouteIn, user: Writer) -> dict[str, Any]:
    admin = admin_of(request)
    spec = read_form(readers.route, SOURCE, body_data(body), ("prefix", prefix_of(key)))
    report = await admin.save(spec, source=SOURCE, actor=user.name)
    return {**report_out(report), **route_out(await admin.get_route(spec.prefix))}


@router.delete("/routes/{key}", status_code=204)
async def delete_route(request: Request, key: str, user: Writer) -> Response:
    await admin_of(request).delete_route(prefix_of(key))
    return Response(status_code=204)
