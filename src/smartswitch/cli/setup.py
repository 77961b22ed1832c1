"""``smartswitch init`` and ``smartswitch units``: what an operator runs once on a new host.

``init`` writes a commented node configuration with a fresh cluster secret and asks nothing it
can infer: the node's name is the host's name, its dedicated IP the address the host's name
resolves to, its data directory ``/var/lib/smartswitch`` for a configuration under ``/etc``
(a service) and ``./smartswitch-data`` otherwise (a checkout). ``units`` writes the systemd
units shipped in the package, pointing at this installation's ``smartswitch`` command.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

__all__ = ["UNITS", "default_data_dir", "render_config", "write_config", "write_units"]

SERVICE_DATA_DIR = Path("/var/lib/smartswitch")
CHECKOUT_DATA_DIR = Path("smartswitch-data")
UNITS = ("smartswitch.service", "smartswitch-rsyncd.service", "smartswitch-keepalived.service")


def _template(name: str) -> str:
    return resources.files("smartswitch.cli").joinpath("templates", name).read_text("utf-8")


def default_data_dir(config_path: Path) -> Path:
    """Where a node configured by ``config_path`` keeps its data, when the file does not say."""
    return SERVICE_DATA_DIR if config_path.resolve().is_relative_to("/etc") else CHECKOUT_DATA_DIR


def _host_address() -> str:
    """The address this host's name resolves to: what other nodes will reach it at. Nothing is
    sent anywhere to find it."""
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return address


def render_config(
    *,
    node_name: str | None = None,
    dedicated_ip: str | None = None,
    data_dir: Path,
    sip_listen: str | None = None,
    http_listen: str | None = None,
    cluster_secret: str | None = None,
) -> str:
    ip = dedicated_ip or _host_address()
    name = node_name or socket.gethostname().split(".")[0] or "node1"
    return _template("node.toml.in").format(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        node_name=name,
        data_dir=str(data_dir),
        # A single node listens everywhere for SIP and keeps its web UI on loopback until the
        # operator decides to expose it; a cluster node is given its dedicated IP here.
        sip_listen=sip_listen or "0.0.0.0:5060",
        http_listen=http_listen or "127.0.0.1:8080",
        dedicated_ip=ip,
        cluster_secret=cluster_secret or secrets.token_urlsafe(48),
    )


def write_config(path: Path, text: str, *, force: bool = False) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds the cluster secret);
    an existing file is kept unless ``force``."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (give --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)


def smartswitch_command() -> str:
    """The absolute path of this installation's ``smartswitch`` command."""
    beside = Path(sys.executable).with_name("smartswitch")
    if beside.exists():
        return str(beside)
    found = shutil.which("smartswitch")
    return str(Path(found).resolve()) if found else f"{sys.executable} -m smartswitch"


def write_units(directory: Path, *, config: Path, data_dir: Path) -> list[Path]:
    """The systemd units, filled in for this installation, written into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in UNITS:
        text = _template(name).format(
            smartswitch=smartswitch_command(), config=config, data_dir=data_dir
        )
        target = directory / name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
