"""Fixtures: every database test runs on SQLite (a file in tmp) and on MariaDB.

MariaDB is the server on 127.0.0.1:3306 (user root, empty password; override with
SMARTSWITCH_TEST_MARIADB=host:port).  Each test session creates its own database
``smartswitch_t_<pid>``, migrates it once, empties it before each test, and drops it at the end.
Without a reachable server the MariaDB variants are skipped, saying why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartswitch.store.migrate import upgrade
from smartswitch.store.schema import Base

MARIADB = os.environ.get("SMARTSWITCH_TEST_MARIADB", "127.0.0.1:3306")


def _mariadb_admin() -> Any:
    import pymysql

    host, _, port = MARIADB.partition(":")
    return pymysql.connect(
        host=host, port=int(port or 3306), user="root", password="", connect_timeout=2
    )


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A migrated database of this test session on the MariaDB server (dropped at the end)."""
    try:
        admin = _mariadb_admin()
    except Exception as exc:
        pytest.skip(f"MariaDB not reachable at {MARIADB} as root: {exc}")
    name = f"smartswitch_t_{os.getpid()}"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    url = f"mysql+aiomysql://root@{MARIADB}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def _empty_mariadb(url: str) -> None:
    """Back to the state right after the migration: no rows, config_version 0."""
    admin = _mariadb_admin()
    database = url.rsplit("/", 1)[1]
    try:
        with admin.cursor() as cur:
            cur.execute(f"USE {database}")
            cur.execute("SET FOREIGN_KEY_CHECKS=0")
            for table in Base.metadata.sorted_tables:
                cur.execute(f"TRUNCATE TABLE `{table.name}`")
            cur.execute("SET FOREIGN_KEY_CHECKS=1")
            cur.execute("INSERT INTO config_version (id, version) VALUES (1, 0)")
        admin.commit()
    finally:
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a freshly migrated, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'smartswitch.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("mariadb_url")
    _empty_mariadb(url)
    return url
