"""Nodes are rows of the replicated configuration, so every node knows the others.

Each node registers itself on the primary when it starts (and again whenever its addresses
change); replication carries the row to every node. ``smartswitch cluster status`` asks each
registered node for its live state on the cluster bus (:func:`ask_status`, a signed request).

Transitional, until the web layer mounts the bus router and the runtime builds the bus client
(docs/cluster.md, "The cluster bus"): :func:`status_token`, :func:`ask_node` and
:class:`BearerClient` are the static bearer token the bus replaces; they go with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from smartswitch.cluster.bus import PATHS, BusClient, BusError, Peer, PeerFailed, PeerUnreachable
from smartswitch.store.schema import NodeRow


def database_address(url: str | None) -> str:
    """host:port of a node's database (from its URL), as the other nodes reach it: what a
    node reports in its status, so that ``cluster promote`` can name every database."""
    if not url:
        return ""
    parsed = make_url(url)
    return f"{parsed.host or '127.0.0.1'}:{parsed.port or 3306}"


def status_token(cluster_secret: str) -> str:
    """The bearer token nodes present to each other's status endpoint (transitional)."""
    return hmac.new(cluster_secret.encode(), b"smartswitch-status", hashlib.sha256).hexdigest()


async def register_node(
    session: AsyncSession,
    name: str,
    dedicated_ip: str,
    sip_address: str,
    http_address: str,
    shared_ip: str,
    db_scheme: str,
) -> None:
    """Upsert this node's row (the caller commits, on the primary)."""
    row = await session.scalar(select(NodeRow).where(NodeRow.name == name))
    if row is None:
        row = NodeRow(name=name)
        session.add(row)
    row.dedicated_ip = dedicated_ip
    row.sip_address = sip_address
    row.http_address = http_address
    row.shared_ip = shared_ip
    row.db_scheme = db_scheme
    row.registered_at = datetime.now(UTC)


async def list_nodes(session: AsyncSession) -> list[NodeRow]:
    return list(await session.scalars(select(NodeRow).order_by(NodeRow.name)))


async def ask_status(client: BusClient, peer: Peer, timeout: float = 3.0) -> dict[str, Any]:
    """A node's own account of itself (``GET PATHS.status``), marked reachable or not."""
    try:
        data = await client.get(peer, PATHS.status, timeout=timeout)
    except BusError as exc:
        return {"node": peer.name, "reachable": False, "error": exc.detail}
    if not isinstance(data, dict):
        return {"node": peer.name, "reachable": False, "error": "status is not an object"}
    return {"reachable": True, **data, "node": peer.name}


async def ask_node(name: str, http_address: str, token: str) -> dict[str, Any]:
    """Transitional: :func:`ask_status` with the static bearer token."""

    def fetch() -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{http_address}/cluster/status",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=3) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    try:
        data = await asyncio.to_thread(fetch)
    except (OSError, ValueError) as exc:
        return {"node": name, "reachable": False, "error": str(exc)}
    return {"reachable": True, **data, "node": name}


class BearerClient:
    """Transitional: the bus client's ``get``/``post`` with the static bearer token, for the
    node-to-node endpoints of a web layer that does not verify signatures yet."""

    def __init__(self, node: str, token: str, timeout: float = 3.0) -> None:
        self.node = node
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            trust_env=False, headers={"Authorization": f"Bearer {token}"}
        )

    async def get(self, peer: Peer, path: str, *, timeout: float | None = None) -> Any:
        return await self._request("GET", peer, path, None, timeout)

    async def post(
        self, peer: Peer, path: str, payload: Any, *, timeout: float | None = None
    ) -> Any:
        return await self._request("POST", peer, path, payload, timeout)

    async def _request(
        self, method: str, peer: Peer, path: str, payload: Any, timeout: float | None
    ) -> Any:
        try:
            response = await self._http.request(
                method,
                f"http://{peer.address}{path}",
                json=payload,
                timeout=self.timeout if timeout is None else timeout,
            )
            response.raise_for_status()
            return response.json()
        except httpx.HTTPStatusError as exc:
            raise PeerFailed(peer, path, exc.response.status_code, exc.response.text) from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise PeerUnreachable(peer, path, str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._http.aclose()
