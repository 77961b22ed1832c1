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

from smartswitch.routing.static import StaticRoute


class ConfigError(ValueError):
    pass


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
    if not config.reg_min_expires <= config.reg_default_expires <= config.reg_max_expires:
        raise _fail(
            path,
            text,
            "reg_default_expires",
            "must lie between reg_min_expires and reg_max_expires",
        )
    return config


def _type_name(expected: type | tuple[type, ...]) -> str:
    if expected == (int, float):
        return "a number"
    names = {str: "a string", bool: "true or false", list: "a list"}
    return names.get(expected, str(expected)) if isinstance(expected, type) else str(expected)


def _convert(path: Path, text: str, key: str, value: Any) -> Any:
    if key == "data_dir":
        return Path(value)
    if key in ("sip_listen", "http_listen") or (key == "tls_listen" and value):
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
    if key == "db_scheme" and value not in ("single", "replication", "galera"):
        raise _fail(path, text, key, "one of single, replication, galera")
    if key in ("dedicated_ip", "shared_ip") and value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise _fail(path, text, key, f"not an IP address: {value!r}") from None
    if key in ("reg_min_expires", "reg_max_expires", "reg_default_expires") and value < 1:
        raise _fail(path, text, key, "must be at least 1 (seconds)")
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
