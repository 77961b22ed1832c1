"""The cluster's promotion history, for the Cluster page (read from this node's database,
where replication brings every promotion)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from smartswitch.model.cluster import Promotion
from smartswitch.store.cluster_state import promotion_history

__all__ = ["promotions"]


async def promotions(
    sessions: async_sessionmaker[AsyncSession], limit: int = 20
) -> list[Promotion]:
    """The newest promotions first; empty where the database has none (or no such table)."""
    try:
        async with sessions() as session:
            return await promotion_history(session, limit=limit)
    except Exception:  # a database away, or an embedded one without the table: nothing to show
        return []
