"""The location service: which contacts each address-of-record is reachable at (RFC 3261 10).

Sans-IO and in memory. Bindings are values (:class:`Binding`, frozen) keyed by their AOR and
the normalised contact URI; time is the wall clock, passed in, because bindings outlive the
process (they are persisted) and travel between nodes (the cluster pushes them), where a
monotonic clock would mean nothing.

Two kinds of writers, one interface:

* the registrar, for the REGISTERs this node takes (``origin=LOCAL``);
* the cluster, for bindings learned elsewhere (``apply(binding, origin="node2")``), and the
  persistence layer at start (``origin=RESTORED``).

Every change is reported to the ``listeners`` with its origin, so the write-behind store
persists everything while a replicator pushes only what was taken here (no echo).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from smartswitch.sip.transaction import Address
from smartswitch.sip.uri import SipUri

__all__ = [
    "LOCAL",
    "RESTORED",
    "Binding",
    "BindingChange",
    "ChangeKind",
    "LocationService",
    "contact_key",
]

LOCAL = "local"
"""Origin of a change made by this node's registrar."""
RESTORED = "restored"
"""Origin of a binding read back from the database at start."""


def contact_key(uri: str) -> str:
    """The identity of a contact URI for binding comparison (RFC 3261 10.3 step 7, 19.1.4).

    Scheme and host compare case-insensitively, the user part case-sensitively; a missing port
    is not the same as the default port; ``transport``, ``user``, ``ttl``, ``method`` and
    ``maddr`` take part when present, other URI parameters do not. Raises
    :class:`SipParseError` (416) for a URI that is not sip/sips.
    """
    parsed = SipUri.parse(uri)
    user = "" if parsed.user is None else parsed.user + "@"
    port = "" if parsed.port is None else f":{parsed.port}"
    params = "".join(
        f";{name}={(parsed.params.get(name) or '').lower()}"
        for name in ("transport", "user", "ttl", "method", "maddr")
        if name in parsed.params
    )
    return f"{parsed.scheme}:{user}{parsed.host.lower()}{port}{params}"


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an address-of-record, until ``expires_at`` (wall-clock seconds)."""

    aor: str
    """The subscriber's username: the user part of the To URI of its REGISTERs."""
    contact: str
    """The Contact URI as registered: the Request-URI of calls to this binding."""
    expires_at: float
    call_id: str
    cseq: int
    source: Address
    """Where the REGISTER came from (after received/rport, RFC 3581): calls are sent here, so a
    phone behind NAT is reached through the mapping its REGISTERs keep open."""
    registered_at: float
    """When this binding was last written by a REGISTER."""
    user_agent: str = ""
    q: float | None = None
    node: str = ""
    """The node that took the REGISTER."""
    key: str = field(init=False, repr=False, compare=False)
    """:func:`contact_key` of the contact, computed once (every write and lookup uses it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", contact_key(self.contact))

    def expires_in(self, now: float) -> int:
        """Whole seconds left (rounded up), for the Contact ``expires`` parameter."""
        left = self.expires_at - now
        return max(0, int(left) + (0 if left == int(left) else 1))


class ChangeKind(StrEnum):
    SET = "set"  # added or refreshed
    REMOVED = "removed"  # by a REGISTER (Expires: 0, "*") or by the cluster
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class BindingChange:
    kind: ChangeKind
    binding: Binding
    origin: str
    """:data:`LOCAL`, :data:`RESTORED`, or the name of the node the change came from."""


Listener = Callable[[BindingChange], None]


class LocationService:
    """Bindings by AOR, in memory. Reads never see an expired binding, whether or not
    :meth:`expire` has run yet."""

    __slots__ = ("_by_aor", "_deadlines", "listeners")

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}
        # (expires_at, aor, key): lazily pruned; an entry whose binding moved on is skipped.
        self._deadlines: list[tuple[float, str, str]] = []
        self.listeners: list[Listener] = []

    # --- reads -------------------------------------------------------------------------------

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """The live bindings of ``aor``, highest ``q`` first, then the most recently registered
        (RFC 3261 10.2.1.2: q orders the contacts; without it, the newest is the likeliest)."""
        bindings = self._by_aor.get(aor)
        if not bindings:
            return []
        live = [b for b in bindings.values() if b.expires_at > now]
        live.sort(key=lambda b: (-(b.q if b.q is not None else 1.0), -b.registered_at))
        return live

    def get(self, aor: str, key: str) -> Binding | None:
        bindings = self._by_aor.get(aor)
        return None if bindings is None else bindings.get(key)

    def count(self, aor: str, now: float) -> int:
        bindings = self._by_aor.get(aor)
        return 0 if not bindings else sum(1 for b in bindings.values() if b.expires_at > now)

    def bindings(self) -> Iterator[Binding]:
        """Every binding held (expired ones not swept yet included)."""
        for bindings in self._by_aor.values():
            yield from bindings.values()

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_aor.values())

    # --- writes ------------------------------------------------------------------------------

    def apply(self, binding: Binding, origin: str = LOCAL) -> None:
        """Add ``binding``, or replace the one with the same AOR and contact."""
        key = binding.key
        bindings = self._by_aor.setdefault(binding.aor, {})
        previous = bindings.get(key)
        bindings[key] = binding
        # One deadline per binding is enough: a refresh that pushes the time out is found when
        # the old deadline comes up (and re-queued then), so phones refreshing every minute do
        # not pile up an entry per REGISTER.
        if previous is None or binding.expires_at < previous.expires_at:
            heapq.heappush(self._deadlines, (binding.expires_at, binding.aor, key))
        self._notify(BindingChange(ChangeKind.SET, binding, origin))

    def remove(self, aor: str, key: str, origin: str = LOCAL) -> Binding | None:
        """Remove one binding; the removed binding, or None if there was none."""
        bindings = self._by_aor.get(aor)
        if bindings is None:
            return None
        binding = bindings.pop(key, None)
        if not bindings:
            del self._by_aor[aor]
        if binding is not None:
            self._notify(BindingChange(ChangeKind.REMOVED, binding, origin))
        return binding

    def expire(self, now: float) -> list[Binding]:
        """Drop every binding whose time is up (at ``now`` or before); the dropped ones."""
        deadlines = self._deadlines
        gone: list[Binding] = []
        while deadlines and deadlines[0][0] <= now:
            _, aor, key = heapq.heappop(deadlines)
            bindings = self._by_aor.get(aor)
            if bindings is None:
                continue
            binding = bindings.get(key)
            if binding is None:
                continue  # removed since
            if binding.expires_at > now:
                heapq.heappush(deadlines, (binding.expires_at, aor, key))  # refreshed since
                continue
            del bindings[key]
            if not bindings:
                del self._by_aor[aor]
            gone.append(binding)
            self._notify(BindingChange(ChangeKind.EXPIRED, binding, LOCAL))
        return gone

    def _notify(self, change: BindingChange) -> None:
        for listener in self.listeners:
            listener(change)
