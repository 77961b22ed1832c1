"""Pure parts of the store: ids, exact money, UTC times, ACL and address text."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import DATETIME

from smartswitch.model.config import AclEntry
from smartswitch.model.ids import ULID_LENGTH, UlidGenerator, new_ulid, ulid_time
from smartswitch.store.database import database_url
from smartswitch.store.types import UtcDateTime, exact_decimal, typed_utc_ms, utc_ms
from smartswitch.store.values import format_acl_entry, parse_acl_entry, parse_address


def test_ulids_are_strictly_increasing_and_carry_their_time() -> None:
    ids = [new_ulid() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == ULID_LENGTH for i in ids)
    assert abs(ulid_time(ids[-1]) - datetime.now(UTC)) < timedelta(seconds=5)


def test_ulids_stay_ordered_when_the_clock_steps_back() -> None:
    now = [1_700_000_000_000]
    gen = UlidGenerator(lambda: now[0])
    first = gen.new()
    now[0] -= 5_000
    second = gen.new()
    now[0] += 10_000
    third = gen.new()
    assert first < second < third
    assert ulid_time(first) == ulid_time(second)  # stayed on the last timestamp
    assert ulid_time(third) == datetime.fromtimestamp(1_700_000_005, tz=UTC)


def test_exact_decimal_refuses_floats_and_rounding() -> None:
    assert exact_decimal(Decimal("0.0001"), 4) == Decimal("0.0001")
    assert exact_decimal(5, 4) == 5
    with pytest.raises(ValueError, match="float"):
        exact_decimal(0.1, 4)
    with pytest.raises(ValueError, match="more than 4 decimal places"):
        exact_decimal(Decimal("0.00001"), 4)
    with pytest.raises(ValueError, match="does not fit"):
        exact_decimal(Decimal("1e14"), 4)
    with pytest.raises(ValueError, match="finite"):
        exact_decimal(Decimal("NaN"), 4)


def test_utc_ms_truncates_and_refuses_naive_times() -> None:
    cet = timezone(timedelta(hours=1))
    value = utc_ms(datetime(2025, 1, 1, 13, 0, 0, 123_999, tzinfo=cet))
    assert value == datetime(2025, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    with pytest.raises(ValueError, match="naive"):
        utc_ms(datetime(2025, 1, 1))
    # Already in UTC (the fast path): truncated the same, and kept as is once it is.
    assert utc_ms(datetime(2025, 1, 1, 12, 0, 0, 123_999, tzinfo=UTC)) == value
    assert utc_ms(value) is value


def test_typed_times_without_a_zone_are_utc_and_others_keep_theirs() -> None:
    # What a person types (forms, provisioning, the API, `cdr export --since`).
    assert typed_utc_ms(datetime(2025, 1, 1, 12, 0, 0, 123_999)) == datetime(
        2025, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC
    )
    cet = timezone(timedelta(hours=1))
    assert typed_utc_ms(datetime(2025, 1, 1, 13, tzinfo=cet)) == datetime(
        2025, 1, 1, 12, tzinfo=UTC
    )


def test_utc_times_bind_on_sqlite_as_sqlalchemys_datetime_writes_them() -> None:
    # UtcDateTime formats SQLite's text itself (one C call); it must be the very text the
    # decorator's step followed by SQLAlchemy's DATETIME made, which the stored rows and
    # every comparison in SQL rely on.
    dialect = sqlite.dialect()
    fast = UtcDateTime().bind_processor(dialect)
    reference = DATETIME().bind_processor(dialect)  # type: ignore[no-untyped-call]
    assert fast is not None and reference is not None
    paris = timezone(timedelta(hours=1))
    for value in (
        datetime(2026, 12, 3, 9, 48, 5, 123456, tzinfo=UTC),
        datetime(2026, 12, 3, 9, 48, 5, tzinfo=UTC),
        datetime(2026, 12, 3, 10, 0, 0, 999999, tzinfo=paris),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ):
        assert fast(value) == reference(utc_ms(value).replace(tzinfo=None)), value
    assert fast(None) is None
    with pytest.raises(ValueError, match="naive"):
        fast(datetime(2026, 12, 3))
    with pytest.raises(ValueError, match="expected a datetime"):
        fast("2026-12-03 09:48:05")


@pytest.mark.parametrize(
    ("text", "network", "port", "canonical"),
    [
        ("127.0.0.2/32", "127.0.0.2/32", None, "127.0.0.2/32"),
        ("10.0.0.0/8:5060", "10.0.0.0/8", 5060, "10.0.0.0/8:5060"),
        ("192.0.2.7", "192.0.2.7/32", None, "192.0.2.7/32"),
        ("192.0.2.7:5061", "192.0.2.7/32", 5061, "192.0.2.7/32:5061"),
        ("2001:db8::/32", "2001:db8::/32", None, "2001:db8::/32"),
        ("[2001:db8::]/32:5060", "2001:db8::/32", 5060, "[2001:db8::]/32:5060"),
        ("[2001:db8::1]:5070", "2001:db8::1/128", 5070, "[2001:db8::1]/128:5070"),
    ],
)
def test_acl_entries(text: str, network: str, port: int | None, canonical: str) -> None:
    entry = parse_acl_entry(text)
    assert entry == AclEntry(ipaddress.ip_network(network), port)
    assert format_acl_entry(entry) == canonical
    assert parse_acl_entry(canonical) == entry


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("10.0.0.0/8:0", "port must be"),
        ("10.0.0.0/8:70000", "port must be"),
        ("[192.0.2.1]:5060", "brackets are for IPv6"),
        ("example.com", "not an IP network"),
        ("[2001:db8::1", "missing ']'"),
    ],
)
def test_bad_acl_entries(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_acl_entry(text)


def test_addresses() -> None:
    assert parse_address("127.0.0.3:5070") == ("127.0.0.3", 5070)
    assert parse_address("sip.example.net") == ("sip.example.net", None)
    assert parse_address("[2001:db8::5]:5060") == ("2001:db8::5", 5060)
    for bad in ("2001:db8::5:5060", "1.2.3.4:x", "bad_host:5060", "300.1.1.1"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_database_url(tmp_path: object) -> None:
    from pathlib import Path

    data = Path("/var/lib/smartswitch")
    assert database_url(data, None) == "sqlite+aiosqlite:////var/lib/smartswitch/smartswitch.db"
    assert database_url(data, "mysql://u:p@db:3306/ss") == "mysql+aiomysql://u:p@db:3306/ss"
    assert database_url(data, "mariadb://u@db/ss") == "mysql+aiomysql://u@db/ss"
    url = "mysql+aiomysql://u@db/ss"
    assert database_url(data, url) == url
    with pytest.raises(ValueError):
        database_url(data, "nonsense")
