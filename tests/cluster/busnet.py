"""Bus nodes for the tests: a uvicorn server in this process on its own loopback address with
the cluster router, a bus client, a membership table and a heartbeater. ``stop()`` is a node
dying (its server and its heartbeats stop), ``start()`` again a node restarting (a new
process: new heartbeater, new table)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Generator, Sequence

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
        self.registrations: RegistrationSync | None = None
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def peer(self) -> Peer:
        return Peer(self.name, f"{self.host}:{self.port}")

    async def peers(self) -> Sequence[Peer]:
        return [node.peer for node in self.nodes]

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            node=self.name,
            dedicated_ip=self.host,
            http_address=f"{self.host}:{self.port}",
            sip_address=f"{self.host}:5060",
            alive=True,
            calls=3,
            cps=1.5,
            capacity=100,
            outbox_depth=0,
            version="test",
            schema="head",
            db_role="replica",
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
                status=lambda: {"node": self.name},
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
