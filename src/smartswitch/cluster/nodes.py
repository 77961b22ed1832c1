"""Nodes are rows of the replicated configuration, so every node knows the others.

Each node registers itself on the primary when it starts (and again whenever its addresses
change); replication carries the row to every node. ``smartswitch cluster status`` asks each
registered node for its live state over HTTP, authenticated with the cluster secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from smartswitch.store.schema import NodeRow


def status_token(cluster_secret: str) -> str:
    """The bearer token nodes present to each other's status endpoint."""
    return hmac.new(cluster_secret.encode(), b"smartswitch-status", hashlib.sha256).hexdigest()


async def register_node(
    session: AsyncSession,
    name: str,
    dedicated_ip: str,
    sip_address: str,
    http_address: str,
    shared_ip: str,
    db_scheme: str,
) -> None:
    """Upsert this node's row (the caller commits, on the primary)."""
    row = await session.scalar(select(NodeRow).where(NodeRow.name == name))
    if row is None:
        row = NodeRow(name=name)
        session.add(row)
    row.dedicated_ip = dedicated_ip
    row.sip_address = sip_address
    row.http_address = http_address
    row.shared_ip = shared_ip
    row.db_scheme = db_scheme
    row.registered_at = datetime.now(UTC)


async def list_nodes(session: AsyncSession) -> list[NodeRow]:
    return list(await session.scalars(select(NodeRow).order_by(NodeRow.name)))


async def ask_node(name: str, http_address: str, token: str) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{http_address}/cluster/status",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=3) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    try:
        data = await asyncio.to_thread(fetch)
    except (OSError, ValueError) as exc:
        return {"node": name, "reachable": False, "error": str(exc)}
    return {"reachable": True, **data, "node": name}
