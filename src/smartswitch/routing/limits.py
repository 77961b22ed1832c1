"""Per-peer call limits: concurrent calls and calls per second, counted in memory."""

from __future__ import annotations


class RateLimiter:
    """A token bucket per key: ``rate`` calls per second, bursts up to ``rate``."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, last time)

    def allow(self, key: int, rate: int, now: float) -> bool:
        """Take a token if there is one."""
        tokens = self._tokens(key, rate, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def available(self, key: int, rate: int, now: float) -> bool:
        """Whether :meth:`allow` would let a call through, taking nothing."""
        return self._tokens(key, rate, now) >= 1.0

    def _tokens(self, key: int, rate: int, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(rate), now))
        return min(float(rate), tokens + (now - last) * rate)


class CallCounter:
    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def get(self, key: int) -> int:
        return self._counts.get(key, 0)

    def add(self, key: int) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def remove(self, key: int) -> None:
        left = self._counts.get(key, 0) - 1
        if left > 0:
            self._counts[key] = left
        else:
            self._counts.pop(key, None)
