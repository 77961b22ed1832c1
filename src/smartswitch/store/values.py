"""Text forms of configuration values, as stored in the database and written in provisioning.

Parsers raise :class:`ValueError` with a message fit for an operator; the ``format_*``
functions produce the canonical text that is stored, so the same entry written two ways
("10.0.0.0/8" and "10.0.0.0/08") is stored once and re-provisioning sees no change.
"""

from __future__ import annotations

import ipaddress
import re

from smartswitch.model.config import AclEntry

__all__ = ["format_acl_entry", "parse_acl_entry", "parse_address", "parse_port"]

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def parse_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be 1-65535, got {text!r}")
    return int(text)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        # Host bits set ("10.0.0.1/8") is almost always a typo for the network or for a /32;
        # refusing beats silently widening an ACL.
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"not an IP network: {text!r}") from exc
        raise ValueError(f"{text!r} has host bits set (the network is {loose})") from exc


def parse_acl_entry(text: str) -> AclEntry:
    """One ACL entry: ``CIDR``, ``CIDR:port``, ``[v6]/len:port``; a bare address is a host
    (/32 or /128).  IPv6 without a port may also be written without brackets."""
    text = text.strip()
    port: int | None = None
    if text.startswith("["):
        address, close, rest = text[1:].partition("]")
        if not close:
            raise ValueError(f"missing ']' in {text!r}")
        length = ""
        if rest.startswith("/"):
            length_text, colon, port_text = rest[1:].partition(":")
            length, rest = "/" + length_text, colon + port_text
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected {rest!r} after ']' in {text!r}")
            port = parse_port(rest[1:])
        if ":" not in address:
            raise ValueError(f"brackets are for IPv6 addresses, got {text!r}")
        network = _network(address + length)
    elif text.count(":") >= 2:  # IPv6 without brackets cannot carry a port
        network = _network(text)
    else:
        cidr, sep, port_text = text.partition(":")
        if sep:
            port = parse_port(port_text)
        network = _network(cidr)
    return AclEntry(network, port)


def format_acl_entry(entry: AclEntry) -> str:
    """The canonical text of ``entry``, which :func:`parse_acl_entry` reads back."""
    net = entry.network
    if entry.port is None:
        return str(net)
    if net.version == 6:
        return f"[{net.network_address}]/{net.prefixlen}:{entry.port}"
    return f"{net}:{entry.port}"


def parse_address(text: str) -> tuple[str, int | None]:
    """A signalling address ``host``, ``host:port`` or ``[v6]:port``: (host, port or None).

    The host is an IP address or a DNS name; a missing port means the transport's default.
    """
    text = text.strip()
    port: int | None = None
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close:
            raise ValueError(f"missing ']' in {text!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected {rest!r} after ']' in {text!r}")
            port = parse_port(rest[1:])
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host!r}") from None
        return host, port
    if text.count(":") >= 2:
        raise ValueError(f"write an IPv6 address with a port as [address]:port, got {text!r}")
    host, sep, port_text = text.partition(":")
    if sep:
        port = parse_port(port_text)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
            raise ValueError(f"not an IP address or host name: {host!r}") from None
    return host, port
