"""Money across nodes, the asyncio side: this node's holdings out on the signed cluster bus, the
others' in, into the :class:`~smartswitch.billing.reservations.ClusterLedger` the call path
grants against. It rides the node's :class:`~smartswitch.cluster.nodebus.NodeBus`.

* **Out, at once.** Every change to what this node holds of an account (a call granted or
  extended, a call ended, a charge confirmed) schedules one publication for the next turn of
  the loop: the changes of one turn go out together (coalesced), as a signed
  ``POST /cluster/reservations`` to each peer. Each peer has at most one request in flight; a
  change meanwhile is sent when it returns, the latest table only.
* **Out, in every heartbeat.** The heartbeater asks :meth:`MoneyBus.beat` as it makes each
  heartbeat (:meth:`NodeBus.ride <smartswitch.cluster.nodebus.NodeBus.ride>`): the whole table
  goes in ``Heartbeat.extra["reservations"]``, one message a beat, whether or not it changed.
  The same beat gives the ledger the nodes table's names (the heartbeater's list) and settles
  the partition rule. No timer of its own.
* **In.** A heartbeat's table reaches the ledger through the membership's HEARD event
  (:meth:`MoneyBus.member_event`; a heartbeat without one, from a node not publishing yet, only
  keeps that node live); a node's UP and DOWN events settle the shares at once. ``POST
  /cluster/reservations`` (signed; :func:`~smartswitch.cluster.endpoints.bus_router`) takes a
  change; a node may publish only its own holdings, in a post or a heartbeat. ``GET
  /cluster/reservations`` (signed) answers what this node sees: the nodes live, whether the
  cluster is whole, every account some node holds money of, and how long the last changes
  took to arrive here (the publisher's change time to our receipt, on one host's clock: what
  ``bench/money.py`` reports).

Both carry :class:`~smartswitch.billing.reservations.Reservations` numbered from one counter,
so a heartbeat overtaken by a later change post never brings an older table back. The ledger's
``stale_after`` is the membership's ``down_after``: a node is missing for the money when it is
down for the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from smartswitch.billing.reservations import ClusterLedger, Reservations
from smartswitch.cluster.bus import PATHS, BusError, MessageError, Peer
from smartswitch.cluster.endpoints import Handler
from smartswitch.cluster.membership import MemberEvent, MemberEventKind
from smartswitch.cluster.nodebus import NodeBus
from smartswitch.cluster.signing import SignedRequest

__all__ = ["HEARTBEAT_KIND", "RESERVATIONS_PATH", "MoneyBus"]

log = logging.getLogger("smartswitch.runtime.money")

RESERVATIONS_PATH = PATHS.reservations
"""Where changes are posted (``GET``: what a node sees)."""
HEARTBEAT_KIND = "reservations"
"""The key of the holdings in ``Heartbeat.extra``."""


class MoneyBus:
    """Publishes this node's holdings and takes the others' (see the module). Its handlers
    are served among ``bus``'s routes from construction (before the web app asks for them);
    nothing is sent before :meth:`start`."""

    def __init__(
        self,
        ledger: ClusterLedger,
        bus: NodeBus,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if bus.name != ledger.node:
            raise ValueError(f"the ledger of {ledger.node!r} on the bus of {bus.name!r}")
        self.ledger = ledger
        self.node = ledger.node
        self.bus = bus
        self.client = bus.client
        # One notion of a missing node: down for the bus, missing for the money.
        ledger.stale_after = bus.membership.down_after
        self.clock = clock
        self.wall = wall
        self.epoch = wall()
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", RESERVATIONS_PATH): self.receive,
            ("GET", RESERVATIONS_PATH): self.state,
        }
        bus.serve(self.routes)
        self.send_errors: dict[str, str] = {}
        self.published = 0  # change publications made (each to every peer)
        self.beats = 0  # heartbeats that carried the table
        self._seq = 0
        self._members: frozenset[str] = frozenset()
        self._live: frozenset[str] | None = None
        self._refused: dict[str, str] = {}  # per node, why its heartbeat's table was not read
        self._scheduled = False
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        # Per peer, the wall time of the earliest change not yet sent to it.
        self._unsent: dict[str, float] = {}
        # Seconds from a publisher's change to its arrival here, the latest ones.
        self.lags: deque[float] = deque(maxlen=10_000)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def peers(self) -> list[Peer]:
        """The other nodes, as the heartbeater last read them from the nodes table."""
        return self.bus.heartbeater.peers

    # --- out --------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.ledger.accounting.on_change = self.changed
        self.bus.membership.listeners.append(self.member_event)
        self.bus.ride(HEARTBEAT_KIND, self.beat)

    def beat(self) -> dict[str, Any]:
        """The heartbeat's part (asked by the heartbeater once a beat): the nodes table's
        names to the ledger, the partition rule settled, and this node's table."""
        now = self.clock()
        members = frozenset({self.node, *(p.name for p in self.peers)})
        if members != self._members:
            self._members = members
            self.ledger.expect(members, now)
        self._settled(now)
        self._seq += 1
        self.beats += 1
        return self.ledger.publication(self.epoch, self._seq).to_json()

    def _settled(self, now: float) -> None:
        self.ledger.settle(now)
        live = self.ledger.live(now)
        if live != self._live:
            if self._live is not None:
                log.info(
                    "money: nodes heard %s of %s%s",
                    ", ".join(sorted(live)),
                    ", ".join(self.ledger.members()),
                    "" if self.ledger.whole(now) else ": keeping to this group's share",
                )
            self._live = live

    def changed(self) -> None:
        """What this node holds changed: publish on the next turn of the loop (once for all
        the changes of this turn)."""
        if self._loop is None:
            return
        wall = self.wall()
        for peer in self.peers:
            self._unsent.setdefault(peer.name, wall)
        if self._scheduled:
            return
        self._scheduled = True
        self._loop.call_soon(self.publish)

    def publish(self) -> None:
        """Send the current table to every peer (a busy peer gets it when it answers)."""
        self._scheduled = False
        for peer in self.peers:
            busy = self._sending.get(peer.name)
            if busy is not None and not busy.done():
                self._again.add(peer.name)
                continue
            self._sending[peer.name] = asyncio.create_task(
                self._send(peer), name=f"reservations-to-{peer.name}"
            )
        self.published += 1

    async def _send(self, peer: Peer) -> None:
        while True:
            self._seq += 1
            changed_at = self._unsent.pop(peer.name, None)
            payload = self.ledger.publication(self.epoch, self._seq, changed_at).to_json()
            try:
                await self.client.post(peer, RESERVATIONS_PATH, payload)
            except BusError as exc:
                if self.send_errors.get(peer.name) is None:
                    log.info("reservations to %s fail: %s", peer.name, exc.detail)
                self.send_errors[peer.name] = exc.detail
            except Exception:
                log.exception("reservations to %s", peer.name)
            else:
                if self.send_errors.pop(peer.name, None) is not None:
                    log.info("reservations to %s get through again", peer.name)
            if peer.name not in self._again:
                return
            self._again.discard(peer.name)

    # --- in ---------------------------------------------------------------------------------

    def member_event(self, event: MemberEvent) -> None:
        """A membership listener: a heartbeat's table into the ledger (a heartbeat without
        one keeps its sender live); a node up or down settles the shares at once."""
        if event.node == self.node:
            return
        if event.kind is not MemberEventKind.HEARD:
            self._settled(event.at)
            return
        raw = None if event.heartbeat is None else event.heartbeat.extra.get(HEARTBEAT_KIND)
        taken = False
        if raw is not None:
            try:
                publication = Reservations.from_json(raw)
                if publication.node != event.node:
                    raise ValueError(f"{event.node}'s heartbeat carries {publication.node}'s")
            except ValueError as exc:
                if self._refused.get(event.node) != str(exc):
                    log.warning("reservations in %s's heartbeat refused: %s", event.node, exc)
                self._refused[event.node] = str(exc)
            else:
                self._refused.pop(event.node, None)
                taken = self.ledger.receive(publication, event.at)
        if not taken:  # none, or older than a change post already taken
            self.ledger.heard(event.node, event.at)

    async def receive(self, request: SignedRequest) -> dict[str, Any]:
        """The bus handler of :data:`RESERVATIONS_PATH`."""
        try:
            publication = Reservations.from_json(request.json())
        except ValueError as exc:
            raise MessageError(422, f"bad reservations: {exc}") from None
        if publication.node != request.sender:
            raise MessageError(403, "a node publishes only its own reservations")
        taken = self.ledger.receive(publication, self.clock())
        if taken and publication.changed_at is not None:
            self.lags.append(self.wall() - publication.changed_at)
        return {"ok": True, "taken": taken}

    async def state(self, request: SignedRequest) -> dict[str, Any]:
        """The bus handler of ``GET`` :data:`RESERVATIONS_PATH` (see the module)."""
        ledger = self.ledger
        now = self.clock()
        return {
            "node": self.node,
            "whole": ledger.whole(now),
            "live": sorted(ledger.live(now)),
            "members": ledger.members(),
            "accounts": {
                str(account): {
                    "available": str(ledger.available(account, now)),
                    "nodes": [
                        {
                            "node": h.node,
                            "reserved": str(h.holding.reserved),
                            "unconfirmed": str(h.holding.unconfirmed),
                            "live": h.live,
                        }
                        for h in ledger.by_node(account, now)
                    ],
                }
                for account in sorted(ledger.held_accounts())
            },
            "lags": list(self.lags),
            "send_errors": dict(self.send_errors),
        }

    async def close(self) -> None:
        """Stop publishing (the bus and its client are the node's: they stay open)."""
        if self.ledger.accounting.on_change == self.changed:
            self.ledger.accounting.on_change = None
        self.bus.ride(HEARTBEAT_KIND, None)
        with contextlib.suppress(ValueError):
            self.bus.membership.listeners.remove(self.member_event)
        self._loop = None
        tasks = list(self._sending.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
