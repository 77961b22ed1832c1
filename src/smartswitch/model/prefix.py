"""Longest-prefix match of dialled numbers, the lookup behind rates and routes.

Carrier rate sheets and routing plans are keyed by destination prefix ("44", "447", "4479...")
and the most specific (longest) prefix that starts the number wins; the empty prefix "" is the
catch-all ("rest of world").  The table is a single dict keyed by prefix plus the tuple of prefix
lengths that actually occur, longest first: a lookup tries ``number[:n]`` only for those lengths,
so its cost grows with the number of distinct lengths (about 15 in real sheets), not with the
number of prefixes.  That is a dict probe per length, a few microseconds for 50 000 prefixes,
with no per-node objects as a trie would need.

Prefixes are matched as plain strings: normalising the number (stripping "+", "00", technical
prefixes) is the job of the rewrite rules that run before the lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T", covariant=True)  # read-only after construction, so covariant
V = TypeVar("V")

__all__ = ["DuplicatePrefixError", "PrefixTable"]


class DuplicatePrefixError(ValueError):
    """The same prefix was given twice, so which value it maps to would be ambiguous."""

    def __init__(self, prefix: str) -> None:
        super().__init__(f"prefix {prefix!r} is given more than once")
        self.prefix = prefix


class PrefixTable(Generic[T]):
    """An immutable map from prefixes to values, queried by longest prefix of a number.

    Build it whole from ``(prefix, value)`` pairs; a duplicate prefix raises
    :class:`DuplicatePrefixError` (use :meth:`grouped` when a prefix legitimately carries several
    values, such as rates with different effective periods).
    """

    __slots__ = ("_lengths", "_values")

    _values: dict[str, T]
    _lengths: tuple[int, ...]

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        values: dict[str, T] = {}
        for prefix, value in items:
            if prefix in values:
                raise DuplicatePrefixError(prefix)
            values[prefix] = value
        self._values = values
        self._lengths = tuple(sorted({len(p) for p in values}, reverse=True))

    @classmethod
    def grouped(cls, items: Iterable[tuple[str, V]]) -> PrefixTable[tuple[V, ...]]:
        """A table whose value per prefix is the tuple of all values given for it, in order."""
        groups: dict[str, list[V]] = {}
        for prefix, value in items:
            groups.setdefault(prefix, []).append(value)
        return PrefixTable((p, tuple(vs)) for p, vs in groups.items())

    def match(self, number: str) -> tuple[str, T] | None:
        """The longest prefix of ``number`` in the table and its value, or None."""
        values = self._values
        size = len(number)
        for length in self._lengths:
            if length <= size:
                prefix = number[:length]
                if prefix in values:
                    return prefix, values[prefix]
        return None

    def lookup(self, number: str) -> T | None:
        """The value of the longest prefix of ``number``, or None when no prefix matches."""
        found = self.match(number)
        return None if found is None else found[1]

    def matches(self, number: str) -> Iterator[tuple[str, T]]:
        """Every prefix of ``number`` in the table with its value, longest first.

        For callers that fall back to a shorter prefix when the longest one is unusable (a rate
        not in force at the call's time, for instance).
        """
        values = self._values
        size = len(number)
        for length in self._lengths:
            if length <= size:
                prefix = number[:length]
                if prefix in values:
                    yield prefix, values[prefix]

    def get(self, prefix: str) -> T | None:
        """The value stored under exactly ``prefix`` (no longest-prefix search)."""
        return self._values.get(prefix)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._values.items())

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<PrefixTable {len(self._values)} prefixes, lengths {list(self._lengths)}>"
