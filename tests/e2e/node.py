"""Start a smartswitch node as a subprocess, the way an operator would.

Plain library code (no pytest), shared by the end-to-end tests and
``bench/calls.py``. The node is driven only through its public surface: the
``smartswitch run`` command line, a TOML config file, SIP on its address and
``GET /health``; it is stopped by SIGTERM to its PID and must exit 0.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .sipp import free_port

#: Seconds to wait for ``/health`` to answer ``{"status": "ok"}``.
HEALTH_TIMEOUT = 10.0
#: Seconds between SIGTERM and SIGKILL when stopping a node.
STOP_GRACE = 10.0
#: Seconds an operator command (provision, cdr export, audit) may take.
CLI_TIMEOUT = 60.0
#: Seconds a running node may take to load a configuration change.
RELOAD_TIMEOUT = 10.0


class NodeError(RuntimeError):
    """The node did not start, or did not stop cleanly; the message has its log tail."""


# --------------------------------------------------------------------------- config


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return json.dumps(key)


def _toml_value(value: Any) -> str:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value!r} here")
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML: {value!r}")


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def _dump_table(table: Mapping[str, Any], prefix: str, out: list[str]) -> None:
    # Plain keys first: once a [table] header is written, later keys belong to it.
    for key, value in table.items():
        if value is None or isinstance(value, Mapping) or _is_table_array(value):
            continue
        out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        name = f"{prefix}{_toml_key(key)}"
        if isinstance(value, Mapping):
            out.append(f"\n[{name}]")
            _dump_table(value, f"{name}.", out)
        elif _is_table_array(value):
            for item in value:
                out.append(f"\n[[{name}]]")
                _dump_table(item, f"{name}.", out)


def dump_toml(config: Mapping[str, Any]) -> str:
    """``config`` as TOML text (the subset configs use: scalars, lists, tables,
    arrays of tables; ``None`` values are left out)."""
    out: list[str] = []
    _dump_table(config, "", out)
    return "\n".join(out).lstrip("\n") + "\n"


def route(prefix: str, *destinations: str) -> dict[str, Any]:
    """One ``[[route]]`` entry: the dialled user part's longest prefix wins."""
    return {"prefix": prefix, "destinations": list(destinations)}


def sip_uri(host: str, port: int, transport: str = "udp") -> str:
    """A destination URI as routes take it; UDP is the default transport."""
    return f"sip:{host}:{port}" + (";transport=tcp" if transport == "tcp" else "")


# --------------------------------------------------------------------------- process


def node_command() -> list[str]:
    """How to start the node: the venv's console script if it is there, else
    ``python -m smartswitch`` with the interpreter running us."""
    script = Path(sys.executable).with_name("smartswitch")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "smartswitch"]


@dataclass
class NodeSpec:
    """Where a node listens and what its config file says."""

    workdir: Path
    sip_host: str = "127.0.0.1"
    sip_port: int = 0
    """0: a free port (UDP and TCP) is chosen."""
    http_host: str = "127.0.0.1"
    http_port: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    """Top-level keys of the TOML config (``route`` is a list of tables)."""
    extra_args: Sequence[str] = ()
    """More ``smartswitch run`` arguments (bench: ``--node-args``)."""
    env: Mapping[str, str] = field(default_factory=dict)


class Node:
    """A running ``smartswitch run``; use :func:`start_node`."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.workdir = spec.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sip_host = spec.sip_host
        self.sip_port = spec.sip_port or free_port(spec.sip_host)
        self.http_host = spec.http_host
        self.http_port = spec.http_port or free_port(spec.http_host)
        while self.http_port == self.sip_port and not spec.http_port:
            # Both were free when asked, one after the other; SIP TCP and
            # HTTP cannot share the port.
            self.http_port = free_port(spec.http_host)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "node.toml"
        self.log_path = self.workdir / "node.log"
        self.command: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._provisioned = 0

    # -- addresses

    @property
    def sip_address(self) -> str:
        """``HOST:PORT`` of the node's SIP (UDP and TCP), as sipp takes it."""
        return f"{self.sip_host}:{self.sip_port}"

    @property
    def health_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}/health"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle

    def start(self, health_timeout: float = HEALTH_TIMEOUT) -> Node:
        start_all([self], health_timeout)
        return self

    def launch(self) -> None:
        """Spawn the node and return at once; :meth:`wait_healthy` waits for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(dump_toml(self.spec.config))
        self.command = [
            *node_command(),
            "run",
            "--data-dir",
            str(self.data_dir),
            "--sip-listen",
            self.sip_address,
            "--http-listen",
            f"{self.http_host}:{self.http_port}",
            "--config",
            str(self.config_path),
            *self.spec.extra_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env}
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Own process group: Ctrl-C on the test run must not reach the
                # node before the harness stops it (and asserts its exit code).
                start_new_session=True,
            )

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self.running:
                raise NodeError(
                    f"node exited with {self._proc.poll() if self._proc else None} before "
                    f"it was healthy\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=1.0) as response:
                    body = response.read()
                    if response.status == 200 and json.loads(body).get("status") == "ok":
                        return
                    last_error = f"{response.status} {body[:200]!r}"
            except (OSError, ValueError, urllib.error.URLError) as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        raise NodeError(
            f"node not healthy at {self.health_url} after {timeout:g}s "
            f"(last: {last_error})\n{self.log_tail()}"
        )

    def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, then SIGKILL after ``grace`` s; returns the exit code
        (negative: killed by that signal)."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._append_log(f"*** harness: no exit {grace:g}s after SIGTERM, SIGKILL\n")
                self.kill()
        self.returncode = proc.wait()
        return self.returncode

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_cleanly(self, grace: float = STOP_GRACE) -> None:
        """Stop, and raise :class:`NodeError` unless it exits 0 on SIGTERM."""
        if not self.started:
            return
        was_running = self.running
        code = self.stop(grace)
        if not was_running:
            raise NodeError(f"node had exited with {code} on its own\n{self.log_tail()}")
        if code != 0:
            raise NodeError(f"node exited with {code} after SIGTERM\n{self.log_tail()}")

    # -- observation

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_text().splitlines()
        return f"--- node log ({self.log_path}), last {lines} lines:\n" + "\n".join(text[-lines:])

    def rss_bytes(self) -> int:
        """Resident memory of the node and its child processes (SIP workers)."""
        return tree_rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time the node has used so far (user and system, its own and its children's)."""
        return cpu_seconds(self.pid)

    def _append_log(self, text: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(text)

    # -- billing mode: the operator commands on the node's data directory

    def cli(
        self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``smartswitch ARGS --data-dir DATA`` (provision, accounts, cdr export,
        audit) on this node's database, as an operator would while the node runs."""
        return run_cli(self.data_dir, *args, check=check, timeout=timeout)

    def provision(self, document: str | Mapping[str, Any] | Path) -> str:
        """Apply a provisioning document (YAML text, a mapping dumped as YAML, or a file)
        with ``smartswitch provision``; before :meth:`start` (billing mode: no
        ``[[route]]`` in the config) or while the node runs. Returns its report."""
        if isinstance(document, Path):
            path = document
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._provisioned += 1
            path = self.workdir / f"provision-{self._provisioned}.yaml"
            path.write_text(document if isinstance(document, str) else dump_yaml(document))
        return self.cli("provision", str(path)).stdout

    def cdrs(self) -> list[dict[str, Any]]:
        """Every CDR, from ``smartswitch cdr export --format json``."""
        data = json.loads(self.cli("cdr", "export", "--format", "json").stdout)
        assert isinstance(data, list)
        return data

    def accounts(self) -> dict[str, dict[str, Any]]:
        """Accounts by name, from ``smartswitch accounts --format json``."""
        data = json.loads(self.cli("accounts", "--format", "json").stdout)
        return {a["name"]: a for a in data}

    def audit(self) -> subprocess.CompletedProcess[str]:
        """``smartswitch audit`` (exit 0: the money is exact)."""
        return self.cli("audit", check=False)

    def cdr_attempts(self) -> dict[str, list[tuple[int, str, int, str]]]:
        """The supplier attempts of every CDR, by the CDR's Call-ID: (seq, supplier
        name, SIP code, reason). Not in the export: read from the node's SQLite file."""
        db = sqlite3.connect(f"file:{self.data_dir / 'smartswitch.db'}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT c.call_id, a.seq, p.name, a.sip_code, a.reason"
                " FROM cdr_attempts a JOIN cdrs c ON c.id = a.cdr_id"
                " JOIN peers p ON p.id = a.supplier_peer_id ORDER BY c.call_id, a.seq"
            ).fetchall()
        finally:
            db.close()
        found: dict[str, list[tuple[int, str, int, str]]] = {}
        for call_id, seq, name, code, reason in rows:
            found.setdefault(call_id, []).append((seq, name, code, reason))
        return found

    def wait_cdrs(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll the export until at least ``count`` CDRs are in the database (the
        outbox drained into it), then return them all."""
        deadline = time.monotonic() + timeout
        cdrs = self.cdrs()
        while len(cdrs) < count and time.monotonic() < deadline:
            time.sleep(0.2)
            cdrs = self.cdrs()
        return cdrs

    def registrations(self, outbound: bool = False) -> dict[str, Any]:
        """What ``smartswitch registrations [--outbound] --format json`` prints: the running
        node's bindings and bans (or its registrations with suppliers)."""
        url = f"http://{self.http_host}:{self.http_port}"
        flags = ("--outbound",) if outbound else ()
        done = self.cli("registrations", "--url", url, "--format", "json", *flags, timeout=20)
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.health_url, timeout=2.0) as response:
            data = json.loads(response.read())
        assert isinstance(data, dict)
        return data

    # -- configuration reloads: wait for what /health says, never for a fixed time

    def loaded_config_version(self) -> int | None:
        """The configuration version the running node has loaded (``/health``; None in lab
        mode, which has no database)."""
        version = self.health().get("config_version")
        return version if isinstance(version, int) else None

    def stored_config_version(self) -> int:
        """The configuration version in the node's SQLite file: what every change made so far
        (``provision``, the UI, the API) has bumped it to."""
        db = sqlite3.connect(f"file:{self.data_dir / 'smartswitch.db'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT version FROM config_version WHERE id = 1").fetchone()
        finally:
            db.close()
        return int(row[0]) if row else 0

    def wait_config_version(self, version: int, timeout: float = RELOAD_TIMEOUT) -> None:
        """Poll ``/health`` until the node has loaded configuration ``version`` (or later)."""
        deadline = time.monotonic() + timeout
        loaded: int | None = None
        while True:
            with contextlib.suppress(OSError, ValueError):  # busy: no answer in time
                loaded = self.loaded_config_version()
            if loaded is not None and loaded >= version:
                return
            if time.monotonic() > deadline:
                raise NodeError(
                    f"configuration version {version} not loaded within {timeout:g} s "
                    f"(loaded: {loaded})\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def wait_config_applied(self, timeout: float = RELOAD_TIMEOUT) -> int:
        """Wait until the node runs on the configuration its database holds now (after a
        change made while it runs); returns that version."""
        version = self.stored_config_version()
        self.wait_config_version(version, timeout)
        return version


def start_all(nodes: Iterable[Node], health_timeout: float = HEALTH_TIMEOUT) -> None:
    """Start several nodes at once: a cluster node's start takes seconds of waiting (its
    database, its registration), which the nodes then spend together. If one is not healthy
    in time, every one of them is killed and its NodeError raised."""
    started = list(nodes)
    try:
        for node in started:
            node.launch()
        for node in started:
            node.wait_healthy(health_timeout)
    except BaseException:
        for node in started:
            node.kill()
        raise


def start_node(spec: NodeSpec, health_timeout: float = HEALTH_TIMEOUT) -> Node:
    return Node(spec).start(health_timeout)


# --------------------------------------------------------------------------- billing mode


def run_cli(
    data_dir: Path, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``smartswitch ARGS --data-dir DATA_DIR``; with ``check`` a non-zero exit raises
    :class:`NodeError` with the command's output."""
    command = [*node_command(), *args, "--data-dir", str(data_dir)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise NodeError(
            f"{' '.join(command)} exited with {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
    return done


def dump_yaml(document: Mapping[str, Any]) -> str:
    """A provisioning document as YAML (money given as strings stays exact text)."""
    text: str = yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=None)
    return text


# --------------------------------------------------------------------------- memory


def rss_bytes(pid: int) -> int:
    """VmRSS of one process, from /proc/PID/status (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid``, from /proc/PID/stat (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_rss_bytes(pid: int) -> int:
    """VmRSS summed over ``pid`` and its descendants."""
    return sum(rss_bytes(current) for current in _tree(pid))


def _tree(pid: int) -> Iterator[int]:
    """``pid`` and its living descendants, each once."""
    todo = [pid]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current
        todo += _children(current)


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime over ``pid`` and its living descendants, plus what the root has reaped
    from children that ended (cutime + cstime): a process tree's CPU, for CPU per call."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for current in _tree(pid):
        try:
            text = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue  # ended meanwhile: a dead process has no children to walk either
        fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        total += int(fields[11]) + int(fields[12])
        if current == pid:
            total += int(fields[13]) + int(fields[14])
    return total / tick


def wait_for(check: Any, timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``check`` every 0.1 s until it returns something true (returned), at most
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
