"""The replication scheme: one MariaDB primary, every other node's MariaDB a GTID replica.

``init_primary`` prepares the primary (schema, replication account); ``add_replica`` takes a
consistent snapshot of the primary (``mariadb-dump --single-transaction --master-data`` with
the GTID position), loads it into the node's own MariaDB, and starts replication from that
position with ``MASTER_USE_GTID=slave_pos``, read-only. A replica keeps answering reads while
the primary is down and catches up by itself when it returns (``MASTER_CONNECT_RETRY=1``).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pymysql
from sqlalchemy.engine import URL, make_url

from smartswitch.model.cluster import Promotion
from smartswitch.store.cluster_state import read_cluster_state, record_promotion
from smartswitch.store.database import create_engine, database_url, session_factory
from smartswitch.store.migrate import run_blocking, upgrade

REPL_USER = "smartswitch_repl"


class ClusterError(RuntimeError):
    pass


def replication_password(cluster_secret: str) -> str:
    """The replication account's password, derived from the cluster secret (never logged)."""
    if not cluster_secret:
        raise ClusterError("cluster_secret is not set in the node config")
    return hashlib.sha256(b"smartswitch-repl:" + cluster_secret.encode()).hexdigest()[:32]


def _connect(url: URL, database: str | None = None) -> pymysql.connections.Connection[Any]:
    try:
        return pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            database=database,
            autocommit=True,
            connect_timeout=5,
        )
    except pymysql.MySQLError as exc:
        raise ClusterError(f"cannot connect to {url.host}:{url.port}: {exc}") from None


def _exec(conn: pymysql.connections.Connection[Any], sql: str, *args: Any) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        return list(cur.fetchall())


def init_primary(database_url: str, cluster_secret: str, *, node_name: str = "") -> None:
    """Make the node's MariaDB the cluster's primary: writable, schema up to date, and an
    account the replicas replicate with. With ``node_name``, the cluster state records it as
    the primary of the first epoch (unless a primary is recorded already)."""
    url = make_url(database_url)
    name = url.database or "smartswitch"
    conn = _connect(url)
    try:
        _exec(conn, f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        _exec(conn, "SET GLOBAL read_only = 0")
        password = replication_password(cluster_secret)
        _exec(conn, f"CREATE USER IF NOT EXISTS '{REPL_USER}'@'%%' IDENTIFIED BY %s", password)
        _exec(conn, f"ALTER USER '{REPL_USER}'@'%%' IDENTIFIED BY %s", password)
        _exec(conn, f"GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'")
    finally:
        conn.close()
    upgrade(database_url)
    if node_name:
        address = f"{url.host or '127.0.0.1'}:{url.port or 3306}"
        record_epoch(
            database_url,
            node_name,
            address,
            reason="initial primary",
            automatic=False,
            from_gtid="",
            only_if_none=True,
        )


def record_epoch(
    url: str,
    node: str,
    address: str,
    *,
    reason: str,
    automatic: bool,
    from_gtid: str,
    epoch: int | None = None,
    now: datetime | None = None,
    only_if_none: bool = False,
) -> Promotion | None:
    """Write a new epoch (and its history row) on the primary at ``url``, committed, so it
    replicates: ``node`` (its database at ``address``) is the primary from now on. With
    ``only_if_none``, nothing is written where a primary is recorded already (None)."""

    async def write() -> Promotion | None:
        engine = create_engine(database_url(Path(), url))
        try:
            async with session_factory(engine)() as session, session.begin():
                if only_if_none and await read_cluster_state(session) is not None:
                    return None
                return await record_promotion(
                    session,
                    node,
                    address,
                    reason=reason,
                    automatic=automatic,
                    from_gtid=from_gtid,
                    epoch=epoch,
                    now=now,
                )
        finally:
            await engine.dispose()

    return run_blocking(write)


_GTID = re.compile(r"gtid_slave_pos\s*=\s*'([^']*)'", re.IGNORECASE)


def _dump_primary(url: URL) -> tuple[str, str]:
    """A consistent snapshot of the primary's database and the GTID position it stands at."""
    name = url.database or "smartswitch"
    command = [
        "mariadb-dump",
        f"--host={url.host or '127.0.0.1'}",
        f"--port={url.port or 3306}",
        f"--user={url.username or 'root'}",
        "--single-transaction",
        "--master-data=2",
        "--gtid",
        "--routines",
        # A fresh snapshot replaces the database whole: tables only this server had (written
        # by a former primary after it was deposed) must not survive a rejoin.
        "--add-drop-database",
        "--databases",
        name,
    ]
    env = {"MYSQL_PWD": url.password or ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise ClusterError(f"snapshot of the primary failed: {result.stderr.strip()}")
    match = _GTID.search(result.stdout)
    if match is None:
        raise ClusterError("the primary's snapshot carries no GTID position (is log-bin on?)")
    return result.stdout, match.group(1)


def add_replica(database_url: str, primary_url: str, cluster_secret: str) -> str:
    """Make the node's MariaDB a replica of the primary; returns the GTID it started from."""
    local = make_url(database_url)
    primary = make_url(primary_url)
    if (local.host, local.port) == (primary.host, primary.port):
        raise ClusterError("the replica's database is the primary itself")
    dump, gtid = _dump_primary(primary)
    conn = _connect(local)
    try:
        _exec(conn, "STOP SLAVE")
        _exec(conn, "RESET SLAVE ALL")
        _exec(conn, "SET GLOBAL read_only = 0")  # loading the snapshot writes
    finally:
        conn.close()
    load = subprocess.run(
        [
            "mariadb",
            f"--host={local.host or '127.0.0.1'}",
            f"--port={local.port or 3306}",
            f"--user={local.username or 'root'}",
            # The snapshot is the primary's history, not this server's own writes.
            "--init-command=SET SESSION sql_log_bin=0",
        ],
        input=dump,
        capture_output=True,
        text=True,
        env={"MYSQL_PWD": local.password or ""},
        timeout=600,
    )
    if load.returncode != 0:
        raise ClusterError(f"loading the snapshot failed: {load.stderr.strip()}")
    conn = _connect(local)
    try:
        # The snapshot's own writes must not be in this server's GTID history as its own.
        _exec(conn, "RESET MASTER")
        _exec(conn, "SET GLOBAL gtid_slave_pos = %s", gtid)
        _exec(
            conn,
            "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
            "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            primary.host or "127.0.0.1",
            primary.port or 3306,
            REPL_USER,
            replication_password(cluster_secret),
        )
        _exec(conn, "START SLAVE")
        _exec(conn, "SET GLOBAL read_only = 1")
    finally:
        conn.close()
    return gtid


@dataclass(frozen=True, slots=True)
class DatabaseRole:
    """What a node's own database is right now."""

    scheme: str  # single, replication, galera
    writable: bool
    role: str  # primary, replica, galera, single, unreachable
    primary: str = ""  # host:port of the primary, for a replica
    io_running: str = ""
    sql_running: str = ""
    lag: int | None = None
    last_error: str = ""
    galera_status: str = ""
    epoch: int = 0  # the cluster state's epoch as this database shows it (0: none recorded)
    primary_node: str = ""  # the primary the cluster state names
    primary_address: str = ""  # its database, host:port
    failover: str = ""  # the node's part in choosing the primary (etcd lease, campaign)

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
