"""Floods without amplification: what the node answers to requests from sources it does not
know.

Sans-IO: time is passed in; the transaction layer asks (:class:`~smartswitch.sip.transaction.
TransactionLayer`, ``gate``), the node says who is known (``identified``).

Theory of operation
-------------------

A *gated* request is an INVITE, OPTIONS or REGISTER outside any dialog (no To tag) from a
source that ``identified`` does not recognise: not in a peer's ACL, not a peer's TLS client
certificate. Phones (digest), scanners and spoofed floods all look like this until a
password is checked; a trunk known by its address never does, so a carrier's call rate is
never limited here.

1. **A bounded rate per source.** A token bucket per source address: ``rate`` requests per
   second, bursts of ``burst``. A request with no token is **dropped** (not answered: an
   answer is what a reflection attack wants) and counted by method. Retransmissions count
   too: a sender cannot get more answers by repeating itself. On top, one bucket for all
   gated sources together (``total_rate``, ``total_burst``; 0: none) bounds the work a flood
   from many addresses costs, so that the known customers' calls keep the CPU.
2. **Never more bytes than were sent.** Over UDP a source address can be forged, so the bytes
   we send in answer to a gated request may not exceed the request's own size: the
   transaction layer gives such a server transaction a byte ``budget`` (the request's
   length) that every response it sends spends. A response that does not fit is dropped and
   counted (``oversize``); a challenge with several ``WWW-Authenticate`` /
   ``Proxy-Authenticate`` offers (SHA-256 and MD5) first loses the later ones, as long as one
   is left. An INVITE's 100 Trying, which the layer otherwise sends at once, then waits for
   the transaction user: a request answered at once gets its final answer only. Once the
   user has identified the sender (digest credentials checked: a call routed, a REGISTER
   accepted), it lifts the budget (``ServerTransaction.budget = None``). Over TCP and TLS the
   handshake has proved the address: no budget, the rate still applies.

Memory is bounded: ``max_sources`` buckets, the least recently seen forgotten first (a
forgotten source starts again with a full bucket, which only gives it ``burst`` more).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["GATED_METHODS", "FloodGate", "FloodSettings"]

GATED_METHODS = frozenset(("INVITE", "OPTIONS", "REGISTER"))


@dataclass(frozen=True, slots=True)
class FloodSettings:
    rate: float = 50.0  # gated requests per second per source (0: no limit)
    burst: float = 100.0
    total_rate: float = 1000.0  # gated requests per second from all sources (0: no limit)
    total_burst: float = 2000.0
    max_sources: int = 100_000


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at

    def take(self, rate: float, burst: float, now: float) -> bool:
        tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class FloodGate:
    """Per-source (and overall) admission of gated requests, and the counters of what was
    dropped. ``identified(transport, host, port)`` says whether a source is known."""

    def __init__(
        self,
        settings: FloodSettings | None = None,
        identified: Callable[[str, str, int], bool] | None = None,
    ) -> None:
        self.settings = settings or FloodSettings()
        self.identified = identified or (lambda transport, host, port: False)
        self._sources: dict[str, _Bucket] = {}
        self._total = _Bucket(self.settings.total_burst, 0.0)
        self._total_started = False
        self.stats = {"admitted": 0, "dropped": 0, "oversize": 0, "trimmed": 0}
        self.dropped_by_method: dict[str, int] = {}

    def configure(self, settings: FloodSettings) -> None:
        self.settings = settings

    @property
    def sources(self) -> int:
        """Source addresses with a bucket now."""
        return len(self._sources)

    def admit(self, host: str, method: str, now: float) -> bool:
        """Whether a gated request from ``host`` may be answered; False: drop it (counted)."""
        settings = self.settings
        if settings.rate > 0:
            sources = self._sources
            bucket = sources.pop(host, None)
            if bucket is None:
                bucket = _Bucket(settings.burst, now)
                if len(sources) >= settings.max_sources:
                    del sources[next(iter(sources))]  # the longest unseen goes first
            sources[host] = bucket  # the most recently seen last
            if not bucket.take(settings.rate, settings.burst, now):
                return self._drop(method)
        if settings.total_rate > 0:
            total = self._total
            if not self._total_started:
                total.at, self._total_started = now, True
            if not total.take(settings.total_rate, settings.total_burst, now):
                return self._drop(method)
        self.stats["admitted"] += 1
        return True

    def _drop(self, method: str) -> bool:
        self.stats["dropped"] += 1
        self.dropped_by_method[method] = self.dropped_by_method.get(method, 0) + 1
        return False
