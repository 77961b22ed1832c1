"""Peers attached to nodes, and signalling from each node's dedicated IP: three real nodes on
127.0.0.11-13, real sipp, and a capture on the loopback interface that shows where every
message came from.

Each node has its own embedded SQLite database, provisioned with the same file: what is
tested here (a customer served only by its nodes, a supplier used only from its nodes, one
registration per node from the node's own address) is decided by each node alone from its
configuration, which replication would only have copied (tests/cluster/test_replication.py
covers that, at the cost of three mariadbd). Nodes 1 and 2 listen on a wildcard address, so
their B legs and REGISTERs leave from their dedicated IP only because the node binds it (the
kernel would pick 127.0.0.1); node 3 listens on its dedicated IP, which changes nothing.

Addresses: the customers' sipp on 127.0.0.21 (acme, attached to node 1) and 127.0.0.22
(globex, on every node); carrier-12 (attached to nodes 1 and 2) on 127.0.0.31; carrier-r (on
all three nodes, one account per node) and its registrar on 127.0.0.32.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.node import Node, NodeSpec, dump_yaml
from e2e.sipp import Sipp, SippOptions, SippResult, free_port
from smartswitch.web.security import local_token

from .harness import NODE_IPS, Sipps

pytestmark = [pytest.mark.e2e]

ACME_IP, GLOBEX_IP = "127.0.0.21", "127.0.0.22"
CARRIER_12_IP, CARRIER_R_IP = "127.0.0.31", "127.0.0.32"
NAMES = ("node1", "node2", "node3")
DIALLED = "15551234567"
NOT_SERVED = 'SIP;cause=403;text="customer not served on this node"'
DUMPCAP = shutil.which("dumpcap")
TSHARK = shutil.which("tshark")


def provisioning(carrier_12: int, carrier_r: int, registrar: int) -> str:
    customer = {"role": "customer", "tariff": "retail"}
    return dump_yaml(
        {
            "accounts": [
                {"name": name, "currency": "USD", "balance": "100.00"}
                for name in ("acme", "globex", "carrier-12", "carrier-r")
            ],
            "tariffs": [
                {"name": "retail", "rates": [{"prefix": "1", "price_per_minute": "0.0100"}]},
                {"name": "buy", "rates": [{"prefix": "1", "price_per_minute": "0.0040"}]},
            ],
            "peers": [
                {
                    "name": "acme",
                    **customer,
                    "account": "acme",
                    "acl": [f"{ACME_IP}/32"],
                    "nodes": ["node1"],
                },
                {"name": "globex", **customer, "account": "globex", "acl": [f"{GLOBEX_IP}/32"]},
                {
                    "name": "carrier-12",
                    "role": "supplier",
                    "account": "carrier-12",
                    "tariff": "buy",
                    "address": f"{CARRIER_12_IP}:{carrier_12}",
                    "nodes": ["node1", "node2"],
                },
                {
                    "name": "carrier-r",
                    "role": "supplier",
                    "account": "carrier-r",
                    "tariff": "buy",
                    "address": f"{CARRIER_R_IP}:{carrier_r}",
                    "nodes": list(NAMES),  # each with its own account: no default one
                    "register": {
                        "registrar": f"{CARRIER_R_IP}:{registrar}",
                        "expires": 600,
                        "nodes": [
                            {"node": name, "username": f"trunk-{name}", "password": f"pw-{name}"}
                            for name in NAMES
                        ],
                    },
                },
            ],
            "routes": [{"prefix": "", "suppliers": ["carrier-12", "carrier-r"]}],
        }
    )


class Capture:
    """dumpcap on the loopback interface, for the UDP sent to some ports; read with tshark."""

    def __init__(self, path: Path, ports: list[int]) -> None:
        self.path = path
        self.ports = ports
        self.proc: subprocess.Popen[bytes] | None = None
        self.errors = path.with_suffix(".stderr")

    def start(self) -> Capture:
        assert DUMPCAP is not None
        bpf = "udp and (" + " or ".join(f"dst port {p}" for p in self.ports) + ")"
        with open(self.errors, "wb") as errors:
            self.proc = subprocess.Popen(
                [DUMPCAP, "-i", "lo", "-f", bpf, "-w", str(self.path), "-P"],
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while "Capturing on" not in self.errors.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dumpcap did not start: {self.errors.read_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> list[dict[str, str]]:
        """Stop (by PID) and return the SIP requests seen: source, port, method, From user."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        assert TSHARK is not None
        command = [TSHARK, "-n", "-r", str(self.path), "-Y", "sip.Request-Line"]
        for port in self.ports:
            command += ["-d", f"udp.port=={port},sip"]
        names = ("ip.src", "udp.dstport", "sip.Method", "sip.from.user", "sip.contact.host")
        command += ["-T", "fields", *[arg for n in names for arg in ("-e", n)]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return [
            dict(zip(names, line.split("\t"), strict=False)) for line in done.stdout.splitlines()
        ]


@dataclass
class Cluster:
    nodes: list[Node]
    sipps: Sipps
    carrier_12: Sipp
    carrier_r: Sipp
    registrar: Sipp
    capture: Capture
    tmp: Path

    def call(self, name: str, node: int, scenario: str = "uac", ip: str = GLOBEX_IP) -> SippResult:
        """One call from ``ip`` to node ``node`` (1-3), run to its end."""
        target = self.nodes[node - 1]
        proc = self.sipps.start(
            name,
            SippOptions(
                scenario=scenario,
                local_ip=ip,
                local_port=free_port(ip),
                remote=f"{NODE_IPS[node - 1]}:{target.sip_port}",
                service=DIALLED,
                calls=1,
                duration_ms=100,
                timeout_s=30,
            ),
        )
        return proc.wait()

    def outbound(self, node: int) -> list[dict[str, Any]]:
        """The node's registrations with suppliers, as its API reports them."""
        target = self.nodes[node - 1]
        request = urllib.request.Request(
            f"http://{target.http_host}:{target.http_port}/api/v1/registrations/outbound",
            headers={"Authorization": f"Bearer {local_token(target.data_dir)}"},
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            data: dict[str, Any] = json.loads(response.read())
        registrations: list[dict[str, Any]] = data["registrations"]
        return registrations


def _uas(sipps: Sipps, name: str, ip: str, scenario: str = "uas") -> Sipp:
    proc = sipps.start(
        name,
        SippOptions(
            scenario=scenario, local_ip=ip, local_port=free_port(ip), calls=None, timeout_s=600
        ),
    )
    proc.wait_until_listening()
    return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if DUMPCAP is None or TSHARK is None:
        pytest.skip("dumpcap and tshark are needed (apt install tshark)")
    tmp = tmp_path_factory.mktemp("peer-nodes")
    sipps = Sipps(tmp)
    nodes: list[Node] = []
    capture: Capture | None = None
    try:
        carrier_12 = _uas(sipps, "carrier-12", CARRIER_12_IP)
        carrier_r = _uas(sipps, "carrier-r", CARRIER_R_IP)
        registrar = _uas(sipps, "registrar", CARRIER_R_IP, "reg_accept")
        ports = [p.options.local_port for p in (carrier_12, carrier_r, registrar)]
        capture = Capture(tmp / "lo.pcap", ports).start()
        document = provisioning(*ports)
        for number, (name, ip) in enumerate(zip(NAMES, NODE_IPS, strict=True), 1):
            spec = NodeSpec(
                workdir=tmp / name,
                sip_host="0.0.0.0" if number < 3 else ip,
                http_host=ip,
                config={
                    "log_level": "info",
                    "node_id": name,
                    "node_name": name,
                    "dedicated_ip": ip,
                    "refresh_interval": 0.2,
                },
            )
            nodes.append(Node(spec))

        def provision_and_start(node: Node) -> None:
            node.provision(document)
            node.start()

        with ThreadPoolExecutor(len(nodes)) as pool:  # the three at once
            list(pool.map(provision_and_start, nodes))
        yield Cluster(nodes, sipps, carrier_12, carrier_r, registrar, capture, tmp)
    finally:
        for node in nodes:
            node.stop()
        sipps.stop_all()
        if capture is not None and capture.proc is not None and capture.proc.poll() is None:
            os.kill(capture.proc.pid, signal.SIGTERM)
            capture.proc.wait(timeout=10)


def test_a_customer_is_served_only_by_its_nodes(cluster: Cluster) -> None:
    refused = cluster.call("acme-via-node2", 2, "uac_expect_403", ip=ACME_IP)
    assert refused.successful == 1, refused.describe()
    (answer,) = refused.received_responses(403)
    assert answer.header("reason") == NOT_SERVED, answer.text
    served = cluster.call("acme-via-node1", 1, ip=ACME_IP)
    assert served.successful == 1, served.describe() + cluster.nodes[0].log_tail()


def test_a_supplier_is_used_only_from_its_nodes(cluster: Cluster) -> None:
    # carrier-12 comes first in the route, but node 3 is not one of its nodes: node 3's call
    # goes to carrier-r, the route's next supplier; node 1's to carrier-12.
    for node in (3, 1):
        done = cluster.call(f"globex-via-node{node}", node)
        assert done.successful == 1, done.describe() + cluster.nodes[node - 1].log_tail()
    for node, supplier in ((3, "carrier-r"), (1, "carrier-12")):
        cdrs = [c for c in cluster.nodes[node - 1].wait_cdrs(1) if c["customer_peer"] == "globex"]
        assert [c["supplier_peer"] for c in cdrs] == [supplier], cdrs


def test_one_registration_per_node_and_b_legs_from_each_nodes_own_ip(cluster: Cluster) -> None:
    def registered(node: int) -> bool:
        return [r["state"] for r in cluster.outbound(node)] == ["registered"]

    deadline = time.monotonic() + 15
    while not all(registered(n) for n in (1, 2, 3)):
        assert time.monotonic() < deadline, [cluster.outbound(n) for n in (1, 2, 3)]
        time.sleep(0.1)
    assert [cluster.outbound(n)[0]["username"] for n in (1, 2, 3)] == [
        f"trunk-{name}" for name in NAMES
    ]
    for node in (1, 2, 3):
        done = cluster.call(f"globex-b-leg-{node}", node)
        assert done.successful == 1, done.describe() + cluster.nodes[node - 1].log_tail()

    seen = cluster.capture.stop()
    registers = sorted(
        (r["ip.src"], r["sip.from.user"], r["sip.contact.host"])
        for r in seen
        if r["sip.Method"] == "REGISTER"
    )
    # One REGISTER per node, from the node's own address, as the node's own account (no
    # refresh within the test: 600 s granted).
    assert registers == [
        (ip, f"trunk-{name}", ip) for name, ip in zip(NAMES, NODE_IPS, strict=True)
    ]
    invites: dict[str, set[str]] = {}
    for row in seen:
        if row["sip.Method"] == "INVITE":
            invites.setdefault(row["udp.dstport"], set()).add(row["ip.src"])
    assert invites == {
        str(cluster.carrier_12.options.local_port): {NODE_IPS[0], NODE_IPS[1]},
        str(cluster.carrier_r.options.local_port): {NODE_IPS[2]},
    }
    # The supplier's registrar saw the same: three REGISTERs, each node's account.
    result = cluster.registrar.stop()
    users = sorted(
        (m.header("from") or "").split("sip:", 1)[1].split("@", 1)[0]
        for m in result.received_requests("REGISTER")
    )
    assert users == [f"trunk-{name}" for name in NAMES], result.describe()
