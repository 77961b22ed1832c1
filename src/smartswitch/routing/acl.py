"""Who is calling, by source address: the customers' IP access lists, indexed.

Every INVITE that arrives without digest credentials is attributed to a customer by its source
address and port.  Per address family the index keeps, for each prefix length that occurs,
longest first, a dict from network address (as an int) to the entries on that network; a match
masks the source address once per length and probes a dict.  The cost follows the number of
distinct prefix lengths (a handful), not the number of peers.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from smartswitch.model.config import Peer

__all__ = ["AclConflictError", "AclIndex"]


class AclConflictError(ValueError):
    """Two customers claim the same network and port: a call from there would be ambiguous."""

    def __init__(self, network: str, port: int | None, first: Peer, second: Peer) -> None:
        where = network if port is None else f"{network} port {port}"
        super().__init__(f"{where} is in the ACL of both {first.name!r} and {second.name!r}")
        self.network = network
        self.port = port
        self.peers = (first, second)


@dataclass(slots=True)
class _Slot:
    """The peers on one network: by exact source port, and for any port."""

    by_port: dict[int, Peer] = field(default_factory=dict)
    any_port: Peer | None = None


_Level = tuple[int, dict[int, _Slot]]  # (netmask as int, network int -> slot)


def _claim(current: Peer | None, peer: Peer, network: str, port: int | None) -> Peer:
    if current is not None and current.id != peer.id:
        raise AclConflictError(network, port, current, peer)
    return peer


def _levels(slots: dict[int, dict[int, _Slot]], bits: int) -> tuple[_Level, ...]:
    full = (1 << bits) - 1
    return tuple(
        (full ^ ((1 << (bits - length)) - 1), slots[length])
        for length in sorted(slots, reverse=True)
    )


def _address(ip: str) -> tuple[int, int] | None:
    """(4 or 6, address as int) for a textual IP address, None if it is not one.

    socket.inet_pton is strict and several times faster than ipaddress.ip_address.  An
    IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports for an
    IPv4 sender) is treated as the IPv4 address it carries.
    """
    try:
        if ":" not in ip:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0]), "big")
    except (OSError, ValueError):
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return 6, value


class AclIndex:
    """The enabled customers' ACL entries, matched by source IP and port.

    The most specific entry wins: the longest network prefix first, and on the same network an
    entry for the exact source port before a port-less entry (which matches any port).
    Disabled peers and peers that are not customers by role are left out: they never match.
    The same network and port in the ACLs of two customers is refused at build time
    (:class:`AclConflictError`), so the configuration forms can reject it.
    """

    __slots__ = ("_v4", "_v6")

    def __init__(self, peers: Iterable[Peer], *, role: str = "customer") -> None:
        """``role="did"``: index the enabled peers that deliver DIDs instead (the registrar's
        index, whatever their role: DID providers are usually suppliers)."""
        slots: dict[int, dict[int, dict[int, _Slot]]] = {4: {}, 6: {}}
        for peer in peers:
            wanted = peer.deliver_dids if role == "did" else peer.is_customer
            if not peer.enabled or not wanted:
                continue
            for entry in peer.acl:
                net = entry.network
                family = slots[net.version].setdefault(net.prefixlen, {})
                slot = family.setdefault(int(net.network_address), _Slot())
                if entry.port is None:
                    slot.any_port = _claim(slot.any_port, peer, str(net), None)
                else:
                    current = slot.by_port.get(entry.port)
                    slot.by_port[entry.port] = _claim(current, peer, str(net), entry.port)
        self._v4: tuple[_Level, ...] = _levels(slots[4], 32)
        self._v6: tuple[_Level, ...] = _levels(slots[6], 128)

    def match(self, ip: str, port: int) -> Peer | None:
        """The customer a packet from ``ip``:``port`` belongs to, or None (not a known peer)."""
        parsed = _address(ip)
        if parsed is None:
            return None
        version, value = parsed
        for mask, networks in self._v4 if version == 4 else self._v6:
            slot = networks.get(value & mask)
            if slot is not None:
                peer = slot.by_port.get(port) if slot.by_port else None
                if peer is None:
                    peer = slot.any_port
                if peer is not None:
                    return peer
        return None

    def __repr__(self) -> str:
        v4 = sum(len(networks) for _, networks in self._v4)
        v6 = sum(len(networks) for _, networks in self._v6)
        return f"<AclIndex {v4} IPv4 and {v6} IPv6 networks>"
