"""Guard events over the signed bus: two real bus servers (in this process, on 127.0.0.41-42)
each with a real :class:`SourceGuard`; failures for one account spread over both count on
both, so its back-off starts on both; bad event lists are refused whole."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from smartswitch.cluster.bus import BusClient, MessageError, Peer, PeerFailed
from smartswitch.cluster.endpoints import bus_router
from smartswitch.cluster.guardsync import GUARD_PATH, GuardSync, event_from_json
from smartswitch.cluster.signing import SignedRequest, Signer, Verifier
from smartswitch.registrar.guard import AccountState, GuardSettings, SourceGuard
from smartswitch.sip.digest import AuthResult

from .busnet import KEY, _Server, free_port, until

SETTINGS = GuardSettings(account_fail_limit=6, fail_limit=0)


def _failure(guard: SourceGuard, ip: str, now: float, account: str = "alice") -> None:
    guard.failed(ip, now, AuthResult(False, account, False, "bad-password"))


class Side:
    def __init__(self, name: str, host: str, names: Sequence[tuple[str, str]]) -> None:
        self.name = name
        self.host = host
        self.port = free_port(host)
        self.guard = SourceGuard(SETTINGS)
        self.names = names
        self.client = BusClient(Signer(name, KEY), timeout=1.0)
        self.sync = GuardSync(name, self.guard, self.peers, self.client)
        self.server: _Server | None = None
        self.serving: asyncio.Task[None] | None = None

    async def peers(self) -> Sequence[tuple[str, str]]:
        return self.names

    async def start(self) -> None:
        app = FastAPI()
        app.include_router(
            bus_router(Verifier(self.name, KEY), {("POST", GUARD_PATH): self.sync.take})
        )
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning")
        self.server = _Server(config)
        self.serving = asyncio.create_task(self.server.serve())
        server = self.server
        await until(lambda: server.started, within=5)

    async def stop(self) -> None:
        assert self.server is not None and self.serving is not None
        self.server.should_exit = True
        await asyncio.wait_for(self.serving, 5)
        await self.client.aclose()


@contextlib.asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[Side, Side]]:
    names: list[tuple[str, str]] = []
    a = Side("node1", "127.0.0.41", names)
    b = Side("node2", "127.0.0.42", names)
    names += [(s.name, f"{s.host}:{s.port}") for s in (a, b)]
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


def test_failures_spread_over_two_nodes_start_the_back_off_on_both() -> None:
    async def scenario() -> None:
        async with two_nodes() as (a, b):
            now = 1_000.0
            for i in range(3):  # 3 + 3 = the limit, from six addresses, half on each node
                _failure(a.guard, f"192.0.2.{i}", now + i)
                _failure(b.guard, f"198.51.100.{i}", now + i)
            assert a.guard.account_status("alice", now + 3).state is not AccountState.BACKOFF
            assert await a.sync.publish_once() == 3
            assert await b.sync.publish_once() == 3
            for side in (a, b):
                status = side.guard.account_status("alice", now + 3)
                assert status.failures == 6, (side.name, status)
                assert status.state is AccountState.BACKOFF, (side.name, status)
                # A new address's answer is refused unchecked on both nodes.
                assert not side.guard.admit("203.0.113.9", 'Digest username="alice"', now + 4)
            assert a.guard.stats["remote_failures"] == 3 == b.guard.stats["remote_failures"]
            # Nothing echoed back: remote events are not queued again.
            assert await a.sync.publish_once() == 0

    asyncio.run(scenario())


def test_the_running_sync_sends_on_its_own() -> None:
    async def scenario() -> None:
        async with two_nodes() as (a, b):
            a.sync.start()
            _failure(a.guard, "192.0.2.1", 1_000.0)
            await until(lambda: b.guard.stats["remote_failures"] == 1, within=3)
            await a.sync.close()

    asyncio.run(scenario())


def test_a_bad_event_list_is_refused_whole_with_400() -> None:
    async def scenario() -> None:
        async with two_nodes() as (a, b):
            peer = Peer(b.name, f"{b.host}:{b.port}")
            good = {"kind": "failure", "account": "alice", "source": "192.0.2.1", "when": 1.0}
            with pytest.raises(PeerFailed) as caught:
                await a.client.post(peer, GUARD_PATH, {"events": [good, {"kind": "x"}]})
            assert caught.value.status == 400
            assert b.guard.stats["remote_failures"] == 0  # the good one not applied either

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "item",
    [
        [],
        {"kind": "success", "account": None, "source": "1.2.3.4", "when": 1.0},
        {"kind": "failure", "account": 5, "source": "1.2.3.4", "when": 1.0},
        {"kind": "failure", "account": None, "source": "1.2.3.4", "when": "1"},
        {"kind": "failure", "account": None, "source": "1.2.3.4", "when": float("nan")},
        {"kind": "failure", "account": None, "source": "x" * 65, "when": 1.0},
        {"kind": "failure", "account": None, "source": "1.2.3.4", "when": True},
    ],
)
def test_malformed_events_are_refused(item: Any) -> None:
    with pytest.raises(MessageError):
        event_from_json(item)


def test_a_body_that_is_not_a_list_is_refused() -> None:
    guard = SourceGuard(SETTINGS)
    sync = GuardSync("node2", guard, lambda: asyncio.sleep(0, []), BusClient(Signer("n", KEY)))
    body = json.dumps({"events": "nope"}).encode()
    request = SignedRequest("POST", GUARD_PATH, "node1", 0, "n", body)
    with pytest.raises(MessageError):
        asyncio.run(sync.take(request))
