"""Fixtures: every database test runs on SQLite (a file in tmp) and on MariaDB.

MariaDB is the server on 127.0.0.1:3306 (user root, empty password; override with
SMARTSWITCH_TEST_MARIADB=host:port).  If none answers there but ``mariadbd`` is installed,
the session starts a private instance on a spare loopback port (in a temporary directory, about
half a second) and stops it at the end, so a fresh CI machine tests MariaDB too.  Each test
session creates its own database ``smartswitch_t_<pid>``, migrates it once, empties it before
each test, and drops it at the end.  With neither, the MariaDB variants are skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartswitch.store.migrate import upgrade
from smartswitch.store.schema import Base

MARIADB = os.environ.get("SMARTSWITCH_TEST_MARIADB", "127.0.0.1:3306")


def _mariadb_admin(address: str) -> Any:
    import pymysql

    host, _, port = address.partition(":")
    return pymysql.connect(
        host=host, port=int(port or 3306), user="root", password="", connect_timeout=2
    )


_SBIN = os.pathsep.join((os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"))


def _start_private_mariadb(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throw-away mariadbd on a free loopback port; raises RuntimeError if it cannot."""
    mariadbd = shutil.which("mariadbd", path=_SBIN)
    install_db = shutil.which("mariadb-install-db", path=_SBIN)
    if mariadbd is None or install_db is None:
        raise RuntimeError("mariadbd is not installed (Debian package mariadb-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cnf = base / "my.cnf"
    cnf.write_text(
        "[mariadbd]\n"
        + ("user=root\n" if os.geteuid() == 0 else "")
        + f"datadir={base / 'data'}\nport={port}\nbind-address=127.0.0.1\n"
        f"socket={base / 'mariadb.sock'}\npid-file={base / 'mariadb.pid'}\n"
        f"log-error={base / 'error.log'}\nskip-name-resolve\ninnodb-buffer-pool-size=64M\n"
    )
    subprocess.run(
        [
            install_db,
            f"--defaults-file={cnf}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    server = subprocess.Popen(
        [mariadbd, f"--defaults-file={cnf}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            _mariadb_admin(address).close()
            return server, address
        except Exception as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                server.terminate()
                server.wait(timeout=30)
                raise RuntimeError(f"private mariadbd did not start: {exc}") from exc
            time.sleep(0.1)


@pytest.fixture(scope="session")
def mariadb_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a MariaDB server that root may use without a password."""
    try:
        _mariadb_admin(MARIADB).close()
    except Exception as exc:
        unreachable = exc
    else:
        yield MARIADB
        return
    try:
        server, address = _start_private_mariadb(tmp_path_factory.mktemp("mariadb"))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"MariaDB not reachable at {MARIADB} ({unreachable}) and {exc}")
    try:
        yield address
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture(scope="session")
def mariadb_url(mariadb_address: str) -> Iterator[str]:
    """A migrated database of this test session on the MariaDB server (dropped at the end)."""
    admin = _mariadb_admin(mariadb_address)
    name = f"smartswitch_t_{os.getpid()}"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    url = f"mysql+aiomysql://root@{mariadb_address}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def _empty_mariadb(url: str) -> None:
    """Back to the state right after the migration: no rows, config_version 0."""
    address, database = url.split("@", 1)[1].split("/", 1)
    admin = _mariadb_admin(address)
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
    server: str = request.getfixturevalue("mariadb_url")
    _empty_mariadb(server)
    return server
