"""Running the schema migrations shipped in ``store/migrations`` (Alembic), programmatically.

``smartswitch db upgrade`` and node start call :func:`upgrade`; it is idempotent (a database
at head is left alone) and takes the same URLs as :func:`~smartswitch.store.database.
create_engine`, so the migrations run with the same connection settings as the switch.

On SQLite the whole upgrade is one transaction.  MariaDB commits every DDL statement
implicitly, so a migration that fails halfway leaves the tables it already made: fix the cause
and run the upgrade again only after removing them (or restore the backup taken before).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from smartswitch.store.database import create_engine

__all__ = [
    "alembic_config",
    "current_revision",
    "head_revision",
    "run_blocking",
    "upgrade",
    "upgrade_async",
]

T = TypeVar("T")

_HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    """The Alembic configuration of the package (script location from ``alembic.ini``)."""
    config = Config(str(_HERE / "alembic.ini"))
    # Set it explicitly too, so an installed package never depends on %(here)s resolution.
    config.set_main_option("script_location", str(_HERE / "migrations"))
    return config


def head_revision() -> str:
    """The revision the code expects (the newest migration)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` up to ``revision`` (default: the newest)."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, revision)
    finally:
        await engine.dispose()


def _upgrade_on(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def upgrade(database_url: str, revision: str = "head") -> None:
    """Synchronous :func:`upgrade_async`, for the CLI and for node start.

    Called from inside a running event loop (an async ``main``), it runs the upgrade on a
    helper thread with its own loop and blocks until done: acceptable at start-up, where
    nothing else may run before the schema is right.
    """
    run_blocking(lambda: upgrade_async(database_url, revision))


def run_blocking(fn: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine function ``fn`` to completion from blocking code: with
    ``asyncio.run`` when no loop runs in this thread, else on a helper thread with its own
    loop (blocking the caller until done)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_call(fn))
    result: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(_call(fn)))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=work, name="smartswitch-blocking-db")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None if it has never been migrated."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )
    finally:
        await engine.dispose()
