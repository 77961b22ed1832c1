"""The migrations make exactly the ORM schema, on SQLite and MariaDB, and SQLite is set up
for durability (WAL, synchronous=FULL)."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.store.migrate import current_revision, head_revision, upgrade
from smartswitch.store.schema import Base

from .helpers import run_with_engine

TABLES = {
    "accounts",
    "tariffs",
    "rates",
    "peers",
    "routes",
    "route_suppliers",
    "cdrs",
    "cdr_attempts",
    "balance_changes",
    "settings",
    "config_version",
    "subscribers",
    "dids",
    "registrations",
    "users",
    "api_tokens",
    "nodes",
    "config_audit",
    "cluster_state",
    "promotions",
    "alembic_version",
}


def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    upgrade(db_url)  # a second time: nothing to do
    assert asyncio.run(current_revision(db_url)) == head_revision() == "0012"

    async def check(engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert tables == TABLES
            row = (await conn.execute(text("SELECT id, version FROM config_version"))).all()
            assert [tuple(r) for r in row] == [(1, 0)]

    run_with_engine(db_url, check)


def test_migrations_match_the_orm_metadata(db_url: str) -> None:
    async def diff(engine: AsyncEngine) -> list[object]:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
                )
            )

    assert run_with_engine(db_url, diff) == []


def test_compare_metadata_would_notice_a_difference(tmp_path: object) -> None:
    # Guard against the test above passing vacuously (e.g. types not compared).
    from pathlib import Path

    import sqlalchemy as sa

    url = f"sqlite+aiosqlite:///{Path(str(tmp_path)) / 'x.db'}"
    upgrade(url)
    changed = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["accounts"].append_column(sa.Column("extra", sa.Integer()))

    async def diff(engine: AsyncEngine) -> list[object]:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), changed
                )
            )

    diffs = run_with_engine(url, diff)
    assert len(diffs) == 1 and diffs[0][0] == "add_column"  # type: ignore[index]


def test_sqlite_pragmas(tmp_path: object) -> None:
    from pathlib import Path

    url = f"sqlite+aiosqlite:///{Path(str(tmp_path)) / 'sub' / 'dir' / 'smartswitch.db'}"
    upgrade(url)  # also creates the missing directories

    async def pragmas(engine: AsyncEngine) -> tuple[object, ...]:
        async with engine.connect() as conn:
            values = []
            for name in ("journal_mode", "synchronous", "foreign_keys"):
                values.append((await conn.exec_driver_sql(f"PRAGMA {name}")).scalar())
            return tuple(values)

    assert run_with_engine(url, pragmas) == ("wal", 2, 1)  # synchronous 2 = FULL


def test_upgrade_from_inside_a_running_loop(tmp_path: object) -> None:
    from pathlib import Path

    url = f"sqlite+aiosqlite:///{Path(str(tmp_path)) / 'n.db'}"

    async def node_start() -> None:
        upgrade(url)  # what an async main does at start-up

    asyncio.run(node_start())
    assert asyncio.run(current_revision(url)) == "0012"
