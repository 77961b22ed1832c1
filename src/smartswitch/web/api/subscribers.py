"""``/api/v1/subscribers``: the registrar's users (their registrations are
``/api/v1/registrations``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.views import SubscriberView
from smartswitch.web.api.common import SOURCE, In, Reader, Writer, body_data, report_out
from smartswitch.web.shared import admin_of

router = APIRouter()


class SubscriberIn(In):
    account: str
    tariff: str | None = Field(None, description="what its outgoing calls cost")
    password: str | None = Field(
        None,
        description="hashed into HA1s for the node's realm, never stored or returned; left "
        "out, the stored hashes are kept",
    )
    allowed_cidrs: list[str] | None = None
    max_contacts: int | None = None
    max_calls: int | None = None
    caller_id: str | None = None
    enabled: bool | None = None


class SubscriberCreate(SubscriberIn):
    username: str


def subscriber_out(subscriber: SubscriberView) -> dict[str, Any]:
    return {
        "username": subscriber.username,
        "account": subscriber.account,
        "tariff": subscriber.tariff,
        "allowed_cidrs": list(subscriber.allowed_cidrs),
        "max_contacts": subscriber.max_contacts,
        "max_calls": subscriber.max_calls,
        "caller_id": subscriber.caller_id,
        "enabled": subscriber.enabled,
    }


@router.get("/subscribers")
async def list_subscribers(request: Request, user: Reader) -> list[dict[str, Any]]:
    return [subscriber_out(s) for s in await admin_of(request).list_subscribers()]


@router.post("/subscribers", status_code=201)
async def create_subscriber(
    request: Request, body: SubscriberCreate, user: Writer
) -> dict[str, Any]:
    admin = admin_of(request)
    spec = read_form(readers.subscriber, SOURCE, body_data(body))
    await admin.save(spec, source=SOURCE, actor=user.name, create_only=True)
    return subscriber_out(await admin.get_subscriber(spec.username))


@router.get("/subscribers/{username}")
async def get_subscriber(request: Request, username: str, user: Reader) -> dict[str, Any]:
    return subscriber_out(await admin_of(request).get_subscriber(username))


@router.put("/subscribers/{username}")
async def put_subscriber(
    request: Request, username: str, body: SubscriberIn, user: Writer
) -> dict[str, Any]:
    """Create or replace; a password left out keeps the stored hashes."""
    admin = admin_of(request)
    spec = read_form(readers.subscriber, SOURCE, body_data(body), ("username", username))
    report = await admin.save(spec, source=SOURCE, actor=user.name)
    return {**report_out(report), **subscriber_out(await admin.get_subscriber(username))}


@router.delete("/subscribers/{username}", status_code=204)
async def delete_subscriber(request: Request, username: str, user: Writer) -> Response:
    await admin_of(request).delete_subscriber(username)
    return Response(status_code=204)
