"""Call capture and file sync in a running cluster: three real nodes on 127.0.0.11-13 with
MariaDB replication, real sipp, real rsync daemons, tshark reading the files and a HEP3
receiver decoding what the nodes send.

One cluster for the module (its set-up is most of the cost). Capture is switched on by the
provisioning file's ``settings:`` (every call, HEP to a UDP socket of this test); the nodes
apply the retention every second and reconcile every 2 s so the tests can watch both.

Run it under the heavy lock: ``flock /tmp/ss-heavy.lock pytest tests/cluster/test_capture.py``.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.node import start_all
from e2e.sipp import SippOptions, free_port
from smartswitch.capture.hep import HepError, HepMessage, decode
from smartswitch.capture.writer import relative_path
from smartswitch.web.security import local_token

from .harness import (
    CUSTOMER_IP,
    DIALLED,
    NODE_IPS,
    SUPPLIER_IP,
    ClusterNode,
    Sipps,
    caller,
    cluster_member,
    provisioning,
    start_supplier,
)
from .mariadb import MariaDBInstance, skip_without_mariadb

pytestmark = [pytest.mark.e2e]

TSHARK = shutil.which("tshark")
RSYNC = shutil.which("rsync")
HEP_ID = 3_000_000_123  # a uint32 above 2**31: signedness mistakes show
NAMES = ("node1", "node2", "node3")
PASSWORD = "capture viewer password 1"
TCP_SUPPLIER_IP = "127.0.0.32"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


class HepReceiver:
    """A UDP socket decoding every HEP3 packet it gets (the library's decoder, which
    tests/capture/test_hep.py checks against hand-built packets and those of sngrep and
    Kamailio)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.messages: list[HepMessage] = []
        self.undecodable: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.sock.recv(65535)
            except TimeoutError:
                continue
            try:
                self.messages.append(decode(packet))
            except HepError:
                self.undecodable.append(packet)

    def of(self, correlation_id: str) -> list[HepMessage]:
        return [m for m in list(self.messages) if m.correlation_id == correlation_id.encode()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@dataclass
class Cluster:
    members: list[ClusterNode]
    dbs: list[MariaDBInstance]
    sipps: Sipps
    hep: HepReceiver
    tmp: Path
    calls: int = 0
    seen: set[str] = field(default_factory=set)
    openers: dict[int, urllib.request.OpenerDirector] = field(default_factory=dict)
    tcp_port: int = 0

    def api(self, member: int, path: str) -> bytes:
        node = self.members[member - 1].node
        token = local_token(node.data_dir)
        request = urllib.request.Request(
            f"http://{node.http_host}:{node.http_port}{path}",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            data: bytes = response.read()
        return data

    def ui(self, member: int, path: str) -> bytes:
        """A page of node ``member``'s web UI as the user the fixture made (logged in)."""
        node = self.members[member - 1].node
        base = f"http://{node.http_host}:{node.http_port}"
        opener = self.openers.get(member)
        if opener is None:
            opener = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
            )
            form = urllib.parse.urlencode({"username": "viewer", "password": PASSWORD})
            opener.open(f"{base}/login", form.encode(), timeout=5).read()
            self.openers[member] = opener
        with opener.open(f"{base}{path}", timeout=5) as response:
            data: bytes = response.read()
        return data

    def syncs_to_both_others(self, member: int) -> bool:
        metrics = self.api(member, "/metrics").decode()
        return sum(f'smartswitch_filesync_backlog{{peer="{n}"}}' in metrics for n in NAMES) == 2

    def cdrs(self, member: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.api(member, "/api/v1/cdrs?limit=1000"))["cdrs"]
        return rows

    def make_calls(
        self, count: int, member: int = 1, dialled: str = DIALLED
    ) -> list[dict[str, Any]]:
        """``count`` calls through node ``member``; their CDRs once all are in the money
        database (the primary's, node 1's)."""
        self.calls += 1
        proc = caller(
            self.sipps,
            f"calls-{self.calls}",
            self.members[member - 1].node,
            count,
            rate=10,
            duration_ms=200,
            timeout_s=60,
            service=dialled,
        )
        result = proc.wait()
        assert result.successful == count, result.stats
        new: list[dict[str, Any]] = []

        def arrived() -> bool:
            new[:] = [c for c in self.cdrs(1) if c["id"] not in self.seen]
            return len(new) >= count

        wait_for(arrived, 30, f"{count} new CDRs")
        self.seen.update(c["id"] for c in new)
        return new

    def path(self, member: int, cdr: dict[str, Any]) -> Path:
        """Where node ``member`` keeps the capture of ``cdr``'s call."""
        data_dir = self.members[member - 1].node.data_dir
        path: Path = data_dir / "captures" / cdr["node"] / relative_path(cdr["id"])
        return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    skip_without_mariadb()
    if TSHARK is None or RSYNC is None:
        pytest.skip("tshark and rsync are needed (scripts/install-system-deps.sh)")
    tmp = tmp_path_factory.mktemp("capture-cluster")
    sipps = Sipps(tmp)
    hep = HepReceiver()
    dbs: list[MariaDBInstance] = []
    members: list[ClusterNode] = []
    try:
        supplier = start_supplier(sipps)
        tcp_supplier = sipps.start(
            "supplier-tcp",
            SippOptions(
                scenario="uas",
                local_ip=TCP_SUPPLIER_IP,
                local_port=free_port(TCP_SUPPLIER_IP),
                transport="tcp",
                calls=None,
                timeout_s=300,
            ),
        )
        tcp_supplier.wait_until_listening()
        for i in range(3):
            db = MariaDBInstance(tmp, f"db{i + 1}", server_id=i + 1)
            dbs.append(db)
            db.initialize()
            db.start()
        rsync_port = free_port(NODE_IPS[0])
        members = [
            cluster_member(
                tmp / name,
                ip,
                name,
                db,
                db_scheme="replication",
                primary_database_url=dbs[0].url,
                rsync_port=rsync_port,
                file_reconcile_interval=2,
                capture_retention_interval=1,
                capture_linger=0.5,
            )
            for name, ip, db in zip(NAMES, NODE_IPS, dbs, strict=True)
        ]
        dbs[0].create_database()
        members[0].cli("cluster", "init-primary")
        document = yaml.safe_load(
            provisioning(
                supplier.options.local_port,
                [{"prefix": "44", "price_per_minute": "0.0100", "increment": "1/1"}],
            )
        )
        # Calls to 44... leave over TCP (the B leg), to a second supplier.
        document["peers"].append(
            {
                "name": "carrier-tcp",
                "role": "supplier",
                "account": "carrier",
                "tariff": "buy",
                "address": f"{TCP_SUPPLIER_IP}:{tcp_supplier.options.local_port}",
                "transport": "tcp",
            }
        )
        document["routes"].append(
            {"prefix": "44", "strategy": "least_cost", "suppliers": ["carrier-tcp"]}
        )
        document["settings"] = {
            "capture_mode": "all",
            "capture_hep": f"127.0.0.1:{hep.port}",
            "capture_hep_id": str(HEP_ID),
        }
        path = tmp / "provision.yaml"
        path.write_text(yaml.safe_dump(document))
        members[0].cli("provision", str(path))
        # A read-only web user, made on the primary (replicated to the others).
        members[0].add_viewer(PASSWORD)
        for member in members[1:]:
            member.cli("cluster", "add-replica")
        start_all(member.node for member in members)
        made = Cluster(members, dbs, sipps, hep, tmp)
        # Every node's file sync follows the two others (the nodes table, replicated).
        for i in (1, 2, 3):
            wait_for(partial(made.syncs_to_both_others, i), 30, f"node {i}'s file sync peers")
        made.tcp_port = tcp_supplier.options.local_port
        yield made
    finally:
        for member in members:
            if member.node.running:
                member.node.stop()
        sipps.stop_all()
        hep.close()
        for db in dbs:
            db.stop()


def sip_rows(path: Path, tcp_port: int = 0) -> list[dict[str, str]]:
    """Each SIP message of a pcap as tshark reads it (``tcp_port``: SIP over TCP there too)."""
    assert TSHARK is not None
    names = (
        "ip.src",
        "ip.dst",
        "sip.Call-ID",
        "sip.Method",
        "sip.Status-Code",
        "sip.CSeq.method",
        "frame.protocols",
    )
    command = [TSHARK, "-n", "-r", str(path), "-Y", "sip", "-T", "fields"]
    if tcp_port:
        command += ["-d", f"tcp.port=={tcp_port},sip"]
    for name in names:
        command += ["-e", name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [dict(zip(names, line.split("\t"), strict=True)) for line in done.stdout.splitlines()]


def kinds(rows: list[dict[str, str]], call_id: str) -> set[str]:
    """``INVITE``, ``200/INVITE``, ``ACK``, ``BYE``, ``200/BYE``... seen for ``call_id``."""
    found = set()
    for row in rows:
        if row["sip.Call-ID"] != call_id:
            continue
        if row["sip.Method"] and not row["sip.Status-Code"]:
            found.add(row["sip.Method"])
        else:
            found.add(f"{row['sip.Status-Code']}/{row['sip.CSeq.method']}")
    return found


def test_pcap_has_both_legs_and_reaches_every_node(cluster: Cluster) -> None:
    (cdr,) = cluster.make_calls(1)
    assert cdr["node"] == "node1"
    origin = cluster.path(1, cdr)
    wait_for(origin.exists, 10, f"{origin} written")
    written = time.monotonic()
    for member in (2, 3):
        copy = cluster.path(member, cdr)
        wait_for(copy.exists, 5 - (time.monotonic() - written), f"{copy} on node {member}")
    rows = sip_rows(origin)
    a_call_id = cdr["call_id"]
    b_call_ids = {r["sip.Call-ID"] for r in rows} - {a_call_id}
    assert len(b_call_ids) == 1, rows
    (b_call_id,) = b_call_ids
    wanted = {"INVITE", "200/INVITE", "ACK", "BYE", "200/BYE"}
    assert wanted <= kinds(rows, a_call_id), rows
    assert wanted <= kinds(rows, b_call_id), rows
    # The addresses the messages really crossed: the customer and node 1's dedicated IP on
    # the A leg, node 1 and the supplier on the B leg.
    legs: dict[str, set[frozenset[str]]] = {r["sip.Call-ID"]: set() for r in rows}
    for r in rows:
        legs[r["sip.Call-ID"]].add(frozenset((r["ip.src"], r["ip.dst"])))
    assert legs[a_call_id] == {frozenset((CUSTOMER_IP, NODE_IPS[0]))}
    assert legs[b_call_id] == {frozenset((NODE_IPS[0], SUPPLIER_IP))}

    # Node 3's API lists the capture with the CDR and serves its own copy.
    listed = {c["id"]: c for c in cluster.cdrs(3)}[cdr["id"]]
    assert listed["capture"] == f"/api/v1/captures/node1/{cdr['id']}.pcap"
    assert cluster.api(3, listed["capture"]) == origin.read_bytes()
    with pytest.raises(urllib.error.HTTPError) as missing:
        cluster.api(3, "/api/v1/captures/node1/01ARZ3NDEKTSV4RRFFQ69G5FAV.pcap")
    assert missing.value.code == 404

    # And node 3's web UI: the CDR page links to it, a logged-in user downloads it.
    page = cluster.ui(3, "/cdrs")
    link = f"/captures/node1/{cdr['id']}.pcap"
    assert f'href="{link}"'.encode() in page
    assert cluster.ui(3, link) == origin.read_bytes()

    # HEP: every message of both legs, one correlation id (the A leg's Call-ID), our id.
    def all_sent() -> bool:
        return len(cluster.hep.of(a_call_id)) >= len(rows)

    wait_for(all_sent, 5, "every message sent as HEP")
    hep = cluster.hep.of(a_call_id)
    assert not cluster.hep.undecodable
    assert {m.capture_id for m in hep} == {HEP_ID}
    first_lines = sorted(m.payload.split(b"\r\n", 1)[0] for m in hep)
    assert len(hep) == len(rows)
    assert {m.src[0] for m in hep} | {m.dst[0] for m in hep} == {
        CUSTOMER_IP,
        NODE_IPS[0],
        SUPPLIER_IP,
    }
    assert any(line.startswith(b"INVITE ") for line in first_lines)
    assert sum(line.startswith(b"BYE ") for line in first_lines) == 2


def test_stopped_node_gets_the_captures_it_missed(cluster: Cluster) -> None:
    node2 = cluster.members[1].node
    node2.stop()
    try:
        cdrs = cluster.make_calls(3)
        for cdr in cdrs:
            wait_for(cluster.path(3, cdr).exists, 10, "capture on node 3")
        assert not any(cluster.path(2, cdr).exists() for cdr in cdrs)
    finally:
        node2.start()
    for cdr in cdrs:
        wait_for(cluster.path(2, cdr).exists, 30, "capture on node 2 after its restart")
        assert cluster.path(2, cdr).read_bytes() == cluster.path(1, cdr).read_bytes()


def gone(path: Path) -> bool:
    return not path.exists()


def test_file_deleted_by_retention_stays_deleted(cluster: Cluster) -> None:
    (cdr,) = cluster.make_calls(1)
    copies = [cluster.path(m, cdr) for m in (1, 2, 3)]
    for copy in copies:
        wait_for(copy.exists, 10, f"{copy}")
    # 40 days old on every node (rsync -t gives every copy the origin's time): the default
    # retention (30 days) deletes it everywhere.
    old = time.time() - 40 * 86_400
    for copy in copies:
        os.utime(copy, (old, old))
    for copy in copies:
        wait_for(partial(gone, copy), 10, f"{copy} deleted")
    # Several reconciliation passes (every 2 s) later, nothing brought it back.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert not any(c.exists() for c in copies)
        time.sleep(0.2)
    metrics = cluster.api(1, "/metrics").decode()
    assert "smartswitch_capture_files_deleted_total" in metrics
    assert 'smartswitch_filesync_backlog{peer="node2"} 0' in metrics


def test_a_b_leg_over_tcp_is_captured_as_tcp(cluster: Cluster) -> None:
    (cdr,) = cluster.make_calls(1, dialled="442071234567")
    origin = cluster.path(1, cdr)
    wait_for(origin.exists, 10, f"{origin} written")
    rows = sip_rows(origin, cluster.tcp_port)
    a_call_id = cdr["call_id"]
    (b_call_id,) = {r["sip.Call-ID"] for r in rows} - {a_call_id}
    wanted = {"INVITE", "200/INVITE", "ACK", "BYE", "200/BYE"}
    assert wanted <= kinds(rows, a_call_id), rows
    assert wanted <= kinds(rows, b_call_id), rows
    for row in rows:
        over_tcp = ":tcp:" in row["frame.protocols"]
        assert over_tcp == (row["sip.Call-ID"] == b_call_id), row
        if over_tcp:
            assert {row["ip.src"], row["ip.dst"]} == {NODE_IPS[0], TCP_SUPPLIER_IP}
