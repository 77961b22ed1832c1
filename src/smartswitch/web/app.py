"""The node's HTTP side: health now; the admin UI and REST API build on this app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def create_app(node: Any) -> FastAPI:
    app = FastAPI(title="smartswitch", version="0.1.0")

    @app.get("/health")
    def health() -> dict[str, object]:
        return {"status": "ok", "node": node.config.node_id, "calls": len(node.b2bua.calls)}

    return app
