"""``/api/v1/peers``: customers and suppliers (a password left out keeps the stored one)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.views import PeerView, peer_addresses
from smartswitch.web.api.common import SOURCE, In, Reader, Writer, body_data, report_out
from smartswitch.web.shared import admin_of, cluster_nodes

router = APIRouter()


class RewriteIn(In):
    match: str
    replace: str = ""


class RegisterNodeIn(In):
    node: str = Field(description="the node's name")
    username: str
    password: str | None = Field(
        None, description="never returned; left out, this node's stored one is kept"
    )


class RegisterIn(In):
    username: str | None = Field(
        None, description="the default account: of every node without its own in nodes"
    )
    password: str | None = Field(
        None, description="never returned; left out, the stored one is kept"
    )
    registrar: str = Field(description="HOST[:PORT]")
    expires: int | None = None
    nodes: list[RegisterNodeIn] | None = Field(
        None, description="each node's own account (one registration per node)"
    )


class PeerIn(In):
    role: Literal["customer", "supplier", "both"]
    account: str
    tariff: str | None = None
    acl: list[str] | None = None
    username: str | None = None
    password: str | None = Field(
        None, description="digest secret; never returned; left out, the stored one is kept"
    )
    address: str | None = Field(None, description="HOST[:PORT] of a supplier")
    transport: Literal["udp", "tcp", "tls"] | None = None
    tls_fingerprint: str | None = Field(
        None, description="mutual TLS: SHA-256 of the client certificate that identifies it"
    )
    max_calls: int | None = None
    max_cps: int | None = None
    caller_rewrite: list[RewriteIn] | None = None
    callee_rewrite: list[RewriteIn] | None = None
    profit_control: Literal["allow_loss", "no_loss", "profit_only"] | None = None
    enabled: bool | None = None
    deliver_dids: bool | None = Field(None, description="INVITEs from it to our DIDs")
    # "register" would shadow BaseModel.register: the JSON name is an alias.
    registration: RegisterIn | None = Field(
        None, alias="register", description="the switch registers with it"
    )
    nodes: list[str] | None = Field(
        None, description="the nodes it is attached to; empty or left out: every node"
    )
    media: Literal["direct", "relay"] | None = Field(
        None, description="direct: SDP untouched (default); relay: media through rtpengine"
    )
    codecs: list[str] | None = Field(None, description="codecs it may see (relay); empty: any")
    record: bool | None = Field(None, description="record its relayed calls")
    direct_fallback: bool | None = Field(
        None, description="direct media when no relay is up (else 503)"
    )


class PeerCreate(PeerIn):
    name: str


def peer_out(peer: PeerView) -> dict[str, Any]:
    register = peer.register
    return {
        "name": peer.name,
        "role": peer.role.value,
        "account": peer.account,
        "tariff": peer.tariff,
        "acl": list(peer.acl),
        "username": peer.username,
        "has_password": peer.has_password,
        "address": peer.address,
        "transport": peer.transport,
        "tls_fingerprint": peer.tls_fingerprint,
        "max_calls": peer.max_calls,
        "max_cps": peer.max_cps,
        "caller_rewrite": list(peer.caller_rewrite),
        "callee_rewrite": list(peer.callee_rewrite),
        "profit_control": peer.profit_control.value,
        "enabled": peer.enabled,
        "deliver_dids": peer.deliver_dids,
        "register": None
        if register is None
        else {
            "username": register.username,
            "registrar": register.registrar,
            "expires": register.expires,
            "nodes": [{"node": a.node, "username": a.username} for a in register.nodes],
        },
        "nodes": list(peer.nodes),
        "media": peer.media,
        "codecs": list(peer.codecs),
        "record": peer.record,
        "direct_fallback": peer.direct_fallback,
    }


@router.get("/peers")
async def list_peers(request: Request, user: Reader) -> list[dict[str, Any]]:
    return [peer_out(p) for p in await admin_of(request).list_peers()]


@router.post("/peers", status_code=201)
async def create_peer(request: Request, body: PeerCreate, user: Writer) -> dict[str, Any]:
    admin = admin_of(request)
    spec = read_form(readers.peer, SOURCE, body_data(body))
    await admin.save(spec, source=SOURCE, actor=user.name, create_only=True)
    return peer_out(await admin.get_peer(spec.name))


@router.get("/peers/{name}")
async def get_peer(request: Request, name: str, user: Reader) -> dict[str, Any]:
    """The peer, and where its nodes take its SIP (``interconnection``: each node it is
    attached to, with its dedicated IP and SIP address, from the cluster's nodes)."""
    admin = admin_of(request)
    peer = await admin.get_peer(name)
    addresses = peer_addresses(peer, await cluster_nodes(request))
    return {
        **peer_out(peer),
        "interconnection": [
            {"node": a.node, "dedicated_ip": a.dedicated_ip, "address": a.signalling}
            for a in addresses
        ],
    }


@router.put("/peers/{name}")
async def put_peer(request: Request, name: str, body: PeerIn, user: Writer) -> dict[str, Any]:
    """Create or replace the peer: fields left out take their defaults (as in provisioning),
    but a password left out keeps the stored one."""
    admin = admin_of(request)
    spec = read_form(readers.peer, SOURCE, body_data(body), ("name", name))
    report = await admin.save(spec, source=SOURCE, actor=user.name)
    return {**report_out(report), **peer_out(await admin.get_peer(name))}


@router.delete("/peers/{name}", status_code=204)
async def delete_peer(request: Request, name: str, user: Writer) -> Response:
    await admin_of(request).delete_peer(name)
    return Response(status_code=204)
