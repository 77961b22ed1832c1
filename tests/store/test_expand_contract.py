"""Expand, then contract: every migration after the baseline only adds (tables; columns that
are nullable or have a server default) unless it says ``contract = True``; ``db upgrade``'s
plan refuses a contract step while a registered node does not know it, and names the node.

Each migration is run on a real SQLite database from the revision before it, and the schema
before and after is compared with SQLAlchemy's inspector: the check looks at what the
migration did, not at its source text.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.cluster.upgrade import plan_upgrade
from smartswitch.store.database import create_engine
from smartswitch.store.migrate import (
    EXPAND_BASELINE,
    OLDEST_SUPPORTED,
    Migration,
    SchemaError,
    alembic_config,
    knows,
    migrations,
    pending,
    prepare_schema,
    upgrade_async,
)

Schema = dict[str, dict[str, tuple[str, bool, Any]]]


async def _schema(url: str) -> Schema:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def read(sync: Any) -> Schema:
                inspector = inspect(sync)
                return {
                    table: {
                        c["name"]: (str(c["type"]), bool(c["nullable"]), c.get("default"))
                        for c in inspector.get_columns(table)
                    }
                    for table in inspector.get_table_names()
                    if table != "alembic_version"
                }

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


def contraction(before: Schema, after: Schema) -> list[str]:
    """What ``after`` removes, changes or makes stricter than ``before`` would break code
    written for ``before``; and new NOT NULL columns without a default break its inserts."""
    found = []
    for table, columns in before.items():
        if table not in after:
            found.append(f"table {table} dropped")
            continue
        for name, (kind, nullable, _) in columns.items():
            if name not in after[table]:
                found.append(f"{table}.{name} dropped (or renamed)")
                continue
            new_kind, new_nullable, _ = after[table][name]
            if new_kind != kind:
                found.append(f"{table}.{name} type {kind} -> {new_kind}")
            if nullable and not new_nullable:
                found.append(f"{table}.{name} made NOT NULL")
    for table, columns in after.items():
        old = before.get(table)
        if old is None:
            continue  # a new table: nothing of the previous release uses it
        for name, (_, nullable, default) in columns.items():
            if name not in old and not nullable and default is None:
                found.append(f"{table}.{name} added NOT NULL without a default")
    return found


def _changes(step: Migration, workdir: Path, config: Config | None = None) -> list[str]:
    url = f"sqlite+aiosqlite:///{workdir / f'{step.revision}.db'}"

    async def run() -> list[str]:
        if step.down_revision is not None:
            await upgrade_async(url, step.down_revision, config)
        before = await _schema(url)
        await upgrade_async(url, step.revision, config)
        return contraction(before, await _schema(url))

    return asyncio.run(run())


def test_every_migration_after_the_baseline_only_expands_unless_marked(tmp_path: Path) -> None:
    steps = migrations()
    ids = [m.revision for m in steps]
    checked = steps[ids.index(EXPAND_BASELINE) + 1 :]
    assert checked, "no migration after the baseline: the test would check nothing"
    for step in checked:
        changes = _changes(step, tmp_path)
        if not step.contract:
            assert changes == [], f"{step.revision} is not marked contract = True: {changes}"
    assert ids.index(OLDEST_SUPPORTED) <= ids.index(ids[-1])


def _with_extra(tmp_path: Path, body: str, contract: bool) -> Config:
    """The package's migrations plus a 9999 whose upgrade() is ``body``, in a copy."""
    source = Path(alembic_config().get_main_option("script_location") or "")
    target = tmp_path / "migrations"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrations()[-1].revision
    (target / "versions" / "9999_extra.py").write_text(
        f'''"""A test migration.

Revision ID: 9999
Revises: {head}
"""

import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None
contract = {contract}


def upgrade() -> None:
{body}
'''
    )
    config = alembic_config()
    config.set_main_option("script_location", str(target))
    return config


def test_the_check_catches_a_drop_a_rename_and_a_not_null_column(tmp_path: Path) -> None:
    bodies = {
        "drop": '    with op.batch_alter_table("nodes") as b:\n        b.drop_column("shared_ip")',
        "rename": '    with op.batch_alter_table("nodes") as b:\n'
        '        b.alter_column("dedicated_ip", new_column_name="ip")',
        "not null": '    op.add_column("peers", sa.Column("x", sa.Integer(), nullable=False))',
        "stricter": '    with op.batch_alter_table("cdrs") as b:\n'
        '        b.alter_column("supplier_peer_id", existing_type=sa.Integer(), nullable=False)',
    }
    for what, body in bodies.items():
        config = _with_extra(tmp_path / what.replace(" ", "-"), body, contract=False)
        step = migrations(config)[-1]
        assert step.revision == "9999" and not step.contract
        changes = _changes(step, tmp_path / what.replace(" ", "-"), config)
        assert changes, f"{what}: not seen"
    # An expand step passes.
    config = _with_extra(
        tmp_path / "expand",
        '    op.add_column("peers", sa.Column("note", sa.String(20), nullable=True))',
        contract=False,
    )
    assert _changes(migrations(config)[-1], tmp_path / "expand", config) == []


async def _register(engine: AsyncEngine, nodes: dict[str, str]) -> None:
    async with engine.begin() as conn:
        for name, head in nodes.items():
            await conn.execute(
                text(
                    "INSERT INTO nodes (name, dedicated_ip, sip_address, http_address, "
                    "shared_ip, db_scheme, registered_at, version, schema_head) VALUES "
                    "(:n, '', '', '', '', 'replication', :t, :v, :h)"
                ),
                {"n": name, "t": datetime.now(UTC), "v": "0.1.0" if head else "", "h": head},
            )


def test_db_upgrade_refuses_a_contract_step_while_a_node_does_not_know_it(
    tmp_path: Path,
) -> None:
    config = _with_extra(
        tmp_path,
        '    with op.batch_alter_table("nodes") as b:\n        b.drop_column("shared_ip")',
        contract=True,
    )
    steps = migrations(config)
    head = steps[-2].revision  # the package's newest: what this release's nodes report
    url = f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}"

    async def run() -> None:
        await upgrade_async(url, head, config)
        engine = create_engine(url)
        try:
            await _register(engine, {"node1": "9999", "node2": head, "node3": ""})
            plan = await plan_upgrade(engine, steps)
            assert [m.revision for m in plan.steps] == ["9999"]
            assert not plan.safe
            assert [b.node for b in plan.blockers] == ["node2", "node3"]
            refusal = plan.refusal()
            assert "node2 (version 0.1.0, schema " + head in refusal
            assert "node3 (a release that does not report its schema" in refusal
            assert "node1" not in refusal
            # Nodes gone for good can be left out; then nothing holds it back.
            assert (await plan_upgrade(engine, steps, {"node2", "node3"})).safe
            # Everyone on the release that carries it: safe.
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE nodes SET schema_head = '9999'"))
            assert (await plan_upgrade(engine, steps)).safe
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_an_expand_step_goes_ahead_with_old_nodes_in_the_cluster(tmp_path: Path) -> None:
    steps = migrations()
    before = steps[-2].revision
    url = f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}"

    async def run() -> None:
        await upgrade_async(url, before)
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:  # a node of the previous release, as it wrote
                await conn.execute(
                    text(
                        "INSERT INTO nodes (name, dedicated_ip, sip_address, http_address, "
                        "shared_ip, db_scheme, registered_at) VALUES "
                        "('old', '', '', '', '', 'replication', :t)"
                    ),
                    {"t": datetime.now(UTC)},
                )
            plan = await plan_upgrade(engine, steps)
            assert [m.revision for m in plan.steps] == [steps[-1].revision]
            assert not steps[-1].contract and plan.safe
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_knows_and_pending() -> None:
    steps = migrations()
    last = steps[-1].revision
    assert knows(last, last, steps)
    assert not knows("", last, steps)  # a release from before nodes reported it
    assert knows("9999", last, steps)  # a newer release
    assert not knows(steps[0].revision, last, steps)
    assert pending(last, steps) == []
    assert pending(None, steps) == steps
    try:
        pending("9999", steps)
    except SchemaError as exc:
        assert "newer release" in str(exc)
    else:
        raise AssertionError("a revision from a newer release was not refused")


def test_a_cluster_node_runs_on_the_previous_schema_and_does_not_migrate_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.db'}"

    async def run() -> None:
        await upgrade_async(url, OLDEST_SUPPORTED)
        assert await prepare_schema(url, migrate_existing=False) == OLDEST_SUPPORTED
        older = migrations()[0].revision
        url2 = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        await upgrade_async(url2, older)
        try:
            await prepare_schema(url2, migrate_existing=False)
        except SchemaError as exc:
            assert "db upgrade" in str(exc)
        else:
            raise AssertionError("a schema older than supported was accepted")
        # A single node migrates its own.
        assert await prepare_schema(url, migrate_existing=True) == migrations()[-1].revision

    asyncio.run(run())
