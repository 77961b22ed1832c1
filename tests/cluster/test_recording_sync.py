"""A recording plays from another node's UI after the file sync: two real nodes on
127.0.0.11-12 with MariaDB replication and their rsync daemons, the first running its own real
rtpengine; a relayed call with G.711 both ways (sipp plays g711a.pcap, the supplier's sipp
echoes it) recorded because its customer's *account* records (its peer does not).

Checked on node 2, which never saw the call: its CDR (replicated) links the recording, the WAV
downloads from its API and from its UI byte for byte as node 1 filed it, with a WAV header and
a duration within 10 % of the call's.

One cluster for the module; heavy: ``flock /tmp/ss-heavy.lock pytest
tests/cluster/test_recording_sync.py``.
"""

from __future__ import annotations

import http.cookiejar
import io
import json
import shutil
import time
import urllib.parse
import urllib.request
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.node import start_all
from e2e.sipp import Sipp, SippOptions, free_port
from smartswitch.media.archive import recording_name
from smartswitch.web.security import local_token

from .harness import (
    CUSTOMER_IP,
    DIALLED,
    NODE_IPS,
    SUPPLIER_IP,
    ClusterNode,
    Sipps,
    cluster_member,
    provisioning,
)
from .mariadb import MariaDBInstance, skip_without_mariadb

pytestmark = [pytest.mark.e2e]

NAMES = ("node1", "node2")
PASSWORD = "recording viewer password 1"
SIPP_PCAPS = Path("/usr/share/sip-tester")
RTPENGINE = shutil.which("rtpengine")
RSYNC = shutil.which("rsync")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


@dataclass
class Pair:
    members: list[ClusterNode]
    sipps: Sipps
    tmp: Path
    supplier_port: int

    def base(self, member: int) -> str:
        node = self.members[member - 1].node
        return f"http://{node.http_host}:{node.http_port}"

    def api(self, member: int, path: str) -> bytes:
        token = local_token(self.members[member - 1].node.data_dir)
        request = urllib.request.Request(
            self.base(member) + path, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            data: bytes = response.read()
        return data

    def ui(self, member: int) -> urllib.request.OpenerDirector:
        """An opener logged in to node ``member``'s web UI as the read-only viewer."""
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        form = urllib.parse.urlencode({"username": "viewer", "password": PASSWORD})
        opener.open(f"{self.base(member)}/login", form.encode(), timeout=5).read()
        return opener

    def cdrs(self, member: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.api(member, "/api/v1/cdrs?limit=100"))["cdrs"]
        return rows

    def syncs_to(self, member: int, peer: str) -> bool:
        return (
            f'smartswitch_filesync_backlog{{peer="{peer}"}}'
            in self.api(member, "/metrics").decode()
        )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    skip_without_mariadb()
    if RTPENGINE is None or RSYNC is None:
        pytest.skip("rtpengine and rsync are needed (scripts/install-system-deps.sh)")
    tmp = tmp_path_factory.mktemp("recording-sync")
    sipps = Sipps(tmp)
    dbs: list[MariaDBInstance] = []
    members: list[ClusterNode] = []
    try:
        for i in range(2):
            db = MariaDBInstance(tmp, f"db{i + 1}", server_id=i + 1)
            dbs.append(db)
            db.initialize()
            db.start()
        rsync_port = free_port(NODE_IPS[0])
        media = {
            "media_rtpengine": True,
            "media_interface": NODE_IPS[0],
            "media_ng": f"{NODE_IPS[0]}:{free_port(NODE_IPS[0])}",
            "media_port_min": 31600,
            "media_port_max": 31799,
            "media_ping_interval": 0.5,
        }
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
                **(media if name == "node1" else {}),
            )
            for name, ip, db in zip(NAMES, NODE_IPS[:2], dbs, strict=True)
        ]
        dbs[0].create_database()
        members[0].cli("cluster", "init-primary")
        supplier_port = free_port(SUPPLIER_IP)
        document = yaml.safe_load(provisioning(supplier_port))
        # The customer's account records; its peer relays but does not record.
        acme = next(a for a in document["accounts"] if a["name"] == "acme")
        acme["record"] = True
        trunk = next(p for p in document["peers"] if p["name"] == "acme-trunk")
        trunk["media"] = "relay"
        path = tmp / "provision.yaml"
        path.write_text(yaml.safe_dump(document))
        members[0].cli("provision", str(path))
        members[0].add_viewer(PASSWORD)  # replicated to node 2
        members[1].cli("cluster", "add-replica")
        start_all(member.node for member in members)
        made = Pair(members, sipps, tmp, supplier_port)
        wait_for(partial(made.syncs_to, 1, "node2"), 30, "node 1's file sync to node 2")
        yield made
    finally:
        for member in members:
            if member.node.running:
                member.node.stop()
        sipps.stop_all()
        for db in dbs:
            db.stop()


def relayed_call(pair: Pair) -> None:
    """One call through node 1: g711a.pcap played for the whole call, echoed by the supplier."""
    supplier = pair.sipps.start(
        "supplier",
        SippOptions(
            scenario="uas",
            local_ip=SUPPLIER_IP,
            local_port=pair.supplier_port,
            calls=1,
            timeout_s=60,
            recv_timeout_ms=20000,
            extra=("-mi", SUPPLIER_IP, "-mp", "16300", "-rtp_echo"),
        ),
    )
    supplier.wait_until_listening()
    options = SippOptions(
        scenario="uac_pcap_call",
        local_ip=CUSTOMER_IP,
        local_port=free_port(CUSTOMER_IP),
        remote=pair.members[0].node.sip_address,
        service=DIALLED,
        calls=1,
        rate=1,
        timeout_s=60,
        recv_timeout_ms=20000,
        extra=("-mi", CUSTOMER_IP, "-mp", "18300"),
    )
    caller = Sipp("caller", options, pair.tmp / "sipp-caller")
    (caller.workdir / "pcap").mkdir(exist_ok=True)
    for pcap in SIPP_PCAPS.glob("*.pcap"):
        shutil.copyfile(pcap, caller.workdir / "pcap" / pcap.name)
    pair.sipps.started.append(caller)
    result = caller.start().wait()
    assert result.successful == 1, result.describe()
    assert supplier.wait().successful == 1


def test_a_recording_plays_from_the_other_nodes_ui_after_the_sync(pair: Pair) -> None:
    relayed_call(pair)
    cdrs: list[dict[str, Any]] = []

    def on_node2_with_its_recording() -> bool:
        # Replicated CDR, synced file: node 2 links the recording only when it holds it.
        cdrs[:] = [c for c in pair.cdrs(2) if c["recording"]]
        return bool(cdrs)

    wait_for(on_node2_with_its_recording, 30, "node 2's CDR linking the synced recording")
    (cdr,) = cdrs
    name = recording_name(cdr["call_id"])
    assert cdr["recording"] == f"/api/v1/recordings/{name}.wav"
    filed = pair.members[0].node.data_dir / "recordings" / "node1" / f"{name}.wav"
    original = filed.read_bytes()
    # From node 2's API and from its UI (the CDR page's player and download), byte for byte.
    assert pair.api(2, cdr["recording"]) == original
    ui = pair.ui(2)
    page = ui.open(f"{pair.base(2)}/cdrs", timeout=5).read().decode()
    assert f'<audio controls preload="none" src="/recordings/{name}.wav">' in page
    with ui.open(f"{pair.base(2)}/recordings/{name}.wav?download=1", timeout=5) as response:
        assert response.headers["Content-Type"] == "audio/wav"
        assert "attachment" in response.headers["Content-Disposition"]
        played = response.read()
    assert played == original
    with wave.open(io.BytesIO(played)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (2, 2, 8000)
        seconds = reader.getnframes() / reader.getframerate()
    call_seconds = int(cdr["duration_ms"]) / 1000
    assert call_seconds > 5  # g711a.pcap lasts about 7 s
    assert abs(seconds - call_seconds) <= 0.1 * call_seconds, (seconds, call_seconds)
    # The pcap came along too, and node 2 keeps it in node 1's folder (the sync's layout).
    copy = pair.members[1].node.data_dir / "recordings" / "node1" / f"{name}.pcap"
    assert copy.read_bytes() == filed.with_suffix(".pcap").read_bytes()
