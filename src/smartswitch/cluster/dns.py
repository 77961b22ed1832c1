"""DNS records for customers who prefer a name to an address (``smartswitch cluster dns``).

What is printed is a zone-file fragment (RFC 1035 master format) to paste into the zone:

- ``sip.ZONE`` A (AAAA) -> the shared IP, when there is one: the address that moves to a live
  node (VRRP); and ``NODE.ZONE`` A (AAAA) -> each node's dedicated IP.
- ``_sip._udp.ZONE`` and ``_sip._tcp.ZONE`` SRV (RFC 2782): the shared IP's name at priority
  10, every node at priority 20 with equal weights. A client tries the lowest priority first
  and spreads by weight within one priority (RFC 3263 4.4), so the shared IP takes the calls
  while it answers, and a client that cannot reach it falls back to the nodes, spread evenly.
  Without a shared IP the nodes share priority 10.

The TTL is short (60 s by default): the records name fixed addresses, but a node replaced or
renumbered should not linger in caches.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DnsError", "DnsNode", "zone_records"]

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: The shared IP's owner name under the zone.
SHARED_NAME = "sip"


class DnsError(ValueError):
    """The zone or a node cannot be written as DNS records."""


@dataclass(frozen=True, slots=True)
class DnsNode:
    """A node as DNS sees it: its name (one label), dedicated IP and SIP port."""

    name: str
    address: str
    port: int = 5060


def _zone(zone: str) -> str:
    name = zone.strip().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise DnsError(f"not a DNS zone name: {zone!r}")
    return name.lower() + "."


def _label(name: str) -> str:
    """A node's name as one DNS label: lower case, ``_`` and ``.`` become ``-``."""
    label = re.sub(r"[_.]", "-", name.strip().lower())
    if not _LABEL.fullmatch(label):
        raise DnsError(f"node name {name!r} cannot be a DNS label (letters, digits, '-')")
    return label


def _address(text: str, what: str) -> tuple[str, str]:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise DnsError(f"{what}: not an IP address: {text!r}") from None
    return ("AAAA" if address.version == 6 else "A"), str(address)


def zone_records(
    zone: str, nodes: Sequence[DnsNode], shared_ip: str = "", *, ttl: int = 60
) -> list[str]:
    """The records, one a line, in zone-file syntax (see the module docstring)."""
    origin = _zone(zone)
    if not 1 <= ttl <= 2_147_483_647:
        raise DnsError(f"ttl: 1 to 2147483647 seconds, not {ttl}")
    if not nodes and not shared_ip:
        raise DnsError("no node has a dedicated IP and there is no shared IP: nothing to publish")
    lines: list[str] = []
    targets: list[tuple[int, int, int, str]] = []  # priority, weight, port, target
    ports = {node.port for node in nodes}
    labels: dict[str, str] = {}
    if shared_ip:
        kind, address = _address(shared_ip, "shared IP")
        name = f"{SHARED_NAME}.{origin}"
        lines.append(f"{name} {ttl} IN {kind} {address}")
        # The nodes listen on the shared IP on their own port; one port for all is the rule.
        port = ports.pop() if len(ports) == 1 else 5060
        targets.append((10, 0, port, name))
    node_priority = 20 if shared_ip else 10
    for node in nodes:
        label = _label(node.name)
        if label == SHARED_NAME:
            raise DnsError(f"node name {node.name!r} is the shared IP's name ({SHARED_NAME})")
        if label in labels:
            raise DnsError(f"nodes {labels[label]!r} and {node.name!r} have the same DNS name")
        labels[label] = node.name
        if not 1 <= node.port <= 65535:
            raise DnsError(f"node {node.name!r}: port {node.port} is not a port")
        kind, address = _address(node.address, f"node {node.name!r}")
        name = f"{label}.{origin}"
        lines.append(f"{name} {ttl} IN {kind} {address}")
        targets.append((node_priority, 10, node.port, name))
    for proto in ("udp", "tcp"):
        for priority, weight, port, target in targets:
            lines.append(f"_sip._{proto}.{origin} {ttl} IN SRV {priority} {weight} {port} {target}")
    return lines
