"""The dispatcher on the dispatch address, and the gate of a node behind it.

:class:`Dispatcher` listens (UDP) on ``dispatch_listen`` (in a VIP deployment the shared IP,
received only by its holder; on one host, any address in front of several node processes).
For each new INVITE it asks the :class:`~smartswitch.cluster.dispatch.Chooser` for a node and:

* ``redirect``: answers ``302 Moved Temporarily`` with a Contact at the node's SIP address,
  carrying a signed token (``;ss-token=...`` in the URI, so the caller's new INVITE brings it
  back in its Request-URI). The ACK of the 302 ends there.
* ``proxy``: forwards the INVITE statelessly from the **forwarding socket** (bound to this
  node's dedicated IP, the address the other nodes trust), with its own Via on top (whose
  ``ss-c`` parameter names the caller's address, so no state is needed to send the answers
  back) and ``X-Smartswitch-Source: ip:port``. Answers come back to the forwarding socket; the
  top Via is removed and they go to the caller from the dispatch address. The node's Contact
  then takes the caller's in-dialog requests straight to the node; those a caller still sends
  here (one that ignores the Contact, like sipp's built-in UAC), and a CANCEL, follow the
  Call-ID to the same node (a bounded table of recent Call-IDs, the only state kept).

Every node is probed with SIP OPTIONS from the forwarding socket every ``probe_interval``;
the chooser is fed the membership's up nodes at the same pace.

:class:`NodeGate` is a node's side (``SipApplication.gate``): the source header believed only
from a member's dedicated IP, and (``dispatch_require_token``) an INVITE from anyone else
refused 403 unless its Request-URI carries a valid token for this node and this call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from typing import Any, cast

from smartswitch.b2bua.ports import Rejection
from smartswitch.cluster.dispatch import (
    SOURCE_HEADER,
    TOKEN_PARAM,
    Chooser,
    DispatchMode,
    NoNode,
    SourceTrust,
    Target,
    TokenError,
    Tokens,
)
from smartswitch.cluster.membership import Heartbeat
from smartswitch.sip.errors import SipParseError
from smartswitch.sip.message import Request, Response, make_response, parse_message
from smartswitch.sip.transaction import Address, shared_address
from smartswitch.sip.uri import Via
from smartswitch.transport.endpoint import bound_socket

__all__ = ["Dispatcher", "NodeGate"]

log = logging.getLogger("smartswitch.runtime.dispatcher")

_AFFINITY_MAX = 65_536
"""Call-IDs remembered for CANCELs and in-dialog requests sent to the dispatch address."""


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class NodeGate:
    """A node's check of new INVITEs when a dispatcher fronts the cluster."""

    def __init__(
        self,
        name: str,
        trust: SourceTrust,
        tokens: Tokens | None,
        require_token: bool,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.trust = trust
        self.tokens = tokens
        self.require_token = require_token
        self.wall = wall
        self.stats = {"forwarded": 0, "forged_header": 0, "token_ok": 0, "token_refused": 0}

    def metrics(self) -> str:
        """``/metrics`` lines: INVITEs with a believed or an ignored source header, tokens."""
        name = "smartswitch_dispatch_gate_total"
        return (
            f"# HELP {name} New INVITEs checked by the dispatch gate, by outcome.\n"
            f"# TYPE {name} counter\n"
            + "".join(f'{name}{{outcome="{k}"}} {v}\n' for k, v in self.stats.items())
        )

    def admit(self, request: Request, source: Address, now: float) -> Address | Rejection:
        header = request.headers.get(SOURCE_HEADER)
        if header is not None:
            # Never relayed, never believed twice: the header goes whatever its verdict.
            request.headers.remove(SOURCE_HEADER)
            real = self.trust.real_source(header, (source.host, source.port))
            if real is not None:
                self.stats["forwarded"] += 1
                return shared_address(source.transport, real[0], real[1])
            self.stats["forged_header"] += 1
        if not self.require_token or self.trust.is_member(source.host):
            return source
        assert self.tokens is not None
        param = request.sip_uri.params.get(TOKEN_PARAM)
        try:
            self.tokens.check(param, self.name, request.call_id, self.wall())
        except TokenError as exc:
            self.stats["token_refused"] += 1
            return Rejection(exc.status, f"Forbidden ({exc})")
        self.stats["token_ok"] += 1
        return source


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, receive: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.receive = receive
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.receive(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # An ICMP unreachable from a dead node: its probes go unanswered, which is the signal.
        log.debug("dispatcher socket: %s", exc)


class Dispatcher:
    """The dispatch address's UDP socket, the forwarding socket, probes and the chooser."""

    def __init__(
        self,
        mode: DispatchMode,
        listen: tuple[str, int],
        forward_host: str,
        up: Callable[[], Iterable[Heartbeat]],
        tokens: Tokens | None,
        attached: Callable[[str, int], Collection[str] | None] = lambda host, port: None,
        *,
        chooser: Chooser | None = None,
        wall: Callable[[], float] = time.time,
        freebind: bool = False,
    ) -> None:
        """``up``: the heartbeats of the nodes up now (the membership); ``attached``: the
        nodes a caller at this address is attached to (None: any). ``freebind``: the
        dispatch address is the shared IP, bound before keepalived brings it (every node
        runs a dispatcher; only the holder receives)."""
        self.mode = mode
        self.listen = listen
        self.freebind = freebind
        self.forward_host = forward_host
        self.up = up
        self.tokens = tokens
        self.attached = attached
        self.chooser = chooser or Chooser()
        self.wall = wall
        self._front = _Socket(self._from_caller)
        self._back = _Socket(self._from_node)
        self._forward_address = (forward_host, 0)
        self._affinity: OrderedDict[str, Target] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._probe_n = 0
        self.stats = {
            "invites": 0,
            "redirected": 0,
            "forwarded": 0,
            "answers": 0,
            "no_node": 0,
            "bad": 0,
        }

    def metrics(self) -> str:
        """``/metrics`` lines: calls sent to each node, and what the dispatcher did."""
        chosen = "smartswitch_dispatch_chosen_total"
        events = "smartswitch_dispatch_messages_total"
        lines = [
            f"# HELP {chosen} New calls sent to each node by this dispatcher.",
            f"# TYPE {chosen} counter",
            *(f'{chosen}{{node="{n}"}} {c}' for n, c in sorted(self.chooser.chosen.items())),
            f"# HELP {events} Messages the dispatcher handled, by kind.",
            f"# TYPE {events} counter",
            *(f'{events}{{kind="{k}"}} {v}' for k, v in self.stats.items()),
        ]
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        front = bound_socket(socket.SOCK_DGRAM, *self.listen, freebind=self.freebind)
        try:
            await loop.create_datagram_endpoint(lambda: self._front, sock=front)
        except BaseException:
            front.close()
            raise
        await loop.create_datagram_endpoint(lambda: self._back, local_addr=(self.forward_host, 0))
        assert self._back.transport is not None
        sockname = self._back.transport.get_extra_info("sockname")
        self._forward_address = (sockname[0], sockname[1])
        self._task = asyncio.create_task(self._run(), name="dispatcher")
        log.info(
            "dispatcher (%s) on %s, forwarding from %s",
            self.mode.value,
            _hostport(*self.listen),
            _hostport(*self._forward_address),
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for sock in (self._front, self._back):
            if sock.transport is not None:
                sock.transport.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            try:
                self.chooser.update(self.up())
                for target in self.chooser.to_probe():
                    self._probe(target, now)
            except Exception:
                log.exception("dispatcher: probing failed")
            await asyncio.sleep(self.chooser.probe_interval)

    def _probe(self, target: Target, now: float) -> None:
        self._probe_n += 1
        host, port = self._forward_address
        me = _hostport(host, port)
        data = (
            f"OPTIONS sip:{target.sip_address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {me};branch=z9hG4bK-ssprobe-{self._probe_n}\r\n"
            f"From: <sip:dispatcher@{me}>;tag=ssd{self._probe_n}\r\n"
            f"To: <sip:{target.sip_address}>\r\n"
            f"Call-ID: ss-probe-{self._probe_n}-{target.node}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        self.chooser.probe_sent(target.node, now)
        self._send_back(data, _split(target.sip_address))

    # --- what callers send ----------------------------------------------------------------------

    def _from_caller(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            message = parse_message(data)
            if isinstance(message, Response):
                return  # answers belong to the nodes' own sockets
            self._request(message, addr)
        except (SipParseError, ValueError) as exc:
            self.stats["bad"] += 1
            log.debug("dispatcher: bad message from %s: %s", addr, exc)

    def _request(self, request: Request, addr: tuple[str, int]) -> None:
        method = request.method
        loop_now = asyncio.get_running_loop().time()
        call_id = request.call_id
        if request.to.tag or method in ("ACK", "CANCEL"):
            target = self._affinity.get(call_id)
            if target is not None and self.mode is DispatchMode.PROXY:
                self._forward(request, addr, target)
            elif method not in ("ACK",):
                self._answer(request, addr, 481, "Call/Transaction Does Not Exist")
            return
        if method == "OPTIONS":
            self._answer(request, addr, 200, "OK")
            return
        if method == "INVITE":
            self.stats["invites"] += 1
        target = self._affinity.get(call_id)  # a retransmission goes where the first went
        if target is None:
            try:
                target = self.chooser.choose(loop_now, self.attached(*addr))
            except NoNode:
                self.stats["no_node"] += 1
                self._answer(request, addr, 503, "Service Unavailable")
                return
            self._affinity[call_id] = target
            if len(self._affinity) > _AFFINITY_MAX:
                self._affinity.popitem(last=False)
        if self.mode is DispatchMode.REDIRECT:
            self._redirect(request, addr, target)
        else:
            self._forward(request, addr, target)

    def _redirect(self, request: Request, addr: tuple[str, int], target: Target) -> None:
        assert self.tokens is not None
        token = self.tokens.make(target.node, request.call_id, self.wall())
        user = request.sip_uri.user
        uri = f"sip:{user + '@' if user else ''}{target.sip_address};{TOKEN_PARAM}={token}"
        response = make_response(request, 302, "Moved Temporarily", self._tag(request))
        response.headers.add("Contact", f"<{uri}>")
        self.stats["redirected"] += 1
        self._send_front(response.to_bytes(), self._reply_to(request, addr))

    def _forward(self, request: Request, addr: tuple[str, int], target: Target) -> None:
        max_forwards = request.headers.get("max-forwards")
        if max_forwards is not None:
            hops = int(max_forwards.strip()) if max_forwards.strip().isdigit() else 70
            if hops <= 0:
                self._answer(request, addr, 483, "Too Many Hops")
                return
            request.headers.set("Max-Forwards", str(hops - 1))
        request.headers.remove(SOURCE_HEADER)  # whatever the caller wrote is not passed on
        request.headers.add(SOURCE_HEADER, _hostport(*addr))
        # The same branch for a retransmission, its CANCEL and the ACK of a failure (all
        # carry the caller's branch), so the node matches them to the INVITE's transaction.
        digest = hashlib.sha1(
            (request.top_via.params.get("branch") or "").encode() + request.call_id.encode()
        ).hexdigest()[:20]
        me = _hostport(*self._forward_address)
        request.headers.add(
            "Via",
            f"SIP/2.0/UDP {me};branch=z9hG4bK-ssd{digest};ss-c={_hostport(*addr)}",
            first=True,
        )
        request.invalidate()
        self.stats["forwarded"] += 1
        self._send_back(request.to_bytes(), _split(target.sip_address))

    # --- what nodes send back -------------------------------------------------------------------

    def _from_node(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except (SipParseError, ValueError):
            self.stats["bad"] += 1
            return
        if not isinstance(message, Response):
            return
        call_id = message.call_id
        if call_id.startswith("ss-probe-"):
            node = call_id.split("-", 3)[-1]
            self.chooser.probe_answered(node, asyncio.get_running_loop().time())
            return
        vias = message.headers.get_lines("via")
        if not vias:
            return
        ours = Via.parse(vias[0].split(",")[0])
        caller = ours.params.get("ss-c")
        if not caller:
            return
        message.headers.remove_first("via")
        message.invalidate()
        self.stats["answers"] += 1
        self._send_front(message.to_bytes(), _split(caller))

    # --- helpers --------------------------------------------------------------------------------

    def _tag(self, request: Request) -> str:
        return hashlib.sha1(request.call_id.encode()).hexdigest()[:12]

    def _reply_to(self, request: Request, addr: tuple[str, int]) -> tuple[str, int]:
        """RFC 3261 18.2.2 with RFC 3581: to where it came from when the caller asked with
        rport or sent from elsewhere than its Via; here always the packet's source, which is
        both for the callers we serve over UDP."""
        return addr

    def _answer(self, request: Request, addr: tuple[str, int], status: int, reason: str) -> None:
        response = make_response(request, status, reason, self._tag(request))
        self._send_front(response.to_bytes(), self._reply_to(request, addr))

    def _send_front(self, data: bytes, dest: tuple[str, int]) -> None:
        if self._front.transport is not None:
            self._front.transport.sendto(data, dest)

    def _send_back(self, data: bytes, dest: tuple[str, int]) -> None:
        if self._back.transport is not None:
            self._back.transport.sendto(data, dest)
