"""The node configuration: a TOML file, overridden by command-line flags.

Every flag of ``smartswitch run`` has a key here. A bad file is refused with its line named.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from smartswitch.cluster.vip import VipConfigError, VipSettings
from smartswitch.routing.static import StaticRoute
from smartswitch.sip.transaction import TIMER_F


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MediaRelaySetting:
    """An external rtpengine (``[[media_relay]]``): its ng address and share of new calls."""

    name: str
    address: str  # "host:port" of its ng control port
    weight: int = 1


@dataclass(slots=True)
class NodeConfig:
    data_dir: Path = Path("smartswitch-data")
    sip_listen: str = "0.0.0.0:5060"
    http_listen: str = "127.0.0.1:8080"
    log_level: str = "info"
    database_url: str | None = None
    primary_database_url: str | None = None  # a cluster's primary: where money is written
    accept_any_source: bool = False
    no_answer_timeout: float = 30.0
    max_call_duration: float = 3 * 3600.0
    advance_on: tuple[int, ...] = (*range(500, 600), 408)
    dialog_ping_interval: float = 60.0  # in-dialog OPTIONS to both legs; 0 = off
    dialog_ping_timeout: float = TIMER_F  # a ping unanswered this long ends the call
    node_id: str = "node1"
    sip_realm: str = "smartswitch"
    refresh_interval: float = 0.5
    reserve_seconds: int = 300  # prepaid time granted to a call at a time (accounts may differ)
    # Money across nodes (docs/money.md, billing.reservations): a new call that cannot get a
    # whole slice gets what is left, but not less than min_grant_seconds; in a partition a node
    # may use money_share of an account's money (0: an equal share among the nodes last seen).
    min_grant_seconds: int = 10
    money_share: float = 0.0
    # The cluster (see docs/cluster.md): "single" (embedded SQLite or one database),
    # "replication" (a MariaDB primary and GTID replicas) or "galera" (multi-primary).
    db_scheme: str = "single"
    node_name: str = ""
    dedicated_ip: str = ""
    shared_ip: str = ""
    cluster_secret: str = ""
    # Calls this node is meant to carry at once: sent in its heartbeats, what the load
    # balancer's free capacity is measured against (0: not set, the node gets no share).
    capacity: int = 1000
    # The shared IP held through VRRP (docs/cluster.md, "Shared IP"): with ``vip_interface``
    # set, the node writes, runs and supervises its own keepalived for ``shared_ip`` and
    # listens on it. Every node of the cluster has the same shared IP, prefix, router id and
    # advert interval; each its own (distinct) priority; ``vip_peers`` are the other nodes'
    # dedicated IPs (VRRP adverts go to them only: VRRPv3 has no authentication).
    vip_interface: str = ""
    vip_prefix_len: int = 24
    vip_router_id: int = 51
    vip_priority: int = 100
    vip_advert_interval: float = 0.1
    vip_peers: tuple[str, ...] = ()
    vip_garp_refresh: int = 2  # seconds between gratuitous ARPs while holding it (0: none)
    # Automatic load balancing (docs/cluster.md): "off", or the dispatcher's mode on the
    # address dispatch_listen (the shared IP in a VIP deployment; HOST:PORT, UDP), "redirect"
    # (302 with a signed token) or "proxy" (stateless forward with the caller's source).
    dispatch_mode: str = "off"
    dispatch_listen: str = ""
    # Refuse (403) an INVITE from outside the cluster that carries no valid dispatch token.
    dispatch_require_token: bool = False
    dispatch_token_lifetime: float = 30.0
    # The web UI's read-only mode (a replica's): forced on here; the cluster also sets it live.
    read_only: bool = False
    read_only_primary: str = ""  # the primary's name or address, named in the read-only banner
    cookie_secure: bool = False  # send the session cookie only over HTTPS (behind a TLS proxy)
    # The registrar (docs/registrar.md): how long bindings last, the digest algorithms offered
    # (preferred first), and the defence against guessing and floods per source address, for
    # REGISTERs and digest-authenticated INVITEs alike.
    reg_min_expires: int = 60
    reg_max_expires: int = 3600
    reg_default_expires: int = 3600
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    auth_fail_limit: int = 5  # failed authentications within auth_fail_window ban (0: never)
    auth_fail_window: float = 60.0
    auth_ban_time: float = 300.0
    source_rate_limit: float = 50.0  # requests/s one source may send through the guard (0: off)
    source_rate_burst: float = 100.0
    # File sync and call capture (docs/capture.md): every node's rsync daemon listens on
    # its dedicated IP on this port; the reconciliation pass and the capture retention run
    # this often (seconds); a call's file is written this long after its end (the last BYE).
    rsync_port: int = 873
    file_reconcile_interval: float = 60.0
    capture_retention_interval: float = 300.0
    capture_linger: float = 4.0
    # The outbox's group commit (store/outbox.py): the first CDR after a commit waits this
    # long (seconds) for others to share its fsync; the BYE's 200 waits as long. 0: at once.
    outbox_commit_window: float = 0.01
    # SIP over TLS (docs/security.md): a listener on tls_listen (empty: none) presenting
    # tls_cert/tls_key, reloaded when the files change; tls_ca verifies client certificates
    # (a peer identified by its certificate) and the peers we connect to.
    tls_listen: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_verify_peers: bool = True
    tls_reload_interval: float = 5.0
    # Requests from unidentified sources (out-of-dialog INVITE, OPTIONS, REGISTER from an
    # address no peer's ACL, certificate or recent digest success names): answered at most
    # flood_rate per second per address (bursts of flood_burst), the rest dropped and counted;
    # never answered with more bytes than they carried (0 rate: no limit).
    flood_rate: float = 50.0
    flood_burst: float = 100.0
    flood_total_rate: float = 1000.0  # the same, all unidentified sources together
    flood_total_burst: float = 2000.0
    route: tuple[StaticRoute, ...] = field(default_factory=tuple)
    # Media (docs/media.md): the node's own rtpengine (started and restarted by the node,
    # command line generated) and/or external ones, one chosen per call by weight.
    media_rtpengine: bool = False
    media_interface: str = ""  # the address rtpengine puts in SDP (empty: dedicated_ip or SIP's)
    media_ng: str = "127.0.0.1:2223"  # where the node's own rtpengine listens for ng
    media_weight: int = 1  # the own rtpengine's share of new calls
    media_port_min: int = 30000
    media_port_max: int = 30999  # 4 ports a call; keep below the ephemeral range (32768)
    media_binary: str = "/usr/bin/rtpengine"
    media_timeout: float = 0.5  # ng: seconds before a retransmission
    media_tries: int = 3
    media_ping_interval: float = 2.0
    media_relay: tuple[MediaRelaySetting, ...] = field(default_factory=tuple)
    # Recordings of relayed calls: <data_dir>/recordings, kept this long and up to this size.
    recording_max_age_days: float = 90.0
    recording_max_bytes: int = 10 * 1024**3

    @property
    def media_enabled(self) -> bool:
        return self.media_rtpengine or bool(self.media_relay)

    def vip_settings(self) -> VipSettings | None:
        """keepalived's settings for this node, or None when it does not take part in the
        shared IP. Raises :class:`VipConfigError` for settings keepalived cannot take."""
        if not self.vip_interface:
            return None
        if not self.shared_ip:
            raise VipConfigError("vip_interface is set but shared_ip is empty")
        if not self.dedicated_ip:
            raise VipConfigError("the shared IP needs this node's dedicated_ip (VRRP source)")
        host, port = parse_hostport(self.sip_listen)
        return VipSettings(
            shared_ip=self.shared_ip,
            interface=self.vip_interface,
            virtual_router_id=self.vip_router_id,
            priority=self.vip_priority,
            unicast_src_ip=self.dedicated_ip,
            peers=self.vip_peers,
            # The health check asks the node's SIP loop on its own address.
            sip_check_host=self.dedicated_ip if host in ("0.0.0.0", "::") else host,
            sip_check_port=port,
            prefix_len=self.vip_prefix_len,
            node_name=self.name,
            advert_interval=self.vip_advert_interval,
            garp_master_refresh=self.vip_garp_refresh,
        )

    # Replacing the primary (docs/cluster.md): the etcd members, one per node on its dedicated
    # IP ("NAME=IP"), their client and peer ports; whether this node runs its own member
    # (when it is one of them); "manual" or "automatic" promotion (automatic needs three
    # members or more); the leader lease's TTL and the anti-flap period, in seconds.
    etcd_members: tuple[str, ...] = ()
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    etcd_run: bool = True
    failover: str = "manual"
    failover_ttl: int = 10
    failover_anti_flap: float = 3600.0

    @property
    def etcd_cluster(self) -> dict[str, str]:
        """The etcd members, name -> IP."""
        return dict(entry.split("=", 1) for entry in self.etcd_members)

    @property
    def etcd_endpoints(self) -> list[str]:
        return [f"http://{ip}:{self.etcd_client_port}" for ip in self.etcd_cluster.values()]

    @property
    def name(self) -> str:
        """This node's name in the cluster: ``node_name``, else ``node_id``. Peers are
        attached to nodes by it; per-node registration accounts are keyed by it."""
        return self.node_name or self.node_id


_TYPES: dict[str, type | tuple[type, ...]] = {
    "data_dir": str,
    "sip_listen": str,
    "http_listen": str,
    "log_level": str,
    "database_url": str,
    "primary_database_url": str,
    "accept_any_source": bool,
    "no_answer_timeout": (int, float),
    "max_call_duration": (int, float),
    "advance_on": list,
    "dialog_ping_interval": (int, float),
    "dialog_ping_timeout": (int, float),
    "node_id": str,
    "sip_realm": str,
    "refresh_interval": (int, float),
    "reserve_seconds": int,
    "min_grant_seconds": int,
    "money_share": (int, float),
    "db_scheme": str,
    "node_name": str,
    "dedicated_ip": str,
    "shared_ip": str,
    "cluster_secret": str,
    "capacity": int,
    "vip_interface": str,
    "vip_prefix_len": int,
    "vip_router_id": int,
    "vip_priority": int,
    "vip_advert_interval": (int, float),
    "vip_peers": list,
    "vip_garp_refresh": int,
    "dispatch_mode": str,
    "dispatch_listen": str,
    "dispatch_require_token": bool,
    "dispatch_token_lifetime": (int, float),
    "read_only": bool,
    "read_only_primary": str,
    "cookie_secure": bool,
    "reg_min_expires": int,
    "reg_max_expires": int,
    "reg_default_expires": int,
    "digest_algorithms": list,
    "auth_fail_limit": int,
    "auth_fail_window": (int, float),
    "auth_ban_time": (int, float),
    "source_rate_limit": (int, float),
    "source_rate_burst": (int, float),
    "rsync_port": int,
    "file_reconcile_interval": (int, float),
    "capture_retention_interval": (int, float),
    "capture_linger": (int, float),
    "outbox_commit_window": (int, float),
    "tls_listen": str,
    "tls_cert": str,
    "tls_key": str,
    "tls_ca": str,
    "tls_verify_peers": bool,
    "tls_reload_interval": (int, float),
    "flood_rate": (int, float),
    "flood_burst": (int, float),
    "flood_total_rate": (int, float),
    "flood_total_burst": (int, float),
    "route": list,
    "media_rtpengine": bool,
    "media_interface": str,
    "media_ng": str,
    "media_weight": int,
    "media_port_min": int,
    "media_port_max": int,
    "media_binary": str,
    "media_timeout": (int, float),
    "media_tries": int,
    "media_ping_interval": (int, float),
    "media_relay": list,
    "recording_max_age_days": (int, float),
    "recording_max_bytes": int,
    "etcd_members": list,
    "etcd_client_port": int,
    "etcd_peer_port": int,
    "etcd_run": bool,
    "failover": str,
    "failover_ttl": int,
    "failover_anti_flap": (int, float),
}


def _line_of(text: str, key: str) -> int | None:
    match = re.search(rf"^\s*\[*\s*{re.escape(key)}\b", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _fail(path: Path, text: str, key: str, message: str) -> ConfigError:
    line = _line_of(text, key)
    where = f"{path}:{line}" if line else str(path)
    return ConfigError(f"{where}: {key}: {message}")


def _default_data_dir() -> Path:
    """Under systemd (``StateDirectory=``) the service's state directory, else
    ``./smartswitch-data`` beside where the node runs (a checkout)."""
    state = os.environ.get("STATE_DIRECTORY", "")
    return Path(state.split(":")[0]) if state else Path("smartswitch-data")


def load_config(path: Path | None) -> NodeConfig:
    config = NodeConfig(data_dir=_default_data_dir())
    if path is None:
        return config
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    known = {f.name for f in fields(NodeConfig)}
    for key, value in data.items():
        if key not in known:
            raise _fail(path, text, key, "unknown setting")
        expected = _TYPES[key]
        if isinstance(value, bool) and expected in ((int, float), int):
            raise _fail(path, text, key, "expected a number")
        if not isinstance(value, expected):
            raise _fail(path, text, key, f"expected {_type_name(expected)}")
        setattr(config, key, _convert(path, text, key, value))
    if config.tls_listen and not (config.tls_cert and config.tls_key):
        raise _fail(path, text, "tls_listen", "needs tls_cert and tls_key")
    if config.media_port_max - config.media_port_min < 3:
        raise _fail(path, text, "media_port_max", "the RTP range needs at least 4 ports")
    if config.dispatch_mode != "off" and not config.dispatch_listen:
        raise _fail(path, text, "dispatch_mode", "needs dispatch_listen (HOST:PORT)")
    if config.dispatch_mode != "off" and not config.cluster_secret:
        raise _fail(path, text, "dispatch_mode", "needs the cluster_secret (tokens, the bus)")
    if config.dispatch_require_token and not config.cluster_secret:
        raise _fail(path, text, "dispatch_require_token", "needs the cluster_secret")
    if not config.reg_min_expires <= config.reg_default_expires <= config.reg_max_expires:
        raise _fail(
            path,
            text,
            "reg_default_expires",
            "must lie between reg_min_expires and reg_max_expires",
        )
    try:
        config.vip_settings()
    except VipConfigError as exc:
        key = "shared_ip" if "shared_ip" in str(exc) else "vip_interface"
        raise _fail(path, text, key, str(exc)) from None
    return config


def _type_name(expected: type | tuple[type, ...]) -> str:
    if expected == (int, float):
        return "a number"
    names = {str: "a string", bool: "true or false", list: "a list"}
    return names.get(expected, str(expected)) if isinstance(expected, type) else str(expected)


def _convert(path: Path, text: str, key: str, value: Any) -> Any:
    if key == "data_dir":
        return Path(value)
    if key == "dispatch_mode" and value not in ("off", "redirect", "proxy"):
        raise _fail(path, text, key, "one of off, redirect, proxy")
    if key == "dispatch_token_lifetime":
        if value <= 0:
            raise _fail(path, text, key, "must be positive (seconds)")
        return float(value)
    if key in ("sip_listen", "http_listen") or (key in ("tls_listen", "dispatch_listen") and value):
        try:
            parse_hostport(value)
        except ValueError as exc:
            raise _fail(path, text, key, str(exc)) from None
        return value
    if key in (
        "no_answer_timeout",
        "max_call_duration",
        "dialog_ping_interval",
        "refresh_interval",
        "auth_fail_window",
        "auth_ban_time",
        "source_rate_limit",
        "source_rate_burst",
        "capture_linger",
        "tls_reload_interval",
        "flood_rate",
        "flood_burst",
        "flood_total_rate",
        "flood_total_burst",
    ):
        if value < 0:
            raise _fail(path, text, key, "must not be negative")
        return float(value)
    if key == "dialog_ping_timeout":
        # Timer F ends an unanswered OPTIONS then, whatever this says.
        if not 0 < value <= TIMER_F:
            raise _fail(path, text, key, f"more than 0 and at most {TIMER_F:g} (seconds)")
        return float(value)
    if key == "db_scheme" and value not in ("single", "replication", "galera"):
        raise _fail(path, text, key, "one of single, replication, galera")
    if key in ("dedicated_ip", "shared_ip") and value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise _fail(path, text, key, f"not an IP address: {value!r}") from None
    if key in ("reg_min_expires", "reg_max_expires", "reg_default_expires") and value < 1:
        raise _fail(path, text, key, "must be at least 1 (seconds)")
    if key == "vip_advert_interval":
        return float(value)
    if key == "vip_peers":
        if not all(isinstance(p, str) for p in value):
            raise _fail(path, text, key, "a list of the other nodes' dedicated IPs")
        return tuple(value)
    if key in ("reserve_seconds", "min_grant_seconds") and value < 1:
        raise _fail(path, text, key, "must be at least 1 (seconds)")
    if key == "money_share":
        if not 0 <= value <= 1:
            raise _fail(path, text, key, "a fraction from 0 (equal shares) to 1")
        return float(value)
    if key in ("file_reconcile_interval", "capture_retention_interval"):
        if value <= 0:
            raise _fail(path, text, key, "must be more than 0 (seconds)")
        return float(value)
    if key == "rsync_port" and not 0 < value < 65536:
        raise _fail(path, text, key, "a port, 1-65535")
    if key in ("auth_fail_limit", "capacity") and value < 0:
        raise _fail(path, text, key, "must not be negative")
    if key == "digest_algorithms":
        if (
            not value
            or any(a not in ("SHA-256", "MD5") for a in value)
            or len(set(value)) < len(value)
        ):
            raise _fail(path, text, key, 'a list of "SHA-256" and/or "MD5", each at most once')
        return tuple(value)
    if key == "log_level":
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise _fail(path, text, key, "one of debug, info, warning, error")
        return value.lower()
    if key == "advance_on":
        if not all(isinstance(c, int) and 300 <= c <= 699 for c in value):
            raise _fail(path, text, key, "SIP codes between 300 and 699")
        return tuple(value)
    if key in ("media_port_min", "media_port_max") and not 1024 <= value <= 65535:
        raise _fail(path, text, key, "a UDP port between 1024 and 65535")
    if key in ("media_weight", "media_tries", "recording_max_bytes") and value < (
        1 if key == "media_tries" else 0
    ):
        raise _fail(path, text, key, "must not be negative" if key != "media_tries" else ">= 1")
    if key in ("media_timeout", "media_ping_interval", "recording_max_age_days"):
        if value <= 0:
            raise _fail(path, text, key, "must be positive")
        return float(value)
    if key == "media_interface" and value:
        try:
            ipaddress.ip_address(value.split("!")[0].split("/")[-1])
        except ValueError:
            raise _fail(path, text, key, f"not an IP address: {value!r}") from None
    if key == "media_ng":
        try:
            parse_hostport(value)
        except ValueError as exc:
            raise _fail(path, text, key, str(exc)) from None
        return value
    if key == "media_relay":
        relays = []
        for entry in value:
            if not isinstance(entry, dict) or set(entry) - {"name", "address", "weight"}:
                raise _fail(path, text, key, "each [[media_relay]] has name, address, weight")
            name, address, weight = entry.get("name"), entry.get("address"), entry.get("weight", 1)
            if not isinstance(name, str) or not name or name == "local":
                raise _fail(path, text, key, "name: a string other than 'local' (the own one)")
            if not isinstance(address, str):
                raise _fail(path, text, key, f"{name}: address is HOST:PORT")
            try:
                parse_hostport(address)
            except ValueError as exc:
                raise _fail(path, text, key, f"{name}: {exc}") from None
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                raise _fail(path, text, key, f"{name}: weight is an integer >= 0")
            relays.append(MediaRelaySetting(name, address, weight))
        if len({r.name for r in relays}) != len(relays):
            raise _fail(path, text, key, "names must be unique")
        return tuple(relays)
    if key == "etcd_members":
        for entry in value:
            name, sep, ip = str(entry).partition("=")
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise _fail(path, text, key, f'each entry "NAME=IP", got {entry!r}') from None
            if not sep or not name:
                raise _fail(path, text, key, f'each entry "NAME=IP", got {entry!r}')
        return tuple(value)
    if key in ("etcd_client_port", "etcd_peer_port") and not 0 < value < 65536:
        raise _fail(path, text, key, "a port between 1 and 65535")
    if key == "failover" and value not in ("manual", "automatic"):
        raise _fail(path, text, key, "manual or automatic")
    if key == "outbox_commit_window":
        if not 0 <= value <= 1:
            raise _fail(path, text, key, "between 0 and 1 second (a BYE's 200 waits for it)")
        return float(value)
    if key == "failover_ttl" and value < 2:
        raise _fail(path, text, key, "at least 2 seconds")
    if key == "failover_anti_flap":
        if value < 0:
            raise _fail(path, text, key, "must not be negative")
        return float(value)
    if key == "route":
        routes = []
        for entry in value:
            if not isinstance(entry, dict):
                raise _fail(path, text, key, "each [[route]] is a table")
            prefix = entry.get("prefix", "")
            dests = entry.get("destinations")
            if not isinstance(prefix, str) or (not prefix.isdigit() and prefix != ""):
                raise _fail(path, text, key, f"prefix must be digits, got {prefix!r}")
            if (
                not isinstance(dests, list)
                or not dests
                or not all(isinstance(d, str) and d.startswith(("sip:", "sips:")) for d in dests)
            ):
                raise _fail(path, text, key, "destinations must be a list of sip: URIs")
            routes.append(StaticRoute(prefix, tuple(dests)))
        return tuple(routes)
    return value


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)
