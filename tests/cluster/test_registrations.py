"""Registration sync on the cluster bus, between two real servers on 127.0.0.31-32: pulled at
start, pushed at once, caught up after a node was away; only the signer's bindings taken."""

from __future__ import annotations

import asyncio
import time

from smartswitch.cluster.bus import PATHS
from smartswitch.cluster.registrations import binding_to_dict
from smartswitch.registrar.location import Binding, LocationService
from smartswitch.sip.transaction import Address

from .busnet import BusNode, cluster, running, until

INTERVAL = 0.2


def binding(user: str, node: str) -> Binding:
    now = time.time()
    return Binding(
        aor=user,
        contact=f"sip:{user}@192.0.2.10:5060",
        expires_at=now + 3600,
        call_id=f"{user}-call",
        cseq=1,
        source=Address("udp", "192.0.2.10", 5060),
        registered_at=now,
        node=node,
    )


def has(node: BusNode | LocationService, user: str) -> bool:
    location = node.location if isinstance(node, BusNode) else node
    return bool(location.lookup(user, time.time()))


def test_bindings_cross_the_bus_both_ways_and_catch_up_after_an_absence() -> None:
    async def scenario() -> None:
        nodes = cluster(2, INTERVAL)
        a, b = nodes
        for node in nodes:
            node.sync_registrations = True
        a.location.apply(binding("alice", "node1"))  # taken before the cluster saw it
        async with running(nodes):
            await until(lambda: has(b, "alice"), within=3)  # b pulled it at start

            a.location.apply(binding("bob", "node1"))
            await until(lambda: has(b, "bob"), within=2)  # pushed at once
            b.location.apply(binding("carol", "node2"))
            await until(lambda: has(a, "carol"), within=2)

            # A node pushes only its own bindings: one of node1's sent by node2 is ignored.
            spoofed = {"kind": "set", "binding": binding_to_dict(binding("mallory", "node1"))}
            answer = await b.client.post(
                a.peer, PATHS.registrations, {"node": "node2", "changes": [spoofed]}
            )
            assert answer == {"applied": 0}
            assert not has(a, "mallory")

            await b.stop()
            a.location.apply(binding("dave", "node1"))  # the push to b fails
            sync = a.registrations
            assert sync is not None
            await until(lambda: "node2" in sync.behind, within=3)
            await b.start()
            await until(lambda: has(b, "dave") and not sync.behind, within=3)
            assert all(sum(n.verifier.refused.values()) == 0 for n in nodes)

    asyncio.run(scenario())


def test_until_the_bus_is_wired_the_sync_still_speaks_the_bearer_token() -> None:
    """Transitional (goes with nodes.status_token): a RegistrationSync given the token, as
    runtime/node.py builds it today, against today's web/cluster.py endpoints."""
    from types import SimpleNamespace

    import uvicorn
    from fastapi import FastAPI

    from smartswitch.cluster.nodes import status_token
    from smartswitch.cluster.registrations import RegistrationSync
    from smartswitch.web.cluster import cluster_router

    from .busnet import SECRET, _Server, free_port

    async def scenario() -> None:
        theirs, ours = LocationService(), LocationService()
        theirs.apply(binding("alice", "node2"))
        their_sync = SimpleNamespace(
            node_name="node2", own_bindings=lambda: list(theirs.bindings())
        )
        node = SimpleNamespace(
            config=SimpleNamespace(cluster_secret=SECRET),
            services=SimpleNamespace(registrar=SimpleNamespace(location=theirs)),
            registration_sync=their_sync,
        )
        app = FastAPI()
        app.include_router(cluster_router(node))
        port = free_port("127.0.0.32")
        server = _Server(
            uvicorn.Config(app, host="127.0.0.32", port=port, log_level="warning", lifespan="off")
        )
        serving = asyncio.create_task(server.serve())

        async def peers() -> list[tuple[str, str]]:
            return [("node1", "127.0.0.31:9"), ("node2", f"127.0.0.32:{port}")]

        sync = RegistrationSync("node1", ours, peers, status_token(SECRET), retry=INTERVAL)
        try:
            await until(lambda: server.started, within=5)
            sync.start()
            await until(lambda: has(ours, "alice"), within=3)  # pulled
            ours.apply(binding("bob", "node1"))
            await until(lambda: bool(theirs.lookup("bob", time.time())), within=3)  # pushed
        finally:
            await sync.close()
            server.should_exit = True
            await asyncio.wait_for(serving, 5)

    asyncio.run(scenario())
