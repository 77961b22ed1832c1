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
2. **Never more bytes than were sent.** Over UDP a source address can be forged, so what we
   send an unidentified UDP source never adds up to more than it sent us: each source has a
   byte *credit*, which every admitted request adds its length to (up to ``max_credit``) and
   every answer to it spends (:meth:`FloodGate.spend`). The transaction layer marks the
   server transactions of gated UDP requests ``metered``; an answer that the credit does not
   cover is not sent and is counted (``oversize``), but kept: the request's retransmission
   brings more credit, and the answer then leaves. So a phone whose first REGISTER is smaller
   than our 401 gets the 401 with its first retransmission (T1 later), while a forged
   single packet gets nothing back bigger than itself. Before that, a challenge with several
   ``WWW-Authenticate`` / ``Proxy-Authenticate`` offers (SHA-256 and MD5) loses the later ones
   until it fits, as long as one is left (``trimmed``). An INVITE's 100 Trying, which the
   layer otherwise sends at once, waits for the transaction user: a request refused at once
   gets its final answer only. Once the user has identified the sender (a call routed, a
   REGISTER accepted: its password checked), it lifts the meter
   (``ServerTransaction.metered = False``). Over TCP and TLS the handshake has proved the
   address: nothing is metered, the rate still applies.

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
    max_credit: int = 65_536  # bytes a source may have sent us and not yet had answered


class _Bucket:
    __slots__ = ("at", "credit", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at
        self.credit = 0

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

    def admit(self, host: str, method: str, now: float, size: int = 0) -> bool:
        """Whether a gated request of ``size`` bytes from ``host`` may be answered; False:
        drop it (counted). Admitted, its size is credited to the source."""
        settings = self.settings
        sources = self._sources
        bucket = sources.pop(host, None)
        if bucket is None:
            bucket = _Bucket(settings.burst, now)
            if len(sources) >= settings.max_sources:
                del sources[next(iter(sources))]  # the longest unseen goes first
        sources[host] = bucket  # the most recently seen last
        if settings.rate > 0 and not bucket.take(settings.rate, settings.burst, now):
            return self._drop(method)
        if settings.total_rate > 0:
            total = self._total
            if not self._total_started:
                total.at, self._total_started = now, True
            if not total.take(settings.total_rate, settings.total_burst, now):
                return self._drop(method)
        self.stats["admitted"] += 1
        bucket.credit = min(bucket.credit + size, settings.max_credit)
        return True

    def credit(self, host: str) -> int:
        """Bytes ``host`` may still be sent."""
        bucket = self._sources.get(host)
        return bucket.credit if bucket is not None else 0

    def spend(self, host: str, size: int) -> bool:
        """Take ``size`` bytes from ``host``'s credit: False (nothing taken, ``oversize``
        counted) if it does not cover them."""
        bucket = self._sources.get(host)
        if bucket is None or bucket.credit < size:
            self.stats["oversize"] += 1
            return False
        bucket.credit -= size
        return True

    def _drop(self, method: str) -> bool:
        self.stats["dropped"] += 1
        self.dropped_by_method[method] = self.dropped_by_method.get(method, 0) + 1
        return False
