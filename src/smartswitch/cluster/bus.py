"""The cluster bus, client side: signed JSON requests from this node to another.

One :class:`BusClient` per node, shared by everything that talks to the other nodes
(heartbeats, registration sync, status, and the later kinds: reservations, failure counters,
VIP state, promotion epochs). Each kind is a path on the peer (:data:`PATHS`).

Why httpx: it is an HTTP/1.1 client on asyncio (h11, the same parser uvicorn answers with)
with a keep-alive pool per peer, separate connect/read/pool timeouts and no thread per
request. Writing the same on asyncio streams would mean our own response framing, chunked
bodies, connection reuse and its races; that is a library's job, and httpx was already a test
dependency. The client ignores proxy settings from the environment (``trust_env=False``): bus
traffic goes straight to the nodes' dedicated addresses.

Errors are typed (:class:`BusError` and its kinds): a caller tells a peer that is down
(:class:`PeerUnreachable`, :class:`PeerTimeout`) from one that refused our signature
(:class:`PeerRefused`: wrong secret, or a clock more than 30 s off), one that failed
(:class:`PeerFailed`) and one whose answer cannot be trusted or read (:class:`BadAnswer`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Self

import httpx

from smartswitch.cluster.signing import BusAuthError, Signer

__all__ = [
    "PATHS",
    "BadAnswer",
    "BusClient",
    "BusError",
    "MessageError",
    "Peer",
    "PeerFailed",
    "PeerRefused",
    "PeerTimeout",
    "PeerUnreachable",
    "Peers",
]


class Peer(NamedTuple):
    """Another node as the bus reaches it: its name (signed as the recipient) and its HTTP
    address on the dedicated IP (``host:port``)."""

    name: str
    address: str


class _Paths(NamedTuple):
    heartbeat: str = "/cluster/heartbeat"
    members: str = "/cluster/members"
    status: str = "/cluster/status"
    registrations: str = "/cluster/registrations"
    reservations: str = "/cluster/reservations"


PATHS = _Paths()
"""Where each message kind is posted (or read) on a peer; one place for client and server."""

Peers = Callable[[], Awaitable[Sequence[tuple[str, str]]]]
"""The cluster's nodes as (name, bus address) pairs, this node possibly among them; a
:class:`Peer` is such a pair."""


class BusError(Exception):
    """A request on the bus that did not get a usable answer."""

    def __init__(self, peer: Peer, path: str, detail: str) -> None:
        super().__init__(f"{peer.name} ({peer.address}) {path}: {detail}")
        self.peer = peer
        self.path = path
        self.detail = detail


class PeerUnreachable(BusError):
    """No connection, or it broke: the peer is down or the network is."""


class PeerTimeout(BusError):
    """No answer in time."""


class PeerRefused(BusError):
    """The peer refused our request (401): ``reason`` is its :class:`Refusal` value."""

    def __init__(self, peer: Peer, path: str, reason: str) -> None:
        super().__init__(peer, path, f"refused ({reason})")
        self.reason = reason


class PeerFailed(BusError):
    """The peer answered with another error status."""

    def __init__(self, peer: Peer, path: str, status: int, detail: str) -> None:
        super().__init__(peer, path, f"{status} {detail}")
        self.status = status


class BadAnswer(BusError):
    """An answer that is not signed by the peer for this request, or is not JSON."""


class MessageError(Exception):
    """Raised by a bus handler for a signed request it cannot take: answered with ``status``
    (422 for a message it cannot read, 403 for a node speaking for another, 409 for a kind
    this node does not serve)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    return str(data.get("detail", data))[:200] if isinstance(data, dict) else str(data)[:200]


class BusClient:
    """Sends signed JSON to other nodes: ``await client.post(peer, PATHS.heartbeat, {...})``.

    ``timeout`` bounds a whole request unless a call gives its own; ``connect_timeout`` bounds
    the connection (a dead host on a real network never answers the SYN). Connections are kept
    alive and reused. ``transport`` is for tests (an ``httpx.ASGITransport``).
    """

    def __init__(
        self,
        signer: Signer,
        *,
        timeout: float = 2.0,
        connect_timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.signer = signer
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.clock = clock
        self._http = httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=128),
        )

    @property
    def node(self) -> str:
        return self.signer.node

    async def get(self, peer: Peer, path: str, *, timeout: float | None = None) -> Any:
        return await self.request("GET", peer, path, None, timeout=timeout)

    async def post(
        self, peer: Peer, path: str, payload: Any, *, timeout: float | None = None
    ) -> Any:
        return await self.request("POST", peer, path, payload, timeout=timeout)

    async def request(
        self,
        method: str,
        peer: Peer,
        path: str,
        payload: Any,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Send ``payload`` (JSON, none for a GET) and return the peer's JSON answer."""
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        signed = self.signer.sign(method, path, body, peer.name, self.clock())
        total = self.timeout if timeout is None else timeout
        limits = httpx.Timeout(total, connect=min(total, self.connect_timeout))
        headers = {**signed, "Content-Type": "application/json"}
        try:
            async with asyncio.timeout(total):  # httpx bounds each step; this, the whole
                response = await self._http.request(
                    method,
                    f"http://{peer.address}{path}",
                    content=body,
                    headers=headers,
                    timeout=limits,
                )
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise PeerTimeout(peer, path, f"no answer within {total:g} s") from exc
        except httpx.TransportError as exc:
            raise PeerUnreachable(peer, path, str(exc) or type(exc).__name__) from exc
        if response.status_code == 401:
            raise PeerRefused(peer, path, _detail(response))
        if not response.is_success:
            raise PeerFailed(peer, path, response.status_code, _detail(response))
        try:
            self.signer.check_response(
                signed, response.status_code, response.headers, response.content
            )
        except BusAuthError as exc:
            raise BadAnswer(peer, path, str(exc)) from None
        try:
            return response.json()
        except ValueError as exc:
            raise BadAnswer(peer, path, f"not JSON: {exc}") from None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
