#!/usr/bin/env python3
"""The replication cluster under load: outbox drain rate, replication lag, config propagation.

Builds the cluster of ``tests/cluster/test_replication.py`` (three private ``mariadbd``, the
first the primary and the other two GTID replicas made by ``smartswitch cluster add-replica``;
three nodes on 127.0.0.11-13; a sipp customer on 127.0.0.21 and a sipp supplier on 127.0.0.31)
and measures, each against a baseline taken in the same run:

1. **drain**: ``--drain-calls`` calls at ``--drain-rate`` through node 2 with the primary up
   (the baseline: the forwarder's delivery rate in normal running), then the same with the
   primary's ``mariadbd`` stopped (the outbox must hold exactly the completed calls), then
   the primary restarted: records per second into the primary until the outbox is empty.
2. **lag**: a marker row written to ``settings`` on the primary every 0.5 s and polled on
   both replicas: milliseconds until each replica shows it, idle and while sipp sends
   ``--load-rate`` calls/s through each of nodes 2 and 3; ``Seconds_Behind_Master`` sampled.
3. **config**: ``smartswitch provision`` on the primary adds a selling rate for a new prefix,
   ``--config-rounds`` times: when the primary commits it, when each replica's database has
   it, when each node's ``/cluster/status`` ``config_version`` moves, and when the first call
   to that prefix succeeds through nodes 2 and 3 (a 50 calls/s probe refused with 404 until
   then).

The harness is the tests' own (``tests/e2e/node.py``, ``tests/e2e/sipp.py``,
``tests/cluster/mariadb.py``). Traffic stays on 127.0.0.0/8; every load is bounded in calls
and time; every process started here is stopped by its PID, also on Ctrl-C or failure.
Results: a table on stdout, JSON in bench/results/ (git-ignored), logs beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The harness is the tests' (tests/e2e, tests/cluster): one copy only.
sys.path.insert(0, str(ROOT / "tests"))

from benchutil import git_commit  # noqa: E402
from cluster.harness import (  # noqa: E402
    CUSTOMER_IP,
    DIALLED,
    NODE_IPS,
    SUPPLIER_IP,
    bus_get,
    provisioning,
)
from cluster.mariadb import MariaDBInstance, missing_programs, wait_until  # noqa: E402
from e2e.node import Node, NodeSpec, dump_toml, node_command  # noqa: E402
from e2e.sipp import (  # noqa: E402
    SipMessage,
    Sipp,
    SippOptions,
    SippResult,
    free_port,
    sipp_version,
)

# The addresses and configuration of the cluster tests (tests/cluster/harness.py).
SECRET = "bench-cluster-secret-0123456789"
MARKER = "bench.lag_marker"
PROBE_RATE = 50  # calls/s of the config probe: its time resolution is 1/50 s


# A caller that accepts either outcome: 200 (then ACK, BYE) or 404 (then the ACK of the
# INVITE transaction: its branch, [branch-6] from index 6). The config probe counts both.
PROBE_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="config probe: 200 or 404">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="404" optional="true" next="1"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" next="2"/>
  <label id="1"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-9]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <label id="2"/>
  <timewait milliseconds="200"/>
</scenario>
"""


# --------------------------------------------------------------------------- the cluster


@dataclass
class Member:
    """One node of the cluster and its own MariaDB (the first one's is the primary)."""

    name: str
    node: Node
    db: MariaDBInstance

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [*node_command(), *args, "--config", str(self.node.config_path)]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr}")
        return done

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        """The node's ``/cluster/status`` (a signed request on the cluster bus)."""
        address = f"{self.node.http_host}:{self.node.http_port}"
        name = str(self.node.spec.config["node_name"])
        data: dict[str, Any] = bus_get(address, name, "/cluster/status", SECRET, timeout)
        return data

    def replicating(self) -> bool:
        return bool(self.status()["db"]["io_running"] == "Yes")

    def cdr_count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM cdrs", database="smartswitch")[0][0])

    def status_version_above(self, version: int) -> bool:
        return bool(self.status(timeout=1)["config_version"] > version)

    def db_version(self) -> int:
        """``config_version`` as this node's own database holds it."""
        rows = self.db.query(
            "SELECT version FROM config_version WHERE id = 1", database="smartswitch"
        )
        return int(rows[0][0]) if rows else 0


class Cluster:
    """Everything the bench starts, stopped by PID in :meth:`close` (also after a failure)."""

    def __init__(self, workdir: Path, log_level: str = "warning") -> None:
        self.workdir = workdir
        self.log_level = log_level
        self.dbs: list[MariaDBInstance] = []
        self.members: list[Member] = []
        self.sipps: list[Sipp] = []
        self.supplier: Sipp | None = None

    # -- building

    def build(self) -> dict[str, float]:
        timings: dict[str, float] = {}
        started = time.monotonic()
        self.supplier = self.sipp(
            "supplier",
            SippOptions(
                scenario="uas",
                local_ip=SUPPLIER_IP,
                local_port=free_port(SUPPLIER_IP),
                timeout_s=1800,
                trace_messages=False,
            ),
        )
        self.supplier.wait_until_listening()
        for i in range(3):
            db = MariaDBInstance(self.workdir, f"db{i + 1}", server_id=i + 1)
            self.dbs.append(db)
            db.initialize()
            db.start()
        timings["mariadb: 3 servers initialized and started"] = time.monotonic() - started
        for i, (ip, db) in enumerate(zip(NODE_IPS, self.dbs, strict=True)):
            spec = NodeSpec(workdir=self.workdir / f"node{i + 1}", sip_host=ip, http_host=ip)
            spec.config = {
                "log_level": self.log_level,
                "node_id": f"node{i + 1}",
                "node_name": f"node{i + 1}",
                "dedicated_ip": ip,
                "db_scheme": "replication",
                "database_url": db.url,
                "primary_database_url": self.dbs[0].url,
                "cluster_secret": SECRET,
            }
            node = Node(spec)
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(dump_toml(spec.config))
            self.members.append(Member(f"node{i + 1}", node, db))
        mark = time.monotonic()
        self.dbs[0].create_database()
        self.primary.cli("cluster", "init-primary")
        self.provision(provisioning(self.supplier_port))
        for member in self.members[1:]:
            member.cli("cluster", "add-replica")
        timings["init-primary, provision, 2 x add-replica"] = time.monotonic() - mark
        mark = time.monotonic()
        for member in self.members:
            member.node.start(health_timeout=30)
        timings["3 nodes started"] = time.monotonic() - mark
        for member in self.members[1:]:
            wait_until(member.replicating, 20, f"{member.name} replicating")
        timings["cluster ready"] = time.monotonic() - started
        return timings

    @property
    def primary(self) -> Member:
        return self.members[0]

    @property
    def supplier_port(self) -> int:
        assert self.supplier is not None
        return self.supplier.options.local_port

    def provision(self, document: str) -> None:
        path = self.workdir / "provision.yaml"
        path.write_text(document)
        self.primary.cli("provision", str(path))

    def sipp(self, name: str, options: SippOptions) -> Sipp:
        proc = Sipp(name, options, self.workdir / f"sipp-{name}").start()
        self.sipps.append(proc)
        return proc

    def caller(
        self,
        name: str,
        member: Member,
        *,
        calls: int,
        rate: float,
        duration_ms: int,
        timeout_s: float,
        service: str = DIALLED,
        scenario: str | Path = "uac",
        trace: bool = False,
    ) -> Sipp:
        return self.sipp(
            name,
            SippOptions(
                scenario=scenario,
                local_ip=CUSTOMER_IP,
                local_port=free_port(CUSTOMER_IP),
                remote=member.node.sip_address,
                service=service,
                calls=calls,
                rate=rate,
                duration_ms=duration_ms,
                timeout_s=timeout_s,
                recv_timeout_ms=5000,
                trace_messages=trace,
            ),
        )

    # -- tearing down

    def close(self) -> list[str]:
        """Stop every sipp, node and mariadbd started here, by PID; the errors, if any."""
        errors: list[str] = []
        for proc in self.sipps:
            try:
                if proc.running:
                    proc.stop()
            except Exception as exc:
                errors.append(f"sipp {proc.name}: {exc}")
        for member in self.members:
            try:
                member.node.stop()
            except Exception as exc:
                errors.append(f"{member.name}: {exc}")
        for db in self.dbs:
            try:
                db.stop()
            except Exception as exc:
                errors.append(f"{db.name}: {exc}")
        return errors

    def keep_logs(self, into: Path) -> None:
        """Copy the node logs, MariaDB error logs and sipp outputs (not the traces)."""
        into.mkdir(parents=True, exist_ok=True)
        for member in self.members:
            if member.node.log_path.exists():
                shutil.copy(member.node.log_path, into / f"{member.name}.log")
        for db in self.dbs:
            if db.error_log.exists():
                shutil.copy(db.error_log, into / f"{db.name}-error.log")
        for proc in self.sipps:
            for name in ("stderr.txt", "errors.log", "command.txt"):
                path = proc.workdir / name
                if path.exists() and path.stat().st_size:
                    shutil.copy(path, into / f"sipp-{proc.name}-{name}")


# --------------------------------------------------------------------------- helpers


class Sampler:
    """Calls ``probe()`` every ``interval`` s in a thread, keeping (wall time, value) samples
    (errors are skipped: a server may be restarting). Bounded by ``limit`` seconds."""

    def __init__(
        self, probe: Callable[[], Any], interval: float, limit: float, name: str = "sampler"
    ) -> None:
        self.probe = probe
        self.interval = interval
        self.limit = limit
        self.samples: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                value = self.probe()
                self.samples.append((time.time(), value))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def first_time(
    probe: Callable[[], bool],
    limit: float,
    interval: float,
    stop: threading.Event | None = None,
) -> float | None:
    """The wall time at which ``probe()`` first returned True (None: not within ``limit``,
    or ``stop`` was set)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        with contextlib.suppress(Exception):
            if probe():
                return time.time()
        time.sleep(interval)
    return None


class DbVersionAbove:
    """Whether a database's ``config_version`` is above ``version``: a probe for
    :class:`Watchers` that keeps one connection (a new one per poll would load the server
    and the bench itself more than what is measured)."""

    def __init__(self, db: MariaDBInstance, version: int) -> None:
        self.db = db
        self.version = version
        self._conn: Any = None

    def __call__(self) -> bool:
        if self._conn is None:
            self._conn = self.db.connect("smartswitch")
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT version FROM config_version WHERE id = 1")
                row = cur.fetchone()
        except Exception:
            self.close()
            raise
        return row is not None and int(row[0]) > self.version

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class Watchers:
    """One thread per named probe, each noting the wall time its probe first held.

    ``probes`` maps a name to (probe, seconds between polls)."""

    def __init__(self, probes: dict[str, tuple[Callable[[], bool], float]], limit: float):
        self.probes = probes
        self.limit = limit
        self.found: dict[str, float | None] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(key,), name=f"watch-{key}", daemon=True)
            for key in probes
        ]

    def _run(self, key: str) -> None:
        probe, interval = self.probes[key]
        self.found[key] = first_time(probe, self.limit, interval, self._stop)

    def __enter__(self) -> Watchers:
        for thread in self._threads:
            thread.start()
        return self

    def wait(self, timeout: float) -> dict[str, float | None]:
        """Wait for every probe (or ``timeout``); the times, in the probes' order."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return {key: self.found.get(key) for key in self.probes}

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for probe, _ in self.probes.values():
            if isinstance(probe, DbVersionAbove):
                probe.close()


def has_cdrs(member: Member, count: int) -> bool:
    return member.cdr_count() == count


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median and max (and count) of ``values``, rounded."""
    if not values:
        return {"n": 0, "median": None, "max": None}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


_STAMPED = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n(\w+) message (received|sent)[^\n]*\n",
    re.MULTILINE,
)


def stamped_messages(path: Path) -> list[tuple[float, SipMessage]]:
    """The messages of a sipp ``-message_file`` with the wall time sipp logged for each."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    found: list[tuple[float, SipMessage]] = []
    heads = list(_STAMPED.finditer(text))
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        body = text[head.end() : end].strip("\n") + "\n\n"
        stamp = datetime.strptime(head[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()  # local time
        found.append((stamp, SipMessage(direction=head[3], transport=head[2], text=body)))
    return found


def invite_answers(path: Path) -> list[tuple[float, int]]:
    """(wall time, status) of every final answer to an INVITE that sipp received."""
    answers = []
    for stamp, message in stamped_messages(path):
        status = message.status
        cseq = (message.header("cseq") or "").upper()
        if message.direction == "received" and status and status >= 200 and "INVITE" in cseq:
            answers.append((stamp, status))
    return answers


def check_calls(result: SippResult, wanted: int) -> dict[str, Any]:
    return {
        "wanted": wanted,
        "successful": result.successful,
        "failed": result.failed,
        "returncode": result.returncode,
        "seconds": round(result.elapsed, 2),
        "retransmissions": result.stat("Retransmissions"),
    }


# --------------------------------------------------------------------------- 1. drain


def run_calls_watching_outbox(
    cluster: Cluster, name: str, member: Member, calls: int, rate: float, duration_ms: int
) -> tuple[SippResult, list[tuple[float, Any]], float]:
    """``calls`` through ``member`` while its status is sampled; returns sipp's result, the
    (time, status) samples and the wall time sipp finished (the last call's end)."""
    limit = calls / rate + 60
    with Sampler(member.status, 0.05, limit, f"status-{name}") as sampler:
        proc = cluster.caller(
            name, member, calls=calls, rate=rate, duration_ms=duration_ms, timeout_s=limit
        )
        result = proc.wait(timeout=limit + 10)
        ended = time.time()
        wait_empty(sampler, after=ended, limit=30)
    return result, sampler.samples, ended


def wait_empty(sampler: Sampler, after: float, limit: float) -> float | None:
    """Wait until ``sampler`` (of a node's status) shows an empty outbox in a sample taken
    after ``after``; the wall time of that sample (None: not within ``limit`` s)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        empty = [t for t, s in list(sampler.samples) if t > after and s["outbox_depth"] == 0]
        if empty:
            return empty[0]
        time.sleep(0.02)
    return None


def error_changes(samples: Sequence[tuple[float, Any]], since: float) -> list[tuple[float, str]]:
    """(seconds after ``since``, the forwarder's last error) each time that error changed."""
    changes: list[tuple[float, str]] = []
    last: str | None = None
    for t, status in samples:
        error = status.get("delivery_error") or ""
        if error != last:
            changes.append((round(t - since, 3), error.split("\n")[0][:160]))
            last = error
    return changes


def measure_drain(cluster: Cluster, calls: int, rate: float, duration_ms: int) -> dict[str, Any]:
    primary, node2 = cluster.members[0], cluster.members[1]
    out: dict[str, Any] = {"calls": calls, "rate": rate, "duration_ms": duration_ms}

    # Baseline: primary up. The forwarder keeps up with the calls; delivery rate = records
    # over the window from the first delivery to the outbox being empty after the last call.
    before = node2.status()
    result, samples, ended = run_calls_watching_outbox(
        cluster, "drain-baseline", node2, calls, rate, duration_ms
    )
    out["baseline_calls"] = check_calls(result, calls)
    empty_at = next((t for t, s in samples if t > ended and s["outbox_depth"] == 0), None)
    delivered0 = before["delivered"]
    moved = [t for t, s in samples if s["delivered"] > delivered0]
    depths = [s["outbox_depth"] for _, s in samples]
    baseline_window = (empty_at or ended) - moved[0] if moved else None
    delivered = node2.status()["delivered"] - delivered0
    out["baseline"] = {
        "delivered": delivered,
        "max_outbox_depth": max(depths, default=0),
        "last_call_end_to_outbox_empty_ms": ms(empty_at - ended) if empty_at else None,
        "delivery_rate_per_s": round(delivered / baseline_window, 1) if baseline_window else None,
    }

    # The outage: the primary's mariadbd stopped, the same calls through node 2.
    stop_started = time.monotonic()
    primary.db.stop()
    out["primary_stop_s"] = round(time.monotonic() - stop_started, 2)
    depth_before = node2.status()["outbox_depth"]
    proc = cluster.caller(
        "drain-outage",
        node2,
        calls=calls,
        rate=rate,
        duration_ms=duration_ms,
        timeout_s=calls / rate + 60,
    )
    result = proc.wait(timeout=calls / rate + 70)
    out["outage_calls"] = check_calls(result, calls)
    status = node2.status()
    backlog = status["outbox_depth"] - depth_before
    out["outbox_depth_after_outage"] = status["outbox_depth"]
    out["outbox_equals_completed_calls"] = backlog == result.successful
    out["delivery_error_seen"] = status.get("delivery_error")

    # The primary back: time the outbox to 0.
    delivered0 = status["delivered"]
    restart = time.time()
    # One poller only (each poll is an HTTP request node 2 serves while it drains).
    with Sampler(node2.status, 0.02, 120, "status-drain") as sampler:
        primary.db.start()
        up = time.time()
        empty_at = wait_empty(sampler, after=up, limit=90)
    first_move = next(
        (t for t, s in sampler.samples if s["delivered"] > delivered0 and t >= restart), None
    )
    drained = node2.status()["delivered"] - delivered0
    # The first delivery is seen when its batch has committed: the rate is taken from there
    # to the outbox being empty, over the records delivered in that time.
    first_batch = next(
        (s["delivered"] - delivered0 for t, s in sampler.samples if t == first_move), 0
    )
    drain: dict[str, Any] = {
        "records": backlog,
        "delivered": drained,
        "primary_start_ms": ms(up - restart),
        "primary_up_to_first_delivery_ms": ms(first_move - up) if first_move else None,
        "first_batch": first_batch,
        "first_delivery_to_empty_ms": ms(empty_at - first_move)
        if empty_at and first_move
        else None,
        "primary_up_to_empty_ms": ms(empty_at - up) if empty_at else None,
        "curve": [
            (round(t - up, 3), s["outbox_depth"]) for t, s in sampler.samples if t >= restart
        ],
        "delivery_errors": error_changes(sampler.samples, up),
    }
    if empty_at and first_move and empty_at > first_move and drained > first_batch:
        drain["rate_per_s"] = round((drained - first_batch) / (empty_at - first_move), 1)
    if empty_at:
        drain["rate_from_primary_up_per_s"] = round(drained / (empty_at - up), 1)
    out["drain"] = drain
    base = out["baseline"]["delivery_rate_per_s"]
    if base and drain.get("rate_per_s"):
        out["drain_to_baseline_ratio"] = round(drain["rate_per_s"] / base, 2)

    # Replication carries the result to every node: the replicas reach the primary's count.
    total = primary.cdr_count()
    converged = [
        first_time(functools.partial(has_cdrs, m, total), 30, 0.01) for m in cluster.members[1:]
    ]
    out["cdrs_on_primary"] = int(total)
    out["cdrs_expected"] = out["baseline_calls"]["successful"] + out["outage_calls"]["successful"]
    out["replicas_have_every_cdr_ms_after_empty"] = [
        ms(c - empty_at) if c and empty_at else None for c in converged
    ]
    return out


# --------------------------------------------------------------------------- 2. lag


class LagProbe:
    """Marker rows on the primary every ``period`` s, polled on each replica."""

    def __init__(self, primary: MariaDBInstance, replicas: Sequence[MariaDBInstance]) -> None:
        self.primary = primary
        self.replicas = list(replicas)
        self.written: dict[int, tuple[float, float]] = {}  # seq -> (before, after commit)
        self.seen: dict[str, dict[int, float]] = {r.name: {} for r in replicas}
        self.seconds_behind: dict[str, list[int | None]] = {r.name: [] for r in replicas}
        self.errors: list[str] = []
        self._seq = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run_for(self, seconds: float, period: float = 0.5) -> tuple[int, int]:
        """Write markers for ``seconds``; returns the first and last sequence numbers."""
        first = self._seq + 1
        deadline = time.monotonic() + seconds
        with self.primary.connect("smartswitch") as conn, conn.cursor() as cur:
            while time.monotonic() < deadline:
                self._seq += 1
                before = time.time()
                cur.execute(
                    "INSERT INTO settings (name, value) VALUES (%s, %s) "
                    "ON DUPLICATE KEY UPDATE value = VALUES(value)",
                    [MARKER, f"{self._seq} {before:.6f}"],
                )
                self.written[self._seq] = (before, time.time())
                self._sample_seconds_behind()
                time.sleep(max(0.0, period - (time.time() - before)))
        time.sleep(0.5)  # the last marker's way to the replicas
        return first, self._seq

    def _sample_seconds_behind(self) -> None:
        for replica in self.replicas:
            try:
                with replica.connect() as conn, conn.cursor(dictionary_cursor()) as cur:
                    cur.execute("SHOW SLAVE STATUS")
                    row = cur.fetchone() or {}
                value = row.get("Seconds_Behind_Master")
                self.seconds_behind[replica.name].append(None if value is None else int(value))
            except Exception as exc:
                self.errors.append(f"{replica.name}: {exc}")

    def _poll(self, replica: MariaDBInstance) -> None:
        seen = self.seen[replica.name]
        last = 0
        with replica.connect("smartswitch") as conn, conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute("SELECT value FROM settings WHERE name = %s", [MARKER])
                row = cur.fetchone()
                now = time.time()
                if row is not None:
                    seq = int(str(row[0]).split()[0])
                    if seq > last:
                        for s in range(last + 1, seq + 1):
                            seen.setdefault(s, now)  # a skipped one arrived by now at the latest
                        last = seq
                time.sleep(0.002)

    def __enter__(self) -> LagProbe:
        for replica in self.replicas:
            thread = threading.Thread(
                target=self._poll, args=(replica,), name=f"lag-{replica.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def lags_ms(self, first: int, last: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for name, seen in self.seen.items():
            out[name] = [
                (seen[s] - self.written[s][0]) * 1000
                for s in range(first, last + 1)
                if s in seen and s in self.written
            ]
        return out

    def commit_ms(self, first: int, last: int) -> list[float]:
        return [
            (self.written[s][1] - self.written[s][0]) * 1000
            for s in range(first, last + 1)
            if s in self.written
        ]


def dictionary_cursor() -> Any:
    import pymysql.cursors

    return pymysql.cursors.DictCursor


def measure_lag(
    cluster: Cluster, idle_s: float, load_s: float, rate: float, duration_ms: int
) -> dict[str, Any]:
    replicas = [m.db for m in cluster.members[1:]]
    out: dict[str, Any] = {"idle_s": idle_s, "load_s": load_s, "rate_per_node": rate}
    with LagProbe(cluster.primary.db, replicas) as probe:
        idle = probe.run_for(idle_s)
        calls = int(rate * load_s)
        loaders = [
            cluster.caller(
                f"lag-load-{m.name}",
                m,
                calls=calls,
                rate=rate,
                duration_ms=duration_ms,
                timeout_s=load_s + 60,
            )
            for m in cluster.members[1:]
        ]
        time.sleep(1.0)  # sipp's first second ramps up
        with Sampler(
            lambda: [m.status()["outbox_depth"] for m in cluster.members[1:]], 0.25, load_s + 60
        ) as depths:
            loaded = probe.run_for(load_s - 1.5)
            results = [p.wait(timeout=load_s + 70) for p in loaders]
    out["load_calls"] = {r.name: check_calls(r, calls) for r in results}
    out["max_outbox_depth_under_load"] = max((max(v) for _, v in depths.samples), default=None)
    for label, (first, last) in (("idle", idle), ("load", loaded)):
        lags = probe.lags_ms(first, last)
        out[label] = {
            "markers": last - first + 1,
            "primary_commit_ms": summary(probe.commit_ms(first, last)),
            **{name: summary(values) for name, values in lags.items()},
        }
    out["seconds_behind_master_max"] = {
        name: max((v for v in values if v is not None), default=None)
        for name, values in probe.seconds_behind.items()
    }
    out["seconds_behind_master_null_samples"] = {
        name: sum(v is None for v in values) for name, values in probe.seconds_behind.items()
    }
    if probe.errors:
        out["errors"] = probe.errors[:5]
    for name in probe.seen:
        idle_median = out["idle"][name]["median"]
        load_median = out["load"][name]["median"]
        if idle_median and load_median:
            out.setdefault("load_to_idle_median_ratio", {})[name] = round(
                load_median / idle_median, 2
            )
    return out


# --------------------------------------------------------------------------- 3. config


def measure_config(cluster: Cluster, rounds: int) -> dict[str, Any]:
    primary = cluster.primary
    replicas = cluster.members[1:]
    scenario = cluster.workdir / "uac_probe_200_or_404.xml"
    scenario.write_text(PROBE_SCENARIO)
    out: dict[str, Any] = {"rounds": []}
    rates: list[dict[str, str]] = []
    for k in range(1, rounds + 1):
        prefix = f"44{k}"
        dialled = f"{prefix}0123456"
        rates.append({"prefix": prefix, "price_per_minute": "0.0200", "increment": "1/1"})
        document = provisioning(cluster.supplier_port, rates)
        old = primary.db_version()
        probes = [
            cluster.caller(
                f"config-{k}-{m.name}",
                m,
                calls=PROBE_RATE * 40,
                rate=PROBE_RATE,
                duration_ms=10,
                timeout_s=50,
                service=dialled,
                scenario=scenario,
                trace=True,
            )
            for m in replicas
        ]
        time.sleep(0.4)  # the probes see the refusal first
        # The databases polled every 2 ms on one connection each; the nodes' status every
        # 20 ms (each poll is an HTTP request the node serves: keep it light).
        targets: dict[str, tuple[Callable[[], bool], float]] = {
            "primary db": (DbVersionAbove(primary.db, old), 0.002)
        }
        for m in replicas:
            targets[f"{m.name}'s replica"] = (DbVersionAbove(m.db, old), 0.002)
        for m in cluster.members:
            targets[f"{m.name} status"] = (functools.partial(m.status_version_above, old), 0.02)
        with Watchers(targets, limit=30) as watchers:
            provision_started = time.time()
            cluster.provision(document)
            provision_done = time.time()
            moved = watchers.wait(timeout=35)
        time.sleep(0.3)  # a few calls after the change, to see them succeed
        results = [p.stop() for p in probes]
        # The commit: when the primary's database showed it (a replica cannot have it
        # earlier; should one poll have been quicker, the earliest sighting counts).
        commit = min(
            (
                t
                for k, t in moved.items()
                if t is not None and isinstance(targets[k][0], DbVersionAbove)
            ),
            default=None,
        )
        entry: dict[str, Any] = {
            "prefix": prefix,
            "provision_command_ms": ms(provision_done - provision_started),
            "commit_after_command_start_ms": ms(commit - provision_started) if commit else None,
        }
        entry["primary_db_seen_after_commit_ms"] = (
            ms(moved["primary db"] - commit) if moved["primary db"] and commit else None
        )
        for key, when in moved.items():
            if key != "primary db":
                entry[f"{key} ms"] = ms(when - commit) if when and commit else None
        for m, result in zip(replicas, results, strict=True):
            answers = invite_answers(result.workdir / "messages.log")
            ok = [t for t, status in answers if status == 200]
            refused_before = [t for t, status in answers if status == 404 and (not ok or t < ok[0])]
            refused_after = [t for t, status in answers if status != 200 and ok and t > ok[0]]
            entry[f"{m.name} first call ok ms"] = ms(ok[0] - commit) if ok and commit else None
            entry[f"{m.name} probe"] = {
                "refused_before": len(refused_before),
                "ok": len(ok),
                "not_ok_after_first_ok": len(refused_after),
            }
        out["rounds"].append(entry)
    keys = [k for k in out["rounds"][0] if k.endswith(" ms")]
    out["summary_ms"] = {
        key: summary([r[key] for r in out["rounds"] if r.get(key) is not None]) for key in keys
    }
    return out


# --------------------------------------------------------------------------- main


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    # Short, under /tmp: a MariaDB socket path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="ss-bench-cluster-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def print_table(results: dict[str, Any]) -> None:
    print()
    rows: list[tuple[str, str, str]] = []
    drain = results.get("drain")
    if drain:
        d = drain["drain"]
        rows += [
            (
                f"normal running, {drain['calls']} calls at {drain['rate']:g}/s via node2",
                _fmt(drain["baseline"]["delivery_rate_per_s"], " rec/s"),
                f"max depth {drain['baseline']['max_outbox_depth']}, "
                f"empty {_fmt(drain['baseline']['last_call_end_to_outbox_empty_ms'], ' ms')} "
                "after the last call",
            ),
            (
                "outage: outbox depth = completed calls",
                str(drain["outbox_equals_completed_calls"]),
                f"depth {drain['outbox_depth_after_outage']}, "
                f"calls ok {drain['outage_calls']['successful']}, "
                f"failed {drain['outage_calls']['failed']}",
            ),
            (
                "drain into the restarted primary",
                _fmt(d.get("rate_per_s"), " rec/s"),
                f"{_fmt(drain.get('drain_to_baseline_ratio'), 'x')} the normal delivery rate; "
                f"{d['records']} records, the last {d['records'] - d['first_batch']} "
                f"in {_fmt(d['first_delivery_to_empty_ms'], ' ms')}",
            ),
            (
                "  primary answering -> first delivery",
                _fmt(d["primary_up_to_first_delivery_ms"], " ms"),
                f"(forwarder back-off); -> empty {_fmt(d['primary_up_to_empty_ms'], ' ms')}, "
                f"{_fmt(d.get('rate_from_primary_up_per_s'), ' rec/s')} overall",
            ),
            (
                "  replicas have every CDR, after empty",
                ", ".join(_fmt(v, " ms") for v in drain["replicas_have_every_cdr_ms_after_empty"]),
                f"CDRs on the primary {drain['cdrs_on_primary']}, "
                f"calls completed {drain['cdrs_expected']}",
            ),
        ]
    lag = results.get("lag")
    if lag:
        for name in ("db2", "db3"):
            idle, load = lag["idle"].get(name), lag["load"].get(name)
            if idle and load:
                rows.append(
                    (
                        f"replication lag {name}: median / max",
                        f"{_fmt(load['median'])} / {_fmt(load['max'], ' ms')}",
                        f"under load ({lag['rate_per_node']:g} calls/s via node2 and node3); "
                        f"idle {_fmt(idle['median'])} / {_fmt(idle['max'], ' ms')}; ratio "
                        f"{_fmt(lag.get('load_to_idle_median_ratio', {}).get(name), 'x')}",
                    )
                )
        rows.append(
            (
                "  Seconds_Behind_Master max",
                json.dumps(lag["seconds_behind_master_max"]),
                "calls: "
                + ", ".join(
                    f"{c['successful']} ok / {c['failed']} failed in {c['seconds']:g} s"
                    for c in lag["load_calls"].values()
                )
                + f"; max outbox depth {lag['max_outbox_depth_under_load']}",
            )
        )
    config = results.get("config")
    if config:
        for key, s in config["summary_ms"].items():
            rows.append(
                (
                    f"config change -> {key.removesuffix(' ms')}: median / max",
                    f"{_fmt(s['median'])} / {_fmt(s['max'], ' ms')}",
                    f"{s['n']} rounds, from the primary's commit",
                )
            )
    width = max(len(r[0]) for r in rows) if rows else 0
    vwidth = max(len(r[1]) for r in rows) if rows else 0
    for what, value, note in rows:
        print(f"{what:<{width}}  {value:>{vwidth}}  {note}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--drain-calls", type=int, default=3000)
    parser.add_argument("--drain-rate", type=float, default=300, help="calls/s via node2")
    parser.add_argument("--duration-ms", type=int, default=100, help="each call's length")
    parser.add_argument("--idle-seconds", type=float, default=8)
    parser.add_argument("--load-seconds", type=float, default=20)
    parser.add_argument(
        "--load-rate", type=float, default=150, help="calls/s via each of node2 and node3"
    )
    parser.add_argument("--config-rounds", type=int, default=5)
    parser.add_argument(
        "--only", choices=("drain", "lag", "config"), action="append", help="run part of it"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        help="the nodes' log_level (info logs every call: a cost at these rates)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    for bound, name in ((20_000, "drain_calls"), (60, "load_seconds"), (20, "config_rounds")):
        if getattr(args, name) > bound:
            parser.error(f"--{name.replace('_', '-')} is bounded to {bound}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_programs():
        print("missing: " + ", ".join(missing) + " (scripts/install-system-deps.sh)")
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Also when started in the background (where SIGINT arrives ignored): Ctrl-C cleans up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parts = args.only or ["drain", "lag", "config"]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "started": stamp,
        "commit": git_commit(),
        "sipp": sipp_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    started = time.monotonic()
    code = 0
    with workspace(args.keep) as workdir:
        cluster = Cluster(workdir, args.log_level)
        try:
            print(f"smartswitch cluster bench: building the cluster in {workdir}")
            results["setup_s"] = {k: round(v, 2) for k, v in cluster.build().items()}
            if "drain" in parts:
                print("1/3 outbox drain ...", flush=True)
                results["drain"] = measure_drain(
                    cluster, args.drain_calls, args.drain_rate, args.duration_ms
                )
            if "lag" in parts:
                print("2/3 replication lag ...", flush=True)
                results["lag"] = measure_lag(
                    cluster, args.idle_seconds, args.load_seconds, args.load_rate, args.duration_ms
                )
            if "config" in parts:
                print("3/3 config change to effect ...", flush=True)
                results["config"] = measure_config(cluster, args.config_rounds)
        except (Exception, KeyboardInterrupt) as exc:
            results["error"] = f"{type(exc).__name__}: {exc}"
            print(f"bench failed: {results['error']}", file=sys.stderr)
            code = 1
        finally:
            errors = cluster.close()
            if errors:
                results["cleanup_errors"] = errors
                print("cleanup: " + "; ".join(errors), file=sys.stderr)
            logs = args.out / f"cluster-{stamp}"
            cluster.keep_logs(logs)
            results["logs"] = str(logs)
    results["total_s"] = round(time.monotonic() - started, 1)
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cluster-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\ntotal {results['total_s']} s; results: {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
