"""What the node's own database is, checked continuously: it decides whether this node's
configuration may be edited (the primary's, or a Galera node in the primary component) and
what ``smartswitch cluster status`` reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from smartswitch.cluster.replication import DatabaseRole


async def database_role(engine: AsyncEngine, scheme: str) -> DatabaseRole:
    if engine.dialect.name == "sqlite":
        return DatabaseRole("single", True, "single")
    try:
        async with engine.connect() as conn:
            if scheme == "galera":
                rows = await conn.execute(text("SHOW GLOBAL STATUS LIKE 'wsrep_%'"))
                status = {str(r[0]).lower(): str(r[1]) for r in rows}
                component = status.get("wsrep_cluster_status", "")
                ready = status.get("wsrep_ready", "").upper() == "ON"
                return DatabaseRole(
                    "galera",
                    ready and component == "Primary",
                    "galera",
                    galera_status=f"{component}, ready={'ON' if ready else 'OFF'}, "
                    f"size={status.get('wsrep_cluster_size', '?')}",
                )
            read_only = bool((await conn.execute(text("SELECT @@global.read_only"))).scalar())
            result = await conn.execute(text("SHOW SLAVE STATUS"))
            row = result.mappings().first()
            state = await _cluster_state(conn)
    except Exception as exc:
        return DatabaseRole(scheme, False, "unreachable", last_error=str(exc)[:200])
    if row is None:
        # Read-only without a primary of its own, in the replication scheme: a primary that was
        # fenced (or drained for a switchover) and is not yet a replica of the new one.
        fenced = "fenced" if scheme == "replication" else "single"
        role = fenced if read_only else "primary"
        return DatabaseRole(scheme, not read_only, role, **state)
    slave: dict[str, Any] = dict(row)
    lag = slave.get("Seconds_Behind_Master")
    return DatabaseRole(
        scheme,
        False,
        "replica",
        primary=f"{slave.get('Master_Host')}:{slave.get('Master_Port')}",
        io_running=str(slave.get("Slave_IO_Running", "")),
        sql_running=str(slave.get("Slave_SQL_Running", "")),
        lag=int(lag) if lag is not None else None,
        last_error=str(slave.get("Last_IO_Error") or slave.get("Last_SQL_Error") or ""),
        **state,
    )


async def _cluster_state(conn: AsyncConnection) -> dict[str, Any]:
    """The epoch and primary the replicated cluster state names (empty before the first
    promotion is recorded, or on a schema without the table)."""
    try:  # a failed SELECT leaves a MariaDB transaction usable
        query = text("SELECT epoch, primary_node, primary_address FROM cluster_state")
        row = (await conn.execute(query)).first()
    except Exception:
        return {}
    if row is None:
        return {}
    return {"epoch": int(row[0]), "primary_node": str(row[1]), "primary_address": str(row[2])}
