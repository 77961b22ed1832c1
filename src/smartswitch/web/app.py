"""The node's HTTP side: health now; the admin UI and REST API build on this app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from smartswitch.web.cluster import cluster_router
from smartswitch.web.registrations import registrations_router


def create_app(node: Any) -> FastAPI:
    app = FastAPI(title="smartswitch", version="0.1.0")

    @app.get("/health")
    def health() -> dict[str, object]:
        b2bua = node.b2bua
        states: dict[str, int] = {}
        for call in b2bua.calls.values():
            states[call.state.value] = states.get(call.state.value, 0) + 1
        return {
            "status": "ok",
            "node": node.config.node_id,
            "calls": len(b2bua.calls),
            "call_states": states,
            "transactions": {"client": len(b2bua.layer.client), "server": len(b2bua.layer.server)},
            "timers": len(b2bua.timers),
            "dialogs": len(b2bua.dialogs),
        }

    app.include_router(cluster_router(node))
    # The registrar's state, read by `smartswitch registrations` (web/registrations.py).
    app.include_router(registrations_router(node))
    return app
