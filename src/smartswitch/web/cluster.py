"""The node-to-node status endpoint behind ``smartswitch cluster status`` and the cluster page.

Not a user page: nodes call it with a bearer token derived from the shared cluster secret
(:func:`smartswitch.cluster.nodes.status_token`), so it is outside the web login.
"""

from __future__ import annotations

import hmac
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException

from smartswitch.cluster.nodes import status_token
from smartswitch.cluster.registrations import apply_changes, binding_to_dict


def node_status(node: Any) -> dict[str, Any]:
    """What this node can tell about itself: role, replication, outbox, balances."""
    services = node.services
    status: dict[str, Any] = {
        "node": node.config.node_name or node.config.node_id,
        "db": node.db_role.as_dict(),
        "read_only": node.read_only,
        "calls": len(node.b2bua.calls),
    }
    if services is not None:
        forwarder = services.forwarder
        accounting = services.accounting
        policy = services.policy
        accounts = policy.views.snapshot.accounts if policy is not None else {}
        status.update(
            outbox_depth=services.outbox.depth,
            delivered=forwarder.delivered,
            last_delivery=forwarder.last_delivery,
            delivery_error=forwarder.last_error,
            config_version=policy.views.version if policy is not None else None,
            balances={
                a.name: str(accounting.balance(a.id).quantize(Decimal("0.0001")))
                for a in accounts.values()
            },
        )
    return status


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
