"""The node-to-node status endpoint behind ``smartswitch cluster status`` and the cluster page.

Not a user page: nodes call it with a bearer token derived from the shared cluster secret
(:func:`smartswitch.cluster.nodes.status_token`), so it is outside the web login.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException

from smartswitch.cluster.nodes import ask_node, list_nodes, status_token
from smartswitch.cluster.registrations import apply_changes, binding_to_dict


def node_status(node: Any) -> dict[str, Any]:
    """What this node can tell about itself: role, replication, outbox, balances, its
    registrations with suppliers."""
    services = node.services
    role = getattr(node, "db_role", None)
    status: dict[str, Any] = {
        "node": node.config.node_name or node.config.node_id,
        "db": role.as_dict() if role is not None else {},
        "read_only": node.read_only,
        "calls": len(node.b2bua.calls),
    }
    registrar = getattr(services, "registrar", None)
    if registrar is not None:
        # This node's registrations with suppliers (each node registers its own account):
        # the peer page shows every node's, read from each node's status.
        clock = getattr(node.b2bua, "clock", None)
        now = clock() if callable(clock) else time.monotonic()
        status["outbound"] = registrar.outbound_state(now)
    forwarder = getattr(services, "forwarder", None)
    policy = getattr(services, "policy", None)
    if forwarder is not None and policy is not None:
        accounting = services.accounting
        accounts = policy.views.snapshot.accounts
        status.update(
            outbox_depth=services.outbox.depth,
            delivered=forwarder.delivered,
            last_delivery=forwarder.last_delivery,
            delivery_error=forwarder.last_error,
            config_version=policy.views.version,
            balances={
                a.name: str(accounting.balance(a.id).quantize(Decimal("0.0001")))
                for a in accounts.values()
            },
        )
    return status


async def cluster_overview(node: Any) -> list[dict[str, Any]]:
    """Every node as it reports itself (this one directly, the others over HTTP): the cluster
    page. A single node, or one without a cluster secret, shows itself alone."""
    me = {"reachable": True, **node_status(node)}
    config = node.config
    if node.services is None or config.db_scheme == "single" or not config.cluster_secret:
        return [_with_ages(me)]
    async with node.services.sessions() as session:
        nodes = await list_nodes(session)
    token = status_token(config.cluster_secret)
    name = config.node_name or config.node_id
    others = [ask_node(n.name, n.http_address, token) for n in nodes if n.name != name]
    rows = [me, *await asyncio.gather(*others)]
    return sorted((_with_ages(row) for row in rows), key=lambda row: str(row["node"]))


def _with_ages(row: dict[str, Any]) -> dict[str, Any]:
    last = row.get("last_delivery")
    row["last_delivery_ago"] = None if last is None else max(0, int(time.time() - last))
    return row


def cluster_router(node: Any) -> APIRouter:
    router = APIRouter()

    def check(authorization: str) -> None:
        secret = node.config.cluster_secret
        expected = f"Bearer {status_token(secret)}" if secret else None
        if expected is None or not hmac.compare_digest(authorization, expected):
            raise HTTPException(status_code=401, detail="cluster token required")

    @router.get("/cluster/status", include_in_schema=False)
    def status(authorization: str = Header(default="")) -> dict[str, Any]:
        check(authorization)
        return node_status(node)

    def location() -> Any:
        registrar = node.services.registrar if node.services is not None else None
        if registrar is None or node.registration_sync is None:
            raise HTTPException(status_code=409, detail="this node does not share registrations")
        return registrar.location

    @router.get("/cluster/registrations", include_in_schema=False)
    def own_registrations(authorization: str = Header(default="")) -> dict[str, Any]:
        """The bindings this node took, for a node that (re)joins."""
        check(authorization)
        location()
        sync = node.registration_sync
        return {
            "node": sync.node_name,
            "bindings": [binding_to_dict(b) for b in sync.own_bindings()],
        }

    @router.post("/cluster/registrations", include_in_schema=False)
    def take_registrations(
        body: Annotated[dict[str, Any], Body()], authorization: str = Header(default="")
    ) -> dict[str, Any]:
        """Another node's binding changes."""
        check(authorization)
        try:
            applied = apply_changes(location(), str(body["node"]), list(body["changes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPException(
                status_code=422, detail=f"bad registration changes: {exc}"
            ) from None
        return {"applied": applied}

    return router
