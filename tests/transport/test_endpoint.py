"""The asyncio adapter on loopback: real UDP and TCP sockets, the node's SIP application
behind them, and one ``call_at`` kept armed for the earliest timer.

Each test runs its own event loop (``asyncio.run``) and waits on what the sockets deliver,
with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from b2bua.harness import new_request
from e2e.sipp import free_port  # a port free for both UDP and TCP
from smartswitch.b2bua.application import SipApplication
from smartswitch.b2bua.ports import Rejection
from smartswitch.sip.framing import StreamFramer
from smartswitch.sip.message import Request, Response, parse_message
from smartswitch.sip.transaction import T1, Address, ClientTransaction
from smartswitch.transport.endpoint import SipEndpoint, message_kind

HOST = "127.0.0.1"
WAIT = 5.0  # the most any answer may take on loopback


class NoCalls:
    def route(self, request: Request, source: Address, now: float) -> Rejection:
        return Rejection(403, "Forbidden")


class CountingLoop:
    """The running loop, counting the ``call_at`` the endpoint arms."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.armed: list[asyncio.TimerHandle] = []

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        handle = self._loop.call_at(when, callback)
        self.armed.append(handle)
        return handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    def pending(self) -> list[asyncio.TimerHandle]:
        return [h for h in self.armed if not h.cancelled() and h.when() > self._loop.time()]


async def _switch() -> tuple[SipEndpoint, SipApplication, CountingLoop]:
    port = free_port(HOST)
    sip = SipApplication(NoCalls(), {"udp": (HOST, port), "tcp": (HOST, port)})
    loop = CountingLoop(asyncio.get_running_loop())
    endpoint = SipEndpoint(sip.layer, cast(asyncio.AbstractEventLoop, loop))
    await endpoint.listen(HOST, port, HOST)
    return endpoint, sip, loop


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 4 * WAIT))


def options(
    port: int, cseq: int, transport: str = "UDP", branch: str = "", to: str = HOST
) -> bytes:
    """An OPTIONS to ``to``:``port``; answered to where it came from (rport)."""
    lines = [
        f"OPTIONS sip:{to}:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} {HOST}:9;branch=z9hG4bK{branch or f'opt{cseq}'};rport",
        f"From: <sip:probe@{HOST}>;tag=probe",
        f"To: <sip:{to}:{port}>",
        "Call-ID: probe@127.0.0.1",
        f"CSeq: {cseq} OPTIONS",
        "Max-Forwards: 70",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


class Datagrams(asyncio.DatagramProtocol):
    """A UDP socket of the test's: what arrives is queued."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait(data)

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.received.get(), WAIT)


async def _udp_peer() -> tuple[asyncio.DatagramTransport, Datagrams, int]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Datagrams, local_addr=(HOST, 0))
    return transport, protocol, int(transport.get_extra_info("sockname")[1])


class Owner:
    """A ClientOwner whose answers the test awaits."""

    def __init__(self) -> None:
        self.outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        if response.status >= 200 and not self.outcome.done():
            self.outcome.set_result(response.status)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        if not self.outcome.done():
            self.outcome.set_result(408)


def _request(method: str, dest: Address, n: int) -> Request:
    return new_request(
        method,
        f"sip:peer@{dest.host}:{dest.port}",
        f"<sip:switch@{HOST}>;tag=s{n}",
        f"<sip:peer@{dest.host}>",
        f"out-{n}@{HOST}",
    )


def _send(
    endpoint: SipEndpoint,
    sip: SipApplication,
    request: Request,
    dest: Address,
    owner: Owner | None = None,
) -> None:
    """Send from outside any network or timer callback, as the node does: at the loop's time,
    then flushed."""

    def work(now: float) -> None:
        sip.layer.send_request(request, dest, now, owner)

    endpoint.run(work)


# --------------------------------------------------------------------------------------------


def test_message_kind_reads_the_first_bytes_only() -> None:
    assert message_kind(b"INVITE sip:x SIP/2.0\r\n") == b"INVITE"
    assert message_kind(b"SIP/2.0 486 Busy Here\r\n") == b"486"
    assert message_kind(b"SIP/2.0 4x6 Nope\r\n") == b"other"
    assert message_kind(b"\x00\x01garbage") == b"other"


def test_udp_request_answered_to_its_source() -> None:
    async def test() -> None:
        endpoint, _, _ = await _switch()
        transport, peer, _ = await _udp_peer()
        transport.sendto(options(endpoint.port, 1), (HOST, endpoint.port))
        response = parse_message(await peer.next())
        assert isinstance(response, Response)
        assert (response.status, response.cseq.number) == (200, 1)
        assert "INVITE" in (response.headers.get("allow") or "")
        assert endpoint.rx_by_kind == {b"OPTIONS": 1} and endpoint.tx_by_kind == {b"200": 1}
        transport.close()
        endpoint.close()

    _run(test)


def test_datagrams_from_one_source_share_one_address() -> None:
    """Each server transaction keeps its request's source while it lingers (32 s); an Address,
    a tuple subclass, is never untracked by the garbage collector: one per peer, not one per
    datagram."""

    async def test() -> None:
        endpoint, sip, _ = await _switch()
        transport, peer, _ = await _udp_peer()
        sources: list[Address] = []
        receive = sip.layer.receive

        def recording(data: bytes, source: Address, now: float) -> None:
            sources.append(source)
            receive(data, source, now)

        sip.layer.receive = recording  # type: ignore[method-assign]
        for cseq in (1, 2):
            transport.sendto(options(endpoint.port, cseq), (HOST, endpoint.port))
            await peer.next()
        assert len(sources) == 2 and sources[0] is sources[1]
        transport.close()
        endpoint.close()

    _run(test)


def test_tcp_stream_is_framed_into_messages_and_answered_on_the_connection() -> None:
    """Two requests in one segment, then one split inside a header line: three answers, in
    order, on the connection they came on."""

    async def test() -> None:
        endpoint, _, _ = await _switch()
        reader, writer = await asyncio.open_connection(HOST, endpoint.port)
        writer.write(options(endpoint.port, 1, "TCP") + options(endpoint.port, 2, "TCP"))
        third = options(endpoint.port, 3, "TCP")
        writer.write(third[:40])
        await writer.drain()
        framer = StreamFramer()
        answers: list[bytes] = []
        while len(answers) < 2:
            answers += framer.feed(await asyncio.wait_for(reader.read(4096), WAIT))
        writer.write(third[40:])
        while len(answers) < 3:
            answers += framer.feed(await asyncio.wait_for(reader.read(4096), WAIT))
        statuses = []
        for data in answers:
            response = parse_message(data, require_content_length=True)
            assert isinstance(response, Response)
            statuses.append((response.status, response.cseq.number))
        assert statuses == [(200, 1), (200, 2), (200, 3)]
        assert len(endpoint.connections) == 1
        writer.close()
        endpoint.close()

    _run(test)


def test_garbage_on_tcp_closes_the_connection() -> None:
    async def test() -> None:
        endpoint, _, _ = await _switch()
        reader, writer = await asyncio.open_connection(HOST, endpoint.port)
        writer.write(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: lots\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed by the switch
        writer.close()
        endpoint.close()

    _run(test)


def test_one_call_at_is_armed_for_the_earliest_timer_and_re_armed_when_it_fires() -> None:
    """Five requests to a silent peer put ten timers in the heap (E and F each); the endpoint
    arms one ``call_at``, and when it fires (Timer E, T1 later) one more, for the next E."""

    async def test() -> None:
        endpoint, sip, loop = await _switch()
        transport, peer, peer_port = await _udp_peer()
        silent = Address("udp", HOST, peer_port)

        def five(now: float) -> None:
            for n in range(5):
                sip.layer.send_request(_request("OPTIONS", silent, n), silent, now)

        endpoint.run(five)
        assert len(sip.layer.timers) == 10
        (first,) = loop.armed
        assert first.when() == sip.layer.timers.next_deadline()
        sent = [await peer.next() for _ in range(5)]
        assert sorted([await peer.next() for _ in range(5)]) == sorted(sent)  # Timer E
        assert len(loop.armed) == 2
        (second,) = loop.pending()
        assert second.when() == sip.layer.timers.next_deadline()
        assert second.when() == pytest.approx(first.when() + 2 * T1, abs=0.1)
        transport.close()
        endpoint.close()

    _run(test)


def test_a_tcp_destination_that_refuses_fails_its_transaction_at_once() -> None:
    async def test() -> None:
        endpoint, sip, _ = await _switch()
        closed = Address("tcp", HOST, free_port(HOST))
        owner = Owner()
        _send(endpoint, sip, _request("OPTIONS", closed, 1), closed, owner)
        assert await asyncio.wait_for(owner.outcome, WAIT) == 408  # long before Timer F
        assert not sip.layer.client
        endpoint.close()

    _run(test)


def test_a_request_over_tcp_to_a_listener_opens_one_connection_and_gets_its_answer() -> None:
    async def test() -> None:
        endpoint, sip, _ = await _switch()
        other, _, _ = await _switch()
        dest = Address("tcp", HOST, other.port)
        owners = [Owner(), Owner()]
        for n, owner in enumerate(owners):
            _send(endpoint, sip, _request("OPTIONS", dest, n), dest, owner)
        statuses = [await asyncio.wait_for(o.outcome, WAIT) for o in owners]
        assert statuses == [200, 200]
        assert list(endpoint.connections) == [dest]  # both on one connection
        assert other.rx_by_kind == {b"OPTIONS": 2}
        endpoint.close()
        other.close()

    _run(test)


def test_the_tap_sees_each_message_with_the_addresses_on_the_wire() -> None:
    """UDP and TCP, in and out: the source and destination as they crossed the wire (our
    listening address, the peer's address and its real port), in the order they did."""

    async def test() -> None:
        endpoint, _, _ = await _switch()
        seen: list[tuple[str, tuple[str, int], tuple[str, int], bytes]] = []
        endpoint.tap = lambda t, src, dst, data, wall: seen.append((t, src, dst, data[:12]))
        transport, peer, peer_port = await _udp_peer()
        transport.sendto(options(endpoint.port, 1), (HOST, endpoint.port))
        await peer.next()
        me = (HOST, endpoint.port)
        assert seen == [
            ("udp", (HOST, peer_port), me, b"OPTIONS sip:"),
            ("udp", me, (HOST, peer_port), b"SIP/2.0 200 "),
        ]
        seen.clear()
        reader, writer = await asyncio.open_connection(HOST, endpoint.port)
        tcp_port = int(writer.get_extra_info("sockname")[1])
        writer.write(options(endpoint.port, 2, "TCP"))
        await writer.drain()
        await asyncio.wait_for(reader.read(4096), WAIT)
        assert seen == [
            ("tcp", (HOST, tcp_port), me, b"OPTIONS sip:"),
            ("tcp", me, (HOST, tcp_port), b"SIP/2.0 200 "),
        ]
        seen.clear()
        endpoint.tap = None  # off: nothing more is told
        transport.sendto(options(endpoint.port, 3), (HOST, endpoint.port))
        await peer.next()
        assert seen == []
        writer.close()
        transport.close()
        endpoint.close()

    _run(test)


def test_the_tap_sees_requests_on_connections_we_open() -> None:
    async def test() -> None:
        endpoint, sip, _ = await _switch()
        seen: list[tuple[str, tuple[str, int], tuple[str, int]]] = []
        endpoint.tap = lambda t, src, dst, data, wall: seen.append((t, src, dst))
        got: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.put_nowait(writer.get_extra_info("peername"))
            await reader.read(4096)

        server = await asyncio.start_server(accept, HOST, 0)
        port = int(server.sockets[0].getsockname()[1])
        dest = Address("tcp", HOST, port)
        _send(endpoint, sip, _request("OPTIONS", dest, 1), dest)
        peername = await asyncio.wait_for(got.get(), WAIT)
        assert seen == [("tcp", (HOST, int(peername[1])), (HOST, port))]
        server.close()
        endpoint.close()

    _run(test)


def test_a_tcp_connection_we_open_leaves_from_the_listening_address() -> None:
    """A node listening on one address connects from it (the address its Via names), not
    from whatever address the kernel would route from."""

    async def test() -> None:
        listen = "127.0.0.2"
        port = free_port(listen)
        sip = SipApplication(NoCalls(), {"udp": (listen, port), "tcp": (listen, port)})
        endpoint = SipEndpoint(sip.layer, asyncio.get_running_loop())
        await endpoint.listen(listen, port, listen)
        got: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.put_nowait(writer.get_extra_info("peername"))
            await reader.read(4096)

        server = await asyncio.start_server(accept, HOST, 0)
        dest = Address("tcp", HOST, int(server.sockets[0].getsockname()[1]))
        _send(endpoint, sip, _request("OPTIONS", dest, 1), dest)
        peername = await asyncio.wait_for(got.get(), WAIT)
        assert peername[0] == listen
        server.close()
        endpoint.close()

    _run(test)
