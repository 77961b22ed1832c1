"""Money across nodes, the asyncio side: this node's holdings out on the signed cluster bus, the
others' in, into the :class:`~smartswitch.billing.reservations.ClusterLedger` the call path
grants against.

* **Out.** Every change to what this node holds of an account (a call granted or extended,
  a call ended, a charge confirmed) schedules one publication for the next turn of the loop:
  the changes of one turn go out together (coalesced). Each peer has at most one request in
  flight; a change meanwhile is sent when it returns, the latest table only. Every
  ``interval`` (the heartbeat's, 1 s) the table goes out again whether or not it changed: it is
  also how the others know this node is there (:attr:`ClusterLedger.stale_after`).
* **In.** ``POST /cluster/reservations`` (signed; :func:`~smartswitch.cluster.endpoints.bus_router`)
  takes a peer's :class:`~smartswitch.billing.reservations.Reservations`; a node may publish
  only its own. ``GET /cluster/reservations`` (signed) answers what this node sees: the nodes
  live, whether the cluster is whole, every account some node holds money of, and how long
  the last changes took to arrive here (the publisher's change time to our receipt, on one
  host's clock: what ``bench/money.py`` reports).

In the node (``Node._start_money``) it rides on the node's :class:`~smartswitch.cluster.nodebus.NodeBus`:
its two handlers (:attr:`MoneyBus.routes`) are served among the node's bus routes
(``cluster_router(extra=...)``), it sends with the node's one client (from the node's dedicated
IP) and the node's verifier checks what it receives; the membership's HEARD events call
:meth:`ClusterLedger.heard` (:meth:`MoneyBus.member_event`). Alone (tests), given no client and
verifier, it makes its own from the cluster secret and serves :attr:`MoneyBus.router`. What is
not reconciled yet: docs/money.md, "Merging with the bus wiring".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Container
from typing import Any

import httpx
from fastapi import APIRouter

from smartswitch.billing.reservations import ClusterLedger, Reservations
from smartswitch.cluster.bus import PATHS, BusClient, BusError, MessageError, Peer, Peers
from smartswitch.cluster.endpoints import Handler, bus_router
from smartswitch.cluster.membership import MemberEvent, MemberEventKind
from smartswitch.cluster.signing import SignedRequest, Signer, Verifier, derive_key

__all__ = ["RESERVATIONS_PATH", "MoneyBus"]

log = logging.getLogger("smartswitch.runtime.money")

RESERVATIONS_PATH = PATHS.reservations
"""Where holdings are posted (``GET``: what a node sees)."""


class MoneyBus:
    """Publishes this node's holdings and takes the others' (see the module)."""

    def __init__(
        self,
        ledger: ClusterLedger,
        cluster_secret: str,
        peers: Peers,
        *,
        interval: float = 1.0,
        refresh: float = 5.0,
        timeout: float = 2.0,
        local_address: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        client: BusClient | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        if not cluster_secret:
            raise ValueError("money across nodes needs the cluster secret")
        key = derive_key(cluster_secret)
        self.ledger = ledger
        self.node = ledger.node
        self.peers_source = peers
        self.interval = interval
        self.refresh = refresh
        self.timeout = timeout
        self.clock = clock
        self.wall = wall
        self.epoch = wall()
        self._members: set[str] = set()
        # The node's client and verifier when given (one nonce cache, one connection pool per
        # peer; the node closes its client); else our own (from the dedicated IP when given:
        # the bus is traffic between the nodes' addresses, how a test cuts one node off).
        self._own_client = client is None
        if client is None:
            transport = (
                httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
            )
            client = BusClient(
                Signer(self.node, key), timeout=timeout, clock=wall, transport=transport
            )
        self.client = client
        self.verifier = verifier or Verifier(self.node, key, members=self._member_names)
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", RESERVATIONS_PATH): self.receive,
            ("GET", RESERVATIONS_PATH): self.state,
        }
        self.router: APIRouter = bus_router(self.verifier, self.routes, clock=wall)
        self.peers: list[Peer] = []
        self.send_errors: dict[str, str] = {}
        self.published = 0  # publications made (each to every peer)
        self._seq = 0
        self._scheduled = False
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        # Per peer, the wall time of the earliest change not yet sent to it.
        self._unsent: dict[str, float] = {}
        # Seconds from a publisher's change to its arrival here, the latest ones.
        self.lags: deque[float] = deque(maxlen=10_000)
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _member_names(self) -> Container[str]:
        # Before the nodes table is read, any signed sender (the key already proves it is one
        # of ours); after, only the listed nodes.
        return self._members if self._members else _Anyone()

    # --- out --------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.ledger.accounting.on_change = self.changed
        self._task = asyncio.create_task(self._run(), name="money-bus")

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

    async def refresh_peers(self) -> None:
        try:
            nodes = await asyncio.wait_for(self.peers_source(), self.refresh)
        except Exception as exc:
            log.info("cluster nodes not refreshed, keeping the last list: %s", exc)
            return
        self.peers = [Peer(*p) for p in nodes if p[0] != self.node]
        self._members = {self.node, *(p.name for p in self.peers)}
        self.ledger.expect(self._members, self.clock())

    async def _run(self) -> None:
        await self.refresh_peers()
        next_refresh = self.clock() + self.refresh
        live = self.ledger.live(self.clock())
        while True:
            now = self.clock()
            refreshing = self._refreshing
            if now >= next_refresh and (refreshing is None or refreshing.done()):
                # In a task of its own: a slow database read must never hold up the
                # publication the others take as this node's sign of life.
                self._refreshing = asyncio.create_task(self.refresh_peers(), name="money-peers")
                next_refresh = now + self.refresh
            try:
                self.publish()
                self.ledger.settle(now)
                seen = self.ledger.live(now)
                if seen != live:
                    log.info(
                        "money: nodes heard %s of %s%s",
                        ", ".join(sorted(seen)),
                        ", ".join(self.ledger.members()),
                        "" if self.ledger.whole(now) else ": keeping to this group's share",
                    )
                    live = seen
            except Exception:
                log.exception("reservations not published")
            await asyncio.sleep(self.interval)

    # --- in ---------------------------------------------------------------------------------

    def member_event(self, event: MemberEvent) -> None:
        """A membership listener: a node heard by heartbeat is live for the ledger too."""
        if event.kind is MemberEventKind.HEARD and event.node != self.node:
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
        if self.ledger.accounting.on_change == self.changed:
            self.ledger.accounting.on_change = None
        tasks = [
            t for t in (self._task, self._refreshing, *self._sending.values()) if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_client:
            await self.client.aclose()


class _Anyone:
    def __contains__(self, name: object) -> bool:
        return True
