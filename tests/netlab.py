"""Separate hosts on one LAN, made of Linux network namespaces, for tests that need machines.

Plain library code (no pytest), for the HA tests (shared IP, fail-over, split brain, load
balancing, database and money partitions) and anything after them. Needs root and iproute2;
cutting links needs nftables (``scripts/install-system-deps.sh`` installs both).

Theory of operation
-------------------
::

    ns PREFIX-n1 (10.77.0.11/24)  eth0 ─┐
    ns PREFIX-n2 (10.77.0.12/24)  eth0 ─┤   ns PREFIX-lan: bridge "lan"
    ns PREFIX-customer (.21)      eth0 ─┤   (one veth port per host)
    ns PREFIX-supplier (.31)      eth0 ─┘

- Every host is a namespace named ``PREFIX-<host>`` with ``lo`` up and one interface,
  ``eth0``, a veth whose other end is a port of the bridge ``lan`` in the namespace
  ``PREFIX-lan``. ``PREFIX`` is ``sslab<pid of the test process>``: two runs never share a
  name, and :func:`remove_stale` knows a crashed run's leftovers by their dead PID.
- Programs run in a host with :meth:`NetLab.run` / :meth:`NetLab.popen` (``ip netns exec``:
  a thread cannot enter a namespace for a while, a process can). Each process started by
  ``popen`` leads its own process group; :meth:`NetLab.close` kills every one of them by PID,
  then every process still inside one of the lab's namespaces (only this run can have started
  them: the names are its own), then deletes the namespaces, which removes the veths and the
  bridge with them.
- Links are cut with nftables inside the hosts: each host has a table ``inet netlab`` that
  drops IPv4 packets from/to the addresses in its sets (one for all traffic, one per protocol
  in :data:`PROTOCOLS`). :meth:`NetLab.cut` puts the other host's address in both hosts' sets;
  the interfaces stay up, so neither host notices anything but silence (a partition, not a
  cable pulled). ARP still passes: a cut is an IP cut. :meth:`NetLab.isolate` is a cut from
  every other host; :meth:`NetLab.link_down` really takes the interface down.
- Time: everything here is bounded (``timeout`` on every command, a deadline on every wait);
  :func:`wait_for` polls a condition instead of sleeping for a guessed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from smartswitch.cluster.daemons import pid_alive

__all__ = ["Host", "NetLab", "NetLabError", "pid_alive", "remove_stale", "wait_for"]

#: The name every lab's namespaces start with, followed by the test process's PID.
PREFIX_BASE = "sslab"
#: The default LAN: hosts get .11, .12, ... for switch nodes and .21, .31 for the peers.
SUBNET = "10.77.0"
PREFIX_LEN = 24
INTERFACE = "eth0"
BRIDGE = "lan"
#: Protocols :meth:`NetLab.cut` can cut one at a time (IP protocol numbers).
PROTOCOLS: Mapping[str, int] = {"icmp": 1, "tcp": 6, "udp": 17, "vrrp": 112}
#: Seconds any one ``ip``/``nft`` command may take.
COMMAND_TIMEOUT = 10.0

T = TypeVar("T")


class NetLabError(RuntimeError):
    """A lab command failed; the message has the command and its output."""


@dataclass(frozen=True, slots=True)
class Host:
    """One machine of the lab."""

    name: str
    netns: str
    address: str
    interface: str = INTERFACE


def standard_hosts(nodes: int = 3) -> dict[str, str]:
    """Switch nodes ``n1``... on .11, .12, ..., a ``customer`` on .21, a ``supplier`` on .31."""
    if not 1 <= nodes <= 9:
        raise ValueError("1 to 9 switch nodes")
    hosts = {f"n{i}": f"{SUBNET}.{10 + i}" for i in range(1, nodes + 1)}
    hosts["customer"] = f"{SUBNET}.21"
    hosts["supplier"] = f"{SUBNET}.31"
    return hosts


def _command(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetLabError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetLabError(
            f"{' '.join(argv)} exited with {done.returncode}: {(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


def list_namespaces() -> list[str]:
    """Names of the network namespaces ``ip netns`` knows."""
    out = _command(["ip", "-j", "netns", "list"], check=False).strip()
    if not out:
        return []
    return [str(entry["name"]) for entry in json.loads(out)]


def _kill_namespace_processes(netns: str) -> None:
    """SIGKILL each process still inside ``netns`` (by PID) and wait until they are gone."""
    for _ in range(3):
        pids = [int(p) for p in _command(["ip", "netns", "pids", netns], check=False).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.01)


def remove_stale(prefix_base: str = PREFIX_BASE) -> list[str]:
    """Delete the namespaces a crashed earlier run left (``<prefix_base><pid>-*`` whose PID is
    no longer running), killing what still runs inside them. Returns the names removed."""
    pattern = re.compile(rf"^{re.escape(prefix_base)}(\d+)-")
    removed = []
    for name in list_namespaces():
        match = pattern.match(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        _kill_namespace_processes(name)
        _command(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.01,
    what: str = "the condition",
) -> T:
    """Poll ``condition`` until it returns something truthy (returned), at most ``timeout``
    seconds; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not seen within {timeout:.2f} s")
        time.sleep(interval)


def _nft_table(sets: Iterable[str]) -> str:
    names = list(sets)
    set_lines = "".join(f"  set {n} {{ type ipv4_addr; }}\n" for n in names)
    input_rules = ["    ip saddr @cut_all drop"]
    output_rules = ["    ip daddr @cut_all drop"]
    for proto, number in PROTOCOLS.items():
        input_rules.append(f"    ip protocol {number} ip saddr @cut_{proto} drop")
        output_rules.append(f"    ip protocol {number} ip daddr @cut_{proto} drop")
    return (
        "table inet netlab {\n"
        f"{set_lines}"
        "  chain input {\n    type filter hook input priority 0; policy accept;\n"
        + "\n".join(input_rules)
        + "\n  }\n"
        "  chain output {\n    type filter hook output priority 0; policy accept;\n"
        + "\n".join(output_rules)
        + "\n  }\n}\n"
    )


@dataclass
class NetLab:
    """A LAN of namespaced hosts. Use as a context manager, or :meth:`start` / :meth:`close`.

    ``hosts`` maps a host name to its IPv4 address on the lab's /24 (:func:`standard_hosts`
    gives n1..nN, customer and supplier)."""

    hosts: Mapping[str, str] = field(default_factory=standard_hosts)
    prefix: str = field(default_factory=lambda: f"{PREFIX_BASE}{os.getpid()}")
    prefix_len: int = PREFIX_LEN
    #: Seconds :meth:`start` took (the tests keep it under 2 s for 5 hosts).
    setup_seconds: float = 0.0
    _hosts: dict[str, Host] = field(default_factory=dict, init=False, repr=False)
    _procs: list[subprocess.Popen[str]] = field(default_factory=list, init=False, repr=False)
    _cuts: set[tuple[str, str, str]] = field(default_factory=set, init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)

    @property
    def bridge_netns(self) -> str:
        return f"{self.prefix}-{BRIDGE}"

    # --- life -----------------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Make the bridge and the hosts. On any failure, whatever was made is removed."""
        if self._started:
            raise NetLabError("the lab is already started")
        started = time.monotonic()
        self._started = True
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - started

    def _build(self) -> None:
        br = self.bridge_netns
        _command(["ip", "netns", "add", br])
        _command(["ip", "-n", br, "link", "set", "lo", "up"])
        _command(["ip", "-n", br, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0"])
        _command(["ip", "-n", br, "link", "set", BRIDGE, "up"])
        table = _nft_table(["cut_all", *(f"cut_{p}" for p in PROTOCOLS)])
        for i, (name, address) in enumerate(self.hosts.items()):
            if not re.fullmatch(r"[a-z][a-z0-9]{0,8}", name) or name == BRIDGE:
                raise NetLabError(
                    f"host name {name!r}: 1-9 lowercase letters and digits, not {BRIDGE!r}"
                )
            host = Host(name=name, netns=f"{self.prefix}-{name}", address=address)
            self._hosts[name] = host
            ns = host.netns
            port = f"p{i}-{name}"[:15]
            _command(["ip", "netns", "add", ns])
            # Both ends of the veth are made directly in their namespaces: no rename, no move.
            _command(
                [
                    *("ip", "link", "add", host.interface, "netns", ns, "type", "veth"),
                    *("peer", "name", port, "netns", br),
                ]
            )
            _command(["ip", "-n", br, "link", "set", port, "master", BRIDGE, "up"])
            _command(["ip", "-n", ns, "link", "set", "lo", "up"])
            _command(
                [
                    *("ip", "-n", ns, "addr", "add", f"{address}/{self.prefix_len}"),
                    *("dev", host.interface),
                ]
            )
            _command(["ip", "-n", ns, "link", "set", host.interface, "up"])
            _command(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=table)

    def close(self) -> None:
        """Kill every process the lab started (by PID: each process group, then whatever is
        left inside the lab's namespaces), then delete the namespaces. Idempotent."""
        for proc in self._procs:
            self.kill(proc)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._procs.clear()
        names = [h.netns for h in self._hosts.values()]
        if self._started:
            names.append(self.bridge_netns)
        existing = set(list_namespaces())
        for ns in names:
            if ns in existing:
                _kill_namespace_processes(ns)
                _command(["ip", "netns", "del", ns], check=False)
        self._hosts.clear()
        self._cuts.clear()
        self._started = False

    def namespaces(self) -> list[str]:
        """The namespaces of this lab that exist now (empty after :meth:`close`)."""
        mine = {f"{self.prefix}-{name}" for name in [*self.hosts, BRIDGE]}
        return [n for n in list_namespaces() if n in mine]

    # --- hosts and processes --------------------------------------------------------------------

    def host(self, name: str) -> Host:
        try:
            return self._hosts[name]
        except KeyError:
            raise NetLabError(f"no host {name!r} in the lab") from None

    def __iter__(self) -> Any:
        return iter(self._hosts.values())

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as a command line that runs it inside ``host``."""
        return ["ip", "netns", "exec", self.host(host).netns, *argv]

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host`` to its end (at most ``timeout`` seconds)."""
        done = subprocess.run(
            self.exec_argv(host, argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise NetLabError(
                f"{host}: {' '.join(argv)} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done

    def popen(
        self,
        host: str,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` inside ``host`` as the leader of a new process group (text mode).
        The lab kills the group at :meth:`close`; :meth:`kill` does it sooner."""
        proc = subprocess.Popen(
            self.exec_argv(host, argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=None if env is None else dict(env),
            cwd=cwd,
            text=True,
            process_group=0,
        )
        self._procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[str] | int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group led by ``proc`` (a Popen from :meth:`popen`, or a
        PID that leads its own group); nothing if it is gone."""
        pid = proc if isinstance(proc, int) else proc.pid
        if not isinstance(proc, int) and proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    # --- the network ----------------------------------------------------------------------------

    def _nft(self, host: Host, command: str) -> None:
        _command(["ip", "netns", "exec", host.netns, "nft", command])

    def _set_cut(self, a: Host, b: Host, protocol: str | None, on: bool) -> None:
        proto = "all" if protocol is None else protocol
        if proto != "all" and proto not in PROTOCOLS:
            raise NetLabError(f"cannot cut {protocol!r}: one of {', '.join(PROTOCOLS)} or None")
        for here, there in ((a, b), (b, a)):
            key = (here.name, there.name, proto)
            if on == (key in self._cuts):
                continue
            verb = "add" if on else "delete"
            self._nft(here, f"{verb} element inet netlab cut_{proto} {{ {there.address} }}")
            if on:
                self._cuts.add(key)
            else:
                self._cuts.discard(key)

    def cut(self, a: str, b: str, protocol: str | None = None) -> None:
        """Drop every IPv4 packet between ``a`` and ``b`` (only ``protocol``'s, if given: one
        of :data:`PROTOCOLS`), both ways, in both hosts. Packets to and from other addresses
        of theirs (a shared IP) are matched by the other host's address."""
        self._set_cut(self.host(a), self.host(b), protocol, True)

    def heal(self, a: str, b: str, protocol: str | None = None) -> None:
        """Undo :meth:`cut` of the same ``protocol`` (None: the all-traffic cut)."""
        self._set_cut(self.host(a), self.host(b), protocol, False)

    def isolate(self, host: str) -> None:
        """Cut ``host`` from every other host (its interface stays up)."""
        for other in self._hosts:
            if other != host:
                self.cut(host, other)

    def rejoin(self, host: str) -> None:
        """Undo :meth:`isolate`."""
        for other in self._hosts:
            if other != host:
                self.heal(host, other)

    def heal_all(self) -> None:
        """Remove every cut of the lab."""
        for here, there, proto in sorted(self._cuts):
            self._set_cut(
                self.host(here), self.host(there), None if proto == "all" else proto, False
            )

    def cuts(self) -> set[tuple[str, str, str]]:
        """(host, other host, protocol or "all") for each cut in force, as seen from each side."""
        return set(self._cuts)

    def link_down(self, host: str) -> None:
        """Take ``host``'s interface down (the host sees its link go: keepalived goes FAULT)."""
        h = self.host(host)
        _command(["ip", "-n", h.netns, "link", "set", h.interface, "down"])

    def link_up(self, host: str) -> None:
        h = self.host(host)
        _command(["ip", "-n", h.netns, "link", "set", h.interface, "up"])

    def addresses_of(self, host: str) -> list[str]:
        """The IPv4 addresses on ``host``'s interface (a shared IP it holds included)."""
        h = self.host(host)
        out = _command(["ip", "-n", h.netns, "-j", "-4", "addr", "show", "dev", h.interface])
        return [
            str(info["local"])
            for entry in json.loads(out or "[]")
            for info in entry.get("addr_info", [])
            if info.get("family") == "inet"
        ]

    def mac_of(self, host: str) -> str:
        """The MAC address of ``host``'s interface."""
        h = self.host(host)
        out = _command(["ip", "-n", h.netns, "-j", "link", "show", "dev", h.interface])
        return str(json.loads(out)[0]["address"])

    def neighbour(self, host: str, address: str) -> str | None:
        """The MAC ``host``'s ARP cache has for ``address`` (None: no usable entry)."""
        h = self.host(host)
        out = _command(["ip", "-n", h.netns, "-j", "neigh", "show", address], check=False)
        for entry in json.loads(out or "[]"):
            state = entry.get("state", [])
            if "lladdr" in entry and "FAILED" not in state and "INCOMPLETE" not in state:
                return str(entry["lladdr"])
        return None

    def holder_of_mac(self, mac: str) -> str | None:
        """Which host's interface has ``mac``."""
        for name in self._hosts:
            if self.mac_of(name) == mac:
                return name
        return None

    def arping(self, host: str, address: str, *, count: int = 2, timeout: float = 2.0) -> set[str]:
        """The MACs answering ARP for ``address`` as seen from ``host`` (``arping -D``-like
        probe with iputils ``arping``): more than one is two hosts claiming the address."""
        h = self.host(host)
        done = self.run(
            host,
            ["arping", "-I", h.interface, "-c", str(count), "-w", f"{timeout:g}", address],
            check=False,
            timeout=timeout + 5.0,
        )
        return {m.lower() for m in re.findall(r"\[([0-9A-Fa-f:]{17})\]", done.stdout)}
