"""The node's etcd member: one per node, on its dedicated IP, started and stopped by PID.

``etcd`` (Debian ``etcd-server``, 3.4) with the settings measured here (ENVIRONMENT.md): a
heartbeat of 100 ms and an election timeout of 1 s, so a killed leader member is replaced in
about 1.3 s; with a pre-vote, so that a member returning from a partition does not depose
the majority's leader. The member's data directory holds its write-ahead log (about 100 MB preallocated)
and, once it exists, makes the next start rejoin (``--initial-cluster-state existing``)
instead of founding a new cluster.

Three members or more: with two, either one's failure stops etcd; with one, it decides alone.
Automatic promotion refuses to run on fewer than three
(:class:`smartswitch.cluster.consensus.FailoverSettings`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

__all__ = ["EtcdMember", "EtcdMemberError"]


class EtcdMemberError(RuntimeError):
    pass


class EtcdMember:
    """One etcd member: ``name`` at ``ip`` among ``cluster`` (every member's name -> ip)."""

    def __init__(
        self,
        name: str,
        ip: str,
        data_dir: Path,
        cluster: Mapping[str, str],
        *,
        client_port: int = 2379,
        peer_port: int = 2380,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        cluster_token: str = "smartswitch",
        program: str = "etcd",
        log_file: Path | None = None,
    ) -> None:
        if name not in cluster:
            raise ValueError(f"{name} is not one of the cluster's members {sorted(cluster)}")
        self.name = name
        self.ip = ip
        self.data_dir = Path(data_dir)
        self.cluster = dict(cluster)
        self.client_port = client_port
        self.peer_port = peer_port
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.cluster_token = cluster_token
        self.program = program
        self.log_file = log_file or self.data_dir.with_name(self.data_dir.name + ".log")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        existing = (self.data_dir / "member").is_dir()
        initial = ",".join(
            f"{name}=http://{ip}:{self.peer_port}" for name, ip in sorted(self.cluster.items())
        )
        return [
            self.program,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", "existing" if existing else "new",
            "--initial-cluster-token", self.cluster_token,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            # A member cut off from the others keeps calling elections it cannot win, raising
            # its term; without a pre-vote, its return forces the majority's leader to step
            # down and the cluster is without a leader for an election: long enough for the
            # primary's node to miss renewals and fence itself (seen in
            # tests/ha/test_partition_promotion.py). etcd 3.5 turns it on by default.
            "--pre-vote",
        ]  # fmt: skip

    def start(self) -> None:
        """Start the member and return at once (:meth:`wait_healthy` waits for it)."""
        if self.running:
            raise EtcdMemberError(f"etcd member {self.name} is already running (pid {self.pid})")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes]
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def healthy(self, timeout: float = 1.0) -> bool:
        """The member answers and the cluster has a leader (``/health``)."""
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=timeout) as r:
                return b'"true"' in r.read()
        except (OSError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Wait until :meth:`healthy`; returns the seconds it took."""
        started = time.monotonic()
        while not self.healthy():
            if not self.running:
                raise EtcdMemberError(f"etcd member {self.name} exited\n{self.log_tail()}")
            if time.monotonic() - started > timeout:
                raise EtcdMemberError(
                    f"etcd member {self.name} not healthy within {timeout:.0f} s\n"
                    + self.log_tail()
                )
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the member's PID (it may take a few seconds), SIGKILL after timeout."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL to the member's PID, as a crash."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(30)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
