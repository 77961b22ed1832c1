"""Nodes are rows of the replicated configuration, so every node knows the others.

Each node registers itself on the primary when it starts (and again whenever its addresses
change); replication carries the row to every node. ``smartswitch cluster status`` asks each
registered node for its live state over HTTP, authenticated with the cluster secret.
"""

from __future__ import annotations

import hashlib
import hmac


def status_token(cluster_secret: str) -> str:
    """The bearer token nodes present to each other's status endpoint."""
    return hmac.new(cluster_secret.encode(), b"smartswitch-status", hashlib.sha256).hexdigest()
