"""Longest-prefix match of numbers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartswitch.model.prefix import DuplicatePrefixError, PrefixTable


def brute_force(items: dict[str, str], number: str) -> str | None:
    best: str | None = None
    for prefix in items:
        if number.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def test_longest_prefix_wins() -> None:
    table = PrefixTable([("4", "four"), ("44", "uk"), ("447", "uk mobile"), ("1", "nanp")])
    assert table.lookup("4479460000") == "uk mobile"
    assert table.lookup("4420") == "uk"
    assert table.lookup("49") == "four"
    assert table.lookup("12125551234") == "nanp"
    assert table.match("4479") == ("447", "uk mobile")


def test_no_match() -> None:
    table = PrefixTable([("44", 1)])
    assert table.lookup("33") is None
    assert table.match("33") is None
    assert table.lookup("") is None
    assert table.lookup("4") is None  # the number is shorter than the prefix


def test_empty_prefix_matches_everything() -> None:
    table = PrefixTable([("", "world"), ("44", "uk")])
    assert table.lookup("33") == "world"
    assert table.lookup("") == "world"
    assert table.lookup("44") == "uk"


def test_empty_table() -> None:
    table: PrefixTable[int] = PrefixTable()
    assert table.lookup("123") is None
    assert len(table) == 0
    assert list(table.matches("123")) == []


def test_exact_number_is_its_own_prefix() -> None:
    table = PrefixTable([("4420794600", "exact"), ("44", "uk")])
    assert table.lookup("4420794600") == "exact"
    assert table.lookup("442079460") == "uk"


def test_matches_lists_every_prefix_longest_first() -> None:
    table = PrefixTable([("", 0), ("4", 1), ("447", 3), ("4479", 4), ("33", 2)])
    assert list(table.matches("44791")) == [("4479", 4), ("447", 3), ("4", 1), ("", 0)]


def test_duplicate_prefix_is_refused() -> None:
    with pytest.raises(DuplicatePrefixError) as info:
        PrefixTable([("44", 1), ("33", 2), ("44", 3)])
    assert info.value.prefix == "44"


def test_grouped_keeps_every_value_in_order() -> None:
    table = PrefixTable.grouped([("44", "a"), ("33", "b"), ("44", "c")])
    assert table.lookup("4420") == ("a", "c")
    assert table.lookup("33") == ("b",)
    assert len(table) == 2


def test_container_protocol() -> None:
    table = PrefixTable([("44", 1), ("", 0)])
    assert "44" in table
    assert "4" not in table
    assert len(table) == 2
    assert table.get("44") == 1
    assert table.get("4420") is None  # get is exact, not longest-prefix
    assert dict(table.items()) == {"44": 1, "": 0}
    assert "2 prefixes" in repr(table)


def test_values_may_be_falsy() -> None:
    table = PrefixTable([("4", 0), ("44", "")])
    assert table.lookup("44") == ""
    assert table.lookup("43") == 0


digits = st.text(alphabet="0123456789", max_size=8)


@given(st.lists(digits, max_size=60, unique=True), digits)
def test_matches_brute_force(prefixes: list[str], number: str) -> None:
    items = {p: f"v{p}" for p in prefixes}
    table = PrefixTable(items.items())
    best = brute_force(items, number)
    assert table.lookup(number) == (None if best is None else items[best])
    expected = sorted((p for p in items if number.startswith(p)), key=len, reverse=True)
    assert [p for p, _ in table.matches(number)] == expected


def test_fifty_thousand_prefixes() -> None:
    rng = random.Random(42)
    items: dict[str, int] = {}
    while len(items) < 50_000:
        prefix = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 10)))
        items.setdefault(prefix, len(items))
    table = PrefixTable(items.items())
    assert len(table) == 50_000
    for _ in range(2_000):
        number = "".join(rng.choice("0123456789") for _ in range(12))
        # every length, not only the lengths that occur, as a reference
        found = [number[:i] for i in range(len(number) + 1) if number[:i] in items]
        assert table.lookup(number) == (items[found[-1]] if found else None)
