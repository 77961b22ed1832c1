"""Driving the node itself: ``POST /api/v1/node/drain`` (start a drain) and ``GET
/api/v1/node/drain`` (where it stands), behind ``smartswitch drain``; ``GET
/api/v1/node/write-fence``, the write fence ``provision`` and the other configuration
commands pass before they write (with automatic failover, the node confirms with etcd that it
holds the primary lease).

Who may: a command on the node's own machine with the local control token (derived from the
web secret in the data directory: :func:`~smartswitch.web.security.local_control_token`), or
an admin's API token. Not the read-only local token, not an operator: draining stops the
node. It works on a read-only replica too: draining changes no configuration.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from smartswitch.admin import users
from smartswitch.web.ports import NodePort
from smartswitch.web.security import CONTROL_PREFIX, local_control_token
from smartswitch.web.shared import web_of

#: The longest a GET may wait for the drain to finish before it answers with progress.
MAX_WAIT = 10.0


async def node_operator(request: Request) -> str:
    """Who drives the node: "local" (the control token) or an admin user's name."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "a token is required", {"WWW-Authenticate": "Bearer"})
    web = web_of(request)
    if token.startswith(CONTROL_PREFIX):
        expected = local_control_token(Path(web.config.data_dir))
        if expected is not None and hmac.compare_digest(token, expected):
            return "local"
        raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})
    if web.node.sessions is None:  # lab mode: no users, only the local token
        raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})
    async with web.sessions() as session:
        user = await users.user_for_token(session, token)
    if user is None:
        raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})
    if not user.is_admin:
        raise HTTPException(403, "only an admin can drain a node")
    return user.name


Operator = Annotated[str, Depends(node_operator)]


class DrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deadline: float = Field(300.0, ge=0, le=86400, description="seconds for calls to end")
    retry_after: int = Field(60, ge=0, le=86400, description="Retry-After of the 503s")
    flush_timeout: float = Field(30.0, ge=0, le=3600, description="seconds for the outbox")


def control_router(node: NodePort) -> APIRouter:
    router = APIRouter(prefix="/api/v1/node", tags=["node"])

    @router.post("/drain", status_code=202)
    async def drain(body: DrainIn, who: Operator) -> dict[str, Any]:
        """Stop taking new calls (503 with Retry-After), let the calls in progress end (up
        to ``deadline`` s; then they are ended), flush the outbox, exit 0."""
        del who
        return node.drain(body.deadline, body.retry_after, body.flush_timeout).as_dict()

    @router.get("/drain")
    async def drain_status(who: Operator, wait: float = 0.0) -> dict[str, Any]:
        """The drain under way (404 if none); with ``wait``, answers once it finished or
        after that many seconds (at most 10)."""
        del who
        if wait > 0:
            status = await node.drain_finished(min(wait, MAX_WAIT))
        else:
            status = node.drain_status()
        if status is None:
            raise HTTPException(404, "this node is not draining")
        return status.as_dict()

    @router.get("/write-fence")
    async def write_fence(request: Request, who: Operator) -> dict[str, Any]:
        """Whether configuration may be changed through this node now: 200, or 409 with the
        reason (a replica; with automatic failover, a node that cannot confirm with etcd,
        now, that it holds the primary lease)."""
        del who
        refusal = await web_of(request).write_refusal()
        if refusal:
            raise HTTPException(409, refusal)
        return {"writable": True}

    return router
