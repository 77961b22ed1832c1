"""Where the node's messages leave from: new requests from the originating address (a node's
dedicated IP, or the shared IP), answers from where the request arrived. Real sockets on
loopback addresses (every 127.0.0.0/8 address is this host's)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from e2e.sipp import free_port
from smartswitch.b2bua.application import SipApplication
from smartswitch.sip.message import Request, Response, parse_message
from smartswitch.sip.transaction import Address
from smartswitch.transport.endpoint import SipEndpoint

from .test_endpoint import WAIT, NoCalls, Owner, _request, _run, _send, options

DEDICATED = "127.0.0.11"
OTHER = "127.0.0.1"  # another address of the host: reaches a wildcard listener only
PEER = "127.0.0.31"
NOT_HERE = "192.0.2.10"  # TEST-NET-1: on no interface of this host


class Seen(asyncio.DatagramProtocol):
    """A UDP socket of the test's: what arrives, with where it came from."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait((data, (str(addr[0]), int(addr[1]))))

    async def next(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.received.get(), WAIT)


async def _peer(host: str = PEER) -> tuple[asyncio.DatagramTransport, Seen, int]:
    loop = asyncio.get_running_loop()
    transport, seen = await loop.create_datagram_endpoint(Seen, local_addr=(host, 0))
    return transport, seen, int(transport.get_extra_info("sockname")[1])


async def _node(listen: str) -> tuple[SipEndpoint, SipApplication]:
    port = free_port("0.0.0.0" if listen == "0.0.0.0" else listen)
    sip = SipApplication(NoCalls(), {"udp": (listen, port), "tcp": (listen, port)})
    endpoint = SipEndpoint(sip.layer, asyncio.get_running_loop())
    await endpoint.listen(listen, port, OTHER if listen == "0.0.0.0" else listen)
    return endpoint, sip


def _answer(data: bytes) -> bytes:
    """The 200 a peer gives to the request ``data``."""
    request = parse_message(data)
    assert isinstance(request, Request)
    via = request.headers.get("via")
    lines = [
        "SIP/2.0 200 OK",
        f"Via: {via}",
        f"From: {request.headers.get('from')}",
        f"To: {request.headers.get('to')};tag=peer",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq.number} {request.cseq.method}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def test_a_wildcard_listener_originates_from_the_dedicated_ip_and_answers_where_it_is_asked() -> (
    None
):
    async def test() -> None:
        endpoint, sip = await _node("0.0.0.0")
        await endpoint.originate_from(DEDICATED)
        port = endpoint.port
        transport, peer, peer_port = await _peer()
        # A new request (a B leg) leaves from the dedicated IP and says so in its Via; the
        # answer, sent back to that address, reaches its transaction.
        dest = Address("udp", PEER, peer_port)
        owner = Owner()
        _send(endpoint, sip, _request("OPTIONS", dest, 1), dest, owner)
        data, source = await peer.next()
        assert source == (DEDICATED, port)
        request = parse_message(data)
        assert isinstance(request, Request)
        assert request.top_via.host == DEDICATED and request.top_via.port == port
        transport.sendto(_answer(data), source)
        assert await asyncio.wait_for(owner.outcome, WAIT) == 200
        # A request to the dedicated IP is answered from it ...
        transport.sendto(options(port, 2, to=DEDICATED), (DEDICATED, port))
        data, source = await peer.next()
        assert source == (DEDICATED, port)
        # ... and one to another address of the host from the listening socket, as without an
        # origin; what the node sends that peer next leaves from there too.
        transport.sendto(options(port, 3, to=OTHER), (OTHER, port))
        data, source = await peer.next()
        assert source == (OTHER, port)
        response = parse_message(data)
        assert isinstance(response, Response) and response.status == 200
        assert sip.layer.local_address(dest) == (OTHER, port)
        _send(endpoint, sip, _request("OPTIONS", dest, 4), dest)
        _data, source = await peer.next()
        assert source == (OTHER, port)
        # Until it is heard on the dedicated IP again.
        transport.sendto(options(port, 5, to=DEDICATED), (DEDICATED, port))
        await peer.next()
        assert sip.layer.local_address(dest) == (DEDICATED, port)
        # No origin: back to the listening socket for everything.
        await endpoint.originate_from(None)
        assert endpoint.origin is None
        _send(endpoint, sip, _request("OPTIONS", dest, 6), dest)
        _data, source = await peer.next()
        assert source[0] != DEDICATED
        transport.close()
        endpoint.close()

    _run(test)


def test_a_node_listening_on_its_dedicated_ip_changes_nothing() -> None:
    async def test() -> None:
        endpoint, sip = await _node(DEDICATED)
        await endpoint.originate_from(DEDICATED)
        assert endpoint.origin is None and sip.layer.local_for is None
        transport, peer, peer_port = await _peer()
        dest = Address("udp", PEER, peer_port)
        _send(endpoint, sip, _request("OPTIONS", dest, 1), dest)
        _data, source = await peer.next()
        assert source == (DEDICATED, endpoint.port)
        transport.close()
        endpoint.close()

    _run(test)


def test_the_shared_ip_is_bound_before_this_host_carries_it() -> None:
    async def test() -> None:
        endpoint, sip = await _node(DEDICATED)
        with pytest.raises(OSError):
            await endpoint.originate_from(NOT_HERE)  # not this host's: refused
        assert endpoint.origin is None
        await endpoint.originate_from(NOT_HERE, freebind=True)  # the VIP, with IP_FREEBIND
        assert endpoint.origin is not None and endpoint.origin.host == NOT_HERE
        dest = Address("udp", PEER, 5060)
        assert sip.layer.local_address(dest) == (NOT_HERE, endpoint.port)
        await endpoint.originate_from(None)
        assert sip.layer.local_address(dest) == (DEDICATED, endpoint.port)
        endpoint.close()

    _run(test)


def test_tcp_connections_we_open_leave_from_the_origin_which_also_listens() -> None:
    async def test() -> None:
        endpoint, sip = await _node(OTHER)
        await endpoint.originate_from(DEDICATED)
        accepted: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not accepted.done():
                accepted.set_result(writer.get_extra_info("peername")[:2])
            writer.close()

        server = await asyncio.start_server(connected, PEER, 0)
        dest = Address("tcp", PEER, int(server.sockets[0].getsockname()[1]))
        assert sip.layer.local_address(dest) == (DEDICATED, endpoint.port)
        _send(endpoint, sip, _request("OPTIONS", dest, 1), dest)
        host, _port = await asyncio.wait_for(accepted, WAIT)
        assert host == DEDICATED
        # The origin listens for TCP too (a listener on one address does not cover it).
        with socket.create_connection((DEDICATED, endpoint.port), timeout=WAIT):
            pass
        server.close()
        endpoint.close()

    _run(test)


SHARED = "127.0.0.12"  # the shared IP in these tests: an address of this host


def test_the_shared_ip_listener_answers_from_the_shared_ip_and_lends_its_socket() -> None:
    async def test() -> None:
        endpoint, sip = await _node(DEDICATED)
        await endpoint.listen_shared(SHARED)
        port = endpoint.port
        transport, peer, peer_port = await _peer()
        # Asked on the shared IP: answered from it (a customer drops answers from elsewhere).
        transport.sendto(options(port, 1, to=SHARED), (SHARED, port))
        data, source = await peer.next()
        assert source == (SHARED, port)
        response = parse_message(data)
        assert isinstance(response, Response) and response.status == 200
        dest = Address("udp", PEER, peer_port)
        assert sip.layer.local_address(dest) == (SHARED, port)
        # Asked on the dedicated IP (the health check's way): answered from there.
        transport.sendto(options(port, 2, to=DEDICATED), (DEDICATED, port))
        _data, source = await peer.next()
        assert source == (DEDICATED, port)
        assert sip.layer.local_address(dest) == (DEDICATED, port)
        # Originating from the shared IP (the holder) uses the listener's socket, no other.
        other_transport, other_peer, other_port = await _peer("127.0.0.32")
        await endpoint.originate_from(SHARED, freebind=True)
        assert endpoint.origin is not None and endpoint.origin.borrowed
        new = Address("udp", "127.0.0.32", other_port)
        _send(endpoint, sip, _request("OPTIONS", new, 3), new)
        _data, source = await other_peer.next()
        assert source == (SHARED, port)
        # Giving the origin up leaves the listener open.
        await endpoint.originate_from(None)
        transport.sendto(options(port, 4, to=SHARED), (SHARED, port))
        _data, source = await peer.next()
        assert source == (SHARED, port)
        # The listener over TCP too.
        with socket.create_connection((SHARED, port), timeout=WAIT):
            pass
        other_transport.close()
        transport.close()
        endpoint.close()

    _run(test)


def test_the_shared_ip_listener_binds_before_the_address_is_here() -> None:
    async def test() -> None:
        endpoint, _sip = await _node(DEDICATED)
        await endpoint.listen_shared(NOT_HERE)
        assert endpoint.shared is not None and endpoint.shared.host == NOT_HERE
        await endpoint.originate_from(NOT_HERE, freebind=True)
        assert endpoint.origin is not None and endpoint.origin.borrowed
        endpoint.close()

    _run(test)
