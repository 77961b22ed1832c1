"""Heartbeats and membership: which nodes are up, and how loaded each one is.

Every node sends its :class:`Heartbeat` to every other node each ``interval`` (1 s) on the
cluster bus. A node not heard for ``misses`` intervals (3) is down; its next heartbeat brings it
back up at once. With the defaults a dead node is down 3 s after its last heartbeat, so 2 to
3 s after it died (within the 5 s the Cluster page and ``smartswitch cluster status`` promise).

* :class:`Heartbeat` — the message, a frozen value with its JSON form. ``extra`` carries the
  figures of later kinds that ride on every heartbeat (reservations, failure counters, VIP
  state, epochs), each under its own key.
* :class:`Membership` — the table, sans-IO: ``heard(heartbeat, now)``, ``tick(now)``,
  ``state(now)``, ``next_deadline()``; listeners get :class:`MemberEvent` (up, down, heard) so
  the load balancer and the money shares react without polling.
* :class:`Heartbeater` — the asyncio side: sends this node's heartbeat to every peer
  concurrently (a dead peer never delays the others: one request in flight per peer, each
  bounded by ``timeout``), feeds the table with its own and the received heartbeats, and runs
  ``tick`` at each beat and at each node's deadline.

Liveness uses the receiver's monotonic clock only (``now`` everywhere here); a heartbeat's
``sent_at`` is the sender's wall clock, shown for information, never compared with ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smartswitch.cluster.bus import PATHS, BusClient, BusError, MessageError, Peer, Peers
from smartswitch.cluster.signing import SignedRequest

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_MISSES",
    "Heartbeat",
    "Heartbeater",
    "MemberEvent",
    "MemberEventKind",
    "Membership",
    "NodeState",
]

log = logging.getLogger("smartswitch.cluster.membership")

DEFAULT_INTERVAL = 1.0
DEFAULT_MISSES = 3
HEARTBEAT_VERSION = 1
"""Bumped only for a change old nodes cannot read; fields are added without a bump (readers
ignore keys they do not know)."""


def _field(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"heartbeat field {name!r}: expected {kind.__name__}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One node's account of itself, sent every interval."""

    node: str
    dedicated_ip: str
    http_address: str
    """The node's bus (and web) address, ``host:port``."""
    sip_address: str
    alive: bool
    """The node takes calls (False while it stops: the others see it down at once)."""
    calls: int
    """Calls in progress."""
    cps: float
    """Call attempts per second, recent."""
    capacity: int
    """Calls the node is configured to carry at once (0: not set)."""
    outbox_depth: int
    """CDRs waiting to reach the primary."""
    version: str
    """Software version."""
    schema: str
    """The database schema revision the node runs with."""
    db_role: str
    """``primary``, ``replica``, ``galera``, ``single`` or ``unreachable``."""
    sent_at: float = 0.0
    """The sender's wall clock when sent (stamped by the :class:`Heartbeater`)."""
    started_at: float = 0.0
    """When the sending process started (stamped): a new value means the node restarted."""
    seq: int = 0
    """Counts up within one process (stamped): older heartbeats overtaken on the way are not
    taken for newer ones."""
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Figures of other kinds, by kind name (JSON values)."""

    @property
    def free(self) -> int:
        """Calls the node can still take (0 when full or its capacity is not set)."""
        return max(0, self.capacity - self.calls)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["extra"] = dict(self.extra)
        return {"v": HEARTBEAT_VERSION, **data}

    @classmethod
    def from_json(cls, data: Any) -> Heartbeat:
        """The heartbeat in ``data``; :class:`ValueError` if it is not one we can read."""
        if not isinstance(data, Mapping):
            raise ValueError("a heartbeat is a JSON object")
        if data.get("v") != HEARTBEAT_VERSION:
            raise ValueError(f"heartbeat version {data.get('v')!r}, this node reads 1")
        extra = data.get("extra", {})
        if not isinstance(extra, Mapping):
            raise ValueError("heartbeat field 'extra': expected an object")
        values = {
            f.name: _field(data, f.name, _TYPES[f.name])
            for f in dataclasses.fields(cls)
            if f.name != "extra"
        }
        return cls(**values, extra=dict(extra))


_TYPES: dict[str, type] = {
    "node": str,
    "dedicated_ip": str,
    "http_address": str,
    "sip_address": str,
    "alive": bool,
    "calls": int,
    "cps": float,
    "capacity": int,
    "outbox_depth": int,
    "version": str,
    "schema": str,
    "db_role": str,
    "sent_at": float,
    "started_at": float,
    "seq": int,
}


def _newer(heartbeat: Heartbeat, last: Heartbeat) -> bool:
    return heartbeat.started_at != last.started_at or heartbeat.seq > last.seq


class MemberEventKind(StrEnum):
    UP = "up"
    """First heard, or heard again after being down (or after saying it was not alive)."""
    DOWN = "down"
    """Missed ``misses`` intervals, or said it is not alive."""
    HEARD = "heard"
    """Any heartbeat taken (after the up event it may have caused)."""


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: MemberEventKind
    node: str
    heartbeat: Heartbeat | None
    """The node's latest heartbeat, if it was ever heard."""
    at: float
    """When, on the membership's clock."""


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node as the table sees it at one moment."""

    node: str
    up: bool
    """Heard within ``misses`` intervals, and alive by its own account."""
    reachable: bool
    """Heard within ``misses`` intervals."""
    age: float | None
    """Seconds since last heard (None: never)."""
    heartbeat: Heartbeat | None

    def to_json(self) -> dict[str, Any]:
        """For the Cluster page, ``cluster status`` and the members endpoint."""
        return {
            "node": self.node,
            "up": self.up,
            "reachable": self.reachable,
            "age": None if self.age is None else round(self.age, 3),
            "heartbeat": None if self.heartbeat is None else self.heartbeat.to_json(),
        }


class Membership:
    """The nodes of the cluster and whether each is up (sans-IO: time is passed in).

    ``expect(names)`` names the nodes that should be there (the configured ones): they are
    listed, down, until heard. A node that is heard but not expected (one just added, not yet
    replicated here) is listed too.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, misses: int = DEFAULT_MISSES) -> None:
        if interval <= 0 or misses < 1:
            raise ValueError("a heartbeat interval is positive and at least one miss is allowed")
        self.interval = interval
        self.misses = misses
        self.listeners: list[Callable[[MemberEvent], None]] = []
        self._expected: set[str] = set()
        self._last: dict[str, Heartbeat] = {}
        self._seen: dict[str, float] = {}
        self._up: dict[str, bool] = {}  # as last reported to the listeners

    @property
    def down_after(self) -> float:
        """Seconds without a heartbeat after which a node is down."""
        return self.interval * self.misses

    def expect(self, names: Iterable[str]) -> None:
        self._expected = set(names)

    def forget(self, name: str) -> None:
        """Drop a node removed from the cluster (no event)."""
        self._expected.discard(name)
        for table in (self._last, self._seen, self._up):
            table.pop(name, None)

    def heard(self, heartbeat: Heartbeat, now: float) -> None:
        name = heartbeat.node
        last = self._last.get(name)
        if last is None or _newer(heartbeat, last):
            self._last[name] = heartbeat
        self._seen[name] = now
        self._settle(name, now)
        self._emit(MemberEventKind.HEARD, name, now)

    def tick(self, now: float) -> None:
        """Mark down the nodes whose deadline has passed (one event each)."""
        for name in [n for n, up in self._up.items() if up]:
            self._settle(name, now)

    def next_deadline(self) -> float | None:
        """When the first node now up goes down if not heard before (None: no node is up)."""
        deadlines = [self._seen[n] + self.down_after for n, up in self._up.items() if up]
        return min(deadlines, default=None)

    def node(self, name: str, now: float) -> NodeState:
        seen = self._seen.get(name)
        heartbeat = self._last.get(name)
        reachable = seen is not None and now - seen <= self.down_after
        return NodeState(
            node=name,
            up=reachable and heartbeat is not None and heartbeat.alive,
            reachable=reachable,
            age=None if seen is None else max(0.0, now - seen),
            heartbeat=heartbeat,
        )

    def state(self, now: float) -> list[NodeState]:
        """Every node, expected or heard, by name."""
        return [self.node(name, now) for name in sorted(self._expected | set(self._seen))]

    def up(self, now: float) -> list[Heartbeat]:
        """The latest heartbeats of the nodes up now: what the load balancer chooses from."""
        return [s.heartbeat for s in self.state(now) if s.up and s.heartbeat is not None]

    def _settle(self, name: str, now: float) -> None:
        up = self.node(name, now).up
        if up != self._up.get(name, False):
            self._up[name] = up
            self._emit(MemberEventKind.UP if up else MemberEventKind.DOWN, name, now)
        else:
            self._up[name] = up

    def _emit(self, kind: MemberEventKind, name: str, now: float) -> None:
        event = MemberEvent(kind, name, self._last.get(name), now)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("membership listener failed on %s %s", kind, name)


class Heartbeater:
    """Sends this node's heartbeat every interval and takes the others' (:meth:`receive`).

    ``own()`` returns this node's current figures as a :class:`Heartbeat`; ``sent_at``,
    ``started_at`` and ``seq`` are stamped here. A send is bounded by ``timeout`` (by default
    ``down_after``: a heartbeat delivered late still keeps this node up over there, and the
    next one to that peer waits for it, so nothing piles up). ``peers()`` is asked every ``refresh`` seconds
    in the background (it may read the database: a slow or failing answer keeps the last list
    and never delays a beat). Send failures are kept by peer in :attr:`send_errors` until the
    next success.
    """

    def __init__(
        self,
        membership: Membership,
        client: BusClient,
        own: Callable[[], Heartbeat],
        peers: Peers,
        *,
        timeout: float | None = None,
        refresh: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.membership = membership
        self.client = client
        self.own = own
        self.peers_source = peers
        self.interval = membership.interval
        self.timeout = membership.down_after if timeout is None else timeout
        self.refresh = refresh
        self.clock = clock
        self.wall = wall
        self.node = client.node
        self.started_at = wall()
        self.peers: list[Peer] = []
        self.send_errors: dict[str, str] = {}
        self._seq = 0
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeater")

    async def close(self, farewell: bool = False) -> None:
        """Stop sending: the others see this node down after ``misses`` intervals. With
        ``farewell``, first one last heartbeat saying it is not alive goes to every peer
        (within one interval), so a node stopped on purpose is down everywhere at once."""
        tasks = [t for t in (self._task, self._refreshing, *self._sending.values()) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = self._refreshing = None
        self._sending.clear()
        if farewell:
            heartbeat = self._stamp(alive=False)
            self.membership.heard(heartbeat, self.clock())
            payload = heartbeat.to_json()
            await asyncio.gather(*(self._send(p, payload, self.interval) for p in self.peers))

    async def receive(self, request: SignedRequest) -> dict[str, Any]:
        """The bus handler of :data:`PATHS.heartbeat <smartswitch.cluster.bus.PATHS>`."""
        try:
            heartbeat = Heartbeat.from_json(request.json())
        except ValueError as exc:
            raise MessageError(422, f"bad heartbeat: {exc}") from None
        if heartbeat.node != request.sender:
            raise MessageError(403, "a node sends only its own heartbeat")
        self.membership.heard(heartbeat, self.clock())
        return {"ok": True}

    async def members(self, request: SignedRequest) -> dict[str, Any]:
        """The bus handler of ``PATHS.members``: the table as this node sees it."""
        now = self.clock()
        return {"node": self.node, "members": [s.to_json() for s in self.membership.state(now)]}

    def beat(self, now: float) -> Heartbeat:
        """Take our own heartbeat and send it to every peer not still busy with the last."""
        heartbeat = self._stamp()
        self.membership.heard(heartbeat, now)
        payload = heartbeat.to_json()
        for peer in self.peers:
            busy = self._sending.get(peer.name)
            if busy is not None and not busy.done():
                continue  # a slow peer gets one heartbeat at a time, never a queue
            self._sending[peer.name] = asyncio.create_task(
                self._send(peer, payload), name=f"heartbeat-to-{peer.name}"
            )
        return heartbeat

    def _stamp(self, **changes: Any) -> Heartbeat:
        self._seq += 1
        heartbeat = dataclasses.replace(
            self.own(),
            sent_at=self.wall(),
            started_at=self.started_at,
            seq=self._seq,
            **changes,
        )
        if heartbeat.node != self.node:
            raise ValueError(f"own() gave {heartbeat.node!r}'s heartbeat; this is {self.node!r}")
        return heartbeat

    async def refresh_peers(self) -> None:
        try:
            peers = await asyncio.wait_for(self.peers_source(), self.refresh)
        except Exception as exc:
            log.info("cluster nodes not refreshed, keeping the last list: %s", exc)
            return
        self.peers = [Peer(*p) for p in peers if p[0] != self.node]
        self.membership.expect([self.node, *(p.name for p in self.peers)])

    async def _run(self) -> None:
        self._refreshing = asyncio.create_task(self.refresh_peers(), name="heartbeat-peers")
        await asyncio.wait({self._refreshing}, timeout=self.interval)
        next_beat = self.clock()
        next_refresh = next_beat + self.refresh
        while True:
            now = self.clock()
            if now >= next_refresh:
                if self._refreshing is None or self._refreshing.done():
                    self._refreshing = asyncio.create_task(
                        self.refresh_peers(), name="heartbeat-peers"
                    )
                next_refresh = now + self.refresh
            if now >= next_beat:
                try:
                    self.beat(now)
                except Exception:
                    log.exception("heartbeat not sent")
                next_beat += self.interval
                if next_beat <= now:  # the loop was held up: skip, do not burst
                    next_beat = now + self.interval
            self.membership.tick(now)
            deadline = self.membership.next_deadline()
            wake = min(next_beat, next_refresh, math.inf if deadline is None else deadline)
            await asyncio.sleep(max(0.001, wake - self.clock()))

    async def _send(
        self, peer: Peer, payload: dict[str, Any], timeout: float | None = None
    ) -> None:
        try:
            await self.client.post(
                peer, PATHS.heartbeat, payload, timeout=self.timeout if timeout is None else timeout
            )
        except BusError as exc:
            if self.send_errors.get(peer.name) is None:
                log.info("heartbeats to %s fail: %s", peer.name, exc.detail)
            self.send_errors[peer.name] = exc.detail
        except Exception:
            log.exception("heartbeat to %s", peer.name)
        else:
            if self.send_errors.pop(peer.name, None) is not None:
                log.info("heartbeats to %s get through again", peer.name)
