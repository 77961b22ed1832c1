"""Revision 0002 goes up and down on SQLite with data in the tables it touches."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from sqlalchemy import text

from smartswitch.store.database import create_engine
from smartswitch.store.migrate import alembic_config, current_revision, upgrade


def _sql(url: str, *statements: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                rows: list[tuple[object, ...]] = []
                for statement in statements:
                    result = await conn.execute(text(statement))
                    if result.returns_rows:
                        rows.extend(tuple(r) for r in result)
                return rows
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _downgrade(url: str, revision: str) -> None:
    async def run() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:

                def go(sync_conn: object) -> None:
                    config = alembic_config()
                    config.attributes["connection"] = sync_conn
                    command.downgrade(config, revision)

                await conn.run_sync(go)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_0002_up_down_up_keeps_the_peers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0001")
    _sql(
        url,
        "INSERT INTO accounts (id, name, currency, balance, credit_limit, prepaid) "
        "VALUES (1, 'a', 'USD', 0, 0, 1)",
        "INSERT INTO peers (id, name, role, account_id, acl, transport, caller_rewrite, "
        "callee_rewrite, profit_control, enabled) VALUES "
        "(1, 'p', 'supplier', 1, '[]', 'udp', '[]', '[]', 'allow_loss', 1)",
    )
    upgrade(url, "0002")
    assert asyncio.run(current_revision(url)) == "0002"
    assert _sql(url, "SELECT name, deliver_dids, register_username FROM peers") == [("p", 0, None)]
    _downgrade(url, "0001")
    assert asyncio.run(current_revision(url)) == "0001"
    assert _sql(url, "SELECT name FROM peers") == [("p",)]
    upgrade(url, "0002")
    assert asyncio.run(current_revision(url)) == "0002"
