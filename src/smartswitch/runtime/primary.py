"""Following the primary: who it is comes from the replicated cluster state, not the TOML.

A node of the replication scheme reads its own database every second (the role watcher,
:func:`smartswitch.cluster.role.database_role`); the row ``cluster_state`` names the primary
and the epoch. :class:`PrimaryFollower` acts on what it reads:

- **money goes to the named primary**: the forwarder's database is this node's own when it is
  the primary, else the address the cluster state names (with this node's database
  credentials), switched without a restart when the epoch moves on;
- **the forwarder knows the epoch**: delivered records are kept until seen in this node's own
  replica, and those of an older epoch are delivered again to the new primary;
- **a former primary that sees a newer epoch stays read-only**: a writable primary asks the
  other nodes (their ``/cluster/status``, signed, on the cluster bus) for their epoch; when one names a newer epoch and
  another primary, this node's database is fenced (``read_only``, writes drained) and its
  errant transactions (GTIDs the new primary lacks) are reported in the log, in the node's
  status and on the Cluster page. They are never replicated: ``smartswitch cluster rejoin``
  rebuilds the database from a snapshot of the new primary.

The credentials of the other nodes' databases are this node's own (``database_url``): the
cluster's MariaDB servers share one administrative account, as ``cluster promote`` assumes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from smartswitch.cluster.bus import BusClient, Peer
from smartswitch.cluster.nodebus import NodeBus
from smartswitch.cluster.nodes import ask_status, database_address, list_nodes
from smartswitch.cluster.promotion import (
    DatabaseServer,
    PromotionError,
    errant_transactions,
    make_read_only,
)
from smartswitch.cluster.replication import DatabaseRole
from smartswitch.runtime.config import NodeConfig
from smartswitch.runtime.services import BillingServices
from smartswitch.store.database import database_url

__all__ = ["ClusterView", "PrimaryFollower", "cluster_view", "url_at"]

log = logging.getLogger("smartswitch.runtime.primary")

_PEER_CHECK_INTERVAL = 2.0


def url_at(url: str, address: str) -> str:
    """``url`` (its driver, credentials and database) pointed at ``address`` (host:port)."""
    host, _, port = address.rpartition(":")
    parsed = make_url(url).set(host=host or None, port=int(port) if port else None)
    return parsed.render_as_string(hide_password=False)


class PrimaryFollower:
    """Acts on each role the watcher reads (see the module docstring)."""

    def __init__(self, config: NodeConfig, services: BillingServices, bus: NodeBus | None) -> None:
        self.config = config
        self.services = services
        self.bus = bus  # None: no cluster secret, so no other node can be asked
        self.name = config.name
        self.address = database_address(config.database_url)
        self.fenced_by: tuple[int, str] | None = None  # (epoch, node) that made us stand down
        self.errant = ""
        self._peer_check_at = 0.0
        self._errant_epoch = -1
        self._busy = False

    @property
    def enabled(self) -> bool:
        return self.config.db_scheme == "replication" and bool(self.config.database_url)

    def own_server(self) -> DatabaseServer:
        assert self.config.database_url is not None
        return DatabaseServer(self.name, self.config.database_url)

    async def observe(self, role: DatabaseRole) -> DatabaseRole:
        """Follow ``role`` (just read from this node's database); returns it with what this
        node knows beyond it (a newer epoch elsewhere, errant transactions)."""
        if not self.enabled or role.role == "unreachable":
            return self._annotated(role)
        if role.epoch > self.services.epoch:
            if self.services.epoch:
                log.warning(
                    "epoch %d: %s is the primary (%s)",
                    role.epoch,
                    role.primary_node,
                    role.primary_address,
                )
            self.services.epoch = role.epoch
        if role.role == "primary":
            self.services.use_money_url(self.services.url)
        elif role.role == "replica" and role.primary_address:
            assert self.config.database_url is not None
            primary = url_at(self.config.database_url, role.primary_address)
            self.services.use_money_url(database_url(self.config.data_dir, primary))
        if role.role == "replica":
            self.fenced_by = None
            self.errant = ""
        elif role.role in ("primary", "fenced") and not self._busy:
            now = time.monotonic()
            if now >= self._peer_check_at:
                self._peer_check_at = now + _PEER_CHECK_INTERVAL
                self._busy = True
                try:
                    await self._check_peers(role)
                finally:
                    self._busy = False
        return self._annotated(role)

    def _annotated(self, role: DatabaseRole) -> DatabaseRole:
        if self.fenced_by is None:
            return role
        epoch, node = self.fenced_by
        return dataclasses.replace(
            role,
            writable=False,
            role="fenced" if role.role == "primary" else role.role,
            last_error=(
                f"a newer epoch {epoch} names {node} the primary: this database stands down"
                + (f"; errant transactions {self.errant}" if self.errant else "")
                + " (smartswitch cluster rejoin)"
            ),
        )

    async def _peer_states(self) -> list[Mapping[str, Any]]:
        if self.bus is None:
            return []
        async with self.services.sessions() as session:
            peers = [Peer(n.name, n.http_address) for n in await list_nodes(session)]
        answers = await self.bus.statuses([p for p in peers if p.name != self.name], timeout=3.0)
        return [a for a in answers.values() if a.get("reachable")]

    async def _check_peers(self, role: DatabaseRole) -> None:
        """A newer epoch elsewhere naming another primary: fence this database, report its
        errant transactions."""
        try:
            peers = await self._peer_states()
        except Exception as exc:
            log.debug("asking the other nodes for their epoch failed: %s", exc)
            return
        newest: Mapping[str, Any] | None = None
        for peer in peers:
            db = peer.get("db") or {}
            epoch = int(db.get("epoch") or 0)
            if (
                epoch > role.epoch
                and db.get("primary_node") != self.name
                and (newest is None or epoch > int(newest["epoch"]))
            ):
                newest = db
        if newest is None:
            return
        epoch, node = int(newest["epoch"]), str(newest["primary_node"])
        own = self.own_server()
        if role.role == "primary":
            log.error(
                "epoch %d elsewhere names %s the primary; this database (epoch %d) is made "
                "read-only and keeps out of replication until `smartswitch cluster rejoin`",
                epoch,
                node,
                role.epoch,
            )
            try:
                await asyncio.to_thread(make_read_only, own, drain_timeout=2.0)
            except PromotionError as exc:
                log.error("fencing this database failed: %s", exc)
        self.fenced_by = (epoch, node)
        if self._errant_epoch != epoch and newest.get("primary_address"):
            assert self.config.database_url is not None
            new = DatabaseServer(node, url_at(self.config.database_url, newest["primary_address"]))
            try:
                extra = await asyncio.to_thread(errant_transactions, own, new)
            except Exception as exc:
                log.warning("errant transactions against %s not read: %s", new, exc)
                return
            self._errant_epoch = epoch
            self.errant = ", ".join(map(str, extra))
            if extra:
                log.error(
                    "errant transactions (this database has them, the primary %s does not): "
                    "%s; they are not replicated: `smartswitch cluster rejoin` rebuilds this "
                    "database from a snapshot of the primary",
                    new,
                    self.errant,
                )


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The cluster as the nodes report it: each answering node's database (with this node's
    credentials), and the newest epoch any of them (or this node's database) names."""

    servers: dict[str, DatabaseServer]
    epoch: int
    primary: DatabaseServer | None
    unreachable: tuple[str, ...]


async def cluster_view(
    config: NodeConfig,
    sessions: async_sessionmaker[AsyncSession],
    role: DatabaseRole,
    client: BusClient,
) -> ClusterView:
    """Ask every registered node for its database and its epoch (``/cluster/status``,
    signed by ``client`` on the cluster bus)."""
    assert config.database_url is not None
    url = config.database_url
    own = config.name
    async with sessions() as session:
        nodes = await list_nodes(session)
    answers = await asyncio.gather(
        *(ask_status(client, Peer(n.name, n.http_address)) for n in nodes if n.name != own)
    )
    servers = {own: DatabaseServer(own, url)}
    epoch, primary_node, primary_address = role.epoch, role.primary_node, role.primary_address
    unreachable: list[str] = []
    for answer in answers:
        name = str(answer["node"])
        if not answer.get("reachable"):
            unreachable.append(name)
            continue
        address = str(answer.get("database_address") or "")
        if address:
            servers[name] = DatabaseServer(name, url_at(url, address))
        db = answer.get("db") or {}
        if int(db.get("epoch") or 0) > epoch:
            epoch = int(db["epoch"])
            primary_node, primary_address = str(db["primary_node"]), str(db["primary_address"])
    primary = (
        DatabaseServer(primary_node, url_at(url, primary_address)) if primary_address else None
    )
    return ClusterView(servers, epoch, primary, tuple(unreachable))
