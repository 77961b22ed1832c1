"""Tariffs and their rates: import and export as CSV, a page of rates by prefix."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.operations import Conflict
from smartswitch.admin.users import User
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.pages.common import (
    PAGE,
    SOURCE,
    back,
    field_errors,
    form_page,
    money,
    page_number,
    page_user,
    render,
    writer_form,
)
from smartswitch.web.security import Session
from smartswitch.web.shared import admin_of, rates_csv

router = APIRouter()


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
    return form_page(
        request,
        "tariffs.html",
        user,
        session,
        values or {"currency": "USD"},
        errors,
        tariffs=await admin_of(request).list_tariffs(),
    )


@router.post("/tariffs")
async def create_tariff(request: Request) -> Response:
    user, session, data = await writer_form(request)
    try:
        spec = read_form(readers.tariff, SOURCE, data)
        await admin_of(request).save(spec, source=SOURCE, actor=user.name, create_only=True)
    except ConfigInvalid as exc:
        return await _tariffs(request, user, session, data, field_errors(exc))
    except Conflict as exc:
        return await _tariffs(request, user, session, data, {"name": str(exc)})
    return back(f"/tariffs/{quote(spec.name)}", f"tariff {spec.name} created")


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
    admin = admin_of(request)
    tariff = await admin.get_tariff(name)
    prefix = request.query_params.get("prefix", "")[:32]
    page = page_number(request)
    total, rates = await admin.list_rates(
        tariff.id, prefix if prefix.isdigit() else "", PAGE, (page - 1) * PAGE
    )
    return render(
        request,
        "tariff.html",
        user,
        session,
        status_code=422 if import_errors else 200,
        tariff=tariff,
        rates=rates,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE)),
        prefix=prefix,
        import_errors=import_errors or [],
        money=money,
    )


@router.post("/tariffs/{name}/import")
async def import_rates(request: Request, name: str) -> Response:
    user, session, data = await writer_form(request)
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
    started = time.monotonic()
    try:
        count, _ = await admin_of(request).import_rates(
            name, text, actor=user.name, source=upload.filename or "rates.csv"
        )
    except ConfigInvalid as exc:
        return await _tariff(
            request, user, session, name, import_errors=[str(i) for i in exc.issues]
        )
    return back(
        f"/tariffs/{quote(name)}",
        f"imported {count} rates in {time.monotonic() - started:.1f} s",
    )


@router.get("/tariffs/{name}/rates.csv")
async def export_rates(request: Request, name: str) -> Response:
    await page_user(request)
    return await rates_csv(admin_of(request), name)


@router.post("/tariffs/{name}/delete")
async def delete_tariff(request: Request, name: str) -> Response:
    user, session, _data = await writer_form(request)
    try:
        await admin_of(request).delete_tariff(name)
    except Conflict as exc:
        return await _tariff(request, user, session, name, import_errors=[str(exc)])
    return back("/tariffs", f"tariff {name} deleted")
