"""A call's capture: the pcap file named by its CDR, served from this node's copy.

A capture lives at ``<data_dir>/captures/<node>/yyyy/mm/dd/<CDR id>.pcap`` on the node that
handled the call and, copied by the file sync, on every other node: any node's UI and API
serve it from their own disk (:meth:`~smartswitch.web.ports.NodePort.capture_file`). The CDR
lists carry ``capture``, the download's path, when this node holds the file.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from fastapi.responses import FileResponse

from smartswitch.web.ports import NodePort


def download(node: NodePort, origin: str, cdr_id: str) -> FileResponse:
    path = node.capture_file(origin, cdr_id)
    if path is None:
        raise HTTPException(404, "no capture of that call on this node")
    return FileResponse(
        path,
        media_type="application/vnd.tcpdump.pcap",
        filename=f"{cdr_id}.pcap",
    )


def link(prefix: str, cdr: dict[str, Any]) -> str:
    return f"{prefix}/captures/{cdr['node']}/{cdr['id']}.pcap"


def with_links(node: NodePort, prefix: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (CDR dicts) with ``capture``: the download's path, or None when this node
    holds no capture of the call."""
    for row in rows:
        found = node.capture_file(str(row["node"]), str(row["id"])) is not None
        row["capture"] = link(prefix, row) if found else None
    return rows
