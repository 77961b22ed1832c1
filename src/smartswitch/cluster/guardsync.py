"""Failed digest answers shared over the cluster bus, so that failures on any node count.

The registrar's guard (:mod:`smartswitch.registrar.guard`) counts failed answers per account
and per address and keeps the local failures and new trusts for a publisher
(``drain_events``). :class:`GuardSync` is that publisher: every ``interval`` (0.2 s) it sends
what accumulated to every other node (``POST /cluster/guard``, signed), which feeds them to
its own guard (``remote_failure`` / ``remote_success``). So an attacker spreading guesses over
the nodes behind a dispatcher meets the same back-off everywhere.

This is soft state: a node that is down misses the events of that moment (it is not sent
them again); a failure counts for minutes at most anyway. Events are received as data and
checked field by field; a request that does not parse is answered 400, nothing applied.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Protocol

from smartswitch.cluster.bus import BusClient, BusError, MessageError, Peer, Peers
from smartswitch.cluster.signing import SignedRequest
from smartswitch.registrar.guard import GuardEvent

__all__ = ["GUARD_PATH", "GuardPort", "GuardSync"]

log = logging.getLogger("smartswitch.cluster.guardsync")

GUARD_PATH = "/cluster/guard"
MAX_EVENTS = 1000
"""Events per request, either way."""


class GuardPort(Protocol):
    """What the sync needs of the registrar's :class:`~smartswitch.registrar.guard.SourceGuard`."""

    def drain_events(self, limit: int = 1000) -> list[GuardEvent]: ...

    def remote_failure(
        self, account: str | None, source: str, when: float, node: str, reason: str = ""
    ) -> None: ...

    def remote_success(self, account: str, source: str, when: float, node: str) -> None: ...


def event_to_json(event: GuardEvent) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "account": event.account,
        "source": event.source,
        "when": event.when,
        "reason": event.reason,
    }


def _text(item: dict[str, Any], name: str, limit: int = 256) -> str:
    value = item.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise MessageError(400, f"guard event: {name!r} must be a string of at most {limit}")
    return value


def event_from_json(item: Any) -> GuardEvent:
    """One event from a peer; :class:`MessageError` (400) if it is not one."""
    if not isinstance(item, dict):
        raise MessageError(400, "guard event: expected an object")
    kind = item.get("kind")
    if kind not in ("failure", "success"):
        raise MessageError(400, f"guard event: unknown kind {kind!r}")
    account = item.get("account")
    if account is not None:
        account = _text(item, "account")
    if kind == "success" and account is None:
        raise MessageError(400, "guard event: a success names its account")
    when = item.get("when")
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise MessageError(400, "guard event: 'when' must be a number")
    reason = item.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 64:
        raise MessageError(400, "guard event: bad 'reason'")
    return GuardEvent(kind, account, _text(item, "source", 64), float(when), reason)


class GuardSync:
    """Sends this node's guard events to the others; takes theirs."""

    def __init__(
        self,
        name: str,
        guard: GuardPort,
        peers: Peers,
        client: BusClient,
        *,
        interval: float = 0.2,
        timeout: float = 1.0,
    ) -> None:
        self.name = name
        self.guard = guard
        self.peers = peers
        self.client = client
        self.interval = interval
        self.timeout = timeout
        self.stats = {"sent": 0, "received": 0, "lost": 0}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="guard-sync")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def take(self, request: SignedRequest) -> dict[str, Any]:
        """``POST /cluster/guard`` from another node: its events counted here."""
        data = request.json()
        items = data.get("events") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) > MAX_EVENTS:
            raise MessageError(400, f"guard events: a list of at most {MAX_EVENTS}")
        events = [event_from_json(item) for item in items]  # all checked before any applied
        for event in events:
            if event.kind == "failure":
                self.guard.remote_failure(
                    event.account, event.source, event.when, request.sender, event.reason
                )
            else:
                assert event.account is not None
                self.guard.remote_success(event.account, event.source, event.when, request.sender)
        self.stats["received"] += len(events)
        return {"taken": len(events)}

    async def publish_once(self) -> int:
        """Send what accumulated to every other node; the number of events sent."""
        events = self.guard.drain_events(MAX_EVENTS)
        if not events:
            return 0
        try:
            peers = [Peer(*p) for p in await self.peers() if p[0] != self.name]
        except Exception as exc:
            log.info("guard events not sent: cannot list the nodes: %s", exc)
            self.stats["lost"] += len(events)
            return 0
        payload = {"events": [event_to_json(e) for e in events]}
        results = await asyncio.gather(*(self._post(peer, payload) for peer in peers))
        self.stats["sent"] += len(events)
        self.stats["lost"] += len(events) * results.count(False)
        return len(events)

    async def _post(self, peer: Peer, payload: dict[str, Any]) -> bool:
        try:
            await self.client.post(peer, GUARD_PATH, payload, timeout=self.timeout)
        except BusError as exc:
            log.info("guard events not sent to %s: %s", peer.name, exc.detail)
            return False
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.publish_once()
            except Exception:
                log.exception("guard events: publishing failed")
