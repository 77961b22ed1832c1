"""Registrations cross the cluster node to node: a phone registered on node A gets the DID
calls that arrive on node B.

Each node is the authority for the bindings it took (``Binding.node``). A change of one of them
is pushed at once to every other node (batched per loop turn); a node that starts, or that a
push could not reach, gets the full set: pushes to it carry every binding of ours until one
succeeds, and a starting node pulls every other node's bindings. Expiry needs no message:
bindings carry their wall-clock expiry and every node drops them on time.

Both directions travel on the cluster bus (``PATHS.registrations``): pushes are signed
``POST``s taken by :meth:`RegistrationSync.take`, pulls signed ``GET``s answered by
:meth:`RegistrationSync.serve_own` with a signed answer. A node accepts only bindings owned by
the node that signed the request (or the answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from smartswitch.cluster.bus import PATHS, BusError, MessageError, Peer, Peers
from smartswitch.cluster.signing import SignedRequest
from smartswitch.registrar.location import (
    LOCAL,
    Binding,
    BindingChange,
    ChangeKind,
    LocationService,
)
from smartswitch.sip.transaction import Address

log = logging.getLogger("smartswitch.cluster.registrations")


class BusTransport(Protocol):
    """What the sync needs of a bus client (:class:`~smartswitch.cluster.bus.BusClient`)."""

    @property
    def node(self) -> str: ...

    async def get(self, peer: Peer, path: str, *, timeout: float | None = None) -> Any: ...

    async def post(
        self, peer: Peer, path: str, payload: Any, *, timeout: float | None = None
    ) -> Any: ...


def binding_to_dict(binding: Binding) -> dict[str, Any]:
    return {
        "aor": binding.aor,
        "contact": binding.contact,
        "expires_at": binding.expires_at,
        "call_id": binding.call_id,
        "cseq": binding.cseq,
        "source": list(binding.source),
        "registered_at": binding.registered_at,
        "user_agent": binding.user_agent,
        "q": binding.q,
        "node": binding.node,
    }


def binding_from_dict(data: dict[str, Any]) -> Binding:
    transport, host, port = data["source"]
    return Binding(
        aor=str(data["aor"]),
        contact=str(data["contact"]),
        expires_at=float(data["expires_at"]),
        call_id=str(data["call_id"]),
        cseq=int(data["cseq"]),
        source=Address(str(transport), str(host), int(port)),
        registered_at=float(data["registered_at"]),
        user_agent=str(data.get("user_agent") or ""),
        q=None if data.get("q") is None else float(data["q"]),
        node=str(data["node"]),
    )


def apply_changes(location: LocationService, sender: str, changes: list[dict[str, Any]]) -> int:
    """Take another node's changes; only bindings that node owns are accepted."""
    applied = 0
    for change in changes:
        binding = binding_from_dict(change["binding"])
        if binding.node != sender:
            continue
        if change["kind"] == ChangeKind.REMOVED:
            location.remove(binding.aor, binding.key, origin=sender)
        else:
            location.apply(binding, origin=sender)
        applied += 1
    return applied


class RegistrationSync:
    """Pushes this node's binding changes to the other nodes and takes theirs.

    ``bus`` is the node's :class:`~smartswitch.cluster.bus.BusClient`; ``timeout`` bounds
    each push and pull, and peers that missed a push are tried again every ``retry`` seconds
    (or with the next change).
    """

    def __init__(
        self,
        node_name: str,
        location: LocationService,
        peers: Peers,
        bus: BusTransport,
        *,
        timeout: float = 3.0,
        retry: float = 5.0,
    ):
        self.node_name = node_name
        self.location = location
        self.peers = peers
        self.timeout = timeout
        self.retry = retry
        self.bus = bus
        self._changes: list[dict[str, Any]] = []
        self._stale: set[str] = set()  # peers that missed a push: they get everything next
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def behind(self) -> frozenset[str]:
        """The nodes that missed a push: the next one to each carries all our bindings."""
        return frozenset(self._stale)

    def own_bindings(self) -> list[Binding]:
        return [b for b in self.location.bindings() if b.node == self.node_name]

    def on_change(self, change: BindingChange) -> None:
        """A location listener: queue the changes of our own bindings made here."""
        if change.origin != LOCAL or change.kind is ChangeKind.EXPIRED:
            return
        if change.binding.node != self.node_name:
            return
        self._changes.append(
            {"kind": change.kind.value, "binding": binding_to_dict(change.binding)}
        )
        self._wake.set()

    def start(self) -> None:
        self.location.listeners.append(self.on_change)
        self._task = asyncio.create_task(self._run(), name="registration-sync")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def serve_own(self, request: SignedRequest) -> dict[str, Any]:
        """Bus handler, ``GET PATHS.registrations``: the bindings this node took, for a node
        that (re)joins."""
        return {
            "node": self.node_name,
            "bindings": [binding_to_dict(b) for b in self.own_bindings()],
        }

    async def take(self, request: SignedRequest) -> dict[str, Any]:
        """Bus handler, ``POST PATHS.registrations``: the signing node's binding changes."""
        try:
            payload = request.json()
            if payload.get("node", request.sender) != request.sender:
                raise MessageError(403, "a node sends only its own bindings")
            applied = apply_changes(self.location, request.sender, list(payload["changes"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MessageError(422, f"bad registration changes: {exc}") from None
        return {"applied": applied}

    async def _run(self) -> None:
        peers = await self._peers()
        self._stale.update(peer.name for peer in peers)  # a (re)starting node pushes all
        await asyncio.gather(*(self._pull(peer) for peer in peers))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.retry)
            self._wake.clear()
            changes, self._changes = self._changes, []
            if not changes and not self._stale:
                continue
            peers = await self._peers()
            everything = [
                {"kind": ChangeKind.SET.value, "binding": binding_to_dict(b)}
                for b in self.own_bindings()
            ]
            bodies = [(p, everything if p.name in self._stale else changes) for p in peers]
            sent = await asyncio.gather(*(self._push(p, body) for p, body in bodies if body))
            for peer, ok in zip((p for p, body in bodies if body), sent, strict=True):
                if ok:
                    self._stale.discard(peer.name)
                else:
                    self._stale.add(peer.name)

    async def _peers(self) -> list[Peer]:
        try:
            return [Peer(*p) for p in await self.peers() if p[0] != self.node_name]
        except Exception as exc:
            log.info("cannot list the cluster's nodes: %s", exc)
            return []

    async def _push(self, peer: Peer, changes: list[dict[str, Any]]) -> bool:
        payload = {"node": self.node_name, "changes": changes}
        try:
            await self.bus.post(peer, PATHS.registrations, payload, timeout=self.timeout)
        except BusError as exc:
            log.info("registrations not pushed to %s: %s", peer.name, exc.detail)
            return False
        return True

    async def _pull(self, peer: Peer) -> None:
        try:
            data = await self.bus.get(peer, PATHS.registrations, timeout=self.timeout)
            bindings = list(data["bindings"])
        except BusError as exc:
            log.info("registrations not pulled from %s: %s", peer.name, exc.detail)
            return
        except (KeyError, TypeError) as exc:
            log.info("registrations from %s unreadable: %s", peer.name, exc)
            return
        changes = [{"kind": ChangeKind.SET.value, "binding": b} for b in bindings]
        try:
            apply_changes(self.location, peer.name, changes)
        except (KeyError, TypeError, ValueError) as exc:
            log.info("registrations from %s unreadable: %s", peer.name, exc)
