"""Real switch nodes (``smartswitch run``) holding the shared IP in a :class:`~netlab.NetLab`,
with sipp as the customer and the supplier, and a capture at the supplier.

- :class:`SwitchNode`: one node in a lab host: its TOML config (its own SQLite database,
  provisioned with the same document as every other node, the "bind address" setting = the
  shared IP), ``smartswitch run`` started with ``lab.popen`` (its own process group; the node
  starts keepalived in another), :meth:`SwitchNode.crash` kills both groups as a dying host
  would, :meth:`SwitchNode.status` is ``smartswitch cluster status --format json`` run in the
  host (the node's own account: its keepalived's state and since when).
- :class:`LabSipp`: a sipp run inside a lab host (the e2e helpers' command line and result).
- :class:`SupplierCapture`: dumpcap on the supplier's interface; who sent each SIP request.

Plain library code shared by ``tests/ha/test_vip_nodes.py`` and ``bench/vip.py``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e.node import dump_toml, dump_yaml, node_command, run_cli
from e2e.sipp import Sipp, SippOptions, SippResult
from netlab import NetLab, pid_alive, wait_for

from .harness import PRIORITIES, SHARED_IP, VRID, child_env

SIP_PORT = 5060
HTTP_PORT = 8080
REGISTRAR_PORT = 5070
CLUSTER_SECRET = "lab-cluster-secret-0123456789abcdef0123456789"
DIALLED = "15551234567"
DUMPCAP = shutil.which("dumpcap")
TSHARK = shutil.which("tshark")


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` with the tests' import path, for :meth:`NetLab.run` (which
    passes the test's own environment on)."""
    return ["env", f"PYTHONPATH={child_env()['PYTHONPATH']}", sys.executable, "-m", module, *args]


def provisioning(lab: NetLab) -> str:
    """The one document every node is provisioned with: a customer on the customer host, a
    supplier on the supplier host that wants one registration (a single account: with the
    shared IP as the bind address only the holder registers it)."""
    customer = lab.host("customer").address
    supplier = lab.host("supplier").address
    return dump_yaml(
        {
            "accounts": [
                {"name": "acme", "currency": "USD", "balance": "1000.00"},
                {"name": "carrier", "currency": "USD", "balance": "0.00"},
            ],
            "tariffs": [
                {"name": "retail", "rates": [{"prefix": "1", "price_per_minute": "0.0100"}]},
                {"name": "buy", "rates": [{"prefix": "1", "price_per_minute": "0.0040"}]},
            ],
            "peers": [
                {
                    "name": "acme",
                    "role": "customer",
                    "account": "acme",
                    "tariff": "retail",
                    "acl": [f"{customer}/32"],
                },
                {
                    "name": "carrier",
                    "role": "supplier",
                    "account": "carrier",
                    "tariff": "buy",
                    "address": f"{supplier}:{SIP_PORT}",
                    "register": {
                        "registrar": f"{supplier}:{REGISTRAR_PORT}",
                        "username": "trunk",
                        "password": "trunk-secret-1",
                        "expires": 600,
                    },
                },
            ],
            "routes": [{"prefix": "", "suppliers": ["carrier"]}],
        }
    )


@dataclass
class SwitchNode:
    lab: NetLab
    name: str
    workdir: Path
    peers: tuple[str, ...]
    proc: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    #: More node settings, over :meth:`config`'s (the dispatcher's, for load balancing).
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.lab.host(self.name).address

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "node.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "node.log"

    def config(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "log_level": "info",
            "node_id": self.name,
            "node_name": self.name,
            "sip_listen": f"{self.address}:{SIP_PORT}",
            "http_listen": f"{self.address}:{HTTP_PORT}",
            "dedicated_ip": self.address,
            "shared_ip": SHARED_IP,
            "cluster_secret": CLUSTER_SECRET,
            "refresh_interval": 0.2,
            # The customer's sipp and its OPTIONS probe share one source address.
            "source_rate_limit": 1000.0,
            "source_rate_burst": 2000.0,
            "vip_interface": self.lab.host(self.name).interface,
            "vip_router_id": VRID,
            "vip_priority": PRIORITIES[self.name],
            "vip_advert_interval": 0.1,
            "vip_peers": list(self.peers),
        } | self.settings

    def provision(self, document: str, bind_address: str = SHARED_IP) -> None:
        """The same document on every node, and the global "bind address" setting (the
        settings page's; written here as the page would, in the settings table)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.workdir / "provision.yaml"
        path.write_text(document)
        run_cli(self.data_dir, "provision", str(path))
        db = sqlite3.connect(self.data_dir / "smartswitch.db")
        try:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO settings (name, value) VALUES ('bind_address', ?)",
                    (bind_address,),
                )
                db.execute("UPDATE config_version SET version = version + 1")
        finally:
            db.close()

    def know_members(self, members: list[SwitchNode]) -> None:
        """The ``nodes`` table as replication would carry it to every node (each node here
        has its own SQLite database, where no node registers): the members' addresses, from
        which the bus sends heartbeats and the dispatcher learns whom to choose."""
        db = sqlite3.connect(self.data_dir / "smartswitch.db")
        registered = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
        try:
            with db:
                for node in members:
                    db.execute(
                        "INSERT INTO nodes (name, dedicated_ip, sip_address, http_address,"
                        " shared_ip, db_scheme, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            node.name,
                            node.address,
                            f"{node.address}:{SIP_PORT}",
                            f"{node.address}:{HTTP_PORT}",
                            SHARED_IP,
                            "single",
                            registered,
                        ),
                    )
        finally:
            db.close()

    def metrics(self) -> dict[str, float]:
        """The node's ``/metrics`` (read inside its host), keyed ``name{labels}``."""
        done = self.lab.run(
            self.name, python_module("ha.metricspoll", self.metrics_url, "0", "0"), timeout=20.0
        )
        return dict(json.loads(done.stdout.splitlines()[-1])["m"])

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}/metrics"

    def start(self) -> None:
        self.config_path.write_text(dump_toml(self.config()))
        self.data_dir.chmod(0o700)
        with open(self.log_path, "a") as log:
            self.proc = self.lab.popen(
                self.name,
                [*node_command(), "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )
        self.started_at = time.monotonic()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def keepalived_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "keepalived.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def status(self) -> dict[str, Any]:
        """``smartswitch cluster status --format json`` in the node's host: its own row (its
        own account: its keepalived's state and since when)."""
        done = self.lab.run(
            self.name,
            [
                *node_command(),
                "cluster",
                "status",
                "--format",
                "json",
                "--config",
                str(self.config_path),
            ],
            check=False,
            timeout=20.0,
        )
        rows: list[dict[str, Any]] = json.loads(done.stdout or "[]")
        # Every node's row when the nodes know each other (sorted by name): its own.
        own = [r for r in rows if r.get("node") == self.name]
        return own[0] if own else {"reachable": False}

    def status_table(self) -> str:
        done = self.lab.run(
            self.name,
            [*node_command(), "cluster", "status", "--config", str(self.config_path)],
            check=False,
            timeout=20.0,
        )
        return done.stdout

    def vip_state(self) -> str:
        status = self.status()
        vip = status.get("vip") or {}
        return str(vip.get("state", "UNREACHABLE"))

    def crash(self) -> float:
        """SIGKILL keepalived's process group, then the node's: nothing cleans up, as when
        the host dies (keepalived first: the node's death would make it leave cleanly).
        Returns the wall-clock time of the first kill."""
        assert self.proc is not None
        pid = self.keepalived_pid()
        assert pid is not None, "no keepalived to kill"
        killed = time.time()
        self.lab.kill(pid)
        self.lab.kill(self.proc)
        self.proc.wait(timeout=10.0)
        wait_for(lambda: not pid_alive(pid), 5.0, what="keepalived gone")
        return killed

    def stop(self, timeout: float = 15.0) -> None:
        if not self.running:
            return
        assert self.proc is not None
        self.lab.kill(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.lab.kill(self.proc)
            self.proc.wait(timeout=5.0)

    def stall(self) -> None:
        """The SIP loop stuck: the whole node process stopped (SIGSTOP)."""
        assert self.proc is not None
        self.lab.kill(self.proc, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.lab.kill(self.proc, signal.SIGCONT)

    def cdrs(self) -> list[dict[str, Any]]:
        done = run_cli(self.data_dir, "cdr", "export", "--format", "json")
        data: list[dict[str, Any]] = json.loads(done.stdout)
        return data

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return f"\n--- {self.name} log ---\n" + self.log_path.read_text()[-chars:]
        except OSError:
            return ""


def epoch(text: str | None) -> float | None:
    """A CDR time (ISO, ``Z``) as epoch seconds."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class LabSipp(Sipp):
    """sipp inside a lab host (``ip netns exec`` execs sipp: the PID is sipp's)."""

    def __init__(
        self, lab: NetLab, host: str, name: str, options: SippOptions, workdir: Path
    ) -> None:
        super().__init__(name, options, workdir)
        self.lab = lab
        self.host = host
        self.command = lab.exec_argv(host, self.command)

    def wait_until_listening(self, timeout: float = 5.0) -> None:
        ip, port = self.options.local_ip, self.options.local_port

        def bound() -> bool:
            if not self.running:
                raise RuntimeError(f"sipp {self.name} exited:\n{self.output_tail()}")
            done = self.lab.run(self.host, ["ss", "-Hlun", f"src {ip}:{port}"], check=False)
            return bool(done.stdout.strip())

        wait_for(bound, timeout, what=f"sipp {self.name} bound")


@dataclass
class SippSet:
    lab: NetLab
    workdir: Path
    running: list[LabSipp] = field(default_factory=list)

    def start(self, host: str, name: str, options: SippOptions) -> LabSipp:
        sipp = LabSipp(self.lab, host, name, options, self.workdir / name)
        sipp.start()
        self.running.append(sipp)
        return sipp

    def stop_all(self) -> None:
        for sipp in self.running:
            with contextlib.suppress(Exception):
                sipp.stop()


def supplier_side(sipps: SippSet, lab: NetLab) -> tuple[LabSipp, LabSipp]:
    """The supplier's UAS (answers every call, holds it until the BYE) and its registrar."""
    address = lab.host("supplier").address
    uas = sipps.start(
        "supplier",
        "supplier-uas",
        SippOptions(
            scenario="uas",
            local_ip=address,
            local_port=SIP_PORT,
            timeout_s=1800,
            trace_messages=False,
        ),
    )
    registrar = sipps.start(
        "supplier",
        "supplier-registrar",
        SippOptions(
            scenario="reg_accept",
            local_ip=address,
            local_port=REGISTRAR_PORT,
            timeout_s=1800,
            trace_messages=False,
        ),
    )
    uas.wait_until_listening()
    registrar.wait_until_listening()
    return uas, registrar


def customer_load(
    sipps: SippSet,
    lab: NetLab,
    name: str,
    *,
    rate: float,
    calls: int,
    hold_ms: int,
    scenario: str = "uac",
) -> LabSipp:
    """The customer's steady load on the shared IP (``scenario``: ``uac_redirect`` follows
    the dispatcher's 302)."""
    return sipps.start(
        "customer",
        name,
        SippOptions(
            scenario=scenario,
            local_ip=lab.host("customer").address,
            local_port=5061,
            remote=f"{SHARED_IP}:{SIP_PORT}",
            service=DIALLED,
            calls=calls,
            rate=rate,
            duration_ms=hold_ms,
            timeout_s=calls / rate + 60,
            recv_timeout_ms=3000,
            trace_messages=False,
        ),
    )


class SupplierCapture:
    """dumpcap on the supplier's interface: every SIP request that reached the supplier,
    with its source address and its time (epoch seconds)."""

    def __init__(self, lab: NetLab, path: Path) -> None:
        assert DUMPCAP is not None
        self.lab = lab
        self.path = path
        self.errors = path.with_suffix(".stderr")
        with open(self.errors, "w") as errors:
            self.proc = lab.popen(
                "supplier",
                [DUMPCAP, "-i", lab.host("supplier").interface, "-f", "udp", "-w", str(path)],
                stderr=errors,
            )
        wait_for(
            lambda: "Capturing on" in self.errors.read_text(errors="replace"),
            10.0,
            what="dumpcap capturing",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.lab.kill(self.proc, signal.SIGTERM)
            self.proc.wait(timeout=10.0)

    def requests(self) -> list[dict[str, str]]:
        """Stop, then the SIP requests seen: time, source, method, Via sent-by host."""
        self.stop()
        assert TSHARK is not None
        names = ("frame.time_epoch", "ip.src", "sip.Method", "sip.Via.sent-by.address")
        command = [TSHARK, "-n", "-r", str(self.path), "-Y", "sip.Request-Line"]
        for port in (SIP_PORT, REGISTRAR_PORT):
            command += ["-d", f"udp.port=={port},sip"]
        command += ["-T", "fields", *[arg for n in names for arg in ("-e", n)]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return [
            dict(zip(names, line.split("\t"), strict=False)) for line in done.stdout.splitlines()
        ]


@dataclass
class NodeCluster:
    lab: NetLab
    nodes: dict[str, SwitchNode]
    sipps: SippSet
    supplier: LabSipp
    registrar: LabSipp
    workdir: Path

    def holders(self) -> list[str]:
        return [n for n in self.nodes if SHARED_IP in self.lab.addresses_of(n)]

    def wait_one_holder(self, timeout: float) -> str:
        def one() -> str | None:
            holders = self.holders()
            return holders[0] if len(holders) == 1 else None

        return wait_for(one, timeout, what="exactly one holder of the shared IP")

    def ready(self, timeout: float = 30.0) -> str:
        """Every node running, no cut, one holder, every other node BACKUP (each node's own
        word, from ``smartswitch cluster status``). Returns the holder."""
        self.lab.heal_all()
        for node in self.nodes.values():
            if node.proc is not None and node.running:
                node.resume()
            if not node.running:
                node.start()
        holder = self.wait_one_holder(timeout)

        def settled() -> bool:
            return all(
                n.vip_state() == ("MASTER" if n.name == holder else "BACKUP")
                for n in self.nodes.values()
            )

        wait_for(settled, timeout, what="every node settled", interval=0.2)
        return holder

    def stop(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()
        self.sipps.stop_all()


def start_cluster(
    lab: NetLab,
    workdir: Path,
    names: list[str],
    *,
    bind_address: str = SHARED_IP,
    settings: Mapping[str, Any] | None = None,
    members: bool = False,
) -> NodeCluster:
    """Provision and start the nodes, the supplier's sipps; wait for one holder.

    ``bind_address``: the global setting (the shared IP: only the holder originates; empty:
    each node from its own address). ``settings``: more node settings for every node.
    ``members``: every node knows the others (:meth:`SwitchNode.know_members`), so their
    heartbeats flow on the bus (what the dispatcher chooses from)."""
    sipps = SippSet(lab, workdir / "sipp")
    supplier, registrar = supplier_side(sipps, lab)
    document = provisioning(lab)
    nodes: dict[str, SwitchNode] = {}
    for name in names:
        peers = tuple(lab.host(n).address for n in names if n != name)
        node = SwitchNode(lab, name, workdir / name, peers, settings=dict(settings or {}))
        node.provision(document, bind_address)
        nodes[name] = node
    if members:
        for node in nodes.values():
            node.know_members(list(nodes.values()))
    cluster = NodeCluster(lab, nodes, sipps, supplier, registrar, workdir)
    try:
        for node in nodes.values():
            node.start()
        cluster.ready(60.0)
    except BaseException:
        tails = "".join(n.log_tail() for n in nodes.values())
        cluster.stop()
        raise RuntimeError(f"the cluster did not come up{tails}") from None
    return cluster


def sipp_result(sipp: LabSipp, timeout: float) -> SippResult:
    return sipp.wait(timeout)


def answered_after(node: SwitchNode, since: float) -> list[float]:
    """The answer times (epoch) of ``node``'s calls answered at or after ``since``."""
    times = [epoch(c.get("answer_time")) for c in node.cdrs()]
    return sorted(t for t in times if t is not None and t >= since)


def by_source(requests: list[dict[str, str]], method: str) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for r in requests:
        if r["sip.Method"] == method:
            counts[r["ip.src"]] = counts.get(r["ip.src"], 0) + 1
    return counts
