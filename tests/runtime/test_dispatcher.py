"""The dispatcher's sockets in this process: two UDP "nodes" on 127.0.0.51-52 that answer what
they get (as a node's transaction layer would: by the top Via), a caller on 127.0.0.55, the
dispatch address on 127.0.0.50. The whole node and sipp are tests/cluster/test_dispatch_e2e.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from pathlib import Path
from typing import cast

import pytest

from cluster.busnet import sample_heartbeat
from smartswitch.cluster.dispatch import SOURCE_HEADER, DispatchMode, Tokens
from smartswitch.cluster.membership import Heartbeat
from smartswitch.runtime.config import ConfigError, NodeConfig, load_config
from smartswitch.runtime.dispatcher import Dispatcher
from smartswitch.sip.message import Request, Response, make_response, parse_message

SECRET = "s3cret"


class FakeNode(asyncio.DatagramProtocol):
    """Answers each request 200 by its top Via, and OPTIONS probes too."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[Request, tuple[str, int]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        assert isinstance(message, Request)
        if message.method != "OPTIONS":
            self.received.append((message, addr))
        via = message.top_via
        assert self.transport is not None
        self.transport.sendto(
            make_response(message, 200, "OK", "n").to_bytes(), (via.host, via.port or 5060)
        )


def invite(caller: socket.socket, dest: tuple[str, int], call_id: str, extra: str = "") -> bytes:
    host, port = caller.getsockname()
    return (
        f"INVITE sip:155@{dest[0]}:{dest[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:c@{host}>;tag=a\r\nTo: <sip:155@{dest[0]}>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:c@{host}:{port}>\r\nMax-Forwards: 70\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def _setup(
    mode: DispatchMode,
) -> tuple[Dispatcher, list[FakeNode], socket.socket, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    nodes: list[FakeNode] = []
    beats: list[Heartbeat] = []
    for i, host in enumerate(("127.0.0.51", "127.0.0.52")):
        transport, node = await loop.create_datagram_endpoint(FakeNode, local_addr=(host, 0))
        port = transport.get_extra_info("sockname")[1]
        nodes.append(node)
        beats.append(
            sample_heartbeat(f"node{i + 1}", calls=0, capacity=100, sip_address=f"{host}:{port}")
        )
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.50", 0))
    listen = probe.getsockname()
    probe.close()
    dispatcher = Dispatcher(mode, listen, "127.0.0.50", lambda: beats, Tokens(SECRET))
    await dispatcher.start()
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.55", 0))
    caller.setblocking(False)
    return dispatcher, nodes, caller, listen


async def _answer(caller: socket.socket) -> Response:
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(caller, 65535), 2)
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def test_proxy_mode_forwards_with_the_source_and_relays_answers_back() -> None:
    async def scenario() -> None:
        dispatcher, nodes, caller, listen = await _setup(DispatchMode.PROXY)
        try:
            await asyncio.sleep(0.1)  # the chooser fed once
            forged = f"{SOURCE_HEADER}: 10.9.9.9:5060\r\n"
            for i in range(10):
                caller.sendto(invite(caller, listen, f"c{i}", forged if i == 0 else ""), listen)
                answer = await _answer(caller)
                assert answer.status == 200
                # Our Via gone: the caller sees only its own.
                assert len(answer.headers.get_lines("via")) == 1
            shares = Counter(len(n.received) for n in nodes)
            assert shares == {5: 2}, [len(n.received) for n in nodes]
            first, addr = next(n.received[0] for n in nodes if n.received[0][0].call_id == "c0")
            assert addr[0] == "127.0.0.50"  # from the forwarding socket (the dedicated IP)
            # The caller's own header replaced by its real address.
            assert first.headers.get_lines(SOURCE_HEADER) == [
                f"127.0.0.55:{caller.getsockname()[1]}"
            ]
            assert first.headers.get("max-forwards") == "69"
            # A BYE in the dialog, sent here, follows the Call-ID to the same node.
            target = next(n for n in nodes if any(r.call_id == "c3" for r, _ in n.received))
            bye = invite(caller, listen, "c3").replace(b"INVITE sip", b"BYE sip", 1)
            bye = bye.replace(b"To: <sip:155@127.0.0.50>", b"To: <sip:155@127.0.0.50>;tag=n")
            bye = bye.replace(b"CSeq: 1 INVITE", b"CSeq: 2 BYE")
            caller.sendto(bye, listen)
            assert (await _answer(caller)).status == 200
            assert target.received[-1][0].method == "BYE"
            assert dispatcher.chooser.chosen == {"node1": 5, "node2": 5}
        finally:
            await dispatcher.close()
            caller.close()

    asyncio.run(scenario())


def test_redirect_mode_answers_302_with_a_token_for_the_chosen_node() -> None:
    async def scenario() -> None:
        dispatcher, nodes, caller, listen = await _setup(DispatchMode.REDIRECT)
        try:
            await asyncio.sleep(0.1)
            caller.sendto(invite(caller, listen, "r1"), listen)
            answer = await _answer(caller)
            assert answer.status == 302
            contact = answer.contacts()[0]
            uri = contact.sip_uri()
            node = next(n for n, c in dispatcher.chooser.chosen.items() if c == 1)
            token = uri.params.get("ss-token")
            Tokens(SECRET).check(token, node, "r1", time.time())
            assert uri.user == "155"
            assert not any(n.received for n in nodes)  # nothing forwarded
            # Not a dispatch call: the ACK of the 302 ends here.
            assert dispatcher.stats["redirected"] == 1
        finally:
            await dispatcher.close()
            caller.close()

    asyncio.run(scenario())


def test_no_node_up_is_503() -> None:
    async def scenario() -> None:
        dispatcher, _, caller, listen = await _setup(DispatchMode.PROXY)
        dispatcher.up = lambda: []
        try:
            await asyncio.sleep(dispatcher.chooser.probe_interval + 0.1)
            caller.sendto(invite(caller, listen, "x1"), listen)
            assert (await _answer(caller)).status == 503
        finally:
            await dispatcher.close()
            caller.close()

    asyncio.run(scenario())


def test_the_dispatch_settings_are_checked(tmp_path: Path) -> None:
    def load(text: str) -> NodeConfig:
        path = tmp_path / "node.toml"
        path.write_text(text)
        return load_config(path)

    config = load(
        'cluster_secret = "x"\ndispatch_mode = "proxy"\ndispatch_listen = "127.0.0.20:5060"\n'
    )
    assert (config.dispatch_mode, config.dispatch_token_lifetime) == ("proxy", 30.0)
    for text, error in [
        ('dispatch_mode = "round-robin"', "one of off, redirect, proxy"),
        ('cluster_secret = "x"\ndispatch_mode = "redirect"', "needs dispatch_listen"),
        ('dispatch_mode = "proxy"\ndispatch_listen = "127.0.0.20:5060"', "cluster_secret"),
        ('dispatch_listen = "127.0.0.20"', "HOST:PORT"),
        ("dispatch_token_lifetime = 0", "positive"),
        ("dispatch_require_token = true", "cluster_secret"),
    ]:
        with pytest.raises(ConfigError, match=error):
            load(text)
