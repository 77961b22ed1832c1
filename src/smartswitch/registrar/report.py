"""``smartswitch registrations [--outbound]``: the registrar's state, read from a running node.

The state lives in the node's memory (the location service, the outbound clients), so the
command asks the node over HTTP (``/api/v1/registrations[/outbound]`` on ``http_listen``)
rather than the database: what it prints is what the node acts on, refresh timers included.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, TextIO

__all__ = ["RegistrationsError", "fetch", "print_registrations"]


class RegistrationsError(RuntimeError):
    """The node could not be asked (not running, wrong address)."""


def base_url(http_listen: str) -> str:
    """The node's HTTP address as a client reaches it (a wildcard bind means loopback)."""
    host, _, port = http_listen.rpartition(":")
    if host in ("0.0.0.0", "", "[::]", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def fetch(
    url: str, outbound: bool, timeout: float = 5.0, token: str | None = None
) -> dict[str, Any]:
    path = "/api/v1/registrations/outbound" if outbound else "/api/v1/registrations"
    request = urllib.request.Request(url.rstrip("/") + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: dict[str, Any] = json.load(response)
            return data
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RegistrationsError(f"cannot read {url}{path}: {exc}") from None


def _seconds(value: object) -> str:
    return "-" if value is None else f"{float(value):.0f}s"  # type: ignore[arg-type]


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def print_registrations(data: dict[str, Any], outbound: bool, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump(data, out, indent=2)
        out.write("\n")
        return
    if not data.get("registrar"):
        out.write(f"node {data.get('node')}: no registrar (lab mode)\n")
        return
    if outbound:
        rows = [["PEER", "USER", "REGISTRAR", "STATE", "EXPIRES IN", "NEXT", "FAILS", "LAST"]]
        for r in data["registrations"]:
            last = "" if r["last_status"] is None else f"{r['last_status']} {r['last_reason']}"
            rows.append(
                [
                    r["peer"],
                    r["username"],
                    f"{r['registrar']} ({r['transport']})",
                    r["state"],
                    _seconds(r["registered_for"]),
                    _seconds(r["next_action_in"]),
                    str(r["failures"]),
                    last,
                ]
            )
        _table(rows, out)
        out.write(f"{len(rows) - 1} outbound registrations on node {data['node']}\n")
        return
    rows = [["AOR", "CONTACT", "EXPIRES IN", "SOURCE", "USER AGENT"]]
    for b in data["bindings"]:
        rows.append([b["aor"], b["contact"], f"{b['expires_in']}s", b["source"], b["user_agent"]])
    _table(rows, out)
    out.write(f"{len(rows) - 1} bindings on node {data['node']}\n")
    bans = data.get("bans") or {}
    for ip, left in sorted(bans.items()):
        out.write(f"banned: {ip} for {left}s more\n")
