"""Nodes are rows of the replicated configuration, so every node knows the others.

Each node registers itself on the primary when it starts (and again whenever its addresses
change); replication carries the row to every node. ``smartswitch cluster status`` asks each
registered node for its live state on the cluster bus (:func:`ask_status`, a signed request).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from smartswitch.cluster.bus import PATHS, BusClient, BusError, Peer
from smartswitch.store.schema import NodeRow


async def reports_versions(session: AsyncSession) -> bool:
    """Whether the nodes table has the version columns (schema 0008 on): a node of this
    release runs on the schema before it until ``smartswitch db upgrade``."""

    def look(sync_session: Any) -> bool:
        columns = inspect(sync_session.connection()).get_columns("nodes")
        return {"version", "schema_head"} <= {c["name"] for c in columns}

    return bool(await session.run_sync(look))


def database_address(url: str | None) -> str:
    """host:port of a node's database (from its URL), as the other nodes reach it: what a
    node reports in its status, so that ``cluster promote`` can name every database."""
    if not url:
        return ""
    parsed = make_url(url)
    return f"{parsed.host or '127.0.0.1'}:{parsed.port or 3306}"


async def register_node(
    session: AsyncSession,
    name: str,
    dedicated_ip: str,
    sip_address: str,
    http_address: str,
    shared_ip: str,
    db_scheme: str,
    version: str = "",
    schema_head: str = "",
) -> bool:
    """Upsert this node's row (the caller commits, on the primary), with the release it runs
    and the newest migration its code carries where the schema has room for them; whether it
    had (False: the schema predates 0008, register again after the upgrade)."""
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
    if not await reports_versions(session):
        return False
    row.version = version
    row.schema_head = schema_head
    return True


async def node_versions(session: AsyncSession) -> dict[str, tuple[str, str]]:
    """Every registered node's (version, schema head); ("", "") for a node of a release that
    does not report them, and for all of them on a schema before 0008."""
    if not await reports_versions(session):
        return {row.name: ("", "") for row in await list_nodes(session)}
    rows = await session.execute(
        select(NodeRow.name, NodeRow.version, NodeRow.schema_head).order_by(NodeRow.name)
    )
    return {name: (version or "", head or "") for name, version, head in rows}


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
