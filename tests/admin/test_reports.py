"""The operator commands: CDR export (CSV, JSON) and the account list."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin.reports import CDR_FIELDS, export_cdrs, list_accounts
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
