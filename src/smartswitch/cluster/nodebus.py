"""One node's end of the cluster bus, built once from its name and the cluster secret.

The runtime makes a :class:`NodeBus` for a cluster node (a database scheme other than
``single`` and a cluster secret) and hands it to the web side, which mounts its routes
(:meth:`NodeBus.router`) on the node's HTTP server (its ``http_listen``, on the dedicated IP)
and reads its table for ``/metrics``, the Cluster page and ``smartswitch cluster status``.
Every node-to-node request goes through :attr:`NodeBus.client`: heartbeats, registration
sync, status reads. Figures of other kinds ride on every heartbeat (:meth:`NodeBus.ride`, in
``Heartbeat.extra``): money's reservations, one message a beat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from fastapi import APIRouter

from smartswitch.cluster.bus import PATHS, BusClient, Peer, Peers
from smartswitch.cluster.endpoints import Handler, Status, cluster_router, metrics_text
from smartswitch.cluster.guardsync import GUARD_PATH, GuardPort, GuardSync
from smartswitch.cluster.membership import Heartbeat, Heartbeater, Membership, NodeState
from smartswitch.cluster.nodes import ask_status
from smartswitch.cluster.registrations import RegistrationSync
from smartswitch.cluster.signing import Signer, Verifier, derive_key
from smartswitch.registrar.location import LocationService

__all__ = ["NodeBus"]

log = logging.getLogger("smartswitch.cluster.nodebus")

# What cluster_router serves itself (a handler of ``extra`` must not replace one).
_OWN_ROUTES = frozenset(
    {
        ("POST", PATHS.heartbeat),
        ("GET", PATHS.members),
        ("GET", PATHS.status),
        ("GET", PATHS.registrations),
        ("POST", PATHS.registrations),
    }
)


class NodeBus:
    """The verifier of requests to this node, the client of its requests to the others, the
    membership table its heartbeats feed, and (with ``location``) its registration sync.

    ``own()`` gives this node's heartbeat figures; ``peers()`` the cluster's nodes as (name,
    bus address) pairs, read from the ``nodes`` table. Nothing runs before :meth:`start`.
    """

    def __init__(
        self,
        name: str,
        cluster_secret: str,
        own: Callable[[], Heartbeat],
        peers: Peers,
        *,
        location: LocationService | None = None,
        guard: GuardPort | None = None,
        interval: float = 1.0,
        misses: int = 3,
        timeout: float = 2.0,
        local_address: str | None = None,
    ) -> None:
        key = derive_key(cluster_secret)
        self.name = name
        self.peers = peers
        self.verifier = Verifier(name, key)
        # From the node's dedicated IP when given: bus traffic is between the nodes'
        # addresses (what a firewall between them allows, and how a test cuts one node off).
        transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
        self.client = BusClient(Signer(name, key), timeout=timeout, transport=transport)
        self.extra: dict[tuple[str, str], Handler] = {}
        self.own = own
        self.riders: dict[str, Callable[[], Any]] = {}
        """Per kind, what adds its figures to each heartbeat (:meth:`ride`)."""
        self.membership = Membership(interval, misses)
        self.heartbeater = Heartbeater(self.membership, self.client, self.heartbeat, peers)
        self.registrations = (
            None if location is None else RegistrationSync(name, location, peers, self.client)
        )
        self._registrations_started = False
        # Failed digest answers and new trusts shared with the other nodes (issue 14).
        self.guard_sync = None if guard is None else GuardSync(name, guard, peers, self.client)
        self.metric_sources: list[Callable[[], str]] = []
        """More ``/metrics`` lines from the node's cluster parts (the dispatcher, its gate)."""

    def serve(self, routes: Mapping[tuple[str, str], Handler]) -> None:
        """More message kinds on this node's bus routes (money's reservations); before
        :meth:`router` is asked. A route the bus already has is refused."""
        taken = _OWN_ROUTES | set(self.extra)
        clash = sorted(f"{m} {p}" for m, p in routes if (m, p) in taken)
        if clash:
            raise ValueError(f"bus routes served already: {', '.join(clash)}")
        self.extra.update(routes)

    def ride(self, kind: str, figures: Callable[[], Any] | None) -> None:
        """``figures()`` (a JSON value) goes in every heartbeat from now on, under
        ``extra[kind]``: asked once a beat, as the heartbeat is made, and sent to every peer
        with it (the receivers find it in the membership's events). None stops it."""
        if figures is None:
            self.riders.pop(kind, None)
        else:
            self.riders[kind] = figures

    def heartbeat(self) -> Heartbeat:
        """This node's heartbeat as sent: ``own()`` with every rider's figures."""
        heartbeat = self.own()
        if not self.riders:
            return heartbeat
        extra = dict(heartbeat.extra)
        for kind, figures in self.riders.items():
            try:
                extra[kind] = figures()
            except Exception:
                # The heartbeat is the node's sign of life: it goes without this kind.
                log.exception("%s left out of the heartbeat", kind)
        return dataclasses.replace(heartbeat, extra=extra)

    def router(self, status: Status) -> APIRouter:
        """The bus routes (``/cluster/...``), every one verified; ``status`` answers
        ``GET /cluster/status``."""
        extra: dict[tuple[str, str], Handler] = {}
        if self.guard_sync is not None:
            extra[("POST", GUARD_PATH)] = self.guard_sync.take
        return cluster_router(
            self.verifier,
            heartbeater=self.heartbeater,
            status=status,
            registrations=self.registrations,
            extra={**extra, **self.extra},
        )

    def start(self) -> None:
        """Heartbeats every interval, and guard events, from now on (the routes must be
        served already)."""
        self.heartbeater.start()
        if self.guard_sync is not None:
            self.guard_sync.start()

    def start_registrations(self) -> None:
        """Push and pull registrations (once this node is in the ``nodes`` table)."""
        if self.registrations is not None and not self._registrations_started:
            self._registrations_started = True
            self.registrations.start()

    async def close(self) -> None:
        """A farewell heartbeat (the others see this node down at once), then stop."""
        await self.heartbeater.close(farewell=True)
        if self.guard_sync is not None:
            await self.guard_sync.close()
        if self.registrations is not None and self._registrations_started:
            await self.registrations.close()
        await self.client.aclose()

    def members(self, now: float | None = None) -> list[NodeState]:
        """Every node of the table (configured or heard), with its latest heartbeat."""
        return self.membership.state(time.monotonic() if now is None else now)

    def metrics(self) -> str:
        """The bus's lines for ``/metrics``: refusals by reason, nonces, nodes up."""
        text = metrics_text(self.verifier, self.membership)
        return text + "".join(source() for source in self.metric_sources)

    async def statuses(
        self, peers: list[Peer], timeout: float = 1.0
    ) -> dict[str, Mapping[str, Any]]:
        """Each of ``peers``' own account of itself (``GET /cluster/status``, signed), asked
        at once; a peer that does not answer is marked unreachable with the reason."""
        answers = await asyncio.gather(*(ask_status(self.client, p, timeout) for p in peers))
        return {peer.name: answer for peer, answer in zip(peers, answers, strict=True)}
