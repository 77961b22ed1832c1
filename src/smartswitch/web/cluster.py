"""The cluster as the web side shows it: this node's status, and every node's row for the
Cluster page and the peer page.

Nodes talk to each other only on the signed cluster bus (:mod:`smartswitch.cluster.nodebus`,
mounted by :func:`smartswitch.web.app.create_app`): :func:`node_status` is what this node
answers to ``GET /cluster/status`` there. The handlers run on the event loop, where the state
they read lives.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from smartswitch.cluster.bus import Peer
from smartswitch.cluster.membership import NodeState
from smartswitch.cluster.nodes import database_address, list_nodes
from smartswitch.cluster.vip import since_text
from smartswitch.web.ports import NodePort


def node_status(node: NodePort) -> dict[str, Any]:
    """What this node can tell about itself: role, replication, outbox, balances, its
    registrations with suppliers."""
    counters = node.counters()
    release = node.release
    status: dict[str, Any] = {
        "node": node.config.node_name or node.config.node_id,
        "db": node.db_role.as_dict(),
        "read_only": node.read_only,
        "database_address": database_address(node.config.database_url),
        "calls": counters.in_progress,
        # Version skew during a rolling upgrade: what this node runs, on which schema.
        "version": release.version,
        "schema_head": release.schema_head,
        "db_schema": release.db_schema,
    }
    vip = node.vip_status()
    if vip is not None:
        # Who holds the shared IP and since when: every node's own keepalived's word.
        status["vip"] = vip.as_dict()
    registrar = node.registrar
    if registrar is not None:
        # This node's registrations with suppliers (each node registers its own account):
        # the peer page shows every node's, read from each node's status.
        status["outbound"] = registrar.outbound()
    delivery = counters.delivery
    if delivery is not None:
        status.update(
            outbox_depth=delivery.outbox_depth,
            delivered=delivery.delivered,
            last_delivery=delivery.last_delivery,
            delivery_error=delivery.last_error,
            unconfirmed=delivery.unconfirmed,
            requeued=delivery.requeued,
            config_version=node.config_version,
            balances={
                name: str(balance.quantize(Decimal("0.0001")))
                for name, balance in node.balances().items()
            },
        )
    return status


def member_view(state: NodeState | None) -> dict[str, Any]:
    """A node's row of the membership table: up or down (from its heartbeats, within 5 s of
    its death), when last heard, and the figures of its last heartbeat."""
    if state is None:
        return {"state": "unknown", "age": None}
    view: dict[str, Any] = {
        "state": "up" if state.up else ("down" if state.age is not None else "never heard"),
        "age": None if state.age is None else round(state.age, 1),
    }
    beat = state.heartbeat
    if beat is not None:
        view.update(
            calls=beat.calls,
            cps=beat.cps,
            capacity=beat.capacity,
            outbox_depth=beat.outbox_depth,
            version=beat.version,
            db_role=beat.db_role,
            alive=beat.alive,
        )
    return view


async def cluster_overview(node: NodePort) -> list[dict[str, Any]]:
    """Every node of the cluster, by name: its membership (``member``: up or down from the
    heartbeats) and its own account of itself (this one directly; the others', when they
    are up, on the bus). A single node shows itself alone."""
    me_name = node.config.node_name or node.config.node_id
    bus = node.bus
    members = {s.node: s for s in bus.members()} if bus is not None else {}
    me = {"reachable": True, **node_status(node), "member": member_view(members.get(me_name))}
    if bus is None:
        me["member"]["state"] = "up"
    config = node.config
    sessions = node.sessions
    if sessions is None or config.db_scheme == "single" or not config.cluster_secret:
        return [_with_ages(me)]
    async with sessions() as session:
        nodes = {n.name: n.http_address for n in await list_nodes(session)}
    names = sorted((set(nodes) | set(members)) - {me_name})
    up = [
        Peer(name, nodes.get(name) or _heard_address(members[name]))
        for name in names
        if name in members and members[name].up
    ]
    statuses = await bus.statuses(up) if bus is not None else {}
    rows = [me]
    for name in names:
        member = member_view(members.get(name))
        if name in statuses:
            row = {**statuses[name], "node": name, "member": member}
        elif bus is None:
            row = {"node": name, "reachable": False, "error": "no cluster bus", "member": member}
        else:
            row = {"node": name, "reachable": False, "error": member["state"], "member": member}
        rows.append(row)
    return sorted((_with_ages(row) for row in rows), key=lambda row: str(row["node"]))


def _heard_address(state: NodeState) -> str:
    return state.heartbeat.http_address if state.heartbeat is not None else ""


def _with_ages(row: dict[str, Any]) -> dict[str, Any]:
    last = row.get("last_delivery")
    row["last_delivery_ago"] = None if last is None else max(0, int(time.time() - last))
    vip = row.get("vip")
    if isinstance(vip, dict) and isinstance(vip.get("since"), int | float):
        row["vip_since"] = since_text(float(vip["since"]))
    return row
