"""Running the schema migrations shipped in ``store/migrations`` (Alembic), programmatically.

``smartswitch db upgrade`` and node start call :func:`upgrade`; it is idempotent (a database
at head is left alone) and takes the same URLs as :func:`~smartswitch.store.database.
create_engine`, so the migrations run with the same connection settings as the switch.

**Expand, then contract.** A cluster is upgraded one node at a time, so for a while nodes of
two releases share one schema, in either order: the new release runs against the old schema
until ``smartswitch db upgrade`` (this code never migrates an existing cluster database by
itself: :func:`prepare_schema`), and the old release runs against the new schema until its
last node is upgraded. So a migration only *expands* (new tables; new columns nullable or with
a server default) unless its module says ``contract = True`` (it drops, renames or narrows
something): a contract migration ships in a later release than the one that stopped using
what it removes, and ``db upgrade`` refuses it while a node whose code does not carry it is
still registered (smartswitch.cluster.upgrade). ``tests/store/test_expand_contract.py`` checks
every migration after :data:`EXPAND_BASELINE` against its flag.

On SQLite the whole upgrade is one transaction.  MariaDB commits every DDL statement
implicitly, so a migration that fails halfway leaves the tables it already made: fix the cause
and run the upgrade again only after removing them (or restore the backup taken before).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.store.database import create_engine

__all__ = [
    "EXPAND_BASELINE",
    "OLDEST_SUPPORTED",
    "Migration",
    "SchemaError",
    "alembic_config",
    "current_revision",
    "head_revision",
    "knows",
    "migrations",
    "pending",
    "prepare_schema",
    "revision_of",
    "run_blocking",
    "upgrade",
    "upgrade_async",
]

T = TypeVar("T")

log = logging.getLogger("smartswitch.store.migrate")

#: The oldest schema this code runs against: the previous release's (a rolling upgrade runs
#: this release on it until ``smartswitch db upgrade``). Moves forward with each release.
OLDEST_SUPPORTED = "0007"
#: The migrations after this one are checked to be expand-only unless flagged contract; the
#: ones up to it were written before the rule (each release since runs on its own schema).
EXPAND_BASELINE = "0007"


class SchemaError(RuntimeError):
    """The database's schema is not one this code can run against, or cannot move to."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration shipped in the package."""

    revision: str
    down_revision: str | None
    contract: bool  # drops, renames or narrows: needs every node to run code that knows it
    title: str  # its docstring's first line


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


def migrations(config: Config | None = None) -> list[Migration]:
    """Every migration of the package (or of ``config``'s script directory), oldest first."""
    script = ScriptDirectory.from_config(config or alembic_config())
    found = []
    for rev in reversed(list(script.walk_revisions())):
        down = rev.down_revision
        if down is not None and not isinstance(down, str):
            raise SchemaError(f"migration {rev.revision} merges branches: not supported")
        title = (rev.doc or "").strip().splitlines()
        found.append(
            Migration(
                rev.revision,
                down,
                bool(getattr(rev.module, "contract", False)),
                title[0] if title else "",
            )
        )
    return found


def pending(current: str | None, steps: list[Migration]) -> list[Migration]:
    """The migrations a database at ``current`` still needs (all of them for None)."""
    ids = [m.revision for m in steps]
    if current is None:
        return list(steps)
    if current not in ids:
        raise SchemaError(
            f"the database's schema is at revision {current}, which this release does not "
            "know: a newer release made it"
        )
    return steps[ids.index(current) + 1 :]


def knows(head: str, revision: str, steps: list[Migration]) -> bool:
    """Whether code whose newest migration is ``head`` carries ``revision``: an empty head
    is a release from before nodes reported one (older than every migration since); a head
    this code does not know is a newer release's."""
    ids = [m.revision for m in steps]
    if not head:
        return False
    if head not in ids:
        return True
    return ids.index(head) >= ids.index(revision)


async def revision_of(engine: AsyncEngine) -> str | None:
    """The revision the database behind ``engine`` is at (None: never migrated)."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )


async def prepare_schema(database_url: str, *, migrate_existing: bool) -> str:
    """Make sure this code can run on the database; returns its revision then.

    An empty database is created at head. An existing one is migrated only with
    ``migrate_existing`` (a single node, which owns its database); in a cluster it is left
    to ``smartswitch db upgrade`` on the primary, and accepted from :data:`OLDEST_SUPPORTED`
    on (and at a newer release's revision: expand-then-contract keeps this code working).
    """
    engine = create_engine(database_url)
    try:
        current = await revision_of(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    steps = migrations()
    ids = [m.revision for m in steps]
    if current is None or (migrate_existing and current != head):
        pending(current, steps)  # a newer release's schema: refused, not "downgraded"
        await upgrade_async(database_url)
        return head
    if current not in ids:
        log.warning(
            "the database's schema is at %s, newer than this release's %s: running on it "
            "(migrations only expand while an older node may run)",
            current,
            head,
        )
    elif ids.index(current) < ids.index(OLDEST_SUPPORTED):
        raise SchemaError(
            f"the database's schema is at {current}, older than this release runs on "
            f"({OLDEST_SUPPORTED}): run `smartswitch db upgrade` on the primary with the "
            "previous release first"
        )
    elif current != head:
        log.warning(
            "the database's schema is at %s, this release's is %s: run `smartswitch db "
            "upgrade` on the primary once every node runs this release",
            current,
            head,
        )
    return current


async def upgrade_async(
    database_url: str, revision: str = "head", config: Config | None = None
) -> None:
    """Bring the database at ``database_url`` up to ``revision`` (default: the newest) with
    the package's migrations (or ``config``'s)."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, revision, config or alembic_config())
    finally:
        await engine.dispose()


def _upgrade_on(connection: Connection, revision: str, config: Config) -> None:
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
        return await revision_of(engine)
    finally:
        await engine.dispose()
