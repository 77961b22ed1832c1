"""Bus nodes for the tests: a uvicorn server in this process on its own loopback address with
the cluster router, a bus client, a membership table and a heartbeater. ``stop()`` is a node
dying (its server and its heartbeats stop), ``start()`` again a node restarting (a new
process: new heartbeater, new table)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI

from smartswitch.cluster.bus import BusClient, Peer
from smartswitch.cluster.endpoints import cluster_router
from smartswitch.cluster.membership import Heartbeat, Heartbeater, Membership
from smartswitch.cluster.registrations import RegistrationSync
from smartswitch.cluster.signing import Signer, Verifier, derive_key
from smartswitch.registrar.location import LocationService

SECRET = "test-cluster-secret-0123456789"
KEY = derive_key(SECRET)


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def until(condition: Callable[[], bool], within: float, step: float = 0.01) -> float:
    """Seconds until ``condition()`` holds; AssertionError after ``within``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(step)
    return time.monotonic() - start


def sample_heartbeat(node: str, **changes: Any) -> Heartbeat:
    heartbeat = Heartbeat(
        node=node,
        dedicated_ip="10.0.0.12",
        http_address="10.0.0.12:8080",
        sip_address="10.0.0.12:5060",
        alive=True,
        calls=40,
        cps=2.5,
        capacity=500,
        outbox_depth=3,
        version="0.1.0",
        schema="7f3a",
        db_role="replica",
        sent_at=1_700_000_000.5,
        started_at=1_699_999_000.0,
        seq=1,
        extra={"reservations": {"acme": "1.20"}},
    )
    return dataclasses.replace(heartbeat, **changes)


def cluster(count: int, interval: float) -> list[BusNode]:
    """Nodes node1..nodeN on 127.0.0.31.., each knowing all of them."""
    nodes: list[BusNode] = []
    nodes += [
        BusNode(f"node{i}", f"127.0.0.{30 + i}", interval, nodes) for i in range(1, count + 1)
    ]
    return nodes


@contextlib.asynccontextmanager
async def running(nodes: list[BusNode]) -> AsyncIterator[None]:
    """The nodes started, and stopped at the end whatever happened (a node the test stopped
    and did not restart included)."""
    try:
        for node in nodes:
            await node.start()
        yield
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                await node.stop()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # several servers in one test process: no signal handlers


class BusNode:
    def __init__(self, name: str, host: str, interval: float, nodes: list[BusNode]) -> None:
        self.name = name
        self.host = host
        self.port = free_port(host)
        self.interval = interval
        self.nodes = nodes  # the whole cluster, this node included
        self.location = LocationService()
        self.sync_registrations = False
        self.status: dict[str, Any] = {}  # what it answers to /cluster/status beside its name
        self.registrations: RegistrationSync | None = None
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def peer(self) -> Peer:
        return Peer(self.name, f"{self.host}:{self.port}")

    async def peers(self) -> Sequence[Peer]:
        return [node.peer for node in self.nodes]

    def heartbeat(self) -> Heartbeat:
        return sample_heartbeat(
            self.name,
            dedicated_ip=self.host,
            http_address=f"{self.host}:{self.port}",
            sip_address=f"{self.host}:5060",
        )

    async def start(self) -> None:
        self.verifier = Verifier(self.name, KEY)
        self.client = BusClient(Signer(self.name, KEY), timeout=1.0, connect_timeout=0.5)
        self.membership = Membership(interval=self.interval)
        self.heartbeater = Heartbeater(self.membership, self.client, self.heartbeat, self.peers)
        if self.sync_registrations:
            self.registrations = RegistrationSync(
                self.name, self.location, self.peers, self.client, retry=self.interval
            )
        app = FastAPI()
        app.include_router(
            cluster_router(
                self.verifier,
                heartbeater=self.heartbeater,
                status=lambda: {**self.status, "node": self.name},
                registrations=self.registrations,
            )
        )
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_level="warning", lifespan="off"
        )
        self._server = _Server(config)
        self._serving = asyncio.create_task(self._server.serve())
        server = self._server
        await until(lambda: server.started, within=5)
        self.heartbeater.start()
        if self.registrations is not None:
            self.registrations.start()

    async def stop(self) -> None:
        await self.heartbeater.close()
        if self.registrations is not None:
            await self.registrations.close()
            self.location.listeners.remove(self.registrations.on_change)
        assert self._server is not None and self._serving is not None
        self._server.should_exit = True
        await asyncio.wait_for(self._serving, 5)
        await self.client.aclose()

    def sees(self, other: str) -> bool:
        """Whether this node's table has ``other`` up now."""
        return self.membership.node(other, time.monotonic()).up
