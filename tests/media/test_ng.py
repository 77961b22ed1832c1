"""The ng client against a real rtpengine 10.5 (on 127.0.77.1), and its retransmission rules
against a silent or a scripted UDP peer where the real daemon cannot be made to misbehave."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from smartswitch.media import bencode
from smartswitch.media.ng import NgClient, options_to_ng, parse_stats
from smartswitch.model.media import CallRef, MediaError, MediaOptions, MediaUnavailable
from smartswitch.sip.sdp import SessionDescription

from .rtpengine import NG_PORT, PORT_MAX, PORT_MIN, Rtpengine, rtp, sdp, start_rtpengine

IP = "127.0.77.1"
CALLER = ("127.0.77.11", 16000)
CALLEE = ("127.0.77.12", 16002)

T = TypeVar("T")


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rtpengine]:
    engine = start_rtpengine(IP, tmp_path_factory.mktemp("rtpengine-ng"))
    yield engine
    engine.stop()


def run(make: Callable[[NgClient], Awaitable[T]], **client: float) -> T:
    """Run ``make(client)`` on a fresh client of the module's rtpengine."""

    async def main() -> T:
        ng = NgClient(IP, NG_PORT, **client)  # type: ignore[arg-type]
        try:
            return await make(ng)
        finally:
            ng.close()

    return asyncio.run(main())


def relay_address(body: bytes) -> tuple[str | None, int]:
    sd = SessionDescription.parse(body)
    endpoint = sd.endpoint(sd.media[0])
    return endpoint.address, endpoint.port


def test_ping(rtpengine: Rtpengine) -> None:
    stats = run(lambda ng: _ping_and_stats(ng))
    assert stats == [("requests", "ping", 1)]


async def _ping_and_stats(ng: NgClient) -> list[tuple[str, str, int]]:
    await ng.ping()
    return list(ng.stats.samples())


def test_offer_answer_query_list_delete(rtpengine: Rtpengine) -> None:
    call = CallRef("ng-call-1@127.0.77.11", "caller-tag")

    async def scenario(ng: NgClient) -> None:
        offer = await ng.offer(call, sdp(*CALLER))
        address, callee_side_port = relay_address(offer)
        assert address == IP and PORT_MIN <= callee_side_port <= PORT_MAX
        sd = SessionDescription.parse(offer)
        assert sd.origin.address == IP  # replace: origin (the default options)
        assert [c.name for c in sd.media[0].codecs()] == ["PCMU", "PCMA", "telephone-event"]
        assert sd.media[0].rtcp == (callee_side_port + 1, None)

        answer = await ng.answer(call.answered_by("callee-tag"), sdp(*CALLEE, "8 101"))
        address, caller_side_port = relay_address(answer)
        assert address == IP and PORT_MIN <= caller_side_port <= PORT_MAX
        assert caller_side_port != callee_side_port
        assert [c.name for c in SessionDescription.parse(answer).media[0].codecs()] == [
            "PCMA",
            "telephone-event",
        ]

        # Media each way: the caller to the port in the answer, the callee to the one in the offer.
        with _socket(CALLER) as caller, _socket(CALLEE) as callee:
            for i in range(10):
                caller.sendto(rtp(8, i, i * 160, 0x1111, bytes(160)), (IP, caller_side_port))
                callee.sendto(rtp(8, 500 + i, i * 160, 0x2222, bytes(160)), (IP, callee_side_port))
            await _until(lambda: _received(ng, call.call_id, 20))
        stats = await ng.query(call.call_id)
        assert stats.rtp.packets == 20 and stats.rtp.bytes == 20 * 172
        from_caller = stats.received_from("caller-tag")
        from_callee = stats.received_from("callee-tag")
        assert from_caller is not None and from_caller.rtp.packets == 10
        assert from_callee is not None and from_callee.rtp.packets == 10
        assert from_caller.codec == "PCMA/8000"

        assert call.call_id in await ng.list_calls()
        assert await ng.delete(call.call_id) is True
        assert call.call_id not in await ng.list_calls()  # gone now, not in 30 s
        assert await ng.delete(call.call_id) is False  # "ok" with a warning
        assert ng.stats.warnings["delete"] == 1

    run(scenario)


async def _received(ng: NgClient, call_id: str, packets: int) -> bool:
    return (await ng.query(call_id)).rtp.packets >= packets


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _socket(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(address)
    return sock


@pytest.mark.parametrize(
    ("options", "codecs"),
    [
        (MediaOptions(codec_strip=("PCMU",)), ["PCMA", "G729", "telephone-event"]),
        (MediaOptions(codec_strip=("all",), codec_except=("PCMA",)), ["PCMA"]),
        (MediaOptions(codec_mask=("G729",)), ["PCMU", "PCMA", "telephone-event"]),
        (MediaOptions(codec_strip=("telephone-event",)), ["PCMU", "PCMA", "G729"]),
        (MediaOptions(flags=("codec-strip-PCMU",)), ["PCMA", "G729", "telephone-event"]),
    ],
)
def test_codec_filtering_removes_codecs(
    rtpengine: Rtpengine, options: MediaOptions, codecs: list[str]
) -> None:
    call = CallRef(f"ng-codec-{time.monotonic_ns()}", "a")

    async def scenario(ng: NgClient) -> list[str | None]:
        offer = await ng.offer(call, sdp(*CALLER, "0 8 18 101"), options)
        await ng.delete(call.call_id)
        return [c.name for c in SessionDescription.parse(offer).media[0].codecs()]

    assert run(scenario) == codecs


def test_codec_list_as_a_string_is_refused_before_rtpengine_ignores_it() -> None:
    with pytest.raises(TypeError):
        MediaOptions(codec_strip="PCMU")  # type: ignore[arg-type]


def test_unknown_keys_and_flags_are_only_logged_by_rtpengine(rtpengine: Rtpengine) -> None:
    # What ENVIRONMENT.md calls a rejection shows up in rtpengine's log only: "ok" comes back.
    call = CallRef("ng-unknown-key", "a")

    async def scenario(ng: NgClient) -> dict[str, bencode.Value]:
        reply = await ng.request(
            "offer",
            {
                "call-id": call.call_id,
                "from-tag": "a",
                "sdp": sdp(*CALLER),
                "codec-strip": ["PCMU"],
                "flags": ["symmetric", "no-such-flag"],
            },
        )
        await ng.delete(call.call_id)
        return reply

    reply = run(scenario)
    assert reply["result"] == "ok" and "warning" not in reply
    assert "PCMU" in str(reply["sdp"])  # the top-level codec-strip did nothing
    log = rtpengine.log.read_text()
    assert "Unknown dictionary key encountered: 'codec-strip'" in log
    assert "Unknown flag encountered: 'symmetric'" in log


def test_ice_remove_and_default(rtpengine: Rtpengine) -> None:
    ice = (
        "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n"
        "a=candidate:1 1 udp 2122260223 127.0.77.11 16000 typ host\r\n"
    )

    async def scenario(ng: NgClient) -> tuple[bytes, bytes]:
        removed = await ng.offer(CallRef("ng-ice-1", "a"), sdp(*CALLER, extra=ice))
        kept = await ng.offer(
            CallRef("ng-ice-2", "a"), sdp(*CALLER, extra=ice), MediaOptions(ice=None)
        )
        await ng.delete("ng-ice-1")
        await ng.delete("ng-ice-2")
        return removed, kept

    removed, kept = run(scenario)
    assert b"a=candidate" not in removed and b"ice-ufrag" not in removed
    # rtpengine's default: ICE in, ICE out, with itself as the only candidate
    candidates = [line for line in kept.split(b"\r\n") if line.startswith(b"a=candidate")]
    assert candidates and all(b" 127.0.77.1 " in line for line in candidates)


def test_hold_and_nat_options(rtpengine: Rtpengine) -> None:
    hold = sdp(*CALLER).replace(b"c=IN IP4 127.0.77.11", b"c=IN IP4 0.0.0.0")
    nat = MediaOptions(sip_source_address=True, received_from="127.0.77.99", strict_source=True)

    async def scenario(ng: NgClient) -> tuple[bytes, bytes, dict[str, bencode.Value]]:
        held = await ng.offer(CallRef("ng-hold", "a"), hold)
        natted = await ng.offer(CallRef("ng-nat", "a"), sdp("192.168.1.20", 16000), nat)
        reply = await ng.request("query", {"call-id": "ng-nat"})
        await ng.delete("ng-hold")
        await ng.delete("ng-nat")
        return held, natted, reply

    held, natted, reply = run(scenario)
    held_sd = SessionDescription.parse(held)
    assert held_sd.is_on_hold(held_sd.media[0])  # passed on as 0.0.0.0 and sendonly
    assert (
        SessionDescription.parse(natted).endpoint(SessionDescription.parse(natted).media[0]).address
        == IP
    )
    # With SIP-source-address the relay sends to the SIP source, not to the private address.
    assert "127.0.77.99" in str(reply) and "192.168.1.20" not in str(reply)


def test_record_options_are_spelt_as_rtpengine_reads_them() -> None:
    entries = options_to_ng(
        MediaOptions(
            record_call=True,
            direction=("priv", "pub"),
            received_from="2001:db8::1",
            sip_source_address=True,
            label="caller",
        )
    )
    assert entries == {
        "replace": ["origin"],
        "ICE": "remove",
        "direction": ["priv", "pub"],
        "record-call": "yes",
        "received-from": ["IP6", "2001:db8::1"],
        "label": "caller",
        "flags": ["SIP-source-address"],
    }
    assert "direction" not in options_to_ng(MediaOptions(direction=("a", "b")), answer=True)


def test_errors_carry_rtpengine_reason_and_a_status(rtpengine: Rtpengine) -> None:
    async def scenario(ng: NgClient) -> list[MediaError]:
        errors = []
        for attempt in (
            ng.answer(CallRef("ng-nonexistent", "a", "b"), sdp(*CALLEE)),
            ng.offer(CallRef("ng-garbage", "a"), b"this is not sdp"),
            ng.query("ng-nonexistent"),
            ng.request("no such command"),
        ):
            with pytest.raises(MediaError) as info:
                await attempt
            errors.append(info.value)
        assert ng.stats.errors == {"answer": 1, "offer": 1, "query": 1, "no such command": 1}
        return errors

    errors = run(scenario)
    assert [(e.reason, e.status) for e in errors] == [
        ("Unknown call-id", 500),
        ("Failed to parse SDP", 488),
        ("Unknown call-id", 500),
        ("Unrecognized command", 500),
    ]
    assert errors[0].command == "answer" and errors[0].instance == f"{IP}:{NG_PORT}"


def test_recording_commands(rtpengine: Rtpengine) -> None:
    async def scenario(ng: NgClient) -> None:
        await ng.offer(CallRef("ng-rec", "a"), sdp(*CALLER))
        await ng.start_recording("ng-rec")  # no --recording-dir: accepted, nothing written
        await ng.stop_recording("ng-rec")
        await ng.delete("ng-rec")
        with pytest.raises(MediaError):
            await ng.start_recording("ng-rec")

    run(scenario)


# --------------------------------------------------------------------------------------------
# Nobody answering, answering late, answering twice


def test_silence_is_media_unavailable_in_bounded_time_and_counted() -> None:
    async def scenario() -> tuple[float, list[tuple[str, str, int]]]:
        ng = NgClient("127.0.77.1", 22299, timeout=0.2, tries=3)  # nothing listens there
        started = time.monotonic()
        with pytest.raises(MediaUnavailable) as info:
            await ng.offer(CallRef("x", "a"), sdp(*CALLER))
        elapsed = time.monotonic() - started
        assert info.value.status == 503 and info.value.command == "offer"
        ng.close()
        return elapsed, list(ng.stats.samples())

    elapsed, samples = asyncio.run(scenario())
    assert 0.55 <= elapsed < 1.5  # 3 x 0.2 s, and slack for a busy machine
    assert samples == [
        ("requests", "offer", 1),
        ("retransmissions", "offer", 2),
        ("timeouts", "offer", 1),
    ]


def test_a_request_made_while_rtpengine_starts_is_answered_by_a_retransmission(
    tmp_path: Path,
) -> None:
    ip = "127.0.77.6"

    async def scenario() -> NgClient:
        ng = NgClient(ip, NG_PORT, timeout=0.3, tries=20)
        request = asyncio.create_task(ng.ping())
        await asyncio.sleep(0.35)  # the first try went nowhere
        engine = await asyncio.to_thread(start_rtpengine, ip, tmp_path)
        try:
            await request
        finally:
            engine.stop()
            ng.close()
        return ng

    ng = asyncio.run(scenario())
    assert ng.stats.retransmissions["ping"] >= 1
    assert ng.stats.timeouts["ping"] == 0


class ScriptedPeer:
    """A UDP peer that records every datagram and answers the n-th copy of each, twice."""

    def __init__(self, answer_on: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.77.7", 0))
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.answer_on = answer_on
        self.received: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.received.append(data)
            if len([d for d in self.received if d == data]) == self.answer_on:
                cookie = data.partition(b" ")[0]
                reply = cookie + b" " + bencode.encode({"result": "pong"})
                self.sock.sendto(reply, source)
                self.sock.sendto(reply, source)  # a duplicate: a stray reply for the client
                self.sock.sendto(b"unknown-cookie d6:result2:oke", source)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


def test_retransmissions_repeat_the_same_cookie_and_bytes() -> None:
    peer = ScriptedPeer(answer_on=3)

    async def scenario() -> NgClient:
        ng = NgClient(*peer.address, timeout=0.1, tries=5)
        await ng.ping()
        await ng.ping()
        await asyncio.sleep(0.1)  # let the duplicates arrive
        ng.close()
        return ng

    try:
        ng = asyncio.run(scenario())
    finally:
        peer.close()
    first, second = peer.received[:3], peer.received[3:6]
    assert len(set(first)) == 1 and len(set(second)) == 1  # each request resent unchanged
    cookie_one, cookie_two = first[0].split(b" ")[0], second[0].split(b" ")[0]
    assert cookie_one != cookie_two
    assert ng.stats.retransmissions["ping"] == 4
    assert ng.stats.stray_replies == 4  # two duplicates and two unknown cookies


def test_each_client_draws_its_own_cookies() -> None:
    peer = ScriptedPeer(answer_on=1)

    async def scenario() -> None:
        for _ in range(2):
            ng = NgClient(*peer.address)
            await ng.ping()
            ng.close()

    try:
        asyncio.run(scenario())
    finally:
        peer.close()
    cookies = {data.split(b" ")[0] for data in peer.received}
    assert len(cookies) == 2  # a restarted node must not get its predecessor's cached answers


def test_parse_stats_of_odd_answers() -> None:
    stats = parse_stats({"result": "ok", "tags": {"a": "not a dict"}, "totals": {"RTP": 5}})
    assert stats.rtp.packets == 0 and stats.tags[0].tag == "a" and stats.created is None
