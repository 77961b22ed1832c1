"""Who the cluster's primary is: the replicated cluster state and the history of promotions.

Written on the primary (so replication carries it to every node) by whoever promotes a new
primary, read by every node from its own database. The **epoch** counts primaries: it moves on
at every promotion and never goes back, so a record stamped with an older epoch is known to
belong to a deposed primary's reign (see :mod:`smartswitch.store.cluster_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["ClusterState", "Promotion"]


@dataclass(frozen=True, slots=True)
class ClusterState:
    """The current primary as the replicated database knows it."""

    epoch: int
    """Moves on at every promotion; with etcd, the leader key's create revision."""
    primary_node: str
    """The node name of the primary."""
    primary_address: str
    """Its database, ``host:port``."""
    changed_at: datetime
    """When this epoch began (UTC)."""


@dataclass(frozen=True, slots=True)
class Promotion:
    """One row of the promotion history: who became primary, when, why, from where."""

    epoch: int
    node: str
    address: str
    previous_node: str
    """The primary it replaced ("" for the first one)."""
    reason: str
    automatic: bool
    """Decided by the failover logic (True) or by an operator (False): anti-flap counts only
    automatic ones."""
    from_gtid: str
    """The new primary's ``gtid_current_pos`` when it was promoted: where its history and the
    old primary's may have parted (errant transactions are above it)."""
    promoted_at: datetime
