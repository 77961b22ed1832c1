"""Money across nodes over real HTTP: three nodes' MoneyBus on their own loopback addresses,
each with its uvicorn server. A reservation on one node reaches the others' ledgers within
milliseconds; a node whose route is gone turns missing and the others keep to their share;
forged or misattributed publications are refused."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from decimal import Decimal

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from cluster.busnet import free_port, until
from smartswitch.billing.accounting import Accounting
from smartswitch.billing.reservations import ClusterLedger, Holding, Reservations
from smartswitch.cluster.bus import PATHS, BusClient, MessageError, Peer, PeerFailed, PeerRefused
from smartswitch.cluster.membership import Heartbeat, MemberEvent, MemberEventKind
from smartswitch.cluster.nodebus import NodeBus
from smartswitch.cluster.signing import SignedRequest, Signer, derive_key
from smartswitch.model.config import Account
from smartswitch.runtime.money import RESERVATIONS_PATH, MoneyBus

SECRET = "test-cluster-secret-0123456789"
ACME = 1
D = Decimal


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class MoneyNode:
    def __init__(self, name: str, host: str, nodes: list[MoneyNode]) -> None:
        self.name, self.host, self.port = name, host, free_port(host)
        self.nodes = nodes
        self.accounting = Accounting()
        self.accounting.load({ACME: Account(ACME, "acme", "USD", D("1.0000"), D(0))})
        self.ledger = ClusterLedger(name, self.accounting, stale_after=0.6)
        self.accepting = True

    async def peers(self) -> list[tuple[str, str]]:
        return [(n.name, f"{n.host}:{n.port}") for n in self.nodes]

    async def start(self) -> None:
        self.bus = MoneyBus(
            self.ledger, SECRET, self.peers, interval=0.2, timeout=0.5, local_address=self.host
        )
        app = FastAPI()

        @app.middleware("http")
        async def drop(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if not self.accepting:  # the bus cut: nothing gets through to this node
                return Response(status_code=503)
            return await call_next(request)

        app.include_router(self.bus.router)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="error")
        self.server = _Server(config)
        self.serving = asyncio.create_task(self.server.serve())
        server = self.server
        await until(lambda: server.started, within=5)
        self.bus.start()

    async def stop(self) -> None:
        await self.bus.close()
        self.server.should_exit = True
        await asyncio.wait_for(self.serving, 5)


@contextlib.asynccontextmanager
async def three() -> AsyncIterator[list[MoneyNode]]:
    nodes: list[MoneyNode] = []
    nodes += [MoneyNode(f"n{i}", f"127.0.0.{60 + i}", nodes) for i in (1, 2, 3)]
    try:
        for node in nodes:
            await node.start()
        yield nodes
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                await node.stop()


def _now() -> float:
    return time.monotonic()


def test_a_reservation_is_seen_by_the_others_at_once() -> None:
    asyncio.run(_a_reservation_is_seen_by_the_others_at_once())


async def _a_reservation_is_seen_by_the_others_at_once() -> None:
    async with three() as nodes:
        n1, n2, n3 = nodes
        await until(lambda: all(n.ledger.whole(_now()) for n in nodes), within=5)
        n1.accounting.reserve(ACME, D("0.3000"))
        await until(
            lambda: all(n.ledger.available(ACME, _now()) == D("0.7000") for n in (n2, n3)),
            within=2,
            step=0.001,
        )
        # Many changes in one turn of the loop: coalesced, and the last table wins.
        before = n1.bus.published
        for _ in range(100):
            n1.accounting.reserve(ACME, D("0.0010"))
        n1.accounting.release(ACME, D("0.1000"))
        await asyncio.sleep(0)  # one turn of the loop: one publication for the 101 changes
        assert n1.bus.published - before <= 2  # (the periodic one may fall in the same turn)
        await until(lambda: n2.ledger.available(ACME, _now()) == D("0.7000"), within=2)
        assert n2.bus.lags and all(0 <= lag < 5 for lag in n2.bus.lags)
        client = BusClient(Signer("n3", derive_key(SECRET)), timeout=1)
        try:
            state = await client.get(Peer("n2", f"{n2.host}:{n2.port}"), RESERVATIONS_PATH)
        finally:
            await client.aclose()
        assert state["whole"] is True and state["live"] == ["n1", "n2", "n3"]
        nodes = state["accounts"][str(ACME)]["nodes"]
        assert [(n["node"], n["reserved"]) for n in nodes] == [
            ("n2", "0"),
            ("n1", "0.3000"),
            ("n3", "0"),
        ]
        assert state["accounts"][str(ACME)]["available"] == "0.7000"


def test_a_node_cut_off_turns_missing_and_shares_apply_until_it_heals() -> None:
    asyncio.run(_a_node_cut_off_turns_missing_and_shares_apply_until_it_heals())


async def _a_node_cut_off_turns_missing_and_shares_apply_until_it_heals() -> None:
    async with three() as nodes:
        n1, n3 = nodes[0], nodes[2]
        await until(lambda: all(n.ledger.whole(_now()) for n in nodes), within=5)
        n3.accepting = False  # n3 hears nobody; the others' sends to it fail
        # n3 still sends to the others: cut both ways by making it unable to reach them too.
        n3.bus.peers = []
        n3_refresh = n3.bus.refresh_peers

        async def no_refresh() -> None:
            return None

        n3.bus.refresh_peers = no_refresh  # type: ignore[method-assign]
        await until(
            lambda: n1.ledger.live(_now()) == {"n1", "n2"} and n3.ledger.live(_now()) == {"n3"}, 5
        )
        n1.ledger.settle(_now())
        n3.ledger.settle(_now())
        assert n1.ledger.available(ACME, _now()) == D("0.6666")
        assert n3.ledger.available(ACME, _now()) == D("0.3333")
        n3.accepting = True
        n3.bus.refresh_peers = n3_refresh  # type: ignore[method-assign]
        await n3_refresh()
        await until(lambda: all(n.ledger.whole(_now()) for n in nodes), within=5)
        assert n3.ledger.available(ACME, _now()) == D("1.0000")


def test_forged_and_misattributed_publications_are_refused() -> None:
    asyncio.run(_forged_and_misattributed_publications_are_refused())


async def _forged_and_misattributed_publications_are_refused() -> None:
    async with three() as nodes:
        n1 = nodes[0]
        target = Peer("n1", f"{n1.host}:{n1.port}")
        wrong = BusClient(Signer("n2", derive_key("another-secret-0123456789")), timeout=1)
        right = BusClient(Signer("n2", derive_key(SECRET)), timeout=1)
        try:
            lie = Reservations("n3", 1.0, 99, {ACME: _holding("0.9000")}).to_json()
            with pytest.raises(PeerRefused):
                await wrong.post(target, RESERVATIONS_PATH, lie)
            with pytest.raises(PeerFailed) as failed:
                await right.post(target, RESERVATIONS_PATH, lie)  # n2 speaking for n3
            assert failed.value.status == 403
            with pytest.raises(PeerFailed) as failed:
                await right.post(target, RESERVATIONS_PATH, {"v": 1, "node": "n2"})
            assert failed.value.status == 422
        finally:
            await wrong.aclose()
            await right.aclose()
        assert n1.ledger.holding("n3", ACME).total == 0


def _holding(amount: str) -> Holding:
    return Holding(D(amount), D(0))


def test_the_handler_refuses_bad_json_as_422() -> None:
    accounting = Accounting()
    bus = MoneyBus(ClusterLedger("n1", accounting), SECRET, _no_peers)
    request = SignedRequest("POST", RESERVATIONS_PATH, "n2", 0, "x", b"{not json")
    with pytest.raises(MessageError):
        asyncio.run(bus.receive(request))
    with pytest.raises(ValueError):
        MoneyBus(ClusterLedger("n1", accounting), "", _no_peers)


async def _no_peers() -> list[tuple[str, str]]:
    return []


def test_money_on_the_node_bus_is_served_among_its_routes() -> None:
    asyncio.run(_money_on_the_node_bus())


async def _money_on_the_node_bus() -> None:
    """How the node runs it: the handlers in the NodeBus's cluster router, the node's client
    and verifier, the membership's HEARD events keeping a publisher live."""
    node_bus = NodeBus("n2", SECRET, _never, _no_peers)
    accounting = Accounting()
    ledger = ClusterLedger("n2", accounting, stale_after=3.0)
    money = MoneyBus(ledger, SECRET, _no_peers, client=node_bus.client, verifier=node_bus.verifier)
    node_bus.serve(money.routes)
    with pytest.raises(ValueError, match="served already"):
        node_bus.serve(money.routes)
    with pytest.raises(ValueError, match="served already"):
        node_bus.serve({("POST", PATHS.heartbeat): money.receive})
    app = FastAPI()
    app.include_router(node_bus.router(lambda: {"node": "n2"}))
    n1 = BusClient(
        Signer("n1", derive_key(SECRET)), timeout=1, transport=httpx.ASGITransport(app=app)
    )
    peer = Peer("n2", "n2.test:80")
    try:
        now = time.monotonic()
        publication = Reservations("n1", 1.0, 1, {ACME: _holding("0.3000")}).to_json()
        assert (await n1.post(peer, PATHS.reservations, publication))["taken"] is True
        assert ledger.holding("n1", ACME).total == D("0.3000")
        state = await n1.get(peer, PATHS.reservations)
        held = {h["node"]: h["reserved"] for h in state["accounts"][str(ACME)]["nodes"]}
        assert held["n1"] == "0.3000"
        # Heartbeats alone keep n1 live past the ledger's stale_after (3 s here).
        later = now + 10.0
        assert "n1" not in ledger.live(later)
        money.member_event(MemberEvent(MemberEventKind.HEARD, "n1", None, later - 1.0))
        assert "n1" in ledger.live(later)
        money.member_event(MemberEvent(MemberEventKind.DOWN, "n1", None, later + 5.0))
        assert "n1" not in ledger.live(later + 5.0)
        await money.close()  # the node's client is the node's to close: still usable
        assert (await n1.get(peer, PATHS.status))["node"] == "n2"
    finally:
        await n1.aclose()
        await node_bus.client.aclose()


def _never() -> Heartbeat:
    raise AssertionError("no heartbeat is sent in this test")
