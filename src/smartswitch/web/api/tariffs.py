"""``/api/v1/tariffs``: tariffs, their rates, and the rates as CSV."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import Field

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.reports import iso_time
from smartswitch.admin.views import TariffView
from smartswitch.model.config import Rate
from smartswitch.web.api.common import (
    SOURCE,
    In,
    Reader,
    Writer,
    body_data,
    money,
    report_out,
)
from smartswitch.web.shared import admin_of, rates_csv

router = APIRouter()


class TariffIn(In):
    currency: str | None = Field(None, description="ISO 4217 code; USD if left out")


class TariffCreate(TariffIn):
    name: str


def tariff_out(tariff: TariffView) -> dict[str, Any]:
    return {"name": tariff.name, "currency": tariff.currency, "rates": tariff.rates}


def rate_out(rate: Rate) -> dict[str, Any]:
    return {
        "prefix": rate.prefix,
        "price_per_minute": money(rate.price_per_minute),
        "connect_fee": money(rate.connect_fee),
        "increment": str(rate.increment),
        "free_seconds": rate.free_seconds,
        "effective_from": iso_time(rate.effective_from),
        "effective_to": iso_time(rate.effective_to),
    }


@router.get("/tariffs")
async def list_tariffs(request: Request, user: Reader) -> list[dict[str, Any]]:
    return [tariff_out(t) for t in await admin_of(request).list_tariffs()]


@router.post("/tariffs", status_code=201)
async def create_tariff(request: Request, body: TariffCreate, user: Writer) -> dict[str, Any]:
    admin = admin_of(request)
    spec = read_form(readers.tariff, SOURCE, body_data(body))
    await admin.save(spec, source=SOURCE, actor=user.name, create_only=True)
    return tariff_out(await admin.get_tariff(spec.name))


@router.get("/tariffs/{name}")
async def get_tariff(request: Request, name: str, user: Reader) -> dict[str, Any]:
    return tariff_out(await admin_of(request).get_tariff(name))


@router.put("/tariffs/{name}")
async def put_tariff(request: Request, name: str, body: TariffIn, user: Writer) -> dict[str, Any]:
    admin = admin_of(request)
    spec = read_form(readers.tariff, SOURCE, body_data(body), ("name", name))
    report = await admin.save(spec, source=SOURCE, actor=user.name)
    return {**report_out(report), **tariff_out(await admin.get_tariff(name))}


@router.delete("/tariffs/{name}", status_code=204)
async def delete_tariff(request: Request, name: str, user: Writer) -> Response:
    await admin_of(request).delete_tariff(name)
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
    admin = admin_of(request)
    tariff = await admin.get_tariff(name)
    total, rates = await admin.list_rates(tariff.id, prefix, limit, offset)
    return {"total": total, "rates": [rate_out(r) for r in rates]}


@router.get("/tariffs/{name}/rates.csv", response_class=PlainTextResponse)
async def export_rates(request: Request, name: str, user: Reader) -> Response:
    return await rates_csv(admin_of(request), name)


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
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(422, "the CSV must be UTF-8 text") from None
    started = time.monotonic()
    count, report = await admin_of(request).import_rates(
        name, text, actor=user.name, source="rates.csv"
    )
    return {
        **report_out(report),
        "rates": count,
        "seconds": round(time.monotonic() - started, 3),
    }
