"""``smartswitch cluster ...``: set up the replication scheme and look at the cluster."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, TextIO

from smartswitch.cluster.dns import DnsError, DnsNode, zone_records
from smartswitch.cluster.nodes import ask_node, list_nodes, status_token
from smartswitch.cluster.replication import ClusterError
from smartswitch.cluster.replication import add_replica as _add_replica
from smartswitch.cluster.replication import init_primary as _init_primary
from smartswitch.cluster.vip import VipStatus, since_text
from smartswitch.runtime.config import NodeConfig, parse_hostport


def _local_url(config: NodeConfig) -> str:
    if not config.database_url:
        raise ClusterError("database_url (this node's MariaDB) is not set in the node config")
    return config.database_url


def init_primary(config: NodeConfig) -> int:
    try:
        _init_primary(
            _local_url(config),
            config.cluster_secret,
            node_name=config.node_name or config.node_id,
        )
    except ClusterError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    print("this node's database is the primary; replicas can be added")
    return 0


def add_replica(config: NodeConfig) -> int:
    try:
        if not config.primary_database_url:
            raise ClusterError("primary_database_url is not set in the node config")
        gtid = _add_replica(_local_url(config), config.primary_database_url, config.cluster_secret)
    except ClusterError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    print(f"replicating from the primary, starting at GTID {gtid}")
    return 0


async def status(config: NodeConfig, fmt: str, out: TextIO) -> int:
    """Every registered node's own account of itself (its /cluster/status)."""
    from smartswitch.store.database import create_engine, database_url, session_factory

    engine = create_engine(database_url(config.data_dir, config.database_url))
    try:
        async with session_factory(engine)() as session:
            nodes = await list_nodes(session)
    finally:
        await engine.dispose()
    token = status_token(config.cluster_secret) if config.cluster_secret else ""
    targets = [(node.name, node.http_address) for node in nodes]
    if not targets:
        # Nodes register themselves in a shared database only; a node with its own (SQLite)
        # database is asked alone, at its HTTP address.
        targets = [(config.name, config.http_listen)]
    rows = await asyncio.gather(*(ask_node(name, address, token) for name, address in targets))
    if fmt == "json":
        json.dump(rows, out, indent=2, default=str)
        out.write("\n")
    else:
        _table(rows, out)
    return 0 if rows and all(r["reachable"] for r in rows) else 1


async def dns(config: NodeConfig, zone: str, ttl: int, out: TextIO) -> int:
    """The zone-file records of the cluster's nodes (their dedicated IPs, from the nodes
    table; this node alone with its own database) and of the shared IP."""
    from smartswitch.store.database import create_engine, database_url, session_factory

    engine = create_engine(database_url(config.data_dir, config.database_url))
    try:
        async with session_factory(engine)() as session:
            rows = await list_nodes(session)
    finally:
        await engine.dispose()
    try:
        nodes = [
            DnsNode(row.name, row.dedicated_ip, _port(row.sip_address))
            for row in rows
            if row.dedicated_ip
        ]
        if not rows and config.dedicated_ip:
            nodes = [DnsNode(config.name, config.dedicated_ip, _port(config.sip_listen))]
        shared = config.shared_ip or next((row.shared_ip for row in rows if row.shared_ip), "")
        lines = zone_records(zone, nodes, shared, ttl=ttl)
    except DnsError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    out.write(f"; smartswitch cluster dns {zone}: {len(nodes)} node(s)")
    out.write(f", shared IP {shared}\n" if shared else ", no shared IP\n")
    for line in lines:
        out.write(line + "\n")
    return 0


def _port(sip_address: str) -> int:
    try:
        return parse_hostport(sip_address)[1]
    except ValueError:
        return 5060


def _table(rows: list[dict[str, Any]], out: TextIO) -> None:
    header = (
        "node",
        "role",
        "reachable",
        "io/sql",
        "lag",
        "outbox",
        "last delivery",
        "shared IP",
        "error",
    )
    lines = [header]
    for row in rows:
        db = row.get("db") or {}
        last = row.get("last_delivery")
        lines.append(
            (
                str(row["node"]),
                str(db.get("role", "?")) + (" (read-only)" if row.get("read_only") else ""),
                "yes" if row["reachable"] else "no",
                f"{db.get('io_running') or '-'}/{db.get('sql_running') or '-'}",
                "-" if db.get("lag") is None else f"{db['lag']} s",
                str(row.get("outbox_depth", "-")),
                time.strftime("%H:%M:%S", time.localtime(last)) if last else "-",
                _vip_cell(row.get("vip")),
                str(row.get("error") or db.get("last_error") or row.get("delivery_error") or ""),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
        out.write("\n")


def _vip_cell(vip: Any) -> str:
    """ "holds 10.0.0.100 since ..." / "backup since ..." / "-" (not taking part)."""
    if not isinstance(vip, dict):
        return "-"
    try:
        status = VipStatus.from_dict(vip)
    except (KeyError, TypeError, ValueError):
        return "?"
    what = f"holds {status.shared_ip}" if status.holder else status.state.value.lower()
    return f"{what} since {since_text(status.since)}"
