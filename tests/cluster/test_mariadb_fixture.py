"""Self-tests of the private MariaDB servers the cluster tests run on (tests/cluster/mariadb.py).

They prove what the product's cluster code relies on: an instance starts, answers root over
TCP from loopback, survives restarts and a SIGKILL with its committed data; two instances can
replicate by GTID and a replica keeps serving reads through its primary's outage; three Galera
nodes form a cluster, replicate synchronously and keep a quorum with one node killed.
Timings go to the terminal summary.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from . import mariadb
from .conftest import MariaDBFactory
from .mariadb import (
    GaleraCluster,
    MariaDBError,
    MariaDBInstance,
    MariaDBStartError,
    _check_reachable_by,
    free_port,
    free_ports,
    setup_gtid_replication_for_tests,
    wait_until,
)

# -- no server needed ----------------------------------------------------------------------


def test_config_has_the_replication_settings(tmp_path: Path) -> None:
    db = MariaDBInstance(tmp_path, "a", "127.0.0.11", 23456, server_id=7)
    cnf = db.write_config().read_text().splitlines()
    assert cnf[1] == "[mariadbd]"
    for line in (
        "port=23456",
        "bind-address=127.0.0.11",
        "server-id=7",
        f"datadir={tmp_path.resolve() / 'a' / 'data'}",
        f"socket={db.socket_path}",
        "skip-name-resolve",
        "binlog-format=ROW",
        "gtid-strict-mode=1",
        "gtid-domain-id=0",
        "log-slave-updates=1",
        "innodb_flush_log_at_trx_commit=1",
        "performance-schema=OFF",
    ):
        assert line in cnf
    assert any(line.startswith("log-bin=") for line in cnf)
    assert any(line.startswith("relay-log=") for line in cnf)
    assert db.url == "mysql+aiomysql://root@127.0.0.11:23456/smartswitch"


def test_refuses_port_3306_and_non_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3306"):
        MariaDBInstance(tmp_path, "a", "127.0.0.1", 3306)
    with pytest.raises(ValueError, match="loopback"):
        MariaDBInstance(tmp_path, "a", "10.0.0.1", 23456)


def test_free_ports_are_distinct_and_not_3306() -> None:
    ports = free_ports("127.0.0.1", 12)
    assert len(set(ports)) == 12
    assert 3306 not in ports
    assert free_port("127.0.0.21") != 3306


def test_missing_galera_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mariadb, "GALERA_PROVIDER", tmp_path / "libgalera_smm.so")
    assert f"{tmp_path / 'libgalera_smm.so'} (galera-4)" in mariadb.missing_programs(galera=True)
    assert not any("galera" in m for m in mariadb.missing_programs())


def test_unreachable_directory_is_named(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "inner").mkdir(parents=True)
    private.chmod(0o700)
    with pytest.raises(MariaDBError, match=r"private is not searchable by 'nobody'"):
        _check_reachable_by(private / "inner", "nobody")


def test_galera_config_gives_each_node_its_own_ports(tmp_path: Path) -> None:
    cluster = GaleraCluster(tmp_path, hosts=["127.0.0.31", "127.0.0.32", "127.0.0.33"])
    ports = [
        port
        for i, node in enumerate(cluster)
        for port in (node.port, cluster.gcomm_ports[i], cluster.ist_ports[i], cluster.sst_ports[i])
    ]
    assert len(set(ports)) == 12
    address = "gcomm://" + ",".join(f"127.0.0.3{i + 1}:{cluster.gcomm_ports[i]}" for i in range(3))
    for i, node in enumerate(cluster):
        settings = node.settings()
        assert settings["wsrep_cluster_address"] == address
        assert settings["wsrep_sst_method"] == "rsync"
        assert settings["innodb_autoinc_lock_mode"] == "2"
        assert settings["wsrep_sst_receive_address"] == f"{node.host}:{cluster.sst_ports[i]}"
        provider = settings["wsrep_provider_options"] or ""
        assert f"gmcast.listen_addr=tcp://{node.host}:{cluster.gcomm_ports[i]}" in provider
        assert f"ist.recv_addr={node.host}:{cluster.ist_ports[i]}" in provider
        assert "log-bin" not in settings


# -- one instance --------------------------------------------------------------------------


@pytest.mark.mariadb
def test_instance_starts_answers_restarts_and_keeps_data(
    mariadb_factory: MariaDBFactory, cluster_timings: dict[str, float]
) -> None:
    began = time.monotonic()
    db = mariadb_factory("single", host="127.0.0.11", start=False)
    cluster_timings["mariadb: initialize (mariadb-install-db)"] = time.monotonic() - began
    cluster_timings["mariadb: start until a query answers"] = db.start()
    assert db.is_running and db.pid is not None
    assert db.query("SELECT @@server_id, @@log_bin, @@gtid_strict_mode, @@binlog_format") == [
        (1, 1, 1, "ROW")
    ]
    # Nothing the fixture did is in the binlog: a future replica has no GTID of its own.
    assert db.query("SELECT @@gtid_binlog_pos") == [("",)]

    # Root over TCP with an empty password, as the product's cluster commands connect.
    db.create_database("smartswitch")
    with db.connect("smartswitch", tcp=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0].startswith("root@127.")
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.execute("INSERT INTO t VALUES (1, 'before restart')")

    # The URL works with the product's driver.
    async def read_via_url() -> list[tuple[int, str]]:
        engine = create_async_engine(db.url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text("SELECT id, v FROM t"))
                return [(row[0], row[1]) for row in result]
        finally:
            await engine.dispose()

    assert asyncio.run(read_via_url()) == [(1, "before restart")]

    cluster_timings["mariadb: restart (SIGTERM, start)"] = db.restart()
    assert db.query("SELECT v FROM smartswitch.t") == [("before restart",)]

    # A committed row survives a crash (innodb_flush_log_at_trx_commit=1).
    db.query("INSERT INTO smartswitch.t VALUES (2, 'before kill')")
    pid = db.pid
    db.kill()
    assert not db.is_running and db.pid is None
    with pytest.raises(pymysql.MySQLError):
        db.query("SELECT 1")
    cluster_timings["mariadb: start after SIGKILL (crash recovery)"] = db.start()
    assert db.pid != pid
    assert db.query("SELECT id FROM smartswitch.t ORDER BY id") == [(1,), (2,)]


@pytest.mark.mariadb
def test_start_failure_reports_the_error_log(mariadb_factory: MariaDBFactory) -> None:
    db = mariadb_factory("taken", host="127.0.0.13", start=False)
    # Someone else got the port between choosing and starting: the error says so.
    with socket.socket() as squatter:
        squatter.bind((db.host, db.port))
        squatter.listen()
        with pytest.raises(
            MariaDBStartError, match=r"(?s)exited while starting.*Address already in use"
        ):
            db.start()
    assert not db.is_running


# -- two instances, GTID replication --------------------------------------------------------


@pytest.mark.mariadb
def test_gtid_replica_follows_and_survives_its_primary_outage(
    mariadb_factory: MariaDBFactory, cluster_timings: dict[str, float]
) -> None:
    primary = mariadb_factory("primary", host="127.0.0.11", server_id=1)
    replica = mariadb_factory("replica", host="127.0.0.12", server_id=2)
    for db in (primary, replica):
        db.create_database("smartswitch")
    primary.query("CREATE TABLE smartswitch.t (id INT PRIMARY KEY, v VARCHAR(20))")

    setup_gtid_replication_for_tests(primary, replica)
    primary.query("INSERT INTO smartswitch.t VALUES (1, 'first')")

    def replica_has(n: int) -> bool:
        return replica.query("SELECT COUNT(*) FROM smartswitch.t") == [(n,)]

    cluster_timings["replication: row reaches the replica"] = wait_until(
        lambda: replica_has(1), 10, "row 1 on the replica"
    )
    assert replica.query("SELECT @@read_only") == [(1,)]
    assert replica.query("SELECT @@gtid_slave_pos") == primary.query("SELECT @@gtid_binlog_pos")

    primary.stop()

    def io_state() -> str:
        with replica.connect() as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW SLAVE STATUS")
            return str(cur.fetchone()["Slave_IO_Running"])

    wait_until(lambda: io_state() == "Connecting", 10, "replica notices the primary is gone")
    assert replica.query("SELECT v FROM smartswitch.t") == [("first",)]

    cluster_timings["replication: primary restart"] = primary.start()
    primary.query("INSERT INTO smartswitch.t VALUES (2, 'after outage')")
    # MASTER_CONNECT_RETRY=1: the replica reconnects within about a second.
    cluster_timings["replication: replica catches up after the outage"] = wait_until(
        lambda: replica_has(2), 10, "row 2 on the replica"
    )
    assert io_state() == "Yes"


# -- Galera --------------------------------------------------------------------------------


@pytest.mark.mariadb
def test_galera_three_nodes_replicate_and_keep_quorum_with_one_killed(
    galera_cluster: GaleraCluster, cluster_timings: dict[str, float]
) -> None:
    cluster = galera_cluster
    for i, node in enumerate(cluster):
        assert cluster.cluster_size(i) == 3
        assert cluster.ready(i)
        assert cluster.cluster_status(i) == "Primary"
        assert node.query("SELECT @@wsrep_on, @@binlog_format") == [(1, "ROW")]
        if node.run_as == "mysql":
            assert node.datadir.stat().st_uid == node.directory.stat().st_uid != 0

    first, second, third = cluster
    first.create_database("smartswitch")
    first.query(
        "CREATE TABLE IF NOT EXISTS smartswitch.t (id INT PRIMARY KEY AUTO_INCREMENT, v TEXT)"
    )
    first.query("INSERT INTO smartswitch.t (v) VALUES ('from node 0')")
    cluster_timings["galera: row from node 0 readable on node 2"] = wait_until(
        lambda: ("from node 0",) in third.query("SELECT v FROM smartswitch.t"),
        10,
        "node 0's row on node 2",
    )
    # Root over TCP, as on a single instance.
    with third.connect(tcp=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM smartswitch.t")

    cluster.kill(1)
    assert not second.is_running
    # The survivors hold 2 of 3 votes: they stay a primary component.  The first write waits
    # until they have declared the dead node gone (evs.suspect_timeout, 5 s by default).
    began = time.monotonic()
    first.query("INSERT INTO smartswitch.t (v) VALUES ('node 1 dead, via node 0')")
    cluster_timings["galera: first write after SIGKILL of a node"] = time.monotonic() - began
    third.query("INSERT INTO smartswitch.t (v) VALUES ('node 1 dead, via node 2')")
    wait_until(lambda: cluster.cluster_size(0) == 2 and cluster.cluster_size(2) == 2, 20, "size 2")
    for i in (0, 2):
        assert cluster.cluster_status(i) == "Primary"
        assert cluster.ready(i)
    wait_until(
        lambda: ("node 1 dead, via node 2",) in first.query("SELECT v FROM smartswitch.t"),
        10,
        "node 2's row on node 0",
    )


@pytest.mark.mariadb
def test_galera_stopped_node_rejoins_with_what_it_missed(
    galera_cluster: GaleraCluster, cluster_timings: dict[str, float]
) -> None:
    # The fixture hands the cluster back whole: the node the test above killed has rejoined
    # (crash recovery, then a full state transfer).
    cluster = galera_cluster
    assert [cluster.cluster_size(i) for i in range(3)] == [3, 3, 3]
    first, _, third = cluster
    first.create_database("smartswitch")
    first.query("CREATE TABLE IF NOT EXISTS smartswitch.r (id INT PRIMARY KEY, v TEXT)")

    # A clean stop leaves the group at once (no 5 s suspicion as after SIGKILL), and the node
    # keeps its position, so it comes back by an incremental transfer.
    cluster.stop(2)
    assert cluster.cluster_size(0) == 2
    first.query("INSERT INTO smartswitch.r VALUES (1, 'while node 2 was down')")
    cluster_timings["galera: stopped node rejoins (IST)"] = cluster.start_node(2)
    assert third.query("SELECT v FROM smartswitch.r") == [("while node 2 was down",)]
    assert [cluster.cluster_status(i) for i in range(3)] == ["Primary"] * 3
