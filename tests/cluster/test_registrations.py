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
