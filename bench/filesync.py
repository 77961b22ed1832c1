#!/usr/bin/env python3
"""File sync delay: from a capture's close on one node to its presence on the others.

Three nodes in this process, as in ``tests/cluster/test_filesync.py``: each a
:class:`~smartswitch.cluster.filesync.FileSync` with its own real rsync daemon on
127.0.0.61-63 (free ports), its own files root and data dir. Node 1 writes ``--rate``
captures a second for ``--seconds`` (random bytes, ``--min-size`` to ``--max-size``; written
under a dot-name and renamed, then handed to ``add()``: "close" is that moment). Two delays
per file and peer:

- **verified**: until node 1's pusher has verified the copy by size and checksum (its
  ``on_delivered`` callback), i.e. until the row leaves the queue;
- **visible**: until the file shows under its final name on the peer (rsync renames a
  finished file into place), seen by a thread listing the peers' directories every
  ``--poll-ms``.

``--check-after-push`` adds the independent dry-run check after every push (see
:mod:`smartswitch.cluster.filesync`, "Verification"). ``--outage S`` stops node 3 for S seconds from a third of the run: the delays to node 2 show
whether a dead peer slows a live one, and node 3's catch-up after its restart is timed. At the
end every copy is compared with its original (SHA-256). The CPU of this process and of every
rsync it started (clients and daemons, counted once they exited) is reported per file.

Traffic stays on loopback; every rsync daemon is stopped by its PID at the end, also on
Ctrl-C or SIGTERM. Results: a table on stdout, JSON in bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import exit_on_sigterm, git_commit  # noqa: E402
from cluster.mariadb import free_port  # noqa: E402
from smartswitch.cluster.filesync import FileSync, FileSyncSettings, RsyncPeer  # noqa: E402

ADDRESSES = {"n1": "127.0.0.61", "n2": "127.0.0.62", "n3": "127.0.0.63"}
SECRET = "bench-cluster-secret"


def rsync_version() -> str:
    out = subprocess.run(["rsync", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0].strip() if out.stdout else "rsync ?"


def summary(values: Sequence[float]) -> dict[str, float]:
    """Milliseconds: median, p95, max (and how many)."""
    if not values:
        return {"n": 0}
    ms = sorted(v * 1000 for v in values)
    p95 = statistics.quantiles(ms, n=100)[94] if len(ms) >= 2 else ms[0]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(ms[-1], 1),
    }


class Poller(threading.Thread):
    """Notes when each file first shows, under its final name, in each peer's directory."""

    def __init__(self, dirs: dict[str, Path], interval: float) -> None:
        super().__init__(daemon=True)
        self.dirs = dirs
        self.interval = interval
        self.seen: dict[tuple[str, str], float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for peer, directory in self.dirs.items():
                try:
                    names = [e.name for e in os.scandir(directory) if not e.name.startswith(".")]
                except FileNotFoundError:
                    continue
                now = time.time()
                for name in names:
                    self.seen.setdefault((peer, name), now)
            self.halt.wait(self.interval)


class Bench:
    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args = args
        self.base = base
        self.ports = {n: free_port(a) for n, a in ADDRESSES.items()}
        self.members = [RsyncPeer(n, ADDRESSES[n], self.ports[n]) for n in ADDRESSES]
        self.syncs: dict[str, FileSync] = {}
        self.closed: dict[str, float] = {}  # file name -> wall time of its add()
        self.verified: dict[tuple[str, str], float] = {}  # (peer, name) -> delay
        self.outage: tuple[float, float] | None = None  # wall times node 3 went down, up
        self.background: set[asyncio.Task[None]] = set()  # node 3's stop and restart

    async def peers(self) -> list[RsyncPeer]:
        return self.members

    def delivered(self, peer: str, relpath: str, delay: float) -> None:
        self.verified.setdefault((peer, relpath.rsplit("/", 1)[1]), delay)

    async def start(self, name: str) -> None:
        settings = FileSyncSettings(
            files_root=self.base / name / "files",
            data_dir=self.base / name / "data",
            node_name=name,
            address=ADDRESSES[name],
            port=self.ports[name],
            cluster_secret=SECRET,
            retry_delay=0.1,
            max_retry_delay=1.0,
            check_after_push=self.args.check_after_push,
        )
        sync = FileSync(settings, self.peers, on_delivered=self.delivered)
        await sync.start()
        self.syncs[name] = sync

    async def stop_all(self) -> None:
        for task in self.background:
            await task
        for sync in self.syncs.values():
            await sync.stop()
        self.syncs.clear()

    async def write_files(self) -> Path:
        args = self.args
        origin = self.syncs["n1"]
        directory = origin.dir_for("captures") / "bench"
        directory.mkdir(parents=True, exist_ok=True)
        rng = random.Random(1)
        total = int(args.rate * args.seconds)
        loop = asyncio.get_running_loop()
        start = loop.time()
        outage_at = args.seconds / 3
        for i in range(total):
            at = start + i / args.rate
            if args.outage and self.outage is None and i / args.rate >= outage_at:
                self.outage = (time.time(), 0.0)
                self.background.add(asyncio.create_task(self.syncs.pop("n3").stop()))
                loop.call_later(args.outage, self.restart_later)
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            name = f"call-{i:06d}.pcap"
            tmp = directory / f".{name}.tmp"
            tmp.write_bytes(rng.randbytes(rng.randint(args.min_size, args.max_size)))
            tmp.rename(directory / name)
            self.closed[name] = time.time()
            origin.add(directory / name)
        return directory

    def restart_later(self) -> None:
        self.background.add(asyncio.create_task(self.restart_n3()))

    async def restart_n3(self) -> None:
        await self.start("n3")
        assert self.outage is not None
        self.outage = (self.outage[0], time.time())
        self.syncs["n1"].kick()  # as the cluster bus would on n3's first heartbeat


def check_copies(origin_dir: Path, copies: dict[str, Path]) -> dict[str, int]:
    """Per peer: how many copies differ from (or lack) their original."""
    bad = dict.fromkeys(copies, 0)
    for original in origin_dir.iterdir():
        if original.name.startswith("."):
            continue
        digest = hashlib.sha256(original.read_bytes()).digest()
        for peer, directory in copies.items():
            copy = directory / original.name
            if not copy.is_file() or hashlib.sha256(copy.read_bytes()).digest() != digest:
                bad[peer] += 1
    return bad


async def run(args: argparse.Namespace, base: Path, results: dict[str, Any]) -> int:
    bench = Bench(args, base)
    poller = Poller(
        {p: base / p / "files" / "captures" / "n1" / "bench" for p in ("n2", "n3")},
        args.poll_ms / 1000,
    )
    try:
        for name in ADDRESSES:
            await bench.start(name)
        poller.start()
        started = time.monotonic()
        origin_dir = await bench.write_files()
        wrote = time.monotonic() - started
        expected = {(p, f) for p in ("n2", "n3") for f in bench.closed}
        deadline = time.monotonic() + args.drain_timeout
        while set(bench.verified) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        drained = time.monotonic() - started
        status = await bench.syncs["n1"].status()
        poller.halt.set()
        poller.join()
        bad = check_copies(origin_dir, {p: base / p / "files" / origin_dir.relative_to(
            base / "n1" / "files") for p in ("n2", "n3")})  # fmt: skip
    finally:
        poller.halt.set()
        await bench.stop_all()

    self_cpu = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    files = len(bench.closed)
    results["files"] = files
    results["bytes"] = sum(p.stat().st_size for p in origin_dir.iterdir())
    results["write_seconds"] = round(wrote, 2)
    results["achieved_rate"] = round(files / wrote, 1)
    results["all_verified_after_s"] = round(drained, 2)
    results["peers"] = {}
    outage = bench.outage
    for peer in ("n2", "n3"):
        verified = [d for (p, _), d in bench.verified.items() if p == peer]
        visible = [t - bench.closed[name] for (p, name), t in poller.seen.items() if p == peer]
        entry: dict[str, Any] = {
            "verified": summary(verified),
            "visible": summary(visible),
            "not_verified": len({f for f in bench.closed} - {n for (p, n) in bench.verified
                                                             if p == peer}),
            "bad_copies": bad[peer],
        }  # fmt: skip
        peer_status = next(s for s in status.peers if s.name == peer)
        entry["rsync_push_runs"] = peer_status.batches
        entry["files_per_run"] = round(peer_status.pushed / max(peer_status.batches, 1), 2)
        entry["failures"] = peer_status.failures
        if peer == "n3" and outage is not None:
            down, up = outage
            missed = [n for n, t in bench.closed.items() if down <= t < up]
            done = [bench.closed[n] + bench.verified[("n3", n)] for n in missed
                    if ("n3", n) in bench.verified]  # fmt: skip
            entry["outage_s"] = round(up - down, 2)
            entry["missed_during_outage"] = len(missed)
            entry["caught_up_after_restart_s"] = round(max(done) - up, 2) if done else None
        results["peers"][peer] = entry
    results["cpu_s"] = {
        "this_process": round(self_cpu.ru_utime + self_cpu.ru_stime, 2),
        "rsync_processes": round(children.ru_utime + children.ru_stime, 2),
    }
    results["cpu_ms_per_file"] = round(
        1000 * (self_cpu.ru_utime + self_cpu.ru_stime + children.ru_utime + children.ru_stime)
        / max(files, 1), 2)  # fmt: skip
    failed = any(e["not_verified"] or e["bad_copies"] for e in results["peers"].values())
    return 1 if failed else 0


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{results['files']} files ({results['bytes'] / 1e6:.1f} MB) at "
        f"{results['achieved_rate']}/s; all verified on both peers "
        f"{results['all_verified_after_s']} s after the first"
    )
    print(f"{'peer':<5} {'delay':<9} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'n':>6}")
    for peer, entry in results["peers"].items():
        for what in ("verified", "visible"):
            s = entry[what]
            print(
                f"{peer:<5} {what:<9} {s.get('median_ms', '-'):>10} {s.get('p95_ms', '-'):>8} "
                f"{s.get('max_ms', '-'):>8} {s['n']:>6}"
            )
        print(
            f"      {entry['rsync_push_runs']} push runs, {entry['files_per_run']} files/run, "
            f"{entry['failures']} failed runs, {entry['not_verified']} not verified, "
            f"{entry['bad_copies']} bad copies"
        )
        if "outage_s" in entry:
            print(
                f"      down {entry['outage_s']} s, missed {entry['missed_during_outage']}, "
                f"all caught up {entry['caught_up_after_restart_s']} s after its restart"
            )
    cpu = results["cpu_s"]
    print(
        f"CPU: {cpu['this_process']} s this process, {cpu['rsync_processes']} s rsync "
        f"({results['cpu_ms_per_file']} ms per file, two peers)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=50.0, help="captures per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long node 1 writes")
    parser.add_argument("--min-size", type=int, default=10_000, help="bytes")
    parser.add_argument("--max-size", type=int, default=20_000, help="bytes")
    parser.add_argument("--outage", type=float, default=0.0, help="node 3 down this long (s)")
    parser.add_argument(
        "--check-after-push", action="store_true", help="a dry-run check after every push"
    )
    parser.add_argument("--poll-ms", type=float, default=5.0, help="presence poll interval")
    parser.add_argument("--drain-timeout", type=float, default=60.0, help="seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "started": stamp,
        "commit": git_commit(),
        "rsync": rsync_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "settings": {
            "rate": args.rate,
            "seconds": args.seconds,
            "sizes": [args.min_size, args.max_size],
            "outage_s": args.outage,
            "check_after_push": args.check_after_push,
            "poll_ms": args.poll_ms,
        },
    }
    print(f"smartswitch file sync bench, {results['rsync']}, three nodes on loopback")
    with tempfile.TemporaryDirectory(prefix="filesync-bench-") as base:
        try:
            code = asyncio.run(run(args, Path(base), results))
        except KeyboardInterrupt:
            return 130
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"filesync-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
