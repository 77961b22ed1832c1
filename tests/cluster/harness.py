"""What the cluster tests (and bench/cluster.py) share: addresses, the configuration they
provision, a node of the cluster as a test sees it, and sipp runs started by PID."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from e2e.node import Node, NodeSpec, dump_toml, dump_yaml, node_command, start_all
from e2e.sipp import Sipp, SippOptions, free_port
from smartswitch.cluster.signing import Signer, derive_key

from .mariadb import MariaDBInstance, wait_until
from .mariadb import free_port as free_port_tcp

NODE_IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
CUSTOMER_IP = "127.0.0.21"
SUPPLIER_IP = "127.0.0.31"
SECRET = "test-cluster-secret-0123456789"
DIALLED = "15551234567"


def provisioning(supplier_port: int, extra_rates: list[dict[str, str]] | None = None) -> str:
    return dump_yaml(
        {
            "accounts": [
                {"name": "acme", "currency": "USD", "balance": "1000.00"},
                {"name": "carrier", "currency": "USD", "balance": "0"},
            ],
            "tariffs": [
                {
                    "name": "retail",
                    "rates": [
                        {"prefix": "1", "price_per_minute": "0.0100", "increment": "1/1"},
                        *(extra_rates or []),
                    ],
                },
                {
                    "name": "buy",
                    "rates": [
                        {"prefix": "1", "price_per_minute": "0.0040", "increment": "1/1"},
                        {"prefix": "44", "price_per_minute": "0.0050", "increment": "1/1"},
                    ],
                },
            ],
            "peers": [
                {
                    "name": "acme-trunk",
                    "role": "customer",
                    "account": "acme",
                    "tariff": "retail",
                    "acl": [f"{CUSTOMER_IP}/32"],
                },
                {
                    "name": "carrier",
                    "role": "supplier",
                    "account": "carrier",
                    "tariff": "buy",
                    "address": f"{SUPPLIER_IP}:{supplier_port}",
                },
            ],
            "routes": [{"prefix": "", "strategy": "least_cost", "suppliers": ["carrier"]}],
        }
    )


def bus_get(address: str, node: str, path: str, secret: str = SECRET, timeout: float = 2.0) -> Any:
    """A signed ``GET`` on the cluster bus to ``node`` at ``address`` (``host:port``), signed
    as that node itself (as ``smartswitch cluster status`` run beside it does); the answer's
    signature checked. Synchronous, for tests and benchmarks outside an event loop."""
    signer = Signer(node, derive_key(secret))
    headers = signer.sign("GET", path, b"", node, time.time())
    request = urllib.request.Request(f"http://{address}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
        signer.check_response(headers, response.status, dict(response.headers), body)
    return json.loads(body)


@dataclass
class ClusterNode:
    node: Node
    db: MariaDBInstance

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*node_command(), *args, "--config", str(self.node.config_path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {done.returncode}\n{done.stderr}")
        return done

    @property
    def name(self) -> str:
        return str(self.node.spec.config["node_name"])

    @property
    def bus_address(self) -> str:
        return f"{self.node.http_host}:{self.node.http_port}"

    def status(self) -> dict[str, Any]:
        """The node's own account of itself (``GET /cluster/status`` on the bus)."""
        data: dict[str, Any] = bus_get(self.bus_address, self.name, "/cluster/status")
        return data

    def members(self) -> dict[str, dict[str, Any]]:
        """The node's membership table by node name (``GET /cluster/members``)."""
        data = bus_get(self.bus_address, self.name, "/cluster/members")
        return {str(m["node"]): m for m in data["members"]}

    def add_viewer(self, password: str, name: str = "viewer") -> None:
        """A read-only web user (made on the primary: replicated to the others)."""
        subprocess.run(
            [
                *node_command(),
                *("user", "add", name, "--role", "read-only", "--password-stdin"),
                *("--config", str(self.node.config_path)),
            ],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def balances(self) -> dict[str, Decimal]:
        rows = self.db.query("SELECT name, balance FROM accounts", database="smartswitch")
        return {str(name): Decimal(balance) for name, balance in rows}


class Sipps:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Sipp] = []

    def start(self, name: str, options: SippOptions) -> Sipp:
        proc = Sipp(name, options, self.tmp_path / f"sipp-{name}").start()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.running:
                proc.stop()


def config_above(member: ClusterNode, version: int) -> bool:
    return int(member.status()["config_version"]) > version


def delivered(member: ClusterNode, count: int) -> bool:
    """At least ``count`` of the node's CDRs reached the money database."""
    return int(member.status()["delivered"]) >= count


def has_binding(member: ClusterNode, aor: str) -> bool:
    """The node's location service holds a binding of ``aor`` (its own or pushed to it)."""
    return any(b["aor"] == aor for b in member.node.registrations()["bindings"])


def outbox_empty(member: ClusterNode) -> bool:
    return int(member.status()["outbox_depth"]) == 0


def balances_are(member: ClusterNode, expected: dict[str, Decimal]) -> bool:
    return member.balances() == expected


def caller(sipps: Sipps, name: str, node: Node, calls: int, rate: float, **kw: Any) -> Sipp:
    return sipps.start(
        name,
        SippOptions(
            scenario="uac",
            local_ip=kw.pop("ip", CUSTOMER_IP),
            local_port=free_port(CUSTOMER_IP),
            remote=node.sip_address,
            service=kw.pop("service", DIALLED),
            calls=calls,
            rate=rate,
            duration_ms=kw.pop("duration_ms", 1000),
            timeout_s=kw.pop("timeout_s", 120),
            recv_timeout_ms=10000,
            **kw,
        ),
    )


def start_supplier(sipps: Sipps, timeout_s: float = 300, trace_messages: bool = True) -> Sipp:
    """The supplier: a sipp UAS on SUPPLIER_IP answering every call until stopped, or until
    ``timeout_s`` (sipp's global timeout: a run longer than that needs more)."""
    supplier = sipps.start(
        "supplier",
        SippOptions(
            scenario="uas",
            local_ip=SUPPLIER_IP,
            local_port=free_port(SUPPLIER_IP),
            calls=None,
            timeout_s=timeout_s,
            trace_messages=trace_messages,
        ),
    )
    supplier.wait_until_listening()
    return supplier


def cluster_member(
    workdir: Path, ip: str, name: str, db: MariaDBInstance, **config: Any
) -> ClusterNode:
    """A node on ``ip`` with its own database ``db``, its config file written (not started):
    the cluster commands read it before the node runs."""
    spec = NodeSpec(workdir=workdir, sip_host=ip, http_host=ip)
    spec.config = {
        "log_level": "info",
        "node_id": name,
        "node_name": name,
        "dedicated_ip": ip,
        "database_url": db.url,
        "cluster_secret": SECRET,
        "digest_algorithms": ["MD5"],  # what sipp's [authentication] computes
        **config,
    }
    node = Node(spec)
    # The node's commands find it (its control token, its HTTP side) through the config too.
    spec.config["data_dir"] = node.data_dir
    spec.config["http_listen"] = f"{node.http_host}:{node.http_port}"
    node.data_dir.mkdir(parents=True, exist_ok=True)
    node.config_path.write_text(dump_toml(spec.config))
    return ClusterNode(node, db)


def outbox_settled(member: ClusterNode) -> bool:
    """Nothing left in the node's outbox: delivered, and seen in its own database."""
    status = member.status()
    return int(status["outbox_depth"]) == 0 and int(status["unconfirmed"]) == 0


def cdr_call_ids(db: MariaDBInstance) -> list[str]:
    return [str(r[0]) for r in db.query("SELECT call_id FROM cdrs", database="smartswitch")]


@dataclass
class ReplicatedCluster:
    """Three nodes, each with its own mariadbd (the first the primary, the others replicas
    made by ``cluster add-replica``), and a sipp supplier; see :func:`replicated_cluster`."""

    members: list[ClusterNode]
    supplier: Sipp
    workdir: Path
    changes: int = 0

    def member(self, name: str) -> ClusterNode:
        return next(m for m in self.members if m.node.spec.config["node_name"] == name)

    def writable(self) -> list[ClusterNode]:
        """The nodes whose status says their database takes configuration."""
        out = []
        for member in self.members:
            try:
                if member.status()["read_only"] is False:
                    out.append(member)
            except OSError:
                continue
        return out

    def change_config(self, on: ClusterNode) -> subprocess.CompletedProcess[str]:
        """``provision`` on ``on``: a selling rate for prefix 44, a new price each time."""
        self.changes += 1
        document = self.workdir / f"change-{self.changes}.yaml"
        document.write_text(
            provisioning(
                self.supplier.options.local_port,
                [
                    {
                        "prefix": "44",
                        "price_per_minute": f"0.02{self.changes:02d}",
                        "increment": "1/1",
                    }
                ],
            )
        )
        return on.cli("provision", str(document), check=False)


def provision_when_leader(member: ClusterNode, document: Path, timeout: float = 60.0) -> None:
    """``provision`` through ``member``'s node once it holds the leader lease (it takes it
    within seconds of its start)."""
    deadline = time.monotonic() + timeout
    while True:
        done = member.cli("provision", str(document), check=False)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"provision through {member.name}: {done.stderr}")
        time.sleep(1.0)


@contextlib.contextmanager
def replicated_cluster(
    workdir: Path,
    db_hosts: Sequence[str],
    document: Callable[[int], str] = provisioning,
    **config: Any,
) -> Iterator[ReplicatedCluster]:
    """Start the cluster (a node per database, on NODE_IPS in order; databases on
    ``db_hosts``; ``config`` added to every node's; ``document(supplier_port)`` provisioned on
    the primary); stop everything by PID at the end, also on failure. A node's etcd member
    left running (its node killed) is killed by the PID the node wrote."""
    sipps = Sipps(workdir)
    dbs = [
        MariaDBInstance(workdir, f"db{i + 1}", host, server_id=i + 1)
        for i, host in enumerate(db_hosts)
    ]
    members: list[ClusterNode] = []
    try:
        supplier = start_supplier(sipps)
        for db in dbs:
            db.initialize()
            db.start()
        members = [
            cluster_member(
                workdir / f"node{i + 1}",
                ip,
                f"node{i + 1}",
                db,
                db_scheme="replication",
                primary_database_url=dbs[0].url,
                **config,
            )
            for i, (ip, db) in enumerate(zip(NODE_IPS[: len(dbs)], dbs, strict=True))
        ]
        dbs[0].create_database()
        members[0].cli("cluster", "init-primary")
        written = workdir / "provision.yaml"
        written.write_text(document(supplier.options.local_port))
        # With etcd, configuration is taken only through a running node that holds the
        # primary lease (the write fence): provisioned once the nodes run.
        fenced = bool(config.get("etcd_members"))
        if not fenced:
            members[0].cli("provision", str(written))
        for member in members[1:]:
            member.cli("cluster", "add-replica")
        if not fenced:
            start_all(member.node for member in members)
        else:
            # One after the other: the first node takes the primary lease, which
            # provision_when_leader waits for on members[0].
            for member in members:
                member.node.start()
            # The version before, not after: read after, the primary's own node may not have
            # reloaded yet and would name the old one, which every node already has.
            before = int(members[0].status()["config_version"])
            provision_when_leader(members[0], written)
            # Provisioned on running nodes: every node routes with it before the test's first
            # call (a replica a reload behind refuses the customer it does not know yet).
            for member in members:
                wait_until(
                    functools.partial(config_above, member, before),
                    30,
                    f"{member.name} routes with the provisioned configuration",
                    interval=0.2,
                )
        yield ReplicatedCluster(members, supplier, workdir)
    finally:
        for member in members:
            if member.node.running:
                member.node.stop()
            with contextlib.suppress(OSError, ValueError):
                pid = int((member.node.data_dir / "etcd.pid").read_text())
                os.kill(pid, signal.SIGKILL)
        sipps.stop_all()
        for db in dbs:
            with contextlib.suppress(Exception):
                db.stop()


def free_port_everywhere(exclude: list[int]) -> int:
    """A TCP port free on every node address (etcd's ports are the same on every member)."""
    while True:
        port = free_port_tcp(NODE_IPS[0], exclude=exclude)
        try:
            for ip in NODE_IPS:
                with socket.socket() as s:
                    s.bind((ip, port))
            return port
        except OSError:
            exclude.append(port)


def etcd_settings(**overrides: Any) -> dict[str, Any]:
    """Node config for an etcd member per node on its dedicated IP, automatic promotion."""
    taken: list[int] = []
    client = free_port_everywhere(taken)
    taken.append(client)
    peer = free_port_everywhere(taken)
    return {
        "etcd_members": [f"node{j + 1}={ip}" for j, ip in enumerate(NODE_IPS)],
        "etcd_client_port": client,
        "etcd_peer_port": peer,
        "failover": "automatic",
        **overrides,
    }
