"""The media engine over real rtpengines: weighted choice, sticky calls, health by ping,
fail-over of a new call, a relay lost, and what a failed offer leaves behind (nothing).

Relays: two for the module (127.0.77.2 and 127.0.77.3), one started and killed by single
tests (127.0.77.8), and an address where nothing ever listens (127.0.77.9).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from smartswitch.media.engine import MediaEngine, RelayConfig, RelayStatus
from smartswitch.media.ng import NgClient
from smartswitch.model.media import CallRef, MediaError, MediaUnavailable
from smartswitch.sip.sdp import SessionDescription

from .rtpengine import NG_PORT, Rtpengine, rtp, sdp, start_rtpengine

T = TypeVar("T")

BIG = RelayConfig("big", "127.0.77.2", NG_PORT, weight=3)
SMALL = RelayConfig("small", "127.0.77.3", NG_PORT, weight=1)
VICTIM = RelayConfig("victim", "127.0.77.8", NG_PORT, weight=100)
DEAD = RelayConfig("dead", "127.0.77.9", NG_PORT)
CALLER = ("127.0.77.21", 16010)
CALLEE = ("127.0.77.22", 16012)
FAST = {"timeout": 0.2, "tries": 2}


@pytest.fixture(scope="module")
def relays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rtpengine]]:
    started = {
        "big": start_rtpengine(BIG.host, tmp_path_factory.mktemp("rtpengine-big")),
        "small": start_rtpengine(SMALL.host, tmp_path_factory.mktemp("rtpengine-small")),
    }
    yield started
    for engine in started.values():
        engine.stop()


def run(
    relays: list[RelayConfig], scenario: Callable[[MediaEngine], Awaitable[T]], **kw: object
) -> T:
    async def main() -> T:
        engine = MediaEngine(relays, **{**FAST, **kw})  # type: ignore[arg-type]
        await engine.start()
        try:
            return await scenario(engine)
        finally:
            await engine.close()

    return asyncio.run(main())


async def holds(relay: RelayConfig, call_id: str) -> bool:
    ng = NgClient(relay.host, relay.port)
    try:
        return call_id in await ng.list_calls(limit=1000)
    finally:
        ng.close()


def test_status_after_start(relays: dict[str, Rtpengine]) -> None:
    changes: list[RelayStatus] = []

    async def scenario(engine: MediaEngine) -> list[RelayStatus]:
        return engine.status()

    status = run([BIG, SMALL, DEAD], scenario, on_change=changes.append)
    assert [(s.name, s.up, s.weight, s.calls) for s in status] == [
        ("big", True, 3, 0),
        ("small", True, 1, 0),
        ("dead", False, 1, 0),
    ]
    assert status[0].address == "127.0.77.2:22222" and status[0].last_error == "not pinged yet"
    assert "no answer after 2 tries" in (status[2].last_error or "")
    assert status[2].timeouts == 1 and status[0].requests == 1
    # the first pings go out together: their answers come in either order
    assert sorted((c.name, c.up) for c in changes) == [("big", True), ("small", True)]


def test_new_calls_are_spread_by_weight_and_stay_where_they_landed(
    relays: dict[str, Rtpengine],
) -> None:
    async def scenario(engine: MediaEngine) -> Counter[str]:
        landed: Counter[str] = Counter()
        for i in range(80):
            call = CallRef(f"weights-{i}", "a")
            await engine.offer(call, sdp(*CALLER))
            name = engine.relay_of(call.call_id)
            assert name is not None
            landed[name] += 1
            if i < 3:  # the call is on that rtpengine, and only there
                relay = BIG if name == "big" else SMALL
                other = SMALL if name == "big" else BIG
                assert await holds(relay, call.call_id)
                assert not await holds(other, call.call_id)
            await engine.delete(call.call_id)
        return landed

    landed = run([BIG, SMALL, DEAD], scenario, rng=random.Random(7))
    assert set(landed) == {"big", "small"}  # never the dead one
    assert 50 <= landed["big"] <= 70, landed  # 3:1 of 80 is 60:20


def test_offer_answer_reoffer_query_delete_on_one_relay(relays: dict[str, Rtpengine]) -> None:
    call = CallRef("sticky-1", "caller")

    async def scenario(engine: MediaEngine) -> None:
        offer = await engine.offer(call, sdp(*CALLER))
        name = engine.relay_of(call.call_id)
        holder = BIG if name == "big" else SMALL
        answer = await engine.answer(call.answered_by("callee"), sdp(*CALLEE, "0 101"))
        for body in (offer, answer):
            sd = SessionDescription.parse(body)
            assert sd.endpoint(sd.media[0]).address == holder.host
        caller_port = SessionDescription.parse(answer).media[0].port
        # a re-INVITE from the caller (hold): the same relay
        held = await engine.offer(call, sdp(*CALLER, extra="a=sendonly\r\n"))
        assert engine.relay_of(call.call_id) == name
        assert b"a=sendonly" in held
        assert [s.calls for s in engine.status() if s.name == name] == [1]

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind(CALLER)
            for i in range(5):
                phone.sendto(rtp(0, i, 160 * i, 0xABC, bytes(160)), (holder.host, caller_port))
            deadline = time.monotonic() + 3
            while (await engine.query(call.call_id)).rtp.packets < 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        stats = await engine.delete(call.call_id)
        assert stats is not None and stats.rtp.packets == 5
        caller_side = stats.received_from("caller")
        assert caller_side is not None and caller_side.rtp.packets == 5
        assert engine.relay_of(call.call_id) is None
        assert not await holds(holder, call.call_id)
        assert [s.calls for s in engine.status() if s.name == name] == [0]
        assert await engine.delete(call.call_id) is None  # unknown by now: nothing to do
        with pytest.raises(MediaError):
            await engine.query(call.call_id)

    run([BIG, SMALL], scenario)


def test_refused_sdp_is_488_not_retried_and_not_kept(relays: dict[str, Rtpengine]) -> None:
    async def scenario(engine: MediaEngine) -> None:
        with pytest.raises(MediaError) as info:
            await engine.offer(CallRef("refused", "a"), b"v=0\r\nnot really\r\n")
        assert info.value.status == 488
        assert engine.relay_of("refused") is None
        status = engine.status()
        assert all(s.up for s in status)
        assert sum(s.requests for s in status) == 2 + 1  # two pings, one offer: no retry
        assert [s.last_error for s in status if s.errors] == ["Failed to parse SDP"]

    run([BIG, SMALL], scenario)


def test_no_relay_up_fails_at_once(relays: dict[str, Rtpengine]) -> None:
    async def scenario(engine: MediaEngine) -> float:
        started = time.monotonic()
        with pytest.raises(MediaUnavailable) as info:
            await engine.offer(CallRef("nowhere", "a"), sdp(*CALLER))
        assert info.value.status == 503 and "no media relay is up" in str(info.value)
        with pytest.raises(MediaError):
            await engine.answer(CallRef("nowhere", "a", "b"), sdp(*CALLEE))
        return time.monotonic() - started

    assert run([DEAD], scenario) < 0.1  # the caller may fall back to direct media right away


def test_a_dead_relay_fails_over_then_comes_back(
    relays: dict[str, Rtpengine], tmp_path: Path
) -> None:
    victim = start_rtpengine(VICTIM.host, tmp_path / "victim")
    changes: list[tuple[str, bool]] = []

    async def scenario(engine: MediaEngine) -> None:
        assert [s.up for s in engine.status()] == [True, True]
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        started = time.monotonic()
        await engine.offer(CallRef("failover", "a"), sdp(*CALLER))
        assert time.monotonic() - started < 1.0  # one relay's tries (2 x 0.2 s), then the next
        assert engine.relay_of("failover") == "small"
        down = next(s for s in engine.status() if s.name == "victim")
        assert not down.up and down.last_error is not None and down.timeouts == 1
        # the victim stays out of the choice until it answers a ping again
        for i in range(5):
            await engine.offer(CallRef(f"failover-{i}", "a"), sdp(*CALLER))
            assert engine.relay_of(f"failover-{i}") == "small"
        restarted = await asyncio.to_thread(start_rtpengine, VICTIM.host, tmp_path / "victim2")
        try:
            await engine.check()
            assert [s.up for s in engine.status()] == [True, True]
            await engine.offer(CallRef("back", "a"), sdp(*CALLER))
            assert engine.relay_of("back") == "victim"
            for call_id in ["failover", "back"] + [f"failover-{i}" for i in range(5)]:
                await engine.delete(call_id)
            assert [s.calls for s in engine.status()] == [0, 0]
        finally:
            restarted.stop()

    try:
        run(
            [VICTIM, SMALL],
            scenario,
            rng=random.Random(1),
            on_change=lambda s: changes.append((s.name, s.up)),
        )
    finally:
        victim.stop()
    assert sorted(changes[:2]) == [("small", True), ("victim", True)]  # the first pings
    assert changes[2:] == [("victim", False), ("victim", True)]


def test_a_lost_relay_hands_back_its_calls(relays: dict[str, Rtpengine], tmp_path: Path) -> None:
    victim = start_rtpengine(VICTIM.host, tmp_path / "victim")

    async def scenario(engine: MediaEngine) -> None:
        for i in range(3):
            await engine.offer(CallRef(f"lost-{i}", "a"), sdp(*CALLER))
        assert engine.calls_on("victim") == ["lost-0", "lost-1", "lost-2"]
        victim.stop()  # by its PID, as the supervisor would see it die
        # The delete gets no answer: it never fails, and the relay is known down from then on.
        assert await engine.delete("lost-1") is None
        assert not engine.status()[0].up
        started = time.monotonic()
        with pytest.raises(MediaUnavailable, match="relay is down"):
            await engine.answer(CallRef("lost-0", "a", "b"), sdp(*CALLEE))
        assert time.monotonic() - started < 0.05  # known down: no waiting on it
        assert engine.relay_lost("victim", "rtpengine restarted") == ["lost-0", "lost-2"]
        assert engine.calls_on("victim") == [] and engine.relay_of("lost-0") is None
        status = engine.status()[0]
        assert not status.up and status.calls == 0 and status.last_error == "rtpengine restarted"

    try:
        run([VICTIM], scenario)
    finally:
        victim.stop()


def test_health_pings_bring_a_relay_in_when_it_starts(tmp_path: Path) -> None:
    async def scenario(engine: MediaEngine) -> None:
        assert not engine.status()[0].up
        late = await asyncio.to_thread(start_rtpengine, VICTIM.host, tmp_path)
        try:
            deadline = time.monotonic() + 3
            while not engine.status()[0].up:  # the background pings, every 0.1 s
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await engine.offer(CallRef("late", "a"), sdp(*CALLER))
            assert engine.relay_of("late") == "victim"
            await engine.delete("late")
        finally:
            late.stop()

    run([VICTIM], scenario, ping_interval=0.1)


def test_relay_config_checks() -> None:
    with pytest.raises(ValueError):
        RelayConfig("x", "127.0.0.1", 1, weight=-1)
    with pytest.raises(ValueError):
        MediaEngine([BIG, BIG])
