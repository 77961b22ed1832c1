"""The asyncio side of the SIP core: sockets in, the sans-IO layer, sockets out.

Everything the core wants sent is drained after each input (a datagram, a framed TCP message, a
timer), and one ``loop.call_at`` is kept armed for the earliest deadline in the timer heap —
no task per transaction, no task per message.

**Where messages leave from.** The node listens on ``sip_listen``; it may *originate* from
another address (:meth:`SipEndpoint.originate_from`: the node's dedicated IP, or the shared
IP): then it has a second UDP socket bound to that address and the same port, and a request to
a destination it has not heard from on the listening socket (a B leg, an outbound
registration) leaves from there, with that address in its Via and Contact; the answers come
back to it. What arrives on the listening socket is answered from it, and so are the requests
of those dialogs (a BYE to the caller): a peer hears us from the address it reached us on.
Over TCP, a connection we open is bound to the originating address, and a connection keeps
the address it was made on. A wildcard listener already accepts on every local address; a
listener on one address gets a second TCP listener on the originating one.

**TLS** (:meth:`SipEndpoint.listen_tls`) is TCP with a TLS layer: the same connection class,
the same table of connections and the same framing; only the transport's name ("tls") and the
listening port (5061 by default) differ. Connections are keyed by the whole
:class:`~smartswitch.sip.transaction.Address` (transport, host, port), so a message for a TLS
destination never leaves on a plain TCP connection to the same host and port. What reaches the
TLS port without a valid handshake (plain TCP bytes, a refused certificate) never reaches the
SIP core: the handshake fails and the connection is closed. A request to an address we hold
a connection to (a phone's flow: its REGISTER's connection; a dialog's) leaves on that
connection; only with none is one opened (:attr:`SipEndpoint.tls` gives the client context).

**The shared IP** (:meth:`SipEndpoint.listen_shared`): a node of a fail-over cluster also
listens on the shared IP, bound with ``IP_FREEBIND`` so the socket is there before keepalived
puts the address on the interface. What arrives on it is answered from it (customers drop
answers from another address than the one they sent to). When the node originates from the
shared IP (its holder, with the "bind address" setting), that same socket is the originating
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.framing import StreamFramer
from smartswitch.sip.transaction import Address, TransactionLayer, shared_address
from smartswitch.transport.tls import TlsContexts, fingerprint

log = logging.getLogger("smartswitch.transport")

WILDCARDS = ("0.0.0.0", "::")
# Linux: bind an address that is not (or not yet) on this host: the shared IP, which the node
# holding it carries (IP_FREEBIND, ip(7); IPV6_FREEBIND, ipv6(7)).
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = 78
# Remote addresses that reached us on the listening socket (answered from there), at most.
MAX_HEARD = 65_536
# A TLS client that has not finished its handshake by then is cut off (a slow-handshake flood
# must not hold connections open).
TLS_HANDSHAKE_TIMEOUT = 5.0


def bound_socket(kind: int, host: str, port: int, *, freebind: bool) -> socket.socket:
    """A socket bound to ``host:port`` (large UDP buffers; ``freebind``: with
    ``IP_FREEBIND``, for an address this host may not carry yet, the shared IP)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if kind == socket.SOCK_DGRAM:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        if freebind:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class Origin:
    """The address new requests leave from, and its sockets."""

    host: str
    freebind: bool
    v6: bool
    udp: asyncio.DatagramTransport
    tcp_server: asyncio.Server | None
    #: The sockets are the shared IP's listener's (closed with it, not with the origin).
    borrowed: bool = False


@dataclass(slots=True)
class SharedListener:
    """The sockets on the shared IP."""

    host: str
    udp: asyncio.DatagramTransport
    tcp_server: asyncio.Server | None


def message_kind(data: bytes) -> bytes:
    """``b"INVITE"`` for a request, ``b"200"`` for a response: a slice of the first bytes, no
    parsing (O(1) per message).  Anything else is ``b"other"``, so garbage cannot grow the
    counters without bound."""
    if data.startswith(b"SIP/2.0 "):
        code = data[8:11]
        return code if code.isdigit() else b"other"
    end = data.find(b" ", 0, 17)
    method = data[:end]
    return method if end > 0 and method.isalpha() and method.isupper() else b"other"


# What the tap is told of each message: (transport, source, destination, bytes, wall time).
Tap = Callable[[str, tuple[str, int], tuple[str, int], bytes, float], None]


class SipEndpoint:
    def __init__(self, layer: TransactionLayer, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp_server: asyncio.Server | None = None
        self.connections: dict[Address, TcpConnection] = {}
        self._pending: dict[Address, list[bytes]] = {}
        self.tls: TlsContexts | None = None
        self.tls_server: asyncio.Server | None = None
        self.tls_port = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.stats = {"rx": 0, "tx": 0}
        # Messages by method (requests) or status code (responses), in and out, for /metrics.
        self.rx_by_kind: dict[bytes, int] = {}
        self.tx_by_kind: dict[bytes, int] = {}
        self._sources: dict[str, str] = {}
        self.port = 0
        self.advertised = ""
        self.listen_host = ""
        self.wildcard = False
        self.origin: Origin | None = None
        # Remotes heard on the listening socket while there is an origin: answered from it.
        self._heard: dict[tuple[str, int], None] = {}
        # Every message in and out, with the addresses on the wire (call capture); None, the
        # usual case, costs one attribute test per message.
        self.tap: Tap | None = None
        self.wall_offset = 0.0  # wall clock minus the loop's, for the tap's timestamps
        self.shared: SharedListener | None = None
        # Remotes heard last on the shared IP's socket: answered from it.
        self._heard_shared: dict[tuple[str, int], None] = {}

    def local_for(self, dest: Address) -> tuple[str, int]:
        """Our address as ``dest`` sees it (for Via and Contact): the originating address for
        a destination that did not reach us on the listening socket, else the listening
        address: the bound one, or for a wildcard bind the one the kernel routes from (a
        connected UDP socket sends nothing; the answer is cached). A TCP connection's own
        local address when there is one."""
        origin = self.origin
        port = self.tls_port if dest.transport == "tls" else self.port
        if dest.transport == "udp":
            shared = self.shared
            if shared is not None and (dest.host, dest.port) in self._heard_shared:
                return shared.host, self.port
            if origin is not None and self._from_origin(dest, origin):
                return origin.host, port
        else:
            conn = self.connections.get(dest)
            if conn is not None and conn.local_host:
                return conn.local_host, port
            if origin is not None and (":" in dest.host) == origin.v6:
                return origin.host, port
        if not self.wildcard:
            return self.advertised, port
        return self._routed_from(dest.host), port

    async def listen(self, host: str, port: int, advertised: str) -> None:
        """UDP and TCP on the same address."""
        self.port = port
        self.advertised = advertised
        self.listen_host = host
        self.wildcard = host in WILDCARDS
        if self.wildcard:
            self.layer.local_for = self.local_for
        # Large buffers ride out bursts while the loop is busy with other work.
        sock = bound_socket(socket.SOCK_DGRAM, host, port, freebind=False)
        self.udp, _ = await self.loop.create_datagram_endpoint(lambda: UdpProtocol(self), sock=sock)
        self.tcp_server = await self.loop.create_server(
            lambda: TcpConnection(self, None), host, port, reuse_address=True
        )

    async def listen_tls(self, host: str, port: int, contexts: TlsContexts) -> None:
        """A TLS listener (after :meth:`listen`, whose address is advertised); ``contexts``
        also serve the TLS connections we open. The contexts are reloaded in place
        (:meth:`TlsContexts.reload_if_changed`): nothing here changes on a reload."""
        self.tls = contexts
        self.tls_port = port
        self.tls_server = await self.loop.create_server(
            lambda: TcpConnection(self, None, "tls"),
            host,
            port,
            reuse_address=True,
            ssl=contexts.server,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
        )
        self.layer.local["tls"] = (self.advertised, port)

    async def originate_from(self, host: str | None, *, freebind: bool = False) -> None:
        """Send new requests from ``host`` (None: from the listening address, as without an
        origin). A second UDP socket is bound to ``host`` on the listening port (and a TCP
        listener, unless the node listens on a wildcard address, which already accepts
        there); ``freebind`` binds an address this host may not carry (yet): the shared IP.
        Raises OSError if ``host`` cannot be bound; the node then keeps the listening
        address."""
        current = self.origin
        if current is not None and (current.host, current.freebind) == (host, freebind):
            return
        if current is None and (host is None or host == self.listen_host):
            return
        self._close_origin()
        if host is None or host == self.listen_host:
            return  # listening there already: nothing to add
        shared = self.shared
        if shared is not None and host == shared.host:
            # Listening there already (the shared IP's freebind socket): send from it.
            self.origin = Origin(host, freebind, ":" in host, shared.udp, None, borrowed=True)
            self._heard.clear()
            self.layer.local_for = self.local_for
            log.info("originating from the shared IP %s", host)
            return
        udp_sock = bound_socket(socket.SOCK_DGRAM, host, self.port, freebind=freebind)
        tcp_server: asyncio.Server | None = None
        try:
            udp, _ = await self.loop.create_datagram_endpoint(
                lambda: UdpProtocol(self, origin=True), sock=udp_sock
            )
            if not self.wildcard:
                tcp_sock = bound_socket(socket.SOCK_STREAM, host, self.port, freebind=freebind)
                tcp_server = await self.loop.create_server(
                    lambda: TcpConnection(self, None), sock=tcp_sock
                )
        except BaseException:
            udp_sock.close()
            raise
        self.origin = Origin(host, freebind, ":" in host, udp, tcp_server)
        self._heard.clear()
        self.layer.local_for = self.local_for
        log.info("originating from %s (listening on %s)", host, self.listen_host)

    def _close_origin(self) -> None:
        origin = self.origin
        if origin is None:
            return
        self.origin = None
        self._heard.clear()
        if not origin.borrowed:
            origin.udp.close()
            if origin.tcp_server is not None:
                origin.tcp_server.close()
        keep = self.wildcard or self.shared is not None
        self.layer.local_for = self.local_for if keep else None

    async def listen_shared(self, host: str) -> None:
        """Listen on the shared IP too (UDP, and TCP unless the listener is a wildcard), on
        the listening port, bound with ``IP_FREEBIND``: ready before the address arrives.
        Call after :meth:`listen` and before :meth:`originate_from`."""
        if self.shared is not None:
            raise RuntimeError("already listening on the shared IP")
        if self.origin is not None:
            raise RuntimeError("listen on the shared IP before choosing the originating address")
        udp_sock = bound_socket(socket.SOCK_DGRAM, host, self.port, freebind=True)
        tcp_server: asyncio.Server | None = None
        try:
            udp, _ = await self.loop.create_datagram_endpoint(
                lambda: UdpProtocol(self, shared=True), sock=udp_sock
            )
            if not self.wildcard:
                tcp_sock = bound_socket(socket.SOCK_STREAM, host, self.port, freebind=True)
                tcp_server = await self.loop.create_server(
                    lambda: TcpConnection(self, None), sock=tcp_sock
                )
        except BaseException:
            udp_sock.close()
            raise
        self.shared = SharedListener(host, udp, tcp_server)
        self.layer.local_for = self.local_for
        log.info("listening on the shared IP %s:%d too", host, self.port)

    def heard_shared(self, addr: tuple[str, int], on_shared: bool) -> None:
        """A datagram from ``addr``: on the shared IP's socket (answered from there next),
        or elsewhere (no longer)."""
        key = (addr[0], addr[1])
        heard = self._heard_shared
        if not on_shared:
            if heard:
                heard.pop(key, None)
            return
        if heard.pop(key, 0) is None:
            heard[key] = None
            return
        if len(heard) >= MAX_HEARD:
            del heard[next(iter(heard))]
        heard[key] = None

    def _from_origin(self, dest: Address, origin: Origin) -> bool:
        """Whether a UDP message to ``dest`` leaves from the originating socket."""
        return (dest.host, dest.port) not in self._heard and (":" in dest.host) == origin.v6

    def heard(self, addr: tuple[str, int], on_origin: bool) -> None:
        """A datagram from ``addr`` on the listening (or the originating) socket: what we send
        it next leaves from that socket."""
        key = (addr[0], addr[1])
        heard = self._heard
        if on_origin:
            if heard:
                heard.pop(key, None)
            return
        if heard.pop(key, 0) is None:
            heard[key] = None  # the most recently heard last
            return
        if len(heard) >= MAX_HEARD:
            del heard[next(iter(heard))]  # the longest silent goes first
        heard[key] = None

    # --- input ---------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, local: tuple[str, int] | None = None) -> None:
        """A message from ``source``; ``local``: the address it reached (for the tap; None:
        the listening address)."""
        self.stats["rx"] += 1
        kind = message_kind(data)
        self.rx_by_kind[kind] = self.rx_by_kind.get(kind, 0) + 1
        now = self.loop.time()
        self.layer.receive(data, source, now)
        tap = self.tap
        if tap is not None:
            # After the core has handled it (a call it starts now exists), before what it
            # caused is sent: the capture keeps the order of the wire.
            if local is None:
                local = self._listening_for(source)
            tap(
                source.transport,
                (source.host, source.port),
                local,
                data,
                now + self.wall_offset,
            )
        self.flush()

    def _listening_for(self, peer: Address) -> tuple[str, int]:
        """The listening socket's address as ``peer`` reaches it (a wildcard: the route's)."""
        if not self.wildcard:
            return self.listen_host, self.port
        return self._routed_from(peer.host), self.port

    def _routed_from(self, host: str) -> str:
        source = self._sources.get(host)
        if source is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.connect((host, 9))
                    source = str(probe.getsockname()[0])
            except OSError:
                source = self.advertised
            self._sources[host] = source
        return source

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.handle_timer(self.loop.time())
        self.flush()

    def run(self, work: Callable[[float], None]) -> None:
        """Run ``work`` that starts outside any network or timer callback (a call's CDR made
        durable, a TCP connection that failed): with the loop's time, then send what it
        queued."""
        work(self.loop.time())
        self.flush()

    # --- output --------------------------------------------------------------------------------

    def flush(self) -> None:
        layer = self.layer
        out = layer.outgoing
        if out:
            layer.outgoing = []
            for data, dest in out:
                self.send(data, dest)
        deadline = layer.timers.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def send(self, data: bytes, dest: Address) -> None:
        self.stats["tx"] += 1
        kind = message_kind(data)
        self.tx_by_kind[kind] = self.tx_by_kind.get(kind, 0) + 1
        if dest.transport == "udp":
            shared = self.shared
            if shared is not None and (dest.host, dest.port) in self._heard_shared:
                shared.udp.sendto(data, (dest.host, dest.port))
                return
            origin = self.origin
            if origin is not None and self._from_origin(dest, origin):
                origin.udp.sendto(data, (dest.host, dest.port))
                if self.tap is not None:
                    self._tap_out(data, dest, (origin.host, self.port))
            elif self.udp is not None:
                self.udp.sendto(data, (dest.host, dest.port))
                if self.tap is not None:
                    self._tap_out(data, dest, self._listening_for(dest))
            return
        conn = self.connections.get(dest)
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)
            if self.tap is not None:
                self._tap_out(data, dest, conn.local)
            return
        pending = self._pending.get(dest)
        if pending is not None:
            pending.append(data)
            return
        self._pending[dest] = [data]
        self.loop.create_task(self._connect(dest))

    def _tap_out(self, data: bytes, dest: Address, local: tuple[str, int]) -> None:
        if self.tap is not None:
            self.tap(
                dest.transport,
                local,
                (dest.host, dest.port),
                data,
                self.loop.time() + self.wall_offset,
            )

    async def _connect(self, dest: Address) -> None:
        origin = self.origin
        local = None
        if origin is not None and (":" in dest.host) == origin.v6:
            local = (origin.host, 0)  # a connection we open leaves from the origin
        elif not self.wildcard and (":" in dest.host) == (":" in self.listen_host):
            # Listening on one address: connect from it, as UDP sends from it, rather than
            # from whatever address the kernel routes from (the Via names the listening one).
            local = (self.listen_host, 0)
        context = None
        if dest.transport == "tls":
            if self.tls is None:
                log.info("cannot reach %s:%s over TLS: no tls_cert", dest.host, dest.port)
                self._pending.pop(dest, None)
                self.run(lambda now: self.layer.transport_error(dest, now))
                return
            context = self.tls.client
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: TcpConnection(self, dest, dest.transport),
                    dest.host,
                    dest.port,
                    local_addr=local,
                    ssl=context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if context else None,
                ),
                timeout=5.0,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.info(
                "cannot connect to %s:%s over %s: %s",
                dest.host,
                dest.port,
                dest.transport.upper(),
                exc,
            )
            self._pending.pop(dest, None)
            self.run(lambda now: self.layer.transport_error(dest, now))

    def peer_certificate(self, source: Address) -> str | None:
        """The SHA-256 fingerprint of the certificate the TLS connection ``source`` came on
        presented, once it verified against ``tls_ca``; None for anything else."""
        conn = self.connections.get(source)
        return conn.certificate if conn is not None else None

    def connection_made(self, conn: TcpConnection, key: Address) -> None:
        self.connections[key] = conn
        for data in self._pending.pop(key, []):
            assert conn.transport is not None
            conn.transport.write(data)
            if self.tap is not None:
                self._tap_out(data, key, conn.local)

    def connection_lost(self, conn: TcpConnection, key: Address) -> None:
        if self.connections.get(key) is conn:
            del self.connections[key]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.udp is not None:
            self.udp.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
        if self.tls_server is not None:
            self.tls_server.close()
        self._close_origin()
        shared, self.shared = self.shared, None
        if shared is not None:
            shared.udp.close()
            if shared.tcp_server is not None:
                shared.tcp_server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint, origin: bool = False, shared: bool = False) -> None:
        self.endpoint = endpoint
        self.origin = origin  # the originating socket's, else the listening one's
        self.shared = shared  # the shared IP's socket (the originating one too, when borrowed)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        endpoint = self.endpoint
        if endpoint.shared is not None:
            endpoint.heard_shared(addr, self.shared)
        origin = endpoint.origin
        if origin is not None:
            endpoint.heard(addr, self.origin or (self.shared and origin.borrowed))
        # One Address per remote, not per datagram: each server transaction keeps its
        # request's source while it lingers (32 s), and an Address, a tuple subclass, is never
        # untracked by the garbage collector.
        source = shared_address("udp", addr[0], addr[1])
        if self.origin and endpoint.tap is not None and origin is not None:
            endpoint.receive(data, source, (origin.host, endpoint.port))
            return
        endpoint.receive(data, source)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transaction timers deal with the silence.
        log.debug("UDP error: %s", exc)


class TcpConnection(asyncio.Protocol):
    """One TCP or TLS connection, accepted or opened by us; messages framed by
    Content-Length. For TLS, asyncio calls :meth:`connection_made` once the handshake is
    done: a failed handshake never gets here."""

    def __init__(self, endpoint: SipEndpoint, key: Address | None, kind: str = "tcp") -> None:
        self.endpoint = endpoint
        self.key = key
        self.kind = kind
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        self.local_host = ""  # our address on this connection
        self.local: tuple[str, int] = ("", 0)  # and port
        self.certificate: str | None = None  # the verified client certificate's fingerprint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they do implement it.
        self.transport = cast(asyncio.Transport, transport)
        local = self.transport.get_extra_info("sockname")
        if isinstance(local, tuple) and local:
            self.local_host = str(local[0])
            self.local = (self.local_host, int(local[1]))
        if self.key is None:
            peer = self.transport.get_extra_info("peername")
            self.key = Address(self.kind, str(peer[0]), int(peer[1]))
        if self.kind == "tls":
            tls = self.transport.get_extra_info("ssl_object")
            der = tls.getpeercert(binary_form=True) if tls is not None else None
            # Only a chain that verified against tls_ca gets this far with a certificate.
            self.certificate = fingerprint(der) if der else None
        self.endpoint.connection_made(self, self.key)

    def data_received(self, data: bytes) -> None:
        assert self.key is not None
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            log.info("closing %s connection from %s: %s", self.kind, self.key, exc.reason)
            if self.transport is not None:
                self.transport.close()
            return
        source = self.key
        for message in messages:
            self.endpoint.receive(message, source, self.local)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.key is not None:
            self.endpoint.connection_lost(self, self.key)
