"""The shared IP: one VRRP address held by one node of the cluster at a time.

Each node writes and supervises its own keepalived (DESIGN.md, "Addresses, availability, load
balancing"). What it needs lives in the node's data dir and is rewritten at every start:

``keepalived.conf``
    One VRRP instance for the shared IP (:func:`render_keepalived_conf`, choices below).
``vip-check.sh``
    keepalived's health check of this node (:func:`render_check_script`): an OPTIONS to the
    node's own SIP address, healthy when a 200 comes back within ``check_reply_timeout``.
``vip.fifo``
    keepalived's ``vrrp_notify_fifo``: one line per state change (MASTER, BACKUP, FAULT, STOP),
    in order and with no process per event (unlike notify scripts), read by the supervisor on
    its event loop, which stamps it with the time it arrived (the ``since`` of the Cluster
    page).
``keepalived.pid``, ``keepalived-vrrp.pid``, ``keepalived.log``
    keepalived's main and VRRP process IDs and its console log (``-l``).

Theory of operation
-------------------
- **The health check is the node's ability to serve calls**, not a process being alive: a
  node whose SIP loop is stuck stops answering OPTIONS, fails the check ``check_fall`` times
  in a row, goes to FAULT and gives the shared IP up (a priority-0 advert: a backup takes over
  at once). The tracked script has weight 0 for that reason: a negative weight would only lower
  the priority, and with ``nopreempt`` nobody would take the address from a sick holder.
  ``init_fail``: a starting node is FAULT until its SIP answers ``check_rise`` times.
  keepalived runs scripts every whole second at most, so a stuck loop is seen after 1-2 checks
  (1.4-2.1 s measured with ``check_fall`` 2). The check runs as the node's own user
  (``script_user``); ``enable_script_security`` makes keepalived refuse to run it as root if
  anyone else could change it or a directory above it (the data dir is the node's, mode 700).
- **VRRPv3, adverts every 0.1 s**: VRRPv2 takes whole seconds only (a fail-over of 3.3-3.6 s);
  v3 takes centiseconds, and a holder that vanishes is replaced after about 3.6 adverts
  (0.34 s at 0.1 s, measured), before a caller's first SIP retransmission (T1 = 0.5 s).
- **Protection without VRRP authentication** (v3 has none; v2's is an 8-byte password in clear
  that anyone who can send on the LAN can also read): adverts are *unicast* from this node's
  dedicated IP to the other members' dedicated IPs only, and keepalived accepts an advert only
  from a listed member (``check_unicast_src``) and only with TTL 255 (``min_ttl 255``), i.e.
  sent on this link, never routed from elsewhere (RFC 5798 5.1.1.3's rule, which keepalived
  skips for unicast unless asked). Unicast also works where multicast does not (clouds), and
  cutting VRRP between two given nodes (the split-brain tests) is exact. The price: the member
  list is in the file; :meth:`KeepalivedSupervisor.reload` rewrites it and reloads keepalived
  (SIGHUP keeps its state) when a node joins or leaves. A node with no peer yet runs multicast
  (keepalived refuses unicast without a peer) and holds the address alone.
- **No preemption** (``nopreempt``, every node starts BACKUP): a node coming back with a
  higher priority does not take the address from a healthy holder. Every move costs: ARP
  caches to fix, SIP transactions in flight on the shared IP lost, the outbound registration
  and the dispatcher following it; moving for nothing buys nothing. Priorities still differ,
  so an election between starting nodes is deterministic.
- **Split brain** (VRRP cut, both masters): when it heals, the lower priority one yields. With
  ``higher_prio_send_advert`` it first sends an advert of its own, so the survivor sees a lower
  priority one and re-sends gratuitous ARPs: without it, the last GARPs the LAN saw may be the
  loser's and clients stay cut off until their ARP entries expire (8 s in 4 heals of 5 in the
  lab, up to 20 s elsewhere; keepalived issues #166 and #1528); with it, 39-89 ms.
  ``garp_master_refresh`` re-sends a GARP every few seconds while master: the bound for
  whatever else goes wrong.
- **The supervisor** (:class:`KeepalivedSupervisor`, asyncio): removes a *stale* shared IP at
  start and whenever keepalived dies (a SIGKILLed keepalived leaves the address on the
  interface, and two hosts then answer ARP for it), stops a keepalived left by a previous run
  (by its PID file) and removes stale PID files (keepalived will not start while its PID file
  names a live PID, and a SIGKILLed keepalived is a zombie until reaped: "daemon is already
  running"), checks the config with ``keepalived -t``, runs keepalived in its own
  process group (``-n``, no fork; ``-G`` no syslog, the log is its console), restarts it with
  back-off when it dies, and stops it at shutdown: SIGTERM (keepalived drops the address and
  sends a priority-0 advert), then SIGKILL to its process group. keepalived is started with
  ``setpriv --pdeathsig TERM``: if the node process dies, keepalived is told to leave at once
  instead of holding the address for a node that cannot answer.
- **Listening on the shared IP before it arrives**: bind the SIP sockets to the shared IP with
  ``IP_FREEBIND`` (:func:`udp_socket_freebind`). A socket bound to 0.0.0.0 would receive the
  shared IP's traffic too, but answer it from the node's primary address, and UAs drop
  responses that come from another address than the request went to. ``IP_FREEBIND`` is per
  socket and needs no privilege; the alternative, ``net.ipv4.ip_nonlocal_bind=1``, changes
  every bind of every program in the namespace and needs root.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from smartswitch.cluster.daemons import stop_pid, write_file
from smartswitch.cluster.tasks import cancel_and_wait

log = logging.getLogger("smartswitch.cluster.vip")

#: The VRRP instance's name in keepalived.conf and in the notify FIFO's lines.
INSTANCE = "smartswitch"
#: The vrrp_script's name.
CHECK = "smartswitch_sip"
#: ``IP_FREEBIND`` (linux/in.h); Python 3.11's socket module does not name it.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_INTERFACE = re.compile(r"[A-Za-z0-9_.@-]{1,15}")
# keepalived.conf has no escaping to speak of: '#' and '!' start comments anywhere, blanks
# split words, quotes group them. Paths written into it are kept to these characters.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./+@=-]*")


class VipError(Exception):
    """The shared IP cannot be supervised (keepalived missing, its config refused...)."""


class VipConfigError(VipError, ValueError):
    """The shared-IP settings are invalid; nothing was written."""


class VrrpState(StrEnum):
    """This node's VRRP state, as keepalived reports it (STOPPED: keepalived is not running)."""

    MASTER = "MASTER"
    BACKUP = "BACKUP"
    FAULT = "FAULT"
    STOPPED = "STOPPED"


@dataclass(frozen=True, slots=True)
class VipSettings:
    """What keepalived needs to know, from the cluster's settings and this node's row.

    All nodes of one cluster share ``shared_ip``, ``prefix_len``, ``virtual_router_id`` and
    the timings; each has its own ``priority`` (distinct), ``interface``, ``unicast_src_ip``
    (its dedicated IP) and ``peers`` (the other nodes' dedicated IPs)."""

    shared_ip: str
    interface: str
    virtual_router_id: int
    priority: int
    unicast_src_ip: str
    peers: tuple[str, ...]
    #: Where the health check sends its OPTIONS: the node's own SIP address (dedicated IP).
    sip_check_host: str
    sip_check_port: int = 5060
    prefix_len: int = 24
    node_name: str = "node"
    #: Seconds between adverts (VRRPv3: 0.01 to 40.95, in hundredths).
    advert_interval: float = 0.1
    #: Whole seconds between health checks (keepalived takes no less than 1).
    check_interval: int = 1
    #: Seconds the check waits for the 200.
    check_reply_timeout: float = 0.2
    #: Failed checks in a row that make the node give the shared IP up (one lost datagram or
    #: one slow answer must not move it).
    check_fall: int = 2
    #: Successful checks in a row before a node may hold the shared IP again.
    check_rise: int = 2
    #: Gratuitous ARPs sent on becoming master, then again ``garp_master_delay`` s later.
    garp_master_repeat: int = 3
    garp_master_delay: int = 1
    #: Seconds between gratuitous ARPs while master (0: none).
    garp_master_refresh: int = 2
    #: Let a higher priority node take the address from a healthy lower priority holder.
    preempt: bool = False

    def __post_init__(self) -> None:
        _ipv4(self.shared_ip, "shared_ip")
        _ipv4(self.unicast_src_ip, "unicast_src_ip")
        _ipv4(self.sip_check_host, "sip_check_host")
        for peer in self.peers:
            _ipv4(peer, "peer")
        if len(set(self.peers)) != len(self.peers):
            raise VipConfigError("a peer is listed twice")
        if self.unicast_src_ip in self.peers:
            raise VipConfigError("this node's own address is in its peer list")
        if self.shared_ip in (self.unicast_src_ip, *self.peers):
            raise VipConfigError("the shared IP is also a node's dedicated IP")
        if not _INTERFACE.fullmatch(self.interface):
            raise VipConfigError(f"interface name {self.interface!r} is not valid")
        if not _NAME.fullmatch(self.node_name):
            raise VipConfigError(f"node name {self.node_name!r}: letters, digits, _ . - only")
        _int_range(self.virtual_router_id, 1, 255, "virtual_router_id")
        # 255 is the "address owner", which takes the address whatever else happens.
        _int_range(self.priority, 1, 254, "priority")
        _int_range(self.prefix_len, 1, 32, "prefix_len")
        _int_range(self.sip_check_port, 1, 65535, "sip_check_port")
        _int_range(self.check_interval, 1, 3600, "check_interval")
        _int_range(self.check_fall, 1, 100, "check_fall")
        _int_range(self.check_rise, 1, 100, "check_rise")
        _int_range(self.garp_master_repeat, 1, 100, "garp_master_repeat")
        _int_range(self.garp_master_delay, 0, 3600, "garp_master_delay")
        _int_range(self.garp_master_refresh, 0, 86400, "garp_master_refresh")
        if not 0.01 <= self.advert_interval <= 40.95:
            raise VipConfigError("advert_interval: 0.01 to 40.95 s (VRRPv3)")
        if abs(self.advert_interval * 100 - round(self.advert_interval * 100)) > 1e-6:
            raise VipConfigError("advert_interval: whole hundredths of a second")
        if not 0.01 <= self.check_reply_timeout < self.check_interval:
            raise VipConfigError("check_reply_timeout: 0.01 s to less than check_interval")

    @property
    def failover_seconds(self) -> float:
        """About how long a vanished holder keeps the address: 3 adverts plus the skew."""
        return self.advert_interval * (3 + (256 - self.priority) / 256)


def _ipv4(text: str, what: str) -> None:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise VipConfigError(f"{what} {text!r} is not an IPv4 address") from None


def _int_range(value: int, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise VipConfigError(f"{what}: a whole number from {low} to {high}, not {value!r}")


@dataclass(frozen=True, slots=True)
class VipFiles:
    """Where the node keeps keepalived's files (all in its data dir)."""

    conf: Path
    check: Path
    fifo: Path
    pid: Path
    vrrp_pid: Path
    log: Path

    @classmethod
    def under(cls, data_dir: Path) -> VipFiles:
        data_dir = data_dir.absolute()
        files = cls(
            conf=data_dir / "keepalived.conf",
            check=data_dir / "vip-check.sh",
            fifo=data_dir / "vip.fifo",
            pid=data_dir / "keepalived.pid",
            vrrp_pid=data_dir / "keepalived-vrrp.pid",
            log=data_dir / "keepalived.log",
        )
        if not _SAFE_PATH.fullmatch(str(data_dir)):
            raise VipConfigError(
                f"data dir {str(data_dir)!r}: keepalived.conf cannot name a path with blanks,"
                " quotes, '#' or '!'"
            )
        return files


def render_keepalived_conf(settings: VipSettings, files: VipFiles, *, script_user: str) -> str:
    """keepalived.conf for this node (the choices are in the module's docstring)."""
    s = settings
    lines = [
        "# Written by smartswitch (cluster/vip.py) at every start: edits here are lost.",
        f"# Shared IP {s.shared_ip}/{s.prefix_len} on {s.interface}, VRRP router"
        f" {s.virtual_router_id}, node {s.node_name} (priority {s.priority}).",
        "global_defs {",
        f"    router_id {s.node_name}",
        "    vrrp_version 3",
        f"    vrrp_notify_fifo {files.fifo}",
        # The check runs as the node's own user; as root only if no one else can change it.
        f"    script_user {script_user}",
        "    enable_script_security",
        "}",
        "",
        f"vrrp_script {CHECK} {{",
        f'    script "{files.check}"',
        f"    interval {s.check_interval}",
        f"    timeout {s.check_interval}",
        f"    fall {s.check_fall}",
        f"    rise {s.check_rise}",
        "    init_fail",
        "}",
        "",
        f"vrrp_instance {INSTANCE} {{",
        "    state BACKUP",
        f"    interface {s.interface}",
        f"    virtual_router_id {s.virtual_router_id}",
        f"    priority {s.priority}",
        f"    advert_int {s.advert_interval:.2f}",
        # A returning node does not take the address from a healthy holder (module doc).
        "    nopreempt" if not s.preempt else "    preempt",
        "    accept",
        "    higher_prio_send_advert true",
        f"    garp_master_repeat {s.garp_master_repeat}",
        f"    garp_master_delay {s.garp_master_delay}",
        f"    garp_master_refresh {s.garp_master_refresh}",
        *_unicast(s),
        "    virtual_ipaddress {",
        f"        {s.shared_ip}/{s.prefix_len} dev {s.interface}",
        "    }",
        "    track_script {",
        f"        {CHECK}",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _unicast(s: VipSettings) -> list[str]:
    if not s.peers:
        # keepalived refuses unicast without peers; a lone node has nobody to talk to, and
        # the member list arrives with a reload.
        return ["    # No other member yet: multicast until the member list arrives."]
    return [
        "    # VRRPv3 has no authentication: adverts go to the members below only, and only",
        "    # theirs are accepted, with TTL 255 (sent on this link, never routed here).",
        f"    unicast_src_ip {s.unicast_src_ip}",
        "    check_unicast_src",
        "    unicast_peer {",
        *(f"        {peer} min_ttl 255" for peer in sorted(s.peers, key=ipaddress.IPv4Address)),
        "    }",
    ]


def render_check_script(settings: VipSettings) -> str:
    """The health check: OPTIONS over UDP to the node's own SIP address, exit 0 on a 200
    within ``check_reply_timeout``.

    bash, dd and timeout only (all Essential in Debian). bash's ``/dev/udp`` gives a connected
    socket, so only the node's answer can arrive on it. dd does the socket's I/O because each
    datagram must be one read or write: bash's printf writes a line at a time (the request would
    leave as eight datagrams) and its ``read`` a byte at a time (cutting a datagram short).
    ``rport`` (RFC 3581) sends the answer back to the script's ephemeral port."""
    host, port = settings.sip_check_host, settings.sip_check_port
    request = (
        f"OPTIONS sip:{host}:{port} SIP/2.0\\r\\n"
        f"Via: SIP/2.0/UDP {host}:9;branch=z9hG4bK-vipcheck-%s;rport\\r\\n"
        "Max-Forwards: 70\\r\\n"
        f"From: <sip:vip-check@{host}>;tag=%s\\r\\n"
        f"To: <sip:{host}:{port}>\\r\\n"
        "Call-ID: vip-check-%s\\r\\n"
        "CSeq: 1 OPTIONS\\r\\n"
        "Content-Length: 0\\r\\n\\r\\n"
    )
    return (
        "#!/bin/bash\n"
        "# Written by smartswitch (cluster/vip.py): keepalived's health check of this node.\n"
        f"# Healthy = the node's SIP loop answers OPTIONS on udp {host}:{port} with a 200 within\n"
        f"# {settings.check_reply_timeout:g} s.\n"
        f"exec 3<>/dev/udp/{host}/{port} || exit 1\n"
        "id=$$-$RANDOM$RANDOM\n"
        # One write, one datagram: bash's printf writes a line at a time.
        f'printf \'{request}\' "$id" "$id" "$id" |\n'
        "    dd bs=65535 count=1 iflag=fullblock status=none >&3 || exit 1\n"
        f"reply=$(timeout {settings.check_reply_timeout:g} dd bs=65535 count=1 status=none <&3)"
        " || exit 1\n"
        '[[ $reply == "SIP/2.0 200 "* ]]\n'
    )


def parse_fifo_line(line: str) -> tuple[str, VrrpState] | None:
    """``INSTANCE "smartswitch" MASTER 150`` -> ("smartswitch", MASTER); None for other lines
    (groups, priority changes). keepalived's STOP is :attr:`VrrpState.STOPPED`."""
    match = re.fullmatch(r'INSTANCE "([^"]*)" (\w+)(?: \d+)?', line.strip())
    if match is None:
        return None
    word = match.group(2)
    state = VrrpState.STOPPED if word in ("STOP", "DELETED") else _STATES.get(word)
    return None if state is None else (match.group(1), state)


_STATES = {s.value: s for s in VrrpState}


@dataclass(frozen=True, slots=True)
class VipEvent:
    """A change of this node's VRRP state, given to every :attr:`KeepalivedSupervisor.on_state`
    callback."""

    state: VrrpState
    previous: VrrpState
    #: When it was seen (the FIFO line read, keepalived found dead): wall clock and monotonic.
    at: float
    at_monotonic: float


@dataclass(frozen=True, slots=True)
class VipStatus:
    """This node's view of the shared IP, for the Cluster page and the status endpoint."""

    node: str
    shared_ip: str
    interface: str
    state: VrrpState
    #: Wall-clock time (epoch seconds) the state began.
    since: float
    priority: int
    keepalived_pid: int | None
    restarts: int
    last_error: str | None

    @property
    def holder(self) -> bool:
        """This node holds the shared IP."""
        return self.state is VrrpState.MASTER

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VipStatus:
        """The inverse of :meth:`as_dict` (a status that came over the cluster bus)."""
        pid = data.get("keepalived_pid")
        error = data.get("last_error")
        return cls(
            node=str(data["node"]),
            shared_ip=str(data["shared_ip"]),
            interface=str(data["interface"]),
            state=VrrpState(data["state"]),
            since=float(data["since"]),
            priority=int(data["priority"]),
            keepalived_pid=None if pid is None else int(pid),
            restarts=int(data.get("restarts", 0)),
            last_error=None if error is None else str(error),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "shared_ip": self.shared_ip,
            "interface": self.interface,
            "state": self.state.value,
            "since": self.since,
            "holder": self.holder,
            "priority": self.priority,
            "keepalived_pid": self.keepalived_pid,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


def since_text(since: float, now: float | None = None) -> str:
    """When a node's shared-IP state began (epoch seconds), in UTC to the millisecond
    (fail-overs are sub-second), with how long ago: the Cluster page's and the CLI's."""
    stamp = datetime.fromtimestamp(since, UTC)
    ago = max(0, int((time.time() if now is None else now) - since))
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{stamp.microsecond // 1000:03d} UTC ({ago} s ago)"


@dataclass(frozen=True, slots=True)
class SharedIpView:
    """The cluster's shared IP seen from every node's status: who holds it."""

    holders: tuple[str, ...]
    #: The node that has held it longest among the holders (None: nobody holds it).
    holder: str | None
    #: More than one node says it holds the address (a partition, or one not healed yet).
    split_brain: bool


def shared_ip_view(statuses: Iterable[VipStatus]) -> SharedIpView:
    """Who holds the shared IP, from each node's :class:`VipStatus` (the unreachable ones
    left out by the caller)."""
    masters = sorted((s for s in statuses if s.holder), key=lambda s: (s.since, s.node))
    names = tuple(s.node for s in masters)
    return SharedIpView(
        holders=names, holder=names[0] if names else None, split_brain=len(names) > 1
    )


# --- sockets on the shared IP -------------------------------------------------------------------


def enable_freebind(sock: socket.socket) -> None:
    """Let ``sock`` bind to an address this host does not have (yet): the shared IP on a
    backup. Datagrams reach it from the moment the address arrives on an interface."""
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)


def udp_socket_freebind(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` with ``IP_FREEBIND``, for
    ``loop.create_datagram_endpoint(sock=...)``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        enable_freebind(sock)
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


# --- addresses ----------------------------------------------------------------------------------


async def _run(*argv: str, timeout: float = 10.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return -1, f"{argv[0]} timed out"
    return proc.returncode or 0, out.decode(errors="replace")


async def interface_addresses(interface: str, ip: str = "ip") -> list[str]:
    """The IPv4 addresses on ``interface`` (``ip -j -4 addr show``)."""
    status, out = await _run(ip, "-j", "-4", "addr", "show", "dev", interface)
    if status != 0:
        raise VipError(f"cannot list the addresses of {interface}: {out.strip()}")
    return [
        str(info["local"])
        for entry in json.loads(out or "[]")
        for info in entry.get("addr_info", [])
        if info.get("family") == "inet"
    ]


async def remove_address(interface: str, address: str, prefix_len: int, ip: str = "ip") -> bool:
    """Delete ``address`` from ``interface`` if it is there. True if it was."""
    if address not in await interface_addresses(interface, ip):
        return False
    status, out = await _run(ip, "addr", "del", f"{address}/{prefix_len}", "dev", interface)
    if status != 0 and address in await interface_addresses(interface, ip):
        raise VipError(f"cannot remove {address} from {interface}: {out.strip()}")
    return True


# --- the supervisor -----------------------------------------------------------------------------


class KeepalivedSupervisor:
    """Runs this node's keepalived for the shared IP and follows its state.

    :meth:`start` writes the files, cleans up after a previous run, and starts keepalived;
    :attr:`state` / :attr:`since` / :meth:`status` say where this node stands; every callable
    in :attr:`on_state` is called (on the event loop) with a :class:`VipEvent` at each change;
    :meth:`stop` ends it. keepalived dying is a change to STOPPED (and the shared IP is taken
    off the interface at once); it is restarted after ``retry_delay``, doubling up to
    ``max_retry_delay`` while it keeps dying young."""

    def __init__(
        self,
        settings: VipSettings,
        *,
        data_dir: Path,
        keepalived: str = "keepalived",
        ip: str = "ip",
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        stop_timeout: float = 5.0,
        pdeathsig: bool = True,
    ) -> None:
        self.settings = settings
        self.files = VipFiles.under(data_dir)
        self.keepalived = keepalived
        self.ip = ip
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.stop_timeout = stop_timeout
        self.pdeathsig = pdeathsig
        self.on_state: list[Callable[[VipEvent], None]] = []
        self.restarts = 0
        self.last_error: str | None = None
        self.stale_removed = 0
        self._state = VrrpState.STOPPED
        self._since = time.time()
        self._since_monotonic = time.monotonic()
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._fifo_fd: int | None = None
        self._fifo_buffer = b""
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self._stopping = False

    def __repr__(self) -> str:
        return (
            f"<KeepalivedSupervisor {self.settings.shared_ip} on {self.settings.interface}"
            f" {self._state.value} pid={self.pid}>"
        )

    # --- what the node and its pages read -------------------------------------------------------

    @property
    def state(self) -> VrrpState:
        return self._state

    @property
    def since(self) -> float:
        """Wall-clock time (epoch seconds) the current state began."""
        return self._since

    @property
    def since_monotonic(self) -> float:
        return self._since_monotonic

    @property
    def holder(self) -> bool:
        return self._state is VrrpState.MASTER

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def status(self) -> VipStatus:
        return VipStatus(
            node=self.settings.node_name,
            shared_ip=self.settings.shared_ip,
            interface=self.settings.interface,
            state=self._state,
            since=self._since,
            priority=self.settings.priority,
            keepalived_pid=self.pid,
            restarts=self.restarts,
            last_error=self.last_error,
        )

    # --- files ----------------------------------------------------------------------------------

    async def install_files(self, settings: VipSettings | None = None) -> None:
        """Write the check script (mode 700) and the config (mode 600) for ``settings`` (by
        default the current ones). The config replaces the old one only once ``keepalived -t``
        accepts it; otherwise :class:`VipError` with keepalived's complaints (an unknown
        interface, a keyword this version lacks), and the old files stay."""
        settings = settings or self.settings
        files = self.files
        files.conf.parent.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwuid(os.geteuid()).pw_name
        conf = render_keepalived_conf(settings, files, script_user=user)
        try:
            old_check: str | None = files.check.read_text()
        except OSError:
            old_check = None
        # keepalived -t wants the script the config names to be there.
        write_file(files.check, render_check_script(settings), 0o700)
        staged = files.conf.with_name(f".{files.conf.name}.new")
        write_file(staged, conf, 0o600)
        status, out = await _run(self.keepalived, "-t", "-f", str(staged))
        if status != 0:
            staged.unlink(missing_ok=True)
            if old_check is not None:
                write_file(files.check, old_check, 0o700)
            raise VipError(f"keepalived refuses the config: {out.strip()}")
        os.replace(staged, files.conf)

    # --- running --------------------------------------------------------------------------------

    async def start(self) -> bool:
        """Write the files (checked by keepalived), stop a keepalived left by a previous run,
        remove a stale shared IP, and start supervising. Returns once keepalived was started (True) or
        the first attempt failed (False: the supervisor keeps trying, :attr:`last_error` says
        why). Raises :class:`VipError` if keepalived refuses the config."""
        if self._task is not None:
            raise VipError("keepalived is already supervised")
        if shutil.which(self.keepalived) is None:
            raise VipError(f"{self.keepalived} not found (Debian package keepalived)")
        self._stopping = False
        await self.install_files()
        await asyncio.to_thread(self._clear_stale)
        await self._remove_stale_address()
        self._open_fifo()
        self._attempted.clear()
        self._task = asyncio.create_task(self._supervise(), name="keepalived")
        await self._attempted.wait()
        return self.pid is not None

    async def reload(self, settings: VipSettings) -> None:
        """New settings (a node joined or left: the peer list) without losing the state:
        rewrite the files and send keepalived SIGHUP. The shared IP, its prefix and the
        interface cannot change this way (restart the supervisor)."""
        old = self.settings
        if (settings.shared_ip, settings.prefix_len, settings.interface) != (
            old.shared_ip,
            old.prefix_len,
            old.interface,
        ):
            raise VipError("the shared IP or its interface changed: stop and start again")
        await self.install_files(settings)
        self.settings = settings
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    async def stop(self) -> None:
        """Stop keepalived (it drops the shared IP and tells the others with a priority-0
        advert), kill what is left of its process group, take the address off if it is still
        there. The state becomes STOPPED."""
        self._stopping = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        proc, self._proc = self._proc, None
        if proc is not None:
            await _terminate_group(proc, self.stop_timeout)
        # The STOP line keepalived wrote on its way out, if the loop has not read it yet.
        self._read_fifo()
        self._close_fifo()
        if self._log is not None:
            self._log.close()
            self._log = None
        with contextlib.suppress(VipError):
            await self._remove_stale_address()
        self._set_state(VrrpState.STOPPED)

    async def _supervise(self) -> None:
        delay = self.retry_delay
        while not self._stopping:
            try:
                await asyncio.to_thread(self._clear_stale)
                await self._spawn()
            except Exception as exc:
                self.last_error = f"cannot start keepalived: {exc}"
                log.error("%s", self.last_error)
                self._attempted.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            self._attempted.set()
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            status = await proc.wait()
            if self._stopping:
                return
            self._proc = None
            self.restarts += 1
            self.last_error = f"keepalived exited with status {status} ({self._log_tail()})"
            # Whatever it held it no longer defends: two hosts must not answer ARP for it.
            self._read_fifo()
            self._set_state(VrrpState.STOPPED)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its VRRP child and scripts, if left
            try:
                await self._remove_stale_address()
            except VipError as exc:
                log.error("%s", exc)
            if time.monotonic() - started > 60:
                delay = self.retry_delay
            log.warning("%s; restarting it in %.1f s", self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _spawn(self) -> None:
        if self._log is None:
            _rotate(self.files.log)
            self._log = open(self.files.log, "ab")  # noqa: SIM115 - closed by stop()
        argv = [
            self.keepalived,
            "--dont-fork",  # -n: the PID we hold is keepalived's main process
            "--log-console",  # -l: to keepalived.log
            "--log-detail",  # -D
            "--no-syslog",  # -G
            "--vrrp",  # -P: VRRP only, no health-checker (LVS) process
            f"--use-file={self.files.conf}",
            f"--pid={self.files.pid}",
            f"--vrrp_pid={self.files.vrrp_pid}",
        ]
        setpriv = shutil.which("setpriv") if self.pdeathsig else None
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,  # its own process group: stop() kills all of it by PID
        )
        self.last_error = None
        log.info("keepalived started (PID %d) for %s", self._proc.pid, self.settings.shared_ip)

    async def _remove_stale_address(self) -> None:
        s = self.settings
        if await remove_address(s.interface, s.shared_ip, s.prefix_len, self.ip):
            self.stale_removed += 1
            log.warning("removed a stale %s from %s", s.shared_ip, s.interface)

    def _clear_stale(self) -> None:
        """Stop a keepalived of ours that outlived its node (its PID files name it), and remove
        the PID files: keepalived refuses to start ("daemon is already running") while they
        name a live PID, and a SIGKILLed keepalived stays a zombie until someone reaps it."""
        for path in (self.files.pid, self.files.vrrp_pid):
            try:
                pid = int(path.read_text().split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                cmdline = []
            # No cmdline: gone, or a zombie. Another one: the PID was reused by something else.
            if f"--use-file={self.files.conf}".encode() in cmdline:
                log.warning("stopping a keepalived (PID %d) left by a previous run", pid)
                stop_pid(pid)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # --- the notify FIFO ------------------------------------------------------------------------

    def _open_fifo(self) -> None:
        path = self.files.fifo
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISFIFO(path.lstat().st_mode):
                path.unlink()
        if not path.exists():
            os.mkfifo(path, 0o600)
        # Read-write: the supervisor is a writer too, so the FIFO never reads as closed when
        # keepalived exits (a read-only end would report end-of-file in a loop).
        self._fifo_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._fifo_buffer = b""
        asyncio.get_running_loop().add_reader(self._fifo_fd, self._read_fifo)

    def _close_fifo(self) -> None:
        if self._fifo_fd is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._fifo_fd)
            os.close(self._fifo_fd)
            self._fifo_fd = None

    def _read_fifo(self) -> None:
        if self._fifo_fd is None:
            return
        while True:
            try:
                chunk = os.read(self._fifo_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._fifo_buffer += chunk
        *lines, self._fifo_buffer = self._fifo_buffer.split(b"\n")
        for raw in lines:
            parsed = parse_fifo_line(raw.decode(errors="replace"))
            if parsed is not None and parsed[0] == INSTANCE:
                self._set_state(parsed[1])

    def _set_state(self, state: VrrpState) -> None:
        if state is self._state:
            return
        event = VipEvent(
            state=state, previous=self._state, at=time.time(), at_monotonic=time.monotonic()
        )
        self._state, self._since, self._since_monotonic = state, event.at, event.at_monotonic
        log.info("shared IP %s: %s -> %s", self.settings.shared_ip, event.previous, state)
        for callback in list(self.on_state):
            try:
                callback(event)
            except Exception:
                log.exception("a shared-IP state callback failed")

    def _log_tail(self, lines: int = 3) -> str:
        try:
            with open(self.files.log, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 2048))
                tail = f.read().decode(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return f"see {self.files.log}"
        return " | ".join(tail) or f"see {self.files.log}"


def with_peers(settings: VipSettings, peers: Sequence[str]) -> VipSettings:
    """``settings`` with another member list (for :meth:`KeepalivedSupervisor.reload`)."""
    return replace(settings, peers=tuple(p for p in peers if p != settings.unicast_src_ip))


def _rotate(path: Path, limit: int = 10 * 1024 * 1024) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > limit:
            os.replace(path, path.with_name(path.name + ".1"))


async def _terminate_group(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """SIGTERM keepalived's main process, wait, then SIGKILL its whole process group."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            log.warning("keepalived (PID %d) ignored SIGTERM for %.1f s", proc.pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
