"""Peers: the list and the form (a secret left empty keeps the stored one: the writer's rule)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.operations import Conflict
from smartswitch.admin.users import User
from smartswitch.admin.views import PeerView
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.pages.common import (
    SOURCE,
    back,
    checkboxes,
    existing_key,
    field_errors,
    form_page,
    page_user,
    render,
    writer_form,
)
from smartswitch.web.security import Session
from smartswitch.web.shared import admin_of

router = APIRouter()


def _rewrite_text(rules: tuple[dict[str, str], ...]) -> str:
    return "\n".join(f"{r['match']} -> {r['replace']}" for r in rules)


def _peer_values(peer: PeerView) -> dict[str, Any]:
    register = peer.register
    return {
        "name": peer.name,
        "role": peer.role.value,
        "account": peer.account or "",
        "tariff": peer.tariff or "",
        "acl": "\n".join(peer.acl),
        "username": peer.username or "",
        "password": "",  # secrets never go back to the browser; empty keeps the stored one
        "address": peer.address or "",
        "transport": peer.transport,
        "max_calls": peer.max_calls or "",
        "max_cps": peer.max_cps or "",
        "caller_rewrite": _rewrite_text(peer.caller_rewrite),
        "callee_rewrite": _rewrite_text(peer.callee_rewrite),
        "profit_control": peer.profit_control.value,
        "enabled": "true" if peer.enabled else "",
        "deliver_dids": "true" if peer.deliver_dids else "",
        "register_registrar": register.registrar if register else "",
        "register_username": (register.username or "") if register else "",
        "register_password": "",
        "register_expires": ""
        if register is None or register.expires is None
        else str(register.expires),
    }


@router.get("/peers")
async def peers_page(request: Request) -> Response:
    user, session = await page_user(request)
    peers = await admin_of(request).list_peers()
    return render(request, "peers.html", user, session, peers=peers)


async def _peer_form(
    request: Request,
    user: User,
    session: Session,
    values: Mapping[str, Any],
    *,
    existing: str | None,
    errors: dict[str, str] | None = None,
) -> Response:
    names = await admin_of(request).names()
    return form_page(
        request,
        "peer_form.html",
        user,
        session,
        values,
        errors,
        existing=existing,
        account_names=sorted(names.accounts.values()),
        tariff_names=sorted(names.tariffs.values()),
    )


@router.get("/peers/new")
async def new_peer(request: Request) -> Response:
    user, session = await page_user(request)
    values = {
        "role": "customer",
        "transport": "udp",
        "profit_control": "allow_loss",
        "enabled": "true",
    }
    return await _peer_form(request, user, session, values, existing=None)


@router.get("/peers/{name}")
async def peer_page(request: Request, name: str) -> Response:
    user, session = await page_user(request)
    peer = await admin_of(request).get_peer(name)
    return await _peer_form(request, user, session, _peer_values(peer), existing=name)


@router.post("/peers")
async def save_peer(request: Request) -> Response:
    user, session, data = await writer_form(request)
    existing = existing_key(data)
    checkboxes(data, "enabled", "deliver_dids")
    try:
        key = None if existing is None else ("name", existing)
        spec = read_form(readers.peer, SOURCE, data, key)
        await admin_of(request).save(
            spec, source=SOURCE, actor=user.name, create_only=existing is None
        )
    except ConfigInvalid as exc:
        return await _peer_form(
            request, user, session, data, existing=existing, errors=field_errors(exc)
        )
    except Conflict as exc:
        return await _peer_form(
            request, user, session, data, existing=existing, errors={"name": str(exc)}
        )
    return back("/peers", f"peer {spec.name} saved")


@router.post("/peers/{name}/delete")
async def delete_peer(request: Request, name: str) -> Response:
    user, session, _data = await writer_form(request)
    admin = admin_of(request)
    try:
        await admin.delete_peer(name)
    except Conflict as exc:
        values = _peer_values(await admin.get_peer(name))
        return await _peer_form(
            request, user, session, values, existing=name, errors={"_": str(exc)}
        )
    return back("/peers", f"peer {name} deleted")
