"""Defence against password guessing and floods, per source IP address (issue 4, item 5).

Sans-IO: every method takes ``now`` (any clock, as long as it is the same one throughout).

What it does, for the requests that authenticate by digest (every REGISTER, and the INVITEs
of callers not recognised by an ACL; trunks identified by their ACL never come here, so a
carrier's call rate is never throttled):

* **Failures**: a request whose credentials do not verify (unknown user and wrong password
  alike) is one failure for its source address. ``fail_limit`` failures within
  ``fail_window`` seconds ban the address for ``ban_time`` seconds: it is then refused at once
  (403), without a challenge and without hashing anything. A success does not reset the
  count: an attacker holding one valid account must not be able to clear its record between
  guesses at others.
* **Throttle**: each address has a token bucket of ``rate`` requests per second, bursts up to
  ``burst``. A request beyond it is answered 503 with Retry-After, again before any digest
  work. Answered rather than dropped: the transaction layer has already created the server
  transaction, and an answer ends it (and absorbs the sender's retransmissions) where silence
  would make a UDP sender retransmit eleven times.

Every address has its own bucket and its own count, so a flood from one source does not
affect any other. Memory is bounded (``max_sources``, least recently seen forgotten first;
bans are kept in a separate table of the same bound so that a flood of spoofed addresses
cannot push a ban out).
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["GuardSettings", "SourceGuard", "Verdict"]


class Verdict(enum.Enum):
    ALLOW = "allow"
    BANNED = "banned"
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class GuardSettings:
    fail_limit: int = 5
    """Failed authentications from one address within ``fail_window`` that ban it (0: never)."""
    fail_window: float = 60.0
    ban_time: float = 300.0
    rate: float = 50.0
    """Requests per second one address may send through the guard (0: no limit)."""
    burst: float = 100.0
    max_sources: int = 100_000


class _Source:
    __slots__ = ("failures", "last", "tokens")

    def __init__(self, tokens: float, now: float, fail_limit: int) -> None:
        self.tokens = tokens
        self.last = now
        self.failures: deque[float] = deque(maxlen=max(fail_limit, 1))


class SourceGuard:
    __slots__ = ("_bans", "_sources", "settings", "stats")

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._bans: OrderedDict[str, float] = OrderedDict()  # address -> banned until
        self.stats = {"banned": 0, "throttled": 0, "failures": 0, "bans": 0}

    def _source(self, ip: str, now: float) -> _Source:
        sources = self._sources
        source = sources.get(ip)
        if source is None:
            settings = self.settings
            source = _Source(max(settings.burst, 1.0), now, settings.fail_limit)
            sources[ip] = source
            if len(sources) > settings.max_sources:
                sources.popitem(last=False)
        else:
            sources.move_to_end(ip)
        return source

    def banned_until(self, ip: str, now: float) -> float | None:
        """When the ban of ``ip`` ends, or None if it is not banned."""
        until = self._bans.get(ip)
        if until is None:
            return None
        if until <= now:
            del self._bans[ip]
            return None
        return until

    def check(self, ip: str, now: float) -> Verdict:
        """May a request from ``ip`` be processed? Counts it against the address's rate."""
        if self._bans and self.banned_until(ip, now) is not None:
            self.stats["banned"] += 1
            return Verdict.BANNED
        settings = self.settings
        if settings.rate <= 0:
            return Verdict.ALLOW
        source = self._source(ip, now)
        elapsed = max(0.0, now - source.last)
        source.tokens = min(max(settings.burst, 1.0), source.tokens + elapsed * settings.rate)
        source.last = now
        if source.tokens < 1.0:
            self.stats["throttled"] += 1
            return Verdict.THROTTLED
        source.tokens -= 1.0
        return Verdict.ALLOW

    def retry_after(self, ip: str, now: float) -> int:
        """Whole seconds until ``ip`` may try again (for Retry-After, RFC 3261 20.33)."""
        until = self.banned_until(ip, now)
        if until is not None:
            return max(1, math.ceil(until - now))
        source = self._sources.get(ip)
        rate = self.settings.rate
        if source is None or rate <= 0:
            return 1
        return max(1, math.ceil((1.0 - source.tokens) / rate))

    def failed(self, ip: str, now: float) -> bool:
        """Count a failed authentication from ``ip``; True if this one got it banned."""
        settings = self.settings
        self.stats["failures"] += 1
        if settings.fail_limit <= 0:
            return False
        failures = self._source(ip, now).failures
        failures.append(now)
        if len(failures) < settings.fail_limit or now - failures[0] > settings.fail_window:
            return False
        failures.clear()
        bans = self._bans
        bans[ip] = now + settings.ban_time
        bans.move_to_end(ip)
        if len(bans) > settings.max_sources:
            bans.popitem(last=False)
        self.stats["bans"] += 1
        return True

    def bans(self, now: float) -> dict[str, float]:
        """The addresses banned at ``now`` and when each ban ends."""
        return {ip: until for ip, until in self._bans.items() if until > now}
