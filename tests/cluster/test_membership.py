"""Heartbeats and membership: the table on a virtual clock, the heartbeater with a fake bus,
then three real servers on 127.0.0.31-33 whose heartbeats see one of them die and return."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest

from smartswitch.cluster.bus import PATHS, BusClient, MessageError, Peer
from smartswitch.cluster.membership import (
    Heartbeat,
    Heartbeater,
    MemberEvent,
    MemberEventKind,
    Membership,
)
from smartswitch.cluster.signing import HEADER_SIGNATURE, Refusal, SignedRequest, Signer

from .busnet import KEY, cluster, running, sample_heartbeat, until

UP, DOWN, HEARD = MemberEventKind.UP, MemberEventKind.DOWN, MemberEventKind.HEARD


def beat(node: str = "node2", seq: int = 1, **changes: Any) -> Heartbeat:
    return sample_heartbeat(node, seq=seq, **changes)


# --- the message ------------------------------------------------------------------------------


def test_heartbeat_json_round_trip() -> None:
    heartbeat = beat()
    data = heartbeat.to_json()
    assert data["v"] == 1
    assert data["extra"] == {"reservations": {"acme": "1.20"}}
    assert Heartbeat.from_json(data) == heartbeat
    assert heartbeat.free == 460


def test_a_heartbeat_from_a_newer_node_with_more_fields_is_read() -> None:
    data = {**beat().to_json(), "vip": "held", "cps": 3}  # an int where a float is expected
    assert Heartbeat.from_json(data).cps == 3.0


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"calls": "40"}, "calls"),
        ({"alive": 1}, "alive"),
        ({"capacity": True}, "capacity"),
        ({"node": None}, "node"),
        ({"extra": []}, "extra"),
        ({"v": 2}, "version"),
    ],
)
def test_a_heartbeat_that_cannot_be_read_is_refused(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Heartbeat.from_json({**beat().to_json(), **change})
    with pytest.raises(ValueError):
        Heartbeat.from_json([1, 2])


# --- the table, on a virtual clock ----------------------------------------------------------


def recorder(membership: Membership) -> list[tuple[MemberEventKind, str, float]]:
    events: list[tuple[MemberEventKind, str, float]] = []

    def listen(event: MemberEvent) -> None:
        events.append((event.kind, event.node, event.at))

    membership.listeners.append(listen)
    return events


def test_a_node_is_down_after_three_missed_intervals_and_up_again_at_once() -> None:
    membership = Membership()  # 1 s, 3 misses
    events = recorder(membership)
    membership.expect(["node1", "node2"])
    assert [(s.node, s.up, s.age) for s in membership.state(0.0)] == [
        ("node1", False, None),
        ("node2", False, None),
    ]
    for second in range(3):
        membership.heard(beat(seq=second + 1), float(second))
        membership.tick(float(second))
    assert events == [
        (UP, "node2", 0.0),
        (HEARD, "node2", 0.0),
        (HEARD, "node2", 1.0),
        (HEARD, "node2", 2.0),
    ]
    assert membership.next_deadline() == 5.0
    membership.tick(5.0)  # three intervals missed, not yet more
    assert membership.node("node2", 5.0).up
    membership.tick(5.01)
    assert not membership.node("node2", 5.01).up
    assert membership.node("node2", 5.01).age == pytest.approx(3.01)
    membership.tick(6.0)  # down once, not again
    assert [e for e in events if e[0] is DOWN] == [(DOWN, "node2", 5.01)]
    assert membership.next_deadline() is None
    membership.heard(beat(seq=4), 9.0)
    assert membership.node("node2", 9.0).up
    assert events[-2:] == [(UP, "node2", 9.0), (HEARD, "node2", 9.0)]
    assert membership.up(9.0) == [beat(seq=4)]


def test_the_table_is_right_even_between_ticks() -> None:
    membership = Membership(interval=0.2)
    membership.heard(beat(), 10.0)
    assert membership.node("node2", 10.6).up
    assert not membership.node("node2", 10.61).up  # state() needs no tick


def test_a_node_that_says_it_is_not_alive_is_down_at_once() -> None:
    membership = Membership()
    events = recorder(membership)
    membership.heard(beat(seq=1), 0.0)
    membership.heard(beat(seq=2, alive=False), 0.5)
    state = membership.node("node2", 0.5)
    assert (state.up, state.reachable) == (False, True)
    assert [e[0] for e in events] == [UP, HEARD, DOWN, HEARD]
    assert membership.up(0.5) == []


def test_an_overtaken_heartbeat_does_not_replace_a_newer_one_but_a_restart_does() -> None:
    membership = Membership()
    membership.heard(beat(seq=5, calls=50), 0.0)
    membership.heard(beat(seq=4, calls=40), 0.1)  # arrived late
    assert membership.node("node2", 0.1).heartbeat == beat(seq=5, calls=50)
    membership.heard(beat(seq=1, calls=0, started_at=1_700_000_100.0), 0.2)  # restarted
    heartbeat = membership.node("node2", 0.2).heartbeat
    assert heartbeat is not None and heartbeat.calls == 0


def test_a_failing_listener_does_not_stop_the_table() -> None:
    membership = Membership()

    def broken(event: MemberEvent) -> None:
        raise RuntimeError("listener bug")

    membership.listeners.append(broken)
    events = recorder(membership)
    membership.heard(beat(), 0.0)
    assert [e[0] for e in events] == [UP, HEARD]


# --- the heartbeater, with a fake bus ---------------------------------------------------------


class FakeBus:
    """Records heartbeats; ``hang`` names peers that never answer."""

    node = "node1"

    def __init__(self, hang: set[str]) -> None:
        self.hang = hang
        self.sent: list[tuple[str, float]] = []
        self.alive: list[tuple[str, bool]] = []

    async def post(self, peer: Peer, path: str, payload: Any, *, timeout: float | None) -> Any:
        assert path == PATHS.heartbeat
        self.sent.append((peer.name, time.monotonic()))
        self.alive.append((peer.name, payload["alive"]))
        if peer.name in self.hang:
            await asyncio.sleep(3600)
        return {"ok": True}


def own() -> Heartbeat:
    return beat(node="node1")


def test_a_dead_peer_never_delays_the_others_nor_piles_up_requests() -> None:
    bus = FakeBus(hang={"node3"})
    asked = 0

    async def peers() -> list[Peer]:
        nonlocal asked
        asked += 1
        if asked > 1:
            raise OSError("database away")  # the last list is kept
        return [Peer("node1", "a:1"), Peer("node2", "b:1"), Peer("node3", "c:1")]

    async def scenario() -> None:
        membership = Membership(interval=0.05)
        heartbeater = Heartbeater(
            membership, cast(BusClient, bus), own, peers, timeout=10, refresh=0.1
        )
        heartbeater.start()
        try:
            await until(lambda: sum(1 for p, _ in bus.sent if p == "node2") >= 8, within=3)
            assert asked >= 2
        finally:
            await heartbeater.close()
        to_node2 = [t for p, t in bus.sent if p == "node2"]
        gaps = [b - a for a, b in itertools.pairwise(to_node2)]
        assert max(gaps) < 0.25  # on time (0.05 s), with node3 hanging all along
        assert [p for p, _ in bus.sent].count("node3") == 1  # one in flight, never a queue
        assert "node1" not in [p for p, _ in bus.sent]  # not to itself ...
        assert membership.node("node1", time.monotonic()).up  # ... but in its own table
        assert membership.node("node3", time.monotonic()).heartbeat is None

    asyncio.run(scenario())


def test_a_node_stopped_on_purpose_says_farewell() -> None:
    bus = FakeBus(hang=set())

    async def peers() -> list[Peer]:
        return [Peer("node2", "b:1"), Peer("node3", "c:1")]

    async def scenario() -> Membership:
        membership = Membership(interval=0.05)
        heartbeater = Heartbeater(membership, cast(BusClient, bus), own, peers)
        heartbeater.start()
        await until(lambda: len(bus.sent) >= 2, within=3)
        await heartbeater.close(farewell=True)
        return membership

    membership = asyncio.run(scenario())
    assert sorted(bus.alive[-2:]) == [("node2", False), ("node3", False)]
    assert all(alive for _, alive in bus.alive[:-2])
    assert not membership.node("node1", time.monotonic()).up


def test_the_heartbeat_handler_takes_only_a_nodes_own_heartbeat() -> None:
    async def no_peers() -> list[Peer]:
        return []

    membership = Membership()
    heartbeater = Heartbeater(membership, cast(BusClient, FakeBus(set())), own, no_peers)

    def request(sender: str, body: bytes) -> SignedRequest:
        return SignedRequest("POST", PATHS.heartbeat, sender, 0, "0" * 32, body)

    async def scenario() -> None:
        good = json.dumps(beat().to_json()).encode()
        assert await heartbeater.receive(request("node2", good)) == {"ok": True}
        for sender, body, status in (("node3", good, 403), ("node2", b'{"v":1}', 422)):
            with pytest.raises(MessageError) as caught:
                await heartbeater.receive(request(sender, body))
            assert caught.value.status == status

    asyncio.run(scenario())
    assert [s.node for s in membership.state(time.monotonic())] == ["node2"]


# --- three real servers -----------------------------------------------------------------------

INTERVAL = 0.2


def test_three_nodes_see_one_die_and_come_back() -> None:
    async def scenario() -> None:
        nodes = cluster(3, INTERVAL)
        a, b, c = nodes
        events: list[tuple[str, MemberEventKind, str]] = []
        async with running(nodes):

            def watch(seer: str) -> Callable[[MemberEvent], None]:
                def record(event: MemberEvent) -> None:
                    if event.kind is not HEARD:
                        events.append((seer, event.kind, event.node))

                return record

            for node in (a, b):
                node.membership.listeners.append(watch(node.name))
            await until(lambda: all(n.sees(m.name) for n in nodes for m in nodes), within=3)
            events.clear()
            seen = a.membership.node("node3", time.monotonic()).heartbeat
            assert seen is not None and seen.http_address == c.peer.address

            dying = time.monotonic()
            await c.stop()
            await until(lambda: not a.sees("node3") and not b.sees("node3"), within=3)
            took = time.monotonic() - dying
            # Its last heartbeat left at most one interval before it stopped: down 2 to 3
            # intervals after, plus the scheduling margin.
            assert INTERVAL < took < 3 * INTERVAL + 0.5, took

            await c.start()
            took = await until(lambda: a.sees("node3") and b.sees("node3"), within=3)
            assert took < 2 * INTERVAL + 0.3, took
            await until(lambda: c.sees("node1") and c.sees("node2"), within=3)
            for seer in ("node1", "node2"):
                assert [k for s, k, n in events if (s, n) == (seer, "node3")] == [DOWN, UP]
            for node in nodes:
                assert sum(node.verifier.refused.values()) == 0
                assert node.heartbeater.send_errors.keys() <= {"node3"}

    asyncio.run(scenario())


def test_forged_stale_and_replayed_requests_over_http_get_401() -> None:
    async def scenario() -> None:
        nodes = cluster(1, INTERVAL)
        (a,) = nodes
        url = f"http://{a.peer.address}{PATHS.heartbeat}"
        body = b"{}"
        async with running(nodes), httpx.AsyncClient(trust_env=False) as http:
            signer = Signer("node2", KEY)
            good = signer.sign("POST", PATHS.heartbeat, body, "node1", time.time())
            first = await http.post(url, content=body, headers=good)
            again = await http.post(url, content=body, headers=good)
            forged = {**good, HEADER_SIGNATURE: "0" * 64}
            forged_answer = await http.post(url, content=body, headers=forged)
            old = signer.sign("POST", PATHS.heartbeat, body, "node1", time.time() - 31)
            stale = await http.post(url, content=body, headers=old)
            unsigned = await http.post(url, content=body)
            members = await a.client.get(a.peer, PATHS.members)  # signed to itself
        assert first.status_code == 422  # signed, but not a heartbeat: reached the handler
        for response, reason in (
            (again, "replayed"),
            (forged_answer, "forged"),
            (stale, "stale"),
            (unsigned, "missing"),
        ):
            assert (response.status_code, response.json()) == (401, {"detail": reason})
        assert a.verifier.refused == {
            Refusal.REPLAYED: 1,
            Refusal.FORGED: 1,
            Refusal.STALE: 1,
            Refusal.MISSING: 1,
        }
        assert [m["node"] for m in members["members"]] == ["node1"]

    asyncio.run(scenario())
