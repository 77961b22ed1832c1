"""File synchronisation between the cluster's nodes, with real rsync.

Captures now, recordings later, are files written by the node that handled the call. Every
node keeps a copy of every node's files, so any node's UI serves any call's capture and a dead
disk loses nothing.

Layout
    ``<files_root>/<kind>/<origin>/<name...>``, kind ``captures`` or ``recordings``, origin
    the node that wrote the file. A writer creates the file under :meth:`FileSync.dir_for`,
    closes it, then calls :meth:`FileSync.add`. Path components match :data:`NAME` (no
    spaces, no leading dot). Names starting with ``.`` are never synced and readers should
    skip them: rsync's temporary files and ``.rsync-partial`` dirs use such names on the
    receiving side, and a writer may write under one and rename into place.

Only the origin pushes
    A node pushes only files under ``<kind>/<itself>/``; a file it received is never sent on.
    Retention runs on every node with the same settings, so a file it deleted on one node
    cannot come back: the origin never sends what it no longer has, and the other copies do
    not travel.

Pushing: a durable queue and one pusher per peer
    :meth:`FileSync.add` queues a row per peer (:class:`~smartswitch.cluster.filequeue.FileQueue`,
    the CDR outbox's idea) and wakes the pushers. Each peer has its own pusher task, so a dead
    peer never delays the live ones. A pusher takes the due rows (up to ``batch_size``: at 50
    files/s a pass carries what arrived during the previous one) and runs one ``rsync`` for
    all of them into the peer's daemon (:mod:`smartswitch.cluster.rsyncd`). A row is deleted
    only once its file is verified there (below). A peer that
    cannot be reached, or refuses us, blocks that pusher with back-off (``retry_delay``
    doubling to ``max_retry_delay``; :meth:`FileSync.kick` ends it early); a single file that
    fails with the peer reachable backs off on its own. Rows survive a restart of this node;
    a peer that was down gets what it missed when it answers again.

Verification, by size and checksum
    The push runs with ``--checksum``: a file the peer already holds is compared by size and
    whole-file checksum (rsync's negotiated one: xxh128 or MD5) and sent unless both match,
    so a damaged copy of the same size and time is replaced rather than skipped; and rsync's
    receiver checks every file it writes against the sender's whole-file checksum before
    renaming it into place (a mismatch is retried once, then fails the run with exit 23).
    So a push that exits 0 and itemizes every file of the batch as sent (``<f``) or
    identical (``.f``) has verified all of them, and their rows go. Otherwise (exit 23/24:
    some files failed), a dry run over the batch, ``--checksum --dry-run -ii``, says which
    are there: a file whose line starts ``.f`` has the same size and checksum on the peer;
    anything else (``<f+++`` missing, ``<fcs`` different, no line) stays queued and backs
    off. ``check_after_push`` runs that dry run after every push as an independent check
    (twice the rsync runs per batch; ``bench/filesync.py --check-after-push`` measures it).

Reconciliation
    Every ``reconcile_interval`` (and at once for a peer that joins, and at start) each peer
    is compared with what this node holds under ``<kind>/<itself>/``: one dry run over the
    list of those files, by size and time; every ``checksum_interval`` by checksum instead.
    What the peer lacks or holds differently is queued. Files younger than ``settle_time`` are
    left to :meth:`FileSync.add` (a writer may still be writing them), files older than
    ``reconcile_max_age`` (when set: keep it under the retention age) are not compared. It
    catches an add lost to a crash or a power cut, a peer that joined late or lost its disk,
    and a copy damaged on a peer.

Deletion
    Retention deletes a file on every node by itself and calls :meth:`FileSync.forget`, which
    only drops the file's queued pushes: nothing is sent, as every node ages the same files
    out. A deliberate deletion at the origin (a recording a customer asked to erase) calls
    :meth:`FileSync.remove`: delete rows are queued and pushed like files, with
    ``--delete-missing-args``, and verified by a dry run that has nothing left to delete.
    Nothing is ever deleted on a peer because a file is missing here, so a node whose disk
    was wiped deletes nothing anywhere.

API (a node starts one :class:`FileSync` with its settings and stops it at shutdown)::

    sync = FileSync(FileSyncSettings(files_root=..., data_dir=..., node_name="n1",
                                     address="10.0.0.1", port=8873, cluster_secret=...),
                    peers)      # async () -> [RsyncPeer(name, host, port)], all nodes
    await sync.start()          # daemon up, queue open, pushers and reconciliation running
    path = sync.dir_for("captures") / "2024-05-01" / "call.pcap"   # write, close, then:
    sync.add(path)              # never blocks
    sync.forget(path)           # retention deleted it here
    sync.remove(path)           # delete here and on every peer
    await sync.status()         # per peer: queued, last success, last error, counters
    await sync.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from smartswitch.cluster.filequeue import FileQueue, Op, QueuedFile
from smartswitch.cluster.rsyncd import MODULE, USER, RsyncDaemon
from smartswitch.cluster.tasks import cancel_and_wait

log = logging.getLogger("smartswitch.cluster.filesync")

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+=@%:-]*\Z")
PARTIAL_DIR = ".rsync-partial"
# rsync exit statuses after which the peer answered: 0, or 23/24 (some files not sent).
# Anything else (5 refused or auth failed, 10 socket, 30/35 timeouts, ...) is the peer.
_REACHED = frozenset({0, 23, 24})


@dataclass(frozen=True, slots=True)
class RsyncPeer:
    """Another node, as the peers callable gives it: its name and its daemon's address."""

    name: str
    host: str  # its dedicated IP
    port: int = 873

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"rsync://{USER}@{host}:{self.port}/{MODULE}/"


Peers = Callable[[], Awaitable[Sequence[RsyncPeer]]]
Delivered = Callable[[str, str, float], None]  # peer, relpath, seconds from add to verified


def check_relpath(relpath: str) -> tuple[str, str]:
    """``<kind>/<origin>/<name...>`` with every component a :data:`NAME`: (kind, origin)."""
    parts = relpath.split("/")
    if len(parts) < 3 or not all(NAME.match(part) for part in parts):
        raise ValueError(f"not a synced file path (<kind>/<origin>/<name>): {relpath!r}")
    return parts[0], parts[1]


# --- the rsync client ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One line of rsync's itemized output: what it did (or would do) to a file."""

    code: str  # ".f         " unchanged, "<f+++++++++" sent (new), "<fcst......", "*deleting"
    size: int


@dataclass(frozen=True, slots=True)
class RsyncRun:
    returncode: int
    items: dict[str, Item]
    error: str  # rsync's last error line, "" when none

    @property
    def reached(self) -> bool:
        return self.returncode in _REACHED


def parse_items(out: str) -> dict[str, Item]:
    """Lines of ``--out-format=%i|%l|%n``; anything else (there should be none) is skipped."""
    items: dict[str, Item] = {}
    for line in out.splitlines():
        code, _, rest = line.partition("|")
        size, sep, name = rest.partition("|")
        if sep and size.isdigit():
            items[name] = Item(code, int(size))
    return items


class RsyncClient:
    """Runs ``rsync`` from this node's files root into a peer's daemon, one file list a run.

    Every run: ``rsync --times --perms --files-from=- --from0 -i[i] --out-format=%i|%l|%n
    --sockopts=TCP_NODELAY --contimeout=C --timeout=T --password-file=F --address=ME``, then
    ``--checksum`` (pushes and verifications), ``--partial-dir=.rsync-partial`` (pushes) or
    ``--dry-run`` (checks), ``--delete-missing-args`` (removals), and
    ``<files_root>/ rsync://smartswitch@HOST:PORT/smartswitch/``. ``--files-from`` implies
    ``--relative``, so the peer makes the parent dirs. ``--address`` makes the connection
    leave from our dedicated IP, which is what the peer's ``hosts allow`` lists.
    """

    def __init__(
        self,
        files_root: Path,
        password_file: Path,
        *,
        address: str | None = None,
        rsync: str = "rsync",
        connect_timeout: int = 5,
        io_timeout: int = 30,
    ) -> None:
        self.files_root = files_root
        self.password_file = password_file
        self.address = address
        self.rsync = rsync
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        # A clean environment: no RSYNC_PASSWORD, RSYNC_CONNECT_PROG or RSYNC_RSH from around.
        self._env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}

    def command(
        self,
        peer: RsyncPeer,
        *,
        dry_run: bool,
        checksum: bool = True,
        delete_missing: bool = False,
        every_file: bool = True,
    ) -> list[str]:
        cmd = [
            self.rsync,
            "--times",
            "--perms",
            "--files-from=-",
            "--from0",
            "-ii" if every_file else "-i",
            "--out-format=%i|%l|%n",
            "--sockopts=TCP_NODELAY",
            f"--contimeout={self.connect_timeout}",
            f"--timeout={self.io_timeout}",
            f"--password-file={self.password_file}",
        ]
        if self.address:
            cmd.append(f"--address={self.address}")
        if checksum:
            cmd.append("--checksum")
        cmd.append("--dry-run" if dry_run else f"--partial-dir={PARTIAL_DIR}")
        if delete_missing:
            cmd.append("--delete-missing-args")
        cmd += [f"{self.files_root}/", peer.url]
        return cmd

    async def run(
        self,
        peer: RsyncPeer,
        relpaths: Sequence[str],
        *,
        dry_run: bool,
        checksum: bool = True,
        delete_missing: bool = False,
        every_file: bool = True,
    ) -> RsyncRun:
        proc = await asyncio.create_subprocess_exec(
            *self.command(
                peer,
                dry_run=dry_run,
                checksum=checksum,
                delete_missing=delete_missing,
                every_file=every_file,
            ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
        )
        try:
            out, err = await proc.communicate(b"".join(r.encode() + b"\0" for r in relpaths))
        except BaseException:  # cancelled (the node stops): the child goes with us
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
            raise
        errors = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        error = next((e for e in errors if e.startswith(("@ERROR", "rsync:"))), "")
        if not error and errors:
            error = errors[-1]
        assert proc.returncode is not None
        return RsyncRun(proc.returncode, parse_items(out.decode(errors="replace")), error)


# --- status ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerStatus:
    name: str
    host: str
    port: int
    queued: int  # files waiting for this peer
    oldest_queued: float | None  # wall time the oldest of them was added
    pushed: int  # files verified on the peer since start
    deleted: int  # removals verified on the peer since start
    bytes: int  # bytes rsync sent to the peer since start
    batches: int  # push runs (pushed / batches: files per rsync run)
    failures: int  # rsync runs that failed (peer unreachable, refused, files not verified)
    last_success: float | None
    last_error: str | None
    last_error_at: float | None
    failing: bool  # the last attempt failed
    last_reconcile: float | None
    reconcile_found: int  # files the last reconciliation queued


@dataclass(frozen=True, slots=True)
class FileSyncStatus:
    node: str
    daemon_running: bool
    daemon_restarts: int
    daemon_error: str | None
    peers: tuple[PeerStatus, ...]

    @property
    def queued(self) -> int:
        return sum(p.queued for p in self.peers)

    @property
    def pushed(self) -> int:
        return sum(p.pushed for p in self.peers)

    @property
    def failures(self) -> int:
        return sum(p.failures for p in self.peers)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.peers)


@dataclass(slots=True)
class _PeerCounters:
    pushed: int = 0
    deleted: int = 0
    bytes: int = 0
    batches: int = 0
    failures: int = 0
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failing: bool = False
    last_reconcile: float | None = None
    reconcile_found: int = 0
    last_checksum_pass: float = 0.0


# --- the facade ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileSyncSettings:
    files_root: Path  # the shared files, the daemon's module
    data_dir: Path  # the queue and the daemon's files
    node_name: str
    address: str  # this node's dedicated IP: the daemon binds it, pushes leave from it
    cluster_secret: str = field(repr=False)
    port: int = 873  # the rsync daemons' port (every node's)
    reconcile_interval: float = 60.0
    checksum_interval: float = 3600.0  # a reconciliation pass compares checksums this often
    reconcile_max_age: float | None = None  # seconds; keep it under the retention age
    settle_time: float = 10.0  # reconciliation leaves younger files to add()
    peers_interval: float = 5.0  # how often the peers callable is asked
    retry_delay: float = 0.5
    max_retry_delay: float = 30.0
    batch_size: int = 200
    # A dry run after every push to check its files again; without it, the dry run follows
    # only a push that did not fully succeed (rsync checks every file it sends itself).
    check_after_push: bool = False
    restrict_hosts: bool = True  # the daemon admits only the peers' addresses
    rsync: str = "rsync"
    connect_timeout: int = 5
    io_timeout: int = 30


class FileSync:
    """A node's file sync: its rsync daemon, its file queue, a pusher per peer and the
    reconciliation pass. See the module docstring."""

    def __init__(
        self,
        settings: FileSyncSettings,
        peers: Peers,
        *,
        clock: Callable[[], float] = time.time,
        on_delivered: Delivered | None = None,
    ) -> None:
        self.settings = settings
        self.me = settings.node_name
        self.root = settings.files_root
        self._peers_source = peers
        self._clock = clock
        self.on_delivered = on_delivered
        self.daemon = RsyncDaemon(
            data_dir=settings.data_dir,
            files_root=settings.files_root,
            address=settings.address,
            port=settings.port,
            cluster_secret=settings.cluster_secret,
            rsync=settings.rsync,
            max_retry_delay=settings.max_retry_delay,
        )
        self.queue = FileQueue(settings.data_dir / "filequeue.sqlite")
        self.client = RsyncClient(
            settings.files_root,
            self.daemon.files.password,
            address=settings.address,
            rsync=settings.rsync,
            connect_timeout=settings.connect_timeout,
            io_timeout=settings.io_timeout,
        )
        self._peers: dict[str, RsyncPeer] = {}
        self._pushers: dict[str, _Pusher] = {}
        self._counters: dict[str, _PeerCounters] = {}
        self._reconciling: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._peers_failing = False
        self._started = False

    def __repr__(self) -> str:
        return (
            f"<FileSync {self.me} {self.settings.address}:{self.settings.port}"
            f" root={self.root} peers={sorted(self._peers)}>"
        )

    # --- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the queue, learn the peers, start the daemon (returns once it answers or its
        first start failed: the supervisor keeps trying), the pushers and reconciliation."""
        await self.queue.open()
        listed = await self._list_peers()
        if self.settings.restrict_hosts:  # from its first connection on
            self.daemon.set_hosts_allow([] if listed is None else self._hosts(listed))
        # The daemon writes the password file the pushers use: it starts first.
        if not await self.daemon.start():
            log.error(
                "file sync: this node's rsync daemon is not up yet: %s", self.daemon.last_error
            )
        if listed is not None:
            await self._follow(listed)
        self._started = True
        self._spawn(self._follow_peers(), "filesync-peers")
        self._spawn(self._reconcile_loop(), "filesync-reconcile")

    async def stop(self) -> None:
        self._started = False
        for task in list(self._tasks):  # membership first: it makes pushers
            await cancel_and_wait(task)
        for pusher in list(self._pushers.values()):
            if pusher.task is not None:
                await cancel_and_wait(pusher.task)
        self._pushers.clear()
        await self.queue.close()
        await self.daemon.stop()

    def _spawn(self, coro: Coroutine[object, object, object], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- paths ----------------------------------------------------------------------------------

    def dir_for(self, kind: str) -> Path:
        """Where this node writes its files of ``kind`` (``captures``, ``recordings``)."""
        if not NAME.match(kind):
            raise ValueError(f"bad kind {kind!r}")
        return self.root / kind / self.me

    def relpath(self, path: str | os.PathLike[str]) -> str:
        """The synced path of a file: an absolute path under the files root, or a path
        relative to it; checked against the layout."""
        p = Path(path)
        rel = (
            p.relative_to(self.root).as_posix() if p.is_absolute() else PurePosixPath(p).as_posix()
        )
        check_relpath(rel)
        return rel

    def _own(self, path: str | os.PathLike[str]) -> str:
        rel = self.relpath(path)
        if check_relpath(rel)[1] != self.me:
            raise ValueError(f"{rel!r} is not this node's file: only its origin sends it")
        return rel

    # --- the node's calls -----------------------------------------------------------------------

    def add(self, path: str | os.PathLike[str]) -> None:
        """A file of ours, closed: send it to every peer. Never blocks."""
        rel = self._own(path)
        # Not running (starting, stopping): the next start's reconciliation finds the file.
        # No peer yet: reconciliation serves each one when it comes.
        if self._started and self._pushers:
            self.queue.add([rel], list(self._pushers), self._clock(), done=self._wake_all)

    def forget(self, path: str | os.PathLike[str]) -> None:
        """Retention deleted this file here (it does on every node): drop its queued pushes;
        nothing is sent. Files of other origins have nothing queued here."""
        rel = self.relpath(path)
        if self._started and check_relpath(rel)[1] == self.me:
            self.queue.forget([rel])

    def remove(self, path: str | os.PathLike[str]) -> None:
        """Delete a file of ours here and on every peer (queued, retried, verified)."""
        rel = self._own(path)
        if not self._started:
            raise RuntimeError("file sync is not running: the peers would keep their copies")
        with contextlib.suppress(FileNotFoundError):
            (self.root / rel).unlink()
        if self._pushers:
            self.queue.add([rel], list(self._pushers), self._clock(), Op.DELETE, self._wake_all)

    def kick(self) -> None:
        """End every pusher's back-off now (a peer is known to be back)."""
        for pusher in self._pushers.values():
            pusher.blocked_until = 0.0
            pusher.delay = self.settings.retry_delay
            pusher.wake.set()

    def _wake_all(self) -> None:
        for pusher in self._pushers.values():
            pusher.wake.set()

    async def status(self) -> FileSyncStatus:
        depth = await self.queue.depth()
        peers = []
        for name, peer in sorted(self._peers.items()):
            c = self._counters[name]
            d = depth.get(name)
            peers.append(
                PeerStatus(
                    name=name,
                    host=peer.host,
                    port=peer.port,
                    queued=d.queued if d else 0,
                    oldest_queued=d.oldest if d else None,
                    pushed=c.pushed,
                    deleted=c.deleted,
                    bytes=c.bytes,
                    batches=c.batches,
                    failures=c.failures,
                    last_success=c.last_success,
                    last_error=c.last_error,
                    last_error_at=c.last_error_at,
                    failing=c.failing,
                    last_reconcile=c.last_reconcile,
                    reconcile_found=c.reconcile_found,
                )
            )
        return FileSyncStatus(
            node=self.me,
            daemon_running=self.daemon.running,
            daemon_restarts=self.daemon.restarts,
            daemon_error=self.daemon.last_error,
            peers=tuple(peers),
        )

    # --- membership -----------------------------------------------------------------------------

    async def refresh_peers(self) -> None:
        """Ask the peers callable; follow joins, leaves and address changes."""
        listed = await self._list_peers()
        if listed is not None:
            await self._follow(listed)

    async def _list_peers(self) -> Sequence[RsyncPeer] | None:
        try:
            async with asyncio.timeout(10.0):
                listed = await self._peers_source()
        except Exception as exc:  # keep the peers we know: a failed listing is not a departure
            if not self._peers_failing:
                log.warning("file sync: cannot list the cluster's nodes: %s", exc)
            self._peers_failing = True
            return None
        self._peers_failing = False
        return listed

    def _hosts(self, listed: Sequence[RsyncPeer]) -> list[str]:
        return [p.host for p in listed if p.name != self.me]

    async def _follow(self, listed: Sequence[RsyncPeer]) -> None:
        current = {p.name: p for p in listed if p.name != self.me}
        for name in [n for n in self._peers if n not in current]:
            log.info("file sync: %s left the cluster; its queue is dropped", name)
            await self._stop_pusher(name)
            del self._peers[name]
            await self.queue.drop_peer(name)
        for name, peer in current.items():
            known = self._peers.get(name)
            if known == peer:
                continue
            if known is not None:
                await self._stop_pusher(name)
            self._peers[name] = peer
            self._counters.setdefault(name, _PeerCounters())
            self._reconciling.setdefault(name, asyncio.Lock())
            pusher = _Pusher(self, peer, self._counters[name])
            self._pushers[name] = pusher
            pusher.task = asyncio.create_task(pusher.run(), name=f"filesync-push-{name}")
            if self._started and known is None:  # a node that joins gets what we hold
                self._spawn(self._reconcile_one(peer, None), f"filesync-reconcile-{name}")
        if self.settings.restrict_hosts:
            self.daemon.set_hosts_allow(self._hosts(listed))

    async def _stop_pusher(self, name: str) -> None:
        pusher = self._pushers.pop(name, None)
        if pusher is not None and pusher.task is not None:
            await cancel_and_wait(pusher.task)

    async def _follow_peers(self) -> None:
        while True:
            await asyncio.sleep(self.settings.peers_interval)
            try:
                await self.refresh_peers()
            except Exception:
                log.exception("file sync: following the cluster's nodes failed")

    # --- reconciliation -------------------------------------------------------------------------

    async def reconcile(self, checksum: bool | None = None) -> dict[str, int]:
        """One pass now over every peer (``checksum`` None: when ``checksum_interval`` says).
        Returns how many files each peer lacked or held differently (now queued)."""
        peers = list(self._peers.values())
        found = await asyncio.gather(*(self._reconcile_one(p, checksum) for p in peers))
        return {peer.name: n for peer, n in zip(peers, found, strict=True)}

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("file sync: reconciliation failed")
            await asyncio.sleep(self.settings.reconcile_interval)

    async def _reconcile_one(self, peer: RsyncPeer, checksum: bool | None) -> int:
        lock = self._reconciling.setdefault(peer.name, asyncio.Lock())
        async with lock:
            return await self._compare(peer, checksum)

    async def _compare(self, peer: RsyncPeer, checksum: bool | None) -> int:
        counters = self._counters.setdefault(peer.name, _PeerCounters())
        now = self._clock()
        if checksum is None:
            checksum = now - counters.last_checksum_pass >= self.settings.checksum_interval
        max_age = self.settings.reconcile_max_age
        paths = await asyncio.to_thread(
            scan_origin,
            self.root,
            self.me,
            now - self.settings.settle_time,
            None if max_age is None else now - max_age,
        )
        lacking: list[str] = []
        if paths:
            check = await self.client.run(
                peer, paths, dry_run=True, checksum=checksum, every_file=False
            )
            if not check.reached:
                counters.failures += 1
                counters.last_error, counters.last_error_at = check.error, now
                log.info("file sync: reconciliation with %s failed: %s", peer.name, check.error)
                return 0
            lacking = [p for p in paths if (i := check.items.get(p)) and i.code.startswith("<f")]
        if lacking:
            await self.queue.enqueue_missing(lacking, peer.name, now)
            pusher = self._pushers.get(peer.name)
            if pusher is not None:
                pusher.wake.set()
            log.info("file sync: %s lacked %d of our files; queued", peer.name, len(lacking))
        counters.last_reconcile = now
        counters.reconcile_found = len(lacking)
        if checksum:
            counters.last_checksum_pass = now
        return len(lacking)


class _Pusher:
    """Delivers one peer's rows: one task, its own back-off."""

    def __init__(self, sync: FileSync, peer: RsyncPeer, counters: _PeerCounters) -> None:
        self.sync = sync
        self.peer = peer
        self.counters = counters
        self.wake = asyncio.Event()
        self.delay = sync.settings.retry_delay
        self.blocked_until = 0.0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        settings = self.sync.settings
        while True:
            # Cleared before the queue is read: a row committed during the read sets it again.
            self.wake.clear()
            now = self.sync._clock()
            if now < self.blocked_until:
                await self._wait(self.blocked_until - now)
                continue
            try:
                rows, later = await self.sync.queue.due(self.peer.name, now, settings.batch_size)
                if rows:
                    await self._deliver(rows)
                    continue
            except Exception as exc:  # the queue file, a bug: keep going, never die
                log.exception("file sync: pushing to %s failed", self.peer.name)
                self._unreachable(f"{type(exc).__name__}: {exc}")
                continue
            await self._wait(5.0 if later is None else min(max(later - now, 0.0), 5.0))

    async def _wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()

    async def _deliver(self, rows: list[QueuedFile]) -> None:
        pushes = [r for r in rows if r.op is Op.PUSH]
        deletes = [r for r in rows if r.op is Op.DELETE]
        if pushes:
            await self._push(pushes)
        if deletes and self.sync._clock() >= self.blocked_until:
            await self._delete(deletes)

    async def _split(self, rows: list[QueuedFile]) -> tuple[list[QueuedFile], list[QueuedFile]]:
        """(rows whose file is here, rows whose file is not)."""
        root = self.sync.root
        here = await asyncio.to_thread(lambda: [(root / r.relpath).is_file() for r in rows])
        return (
            [r for r, h in zip(rows, here, strict=True) if h],
            [r for r, h in zip(rows, here, strict=True) if not h],
        )

    async def _push(self, rows: list[QueuedFile]) -> None:
        sync = self.sync
        rows, gone = await self._split(rows)
        if gone:  # deleted here before it left (retention raced the queue): nothing to send
            await sync.queue.delivered([r.seq for r in gone])
        if not rows:
            return
        paths = [r.relpath for r in rows]
        sent = await sync.client.run(self.peer, paths, dry_run=False)
        if not sent.reached:
            self._unreachable(sent.error)
            return
        self.counters.batches += 1
        error = sent.error
        if (
            sent.returncode == 0
            and not sync.settings.check_after_push
            and all(_in_place(sent.items.get(p)) for p in paths)
        ):
            # Every file sent and passed rsync's whole-file check, or found identical by
            # checksum: verified without a second run.
            verified, failed = rows, []
        else:  # some files failed (exit 23/24): the dry run says which are there
            check = await sync.client.run(self.peer, paths, dry_run=True)
            if not check.reached:
                self._unreachable(check.error)
                return
            error = error or check.error
            verified = [r for r in rows if _same(check.items.get(r.relpath))]
            failed = [r for r in rows if not _same(check.items.get(r.relpath))]
        now = sync._clock()
        await sync.queue.delivered([r.seq for r in verified])
        self.counters.pushed += len(verified)
        self.counters.bytes += sum(i.size for i in sent.items.values() if i.code[:2] == "<f")
        if verified:
            self.counters.last_success = now
        if sync.on_delivered is not None:
            try:
                for r in verified:
                    sync.on_delivered(self.peer.name, r.relpath, now - r.added)
            except Exception:
                log.exception("file sync: on_delivered callback failed")
        await self._settle(failed, now, error)

    async def _delete(self, rows: list[QueuedFile]) -> None:
        sync = self.sync
        present, rows = await self._split(rows)
        if present:  # made again here since: add() decides whether it travels
            await sync.queue.delivered([r.seq for r in present])
        if not rows:
            return
        paths = [r.relpath for r in rows]
        done = await sync.client.run(
            self.peer, paths, dry_run=False, checksum=False, delete_missing=True
        )
        if not done.reached:
            self._unreachable(done.error)
            return
        check = await sync.client.run(
            self.peer, paths, dry_run=True, checksum=False, delete_missing=True
        )
        if check.returncode not in (0, 24):  # 24: a parent dir here is gone too, as expected
            self._unreachable(check.error or f"rsync exit status {check.returncode}")
            return
        now = sync._clock()
        verified = [r for r in rows if r.relpath not in check.items]
        failed = [r for r in rows if r.relpath in check.items]
        await sync.queue.delivered([r.seq for r in verified])
        self.counters.deleted += len(verified)
        if verified:
            self.counters.last_success = now
        await self._settle(failed, now, done.error or check.error)

    async def _settle(self, failed: list[QueuedFile], now: float, error: str) -> None:
        """The peer answered; ``failed`` rows back off one by one (the others are done)."""
        if not failed:
            if self.counters.failing:
                log.info("file sync: delivery to %s works again", self.peer.name)
            self.counters.failing = False
            self.delay = self.sync.settings.retry_delay
            return
        settings = self.sync.settings
        retries = [
            (r.seq, now + min(settings.retry_delay * 2**r.attempts, settings.max_retry_delay))
            for r in failed
        ]
        await self.sync.queue.retry(retries)
        self._failed(f"{len(failed)} file(s) not verified on {self.peer.name}: {error}", now)

    def _unreachable(self, error: str) -> None:
        now = self.sync._clock()
        self.blocked_until = now + self.delay
        self._failed(error or "rsync failed", now)
        self.delay = min(self.delay * 2, self.sync.settings.max_retry_delay)

    def _failed(self, error: str, now: float) -> None:
        c = self.counters
        c.failures += 1
        c.last_error, c.last_error_at = error, now
        if not c.failing:
            log.warning("file sync: delivery to %s failing, will retry: %s", self.peer.name, error)
        c.failing = True


def _in_place(item: Item | None) -> bool:
    """In a push's output: sent (``<f``) or already the same (``.f``, by checksum)."""
    return item is not None and item.code[1:2] == "f" and item.code[:1] in "<."


def _same(item: Item | None) -> bool:
    """In a dry run's output with ``--checksum``: same size and checksum on the peer."""
    return item is not None and item.code[:2] == ".f"


def scan_origin(root: Path, origin: str, newest: float, oldest: float | None) -> list[str]:
    """The relpaths of ``origin``'s files under every kind, modified in [oldest, newest]."""
    found: list[str] = []

    def walk(directory: Path, prefix: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not NAME.match(entry.name):
                continue  # dot-names (rsync's temporaries), names we never sync
            if entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), f"{prefix}{entry.name}/")
            elif entry.is_file(follow_symlinks=False):
                mtime = entry.stat(follow_symlinks=False).st_mtime
                if mtime <= newest and (oldest is None or mtime >= oldest):
                    found.append(prefix + entry.name)

    try:
        kinds = sorted(e.name for e in os.scandir(root) if e.is_dir() and NAME.match(e.name))
    except FileNotFoundError:
        return found
    for kind in kinds:
        walk(root / kind / origin, f"{kind}/{origin}/")
    return found
