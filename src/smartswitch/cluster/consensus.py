"""Who may be primary, decided by etcd as Patroni uses it: a leader key under a lease.

**The client.** etcd 3.4 speaks gRPC and, through its built-in gateway, the same v3 API as
JSON over HTTP (``/v3/kv/range``, ``/v3/kv/put``, ``/v3/kv/txn``, ``/v3/lease/grant``,
``/v3/lease/keepalive``, ``/v3/watch``; keys and values base64). :class:`EtcdClient` uses that
gateway with httpx. The asyncio gRPC client on PyPI (``aetcd`` 1.0) was weighed and not taken:
it brings grpcio and protobuf (native wheels, tens of MB) for the handful of calls we make,
ships no type information, talks to one endpoint (no fail-over between members), and its lease
keepalive opens a stream per renewal anyway. Here every request carries its own deadline
(fencing needs a bound on how long a renewal may take), tries the members in turn starting
with the last one that answered, and the whole client is ~200 lines we can read.

**The leader lease** (:class:`LeaderLease`). The primary's node holds ``/smartswitch/leader``
(its node name) under a lease of ``ttl`` seconds (10 by default) and renews it every ``ttl/3``.
The key's **create revision is the epoch**: etcd revisions only grow, so a later leader always
has a larger one, and the epoch written to ``cluster_state`` is at least that.

**Fencing.** A holder that cannot renew must stop writing *before* anyone else can take the
key. The lease cannot expire earlier than ``ttl`` after the last renewal etcd granted, and that
renewal was sent at a time the holder knows; so if ``ttl/2`` passes since the sending of the
last successful renewal, the holder gives up: it stops renewing and calls ``on_lost``, which
makes its database read-only (:func:`smartswitch.cluster.promotion.make_read_only`). That
leaves ``ttl/2`` (5 s) for ``on_lost`` before the key can vanish. A renewal answered "no such
lease", or a leader key that changed hands, is a loss at once.

**The campaign** (:func:`campaign`). When the key is gone, replicas race for it with one
transaction: ``create_revision(leader) == 0`` → put it under the candidate's lease. Only a
candidate whose GTID position is the newest may win: every node publishes its position under
``/smartswitch/positions/<node>`` with its own lease (:class:`PositionPublisher`), and a
candidate reads them all, steps back if a live peer is ahead in any domain, and otherwise
campaigns with a transaction that *also* compares ``mod_revision < R + 1`` over the whole
positions prefix, ``R`` being the revision it read them at: if any peer published a newer
position meanwhile, the transaction fails and the candidate reads again. The race that remains
is a peer whose database has applied more than it has published yet (positions are published
every second and after the relay log was applied): a candidate therefore waits until every
live peer has published a position since the failure it reacts to (``settled_after``), and
the promotion itself re-checks every reachable replica's real position and refuses a candidate
that is behind (:func:`smartswitch.cluster.promotion.promote`).

**Anti-flap** (:class:`FlapGuard`). At most one automatic promotion per ``period`` (an hour by
default): the last promotion is recorded at ``/smartswitch/last-promotion`` in the same
transaction that takes the leader key, and a campaign for an automatic promotion compares it
unchanged. An operator's promotion (by hand) records a manual one, which lifts the block.

**Quorum.** With fewer than three etcd members a single failure stops etcd (or, with one
member, it decides alone): :class:`FailoverSettings` refuses to enable automatic promotion
then; manual promotion still works.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from smartswitch.cluster.gtid import behind
from smartswitch.cluster.tasks import cancel_and_wait

__all__ = [
    "LAST_PROMOTION_KEY",
    "LEADER_KEY",
    "POSITIONS_PREFIX",
    "CampaignResult",
    "ConsensusError",
    "EtcdClient",
    "EtcdUnavailable",
    "FailoverSettings",
    "FlapGuard",
    "KeyValue",
    "LeaderLease",
    "LeaseExpired",
    "NotConfirmed",
    "PositionPublisher",
    "PromotionMark",
    "TxnResult",
    "WatchEvent",
    "automatic_promotion_refusal",
    "campaign",
    "campaign_automatic",
]

log = logging.getLogger("smartswitch.cluster.consensus")

LEADER_KEY = "/smartswitch/leader"
POSITIONS_PREFIX = "/smartswitch/positions/"
LAST_PROMOTION_KEY = "/smartswitch/last-promotion"
MIN_MEMBERS_FOR_AUTOMATIC_PROMOTION = 3


class ConsensusError(RuntimeError):
    """etcd refused or failed a request; the message says which and why."""


class EtcdUnavailable(ConsensusError):
    """No member answered within the deadline."""


class LeaseExpired(ConsensusError):
    """The lease is gone (expired or revoked): whatever it held is gone too."""


class NotConfirmed(ConsensusError):
    """The holder could not confirm, now, that it still holds the leader key (see
    :meth:`LeaderLease.confirm`)."""


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> str:
    """The range end that makes ``[prefix, end)`` every key starting with ``prefix``."""
    data = bytearray(prefix.encode())
    data[-1] += 1
    return data.decode()


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @property
    def text(self) -> str:
        return self.value.decode()

    @classmethod
    def from_json(cls, kv: Mapping[str, Any]) -> KeyValue:
        # The gateway leaves out fields at their default (0, empty): hence the .get()s.
        return cls(
            _unb64(kv.get("key")).decode(),
            _unb64(kv.get("value")),
            int(kv.get("create_revision", 0)),
            int(kv.get("mod_revision", 0)),
            int(kv.get("version", 0)),
            int(kv.get("lease", 0)),
        )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    kv: KeyValue
    revision: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: tuple[Mapping[str, Any], ...]

    def ranges(self) -> list[list[KeyValue]]:
        """The key-values of each range response, in order."""
        return [
            [KeyValue.from_json(kv) for kv in r["response_range"].get("kvs", [])]
            for r in self.responses
            if "response_range" in r
        ]


# --- transaction building blocks (the v3 JSON names) ----------------------------------------


def compare_created(key: str, revision: int = 0, result: str = "EQUAL") -> dict[str, Any]:
    """``create_revision(key) <result> revision``: ``== 0`` means "does not exist"."""
    return {
        "target": "CREATE",
        "key": _b64(key),
        "result": result,
        "create_revision": str(revision),
    }


def compare_modified(
    key: str, revision: int, result: str = "EQUAL", *, prefix: bool = False
) -> dict[str, Any]:
    """``mod_revision(key) <result> revision`` (over every key under it with ``prefix``)."""
    out: dict[str, Any] = {
        "target": "MOD",
        "key": _b64(key),
        "result": result,
        "mod_revision": str(revision),
    }
    if prefix:
        out["range_end"] = _b64(prefix_end(key))
    return out


def op_put(key: str, value: str | bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def op_get(key: str, *, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key)}
    if prefix:
        body["range_end"] = _b64(prefix_end(key))
    return {"request_range": body}


# --- the client ----------------------------------------------------------------------------


class EtcdClient:
    """etcd's v3 API over its JSON gateway. ``endpoints`` are client URLs
    (``http://10.0.0.11:2379``); each request has a deadline of ``timeout`` seconds (or its
    own) and goes to the members in turn, starting with the last one that answered, each
    member given an equal share of the time left."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._preferred = 0
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(
        self, path: str, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` (``/v3/kv/put``...) on the first member that answers."""
        deadline = time.monotonic() + (timeout or self.timeout)
        errors: list[str] = []
        count = len(self.endpoints)
        for i in range(count):
            index = (self._preferred + i) % count
            endpoint = self.endpoints[index]
            left = deadline - time.monotonic()
            if left <= 0:
                errors.append(f"{endpoint}: no time left")
                break
            # Each member not yet tried gets its share of what is left: a member that is cut
            # off (its packets dropped, so no refusal either) must not eat the whole deadline
            # while the others could answer; measured in tests/ha/test_partition_promotion.py,
            # where the majority's nodes otherwise kept asking the cut-off member first and
            # never reached etcd. The last member tried gets all the time left.
            limit = min(left / (count - i), self.timeout)
            try:
                # httpx's timeouts bound each phase (connect, each read), not the request:
                # the deadline is enforced around the whole of it.
                async with asyncio.timeout(limit):
                    response = await self._http.post(endpoint + path, json=body, timeout=limit)
            except TimeoutError:
                errors.append(f"{endpoint}: no answer within {limit:.2f} s")
                continue
            except httpx.HTTPError as exc:
                errors.append(f"{endpoint}: {type(exc).__name__}: {exc}")
                continue
            data = _json(response)
            if response.status_code >= 500 or response.status_code == 429:
                # A member without a leader, or shutting down: another may do.
                errors.append(f"{endpoint}: {response.status_code} {_message(data)}")
                continue
            if response.status_code >= 400:
                raise ConsensusError(f"etcd {path}: {_message(data)}")
            self._preferred = index
            return data
        raise EtcdUnavailable(f"etcd {path}: no member answered: " + "; ".join(errors))

    async def get(
        self, key: str, *, timeout: float | None = None, serializable: bool = False
    ) -> KeyValue | None:
        """``key`` now. A read is linearizable unless ``serializable``: the member asks its
        raft leader, which confirms its leadership with a quorum, so a member cut off from the
        majority answers no read at all; a serializable read is the member's own copy, which
        may be stale."""
        body: dict[str, Any] = {"key": _b64(key)}
        if serializable:
            body["serializable"] = True
        data = await self.call("/v3/kv/range", body, timeout=timeout)
        kvs = data.get("kvs") or []
        return KeyValue.from_json(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the revision they were read at."""
        data = await self.call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        )
        kvs = [KeyValue.from_json(kv) for kv in data.get("kvs") or []]
        return kvs, int(data["header"]["revision"])

    async def put(self, key: str, value: str | bytes, *, lease: int = 0) -> int:
        """Returns the revision of the put."""
        body = op_put(key, value, lease)["request_put"]
        data = await self.call("/v3/kv/put", body)
        return int(data["header"]["revision"])

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        data = await self.call("/v3/kv/deleterange", body)
        return int(data.get("deleted", 0))

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; returns its id."""
        data = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        if data.get("error"):
            raise ConsensusError(f"etcd lease grant: {data['error']}")
        return int(data["ID"])

    async def keepalive(self, lease: int, *, timeout: float | None = None) -> int:
        """Renew ``lease`` once; returns its new TTL. Raises :class:`LeaseExpired` when etcd
        no longer knows it (the gateway then answers without a TTL)."""
        data = await self.call("/v3/lease/keepalive", {"ID": str(lease)}, timeout=timeout)
        result = data.get("result", data)
        ttl = int(result.get("TTL", 0))
        if ttl <= 0:
            raise LeaseExpired(f"lease {lease:x} is gone")
        return ttl

    async def time_to_live(self, lease: int, *, timeout: float | None = None) -> int:
        """The seconds ``lease`` has left (etcd rounds down); :class:`LeaseExpired` when it
        is gone."""
        data = await self.call("/v3/lease/timetolive", {"ID": str(lease)}, timeout=timeout)
        ttl = int(data.get("TTL", -1))
        if ttl < 0:
            raise LeaseExpired(f"lease {lease:x} is gone")
        return ttl

    async def revoke(self, lease: int) -> None:
        with contextlib.suppress(ConsensusError):  # already gone is fine
            await self.call("/v3/lease/revoke", {"ID": str(lease)})

    async def txn(
        self,
        compare: Sequence[Mapping[str, Any]],
        success: Sequence[Mapping[str, Any]] = (),
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> TxnResult:
        data = await self.call(
            "/v3/kv/txn",
            {"compare": list(compare), "success": list(success), "failure": list(failure)},
        )
        return TxnResult(
            bool(data.get("succeeded", False)),
            int(data["header"]["revision"]),
            tuple(data.get("responses") or ()),
        )

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0
    ) -> AsyncIterator[WatchEvent]:
        """Changes of ``key`` (or under it) from ``start_revision`` on (0: from now), for
        ever: a broken stream is reopened on the next member, after the last event seen."""
        request: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            request["range_end"] = _b64(prefix_end(key))
        next_revision = start_revision
        failures = 0
        while True:
            endpoint = self.endpoints[self._preferred]
            if next_revision:
                request["start_revision"] = str(next_revision)
            try:
                async with self._http.stream(
                    "POST",
                    endpoint + "/v3/watch",
                    json={"create_request": request},
                    timeout=httpx.Timeout(self.timeout, read=None),
                ) as response:
                    async for line in response.aiter_lines():
                        if not line.strip():
                            continue
                        result = json.loads(line).get("result", {})
                        failures = 0
                        for event in result.get("events") or ():
                            kv = KeyValue.from_json(event.get("kv", {}))
                            kind = "delete" if event.get("type") == "DELETE" else "put"
                            next_revision = kv.mod_revision + 1
                            yield WatchEvent(kind, kv, kv.mod_revision)
                        if result.get("canceled"):
                            raise ConsensusError(
                                f"etcd watch canceled: {result.get('cancel_reason', '')}"
                            )
            except (httpx.HTTPError, ValueError) as exc:
                log.info("etcd watch on %s broke (%s); reopening", endpoint, exc)
            failures += 1
            self._preferred = (self._preferred + 1) % len(self.endpoints)
            await asyncio.sleep(min(0.05 * failures, 1.0))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"message": response.text[:200]}
    return data if isinstance(data, dict) else {"message": str(data)[:200]}


def _message(data: Mapping[str, Any]) -> str:
    return str(data.get("message") or data.get("error") or data)


# --- campaigning ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignResult:
    won: bool
    epoch: int = 0
    """The leader key's create revision (when won, or the holder's when lost)."""
    holder: str = ""
    reason: str = ""


def _position_of(kv: KeyValue) -> tuple[str, str, float]:
    """(node, gtid, published at) of a published position."""
    node = kv.key.rsplit("/", 1)[-1]
    try:
        data = json.loads(kv.value)
        return node, str(data.get("gtid", "")), float(data.get("at", 0.0))
    except (ValueError, AttributeError, TypeError):
        return node, "", 0.0


async def campaign(
    client: EtcdClient,
    value: str,
    lease: int,
    *,
    key: str = LEADER_KEY,
    position: str | None = None,
    positions_prefix: str = POSITIONS_PREFIX,
    compare: Sequence[Mapping[str, Any]] = (),
    success: Sequence[Mapping[str, Any]] = (),
    settled_after: float | None = None,
    attempts: int = 5,
) -> CampaignResult:
    """Try to take ``key`` with ``value`` under ``lease``.

    With ``position`` (this candidate's ``gtid_current_pos``), only if no peer published under
    ``positions_prefix`` is ahead of it, checked in the same transaction (see the module
    docstring). ``compare`` and ``success`` add conditions and writes to that transaction
    (the anti-flap mark). With ``settled_after`` (wall time: when the failure was seen), every
    peer's position must have been published since, else the candidate waits (returns not
    won, saying for whom): a live peer may have applied more than it had published; a dead
    peer's position leaves with its lease. Never raises for a lost race: the result says who
    holds the key.
    """
    for _ in range(attempts):
        checks = [compare_created(key, 0), *compare]
        if position is not None:
            published, revision = await client.get_prefix(positions_prefix)
            for kv in published:
                node, theirs, at = _position_of(kv)
                if node == value:
                    continue
                if settled_after is not None and at < settled_after:
                    return CampaignResult(
                        False, reason=f"waiting for {node}'s position after the failure"
                    )
                lag = behind(position, theirs)
                if lag:
                    return CampaignResult(
                        False,
                        reason=f"{node} is ahead: at {theirs}, this node at {position or '-'}",
                    )
            checks.append(compare_modified(positions_prefix, revision + 1, "LESS", prefix=True))
        result = await client.txn(checks, [op_put(key, value, lease), *success], [op_get(key)])
        if result.succeeded:
            return CampaignResult(True, result.revision, value)
        held = result.ranges()[0] if result.ranges() else []
        if held:
            kv = held[0]
            if kv.text == value and kv.lease == lease:
                # Our own earlier attempt went through (its answer was lost).
                return CampaignResult(True, kv.create_revision, value)
            return CampaignResult(False, kv.create_revision, kv.text, f"{kv.text} holds {key}")
        # The key is free, but a position or the anti-flap mark moved: look again.
    return CampaignResult(False, reason=f"{key}: conditions kept changing, gave up")


Lost = Callable[[str], Awaitable[None] | None]


class LeaderLease:
    """Hold ``key`` under a lease of ``ttl`` seconds: take it (:meth:`acquire`), renew it every
    ``ttl/3``, give up and call ``on_lost(reason)`` after ``ttl/2`` without a successful
    renewal, or at once when the lease or the key is gone (see "Fencing" above)."""

    def __init__(
        self,
        client: EtcdClient,
        value: str,
        *,
        key: str = LEADER_KEY,
        ttl: int = 10,
        on_lost: Lost | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 2:
            raise ValueError("a leader lease needs a TTL of at least 2 s")
        self.client = client
        self.key = key
        self.value = value
        self.ttl = ttl
        self.on_lost = on_lost
        self.clock = clock
        self.lease = 0
        self.epoch = 0
        self.renewals = 0
        self.last_renewed: float | None = None  # when the last granted renewal was *sent*
        self.lost_reason = ""
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def renew_interval(self) -> float:
        return self.ttl / 3

    @property
    def fence_after(self) -> float:
        return self.ttl / 2

    @property
    def held(self) -> bool:
        return self._task is not None and not self.lost.is_set()

    async def acquire(
        self,
        *,
        position: str | None = None,
        compare: Sequence[Mapping[str, Any]] = (),
        success: Sequence[Mapping[str, Any]] = (),
        settled_after: float | None = None,
    ) -> CampaignResult:
        """Campaign for the key (see :func:`campaign`); when won, keep it renewed."""
        sent = self.clock()
        lease = await self.client.grant(self.ttl)
        result = await campaign(
            self.client,
            self.value,
            lease,
            key=self.key,
            position=position,
            compare=compare,
            success=success,
            settled_after=settled_after,
        )
        if not result.won:
            await self.client.revoke(lease)
            return result
        self.lease, self.epoch = lease, result.epoch
        self.last_renewed = sent
        self.lost.clear()
        self.lost_reason = ""
        self._task = asyncio.create_task(self._keep(), name=f"leader-lease {self.key}")
        return result

    async def confirm(self, timeout: float = 2.0) -> int:
        """Confirm now, not from what this holder last heard, that it still holds the key
        under its live lease for its epoch, with at least half its TTL left: the write fence
        of a configuration change (the change follows within that time, and no one else can
        take the key before the lease lapses). Two linearizable requests within ``timeout``
        seconds: the key (its value, lease and create revision) and the lease's time to live.
        A member cut off from etcd's majority cannot answer them, so a cut-off holder is
        refused from the first moment, not only once it has missed renewals for ``ttl/2``.
        Returns the seconds left on the lease; raises :class:`NotConfirmed` with the reason."""
        if not self.held:
            raise NotConfirmed(
                f"the leader lease was lost ({self.lost_reason})"
                if self.lost_reason
                else "this node does not hold the leader key"
            )
        lease, epoch = self.lease, self.epoch
        deadline = time.monotonic() + timeout
        try:
            kv = await self.client.get(self.key, timeout=timeout)
            if kv is None:
                raise NotConfirmed(f"{self.key} is gone")
            if kv.text != self.value or kv.lease != lease:
                raise NotConfirmed(f"{self.key} is held by {kv.text} (lease {kv.lease:x})")
            if kv.create_revision != epoch:
                raise NotConfirmed(
                    f"{self.key} is of epoch {kv.create_revision}, not this holder's {epoch}"
                )
            left = await self.client.time_to_live(
                lease, timeout=max(0.05, deadline - time.monotonic())
            )
        except NotConfirmed:
            raise
        except ConsensusError as exc:
            raise NotConfirmed(str(exc)) from exc
        if left < self.ttl // 2:
            raise NotConfirmed(
                f"lease {lease:x} has {left} s left of {self.ttl} s (renewals are failing)"
            )
        return left

    async def release(self) -> None:
        """Give the key up at once (a switchover): revoking the lease deletes it."""
        self._task, self.lease = await _stop_and_revoke(self.client, self._task, self.lease)

    async def _keep(self) -> None:
        assert self.last_renewed is not None
        next_renewal = self.clock() + self.renew_interval
        while True:
            fence_at = self.last_renewed + self.fence_after
            now = self.clock()
            if now >= fence_at:
                await self._lose(
                    f"no renewal of the lease for {now - self.last_renewed:.1f} s "
                    f"(fencing at {self.fence_after:.1f} s of a {self.ttl} s lease)"
                )
                return
            if now < next_renewal:
                await asyncio.sleep(min(next_renewal, fence_at) - now)
                continue
            sent = self.clock()
            try:
                # A renewal must not outlast the fencing deadline.
                limit = max(0.1, min(self.ttl / 6, fence_at - sent))
                await self.client.keepalive(self.lease, timeout=limit)
                holder = await self.client.get(self.key, timeout=limit)
            except LeaseExpired as exc:
                await self._lose(str(exc))
                return
            except ConsensusError as exc:
                log.warning("leader lease renewal failed: %s", exc)
                next_renewal = self.clock() + min(0.2, self.renew_interval)
                continue
            if holder is None or holder.lease != self.lease:
                await self._lose(f"{self.key} is no longer ours")
                return
            self.last_renewed = sent
            self.renewals += 1
            next_renewal = sent + self.renew_interval

    async def _lose(self, reason: str) -> None:
        self.lost_reason = reason
        log.error("leader lease lost: %s", reason)
        self.lost.set()
        if self.on_lost is not None:
            outcome = self.on_lost(reason)
            if inspect.isawaitable(outcome):
                await outcome


class PositionPublisher:
    """Publish this node's GTID position under ``/smartswitch/positions/<node>`` with a lease
    of its own (a dead node's position disappears with it)."""

    def __init__(
        self,
        client: EtcdClient,
        node: str,
        *,
        ttl: int = 5,
        prefix: str = POSITIONS_PREFIX,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.node = node
        self.ttl = ttl
        self.key = prefix + node
        self.wall_clock = wall_clock
        self.lease = 0
        self._task: asyncio.Task[None] | None = None

    async def publish(self, gtid: str) -> int:
        """Put the position now; returns the revision of the put."""
        if not self.lease:
            self.lease = await self.client.grant(self.ttl)
        body = json.dumps({"gtid": gtid, "at": self.wall_clock()})
        try:
            return await self.client.put(self.key, body, lease=self.lease)
        except ConsensusError:
            # "requested lease not found": it expired; take a new one.
            self.lease = await self.client.grant(self.ttl)
            return await self.client.put(self.key, body, lease=self.lease)

    def start(self, position: Callable[[], Awaitable[str]], interval: float = 1.0) -> None:
        """Publish ``await position()`` every ``interval`` seconds (renewing the lease)."""
        self._task = asyncio.create_task(self._run(position, interval), name="gtid-publisher")

    async def _run(self, position: Callable[[], Awaitable[str]], interval: float) -> None:
        while True:
            try:
                await self.publish(await position())
            except Exception as exc:  # etcd or the database away: try again next time
                log.warning("publishing the GTID position failed: %s", exc)
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Stop publishing; the position disappears with the revoked lease."""
        self._task, self.lease = await _stop_and_revoke(self.client, self._task, self.lease)


async def _stop_and_revoke(
    client: EtcdClient, task: asyncio.Task[None] | None, lease: int
) -> tuple[None, int]:
    if task is not None:
        await cancel_and_wait(task)
    if lease:
        await client.revoke(lease)
    return None, 0


# --- anti-flap and the quorum rule ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromotionMark:
    """The last promotion, as kept in etcd."""

    at: float  # wall time
    automatic: bool
    node: str

    def to_json(self) -> str:
        return json.dumps({"at": self.at, "automatic": self.automatic, "node": self.node})

    @classmethod
    def from_json(cls, text: str | bytes) -> PromotionMark:
        data = json.loads(text)
        return cls(float(data["at"]), bool(data["automatic"]), str(data.get("node", "")))


def handover_seconds(ttl: float) -> float:
    """How long the node an operator promoted has to take the leader key: three lease
    lifetimes (its lease round runs every third of one). `smartswitch cluster promote` waits
    this long for it, and no other node campaigns meanwhile."""
    return 3 * ttl


def automatic_promotion_refusal(
    last: PromotionMark | None, now: float, period: float, handover: float = 0.0
) -> str | None:
    """Why an automatic promotion may not happen now, or None if it may: at most one per
    ``period``; a manual promotion (an operator acted) lifts the limit, but for ``handover``
    seconds after it only the node the operator promoted may take the leader key: the others
    would otherwise find the key free before that node's next lease round and promote
    themselves over the operator's choice (its database reaches them by replication a moment
    after the record in etcd)."""
    if last is None:
        return None
    since = now - last.at
    if not last.automatic:
        if since < handover:
            return (
                f"{last.node} was promoted by hand {since:.0f} s ago: its node takes the "
                f"leader key (automatic promotion waits {handover:.0f} s for it)"
            )
        return None
    if since < period:
        return (
            f"anti-flap: {last.node} was promoted automatically {since:.0f} s ago; at most one "
            f"automatic promotion per {period:.0f} s (an operator's promotion resets this)"
        )
    return None


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    """Automatic promotion's settings; refuses to enable it with fewer than three members."""

    members: tuple[str, ...]
    automatic: bool = False
    ttl: int = 10
    period: float = 3600.0

    def __post_init__(self) -> None:
        if self.automatic and len(self.members) < MIN_MEMBERS_FOR_AUTOMATIC_PROMOTION:
            raise ConsensusError(
                f"automatic promotion needs at least {MIN_MEMBERS_FOR_AUTOMATIC_PROMOTION} etcd "
                f"members (got {len(self.members)}): with fewer, one failure leaves no "
                "quorum, or one member decides alone; promote by hand instead"
            )


@dataclass
class FlapGuard:
    """The anti-flap record in etcd (:data:`LAST_PROMOTION_KEY`)."""

    client: EtcdClient
    period: float = 3600.0
    key: str = LAST_PROMOTION_KEY
    handover: float = 0.0  # see automatic_promotion_refusal
    wall_clock: Callable[[], float] = field(default=time.time)

    async def last(self) -> tuple[PromotionMark | None, int]:
        """The last promotion and the mod revision of its record (0: none)."""
        kv = await self.client.get(self.key)
        if kv is None:
            return None, 0
        try:
            return PromotionMark.from_json(kv.value), kv.mod_revision
        except (ValueError, KeyError):
            return None, kv.mod_revision

    async def refusal(self) -> str | None:
        mark, _ = await self.last()
        return automatic_promotion_refusal(mark, self.wall_clock(), self.period, self.handover)

    async def guarded(
        self, node: str
    ) -> tuple[str | None, list[dict[str, Any]], list[dict[str, Any]]]:
        """For an automatic campaign: (refusal, compare, success): the transaction takes the
        key only if the record did not change since it was read, and records this one."""
        mark, revision = await self.last()
        refusal = automatic_promotion_refusal(mark, self.wall_clock(), self.period, self.handover)
        compare = [compare_modified(self.key, revision)]
        success = [op_put(self.key, PromotionMark(self.wall_clock(), True, node).to_json())]
        return refusal, compare, success

    async def record_manual(self, node: str) -> None:
        """An operator promoted ``node``: the limit is lifted."""
        await self.client.put(self.key, PromotionMark(self.wall_clock(), False, node).to_json())


async def campaign_automatic(
    lease: LeaderLease,
    guard: FlapGuard,
    settings: FailoverSettings,
    position: str,
    *,
    settled_after: float | None = None,
) -> CampaignResult:
    """An automatic promotion's campaign: only when enabled (three members or more), not
    within the anti-flap period, and only by a candidate no live peer is ahead of; the
    anti-flap record is written in the same transaction that takes the key."""
    if not settings.automatic:
        return CampaignResult(False, reason="automatic promotion is not enabled")
    refusal, compare, success = await guard.guarded(lease.value)
    if refusal:
        return CampaignResult(False, reason=refusal)
    return await lease.acquire(
        position=position, compare=compare, success=success, settled_after=settled_after
    )
