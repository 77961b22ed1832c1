"""SIP over TLS on loopback: the node's endpoint with a TLS listener, Python's ``ssl`` as the
client, certificates made by ``openssl`` at test time.

A request over TLS is answered on its connection with a TLS Via; plain TCP bytes to the TLS
port are dropped (the connection closed, the endpoint unharmed); a client certificate not
signed by ``tls_ca`` is refused at the handshake, a signed one is recorded as the
connection's fingerprint; new certificate files are presented by the next connection without
a restart, and a pair that does not load leaves the previous one in service.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from e2e.sipp import free_port
from smartswitch.b2bua.application import SipApplication
from smartswitch.runtime.config import ConfigError, load_config
from smartswitch.sip.framing import StreamFramer
from smartswitch.sip.message import Response, parse_message
from smartswitch.sip.transaction import Address
from smartswitch.transport.endpoint import SipEndpoint
from smartswitch.transport.tls import (
    TlsContexts,
    TlsError,
    TlsSettings,
    fingerprint,
)
from tlscerts import Ca, Issued, fingerprint_of, make_ca
from transport.test_endpoint import HOST, WAIT, NoCalls, options

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ca, Issued, Ca]:
    """The node's CA and its certificate, and a second CA nobody trusts."""
    base = tmp_path_factory.mktemp("pki")
    ca = make_ca(base / "ca")
    node = ca.issue(base / "node", "node")
    rogue = make_ca(base / "rogue", "rogue-ca")
    return ca, node, rogue


async def _tls_switch(settings: TlsSettings) -> tuple[SipEndpoint, TlsContexts]:
    port = free_port(HOST)
    tls_port = free_port(HOST)
    sip = SipApplication(NoCalls(), {"udp": (HOST, port), "tcp": (HOST, port)})
    endpoint = SipEndpoint(sip.layer, asyncio.get_running_loop())
    await endpoint.listen(HOST, port, HOST)
    contexts = TlsContexts(settings)
    await endpoint.listen_tls(HOST, tls_port, contexts)
    return endpoint, contexts


def _client(ca: Path, cert: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


async def _answer(reader: asyncio.StreamReader) -> Response:
    framer = StreamFramer()
    while True:
        data = await asyncio.wait_for(reader.read(4096), WAIT)
        assert data, "the connection closed before an answer"
        messages = framer.feed(data)
        if messages:
            response = parse_message(messages[0], require_content_length=True)
            assert isinstance(response, Response)
            return response


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 4 * WAIT))


def test_an_options_over_tls_is_answered_on_its_connection(pki: tuple[Ca, Issued, Ca]) -> None:
    ca, node, _ = pki

    async def test() -> None:
        endpoint, _ = await _tls_switch(TlsSettings(node.cert, node.key))
        reader, writer = await asyncio.open_connection(
            HOST, endpoint.tls_port, ssl=_client(ca.cert)
        )
        writer.write(options(endpoint.tls_port, 1, "TLS"))
        response = await _answer(reader)
        assert response.status == 200
        assert response.top_via.transport == "TLS"
        (key,) = endpoint.connections
        assert key.transport == "tls"
        # The address we advertise to a TLS destination names the TLS port.
        assert endpoint.local_for(key) == (HOST, endpoint.tls_port)
        assert endpoint.rx_by_kind == {b"OPTIONS": 1}
        writer.close()
        endpoint.close()

    _run(test)


def test_plain_tcp_to_the_tls_port_is_dropped(pki: tuple[Ca, Issued, Ca]) -> None:
    ca, node, _ = pki

    async def test() -> None:
        endpoint, _ = await _tls_switch(TlsSettings(node.cert, node.key))
        reader, writer = await asyncio.open_connection(HOST, endpoint.tls_port)
        writer.write(options(endpoint.tls_port, 1, "TCP"))
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, nothing said
        writer.close()
        assert endpoint.rx_by_kind == {}  # nothing reached the SIP core
        assert not endpoint.connections
        # Still serving TLS.
        reader, writer = await asyncio.open_connection(
            HOST, endpoint.tls_port, ssl=_client(ca.cert)
        )
        writer.write(options(endpoint.tls_port, 2, "TLS"))
        assert (await _answer(reader)).status == 200
        writer.close()
        endpoint.close()

    _run(test)


def test_client_certificates_are_verified_against_tls_ca(
    pki: tuple[Ca, Issued, Ca], tmp_path: Path
) -> None:
    """Mutual TLS: a certificate of another CA fails the handshake; one of ``tls_ca`` is
    accepted and known by its fingerprint; no certificate at all is accepted (a phone)."""
    ca, node, rogue = pki
    peer = ca.issue(tmp_path, "peer")
    impostor = rogue.issue(tmp_path, "impostor")

    async def test() -> None:
        endpoint, _ = await _tls_switch(TlsSettings(node.cert, node.key, ca=ca.cert))
        reader, writer = await asyncio.open_connection(
            HOST, endpoint.tls_port, ssl=_client(ca.cert, impostor)
        )
        # TLS 1.3: the client learns of the refusal on its first read.
        writer.write(options(endpoint.tls_port, 1, "TLS"))
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            data = await asyncio.wait_for(reader.read(), WAIT)
            assert data == b""  # closed without an answer counts as refused too
            raise ConnectionResetError
        writer.close()
        assert endpoint.rx_by_kind == {}

        reader, writer = await asyncio.open_connection(
            HOST, endpoint.tls_port, ssl=_client(ca.cert, peer)
        )
        writer.write(options(endpoint.tls_port, 2, "TLS"))
        assert (await _answer(reader)).status == 200
        (source,) = endpoint.connections
        assert endpoint.peer_certificate(source) == fingerprint_of(peer.cert)
        writer.close()

        reader, writer = await asyncio.open_connection(
            HOST, endpoint.tls_port, ssl=_client(ca.cert)
        )
        writer.write(options(endpoint.tls_port, 3, "TLS"))
        assert (await _answer(reader)).status == 200
        anonymous = [a for a in endpoint.connections if a != source]
        assert anonymous and endpoint.peer_certificate(anonymous[0]) is None
        writer.close()
        endpoint.close()

    _run(test)


def test_new_certificate_files_are_presented_by_the_next_connection(
    pki: tuple[Ca, Issued, Ca], tmp_path: Path
) -> None:
    ca, _, _ = pki
    first = ca.issue(tmp_path / "first", "first")
    second = ca.issue(tmp_path / "second", "second")
    live = Issued(tmp_path / "live.crt", tmp_path / "live.key")
    shutil.copy(first.cert, live.cert)
    shutil.copy(first.key, live.key)

    async def presented(port: int) -> str:
        _, writer = await asyncio.open_connection(HOST, port, ssl=_client(ca.cert))
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True)
        writer.close()
        return fingerprint(der)

    async def test() -> None:
        endpoint, contexts = await _tls_switch(TlsSettings(live.cert, live.key))
        assert await presented(endpoint.tls_port) == fingerprint_of(first.cert)
        assert not contexts.reload_if_changed()  # nothing changed
        shutil.copy(second.cert, live.cert)
        shutil.copy(second.key, live.key)
        os.utime(live.cert, ns=(1, 1))  # a different stamp even within one clock tick
        assert contexts.reload_if_changed()
        assert await presented(endpoint.tls_port) == fingerprint_of(second.cert)
        # A key that does not match its certificate: refused, the second pair stays.
        shutil.copy(first.key, live.key)
        os.utime(live.key, ns=(2, 2))
        assert not contexts.reload_if_changed()
        assert contexts.reload_failures == 1
        assert await presented(endpoint.tls_port) == fingerprint_of(second.cert)
        endpoint.close()

    _run(test)


def test_a_pair_that_does_not_load_is_refused_at_start_with_the_files_named(
    pki: tuple[Ca, Issued, Ca], tmp_path: Path
) -> None:
    ca, node, _ = pki
    other = ca.issue(tmp_path, "other")
    with pytest.raises(TlsError, match="cannot load the certificate"):
        TlsContexts(TlsSettings(node.cert, other.key))
    with pytest.raises(TlsError, match=r"missing\.crt: cannot read"):
        TlsContexts(TlsSettings(tmp_path / "missing.crt", node.key))


def test_tls_to_a_destination_opens_a_verified_connection(pki: tuple[Ca, Issued, Ca]) -> None:
    """A request to a TLS address with no connection opens one (verified against tls_ca)
    and the answer comes back on it."""
    ca, node, _ = pki

    async def test() -> None:
        server, _ = await _tls_switch(TlsSettings(node.cert, node.key))
        client, _ = await _tls_switch(TlsSettings(node.cert, node.key, ca=ca.cert))
        dest = Address("tls", HOST, server.tls_port)
        client.send(options(server.tls_port, 1, "TLS"), dest)

        async def answered() -> None:
            while not client.rx_by_kind:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(answered(), WAIT)
        assert client.rx_by_kind == {b"200": 1}
        assert list(client.connections) == [dest]
        server.close()
        client.close()

    _run(test)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tls_listen = "127.0.0.1:5061"\n', "tls_listen: needs tls_cert and tls_key"),
        ('tls_listen = "5061"\ntls_cert = "a"\ntls_key = "b"\n', "tls_listen: expected HOST:PORT"),
        ("flood_rate = -1\n", "flood_rate: must not be negative"),
    ],
)
def test_tls_and_flood_keys_are_checked_at_load(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    path.write_text('tls_listen = "0.0.0.0:5061"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n')
    config = load_config(path)
    assert (config.tls_listen, config.tls_cert, config.flood_rate) == ("0.0.0.0:5061", "c.pem", 50)
