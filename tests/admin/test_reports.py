"""The reports: CDR export (CSV, JSON), the account list, the web's CDR search and the
dashboard's last hour."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin.reports import (
    CDR_FIELDS,
    CdrFilter,
    cdr_page,
    cdr_records,
    export_cdrs,
    last_hour,
    list_accounts,
)
from smartswitch.model.cdr import CdrRecord
from smartswitch.store.database import session_factory
from store.helpers import run_with_engine
from store.test_ledger import T0, _apply, _setup, make_cdr


def test_export_cdrs(db_url: str) -> None:
    exports: dict[str, str] = {}

    async def scenario(engine: AsyncEngine) -> str:
        ids = await _setup(engine)
        early = make_cdr(ids, "0.0200", "0.0120", callee='1555"quoted",comma')
        late = make_cdr(
            ids,
            "0",
            "0",
            setup_time=T0 + timedelta(hours=1),
            end_time=T0 + timedelta(hours=1, seconds=3),
            answer_time=None,
            supplier_peer_id=None,
            supplier_account_id=None,
            sip_code=404,
            sip_reason="Not Found",
        )
        await _apply(engine, [late, early])
        for name, fmt, since, expected in (
            ("csv", "csv", None, 2),
            ("json", "json", None, 2),
            ("since", "json", T0 + timedelta(minutes=1), 1),
            ("empty", "json", T0 + timedelta(days=1), 0),
        ):
            out = io.StringIO()
            assert await export_cdrs(engine, fmt, since, out) == expected  # type: ignore[arg-type]
            exports[name] = out.getvalue()
        return early.id

    early_id = run_with_engine(db_url, scenario)
    rows = list(csv.DictReader(io.StringIO(exports["csv"])))
    assert tuple(rows[0]) == CDR_FIELDS
    first = rows[0]
    assert first["id"] == early_id  # oldest first
    assert first["setup_time"] == "2025-03-01T12:00:00.250Z"
    assert first["customer_peer"] == "acme-trunk" and first["customer_account"] == "acme"
    assert first["supplier_peer"] == "carrier-a" and first["supplier_account"] == "carrier-a"
    assert (first["price"], first["cost"], first["profit"]) == ("0.0200", "0.0120", "0.0080")
    assert first["callee"] == '1555"quoted",comma'
    assert rows[1]["supplier_peer"] == "" and rows[1]["answer_time"] == ""
    records = json.loads(exports["json"])
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    assert records[0]["price"] == "0.0200"  # text, never a float
    assert records[1]["supplier_peer"] is None and records[1]["sip_code"] == 404
    assert [r["sip_code"] for r in json.loads(exports["since"])] == [404]
    assert json.loads(exports["empty"]) == []


def test_cdr_filter_bounds_are_utc_milliseconds() -> None:
    naive = CdrFilter(since=datetime(2025, 3, 1, 12, 0, 0, 250_999))
    assert naive.since == datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    plus_two = datetime.fromisoformat("2025-03-01T14:00:00+02:00")
    assert CdrFilter(until=plus_two).until == datetime(2025, 3, 1, 12, tzinfo=UTC)
    flt = CdrFilter(since=T0, peer="acme trunk", sip_code=404)
    assert flt.query_string() == ("since=2025-03-01T12%3A00%3A00.250Z&peer=acme+trunk&sip_code=404")
    assert CdrFilter().query_string() == ""


def test_cdr_search(db_url: str) -> None:
    """The web's CDR search: each filter, its total, newest first, pages, the stream."""

    Found = tuple[int, list[str]]

    async def scenario(engine: AsyncEngine) -> tuple[list[str], list[str], dict[str, Found]]:
        ids = await _setup(engine)
        calls = [
            make_cdr(ids, "0.0200", "0.0120", setup_time=T0 + timedelta(minutes=i))
            for i in range(3)
        ]
        refused = make_cdr(
            ids,
            "0",
            "0",
            setup_time=T0 + timedelta(minutes=5),
            answer_time=None,
            supplier_peer_id=None,
            supplier_account_id=None,
            callee="1800%_FREE",
            sip_code=404,
            sip_reason="Not Found",
        )
        await _apply(engine, [*calls, refused])
        sessions = session_factory(engine)

        async def ids_of(flt: CdrFilter, limit: int = 10, offset: int = 0) -> Found:
            total, rows = await cdr_page(sessions, flt, limit, offset)
            return total, [row["id"] for row in rows]

        stream = [r["id"] async for r in cdr_records(sessions, CdrFilter(), limit=3)]
        return (
            [c.id for c in [*calls, refused]],
            stream,
            {
                "all": await ids_of(CdrFilter()),
                "page 2": await ids_of(CdrFilter(), limit=2, offset=2),
                "window": await ids_of(
                    CdrFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=5))
                ),
                "supplier": await ids_of(CdrFilter(peer="carrier-a")),
                "customer": await ids_of(CdrFilter(peer="acme-trunk")),
                "unknown peer": await ids_of(CdrFilter(peer="nobody")),
                # LIKE's wildcards in a number are the characters themselves.
                "wildcards": await ids_of(CdrFilter(number="%_F")),
                "no match": await ids_of(CdrFilter(number="1800%X")),
                "code": await ids_of(CdrFilter(sip_code=404)),
            },
        )

    (c0, c1, c2, refused), stream, got = run_with_engine(db_url, scenario)
    assert got["all"] == (4, [refused, c2, c1, c0])
    assert got["page 2"] == (4, [c1, c0])
    assert got["window"] == (2, [c2, c1])
    assert got["supplier"] == (3, [c2, c1, c0])
    assert got["customer"] == (4, [refused, c2, c1, c0])
    assert got["unknown peer"] == (0, [])
    assert got["wildcards"] == (1, [refused])
    assert got["no match"] == (0, [])
    assert got["code"] == (1, [refused])
    assert stream == [c0, c1, c2]  # oldest first, at most the limit


def test_last_hour(db_url: str) -> None:
    now = T0 + timedelta(minutes=30)

    async def scenario(engine: AsyncEngine) -> list[tuple[str, int, int, int]]:
        ids = await _setup(engine)

        def call(minutes: float, answered: bool = True) -> CdrRecord:
            at = T0 + timedelta(minutes=minutes)
            if answered:
                return make_cdr(ids, "0.01", "0.005", setup_time=at, duration_ms=30_000)
            return make_cdr(
                ids,
                "0",
                "0",
                setup_time=at,
                answer_time=None,
                duration_ms=0,
                supplier_peer_id=None,
                supplier_account_id=None,
                sip_code=486,
            )

        records = [call(-29), call(-31), call(-2), call(-1, answered=False), call(20)]
        await _apply(engine, records)
        buckets = await last_hour(session_factory(engine), now)
        return [
            (b.start.strftime("%H:%M"), b.attempts, b.answered, b.talk_ms)
            for b in buckets
            if b.attempts
        ]

    got = run_with_engine(db_url, scenario)
    # Twelve five-minute buckets from 11:31 to the minute after now (12:31): the call of
    # 11:29 is older than the hour.
    assert got == [
        ("11:31", 1, 1, 30_000),
        ("11:56", 2, 1, 30_000),
        ("12:16", 1, 1, 30_000),
    ]


def test_list_accounts(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> tuple[str, str]:
        await _setup(engine)
        from smartswitch.store.ledger import topup

        async with session_factory(engine)() as session, session.begin():
            await topup(session, "carrier-b", Decimal("1234.5"), "test")
        table, js = io.StringIO(), io.StringIO()
        assert await list_accounts(engine, "table", table) == 3
        assert await list_accounts(engine, "json", js) == 3
        return table.getvalue(), js.getvalue()

    table, js = run_with_engine(db_url, scenario)
    assert table.splitlines() == [
        "name       currency    balance  credit_limit  available  prepaid",
        "acme       USD        100.0000        0.0000   100.0000  yes",
        "carrier-a  USD          0.0000        0.0000     0.0000  yes",
        "carrier-b  USD       1234.5000        0.0000  1234.5000  yes",
    ]
    assert json.loads(js)[2] == {
        "name": "carrier-b",
        "currency": "USD",
        "balance": "1234.5000",
        "credit_limit": "0.0000",
        "available": "1234.5000",
        "prepaid": True,
    }


def test_bad_formats() -> None:
    async def scenario(engine: AsyncEngine) -> None:
        with pytest.raises(ValueError):
            await export_cdrs(engine, "xml", None, io.StringIO())  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await list_accounts(engine, "csv", io.StringIO())  # type: ignore[arg-type]

    run_with_engine("sqlite+aiosqlite:///:memory:", scenario)
