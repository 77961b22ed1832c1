"""The node-to-node status endpoint behind ``smartswitch cluster status`` and the cluster page.

Not a user page: nodes call it with a bearer token derived from the shared cluster secret
(:func:`smartswitch.cluster.nodes.status_token`), so it is outside the web login. The handlers
are ``async``: they run on the event loop, where the state they read and change lives.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException

from smartswitch.cluster.nodes import ask_node, database_address, list_nodes, status_token
from smartswitch.web.ports import NodePort, SharedRegistrations


def node_status(node: NodePort) -> dict[str, Any]:
    """What this node can tell about itself: role, replication, outbox, balances, its
    registrations with suppliers."""
    counters = node.counters()
    status: dict[str, Any] = {
        "node": node.config.node_name or node.config.node_id,
        "db": node.db_role.as_dict(),
        "read_only": node.read_only,
        "database_address": database_address(node.config.database_url),
        "calls": counters.in_progress,
    }
    registrar = node.registrar
    if registrar is not None:
        # This node's registrations with suppliers (each node registers its own account):
        # the peer page shows every node's, read from each node's status.
        status["outbound"] = registrar.outbound()
    delivery = counters.delivery
    if delivery is not None:
        status.update(
            outbox_depth=delivery.outbox_depth,
            delivered=delivery.delivered,
            last_delivery=delivery.last_delivery,
            delivery_error=delivery.last_error,
            unconfirmed=delivery.unconfirmed,
            requeued=delivery.requeued,
            config_version=node.config_version,
            balances={
                name: str(balance.quantize(Decimal("0.0001")))
                for name, balance in node.balances().items()
            },
        )
    return status


async def cluster_overview(node: NodePort) -> list[dict[str, Any]]:
    """Every node as it reports itself (this one directly, the others over HTTP): the cluster
    page. A single node, or one without a cluster secret, shows itself alone."""
    me = {"reachable": True, **node_status(node)}
    config = node.config
    sessions = node.sessions
    if sessions is None or config.db_scheme == "single" or not config.cluster_secret:
        return [_with_ages(me)]
    async with sessions() as session:
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


def cluster_router(node: NodePort) -> APIRouter:
    router = APIRouter()

    def check(authorization: str) -> None:
        secret = node.config.cluster_secret
        expected = f"Bearer {status_token(secret)}" if secret else None
        if expected is None or not hmac.compare_digest(authorization, expected):
            raise HTTPException(status_code=401, detail="cluster token required")

    @router.get("/cluster/status", include_in_schema=False)
    async def status(authorization: str = Header(default="")) -> dict[str, Any]:
        check(authorization)
        return node_status(node)

    def shared() -> SharedRegistrations:
        sharing = node.shared_registrations
        if sharing is None:
            raise HTTPException(status_code=409, detail="this node does not share registrations")
        return sharing

    @router.get("/cluster/registrations", include_in_schema=False)
    async def own_registrations(authorization: str = Header(default="")) -> dict[str, Any]:
        """The bindings this node took, for a node that (re)joins."""
        check(authorization)
        sharing = shared()
        return {"node": sharing.node_name, "bindings": sharing.own_bindings()}

    @router.post("/cluster/registrations", include_in_schema=False)
    async def take_registrations(
        body: Annotated[dict[str, Any], Body()], authorization: str = Header(default="")
    ) -> dict[str, Any]:
        """Another node's binding changes."""
        check(authorization)
        try:
            applied = shared().apply(str(body["node"]), list(body["changes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPException(
                status_code=422, detail=f"bad registration changes: {exc}"
            ) from None
        return {"applied": applied}

    return router
