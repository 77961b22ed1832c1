"""The node's capture service on a real endpoint and writer thread: settings turn the hooks on
and off, a call with a CDR gets its file where any node looks for it, a call without one gets
none, and an unwritable directory stops capturing (the error reported) while calls go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

from smartswitch.b2bua.application import SipApplication
from smartswitch.b2bua.ports import CallSession, Rejection
from smartswitch.capture.pcap import pcap_bytes
from smartswitch.model.cdr import CdrRecord, HangupSide
from smartswitch.model.config import ConfigSnapshot
from smartswitch.model.ids import new_ulid
from smartswitch.runtime.capture import CaptureService, CdrTap, capture_path
from smartswitch.sip.message import Request
from smartswitch.sip.transaction import Address
from smartswitch.transport.endpoint import SipEndpoint

A, B = ("192.0.2.1", 5060), ("192.0.2.2", 5060)
START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def message(call_id: str, first: str) -> bytes:
    return f"{first}\r\nCall-ID: {call_id}\r\nContent-Length: 0\r\n\r\n".encode()


def cdr(call_id: str) -> CdrRecord:
    return CdrRecord(
        id=new_ulid(),
        call_id=call_id,
        node="node1",
        customer_peer_id=1,
        customer_account_id=1,
        caller="5550001",
        callee="15551234567",
        caller_out="5550001",
        callee_out="15551234567",
        setup_time=START,
        answer_time=START + timedelta(seconds=1),
        end_time=START + timedelta(seconds=61),
        duration_ms=60000,
        billed_seconds=60,
        price=Decimal("0.5000"),
        cost=Decimal("0.0000"),
        currency="USD",
        sip_code=200,
        sip_reason="OK",
        hangup_side=HangupSide.CALLER,
        hangup_reason="bye",
    )


class Sink:
    def __init__(self) -> None:
        self.kept: list[str] = []

    def append(self, record: CdrRecord, done: Callable[[], None] | None = None) -> None:
        self.kept.append(record.id)


class NoCalls:
    def route(self, request: Request, source: Address, now: float) -> Rejection:
        return Rejection(403, "Forbidden")


def endpoint_on(loop: asyncio.AbstractEventLoop) -> SipEndpoint:
    sip = SipApplication(NoCalls(), {"udp": ("127.0.0.1", 5060), "tcp": ("127.0.0.1", 5060)})
    return SipEndpoint(sip.layer, loop)


SESSION = cast(CallSession, object())  # a lab call's: no customer or supplier ids


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def settings(**values: str) -> ConfigSnapshot:
    return ConfigSnapshot(version=1, settings=values)


def test_a_call_with_a_cdr_gets_its_file_and_one_without_gets_none(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        endpoint = endpoint_on(loop)
        written: list[Path] = []
        observer: list[object] = []
        service = CaptureService(tmp_path, "node1", endpoint, on_written=written.append, linger=0)
        service.start(observer.append)
        assert endpoint.tap is None  # off by default: the call path pays nothing
        service.apply(settings(capture_mode="all"))
        assert endpoint.tap is not None and observer == [service]
        sink = Sink()
        tap = CdrTap(sink, service)

        service.call_started("a@x", SESSION, loop.time())
        service.leg_started("a@x", "b@y", SESSION, 0)
        endpoint.tap("udp", A, B, message("a@x", "INVITE sip:1@b SIP/2.0"), time.time())
        endpoint.tap("udp", B, (B[0], 5062), message("b@y", "INVITE sip:1@c SIP/2.0"), time.time())
        record = cdr("a@x")
        tap.append(record)
        service.call_ended("a@x", loop.time())
        assert sink.kept == [record.id]

        service.call_started("lab@x", SESSION, loop.time())
        endpoint.tap("udp", A, B, message("lab@x", "INVITE sip:2@b SIP/2.0"), time.time())
        service.call_ended("lab@x", loop.time())  # no CDR: discarded

        await wait_for(lambda: bool(written), "the file written")
        path = capture_path(tmp_path, "node1", record.id)
        assert written == [path] and path.read_bytes()[:4] == pcap_bytes([])[:4]
        assert path.read_bytes().count(b"INVITE sip:") == 2
        assert service.stats().calls_captured == 1 and service.stats().calls_active == 0

        service.apply(settings(capture_mode="off"))
        await wait_for(lambda: endpoint.tap is None, "unhooked once no call is captured")
        assert observer == [service, None]
        await service.close()

    asyncio.run(scenario())


def test_an_unwritable_directory_stops_capturing_and_calls_go_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        (tmp_path / "captures").mkdir()
        (tmp_path / "captures" / "node1").write_text("not a directory")  # even root fails
        endpoint = endpoint_on(loop)
        service = CaptureService(tmp_path, "node1", endpoint, linger=0)
        service.start(lambda observer: None)
        service.apply(settings(capture_mode="all"))
        await wait_for(lambda: service.error is not None, "the error state")
        assert "cannot write captures" in (service.stats().error or "")
        sink = Sink()
        service.call_started("a@x", SESSION, loop.time())
        record = cdr("a@x")
        CdrTap(sink, service).append(record)
        service.call_ended("a@x", loop.time())
        assert sink.kept == [record.id]  # the call's CDR went on as usual
        assert service.stats().calls_skipped == 1
        await service.close()

    asyncio.run(scenario())


def test_capture_paths_refuse_names_that_leave_the_directory(tmp_path: Path) -> None:
    for node, cdr_id in (("..", "x"), ("a/b", "x"), ("node1", "../x"), ("", "x")):
        try:
            capture_path(tmp_path, node, cdr_id)
        except ValueError:
            continue
        raise AssertionError(f"{node!r}, {cdr_id!r} accepted")
