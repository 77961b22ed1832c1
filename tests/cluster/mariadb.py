"""Private MariaDB servers for the cluster tests: single instances and a three-node Galera cluster.

Each server lives in its own directory (``my.cnf``, ``data/``, socket, pid file, error log), on a
loopback address and free ports chosen at run time (other engineers' servers run on this
machine too; 3306 is never used), and is stopped by the PID of the process this module started.

What this module deliberately does *not* do is set up replication: making one instance a
primary and the others its replicas is the product's job (``smartswitch cluster init-primary``
/ ``add-replica``), and the tests of that code must start from plain servers.  The one helper
that does (:func:`setup_gtid_replication_for_tests`) exists only for this module's self-test,
to prove the instances are replication-capable.

Root may log in over TCP from any 127.x address with an empty password, as it may over the
socket: the product's replication commands connect over TCP.

Typical use (see ``conftest.py`` for the fixtures)::

    db = MariaDBInstance(tmp_path, "primary", "127.0.0.11", free_port("127.0.0.11"), server_id=1)
    db.initialize()
    db.start()
    db.create_database("smartswitch")
    engine = create_async_engine(db.url)
    ...
    db.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest

#: The daemons live in sbin directories, which a non-login PATH may lack.
_SBIN_PATH = os.pathsep.join((os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"))
GALERA_PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")

# The longest AF_UNIX path Linux accepts (sun_path is 108 bytes with the terminating NUL).
_MAX_SOCKET_PATH = 107


class MariaDBError(RuntimeError):
    """A private server could not be set up, started, stopped or queried."""


class MariaDBStartError(MariaDBError):
    """The server exited or did not answer in time; the message carries its error log tail."""


def find_program(name: str) -> str | None:
    """The absolute path of a MariaDB program (also looked up in the sbin directories)."""
    return shutil.which(name, path=_SBIN_PATH)


def missing_programs(*, galera: bool = False) -> list[str]:
    """What is missing to run private servers (empty when all is there), with its package.

    The fixtures skip with this list as the reason; ``scripts/install-system-deps.sh``
    installs the packages.
    """
    missing = [
        f"{program} (mariadb-server)"
        for program in ("mariadbd", "mariadb-install-db")
        if find_program(program) is None
    ]
    if galera:
        if not GALERA_PROVIDER.exists():
            missing.append(f"{GALERA_PROVIDER} (galera-4)")
        if find_program("rsync") is None:
            missing.append("rsync (rsync, for Galera's state transfer)")
    return missing


def skip_without_mariadb() -> None:
    """Skip the calling test or fixture where private servers cannot run, naming what is
    missing (the packages :func:`missing_programs` gives)."""
    if missing := missing_programs():
        pytest.skip("MariaDB server not installed: missing " + ", ".join(missing))


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1", *, exclude: Sequence[int] = ()) -> int:
    """A TCP port nobody listens on at ``host``, below the kernel's ephemeral range.

    Below the ephemeral range because a Galera node's outgoing connections take ephemeral
    ports, and one of them could otherwise grab a port chosen here before the node that
    should listen on it has started.  Random, so that concurrent test sessions rarely
    collide; the bind test skips ports in use now.
    """
    low = 20000
    high = min(_ephemeral_range()[0], 32768) - 1
    for _ in range(1000):
        port = random.randint(low, high)
        if port == 3306 or port in exclude:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    raise MariaDBError(f"no free TCP port on {host} in {low}-{high}")


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct free ports on ``host`` (see :func:`free_port`)."""
    ports: list[int] = []
    for _ in range(count):
        ports.append(free_port(host, exclude=ports))
    return ports


# Every server this module started and has not stopped yet: killed at interpreter exit, so
# that an aborted test session (or a script that forgot stop()) leaves no mariadbd behind.
_LIVE: set[MariaDBInstance] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for instance in leftovers:
        with contextlib.suppress(Exception):
            instance.kill()


def _uid_gid(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise MariaDBError(f"no such system user: {user!r}") from None
    return entry.pw_uid, entry.pw_gid


def _check_reachable_by(path: Path, user: str) -> None:
    """Raise unless ``user`` may traverse every directory above ``path``.

    mariadbd drops to ``user`` right away; pytest's own base directory
    (/tmp/pytest-of-root) is mode 0700, so a server under tmp_path could not even open its
    data directory, and would say so only in an error log it cannot write either.
    """
    uid, gid = _uid_gid(user)
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            raise MariaDBError(
                f"{parent} is not searchable by {user!r} (mode {stat.filemode(st.st_mode)}): "
                f"put the servers of user {user!r} under a directory it can reach (e.g. one "
                "from tempfile.mkdtemp(), not pytest's tmp_path)"
            )


class MariaDBInstance:
    """One private ``mariadbd``: its ``my.cnf``, data directory and process.

    ``base_dir/name`` holds everything.  The server listens on ``host:port`` (a loopback
    address; any of 127.0.0.0/8 works on Linux) and on a socket in its directory, with
    binary logging on, ready to be made a GTID primary or replica (``binlog=False`` leaves it
    off, as Galera nodes have it).  ``run_as`` is the system user it runs as: by default
    root when this process is root (ENVIRONMENT.md's ``user=root``), else the current user.

    ``options`` adds to or overrides ``[mariadbd]`` settings (a value of ``None`` writes the
    bare option name, as for ``skip-name-resolve``).

    ``netns`` runs the server inside that network namespace (one a test made with
    ``tests/netlab.py``; ``ip netns exec`` execs mariadbd, so the PID is the server's):
    ``host`` is then the lab host's address, and ``port`` must be given (a free port cannot
    be probed from outside the namespace). ``client_hosts`` are the host patterns root may
    log in from over TCP (the lab's subnet, for servers in namespaces). The test talks to the
    server over its socket, which is a file: reachable from any namespace.
    """

    def __init__(
        self,
        base_dir: Path | str,
        name: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        server_id: int = 1,
        *,
        run_as: str | None = None,
        binlog: bool = True,
        options: Mapping[str, str | None] | None = None,
        start_timeout: float = 10.0,
        netns: str | None = None,
        client_hosts: Sequence[str] = ("127.%",),
    ) -> None:
        if port == 3306:
            raise ValueError("port 3306 belongs to the machine's own MariaDB server")
        if netns is None and not host.startswith("127."):
            raise ValueError(f"private servers listen on loopback only, not {host!r}")
        if netns is not None and port is None:
            raise ValueError("a server in a network namespace needs its port given")
        self.name = name
        self.host = host
        self.netns = netns
        self.client_hosts = tuple(client_hosts)
        self.port = port if port is not None else free_port(host)
        self.server_id = server_id
        self.directory = Path(base_dir).resolve() / name
        if run_as is None and os.geteuid() == 0:
            run_as = "root"
        self.run_as = run_as
        self.binlog = binlog
        self.options: dict[str, str | None] = dict(options or {})
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise MariaDBError(
                f"socket path too long for AF_UNIX ({len(str(self.socket_path))} > "
                f"{_MAX_SOCKET_PATH}): {self.socket_path}; use a shorter base directory"
            )

    # -- paths ---------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.directory / "my.cnf"

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_path(self) -> Path:
        return self.directory / "mariadb.sock"

    @property
    def pid_file(self) -> Path:
        return self.directory / "mariadb.pid"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    @property
    def console_log(self) -> Path:
        """mariadbd's stdout/stderr: what it says before the error log is open."""
        return self.directory / "console.log"

    # -- configuration -------------------------------------------------------------------

    def settings(self) -> dict[str, str | None]:
        """The ``[mariadbd]`` settings, in the order they are written."""
        settings: dict[str, str | None] = {}
        if self.run_as is not None:
            settings["user"] = self.run_as
        settings |= {
            "datadir": str(self.datadir),
            "port": str(self.port),
            "bind-address": self.host,
            "socket": str(self.socket_path),
            "pid-file": str(self.pid_file),
            "log-error": str(self.error_log),
            # Private temporary tables: servers bootstrapping at the same moment (other test
            # runs, the bench) otherwise collide on /tmp/#sql-temptable-* names.
            "tmpdir": str(self.directory / "tmp"),
            "server-id": str(self.server_id),
            # Grants name addresses, never host names: no DNS look-ups, no surprises.
            "skip-name-resolve": None,
            # Small and quick to start: these servers hold test data only.
            "innodb-buffer-pool-size": "64M",
            "innodb-log-file-size": "8M",
            "performance-schema": "OFF",
            # Durable commits, as in production: the tests kill servers and count rows.
            "innodb_flush_log_at_trx_commit": "1",
            # What Debian's packaged server sets (50-server.cnf), which --defaults-file skips:
            # the compiled-in latin1 would differ from every production node.
            "character-set-server": "utf8mb4",
            "collation-server": "utf8mb4_general_ci",
        }
        if self.binlog:
            stem = self.directory / f"{self.name}"
            settings |= {
                "log-bin": f"{stem}-bin",
                "relay-log": f"{stem}-relay",
                "binlog-format": "ROW",
                "gtid-domain-id": "0",
                "gtid-strict-mode": "1",
                # A replica writes what it applies to its own binlog, so it can become the
                # primary (or feed another replica) with the same GTIDs.
                "log-slave-updates": "1",
            }
        settings |= self.options
        return settings

    def write_config(self) -> Path:
        """Write ``my.cnf`` (done by :meth:`initialize`; again after changing settings)."""
        lines = ["# Written by tests/cluster/mariadb.py", "[mariadbd]"]
        for key, value in self.settings().items():
            lines.append(key if value is None else f"{key}={value}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("\n".join(lines) + "\n")
        return self.config_file

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        if self.run_as not in (None, "root"):
            assert self.run_as is not None
            _check_reachable_by(self.directory, self.run_as)
            uid, gid = _uid_gid(self.run_as)
            os.chown(self.directory, uid, gid)
            os.chown(self.directory / "tmp", uid, gid)
        self.write_config()

    @property
    def initialized(self) -> bool:
        return (self.datadir / "mysql").is_dir()

    def initialize(self) -> None:
        """Create the system tables (``mariadb-install-db``, about half a second).

        Does nothing to a data directory that already holds them.
        """
        self._prepare_directory()
        if self.initialized:
            return
        install_db = find_program("mariadb-install-db")
        if install_db is None:
            raise MariaDBError(
                "mariadb-install-db is not installed (Debian package mariadb-server)"
            )
        command = [
            install_db,
            f"--defaults-file={self.config_file}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if self.run_as is not None:
            # Also chowns the new data directory to that user.
            command.append(f"--user={self.run_as}")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise MariaDBError(
                f"mariadb-install-db for {self.name} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}\n{self.log_tail()}"
            )

    # -- process -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The PID of the running server, or None."""
        return self._process.pid if self.is_running and self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and not self._exited(self._process)

    @staticmethod
    def _exited(process: subprocess.Popen[bytes]) -> bool:
        """Whether ``process`` has exited, without reaping it.

        Unreaped, its PID stays ours, and so does its process group id: stop() and kill()
        can then kill what it left behind (a state transfer's rsync) without the risk of
        hitting an unrelated process that got the number meanwhile.
        """
        if process.returncode is not None:
            return True
        try:
            state = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return state is not None

    def launch(self, extra_args: Sequence[str] = ()) -> None:
        """Start ``mariadbd`` and return at once (see :meth:`wait_ready`)."""
        if self.is_running:
            raise MariaDBError(f"{self.name} is already running (pid {self.pid})")
        mariadbd = find_program("mariadbd")
        if mariadbd is None:
            raise MariaDBError("mariadbd is not installed (Debian package mariadb-server)")
        if not self.config_file.exists():
            self._prepare_directory()
        with open(self.console_log, "ab") as console:
            inside = ["ip", "netns", "exec", self.netns] if self.netns else []
            self._process = subprocess.Popen(
                [*inside, mariadbd, f"--defaults-file={self.config_file}", *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C in the test run does not reach it, and
                # helpers it forks (the Galera state transfer scripts, rsync) can be found and
                # stopped with it.
                start_new_session=True,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait until the server answers a query on its socket; returns the seconds waited.

        Raises :class:`MariaDBStartError` with the error log tail when the server exits or
        does not answer within ``timeout`` (default: ``start_timeout``).
        """
        started = time.monotonic()
        deadline = started + (self.start_timeout if timeout is None else timeout)
        last_error: Exception | None = None
        while True:
            if self._process is None or self._exited(self._process):
                raise MariaDBStartError(
                    f"mariadbd {self.name} exited while starting\n{self.log_tail()}"
                )
            try:
                self._ensure_tcp_root()
                break
            except pymysql.MySQLError as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise MariaDBStartError(
                    f"mariadbd {self.name} (pid {self._process.pid}) did not answer within "
                    f"{deadline - started:.0f} s: {last_error}\n{self.log_tail()}"
                )
            time.sleep(0.05)
        return time.monotonic() - started

    def start(self, extra_args: Sequence[str] = (), timeout: float | None = None) -> float:
        """Start the server and wait until it answers (initializing it first if needed).

        Returns the seconds from launch until the first answered query.
        """
        if not self.initialized:
            self.initialize()
        self.launch(extra_args)
        try:
            return self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _ensure_tcp_root(self) -> None:
        """Let root in over TCP from any loopback address (and ``client_hosts``), no password.

        mariadb-install-db grants root@localhost and root@127.0.0.1 only; a client of a server
        on 127.0.0.11 may come from another 127.x address.  Kept out of the binary log: this is
        set-up, like the system tables, and a binlogged grant would give a future replica
        a GTID of its own that then conflicts (gtid-strict-mode) with its primary's.
        """
        # Also the readiness probe: it reads a table, which a Galera node refuses (1047, "WSREP
        # has not yet prepared node for application use") until it has joined, when a bare
        # SELECT 1 already succeeds.
        with self.connect(connect_timeout=1) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM mysql.global_priv WHERE User='root' AND Host IN %s",
                [self.client_hosts],
            )
            row = cur.fetchone()
            if row is not None and row[0] == len(set(self.client_hosts)):
                return
            if self.binlog:
                cur.execute("SET SESSION sql_log_bin=0")
            for pattern in self.client_hosts:
                cur.execute("CREATE USER IF NOT EXISTS 'root'@%s IDENTIFIED BY ''", [pattern])
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@%s WITH GRANT OPTION", [pattern])

    def _signal_and_wait(self, signum: int, timeout: float) -> bool:
        """Send ``signum`` to the server; True once it has exited (reaped) within ``timeout``."""
        process = self._process
        if process is None:
            return True
        if not self._exited(process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)
        deadline = time.monotonic() + timeout
        while not self._exited(process):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        if process.returncode is None:
            # Exited but not reaped: the group id is still ours (see _exited).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self._forget()
        return True

    def _forget(self) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's PID and wait for a clean shutdown (SIGKILL after timeout)."""
        if not self._signal_and_wait(signal.SIGTERM, timeout):
            self._signal_and_wait(signal.SIGKILL, 30)
            raise MariaDBError(
                f"mariadbd {self.name} did not stop within {timeout:.0f} s of SIGTERM; killed"
            )

    def kill(self) -> None:
        """SIGKILL to the server's PID, as a crash; the next start recovers."""
        self._signal_and_wait(signal.SIGKILL, 30)

    def restart(self, extra_args: Sequence[str] = (), timeout: float | None = None) -> float:
        """Stop (if running) and start again; returns the seconds until it answered."""
        self.stop()
        return self.start(extra_args, timeout)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the error log (and console output), for error messages."""
        parts = []
        for path in (self.error_log, self.console_log):
            try:
                text = path.read_text(errors="replace").rstrip()
            except OSError:
                continue
            if text:
                tail = "\n".join(text.splitlines()[-lines:])
                parts.append(f"--- {path} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts) or f"(no log in {self.directory})"

    # -- clients -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``smartswitch`` database, root over TCP."""
        return self.url_for("smartswitch")

    def url_for(self, database: str) -> str:
        return f"mysql+aiomysql://root@{self.host}:{self.port}/{database}"

    def connect(
        self, database: str | None = None, *, tcp: bool = False, connect_timeout: float = 5
    ) -> pymysql.connections.Connection[Any]:
        """A root connection (autocommit) over the socket, or over TCP with ``tcp=True``."""
        where: dict[str, Any] = (
            {"host": self.host, "port": self.port}
            if tcp
            else {"unix_socket": str(self.socket_path)}
        )
        return pymysql.connect(
            user="root",
            password="",
            database=database,
            autocommit=True,
            connect_timeout=connect_timeout,
            **where,
        )

    def query(
        self, sql: str, args: Sequence[Any] | None = None, *, database: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit) and return its rows; a sync helper for tests."""
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return [tuple(row) for row in cur.fetchall()]

    def create_database(self, name: str = "smartswitch", *, binlog: bool = False) -> None:
        """Create an empty database (utf8mb4, binary collation) if it does not exist.

        Not binlogged by default: creating the database is set-up done on every instance,
        and a replica must have no binlogged writes of its own (gtid-strict-mode would
        refuse its primary's GTIDs after them).  ``binlog=True`` replicates it instead.
        """
        with self.connect() as conn, conn.cursor() as cur:
            if not binlog and self.binlog:
                cur.execute("SET SESSION sql_log_bin=0")
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )

    def status(self, like: str) -> dict[str, str]:
        """``SHOW GLOBAL STATUS LIKE ...`` as a dict."""
        return {str(k): str(v) for k, v in self.query("SHOW GLOBAL STATUS LIKE %s", [like])}

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"<MariaDBInstance {self.name} {self.host}:{self.port} {state}>"


def setup_gtid_replication_for_tests(
    primary: MariaDBInstance, replica: MariaDBInstance, *, password: str = "test-repl"
) -> None:
    """FOR THIS MODULE'S SELF-TEST ONLY: make ``replica`` a GTID replica of ``primary``.

    The product does this (``smartswitch cluster add-replica``, with a snapshot and its own
    account); this helper only proves the instances can replicate.  The replica starts from
    the beginning of the primary's binlog, so both must still be fresh.
    """
    with primary.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE USER IF NOT EXISTS 'fixture_repl'@%s IDENTIFIED BY %s", ["127.%", password]
        )
        cur.execute("GRANT REPLICATION SLAVE ON *.* TO 'fixture_repl'@%s", ["127.%"])
    with replica.connect() as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL read_only=1")
        cur.execute(
            "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER='fixture_repl', "
            "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            [primary.host, primary.port, password],
        )
        cur.execute("START SLAVE")


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``condition()`` until truthy; returns the seconds it took, raises TimeoutError.

    Exceptions from ``condition`` count as "not yet" (a server may be restarting).
    """
    started = time.monotonic()
    last: Exception | None = None
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except Exception as exc:
            last = exc
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout} s: {what}" + (f" ({last})" if last else ""))
        time.sleep(interval)


class GaleraCluster:
    """A Galera cluster of private nodes (three by default) on loopback.

    Node ``i`` (0-based) listens on ``hosts[i]`` with its own SQL, group communication
    (``gmcast.listen_addr``), incremental state transfer (``ist.recv_addr``) and snapshot
    transfer (``wsrep_sst_receive_address``) ports.  Node 0 bootstraps the cluster
    (``--wsrep-new-cluster``); the others join it by an rsync snapshot transfer.

    As root the nodes run as ``run_as="mysql"`` with their directories owned by mysql: as root
    the rsync transfer fails with "Permission denied" (ENVIRONMENT.md).  ``base_dir`` is the
    cluster's own directory, handed to that user by :meth:`start`; the directories above it
    must let that user through (pytest's tmp_path does not: /tmp/pytest-of-root is 0700).
    """

    def __init__(
        self,
        base_dir: Path | str,
        *,
        size: int = 3,
        hosts: Sequence[str] | None = None,
        run_as: str | None = None,
        provider_options: Mapping[str, str] | None = None,
        join_timeout: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        hosts = list(hosts) if hosts is not None else ["127.0.0.1"] * size
        if len(hosts) != size:
            raise ValueError(f"{size} nodes need {size} hosts, got {len(hosts)}")
        if run_as is None and os.geteuid() == 0:
            run_as = "mysql"
        self.base_dir = Path(base_dir).resolve()
        self.join_timeout = join_timeout
        #: Seconds: "bootstrap" (node 0 answering), "join" (all nodes synced after that),
        #: "start" (the whole of start()).
        self.timings: dict[str, float] = {}
        # A unique name: clusters of concurrent test sessions never merge, whatever the ports.
        self.cluster_name = f"smartswitch-test-{uuid.uuid4().hex[:8]}"
        ports = [free_ports(host, 4) for host in hosts]
        # Ports must also differ across hosts when the hosts are the same address.
        taken: set[int] = set()
        for i, host in enumerate(hosts):
            while taken & set(ports[i]):
                ports[i] = free_ports(host, 4)
            taken |= set(ports[i])
        self.gcomm_ports = [p[1] for p in ports]
        self.ist_ports = [p[2] for p in ports]
        self.sst_ports = [p[3] for p in ports]
        cluster_address = "gcomm://" + ",".join(
            f"{host}:{p[1]}" for host, p in zip(hosts, ports, strict=True)
        )
        self.nodes: list[MariaDBInstance] = []
        for i, host in enumerate(hosts):
            provider: dict[str, str] = {
                "gmcast.listen_addr": f"tcp://{host}:{ports[i][1]}",
                "ist.recv_addr": f"{host}:{ports[i][2]}",
                # The default 128M ring buffer file per node is a waste for test data.
                "gcache.size": "16M",
            }
            provider |= dict(provider_options or {})
            options: dict[str, str | None] = {
                "wsrep_on": "ON",
                "wsrep_provider": str(GALERA_PROVIDER),
                "wsrep_provider_options": '"'
                + ";".join(f"{k}={v}" for k, v in provider.items())
                + '"',
                "wsrep_cluster_name": self.cluster_name,
                "wsrep_cluster_address": cluster_address,
                "wsrep_node_name": f"node{i}",
                "wsrep_node_address": host,
                "wsrep_sst_receive_address": f"{host}:{ports[i][3]}",
                "wsrep_sst_method": "rsync",
                "binlog_format": "ROW",
                "default_storage_engine": "InnoDB",
                # Interleaved auto-increment locks: required for Galera's parallel appliers.
                "innodb_autoinc_lock_mode": "2",
            }
            self.nodes.append(
                MariaDBInstance(
                    self.base_dir,
                    f"node{i}",
                    host,
                    ports[i][0],
                    server_id=i + 1,
                    run_as=run_as,
                    binlog=False,
                    options=options,
                    start_timeout=join_timeout,
                )
            )

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, i: int) -> MariaDBInstance:
        return self.nodes[i]

    def __iter__(self) -> Iterator[MariaDBInstance]:
        return iter(self.nodes)

    def start(self) -> None:
        """Bootstrap node 0, join the others, return when every node is synced.

        Only node 0 runs mariadb-install-db: the joiners start from an empty data directory
        and receive node 0's by the snapshot transfer.  They join one after the other: a donor
        serves one snapshot at a time, so joining both at once saved only about 1 s of 10
        (measured) for a donor juggling two joiners.
        """
        if missing := missing_programs(galera=True):
            raise MariaDBError("cannot run Galera, missing: " + ", ".join(missing))
        started = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        run_as = self.nodes[0].run_as
        if run_as not in (None, "root"):
            assert run_as is not None
            # The cluster's own directory (a mkdtemp one is 0700 root): the nodes' user must
            # get through it to theirs.
            os.chown(self.base_dir, *_uid_gid(run_as))
        first, *joiners = self.nodes
        first.initialize()
        first.start(["--wsrep-new-cluster"])
        self.wait_synced([0], 1)
        self.timings["bootstrap"] = time.monotonic() - started
        joined = time.monotonic()
        for n, node in enumerate(joiners, start=2):
            node._prepare_directory()
            node.datadir.mkdir(exist_ok=True)
            if node.run_as not in (None, "root"):
                assert node.run_as is not None
                os.chown(node.datadir, *_uid_gid(node.run_as))
            node.start(timeout=self.join_timeout)
            self.wait_synced(range(n), n)
        self.timings["join"] = time.monotonic() - joined
        self.timings["start"] = time.monotonic() - started

    def wait_synced(
        self, indexes: Sequence[int] | range | None = None, size: int | None = None
    ) -> float:
        """Wait until the given nodes (default: all) are in a primary component of ``size``
        nodes (default: all), synced and ready; returns the seconds waited."""
        nodes = list(range(len(self.nodes))) if indexes is None else list(indexes)
        want = len(self.nodes) if size is None else size

        def synced() -> bool:
            for i in nodes:
                status = self.wsrep_status(i)
                if not (
                    status.get("wsrep_cluster_size") == str(want)
                    and status.get("wsrep_ready") == "ON"
                    and status.get("wsrep_cluster_status") == "Primary"
                    and status.get("wsrep_local_state_comment") == "Synced"
                ):
                    return False
            return True

        try:
            return wait_until(synced, self.join_timeout, f"nodes {nodes} synced, size {want}")
        except TimeoutError as exc:
            logs = "\n".join(self.nodes[i].log_tail(15) for i in nodes)
            raise MariaDBStartError(f"{exc}\n{self.describe()}\n{logs}") from None

    # -- per node ------------------------------------------------------------------------

    def wsrep_status(self, i: int) -> dict[str, str]:
        """Node ``i``'s ``wsrep_%`` status variables."""
        return self.nodes[i].status("wsrep_%")

    def cluster_status(self, i: int) -> str:
        """``wsrep_cluster_status``: ``Primary`` while the node is in a quorum."""
        return self.wsrep_status(i).get("wsrep_cluster_status", "")

    def ready(self, i: int) -> bool:
        """``wsrep_ready``: whether the node accepts queries that write."""
        return self.wsrep_status(i).get("wsrep_ready") == "ON"

    def cluster_size(self, i: int) -> int:
        """``wsrep_cluster_size`` as node ``i`` sees it."""
        return int(self.wsrep_status(i).get("wsrep_cluster_size", "0"))

    def describe(self) -> str:
        """One line per node with its state, for failure messages."""
        lines = []
        for i, node in enumerate(self.nodes):
            if not node.is_running:
                lines.append(f"node{i}: not running")
                continue
            try:
                s = self.wsrep_status(i)
                lines.append(
                    f"node{i}: pid {node.pid} size={s.get('wsrep_cluster_size')} "
                    f"status={s.get('wsrep_cluster_status')} ready={s.get('wsrep_ready')} "
                    f"state={s.get('wsrep_local_state_comment')}"
                )
            except pymysql.MySQLError as exc:
                lines.append(f"node{i}: pid {node.pid}, no answer: {exc}")
        return "\n".join(lines)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``, as a crash."""
        self.nodes[i].kill()

    def stop(self, i: int) -> None:
        """Stop node ``i`` cleanly (SIGTERM): it leaves the cluster gracefully."""
        self.nodes[i].stop()

    def start_node(self, i: int) -> float:
        """Start node ``i`` again (after kill or stop) and wait until the cluster has all
        nodes synced; returns the seconds it took.  It rejoins the running nodes (by an
        incremental or a full state transfer), never bootstraps a new cluster."""
        started = time.monotonic()
        self.nodes[i].start(timeout=self.join_timeout)
        self.wait_synced()
        return time.monotonic() - started

    def stop_all(self) -> None:
        """Stop every running node (the joiners first, the bootstrap node last)."""
        errors: list[Exception] = []
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise MariaDBError("; ".join(map(str, errors)))
