"""The registrar's state as JSON: the location service and the outbound registrations.

Read by ``smartswitch registrations [--outbound]`` and by operators' tools. Kept in its own
module, included by :func:`smartswitch.web.app.create_app`, so the web interface can put its
authentication in front of ``/api/v1`` without touching it. The handlers are ``async`` so they
run on the event loop, where the registrar's state lives (no thread reads it half-updated).

Nothing secret is shown: no password, no HA1, no nonce.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from smartswitch.web.ports import NodePort


def registrations_router(node: NodePort) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/registrations")
    async def registrations() -> dict[str, Any]:
        """The live bindings of this node's location service, and the sources banned now."""
        registrar = node.registrar
        if registrar is None:  # lab mode: no registrar
            return {"node": node.config.node_id, "registrar": False, "bindings": [], "bans": {}}
        return {
            "node": node.config.node_id,
            "registrar": True,
            "bindings": registrar.bindings(),
            "bans": registrar.bans(),
        }

    @router.get("/api/v1/registrations/outbound")
    async def outbound() -> dict[str, Any]:
        """The switch's registrations with its suppliers."""
        registrar = node.registrar
        if registrar is None:
            return {"node": node.config.node_id, "registrar": False, "registrations": []}
        return {
            "node": node.config.node_id,
            "registrar": True,
            "registrations": registrar.outbound(),
        }

    return router
