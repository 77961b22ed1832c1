"""Nodes are rows of the replicated configuration, so every node knows the others.

Each node registers itself on the primary when it starts (and again whenever its addresses
change); replication carries the row to every node. ``smartswitch cluster status`` asks each
registered node for its live state on the cluster bus (:func:`ask_status`, a signed request).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from smartswitch.cluster.bus import PATHS, BusClient, BusError, Peer
from smartswitch.store.schema import NodeRow


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


async def ask_status(client: BusClient, peer: Peer, timeout: float = 3.0) -> dict[str, Any]:
    """A node's own account of itself (``GET PATHS.status``), marked reachable or not."""
    try:
        data = await client.get(peer, PATHS.status, timeout=timeout)
    except BusError as exc:
        return {"node": peer.name, "reachable": False, "error": exc.detail}
    if not isinstance(data, dict):
        return {"node": peer.name, "reachable": False, "error": "status is not an object"}
    return {"reachable": True, **data, "node": peer.name}
