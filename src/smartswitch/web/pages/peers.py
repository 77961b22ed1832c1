"""Peers: the list and the form (a secret left empty keeps the stored one: the writer's rule),
and where the peer's nodes are: their addresses and each node's registration with it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.operations import Conflict
from smartswitch.admin.users import User
from smartswitch.admin.views import NodeView, PeerView, peer_addresses
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.web.cluster import cluster_overview
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
from smartswitch.web.shared import admin_of, cluster_nodes, web_of

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
        "tls_fingerprint": peer.tls_fingerprint or "",
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
        "register_nodes": []
        if register is None
        else [{"node": a.node, "username": a.username} for a in register.nodes],
        "nodes": ", ".join(peer.nodes),
        "media": peer.media,
        "codecs": ", ".join(peer.codecs),
        "record": "true" if peer.record else "",
        "direct_fallback": "true" if peer.direct_fallback else "",
    }


# The form's rows of per-node registration accounts: register_node_N (the node's name),
# register_node_N_username, register_node_N_password.
_NODE_ROW = re.compile(r"register_node_(\d+)")


def _node_accounts(data: dict[str, Any]) -> None:
    """The form's per-node account rows as the reader's ``register_nodes`` list (a row without
    a username nor a password is no account); the rows' own fields taken out of ``data``."""
    rows: list[tuple[int, dict[str, str]]] = []
    for key in [k for k in data if _NODE_ROW.fullmatch(k)]:
        node = str(data.pop(key) or "").strip()
        username = str(data.pop(f"{key}_username", "") or "").strip()
        password = str(data.pop(f"{key}_password", "") or "")
        if username or password:
            rows.append(
                (
                    int(key.rsplit("_", 1)[1]),
                    {"node": node, "username": username, "password": password},
                )
            )
    for key in [k for k in data if re.fullmatch(r"register_node_\d+_(username|password)", k)]:
        del data[key]  # a row without its node field
    if rows:
        data["register_nodes"] = [row for _index, row in sorted(rows, key=lambda r: r[0])]


def _node_rows(values: Mapping[str, Any], nodes: list[NodeView]) -> list[dict[str, str]]:
    """The rows of the per-node accounts to show: the peer's accounts, a row for each other
    node of the cluster, and a blank one for a node not in the list. Never a password."""
    given = values.get("register_nodes")
    rows = [
        {"node": str(a.get("node", "")), "username": str(a.get("username", ""))}
        for a in (given if isinstance(given, list) else [])
        if isinstance(a, Mapping)
    ]
    named = {row["node"] for row in rows}
    rows += [{"node": n.name, "username": ""} for n in nodes if n.name not in named]
    return [*rows, {"node": "", "username": ""}]


async def _registration_states(request: Request, peer: PeerView) -> list[dict[str, Any]]:
    """Each node's registration with ``peer`` as that node reports it: this node's own
    state, and the others' from their status (``cluster_overview``: every node of a cluster
    is asked on its status endpoint, so its state is the one it acts on)."""
    register = peer.register
    if register is None:
        return []
    states: list[dict[str, Any]] = []
    for row in await cluster_overview(web_of(request).node):
        node = str(row.get("node", ""))
        if not peer.attached(node):
            continue
        state: dict[str, Any] = {"node": node, "username": register.account(node) or ""}
        if not row.get("reachable"):
            state["state"] = "unreachable"
            state["detail"] = str(row.get("error", ""))
        elif "outbound" not in row:
            state["state"] = "unknown"  # a node that does not report its registrations
        else:
            mine = [o for o in row["outbound"] if o.get("peer") == peer.name]
            if mine:
                state.update(mine[0])
            else:
                state["state"] = "not registering"
        states.append(state)
    return states


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
    admin = admin_of(request)
    names = await admin.names()
    nodes = await cluster_nodes(request)
    interconnection: list[Any] = []
    registrations: list[dict[str, Any]] = []
    if existing is not None:
        peer = await admin.get_peer(existing)
        interconnection = peer_addresses(peer, nodes)
        registrations = await _registration_states(request, peer)
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
        node_names=[n.name for n in nodes],
        node_rows=_node_rows(values, nodes),
        interconnection=interconnection,
        registrations=registrations,
    )


@router.get("/peers/new")
async def new_peer(request: Request) -> Response:
    user, session = await page_user(request)
    values = {
        "role": "customer",
        "transport": "udp",
        "media": "direct",
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
    checkboxes(data, "enabled", "deliver_dids", "record", "direct_fallback")
    _node_accounts(data)
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
