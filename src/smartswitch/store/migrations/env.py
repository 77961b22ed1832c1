"""Alembic environment for smartswitch: async engines, SQLite and MariaDB.

Two ways in:

* ``smartswitch.store.migrate.upgrade()`` opens the connection itself (with the switch's own
  engine settings) and hands it over in ``config.attributes["connection"]``; nothing here then
  touches logging configuration, which belongs to the running node.
* The ``alembic`` command line (developers): the URL comes from ``-x url=...`` or the
  ``SMARTSWITCH_DATABASE_URL`` environment variable, and ``--sql`` (offline mode) prints the
  DDL for a DBA instead of running it.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from smartswitch.store.database import create_engine
from smartswitch.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "SMARTSWITCH_DATABASE_URL"
    )
    if not url:
        raise SystemExit("give the database with -x url=... or SMARTSWITCH_DATABASE_URL")
    return url


def _run_on(connection: Connection) -> None:
    # SQLite can roll DDL back; Alembic assumes it cannot unless told, so a failed upgrade
    # would leave half a schema.  MariaDB commits each DDL statement whatever we say.
    if connection.dialect.name == "sqlite":
        _configure(connection=connection, transactional_ddl=True)
    else:
        _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online_from_cli() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_run_online_from_cli())


main()
