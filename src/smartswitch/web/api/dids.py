"""``/api/v1/dids``: the numbers we host, each to a subscriber or a peer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.views import DidView
from smartswitch.web.api.common import SOURCE, In, Reader, Writer, body_data, report_out
from smartswitch.web.shared import admin_of

router = APIRouter()


class DidIn(In):
    subscriber: str | None = Field(None, description="the owner: a subscriber ...")
    peer: str | None = Field(None, description="... or a peer (one of the two)")
    enabled: bool | None = None


class DidCreate(DidIn):
    number: str


def did_out(did: DidView) -> dict[str, Any]:
    return {
        "number": did.number,
        "subscriber": did.subscriber,
        "peer": did.peer,
        "enabled": did.enabled,
    }


@router.get("/dids")
async def list_dids(request: Request, user: Reader) -> list[dict[str, Any]]:
    return [did_out(d) for d in await admin_of(request).list_dids()]


@router.post("/dids", status_code=201)
async def create_did(request: Request, body: DidCreate, user: Writer) -> dict[str, Any]:
    admin = admin_of(request)
    spec = read_form(readers.did, SOURCE, body_data(body))
    await admin.save(spec, source=SOURCE, actor=user.name, create_only=True)
    return did_out(await admin.get_did(spec.number))


@router.get("/dids/{number}")
async def get_did(request: Request, number: str, user: Reader) -> dict[str, Any]:
    return did_out(await admin_of(request).get_did(number))


@router.put("/dids/{number}")
async def put_did(request: Request, number: str, body: DidIn, user: Writer) -> dict[str, Any]:
    admin = admin_of(request)
    spec = read_form(readers.did, SOURCE, body_data(body), ("number", number))
    report = await admin.save(spec, source=SOURCE, actor=user.name)
    return {**report_out(report), **did_out(await admin.get_did(number))}


@router.delete("/dids/{number}", status_code=204)
async def delete_did(request: Request, number: str, user: Writer) -> Response:
    await admin_of(request).delete_did(number)
    return Response(status_code=204)
