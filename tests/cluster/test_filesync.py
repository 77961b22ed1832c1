"""File sync between nodes with real rsync daemons.

Three "nodes" in this process, each a :class:`FileSync` with its own rsync daemon on its own
loopback address (127.0.0.51-53, free ports), files root and data dir. They run on one event
loop in a background thread, started once for the module; the tests drive them through
``cluster.run(coro)`` and poll the nodes' directories for what they expect (no fixed sleeps).
A test that stops a node leaves it to the autouse ``healed`` fixture to start again.

The pure parts (output parsing, the layout's rules, the queue, the scan) are tested first,
without daemons.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from smartswitch.cluster.filequeue import FileQueue, Op
from smartswitch.cluster.filesync import (
    FileSync,
    FileSyncSettings,
    RsyncClient,
    RsyncPeer,
    check_relpath,
    parse_items,
    scan_origin,
)
from smartswitch.cluster.rsyncd import DaemonFiles, render_config, rsync_password

from .mariadb import free_port

T = TypeVar("T")

SECRET = "cluster-secret-not-to-be-seen"
PASSWORD = rsync_password(SECRET)
NAMES = ("n1", "n2", "n3")
ADDRESSES = {"n1": "127.0.0.51", "n2": "127.0.0.52", "n3": "127.0.0.53", "n4": "127.0.0.54"}

needs_rsync = pytest.mark.skipif(
    shutil.which("rsync") is None, reason="rsync not installed (apt-get install rsync)"
)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.005)
    return time.monotonic() - start


# --- without daemons ------------------------------------------------------------------------


def test_itemized_output_is_parsed_by_name() -> None:
    out = (
        "cd+++++++++|4096|captures/n1/\n"
        "<f+++++++++|15000|captures/n1/a.pcap\n"
        ".f         |6|captures/n1/b.pcap\n"
        "*deleting  |0|captures/n1/c.pcap\n"
        "<fcs.......|1,234|captures/n1/grouped\n"
        "stray line\n"
    )
    items = parse_items(out)
    assert items["captures/n1/a.pcap"].code.startswith("<f")
    assert items["captures/n1/a.pcap"].size == 15000
    assert items["captures/n1/b.pcap"].code.startswith(".f")
    assert items["captures/n1/c.pcap"].code.startswith("*deleting")
    assert "captures/n1/grouped" not in items and len(items) == 4


def test_layout_rules() -> None:
    assert check_relpath("captures/n1/2024-05-01/a@b:c.pcap") == ("captures", "n1")
    for bad in ("captures/n1", "captures/n1/.tmp", "captures/../x/y", "a b/n1/c", "/abs/n1/x"):
        with pytest.raises(ValueError):
            check_relpath(bad)


def test_config_lists_the_allowed_hosts_or_none(tmp_path: Path) -> None:
    files = DaemonFiles.under(tmp_path)
    open_to_all = render_config(files, tmp_path / "files", None, uid=0, gid=0)
    assert "hosts allow" not in open_to_all and "hosts deny" not in open_to_all
    assert "write only = yes" in open_to_all and "auth users = smartswitch:rw" in open_to_all
    closed = render_config(files, tmp_path / "files", [], uid=1000, gid=1000)
    assert "hosts allow" not in closed and "hosts deny = *" in closed
    assert "use chroot = no" in closed
    some = render_config(files, tmp_path / "files", ["10.0.0.2", "10.0.0.1"], uid=0, gid=0)
    assert "hosts allow = 10.0.0.1 10.0.0.2" in some


def test_queue_keeps_a_row_added_again_while_it_was_pushed(tmp_path: Path) -> None:
    async def scenario() -> None:
        queue = FileQueue(tmp_path / "q.sqlite")
        await queue.open()
        queue.add(["captures/n1/a", "captures/n1/b"], ["n2", "n3"], now=100.0)
        await queue.flush()
        rows, later = await queue.due("n2", 100.0, 10)
        assert [r.relpath for r in rows] == ["captures/n1/a", "captures/n1/b"] and later is None
        queue.add(["captures/n1/a"], ["n2"], now=101.0)  # written again during the push
        await queue.flush()
        await queue.delivered([r.seq for r in rows])
        rows, _ = await queue.due("n2", 101.0, 10)
        assert [(r.relpath, r.added) for r in rows] == [("captures/n1/a", 101.0)]
        await queue.retry([(rows[0].seq, 150.0)])
        rows, later = await queue.due("n2", 101.0, 10)
        assert rows == [] and later == 150.0
        assert await queue.enqueue_missing(["captures/n1/a", "captures/n1/c"], "n2", 102.0) == 1
        queue.forget(["captures/n1/a"])
        queue.add(["captures/n1/d"], ["n3"], 103.0, Op.DELETE)
        await queue.flush()
        depth = await queue.depth()
        assert depth["n2"].queued == 1 and depth["n3"].queued == 2
        await queue.drop_peer("n3")
        assert "n3" not in await queue.depth()
        await queue.close()
        reopened = FileQueue(tmp_path / "q.sqlite")
        await reopened.open()
        assert [r.relpath for r in (await reopened.due("n2", 200.0, 10))[0]] == ["captures/n1/c"]
        await reopened.close()

    asyncio.run(scenario())


def test_scan_skips_dot_names_young_and_old_files(tmp_path: Path) -> None:
    for rel, mtime in (
        ("captures/n1/old.pcap", 100.0),
        ("captures/n1/2024/ok.pcap", 500.0),
        ("captures/n1/2024/.ok.pcap.Ab12Cd", 500.0),
        ("captures/n1/.rsync-partial/x.pcap", 500.0),
        ("captures/n1/young.pcap", 900.0),
        ("captures/n2/theirs.pcap", 500.0),
        ("recordings/n1/r.wav", 500.0),
    ):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    assert scan_origin(tmp_path, "n1", newest=800.0, oldest=200.0) == [
        "captures/n1/2024/ok.pcap",
        "recordings/n1/r.wav",
    ]
    assert len(scan_origin(tmp_path, "n1", newest=1000.0, oldest=None)) == 4


# --- three nodes with real daemons ----------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Cluster:
    """The nodes, their membership (what every node's peers callable returns), the loop."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ports = {name: free_port(address) for name, address in ADDRESSES.items()}
        self.members = {n: RsyncPeer(n, ADDRESSES[n], self.ports[n]) for n in NAMES}
        self.syncs: dict[str, FileSync] = {}
        self.delays: list[float] = []
        self.records = Records()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def root(self, name: str) -> Path:
        return self.base / name / "files"

    def settings(self, name: str) -> FileSyncSettings:
        return FileSyncSettings(
            files_root=self.root(name),
            data_dir=self.base / name / "data",
            node_name=name,
            address=ADDRESSES[name],
            port=self.ports[name],
            cluster_secret=SECRET,
            reconcile_interval=1.0,
            settle_time=0.5,
            peers_interval=0.2,
            retry_delay=0.1,
            max_retry_delay=0.5,
        )

    async def _peers(self) -> list[RsyncPeer]:
        return list(self.members.values())

    def start(self, name: str) -> FileSync:
        sync = FileSync(self.settings(name), self._peers, on_delivered=self._delivered)
        self.run(sync.start())
        self.syncs[name] = sync
        return sync

    def _delivered(self, peer: str, relpath: str, delay: float) -> None:
        self.delays.append(delay)

    def stop(self, name: str) -> None:
        self.run(self.syncs.pop(name).stop())

    def write(
        self, name: str, rel: str, data: bytes, *, add: bool = True, age: float = 0.0
    ) -> Path:
        """A file of node ``name``'s own, written whole (``age`` seconds ago, as its time
        says: reconciliation leaves files younger than ``settle_time`` to add()) then handed
        to its file sync."""
        sync = self.syncs[name]
        path = sync.dir_for("captures") / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        if age:
            then = time.time() - age
            os.utime(tmp, (then, then))
        tmp.rename(path)
        if add:
            self.loop.call_soon_threadsafe(sync.add, path)
        return path

    def copy(self, name: str, original: Path) -> Path:
        """Where node ``name`` keeps its copy of ``original``."""
        origin = next(n for n in self.syncs if original.is_relative_to(self.root(n)))
        return self.root(name) / original.relative_to(self.root(origin))

    def has(self, name: str, original: Path) -> bool:
        copy = self.copy(name, original)
        return copy.is_file() and copy.read_bytes() == original.read_bytes()

    def queued(self, name: str) -> int:
        return self.run(self.syncs[name].status()).queued

    def close(self) -> None:
        for name in list(self.syncs):
            self.stop(name)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("rsync") is None:
        pytest.skip("rsync not installed (apt-get install rsync)")
    cluster = Cluster(tmp_path_factory.mktemp("filesync"))
    logger = logging.getLogger("smartswitch")
    level = logger.level
    logger.addHandler(cluster.records)
    logger.setLevel(logging.DEBUG)
    try:
        for name in NAMES:
            cluster.start(name)
        yield cluster
    finally:
        cluster.close()
        logger.removeHandler(cluster.records)
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def healed(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that stopped nodes or changed membership: the three nodes, up."""
    yield
    if "cluster" not in request.fixturenames:
        return
    cluster: Cluster = request.getfixturevalue("cluster")
    for name in list(cluster.syncs):
        if name not in NAMES:
            cluster.stop(name)
    cluster.members = {n: RsyncPeer(n, ADDRESSES[n], cluster.ports[n]) for n in NAMES}
    for name in NAMES:
        if name not in cluster.syncs:
            cluster.start(name)


@needs_rsync
def test_secrets_files_have_mode_600(cluster: Cluster) -> None:
    files = cluster.syncs["n1"].daemon.files
    assert files.secrets.stat().st_mode & 0o777 == 0o600
    assert files.password.stat().st_mode & 0o777 == 0o600
    assert files.secrets.read_text() == f"smartswitch:{PASSWORD}\n"
    assert files.password.read_text().strip() == PASSWORD
    assert f"secrets file = {files.secrets}" in files.conf.read_text()


@needs_rsync
def test_file_is_on_nodes_2_and_3_within_5_s(cluster: Cluster) -> None:
    before = cluster.run(cluster.syncs["n1"].status()).pushed
    capture = cluster.write("n1", "basic/call-1.pcap", os.urandom(15_000))
    took = wait_until(
        lambda: cluster.has("n2", capture) and cluster.has("n3", capture), 5.0, "copies"
    )
    print(f"file on nodes 2 and 3 after {took * 1000:.0f} ms")
    wait_until(lambda: cluster.queued("n1") == 0, 5.0, "queue empty")
    status = cluster.run(cluster.syncs["n1"].status())
    assert status.pushed == before + 2 and status.failures == 0
    assert all(p.last_success is not None and not p.failing for p in status.peers)


@needs_rsync
def test_every_node_sends_its_own_files(cluster: Cluster) -> None:
    captures = [cluster.write(n, f"each/{n}.pcap", os.urandom(12_000)) for n in NAMES]
    wait_until(lambda: all(cluster.has(n, c) for n in NAMES for c in captures), 5.0, "all copies")


@needs_rsync
def test_stopped_node_receives_what_it_missed_when_it_starts(cluster: Cluster) -> None:
    cluster.stop("n2")
    captures = [cluster.write("n1", f"missed/c{i}.pcap", os.urandom(10_000)) for i in range(20)]
    wait_until(lambda: all(cluster.has("n3", c) for c in captures), 5.0, "live peer served")
    wait_until(
        lambda: cluster.run(cluster.syncs["n1"].status()).peers[0].failing, 5.0, "n2 failing"
    )
    peer = cluster.run(cluster.syncs["n1"].status()).peers[0]
    assert peer.name == "n2" and peer.queued == 20 and peer.oldest_queued is not None
    assert peer.last_error and "127.0.0.52" in peer.last_error
    assert not any(cluster.copy("n2", c).exists() for c in captures)

    cluster.start("n2")
    took = wait_until(lambda: all(cluster.has("n2", c) for c in captures), 5.0, "n2 caught up")
    print(f"restarted node caught up after {took * 1000:.0f} ms")
    wait_until(lambda: cluster.queued("n1") == 0, 5.0, "queue empty")
    assert not cluster.run(cluster.syncs["n1"].status()).peers[0].failing


@needs_rsync
def test_queue_survives_a_restart_of_the_origin(cluster: Cluster) -> None:
    cluster.stop("n3")
    captures = [cluster.write("n1", f"durable/c{i}.pcap", os.urandom(10_000)) for i in range(5)]
    wait_until(lambda: all(cluster.has("n2", c) for c in captures), 5.0, "n2 served")
    wait_until(lambda: cluster.queued("n1") == 5, 5.0, "rows for n3")
    cluster.stop("n1")
    cluster.start("n3")
    cluster.start("n1")
    wait_until(lambda: all(cluster.has("n3", c) for c in captures), 5.0, "n3 served")


@needs_rsync
def test_file_refused_by_a_peer_waits_alone_while_the_batch_goes(cluster: Cluster) -> None:
    blocked = cluster.write("n1", "partial/blocked.pcap", os.urandom(10_000), add=False)
    (cluster.copy("n2", blocked) / "in-the-way").mkdir(parents=True)  # a dir where it goes
    others = [cluster.write("n1", f"partial/ok{i}.pcap", os.urandom(10_000)) for i in range(3)]
    cluster.loop.call_soon_threadsafe(cluster.syncs["n1"].add, blocked)
    wait_until(
        lambda: (
            all(cluster.has(n, c) for n in ("n2", "n3") for c in others)
            and cluster.has("n3", blocked)
        ),
        5.0,
        "everything but the blocked copy",
    )
    wait_until(lambda: cluster.run(cluster.syncs["n1"].status()).peers[0].failing, 5.0, "error")
    peer = cluster.run(cluster.syncs["n1"].status()).peers[0]
    assert peer.queued == 1 and peer.last_error and "not verified on n2" in peer.last_error

    shutil.rmtree(cluster.copy("n2", blocked))
    wait_until(lambda: cluster.has("n2", blocked), 5.0, "sent once the way is clear")
    wait_until(lambda: cluster.queued("n1") == 0, 5.0, "queue empty")


@needs_rsync
def test_file_deleted_by_retention_stays_deleted(cluster: Cluster) -> None:
    kept = cluster.write("n1", "retention/kept.pcap", os.urandom(10_000))
    old = cluster.write("n1", "retention/old.pcap", os.urandom(10_000))
    wait_until(lambda: all(cluster.has(n, c) for n in NAMES for c in (old, kept)), 5.0, "copies")
    cluster.stop("n3")  # it misses the next file, which retention removes before n3 is back
    late = cluster.write("n1", "retention/late.pcap", os.urandom(10_000))
    wait_until(lambda: cluster.has("n2", late), 5.0, "n2 has the late file")

    for name in ("n1", "n2"):  # retention runs on every node with the same settings
        sync = cluster.syncs[name]
        for original in (old, late):
            cluster.copy(name, original).unlink()
            cluster.loop.call_soon_threadsafe(sync.forget, cluster.copy(name, original))
    cluster.start("n3")
    cluster.copy("n3", old).unlink()
    cluster.loop.call_soon_threadsafe(cluster.syncs["n3"].forget, cluster.copy("n3", old))

    for name in NAMES:
        cluster.run(cluster.syncs[name].reconcile(checksum=True))
    wait_until(lambda: cluster.queued("n1") == 0, 5.0, "nothing left to send")
    for name in NAMES:
        assert not cluster.copy(name, old).exists() and not cluster.copy(name, late).exists()
        assert cluster.has(name, kept)


@needs_rsync
def test_truncated_copy_is_sent_again_by_reconciliation(cluster: Cluster) -> None:
    capture = cluster.write("n1", "repair/truncated.pcap", os.urandom(20_000), age=60)
    wait_until(lambda: cluster.has("n2", capture), 5.0, "copy")
    with cluster.copy("n2", capture).open("r+b") as copy:
        copy.truncate(1_000)
    # By size and time; the periodic pass (every second here) may get there first.
    cluster.run(cluster.syncs["n1"].reconcile(checksum=False))
    wait_until(lambda: cluster.has("n2", capture), 5.0, "repaired copy")


@needs_rsync
def test_same_size_corruption_is_found_by_the_checksum_pass(cluster: Cluster) -> None:
    capture = cluster.write("n1", "repair/corrupted.pcap", os.urandom(20_000), age=60)
    wait_until(lambda: cluster.has("n3", capture), 5.0, "copy")
    wait_until(lambda: cluster.queued("n1") == 0, 5.0, "copy verified")  # else it is re-sent
    copy = cluster.copy("n3", capture)
    st = copy.stat()
    with copy.open("r+b") as f:
        f.seek(5_000)
        f.write(b"\0" * 64)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and time unchanged

    cluster.run(cluster.syncs["n1"].reconcile(checksum=False))
    assert not cluster.has("n3", capture)  # by size and time, nothing to see
    found = cluster.run(cluster.syncs["n1"].reconcile(checksum=True))
    assert found["n3"] >= 1
    wait_until(lambda: cluster.has("n3", capture), 5.0, "repaired copy")


@needs_rsync
def test_file_the_queue_never_heard_of_arrives_by_the_periodic_pass(cluster: Cluster) -> None:
    # As if the node died between closing the file and queueing it.
    capture = cluster.write("n1", "unqueued/lost.pcap", os.urandom(10_000), add=False)
    wait_until(lambda: cluster.has("n2", capture) and cluster.has("n3", capture), 5.0, "reconciled")


@needs_rsync
def test_node_that_joins_gets_the_files_already_there(cluster: Cluster) -> None:
    capture = cluster.write("n1", "join/before.pcap", os.urandom(10_000))
    wait_until(lambda: cluster.queued("n1") == 0, 5.0, "sent to n2 and n3")
    cluster.members["n4"] = RsyncPeer("n4", ADDRESSES["n4"], cluster.ports["n4"])
    cluster.start("n4")
    wait_until(lambda: cluster.has("n4", capture), 5.0, "n4 has the older file")
    after = cluster.write("n1", "join/after.pcap", os.urandom(10_000))
    wait_until(lambda: cluster.has("n4", after), 5.0, "n4 has the new file")

    cluster.stop("n4")
    del cluster.members["n4"]
    wait_until(
        lambda: "n4" not in [p.name for p in cluster.run(cluster.syncs["n1"].status()).peers],
        5.0,
        "n4 gone from n1's peers",
    )


@needs_rsync
def test_remove_deletes_the_file_on_every_node(cluster: Cluster) -> None:
    capture = cluster.write("n1", "remove/erase-me.pcap", os.urandom(10_000))
    wait_until(lambda: all(cluster.has(n, capture) for n in NAMES), 5.0, "copies")
    cluster.loop.call_soon_threadsafe(cluster.syncs["n1"].remove, capture)
    wait_until(lambda: not any(cluster.copy(n, capture).exists() for n in NAMES), 5.0, "removed")
    wait_until(lambda: cluster.queued("n1") == 0, 5.0, "deletions verified")
    assert all(p.deleted >= 1 for p in cluster.run(cluster.syncs["n1"].status()).peers)


@needs_rsync
def test_daemon_refuses_wrong_password_other_hosts_and_downloads(
    cluster: Cluster, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "captures" / "n1").mkdir(parents=True)
    (src / "captures" / "n1" / "intruder.pcap").write_bytes(b"x")
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    n2 = cluster.members["n2"]
    files = ["captures/n1/intruder.pcap"]

    bad_password = RsyncClient(src, wrong, address=ADDRESSES["n1"])
    run = cluster.run(bad_password.run(n2, files, dry_run=False))
    assert run.returncode == 5 and "auth failed" in run.error

    password = cluster.syncs["n1"].daemon.files.password
    other_host = RsyncClient(src, password, address="127.0.0.1")
    run = cluster.run(other_host.run(n2, files, dry_run=False))
    assert run.returncode == 5  # "Unknown module": rsync does not tell a denied host more
    assert "denied on module smartswitch from UNDETERMINED (127.0.0.1)" in (
        cluster.syncs["n2"].daemon.files.log.read_text()
    )
    assert not (cluster.root("n2") / files[0]).exists()

    download = subprocess.run(
        ["rsync", f"--password-file={password}", f"--address={ADDRESSES['n1']}", "-r",
         n2.url, str(tmp_path / "stolen")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert download.returncode != 0 and "write only" in download.stderr

    # The files root may be a node's data dir: only the synced kinds are writable there.
    (src / "node.secret").write_text("overwritten")
    (src / "captures" / "n1" / "fine.pcap").write_bytes(b"y")
    node = RsyncClient(src, password, address=ADDRESSES["n1"])
    run = cluster.run(node.run(n2, ["node.secret", "captures/n1/fine.pcap"], dry_run=False))
    assert run.reached, run.error
    assert not (cluster.root("n2") / "node.secret").exists()
    assert (cluster.root("n2") / "captures" / "n1" / "fine.pcap").read_bytes() == b"y"


@needs_rsync
def test_killed_daemon_is_restarted(cluster: Cluster) -> None:
    daemon = cluster.syncs["n3"].daemon
    pid, restarts = daemon.pid, daemon.restarts
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: daemon.restarts == restarts + 1 and daemon.running, 5.0, "restarted")
    assert daemon.pid != pid
    cluster.loop.call_soon_threadsafe(cluster.syncs["n1"].kick)
    capture = cluster.write("n1", "restart/after-kill.pcap", os.urandom(10_000))
    wait_until(lambda: cluster.has("n3", capture), 5.0, "delivered to the new daemon")


@needs_rsync
def test_secret_and_password_never_shown(cluster: Cluster) -> None:
    """Run last: by now the nodes have logged starts, failures, restarts and refusals."""
    sync = cluster.syncs["n1"]
    shown = [
        repr(sync),
        repr(sync.settings),
        repr(sync.daemon),
        repr(sync.client.command(cluster.members["n2"], dry_run=False)),
        repr(cluster.run(sync.status())),
        *cluster.records.lines,
    ]
    for name in NAMES:
        shown.append(cluster.syncs[name].daemon.files.log.read_text())
        shown.append(cluster.syncs[name].daemon.files.conf.read_text())
    assert any("failing" in line for line in cluster.records.lines)
    for text in shown:
        assert SECRET not in text and PASSWORD not in text
