"""The dispatcher's decisions: which node takes a new call, its signed token, whom to trust.

Sans-IO: heartbeats, probe answers and ``now`` in; choices, tokens and verdicts out. The
asyncio side (the UDP socket on the dispatch address) is :mod:`smartswitch.runtime.dispatcher`.

Theory of operation
-------------------
Customers send every new INVITE to one address (the shared IP; whoever receives there is the
dispatcher). For each one the dispatcher picks a node by **free capacity**: the node's
configured capacity less its calls in progress, from its latest heartbeat, less the calls
this dispatcher has sent it since that heartbeat was made (so a burst between two heartbeats
does not all land on the node that looked emptiest).

The pick is a **smooth weighted round robin** (nginx's): each eligible node's credit grows by
its weight (its free capacity) at each pick, the node with most credit is chosen and pays the
sum of the weights. Shares follow the weights exactly over any window, with no randomness to
spread, and when a node leaves the others' credits keep growing in proportion to their own
weights: a dead node's share spreads over all the others, never onto one neighbour (the
failure of a hash ring or of "next in the list", Kamailio dispatcher issue 2361).

A node is eligible when it is up in the membership table (heard within 3 heartbeats, alive by
its own account), has a capacity set and room, and does not fail its SIP OPTIONS probe: a
probe unanswered for ``probe_dead`` seconds (1.5 s by default, probes every 0.5 s) takes the
node out before its heartbeats are missed, so a node that dies gets no new call within
``probe_dead`` plus one probe interval (2 s), inside the promised 3 s. A node never probed
yet is judged by its heartbeats alone.

A customer attached to some nodes only (``peers.nodes``) is dispatched among those only.

Tokens (redirect mode): the 302's Contact carries ``ss-token=<expiry>.<node>.<mac>``, the
HMAC-SHA256 (a key derived from the cluster secret with its own label) of the expiry, the
chosen node's name and the call's Call-ID. The node checks it with the same key: a token for
another node, another call, or past its expiry is refused, so the redirect target can refuse
an INVITE that did not come through the dispatcher.

The source header (proxy mode): the forwarded INVITE carries ``X-Smartswitch-Source:
ip:port``, the customer's real address. A node takes it only from a cluster member's
dedicated IP (:class:`SourceTrust`); from anyone else it is removed and ignored, so a
customer cannot pretend to be another one by writing it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from smartswitch.cluster.membership import Heartbeat
from smartswitch.cluster.signing import derive_key

__all__ = [
    "DISPATCH_KEY_LABEL",
    "SOURCE_HEADER",
    "TOKEN_PARAM",
    "Chooser",
    "DispatchMode",
    "NoNode",
    "SourceTrust",
    "Target",
    "TokenError",
    "Tokens",
]

DISPATCH_KEY_LABEL = "smartswitch dispatch token v1"
SOURCE_HEADER = "X-Smartswitch-Source"
TOKEN_PARAM = "ss-token"


class DispatchMode(StrEnum):
    OFF = "off"
    REDIRECT = "redirect"
    PROXY = "proxy"


class NoNode(Exception):
    """No node can take the call (503)."""

    status = 503


@dataclass(frozen=True, slots=True)
class Target:
    """The node chosen for a call."""

    node: str
    sip_address: str
    """``host:port`` where the node takes calls (its dedicated IP)."""


@dataclass(slots=True)
class _Probe:
    sent: float | None = None
    """When the oldest unanswered probe was sent (None: none outstanding)."""
    answered: float | None = None


@dataclass(slots=True)
class _Node:
    heartbeat: Heartbeat
    sent_since: int = 0
    """Calls this dispatcher sent the node since its latest heartbeat was made."""
    credit: float = 0.0


class Chooser:
    """The nodes and their free capacity; :meth:`choose` picks one per new call.

    Feed it with :meth:`update` (the membership's up nodes, each heartbeat) and the probe
    results (:meth:`probe_sent`, :meth:`probe_answered`).
    """

    def __init__(self, probe_interval: float = 0.5, probe_dead: float = 1.5) -> None:
        self.probe_interval = probe_interval
        self.probe_dead = probe_dead
        self._nodes: dict[str, _Node] = {}
        self._probes: dict[str, _Probe] = {}
        self.chosen: dict[str, int] = {}
        """Calls sent to each node since start (for ``/metrics`` and the tests)."""

    def update(self, up: Iterable[Heartbeat]) -> None:
        """The nodes that are up now, with their latest heartbeats. A node not in ``up`` is
        out; one whose heartbeat is new has its count of calls sent since reset."""
        fresh: dict[str, _Node] = {}
        for heartbeat in up:
            if not heartbeat.alive:
                continue
            known = self._nodes.get(heartbeat.node)
            if known is None:
                fresh[heartbeat.node] = _Node(heartbeat)
                continue
            if (heartbeat.started_at, heartbeat.seq) != (
                known.heartbeat.started_at,
                known.heartbeat.seq,
            ):
                known.heartbeat = heartbeat
                known.sent_since = 0
            fresh[heartbeat.node] = known
        self._nodes = fresh
        for name in list(self._probes):
            if name not in fresh:
                del self._probes[name]

    def probe_sent(self, node: str, now: float) -> None:
        probe = self._probes.setdefault(node, _Probe())
        if probe.sent is None:
            probe.sent = now

    def probe_answered(self, node: str, now: float) -> None:
        probe = self._probes.setdefault(node, _Probe())
        probe.sent = None
        probe.answered = now

    def to_probe(self) -> list[Target]:
        """The nodes to send an OPTIONS now (every known node, each interval)."""
        return [Target(name, node.heartbeat.sip_address) for name, node in self._nodes.items()]

    def probe_ok(self, node: str, now: float) -> bool:
        probe = self._probes.get(node)
        return probe is None or probe.sent is None or now - probe.sent < self.probe_dead

    def free(self, node: str) -> int:
        """The node's free capacity as this dispatcher reckons it (0: unknown node)."""
        known = self._nodes.get(node)
        if known is None:
            return 0
        return max(0, known.heartbeat.free - known.sent_since)

    def eligible(self, now: float, allowed: Collection[str] | None = None) -> dict[str, int]:
        """The nodes that may take a new call now, with their weights (free capacity)."""
        weights: dict[str, int] = {}
        for name in self._nodes:
            if allowed is not None and name not in allowed:
                continue
            if not self.probe_ok(name, now):
                continue
            free = self.free(name)
            if free > 0:
                weights[name] = free
        return weights

    def choose(self, now: float, allowed: Collection[str] | None = None) -> Target:
        """The node for one new call; :class:`NoNode` when none can take it. ``allowed``:
        the nodes the customer is attached to (None: any)."""
        weights = self.eligible(now, allowed)
        if not weights:
            raise NoNode("no node can take the call")
        total = sum(weights.values())
        best: _Node | None = None
        best_name = ""
        # Sorted names: a tie goes the same way every time (deterministic tests).
        for name in sorted(weights):
            node = self._nodes[name]
            node.credit += weights[name]
            if best is None or node.credit > best.credit:
                best, best_name = node, name
        assert best is not None
        best.credit -= total
        best.sent_since += 1
        self.chosen[best_name] = self.chosen.get(best_name, 0) + 1
        return Target(best_name, best.heartbeat.sip_address)


class TokenError(Exception):
    """A redirect token that is missing, malformed, forged, for someone else, or expired."""

    status = 403


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Tokens:
    """Signed, expiring tokens naming the node a call was sent to, and the call."""

    def __init__(self, cluster_secret: str, lifetime: float = 30.0) -> None:
        self._key = derive_key(cluster_secret, DISPATCH_KEY_LABEL)
        self.lifetime = lifetime

    def __repr__(self) -> str:
        return f"Tokens(lifetime={self.lifetime})"

    def _mac(self, expiry: int, node: str, call_id: str) -> str:
        message = f"{expiry}\n{node}\n{call_id}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest()[:16])

    def make(self, node: str, call_id: str, now: float) -> str:
        """A token for ``node`` taking the call ``call_id``, valid ``lifetime`` seconds
        (``now``: wall clock, shared by the nodes)."""
        expiry = int(now + self.lifetime)
        return f"{expiry}.{_b64(node.encode())}.{self._mac(expiry, node, call_id)}"

    def check(self, token: str | None, node: str, call_id: str, now: float) -> None:
        """Nothing if ``token`` admits this call to ``node`` now, else :class:`TokenError`."""
        if not token:
            raise TokenError("no dispatch token")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            raise TokenError("malformed dispatch token")
        expiry = int(parts[0])
        try:
            named = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            raise TokenError("malformed dispatch token") from None
        if not hmac.compare_digest(parts[2], self._mac(expiry, named, call_id)):
            raise TokenError("forged dispatch token")
        if named != node:
            raise TokenError("dispatch token for another node")
        if now > expiry:
            raise TokenError("expired dispatch token")


class SourceTrust:
    """Whom a node believes about a call's real source: the cluster members' dedicated IPs.

    ``members`` maps node names to their dedicated IPs (the ``nodes`` table, heartbeats).
    """

    def __init__(self, members: Mapping[str, str] | None = None) -> None:
        self._ips: frozenset[str] = frozenset()
        if members:
            self.set_members(members)

    def set_members(self, members: Mapping[str, str]) -> None:
        self._ips = frozenset(ip for ip in members.values() if ip)

    def is_member(self, host: str) -> bool:
        return host in self._ips

    def real_source(
        self, header: str | None, received_from: tuple[str, int]
    ) -> tuple[str, int] | None:
        """The customer's address named by the source header, if the packet came from a
        member and the header is well formed; else None (use the packet's own source)."""
        if header is None or received_from[0] not in self._ips:
            return None
        host, sep, port = header.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return host, int(port)
