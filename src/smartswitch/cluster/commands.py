"""``smartswitch cluster ...``: set up the replication scheme and look at the cluster."""

from __future__ import annotations

import sys

from smartswitch.cluster.replication import ClusterError
from smartswitch.cluster.replication import add_replica as _add_replica
from smartswitch.cluster.replication import init_primary as _init_primary
from smartswitch.config import NodeConfig


def _local_url(config: NodeConfig) -> str:
    if not config.database_url:
        raise ClusterError("database_url (this node's MariaDB) is not set in the node config")
    return config.database_url


def init_primary(config: NodeConfig) -> int:
    try:
        _init_primary(_local_url(config), config.cluster_secret)
    except ClusterError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    print("this node's database is the primary; replicas can be added")
    return 0


def add_replica(config: NodeConfig) -> int:
    try:
        if not config.primary_database_url:
            raise ClusterError("primary_database_url is not set in the node config")
        gtid = _add_replica(_local_url(config), config.primary_database_url, config.cluster_secret)
    except ClusterError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    print(f"replicating from the primary, starting at GTID {gtid}")
    return 0
