"""Globally unique, time-ordered record ids: ULIDs (https://github.com/ulid/spec).

CDRs and balance changes are created on every node and shipped to the primary by the outbox,
so their primary keys must be unique without asking anyone: a ULID is 48 bits of Unix time in
milliseconds and 80 random bits, written as 26 characters of Crockford base32.  Ids sort by
creation time as plain strings, which keeps the primary-key index append-mostly on MariaDB
(InnoDB clusters rows by primary key) and makes "CDRs since X" a range scan.

The generator is *monotonic*: within one millisecond (or if the wall clock steps backwards) it
increments the random part instead of drawing a new one, so ids from one process are strictly
increasing.  Across processes and nodes uniqueness rests on the 80 random bits.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["ULID_LENGTH", "UlidGenerator", "new_ulid", "ulid_time"]

ULID_LENGTH = 26
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
_TIME_MAX = (1 << 48) - 1


def _encode(value: int) -> str:
    chars = []
    for _ in range(ULID_LENGTH):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class UlidGenerator:
    """Makes strictly increasing ULIDs; safe to share between threads."""

    __slots__ = ("_clock", "_last_ms", "_last_random", "_lock")

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        # ``clock`` returns milliseconds since the epoch; tests pass their own.
        self._clock: Callable[[], int] = clock or (lambda: time.time_ns() // 1_000_000)
        self._last_ms = -1
        self._last_random = 0
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            now_ms = self._clock()
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                # Leave headroom so increments within this millisecond cannot overflow
                # in practice (2**79 ids per millisecond).
                self._last_random = secrets.randbits(_RANDOM_BITS - 1)
            else:
                # Same millisecond, or the clock went backwards: stay on the last timestamp
                # and count up, which keeps ids ordered.
                self._last_random += 1
                if self._last_random > _RANDOM_MAX:
                    self._last_ms += 1
                    self._last_random = secrets.randbits(_RANDOM_BITS - 1)
            if self._last_ms > _TIME_MAX:
                raise OverflowError("ULID timestamp overflow (year 10889)")
            return _encode((self._last_ms << _RANDOM_BITS) | self._last_random)


_default = UlidGenerator()


def new_ulid() -> str:
    """A new ULID from the process-wide monotonic generator."""
    return _default.new()


def ulid_time(ulid: str) -> datetime:
    """The creation time (UTC, millisecond precision) encoded in ``ulid``."""
    if len(ulid) != ULID_LENGTH:
        raise ValueError(f"a ULID has {ULID_LENGTH} characters, got {ulid!r}")
    value = 0
    for char in ulid[:10].upper():
        try:
            value = (value << 5) | _DECODE[char]
        except KeyError:
            raise ValueError(f"not a ULID: {ulid!r}") from None
    return datetime.fromtimestamp(value / 1000, tz=UTC)
