"""Replacing the primary, with real MariaDB: read-only and drained, refusing a candidate that is
behind, promoting the newest, repointing with GTID, rejoining an old primary with and without
errant transactions, the epoch replicating, and the outbox re-sending what a dead primary
never replicated.

Three private servers (127.0.0.51-.53) for the whole module; each test starts from "db1 the
primary (epoch 1), db2 and db3 its replicas", made by the product's own ``init_primary`` and
``add_replica`` (:func:`fresh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.cluster.promotion import (
    CandidateBehind,
    DatabaseServer,
    errant_transactions,
    gtid_position,
    make_read_only,
    promote,
    rejoin,
    repoint,
)
from smartswitch.cluster.replication import DatabaseRole, add_replica, init_primary
from smartswitch.cluster.role import database_role
from smartswitch.model.cdr import CdrRecord, HangupSide
from smartswitch.model.ids import new_ulid
from smartswitch.store.cluster_state import read_cluster_state
from smartswitch.store.database import create_engine, session_factory
from smartswitch.store.forwarder import Forwarder
from smartswitch.store.ledger import apply_cdrs, existing_cdr_ids
from smartswitch.store.outbox import Outbox

from .mariadb import MariaDBInstance, skip_without_mariadb, wait_until

pytestmark = [pytest.mark.mariadb]

SECRET = "promotion-test-secret"
HOSTS = ("127.0.0.51", "127.0.0.52", "127.0.0.53")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MariaDBInstance]]:
    skip_without_mariadb()
    base = tmp_path_factory.mktemp("promotion")
    dbs = [
        MariaDBInstance(base, f"db{i + 1}", host, server_id=i + 1) for i, host in enumerate(HOSTS)
    ]
    try:
        for db in dbs:
            db.initialize()
            db.start()
        yield dbs
    finally:
        for db in dbs:
            with contextlib.suppress(Exception):
                db.stop()


def server(db: MariaDBInstance) -> DatabaseServer:
    return DatabaseServer(db.name, db.url)


def fresh(dbs: Sequence[MariaDBInstance]) -> list[DatabaseServer]:
    """db1 the primary of epoch 1 with a table ``t``; db2 and db3 replicas from a snapshot."""
    for db in dbs:
        if not db.is_running:
            db.start()
        with db.connect() as conn, conn.cursor() as cur:
            cur.execute("STOP SLAVE")
            cur.execute("RESET SLAVE ALL")
            cur.execute("SET GLOBAL read_only = 0")
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute("DROP DATABASE IF EXISTS smartswitch")
            cur.execute("RESET MASTER")
            cur.execute("SET GLOBAL gtid_slave_pos = ''")
    primary, *replicas = dbs
    primary.create_database()
    init_primary(primary.url, SECRET, node_name=primary.name)
    primary.query(
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64) NOT NULL)",
        database="smartswitch",
    )
    for replica in replicas:
        add_replica(replica.url, primary.url, SECRET)
    return [server(db) for db in dbs]


def write(db: MariaDBInstance, note: str) -> None:
    db.query("INSERT INTO t (note) VALUES (%s)", [note], database="smartswitch")


def notes(db: MariaDBInstance) -> list[str]:
    return [str(r[0]) for r in db.query("SELECT note FROM t ORDER BY note", database="smartswitch")]


def has_note(db: MariaDBInstance, note: str) -> bool:
    return note in notes(db)


def epoch(db: MariaDBInstance) -> int:
    rows = db.query("SELECT epoch FROM cluster_state", database="smartswitch")
    return int(rows[0][0]) if rows else 0


def replicates_from(db: MariaDBInstance, primary: MariaDBInstance) -> bool:
    with db.connect() as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SHOW SLAVE STATUS")
        row = cur.fetchone()
    return (
        row is not None
        and row["Master_Host"] == primary.host
        and int(row["Master_Port"]) == primary.port
        and row["Slave_IO_Running"] == "Yes"
        and row["Slave_SQL_Running"] == "Yes"
    )


def role_of(db: MariaDBInstance) -> DatabaseRole:
    async def read() -> DatabaseRole:
        engine = create_engine(db.url)
        try:
            return await database_role(engine, "replication")
        finally:
            await engine.dispose()

    return asyncio.run(read())


def read_only(db: MariaDBInstance) -> bool:
    return bool(db.query("SELECT @@global.read_only")[0][0])


def test_make_read_only_waits_for_writers_and_kills_what_outlives_the_drain(
    servers: list[MariaDBInstance], cluster_timings: dict[str, float]
) -> None:
    started = time.monotonic()
    db1, *_ = fresh(servers)
    cluster_timings["promotion: fresh primary and two replicas"] = time.monotonic() - started
    primary = servers[0]
    lingering = primary.connect("smartswitch")
    finishing = primary.connect("smartswitch")
    try:
        with lingering.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO t (note) VALUES ('lingering')")
        with finishing.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO t (note) VALUES ('finishing')")

        def commit_soon() -> None:
            time.sleep(0.3)
            finishing.commit()

        committer = threading.Thread(target=commit_soon)
        committer.start()
        result = make_read_only(db1, drain_timeout=1.0)
        committer.join()
        assert not result.was_read_only
        assert result.killed == (lingering.thread_id(),)
        assert 1.0 <= result.waited < 5.0
        assert notes(primary) == ["finishing"]  # let finish; the other rolled back
        assert read_only(primary)
        role = role_of(primary)
        assert (role.role, role.writable, role.epoch, role.primary_node) == (
            "fenced",
            False,
            1,
            "db1",
        )
        assert result.gtid_binlog_pos == primary.query("SELECT @@gtid_binlog_pos")[0][0]
        # Idempotent: already read-only, nothing to drain.
        again = make_read_only(db1, drain_timeout=1.0)
        assert again.was_read_only and again.killed == () and again.waited < 0.5
        assert again.gtid_binlog_pos == result.gtid_binlog_pos
    finally:
        for conn in (lingering, finishing):
            with contextlib.suppress(Exception):
                conn.close()


def test_switchover_moves_the_epoch_repoints_and_rejoins_the_old_primary(
    servers: list[MariaDBInstance], cluster_timings: dict[str, float]
) -> None:
    db1, db2, db3 = fresh(servers)
    p1, p2, p3 = servers
    for n in range(5):
        write(p1, f"before-{n}")
    started = time.monotonic()
    result = promote(db2, [db3], old_primary=db1, cluster_secret=SECRET, reason="maintenance")
    cluster_timings["promotion: switchover (old primary answering)"] = time.monotonic() - started
    assert result.primary == str(db2)
    assert result.old_primary is not None and not result.old_primary.killed
    assert result.promotion.epoch == 2 and result.promotion.previous_node == "db1"
    assert result.promotion.reason == "maintenance" and not result.promotion.automatic
    assert result.rejoined is not None and not result.rejoined.snapshot
    assert result.rejoined.errant == ()
    assert not read_only(p2) and read_only(p1) and read_only(p3)
    # Rows written on the new primary reach the repointed replica and the old primary.
    write(p2, "after")
    for db in (p1, p3):
        wait_until(lambda db=db: has_note(db, "after"), 10, f"{db.name} has the new row")  # type: ignore[misc]
        assert replicates_from(db, p2)
        assert epoch(db) == 2
        assert notes(db) == notes(p2)
        role = role_of(db)
        assert (role.role, role.epoch, role.primary_node) == ("replica", 2, "db2")
    role = role_of(p2)
    assert (role.role, role.writable, role.primary_address) == ("primary", True, db2.address)
    # Done is done: promoting the primary again changes nothing, repointing neither.
    assert not repoint(db3, db2, cluster_secret=SECRET).changed
    assert not rejoin(db1, db2, cluster_secret=SECRET).changed


def test_failover_refuses_a_candidate_behind_and_promotes_the_newest(
    servers: list[MariaDBInstance], cluster_timings: dict[str, float]
) -> None:
    db1, db2, db3 = fresh(servers)
    p1, p2, p3 = servers
    write(p1, "shared")
    wait_until(lambda: has_note(p2, "shared") and has_note(p3, "shared"), 10, "replicated")
    p2.query("STOP SLAVE")  # db2 falls behind...
    for n in range(3):
        write(p1, f"only-db3-{n}")
    wait_until(lambda: has_note(p3, "only-db3-2"), 10, "db3 has all")
    p1.kill()  # ...and the primary dies

    with pytest.raises(CandidateBehind) as refused:
        promote(db2, [db3], old_primary=db1, cluster_secret=SECRET, catch_up_timeout=5)
    reason = str(refused.value)
    assert "db2" in reason and "behind db3" in reason and "3 transaction(s)" in reason, reason
    assert gtid_position(db3).current in reason
    # Refused means nothing changed: both are still read-only replicas.
    assert read_only(p2) and read_only(p3) and epoch(p3) == 1

    newest = gtid_position(db3).current
    started = time.monotonic()
    result = promote(None, [db2, db3], old_primary=db1, cluster_secret=SECRET, automatic=True)
    cluster_timings["promotion: failover (old primary dead)"] = time.monotonic() - started
    assert result.primary == str(db3)
    assert result.old_primary is None and result.rejoined is None
    assert result.promotion.epoch == 2 and result.promotion.automatic
    assert result.promotion.from_gtid == newest  # where db3's own history begins
    # The replica that was behind gets what it lacked from the new primary, by GTID.
    write(p3, "after-failover")
    wait_until(lambda: has_note(p2, "after-failover"), 10, "db2 replicates from db3")
    assert notes(p2) == notes(p3) and epoch(p2) == 2
    assert replicates_from(p2, p3)

    # The old primary comes back (writable, as a restarted server is) with nothing errant.
    p1.start()
    assert errant_transactions(db1, db3) == ()
    started = time.monotonic()
    joined = rejoin(db1, db3, cluster_secret=SECRET)
    cluster_timings["promotion: rejoin without errant transactions"] = time.monotonic() - started
    assert joined.changed and not joined.snapshot
    wait_until(lambda: has_note(p1, "after-failover"), 10, "db1 replicates from db3")
    assert notes(p1) == notes(p3) and epoch(p1) == 2 and read_only(p1)


# --- the outbox across a failover -------------------------------------------------------------

START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def cdr(n: int) -> CdrRecord:
    return CdrRecord(
        id=new_ulid(),
        call_id=f"call-{n}@test",
        node="db3",
        customer_peer_id=1,
        customer_account_id=1,
        caller="5550001",
        callee="15551234567",
        caller_out="5550001",
        callee_out="15551234567",
        setup_time=START,
        answer_time=START + timedelta(seconds=1),
        end_time=START + timedelta(seconds=61),
        duration_ms=60000,
        billed_seconds=60,
        price=Decimal("0.5000"),
        cost=Decimal("0.3000"),
        currency="USD",
        sip_code=200,
        sip_reason="OK",
        hangup_side=HangupSide.CALLER,
        hangup_reason="bye",
        supplier_peer_id=2,
        supplier_account_id=2,
        attempts=(),
    )


class NodeView:
    """What a node on db3 knows: the cluster state as its own database shows it (re-read
    every 50 ms, as the node's role watcher would), the money database that follows it."""

    def __init__(self, own: MariaDBInstance) -> None:
        self.own = create_engine(own.url)
        self.epoch = 0
        self.primary = ""
        self._engines: dict[str, AsyncEngine] = {}

    async def watch(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                async with session_factory(self.own)() as session:
                    state = await read_cluster_state(session)
                if state is not None:
                    self.epoch, self.primary = state.epoch, state.primary_address
            await asyncio.sleep(0.05)

    async def deliver(self, batch: Sequence[CdrRecord]) -> int:
        url = f"mysql+aiomysql://root@{self.primary}/smartswitch"
        engine = self._engines.setdefault(url, create_engine(url))
        async with session_factory(engine)() as session, session.begin():
            return await apply_cdrs(session, batch)

    async def confirm(self, ids: Sequence[str]) -> set[str]:
        async with session_factory(self.own)() as session:
            return await existing_cdr_ids(session, ids)

    async def close(self) -> None:
        for engine in (self.own, *self._engines.values()):
            await engine.dispose()


@contextlib.asynccontextmanager
async def forwarding(path: Path, node: NodeView) -> AsyncIterator[tuple[Outbox, Forwarder]]:
    outbox = Outbox(path)
    await outbox.open()
    watcher = asyncio.create_task(node.watch())
    forwarder = Forwarder(
        outbox,
        node.deliver,
        confirm=node.confirm,
        epoch=lambda: node.epoch,
        retry_delay=0.05,
        max_retry_delay=0.2,
        confirm_interval=0.1,
    )
    try:
        await until(lambda: node.epoch == 1, "the node reads epoch 1")
        forwarder.start()
        yield outbox, forwarder
    finally:
        await forwarder.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await outbox.close()
        await node.close()


async def until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def cdr_count(db: MariaDBInstance, cdr_id: str) -> int:
    return int(
        db.query("SELECT COUNT(*) FROM cdrs WHERE id=%s", [cdr_id], database="smartswitch")[0][0]
    )


def balance(db: MariaDBInstance, account: int) -> Decimal:
    rows = db.query("SELECT balance FROM accounts WHERE id=%s", [account], database="smartswitch")
    return Decimal(rows[0][0])


def test_a_record_the_dead_primary_never_replicated_is_delivered_again_and_counted_once(
    servers: list[MariaDBInstance], tmp_path: Path, cluster_timings: dict[str, float]
) -> None:
    """A node on db3 delivers CDR ``kept`` to the primary db1, which commits it and dies
    before any replica has it (replication stopped). db2 is promoted; db3 follows it. The
    outbox never let go of ``kept`` (not seen in db3), the epoch moved on, so it is delivered
    to db2, counted once; db1 comes back with ``kept`` as an errant transaction and rejoins
    from a snapshot: every server then has it once, with its money once."""
    db1, db2, db3 = fresh(servers)
    p1, p2, p3 = servers
    p1.query(
        "INSERT INTO accounts (id, name, currency, balance, credit_limit, prepaid) VALUES "
        "(1, 'acme', 'USD', 100, 0, 1), (2, 'carrier', 'USD', 0, 0, 0)",
        database="smartswitch",
    )
    wait_until(
        lambda: p3.query("SELECT COUNT(*) FROM accounts", database="smartswitch")[0][0] == 2,
        10,
        "accounts",
    )
    first, kept = cdr(1), cdr(2)

    async def scenario() -> None:
        node = NodeView(p3)
        async with forwarding(tmp_path / "outbox.db", node) as (outbox, forwarder):
            outbox.append(first)
            await until(
                lambda: forwarder.delivered == 1 and not outbox.depth and not outbox.unconfirmed,
                "first delivered and confirmed",
            )
            for db in (p2, p3):
                db.query("STOP SLAVE")  # what db1 commits now reaches no replica
            outbox.append(kept)
            await until(lambda: forwarder.delivered == 2 and not outbox.depth, "kept delivered")
            assert cdr_count(p1, kept.id) == 1 and cdr_count(p3, kept.id) == 0
            await asyncio.sleep(0.3)
            assert outbox.unconfirmed == 1  # delivered is not confirmed
            p1.kill()
            started = time.monotonic()
            result = await asyncio.to_thread(
                promote, None, [db2, db3], db1, cluster_secret=SECRET, automatic=True
            )
            assert result.primary == str(db2) and result.promotion.epoch == 2
            await until(
                lambda: forwarder.requeued and not outbox.depth and not outbox.unconfirmed,
                "re-sent and confirmed",
            )
            cluster_timings["promotion: outbox re-sent and confirmed after failover"] = (
                time.monotonic() - started
            )
            assert forwarder.requeued == 1

    asyncio.run(scenario())
    price, cost = Decimal("0.5000"), Decimal("0.3000")
    for db in (p2, p3):
        assert cdr_count(db, kept.id) == 1 and cdr_count(db, first.id) == 1
        assert balance(db, 1) == Decimal(100) - 2 * price
        assert balance(db, 2) == -2 * cost

    # The old primary returns holding ``kept`` in its own history only: errant.
    p1.start()
    errant = errant_transactions(db1, db2)
    assert errant and all(r.server == 1 for r in errant), errant
    started = time.monotonic()
    joined = rejoin(db1, db2, cluster_secret=SECRET)
    cluster_timings["promotion: rejoin from a snapshot (errant transactions)"] = (
        time.monotonic() - started
    )
    assert joined.snapshot and joined.errant == errant
    write(p2, "after-rejoin")
    wait_until(lambda: has_note(p1, "after-rejoin"), 10, "db1 replicates from db2")
    assert replicates_from(p1, p2) and read_only(p1) and epoch(p1) == 2
    assert cdr_count(p1, kept.id) == 1 and balance(p1, 1) == Decimal(100) - 2 * price
    assert errant_transactions(db1, db2) == ()
