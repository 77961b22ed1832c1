"""Registrations cross the cluster node to node: a phone registered on node A gets the DID
calls that arrive on node B.

Each node is the authority for the bindings it took (``Binding.node``). A change of one of them
is pushed at once to every other node (batched per loop turn); a node that starts, or that a
push could not reach, gets the full set: pushes to it carry every binding of ours until one
succeeds, and a starting node pulls every other node's bindings. Expiry needs no message:
bindings carry their wall-clock expiry and every node drops them on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from smartswitch.registrar.location import (
    LOCAL,
    Binding,
    BindingChange,
    ChangeKind,
    LocationService,
)
from smartswitch.sip.transaction import Address

log = logging.getLogger("smartswitch.cluster.registrations")

Peers = Callable[[], Awaitable[list[tuple[str, str]]]]  # (node name, http address), not us


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
    def __init__(self, node_name: str, location: LocationService, peers: Peers, token: str):
        self.node_name = node_name
        self.location = location
        self.peers = peers
        self.token = token
        self._changes: list[dict[str, Any]] = []
        self._stale: set[str] = set()  # peers that missed a push: they get everything next
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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

    async def _run(self) -> None:
        peers = await self._peers()
        self._stale.update(name for name, _ in peers)  # a (re)starting node pushes all it has
        for name, address in peers:
            await self._pull(name, address)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 5.0)
            self._wake.clear()
            changes, self._changes = self._changes, []
            peers = await self._peers()
            if not changes and not self._stale:
                continue
            everything = [
                {"kind": ChangeKind.SET.value, "binding": binding_to_dict(b)}
                for b in self.own_bindings()
            ]
            for name, address in peers:
                body = everything if name in self._stale else changes
                if not body:
                    continue
                if await self._push(address, body):
                    self._stale.discard(name)
                else:
                    self._stale.add(name)

    async def _peers(self) -> list[tuple[str, str]]:
        try:
            return [(n, a) for n, a in await self.peers() if n != self.node_name]
        except Exception as exc:
            log.info("cannot list the cluster's nodes: %s", exc)
            return []

    def _request(self, address: str, body: bytes | None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{address}/cluster/registrations",
            data=body,
            method="POST" if body is not None else "GET",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=3) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    async def _push(self, address: str, changes: list[dict[str, Any]]) -> bool:
        body = json.dumps({"node": self.node_name, "changes": changes}).encode()
        try:
            await asyncio.to_thread(self._request, address, body)
        except (OSError, ValueError) as exc:
            log.info("registrations not pushed to %s: %s", address, exc)
            return False
        return True

    async def _pull(self, name: str, address: str) -> None:
        try:
            data = await asyncio.to_thread(self._request, address, None)
        except (OSError, ValueError) as exc:
            log.info("registrations not pulled from %s: %s", name, exc)
            return
        changes = [{"kind": ChangeKind.SET.value, "binding": b} for b in data.get("bindings", [])]
        apply_changes(self.location, str(data.get("node", name)), changes)
