"""Connecting to the database: the URL, the engine and the session factory.

Two databases, one code path:

* SQLite (``sqlite+aiosqlite:///<data_dir>/smartswitch.db``) for a single node.  Every
  connection sets ``journal_mode=WAL`` (readers do not block the writer), ``synchronous=FULL``
  (a committed CDR batch survives a power cut), ``foreign_keys=ON`` and a busy timeout.
  Transactions start with ``BEGIN IMMEDIATE``: the sqlite3 module otherwise runs the SELECTs
  that precede the first write *outside* any transaction (so a read-check-write such as
  "skip CDRs that exist, insert the rest" would not be atomic), and a deferred transaction
  that reads and then writes can fail with SQLITE_BUSY instead of waiting.  SQLite has one
  writer at a time anyway, so taking the write lock up front costs nothing in throughput.
  A list of rows is inserted a page of rows per statement (SQLAlchemy's "insertmanyvalues",
  which MariaDB's driver does on its own), not a statement per row: aiosqlite's thread gives up
  the GIL at each statement and waits up to the switch interval (5 ms) to take it back from a
  busy event loop, and a forwarder's batch of 311 CDRs took 4.5 s so.
* MariaDB (``mysql+aiomysql://user:pass@host:port/db``) for the cluster, with a connection
  pool that checks connections before use and recycles them before the server's wait_timeout.

:func:`create_sync_engine` gives a blocking engine on the same database (pysqlite, PyMySQL)
for work done away from the event loop: a node reads its configuration that way, in a process
of its own (:mod:`smartswitch.runtime.reader`).  Its SQLite transactions are
plain deferred ``BEGIN``: it only reads, and in WAL mode a reader sees one consistent snapshot
from its first read on without holding up the writers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as _create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

__all__ = [
    "DB_FILENAME",
    "create_engine",
    "create_sync_engine",
    "database_url",
    "is_sqlite",
    "session_factory",
]

DB_FILENAME = "smartswitch.db"
SQLITE_BUSY_TIMEOUT_MS = 10_000

# Bare schemes an operator may type, mapped to the async drivers we ship.
_SCHEME_ALIASES = {
    "sqlite": "sqlite+aiosqlite",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
    "mariadb+aiomysql": "mysql+aiomysql",
}


def database_url(data_dir: Path, override: str | None = None) -> str:
    """The database to use: ``override`` if given (e.g. the cluster's MariaDB), else the
    embedded SQLite file ``<data_dir>/smartswitch.db``.

    ``sqlite://``, ``mysql://`` and ``mariadb://`` are accepted and mapped to the async
    drivers (aiosqlite, aiomysql).
    """
    if override:
        scheme, sep, rest = override.partition("://")
        if not sep:
            raise ValueError(f"not a database URL: {override!r}")
        return f"{_SCHEME_ALIASES.get(scheme, scheme)}://{rest}"
    return f"sqlite+aiosqlite:///{(data_dir / DB_FILENAME).resolve()}"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` set up as described in the module docstring."""
    parsed, kwargs = _engine_options(make_url(url), echo)
    engine = _create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        _install_sqlite_hooks(engine.sync_engine, "BEGIN IMMEDIATE")
        engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


#: The blocking drivers of the same databases (PyMySQL is what aiomysql wraps).
_SYNC_DRIVERS = {"sqlite": "pysqlite", "mysql": "pymysql", "mariadb": "pymysql"}


def create_sync_engine(url: str) -> Engine:
    """A blocking :class:`Engine` on the database of ``url`` (an async URL as the node uses),
    for readers that run away from the event loop (see the module docstring)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    parsed = parsed.set(
        drivername=f"{backend}+{_SYNC_DRIVERS.get(backend, parsed.get_driver_name())}"
    )
    parsed, kwargs = _engine_options(parsed, echo=False)
    engine = _create_sync_engine(parsed, **kwargs)
    if backend == "sqlite":
        _install_sqlite_hooks(engine, "BEGIN")
    return engine


def _engine_options(parsed: URL, echo: bool) -> tuple[URL, dict[str, Any]]:
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    elif parsed.get_backend_name() in ("mysql", "mariadb"):
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        kwargs.update(
            pool_size=5,
            max_overflow=10,
            pool_timeout=10,
            pool_pre_ping=True,  # a replica or primary restart leaves dead pooled sockets
            pool_recycle=1800,  # well inside MariaDB's default wait_timeout (8 h)
        )
    return parsed, kwargs


def _install_sqlite_hooks(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Turn off the sqlite3 module's own transaction handling; "begin" below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


Sessions = async_sessionmaker[AsyncSession]


def session_factory(engine: AsyncEngine) -> Sessions:
    """Sessions for ``engine``.  ``expire_on_commit=False`` because objects are read after the
    commit (to build values for the call path) and an expired attribute would need a lazy load,
    which asyncio cannot do implicitly."""
    return async_sessionmaker(engine, expire_on_commit=False)
