"""Replacing the primary: the MariaDB operations of a switchover or a failover, and the
procedure that strings them together (:func:`promote`).

Every operation is idempotent (running it again when it is already done changes nothing and
says so) and returns what it did; a refusal is a :class:`PromotionError` subclass whose message
names the reason (which server, which GTIDs, how far behind).

The procedure, as MaxScale's mariadbmon and orchestrator do it for MariaDB GTID replication:

1. If the old primary answers: make it read-only and **drained** (no write transaction left:
   those that do not finish within the drain time are killed, which rolls them back). Its
   ``gtid_binlog_pos`` is then the end of its history. MariaDB's ``read_only`` does not stop a
   user with the READ ONLY ADMIN privilege (root has it): smartswitch's own writers must check
   the role themselves, and a record that still slips in is covered by the outbox, which keeps
   every record until it is seen in the node's own replica (:mod:`smartswitch.store.outbox`).
2. Every replica catches up: with the old primary's final position known, each waits for it
   (``MASTER_GTID_WAIT``); without it (the old primary is dead), each stops its IO thread and
   applies what its relay log already holds (:func:`wait_relay_applied`).
3. The candidate must not be behind any other replica in any domain; otherwise the promotion
   is refused, naming who is ahead and by how many transactions (:class:`CandidateBehind`),
   and everything is put back as it was (replication restarted, the old primary writable).
4. The candidate stops replicating, forgets its primary and becomes writable
   (:func:`stop_replicating_and_make_writable`); the replication account is made sure of.
5. The epoch moves on: :func:`~smartswitch.store.cluster_state.record_promotion` on the new
   primary, so it replicates to everyone (``from_gtid`` = the candidate's position before it
   wrote anything: where histories may have parted).
6. Every other replica replicates from the new primary with ``MASTER_USE_GTID=slave_pos``
   (:func:`repoint`).
7. The old primary, if it answers, becomes a replica of the new one (:func:`rejoin`): directly
   when it has no errant transactions, from a fresh snapshot when it has.

Servers are named by :class:`DatabaseServer`: the node name and a URL of its database at the
address the *other* servers reach it on (a replica's ``CHANGE MASTER`` uses that host).
Everything here blocks (pymysql); a node runs it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors
from sqlalchemy.engine import make_url

from smartswitch.cluster.gtid import ErrantRange, GtidSet, behind, errant
from smartswitch.cluster.replication import (
    REPL_USER,
    ClusterError,
    add_replica,
    record_epoch,
    replication_password,
)
from smartswitch.model.cluster import Promotion
from smartswitch.store.cluster_state import promotion_history
from smartswitch.store.database import create_engine, database_url, session_factory
from smartswitch.store.migrate import run_blocking

__all__ = [
    "CandidateBehind",
    "DatabaseServer",
    "GtidPositions",
    "NotAReplica",
    "PromotionError",
    "PromotionResult",
    "ReadOnlyResult",
    "RejoinResult",
    "RelayNotApplied",
    "RelayResult",
    "RepointResult",
    "ServerUnreachable",
    "WritableResult",
    "errant_transactions",
    "gtid_position",
    "make_read_only",
    "positions_of",
    "promote",
    "record_epoch",
    "rejoin",
    "repoint",
    "stop_replicating_and_make_writable",
    "wait_gtid",
    "wait_relay_applied",
]

log = logging.getLogger("smartswitch.cluster.promotion")


# --- servers and errors -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseServer:
    """A node's MariaDB: the node's name and its database URL (as the others reach it)."""

    name: str
    url: str

    @property
    def host(self) -> str:
        return make_url(self.url).host or "127.0.0.1"

    @property
    def port(self) -> int:
        return make_url(self.url).port or 3306

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.name} ({self.address})"


class PromotionError(ClusterError):
    """A promotion step refused or failed; the message names the reason."""


class ServerUnreachable(PromotionError):
    pass


class NotAReplica(PromotionError):
    pass


class RelayNotApplied(PromotionError):
    """A replica did not apply what it had received within the time allowed."""


class CandidateBehind(PromotionError):
    """The chosen candidate lacks transactions another replica has."""


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GtidPositions:
    """A server's GTID variables (``@@gtid_current_pos`` and the others)."""

    current: str
    slave: str
    binlog: str
    binlog_state: str

    @property
    def have(self) -> GtidSet:
        """Everything the server can show it has, per (domain, server)."""
        return GtidSet.of(self.binlog_state, self.slave, self.current)


@dataclass(frozen=True, slots=True)
class ReadOnlyResult:
    server: str
    was_read_only: bool
    waited: float
    """Seconds spent waiting for write transactions to finish."""
    killed: tuple[int, ...]
    """Connection ids killed because their write transaction outlived the drain time."""
    gtid_binlog_pos: str
    """The end of the server's history once drained."""


@dataclass(frozen=True, slots=True)
class RelayResult:
    server: str
    io_stopped: bool
    waited: float
    applied_to: str
    """``@@gtid_current_pos`` once everything received was applied."""


@dataclass(frozen=True, slots=True)
class WritableResult:
    server: str
    was_replica: bool
    was_read_only: bool
    gtid: str


@dataclass(frozen=True, slots=True)
class RepointResult:
    server: str
    primary: str
    changed: bool
    """False when it already replicated from that primary."""
    slave_pos: str


@dataclass(frozen=True, slots=True)
class RejoinResult:
    server: str
    primary: str
    errant: tuple[ErrantRange, ...]
    snapshot: bool
    """True when it was rebuilt from a fresh snapshot (it had errant transactions)."""
    changed: bool
    gtid: str


@dataclass(frozen=True, slots=True)
class PromotionResult:
    primary: str
    promotion: Promotion
    old_primary: ReadOnlyResult | None
    caught_up: tuple[RelayResult, ...]
    repointed: tuple[RepointResult, ...]
    rejoined: RejoinResult | None
    left_out: tuple[str, ...] = field(default=())
    """Replicas that did not answer: repoint them (or rejoin them) when they are back."""
    steps: tuple[str, ...] = field(default=())


# --- connections --------------------------------------------------------------------------


@contextlib.contextmanager
def _connection(
    server: DatabaseServer, timeout: float = 5.0
) -> Iterator[pymysql.connections.Connection[Any]]:
    url = make_url(server.url)
    try:
        conn = pymysql.connect(
            host=server.host,
            port=server.port,
            user=url.username or "root",
            password=url.password or "",
            autocommit=True,
            connect_timeout=timeout,
            cursorclass=pymysql.cursors.Cursor,
        )
    except pymysql.MySQLError as exc:
        raise ServerUnreachable(f"{server}: cannot connect: {exc}") from None
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _rows(conn: pymysql.connections.Connection[Any], sql: str, *args: Any) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        return list(cur.fetchall())


def _value(conn: pymysql.connections.Connection[Any], sql: str, *args: Any) -> Any:
    rows = _rows(conn, sql, *args)
    return rows[0][0] if rows else None


def _slave_status(conn: pymysql.connections.Connection[Any]) -> dict[str, Any] | None:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SHOW SLAVE STATUS")
        row = cur.fetchone()
    return dict(row) if row else None


def _positions(conn: pymysql.connections.Connection[Any]) -> GtidPositions:
    row = _rows(
        conn,
        "SELECT @@global.gtid_current_pos, @@global.gtid_slave_pos, "
        "@@global.gtid_binlog_pos, @@global.gtid_binlog_state",
    )[0]
    return GtidPositions(*(str(v or "") for v in row))


# --- the operations -----------------------------------------------------------------------


def gtid_position(server: DatabaseServer) -> GtidPositions:
    """The server's ``gtid_current_pos``, ``gtid_slave_pos``, ``gtid_binlog_pos`` and
    ``gtid_binlog_state``."""
    with _connection(server) as conn:
        return _positions(conn)


def make_read_only(
    server: DatabaseServer, *, drain_timeout: float = 5.0, poll: float = 0.15
) -> ReadOnlyResult:
    """``SET GLOBAL read_only=1``, then wait until no write transaction is left; those still
    open after ``drain_timeout`` seconds are killed (and so rolled back).

    A write transaction is one that changed rows (InnoDB's ``trx_rows_modified``): one that
    has only read cannot leave a GTID behind. ``SET GLOBAL read_only`` itself waits for
    commits in progress (MariaDB takes the global read lock to set it).

    ``information_schema.INNODB_TRX`` is a cache that InnoDB refreshes only when it was not
    read for 0.1 s: polled faster, it shows the same transactions for ever, so ``poll`` is
    kept above that.
    """
    poll = max(poll, 0.12)
    with _connection(server) as conn:
        was = bool(_value(conn, "SELECT @@global.read_only"))
        _rows(conn, "SET SESSION lock_wait_timeout = %s", max(1, int(drain_timeout)))
        _rows(conn, "SET GLOBAL read_only = 1")
        started = time.monotonic()
        deadline = started + drain_timeout
        killed: list[int] = []
        while True:
            writers = [
                int(r[0])
                for r in _rows(
                    conn,
                    "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX "
                    "WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_rows_modified > 0",
                )
            ]
            if not writers:
                break
            if time.monotonic() >= deadline:
                for thread in writers:
                    if thread in killed:
                        continue
                    with contextlib.suppress(pymysql.MySQLError):  # it may just have ended
                        _rows(conn, f"KILL CONNECTION {thread}")
                    killed.append(thread)
                    log.warning("%s: killed connection %d, a write left open", server, thread)
                if time.monotonic() > deadline + 30:
                    raise PromotionError(
                        f"{server}: write transactions of connections {writers} did not end "
                        "30 s after they were killed"
                    )
            time.sleep(poll)
        waited = time.monotonic() - started
        binlog = str(_value(conn, "SELECT @@global.gtid_binlog_pos") or "")
    return ReadOnlyResult(str(server), was, waited, tuple(killed), binlog)


def _make_writable_again(server: DatabaseServer) -> None:
    with _connection(server) as conn:
        _rows(conn, "SET GLOBAL read_only = 0")


def wait_gtid(server: DatabaseServer, gtid: str, timeout: float) -> RelayResult:
    """Wait until the replica has applied ``gtid`` (``MASTER_GTID_WAIT``)."""
    started = time.monotonic()
    with _connection(server) as conn:
        status = _slave_status(conn)
        if status is not None and str(status.get("Slave_SQL_Running")) != "Yes":
            _rows(conn, "START SLAVE SQL_THREAD")
        result = _value(conn, "SELECT MASTER_GTID_WAIT(%s, %s)", gtid, timeout)
        current = _positions(conn).current
    if result != 0:
        raise RelayNotApplied(
            f"{server} did not reach {gtid} within {timeout:.0f} s (it is at {current or '-'})"
        )
    return RelayResult(str(server), False, time.monotonic() - started, current)


def wait_relay_applied(
    replica: DatabaseServer, timeout: float = 30.0, *, stop_io: bool = True, poll: float = 0.05
) -> RelayResult:
    """The replica applies everything its relay log holds.

    With ``stop_io`` (a failover: the old primary is gone or must be ignored) the IO thread is
    stopped first, so that nothing more arrives; the SQL thread is started if it was stopped.
    Done when the SQL thread has executed all that the IO thread read (``Exec_Master_Log_Pos
    == Read_Master_Log_Pos`` in the same file, or ``Gtid_IO_Pos`` included in the slave
    position).
    """
    started = time.monotonic()
    with _connection(replica) as conn:
        status = _slave_status(conn)
        if status is None:
            raise NotAReplica(f"{replica} is not a replica (no SHOW SLAVE STATUS)")
        io_stopped = False
        if stop_io and str(status.get("Slave_IO_Running")) != "No":
            _rows(conn, "STOP SLAVE IO_THREAD")
            io_stopped = True
        deadline = started + timeout
        while True:
            status = _slave_status(conn) or {}
            if str(status.get("Slave_SQL_Running")) != "Yes":
                error = str(status.get("Last_SQL_Error") or "")
                if error:
                    raise RelayNotApplied(f"{replica}: the SQL thread stopped: {error}")
                _rows(conn, "START SLAVE SQL_THREAD")
            positions = _positions(conn)
            io_pos = str(status.get("Gtid_IO_Pos") or "")
            same_file = status.get("Relay_Master_Log_File") == status.get("Master_Log_File")
            if (
                same_file and status.get("Exec_Master_Log_Pos") == status.get("Read_Master_Log_Pos")
            ) or (io_pos and not behind(positions.slave, io_pos)):
                return RelayResult(
                    str(replica), io_stopped, time.monotonic() - started, positions.current
                )
            if time.monotonic() > deadline:
                raise RelayNotApplied(
                    f"{replica} did not apply its relay log within {timeout:.0f} s: received "
                    f"up to {io_pos or '-'}, applied {positions.slave or '-'}"
                )
            time.sleep(poll)


def _ensure_replication_account(
    conn: pymysql.connections.Connection[Any], cluster_secret: str
) -> None:
    password = replication_password(cluster_secret)
    _rows(conn, f"CREATE USER IF NOT EXISTS '{REPL_USER}'@'%%' IDENTIFIED BY %s", password)
    _rows(conn, f"ALTER USER '{REPL_USER}'@'%%' IDENTIFIED BY %s", password)
    _rows(conn, f"GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'")


def stop_replicating_and_make_writable(
    candidate: DatabaseServer, *, cluster_secret: str | None = None
) -> WritableResult:
    """``STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0``: the candidate is a primary.

    With ``cluster_secret`` the replication account is made sure of first (a replica set up
    from a snapshot never received it: the snapshot holds the smartswitch database only).
    """
    with _connection(candidate) as conn:
        status = _slave_status(conn)
        was_ro = bool(_value(conn, "SELECT @@global.read_only"))
        if status is not None:
            _rows(conn, "STOP SLAVE")
            _rows(conn, "RESET SLAVE ALL")
        if cluster_secret:
            _ensure_replication_account(conn, cluster_secret)
        if was_ro:
            _rows(conn, "SET GLOBAL read_only = 0")
        gtid = _positions(conn).current
    return WritableResult(str(candidate), status is not None, was_ro, gtid)


def _replicates_from(status: dict[str, Any] | None, primary: DatabaseServer) -> bool:
    return (
        status is not None
        and str(status.get("Master_Host")) == primary.host
        and int(status.get("Master_Port") or 0) == primary.port
        and str(status.get("Using_Gtid")).lower() == "slave_pos"
    )


def _change_master(
    conn: pymysql.connections.Connection[Any], primary: DatabaseServer, cluster_secret: str
) -> None:
    _rows(
        conn,
        "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
        "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
        primary.host,
        primary.port,
        REPL_USER,
        replication_password(cluster_secret),
    )


def repoint(
    replica: DatabaseServer, new_primary: DatabaseServer, *, cluster_secret: str
) -> RepointResult:
    """Make ``replica`` replicate from ``new_primary`` at its own GTID position
    (``CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos; START SLAVE``), read-only.

    Refuses (:class:`PromotionError`) when the replica has transactions the new primary lacks
    (it was ahead, or written to): :func:`rejoin` rebuilds it from a snapshot.
    """
    if replica.address == new_primary.address:
        raise PromotionError(f"{replica} is the new primary itself")
    with _connection(replica) as conn:
        status = _slave_status(conn)
        _rows(conn, "SET GLOBAL read_only = 1")
        if (
            _replicates_from(status, new_primary)
            and status is not None
            and str(status.get("Slave_IO_Running")) != "No"
            and str(status.get("Slave_SQL_Running")) == "Yes"
        ):
            return RepointResult(str(replica), new_primary.address, False, _positions(conn).slave)
        extra = errant_transactions(replica, new_primary)
        if extra:
            raise PromotionError(
                f"{replica} has transactions {new_primary} lacks: "
                + ", ".join(map(str, extra))
                + " (rejoin it from a snapshot)"
            )
        if status is not None:
            _rows(conn, "STOP SLAVE")
        _change_master(conn, new_primary, cluster_secret)
        _rows(conn, "START SLAVE")
        slave = _positions(conn).slave
    return RepointResult(str(replica), new_primary.address, True, slave)


def _fork(new_primary: DatabaseServer, server_name: str) -> str | None:
    """Where ``server_name``'s history and the new primary's may have parted: the new
    primary's position when it replaced that server (or, for a server that was a replica
    then, when the newest promotion happened). None when no promotion is recorded there."""
    url = database_url(Path(), new_primary.url)

    async def read() -> str | None:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                rows = await promotion_history(session, limit=1, previous_node=server_name)
                if not rows:
                    rows = await promotion_history(session, limit=1)
        except Exception:  # no cluster_state yet (an older schema): no fork known
            return None
        finally:
            await engine.dispose()
        return rows[0].from_gtid if rows else None

    return run_blocking(read)


def errant_transactions(
    old_primary: DatabaseServer, new_primary: DatabaseServer
) -> tuple[ErrantRange, ...]:
    """The transactions in ``old_primary``'s binary log that ``new_primary`` does not have,
    per (domain, server) (see :func:`smartswitch.cluster.gtid.errant`); empty when none."""
    old = gtid_position(old_primary)
    new = gtid_position(new_primary)
    fork = _fork(new_primary, old_primary.name)
    return errant(GtidSet.of(old.binlog_state, old.binlog), new.have, fork)


def rejoin(
    old_primary: DatabaseServer, new_primary: DatabaseServer, *, cluster_secret: str
) -> RejoinResult:
    """Make a former primary (or any server) a read-only replica of ``new_primary``.

    Without errant transactions it continues from its own history (``gtid_slave_pos`` set to
    its ``gtid_current_pos``); with them it is rebuilt from a fresh snapshot of the new
    primary (``add_replica``'s ``mariadb-dump`` path), which discards them: they are not
    lost to the books, because every node's outbox re-sends what it has not seen in its own
    replica after the epoch moved on.
    """
    if old_primary.address == new_primary.address:
        raise PromotionError(f"{old_primary} is the new primary itself")
    with _connection(old_primary) as conn:
        status = _slave_status(conn)
        if (
            _replicates_from(status, new_primary)
            and status is not None
            and str(status.get("Slave_IO_Running")) == "Yes"
            and str(status.get("Slave_SQL_Running")) == "Yes"
        ):
            _rows(conn, "SET GLOBAL read_only = 1")
            return RejoinResult(
                str(old_primary),
                new_primary.address,
                (),
                False,
                False,
                _positions(conn).current,
            )
        _rows(conn, "SET GLOBAL read_only = 1")
    extra = errant_transactions(old_primary, new_primary)
    if extra:
        log.warning(
            "%s has errant transactions %s: rebuilt from a snapshot of %s",
            old_primary,
            ", ".join(map(str, extra)),
            new_primary,
        )
        gtid = add_replica(old_primary.url, new_primary.url, cluster_secret)
        return RejoinResult(str(old_primary), new_primary.address, extra, True, True, gtid)
    with _connection(old_primary) as conn:
        if status is not None:
            _rows(conn, "STOP SLAVE")
        _rows(conn, "SET GLOBAL gtid_slave_pos = @@global.gtid_current_pos")
        _change_master(conn, new_primary, cluster_secret)
        _rows(conn, "START SLAVE")
        gtid = _positions(conn).current
    return RejoinResult(str(old_primary), new_primary.address, (), False, True, gtid)


# --- the procedure ------------------------------------------------------------------------


def _newest(positions: dict[DatabaseServer, str]) -> DatabaseServer:
    """The server no other is ahead of (the first such, in the order given)."""
    for server, mine in positions.items():
        if not any(behind(mine, theirs) for other, theirs in positions.items() if other != server):
            return server
    # Histories that are not prefixes of one another (one ahead in each of two domains):
    raise CandidateBehind(
        "no replica has every transaction the others have: "
        + "; ".join(f"{s}: {p or '-'}" for s, p in positions.items())
    )


def _behind_reason(candidate: DatabaseServer, positions: dict[DatabaseServer, str]) -> str:
    mine = positions[candidate]
    for other, theirs in positions.items():
        if other == candidate:
            continue
        lag = behind(mine, theirs)
        if lag:
            domains = ", ".join(f"{n} transaction(s) in domain {d}" for d, n in sorted(lag.items()))
            return (
                f"candidate {candidate} is behind {other}: at {mine or '-'}, "
                f"{other.name} at {theirs} ({domains})"
            )
    return ""


def promote(
    candidate: DatabaseServer | None,
    others: Sequence[DatabaseServer],
    old_primary: DatabaseServer | None = None,
    *,
    cluster_secret: str,
    reason: str = "switchover",
    automatic: bool = False,
    epoch: int | None = None,
    drain_timeout: float = 5.0,
    catch_up_timeout: float = 30.0,
) -> PromotionResult:
    """Make ``candidate`` (or, when None, the most advanced of ``others``) the primary.

    ``others`` are the other replicas; ``old_primary`` the current primary when known (it is
    made read-only and drained if it answers: a switchover; if it does not, a failover).
    ``epoch`` is a floor for the new epoch (the etcd leader key's revision). The steps are
    in the module docstring. Raises :class:`CandidateBehind` (nothing changed) when the
    candidate lacks what another replica has, :class:`ServerUnreachable` when the candidate
    does not answer.
    """
    steps: list[str] = []
    replicas = list(others)
    if candidate is not None:
        replicas = [candidate, *[r for r in replicas if r.address != candidate.address]]
    if old_primary is not None:
        replicas = [r for r in replicas if r.address != old_primary.address]
    if not replicas:
        raise PromotionError("no replica to promote")

    old: ReadOnlyResult | None = None
    if old_primary is not None:
        try:
            old = make_read_only(old_primary, drain_timeout=drain_timeout)
            steps.append(
                f"old primary {old_primary} read-only and drained in {old.waited:.2f} s"
                + (f", killed {list(old.killed)}" if old.killed else "")
                + f", at {old.gtid_binlog_pos or '-'}"
            )
        except ServerUnreachable as exc:
            steps.append(f"old primary unreachable ({exc}): failover")

    caught_up: list[RelayResult] = []
    left_out: list[str] = []
    reachable: list[DatabaseServer] = []
    for replica in replicas:
        try:
            if old is not None:
                try:
                    caught_up.append(wait_gtid(replica, old.gtid_binlog_pos, catch_up_timeout))
                except RelayNotApplied:
                    # Record where it is; the comparison below says who is behind.
                    caught_up.append(RelayResult(str(replica), False, catch_up_timeout, ""))
            else:
                caught_up.append(wait_relay_applied(replica, catch_up_timeout))
            reachable.append(replica)
        except ServerUnreachable as exc:
            if candidate is not None and replica.address == candidate.address:
                _undo(old_primary, old, reachable)
                raise ServerUnreachable(f"candidate {candidate} does not answer: {exc}") from None
            left_out.append(str(replica))
            steps.append(f"replica {replica} does not answer: left out")
        except RelayNotApplied:
            _undo(old_primary, old, [*reachable, replica])
            raise
    positions = {r: gtid_position(r).current for r in reachable}
    steps.append("positions: " + "; ".join(f"{r.name} {p or '-'}" for r, p in positions.items()))
    try:
        chosen = candidate if candidate is not None else _newest(positions)
        why = _behind_reason(chosen, positions)
        if not why and old is not None and old.gtid_binlog_pos:
            lag = behind(positions[chosen], old.gtid_binlog_pos)
            if lag:
                why = (
                    f"candidate {chosen} did not catch up with the old primary: at "
                    f"{positions[chosen] or '-'}, the old primary at {old.gtid_binlog_pos}"
                )
        if why:
            raise CandidateBehind(why)
    except CandidateBehind:
        _undo(old_primary, old, reachable)
        raise

    from_gtid = positions[chosen]
    made = stop_replicating_and_make_writable(chosen, cluster_secret=cluster_secret)
    steps.append(f"{chosen} stopped replicating and is writable at {made.gtid or '-'}")
    promotion = record_epoch(
        chosen.url,
        chosen.name,
        chosen.address,
        reason=reason,
        automatic=automatic,
        from_gtid=from_gtid,
        epoch=epoch,
    )
    assert promotion is not None
    steps.append(f"epoch {promotion.epoch} recorded on {chosen}")
    repointed: list[RepointResult] = []
    for replica in reachable:
        if replica == chosen:
            continue
        try:
            repointed.append(repoint(replica, chosen, cluster_secret=cluster_secret))
        except PromotionError as exc:
            # Ahead of the new primary cannot happen (checked); a replica written to can.
            steps.append(f"{replica}: {exc}; rebuilt from a snapshot")
            rebuilt = rejoin(replica, chosen, cluster_secret=cluster_secret)
            repointed.append(
                RepointResult(str(replica), chosen.address, rebuilt.changed, rebuilt.gtid)
            )
        steps.append(f"{replica} replicates from {chosen}")
    rejoined: RejoinResult | None = None
    if old_primary is not None and old is not None:
        rejoined = rejoin(old_primary, chosen, cluster_secret=cluster_secret)
        steps.append(
            f"old primary {old_primary} rejoined as a replica"
            + (" from a snapshot" if rejoined.snapshot else "")
        )
    for step in steps:
        log.info("promotion: %s", step)
    return PromotionResult(
        str(chosen),
        promotion,
        old,
        tuple(caught_up),
        tuple(repointed),
        rejoined,
        tuple(left_out),
        tuple(steps),
    )


def _undo(
    old_primary: DatabaseServer | None,
    old: ReadOnlyResult | None,
    replicas: Sequence[DatabaseServer],
) -> None:
    """A refused promotion leaves things as they were: replication running again, the old
    primary writable again if this promotion made it read-only."""
    for replica in replicas:
        with contextlib.suppress(PromotionError, pymysql.MySQLError), _connection(replica) as c:
            if _slave_status(c) is not None:
                _rows(c, "START SLAVE")
    if old_primary is not None and old is not None and not old.was_read_only:
        with contextlib.suppress(PromotionError, pymysql.MySQLError):
            _make_writable_again(old_primary)


def positions_of(servers: Sequence[DatabaseServer]) -> dict[str, str]:
    """``gtid_current_pos`` of each server that answers (for status pages and campaigns)."""
    out: dict[str, str] = {}
    for server in servers:
        with contextlib.suppress(ServerUnreachable):
            out[server.name] = gtid_position(server).current
    return out
