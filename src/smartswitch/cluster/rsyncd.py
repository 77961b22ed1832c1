"""The node's rsync daemon: the receiving end of the cluster's file sync.

Each node runs one ``rsync --daemon --no-detach`` bound to its dedicated IP, started, watched
and restarted (with back-off) by :class:`RsyncDaemon`, and stopped by its PID. What it needs
lives in the node's data dir and is rewritten at every start:

``rsyncd.conf``
    One module, ``smartswitch``, whose path is the node's shared files root. It is **write
    only**: a peer may push files, delete them (``--delete-missing-args``) and compare them
    (a dry run), but can neither download nor list anything. ``auth users = smartswitch``,
    ``hosts allow`` = the cluster members' dedicated IPs when given, ``uid``/``gid`` = the
    user running the node (root on a real node: the daemon must be able to write as the file
    owner), chroot when running as root. rsync re-reads this file at every connection, so
    :meth:`RsyncDaemon.set_hosts_allow` takes effect without a restart.
``rsyncd.secrets`` (mode 600)
    ``smartswitch:<password>`` for the daemon (``strict modes`` refuses a readable file).
``rsync.password`` (mode 600)
    The same password for the client's ``--password-file``.
``rsyncd.log``, ``rsyncd.pid``
    The daemon's log (its stderr too) and its PID; a daemon left running by a node that was
    killed is found by the PID file and stopped before a new one starts.

The password is HMAC-SHA256 of the cluster secret (:func:`rsync_password`), so every node
derives the same one and there is no second secret to distribute. It exists only in the two
files of mode 600: never on a command line, in a log line or in a ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from smartswitch.cluster.daemons import stop_pid, write_file
from smartswitch.cluster.tasks import cancel_and_wait

log = logging.getLogger("smartswitch.cluster.rsyncd")

MODULE = "smartswitch"
USER = "smartswitch"
# The top-level directories of the files root that travel; the module's filter hides the
# rest (a node's files root may be its data dir, beside its database and secrets).
KINDS = ("captures", "recordings")


def rsync_password(cluster_secret: str) -> str:
    """The daemon password every node derives from the cluster secret."""
    return hmac.new(cluster_secret.encode(), b"smartswitch-rsync", hashlib.sha256).hexdigest()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 600 from the first byte, replacing it atomically."""
    write_file(path, text, 0o600, fsync=True)


@dataclass(frozen=True, slots=True)
class DaemonFiles:
    """Where a node's daemon keeps its files (all in the node's data dir)."""

    conf: Path
    secrets: Path
    password: Path
    log: Path
    pid: Path
    lock: Path

    @classmethod
    def under(cls, data_dir: Path) -> DaemonFiles:
        return cls(
            conf=data_dir / "rsyncd.conf",
            secrets=data_dir / "rsyncd.secrets",
            password=data_dir / "rsync.password",
            log=data_dir / "rsyncd.log",
            pid=data_dir / "rsyncd.pid",
            lock=data_dir / "rsyncd.lock",
        )


def render_config(
    files: DaemonFiles,
    files_root: Path,
    hosts_allow: Sequence[str] | None,
    *,
    uid: int,
    gid: int,
) -> str:
    """The daemon's ``rsyncd.conf``. ``hosts_allow`` None admits any address (the password
    still guards the module); an empty list admits none."""
    lines = [
        "# Written by smartswitch (cluster/rsyncd.py) at every start: edits here are lost.",
        f"pid file = {files.pid}",
        f"log file = {files.log}",
        f"lock file = {files.lock}",
        "reverse lookup = no",
        # Without it each run waits ~40 ms on delayed ACKs at its end (measured on loopback).
        "socket options = TCP_NODELAY",
        "",
        f"[{MODULE}]",
        "    comment = smartswitch cluster files (captures, recordings)",
        f"    path = {files_root}",
        f"    use chroot = {'yes' if uid == 0 else 'no'}",
        "    read only = no",
        "    write only = yes",
        "    list = no",
        f"    uid = {uid}",
        f"    gid = {gid}",
        f"    auth users = {USER}:rw",
        f"    secrets file = {files.secrets}",
        "    strict modes = yes",
        "    max connections = 64",
        "    timeout = 120",
        "    transfer logging = no",
        "    dont compress = *",
        "    filter = " + " ".join(f"+ /{kind}/***" for kind in KINDS) + " - *",
    ]
    if hosts_allow is not None:
        if hosts_allow:
            lines.append(f"    hosts allow = {' '.join(sorted(set(hosts_allow)))}")
        lines.append("    hosts deny = *")
    return "\n".join(lines) + "\n"


class RsyncDaemonError(Exception):
    pass


class _Hidden:
    """A secret kept out of every repr and str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


class RsyncDaemon:
    """Supervises the node's rsync daemon: write its files, start it, restart it if it dies
    (back-off from ``retry_delay`` doubling to ``max_retry_delay``), stop it by its PID."""

    def __init__(
        self,
        *,
        data_dir: Path,
        files_root: Path,
        address: str,
        port: int,
        cluster_secret: str,
        hosts_allow: Sequence[str] | None = None,
        rsync: str = "rsync",
        start_timeout: float = 5.0,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
    ) -> None:
        self.files = DaemonFiles.under(data_dir)
        self.files_root = files_root
        self.address = address
        self.port = port
        self.rsync = rsync
        self.start_timeout = start_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.restarts = 0
        self.last_error: str | None = None
        self._password = _Hidden(rsync_password(cluster_secret))
        self._hosts_allow = None if hosts_allow is None else tuple(sorted(set(hosts_allow)))
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self._stopping = False

    def __repr__(self) -> str:
        return f"<RsyncDaemon {self.address}:{self.port} pid={self.pid} root={self.files_root}>"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    # --- files ----------------------------------------------------------------------------------

    def write_files(self) -> None:
        """The config, the secrets file and the client's password file (both mode 600)."""
        self.files.conf.parent.mkdir(parents=True, exist_ok=True)
        self.files_root.mkdir(parents=True, exist_ok=True)
        password = self._password.reveal()
        write_private(self.files.secrets, f"{USER}:{password}\n")
        write_private(self.files.password, f"{password}\n")
        self._write_config()

    def _write_config(self) -> None:
        text = render_config(
            self.files, self.files_root, self._hosts_allow, uid=os.geteuid(), gid=os.getegid()
        )
        tmp = self.files.conf.with_name(f".{self.files.conf.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.files.conf)

    def set_hosts_allow(self, hosts: Sequence[str] | None) -> None:
        """Admit only these addresses from the next connection on (None: any address)."""
        new = None if hosts is None else tuple(sorted(set(hosts)))
        if new == self._hosts_allow:
            return
        self._hosts_allow = new
        if self.files.conf.exists():
            self._write_config()

    # --- running --------------------------------------------------------------------------------

    async def start(self) -> bool:
        """Write the files and start supervising. Returns once the daemon answers on its
        address (True), or after the first attempt failed (False; the supervisor keeps
        trying with back-off and :attr:`last_error` says why)."""
        if self._task is not None:
            raise RsyncDaemonError("the rsync daemon is already started")
        self._stopping = False
        await asyncio.to_thread(self.write_files)
        await asyncio.to_thread(self._stop_stale)
        self._attempted.clear()
        self._task = asyncio.create_task(self._supervise(), name="rsyncd")
        await self._attempted.wait()
        return self.running

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        proc, self._proc = self._proc, None
        if proc is not None:
            await _terminate(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def _supervise(self) -> None:
        delay = self.retry_delay
        while not self._stopping:
            try:
                up = await self._spawn()
            except Exception as exc:  # the rsync program missing, the data dir unwritable...
                self.last_error = f"cannot start rsync: {exc}"
                up = False
            self._attempted.set()
            proc = self._proc
            if not up or proc is None:
                log.error(
                    "rsync daemon on %s:%d not up: %s", self.address, self.port, self.last_error
                )
                if proc is not None:
                    await _terminate(proc, 2.0)
                    self._proc = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            self.last_error = None
            started = time.monotonic()
            status = await proc.wait()
            if self._stopping:
                return
            self._proc = None
            self.restarts += 1
            self.last_error = f"rsync daemon exited with status {status}"
            if time.monotonic() - started > 60:
                delay = self.retry_delay
            log.warning("%s; restarting it in %.1f s", self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _spawn(self) -> bool:
        if self._log is None:
            self._log = open(self.files.log, "ab")  # noqa: SIM115 - closed by stop()
        self._proc = await asyncio.create_subprocess_exec(
            self.rsync,
            "--daemon",
            "--no-detach",
            f"--address={self.address}",
            f"--port={self.port}",
            f"--config={self.files.conf}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        return await self._answers(self._proc)

    async def _answers(self, proc: asyncio.subprocess.Process) -> bool:
        """Poll until the daemon greets a client on its address (it has bound and listens)."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                self.last_error = (
                    f"rsync daemon exited with status {proc.returncode} at start"
                    f" (see {self.files.log})"
                )
                return False
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    reader, writer = await asyncio.open_connection(self.address, self.port)
                try:
                    async with asyncio.timeout(1.0):
                        greeting = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                if greeting.startswith(b"@RSYNCD:") and proc.returncode is None:
                    return True
            await asyncio.sleep(0.02)
        self.last_error = f"rsync daemon did not answer on {self.address}:{self.port}"
        return False

    def _stop_stale(self) -> None:
        """Stop a daemon of ours that outlived its node (killed with -9): it holds the port."""
        try:
            pid = int(self.files.pid.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return
        if b"--daemon" not in cmdline or f"--config={self.files.conf}".encode() not in cmdline:
            return  # the PID was reused by something else
        log.warning("stopping a stale rsync daemon (PID %d) left by a previous run", pid)
        stop_pid(pid)


async def _terminate(proc: asyncio.subprocess.Process, timeout: float) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
