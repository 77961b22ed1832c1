"""``smartswitch cluster ...``: set up the replication scheme and look at the cluster."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, TextIO

from smartswitch.cluster.bus import PATHS, BusClient, BusError, Peer
from smartswitch.cluster.consensus import (
    LEADER_KEY,
    ConsensusError,
    EtcdClient,
    FlapGuard,
    handover_seconds,
)
from smartswitch.cluster.dns import DnsError, DnsNode, zone_records
from smartswitch.cluster.nodes import ask_status, list_nodes
from smartswitch.cluster.promotion import PromotionError
from smartswitch.cluster.promotion import promote as _promote
from smartswitch.cluster.promotion import rejoin as _rejoin
from smartswitch.cluster.replication import ClusterError
from smartswitch.cluster.replication import add_replica as _add_replica
from smartswitch.cluster.replication import init_primary as _init_primary
from smartswitch.cluster.signing import Signer, derive_key
from smartswitch.cluster.vip import VipStatus, since_text
from smartswitch.runtime.config import NodeConfig, parse_hostport
from smartswitch.runtime.primary import ClusterView, cluster_view


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
    """Every node: up or down as the membership table of this node (else of the first node
    that answers) has it from the heartbeats, its load, and its own account of itself
    (``/cluster/status``); all read on the signed cluster bus."""
    from smartswitch.store.database import create_engine, database_url, session_factory

    if not config.cluster_secret:
        print("smartswitch: cluster_secret is not set in the node config", file=sys.stderr)
        return 1
    engine = create_engine(database_url(config.data_dir, config.database_url))
    try:
        async with session_factory(engine)() as session:
            nodes = await list_nodes(session)
    finally:
        await engine.dispose()
    peers = [Peer(node.name, node.http_address) for node in nodes]
    if not peers:
        # Nodes register themselves in a shared database only; a node with its own (SQLite)
        # database is asked alone, at its HTTP address.
        peers = [Peer(config.name, config.http_listen)]
    # Signed as this node: the command runs with its config, and so holds its secret.
    client = BusClient(Signer(config.name, derive_key(config.cluster_secret)), timeout=2.0)
    try:
        seen_by, members = await _members(client, config, peers)
        asked = [
            p
            for p in peers
            if members is None or p.name == config.name or members.get(p.name, {}).get("up")
        ]
        statuses = await asyncio.gather(*(ask_status(client, peer) for peer in asked))
    finally:
        await client.aclose()
    by_name = {row["node"]: row for row in statuses}
    names = sorted({p.name for p in peers} | set(members or {}))
    rows = [_row(name, (members or {}).get(name), by_name.get(name), seen_by) for name in names]
    if fmt == "json":
        json.dump(rows, out, indent=2, default=str)
        out.write("\n")
    else:
        _table(rows, out)
    return 0 if rows and all(r["state"] == "up" for r in rows) else 1


async def _members(
    client: BusClient, config: NodeConfig, peers: list[Peer]
) -> tuple[str, dict[str, dict[str, Any]] | None]:
    """The membership table, from this node, else from the first other node that answers:
    (who answered, the table by node name); ("", None) if no node answers."""
    own = [p for p in peers if p.name == config.name] or [Peer(config.name, config.http_listen)]
    for peer in [*own, *(p for p in peers if p.name != config.name)]:
        try:
            data = await client.get(peer, PATHS.members)
            return peer.name, {str(m["node"]): m for m in data["members"]}
        except (BusError, KeyError, TypeError):
            continue
    return "", None


def _row(
    name: str, member: dict[str, Any] | None, status: dict[str, Any] | None, seen_by: str
) -> dict[str, Any]:
    beat = (member or {}).get("heartbeat") or {}
    if member is None:
        state = "unknown"  # no table answered, or not in it yet
    elif member.get("up"):
        state = "up"
    else:
        state = "down" if member.get("age") is not None else "never heard"
    row: dict[str, Any] = {
        "node": name,
        "state": state,
        "seen_by": seen_by,
        "last_seen": None if member is None else member.get("age"),
        **{k: beat[k] for k in _FIGURES if k in beat},
    }
    if status is not None:
        row.update({k: v for k, v in status.items() if k not in row or k == "reachable"})
        row["node"] = name
    else:
        row["reachable"] = False
    return row


_FIGURES = ("calls", "cps", "capacity", "outbox_depth", "version", "db_role")


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
        "state",
        "last seen",
        "calls",
        "cps",
        "capacity",
        "outbox",
        "version",
        "role",
        "io/sql",
        "lag",
        "last delivery",
        "shared IP",
        "epoch",
        "failover",
        "error",
    )
    lines = [header]
    for row in rows:
        db = row.get("db") or {}
        last = row.get("last_delivery")
        seen = row.get("last_seen")
        role = str(db.get("role") or row.get("db_role") or "?")
        lines.append(
            (
                str(row["node"]),
                str(row["state"]),
                "-" if seen is None else f"{float(seen):.1f} s ago",
                str(row.get("calls", "-")),
                str(row.get("cps", "-")),
                str(row.get("capacity", "-")),
                str(row.get("outbox_depth", "-")),
                str(row.get("version", "-")),
                role + (" (read-only)" if row.get("read_only") else ""),
                f"{db.get('io_running') or '-'}/{db.get('sql_running') or '-'}",
                "-" if db.get("lag") is None else f"{db['lag']} s",
                time.strftime("%H:%M:%S", time.localtime(last)) if last else "-",
                _vip_cell(row.get("vip")),
                str(db.get("epoch") or "-"),
                str(db.get("failover") or "-"),
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


# --- replacing the primary -----------------------------------------------------------------


async def _cluster_view(config: NodeConfig) -> ClusterView:
    from sqlalchemy import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from smartswitch.cluster.role import database_role
    from smartswitch.store.database import create_engine, database_url, session_factory

    if not config.cluster_secret:
        raise ClusterError("cluster_secret is not set in the node config")
    url = database_url(config.data_dir, _local_url(config))
    engine = create_engine(url)
    # The other nodes are asked on the signed cluster bus, as this node (see status()).
    client = BusClient(Signer(config.name, derive_key(config.cluster_secret)), timeout=3.0)
    try:
        role = await database_role(engine, config.db_scheme)
        return await cluster_view(config, session_factory(engine), role, client)
    except SQLAlchemyError as exc:
        # Said, not a traceback: an operator runs this when things are down.
        where = make_url(url)
        raise ClusterError(
            f"this node's database at {where.host}:{where.port} does not answer "
            f"({type(getattr(exc, 'orig', None) or exc).__name__}): start it, or run the "
            "command on a node whose database answers"
        ) from exc
    finally:
        await client.aclose()
        await engine.dispose()


def promote(config: NodeConfig, node: str, reason: str, out: TextIO) -> int:
    """``smartswitch cluster promote NODE``: a switchover when the primary answers, a
    failover when it does not (:func:`smartswitch.cluster.promotion.promote`)."""
    try:
        view = asyncio.run(_cluster_view(config))
        candidate = view.servers.get(node)
        if candidate is None:
            known = ", ".join(sorted(view.servers))
            raise PromotionError(
                f"promotion refused: {node} is not a node that answers (answering: {known}"
                + (f"; not answering: {', '.join(view.unreachable)}" if view.unreachable else "")
                + ")"
            )
        if view.primary is not None and view.primary.address == candidate.address:
            out.write(f"{node} is the primary already (epoch {view.epoch})\n")
            return 0
        others = [
            s
            for s in view.servers.values()
            if s.address != candidate.address
            and (view.primary is None or s.address != view.primary.address)
        ]
        result = _promote(
            candidate,
            others,
            view.primary,
            cluster_secret=config.cluster_secret,
            reason=reason or f"manual promotion of {node}",
            automatic=False,
        )
    except (PromotionError, ClusterError) as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    for step in result.steps:
        out.write(f"  {step}\n")
    if result.rejoined is not None and result.rejoined.errant:
        out.write(
            "  the old primary had errant transactions, discarded by its snapshot: "
            + ", ".join(map(str, result.rejoined.errant))
            + "\n"
        )
    for name in result.left_out:
        out.write(f"  {name} did not answer: run `smartswitch cluster rejoin` on it\n")
    out.write(f"{result.primary} is the primary of epoch {result.promotion.epoch}\n")
    if config.etcd_members:
        try:
            asyncio.run(_record_manual(config, node))
            out.write("  etcd: a promotion by hand recorded (the anti-flap block is lifted)\n")
        except ConsensusError as exc:
            print(f"smartswitch: etcd: the promotion was not recorded: {exc}", file=sys.stderr)
        # Configuration changes are taken only by the node holding the leader lease (the write
        # fence), and that node takes it at its next lease round, after the old holder gave it
        # up: returning before then left an operator's next change refused for a few seconds.
        wait = handover_seconds(config.failover_ttl)
        try:
            taken = asyncio.run(_leader_taken(config, node, wait))
        except ConsensusError as exc:
            print(f"smartswitch: etcd: the leader lease could not be read: {exc}", file=sys.stderr)
        else:
            if taken is not None:
                out.write(
                    f"  etcd: {node} holds the leader lease ({taken:.1f} s after the promotion)\n"
                )
            else:
                out.write(
                    f"  etcd: {node} has not taken the leader lease within {wait} s: is its "
                    "node running? `smartswitch cluster status` shows who holds it\n"
                )
    return 0


async def _leader_taken(config: NodeConfig, node: str, wait: float) -> float | None:
    """Seconds until ``node`` held the leader key, or None if it did not within ``wait``."""
    started = time.monotonic()
    async with EtcdClient(config.etcd_endpoints) as client:
        while True:
            holder = await client.get(LEADER_KEY)
            if holder is not None and holder.text == node:
                return time.monotonic() - started
            if time.monotonic() - started >= wait:
                return None
            await asyncio.sleep(0.25)


async def _record_manual(config: NodeConfig, node: str) -> None:
    async with EtcdClient(config.etcd_endpoints) as client:
        await FlapGuard(client, period=config.failover_anti_flap).record_manual(node)


def rejoin(config: NodeConfig, out: TextIO) -> int:
    """``smartswitch cluster rejoin``: this node's database becomes a replica of the primary
    of the newest epoch (rebuilt from a snapshot when it has errant transactions)."""
    try:
        view = asyncio.run(_cluster_view(config))
        own = view.servers[config.name]
        if view.primary is None:
            raise PromotionError("no node names a primary: nothing to rejoin")
        if view.primary.address == own.address:
            raise PromotionError(
                f"this node is the primary of epoch {view.epoch}: nothing to rejoin"
            )
        result = _rejoin(own, view.primary, cluster_secret=config.cluster_secret)
    except (PromotionError, ClusterError) as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    if result.errant:
        out.write(
            "errant transactions, discarded (rebuilt from a snapshot of the primary): "
            + ", ".join(map(str, result.errant))
            + "\n"
        )
    if not result.changed:
        out.write(f"already a replica of {view.primary}\n")
    else:
        out.write(f"a replica of {view.primary} (epoch {view.epoch}) at {result.gtid or '-'}\n")
    return 0
