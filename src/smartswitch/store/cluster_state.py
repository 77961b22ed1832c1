"""Reading and writing who the primary is (``cluster_state``) and the promotion history.

:func:`record_promotion` is called on the **new** primary, after it became writable and before
anything else is written there, in one transaction: the epoch moves on, the history gets its
row, and replication carries both to every node (and to the old primary once it rejoins).
Every node reads :func:`read_cluster_state` from its own database: an epoch that moved on is
how a node learns that the primary changed (its outbox then re-sends what the old primary may
have lost, see :mod:`smartswitch.store.outbox`).

The epoch never goes back: a promotion decided through etcd brings the leader key's revision
(monotonic across the etcd cluster) and the stored epoch becomes the larger of that and the
previous epoch plus one; a promotion without etcd simply counts on.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from smartswitch.model.cluster import ClusterState, Promotion
from smartswitch.store.schema import ClusterStateRow, PromotionRow

__all__ = ["promotion_history", "read_cluster_state", "record_promotion"]

_REASON_LENGTH = 255


async def read_cluster_state(session: AsyncSession) -> ClusterState | None:
    """The current primary and epoch, or None where no primary was ever recorded."""
    row = await session.get(ClusterStateRow, 1)
    if row is None:
        return None
    return ClusterState(row.epoch, row.primary_node, row.primary_address, row.changed_at)


async def record_promotion(
    session: AsyncSession,
    node: str,
    address: str,
    *,
    reason: str,
    automatic: bool,
    from_gtid: str,
    epoch: int | None = None,
    now: datetime | None = None,
) -> Promotion:
    """Make ``node`` (its database at ``address``) the primary of a new epoch; returns the
    history row. The caller's transaction commits it (on the new primary).

    ``epoch`` is a floor (the etcd leader key's revision); the new epoch is the larger of it
    and the previous one plus one.
    """
    when = now or datetime.now(UTC)
    state = await session.get(ClusterStateRow, 1, with_for_update=True)
    previous_epoch = state.epoch if state is not None else 0
    new_epoch = max(previous_epoch + 1, epoch or 0)
    previous_node = state.primary_node if state is not None else ""
    if state is None:
        state = ClusterStateRow(id=1)
        session.add(state)
    state.epoch = new_epoch
    state.primary_node = node
    state.primary_address = address
    state.changed_at = when
    row = PromotionRow(
        epoch=new_epoch,
        node=node,
        address=address,
        previous_node=previous_node,
        reason=reason[:_REASON_LENGTH],
        automatic=automatic,
        from_gtid=from_gtid,
        promoted_at=when,
    )
    session.add(row)
    await session.flush()
    return _promotion(row)


async def promotion_history(
    session: AsyncSession, *, limit: int = 50, previous_node: str | None = None
) -> list[Promotion]:
    """The newest promotions first; ``previous_node`` keeps those that deposed that node."""
    query = select(PromotionRow).order_by(PromotionRow.epoch.desc()).limit(limit)
    if previous_node is not None:
        query = query.where(PromotionRow.previous_node == previous_node)
    return [_promotion(row) for row in await session.scalars(query)]


def _promotion(row: PromotionRow) -> Promotion:
    return Promotion(
        row.epoch,
        row.node,
        row.address,
        row.previous_node,
        row.reason,
        row.automatic,
        row.from_gtid,
        row.promoted_at,
    )
