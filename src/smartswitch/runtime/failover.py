"""Automatic promotion, run by the node: its etcd member, the leader lease, the campaign.

With ``etcd_members`` in the node config (``NAME=IP``, one member per node on its dedicated
IP), the node supervises its own member (:class:`smartswitch.cluster.etcd.EtcdMember`,
restarted when it exits) and, in the replication scheme, takes part in choosing the primary
as Patroni does (:mod:`smartswitch.cluster.consensus` has the rules):

- every node publishes its database's GTID position each second;
- the node whose database is the primary holds the leader key under a lease
  (``failover_ttl``, 10 s) and renews it; when it cannot, it makes its database read-only
  **before** the lease can expire (fencing), and stands down; a node that holds the key while
  its database is no longer the primary (a switchover by hand) gives the key up;
- with ``failover = "automatic"`` (three members or more, else refused with the reason in the
  log), the replicas' nodes watch the key: when it is gone, each campaigns with its position,
  only one no live peer is ahead of may win, at most once per anti-flap period
  (``failover_anti_flap``, an hour) unless an operator promoted by hand since, and not within
  three lease lifetimes of that promotion by hand (the node promoted takes the key); the winner
  promotes its own database (:func:`smartswitch.cluster.promotion.promote`: the old primary
  fenced if it answers, the relay log applied, every other replica repointed, the epoch moved
  on to at least the key's revision).

Every step is logged and kept in :attr:`Failover.events` (shown on the Cluster page); the
promotions themselves are in the replicated promotion history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from smartswitch.cluster.bus import BusClient
from smartswitch.cluster.consensus import (
    LAST_PROMOTION_KEY,
    LEADER_KEY,
    ConsensusError,
    EtcdClient,
    FailoverSettings,
    FlapGuard,
    LeaderLease,
    NotConfirmed,
    PositionPublisher,
    campaign_automatic,
    handover_seconds,
)
from smartswitch.cluster.etcd import EtcdMember
from smartswitch.cluster.promotion import (
    NotAReplica,
    PromotionError,
    gtid_position,
    make_read_only,
    promote,
    stop_replicating_and_make_writable,
)
from smartswitch.cluster.replication import DatabaseRole
from smartswitch.cluster.role import database_role
from smartswitch.runtime.config import NodeConfig
from smartswitch.runtime.primary import PrimaryFollower, cluster_view
from smartswitch.runtime.services import BillingServices

__all__ = ["Failover"]

log = logging.getLogger("smartswitch.runtime.failover")

_TICK = 0.5
_DOWN_FOR = 3.0  # seconds this node's database must be unreachable before the key is released
#: The bound on the write fence's etcd round trips: a healthy etcd answers in milliseconds; a
#: member cut off from its majority never does, and the change is refused at this deadline.
WRITE_FENCE_TIMEOUT = 2.0


class Failover:
    """The node's part in choosing the primary (see the module docstring)."""

    def __init__(
        self,
        config: NodeConfig,
        services: BillingServices,
        follower: PrimaryFollower,
        role: Callable[[], DatabaseRole],
        client: BusClient,
    ) -> None:
        self.config = config
        self.services = services
        self.follower = follower
        self.role = role
        self.bus_client = client  # the node's signed cluster bus: asks the others' status
        self.name = config.name
        cluster = config.etcd_cluster
        self.member: EtcdMember | None = None
        if config.etcd_run and self.name in cluster:
            self.member = EtcdMember(
                self.name,
                cluster[self.name],
                config.data_dir / "etcd",
                cluster,
                client_port=config.etcd_client_port,
                peer_port=config.etcd_peer_port,
                cluster_token=f"smartswitch-{len(cluster)}",
            )
        self.automatic = config.failover == "automatic"
        self.refusal = ""
        try:
            self.settings = FailoverSettings(
                tuple(cluster),
                automatic=self.automatic,
                ttl=config.failover_ttl,
                period=config.failover_anti_flap,
            )
        except ConsensusError as exc:
            self.refusal = str(exc)
            log.error("automatic promotion disabled: %s", exc)
            self.settings = FailoverSettings(tuple(cluster), ttl=config.failover_ttl)
        self.client = EtcdClient(config.etcd_endpoints, timeout=1.0)
        self.lease = LeaderLease(
            self.client, self.name, ttl=config.failover_ttl, on_lost=self._fence
        )
        self.guard = FlapGuard(
            self.client,
            period=config.failover_anti_flap,
            handover=handover_seconds(config.failover_ttl),
        )
        self.publisher = PositionPublisher(self.client, self.name)
        self.events: deque[str] = deque(maxlen=50)
        self.state = "starting"
        self._failure_seen: float | None = None
        self._failure_epoch = 0
        self._unreachable_since: float | None = None
        self.fenced_self = False
        self._leader_seen = False
        self._promoted_epoch = 0  # the epoch this node's own automatic promotion recorded
        self._started = time.monotonic()
        self._last_note = ""
        self._task: asyncio.Task[None] | None = None

    # --- what the Cluster page shows --------------------------------------------------------

    def note(self, text: str, level: int = logging.INFO) -> None:
        """Log a step and keep it for the Cluster page (repeats are not logged again)."""
        if text == self._last_note:
            return
        self._last_note = text
        log.log(level, "failover: %s", text)
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")

    def summary(self) -> str:
        mode = "automatic" if self.settings.automatic else "manual"
        held = f"holds the leader lease (epoch {self.lease.epoch})" if self.lease.held else ""
        return "; ".join(
            p for p in (f"{mode} promotion", self.refusal, held, self.state, self._last_note) if p
        )

    async def write_refusal(self, timeout: float = WRITE_FENCE_TIMEOUT) -> str | None:
        """The write fence of a configuration change: None when this node confirms, with a
        linearizable etcd read made now, that it holds the leader key under a live lease for
        its epoch (:meth:`LeaderLease.confirm`); otherwise why not. Checked at the moment of
        each change (the UI, the API, ``provision`` through the node's control endpoint), so
        that a primary cut off from the majority refuses changes from the first second of the
        cut, before its renewals have failed long enough for it to fence itself."""
        try:
            left = await self.lease.confirm(timeout)
        except NotConfirmed as exc:
            reason = f"this node cannot confirm it holds the primary lease: {exc}"
            # Kept for the Cluster page, but not as the failover's last step (the summary
            # keeps saying why the node stood down, if it did).
            log.warning("failover: configuration change refused: %s", reason)
            self.events.append(
                f"{time.strftime('%H:%M:%S')} configuration change refused: {reason}"
            )
            return reason
        log.debug(
            "write fence: leader key of epoch %d confirmed, %d s left", self.lease.epoch, left
        )
        return None

    # --- running ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="failover")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.publisher.stop()
        with contextlib.suppress(Exception):
            await self.lease.release()
        await self.client.close()
        if self.member is not None:
            await asyncio.to_thread(self.member.stop)

    async def _position(self) -> str:
        return (await asyncio.to_thread(gtid_position, self.follower.own_server())).current

    async def _run(self) -> None:
        self.publisher.start(self._position)
        while True:
            try:
                if self.member is not None and not self.member.running:
                    self.note(f"starting the etcd member on {self.member.peer_url}")
                    await asyncio.to_thread(self.member.start)
                    # For an operator (and a test) to find it after this node was killed.
                    (self.config.data_dir / "etcd.pid").write_text(f"{self.member.pid}\n")
                await self._turn()
            except asyncio.CancelledError:
                raise
            except ConsensusError as exc:
                self.state = f"etcd: {exc}"
            except Exception as exc:
                self.note(f"failover turn failed: {exc}", logging.WARNING)
            await asyncio.sleep(_TICK)

    async def _turn(self) -> None:
        role = self.role()
        if role.role == "primary" and role.writable:
            self._unreachable_since = None
            await self._as_primary(role)
            return
        if role.role == "unreachable":
            # The database is down: after a few seconds (not a hiccup) the key is given up at
            # once rather than left to lapse, so that a replica takes over sooner.
            now = time.monotonic()
            if self._unreachable_since is None:
                self._unreachable_since = now
            if not self.lease.held or now - self._unreachable_since < _DOWN_FOR:
                return
        else:
            self._unreachable_since = None
        if self.lease.held and role.role == "replica" and role.epoch < self._promoted_epoch:
            # The role watcher (once a second) has not read this node's own promotion yet:
            # a stale "replica" must not give up the key just won, which would leave the
            # cluster without a leader key (and the epoch without its revision) for a moment.
            return
        if self.lease.held:
            # The database is down, or a switchover by hand made another one the primary.
            await self.lease.release()
            self.note(f"this database is {role.role}, not the primary: leader key given up")
        if role.role == "replica":
            await self._as_replica(role)
        elif role.role == "fenced" and self.fenced_self and self.follower.fenced_by is None:
            await self._reclaim()

    async def _reclaim(self) -> None:
        """Fenced after losing the lease (etcd away, not a newer primary): when the key is
        free again and no peer is ahead, take it back and take writes again."""
        if await self.client.get(LEADER_KEY) is not None:
            return
        result = await self.lease.acquire(position=await self._position())
        if not result.won:
            self.state = f"fenced; {result.reason or result.holder}"
            return
        await asyncio.to_thread(
            stop_replicating_and_make_writable,
            self.follower.own_server(),
            cluster_secret=self.config.cluster_secret,
        )
        self.fenced_self = False
        self.note(f"leader key taken back (revision {result.epoch}): writable again")

    async def _as_primary(self, role: DatabaseRole) -> None:
        if self.lease.held:
            self.state = ""
            self._failure_seen = None
            return
        holder = await self.client.get(LEADER_KEY)
        if holder is not None and holder.text != self.name:
            self.state = f"{holder.text} holds the leader key, not this primary"
            return
        result = await self.lease.acquire()
        if result.won:
            self.note(f"leader key taken by the primary's node (revision {result.epoch})")

    async def _as_replica(self, role: DatabaseRole) -> None:
        holder = await self.client.get(LEADER_KEY)
        if holder is not None:
            self._failure_seen = None
            self._leader_seen = True
            self.state = f"leader: {holder.text}"
            return
        if not self._leader_seen and time.monotonic() - self._started < 3 * self.lease.ttl:
            # The cluster is starting: the primary's node has not taken the key yet.
            self.state = "waiting for the primary's node to take the leader key"
            return
        if self._failure_seen is not None and role.epoch > self._failure_epoch:
            # Someone promoted a primary since (an operator): its node will take the key.
            self._failure_seen = None
            self.state = f"epoch {role.epoch}: waiting for {role.primary_node} to take the key"
            return
        if self._failure_seen is None:
            self._failure_seen = time.time()
            self._failure_epoch = role.epoch
            self.note(f"the leader key is gone (the primary {role.primary_node} lost its lease)")
        if not self.settings.automatic:
            self.state = "no leader; automatic promotion is off: promote by hand"
            return
        refusal = await self.guard.refusal()
        if refusal:
            self.note(f"no automatic promotion: {refusal}", logging.WARNING)
            return
        position = await self._position()
        result = await campaign_automatic(
            self.lease, self.guard, self.settings, position, settled_after=self._failure_seen
        )
        if not result.won:
            self.note(f"campaign not won: {result.reason or result.holder}")
            return
        self.note(f"campaign won at {position or '-'} (leader key revision {result.epoch})")
        await self._promote_self(role, result.epoch)

    async def _promote_self(self, role: DatabaseRole, epoch: int) -> None:
        view = await cluster_view(self.config, self.services.sessions, role, self.bus_client)
        own = view.servers[self.name]
        old = view.primary if view.primary is not None and view.primary.name != self.name else None
        others = [
            s
            for s in view.servers.values()
            if s.name != self.name and (old is None or s.address != old.address)
        ]
        self.note(
            f"promoting this node's database; old primary {old or '-'}, "
            f"replicas {', '.join(s.name for s in others) or '-'}"
        )
        try:
            result = await asyncio.to_thread(
                promote,
                own,
                others,
                old,
                cluster_secret=self.config.cluster_secret,
                reason=f"automatic: the leader lease of {role.primary_node or '?'} lapsed",
                automatic=True,
                epoch=epoch,
                drain_timeout=2.0,
                catch_up_timeout=10.0,
            )
        except PromotionError as exc:
            if isinstance(exc, NotAReplica) and await self._promoted_by_hand(role):
                return
            self.note(f"promotion refused: {exc}", logging.ERROR)
            # Nothing was promoted: the anti-flap mark the campaign wrote must not block the
            # next candidate, and the key goes back.
            with contextlib.suppress(ConsensusError):
                await self.client.delete(LAST_PROMOTION_KEY)
            await self.lease.release()
            return
        self._promoted_epoch = result.promotion.epoch
        for step in result.steps:
            self.note(step)
        self.note(f"this node is the primary of epoch {result.promotion.epoch}", logging.WARNING)

    async def _promoted_by_hand(self, seen: DatabaseRole) -> bool:
        """After a campaign won on a stale "replica": whether an operator's promotion
        (`smartswitch cluster promote`) made this node's database the primary meanwhile. If so
        the key just won is that primary's: kept, lest another node find it free and promote
        itself over the operator's choice (the hand promotion lifted the anti-flap block)."""
        now = await database_role(self.services.engine, self.config.db_scheme)
        if not (
            now.role == "primary"
            and now.writable
            and now.primary_node == self.name
            and now.epoch > seen.epoch
        ):
            return False
        self._promoted_epoch = now.epoch
        # The campaign's automatic anti-flap mark replaced the operator's record: a promotion
        # by hand blocks no later automatic one, and neither does no record.
        with contextlib.suppress(ConsensusError):
            await self.client.delete(LAST_PROMOTION_KEY)
        self.note(
            f"this database was promoted by hand meanwhile (epoch {now.epoch}): "
            "the leader key stays with it",
            logging.WARNING,
        )
        return True

    async def _fence(self, reason: str) -> None:
        """The lease could not be renewed: this database stops taking writes before the lease
        can lapse elsewhere."""
        self.note(f"leader lease lost ({reason}): this database is made read-only", logging.ERROR)
        self.fenced_self = True
        try:
            await asyncio.to_thread(make_read_only, self.follower.own_server(), drain_timeout=1.0)
        except PromotionError as exc:
            self.note(f"fencing failed: {exc}", logging.ERROR)
