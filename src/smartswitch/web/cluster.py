"""The node-to-node status endpoint behind ``smartswitch cluster status`` and the cluster page.

Not a user page: nodes call it with a bearer token derived from the shared cluster secret
(:func:`smartswitch.cluster.nodes.status_token`), so it is outside the web login.
"""

from __future__ import annotations

import hmac
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Header, HTTPException

from smartswitch.cluster.nodes import status_token


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

    @router.get("/cluster/status", include_in_schema=False)
    def status(authorization: str = Header(default="")) -> dict[str, Any]:
        secret = node.config.cluster_secret
        expected = f"Bearer {status_token(secret)}" if secret else None
        if expected is None or not hmac.compare_digest(authorization, expected):
            raise HTTPException(status_code=401, detail="cluster token required")
        return node_status(node)

    return router
