"""Attributing calls to customers by source address and port."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartswitch.model.config import AclEntry, Peer, PeerRole
from smartswitch.routing.acl import AclConflictError, AclIndex


def entry(network: str, port: int | None = None) -> AclEntry:
    return AclEntry(ipaddress.ip_network(network), port)


def customer(
    peer_id: int,
    *acl: AclEntry,
    role: PeerRole = PeerRole.CUSTOMER,
    enabled: bool = True,
) -> Peer:
    return Peer(
        id=peer_id,
        name=f"cust{peer_id}",
        role=role,
        account_id=peer_id,
        tariff_id=1,
        acl=acl,
        enabled=enabled,
    )


def matched_id(index: AclIndex, ip: str, port: int = 5060) -> int | None:
    peer = index.match(ip, port)
    return None if peer is None else peer.id


def test_exact_host_and_no_match() -> None:
    index = AclIndex([customer(1, entry("192.0.2.10/32"))])
    assert matched_id(index, "192.0.2.10") == 1
    assert matched_id(index, "192.0.2.11") is None
    assert matched_id(index, "198.51.100.1") is None


def test_longest_network_wins() -> None:
    index = AclIndex(
        [
            customer(1, entry("10.0.0.0/8")),
            customer(2, entry("10.1.0.0/16")),
            customer(3, entry("10.1.2.0/24")),
            customer(4, entry("10.1.2.3/32")),
        ]
    )
    assert matched_id(index, "10.1.2.3") == 4
    assert matched_id(index, "10.1.2.4") == 3
    assert matched_id(index, "10.1.3.4") == 2
    assert matched_id(index, "10.2.3.4") == 1
    assert matched_id(index, "11.0.0.1") is None


def test_port_specific_beats_port_less_on_the_same_network() -> None:
    index = AclIndex(
        [
            customer(1, entry("192.0.2.10/32")),
            customer(2, entry("192.0.2.10/32", 5080)),
        ]
    )
    assert matched_id(index, "192.0.2.10", 5080) == 2
    assert matched_id(index, "192.0.2.10", 5060) == 1


def test_port_mismatch_falls_back_to_a_shorter_network() -> None:
    index = AclIndex(
        [
            customer(1, entry("192.0.2.0/24")),
            customer(2, entry("192.0.2.10/32", 5080)),
        ]
    )
    assert matched_id(index, "192.0.2.10", 5080) == 2
    assert matched_id(index, "192.0.2.10", 5060) == 1  # the /32 is only for port 5080
    only_port = AclIndex([customer(2, entry("192.0.2.10/32", 5080))])
    assert matched_id(only_port, "192.0.2.10", 5060) is None


def test_longer_network_beats_port_specific_shorter_one() -> None:
    index = AclIndex(
        [
            customer(1, entry("192.0.2.0/24", 5060)),
            customer(2, entry("192.0.2.10/32")),
        ]
    )
    assert matched_id(index, "192.0.2.10", 5060) == 2


def test_catch_all_network() -> None:
    index = AclIndex([customer(1, entry("0.0.0.0/0")), customer(2, entry("::/0"))])
    assert matched_id(index, "203.0.113.9") == 1
    assert matched_id(index, "2001:db8::1") == 2


def test_disabled_peers_and_non_customers_never_match() -> None:
    index = AclIndex(
        [
            customer(1, entry("192.0.2.1/32"), enabled=False),
            customer(2, entry("192.0.2.2/32"), role=PeerRole.SUPPLIER),
            customer(3, entry("192.0.2.3/32"), role=PeerRole.BOTH),
            customer(4, entry("192.0.2.0/24"), enabled=False),
        ]
    )
    assert matched_id(index, "192.0.2.1") is None
    assert matched_id(index, "192.0.2.2") is None
    assert matched_id(index, "192.0.2.3") == 3


def test_disabled_or_supplier_peers_do_not_conflict() -> None:
    index = AclIndex(
        [
            customer(1, entry("192.0.2.1/32")),
            customer(2, entry("192.0.2.1/32"), enabled=False),
            customer(3, entry("192.0.2.1/32"), role=PeerRole.SUPPLIER),
        ]
    )
    assert matched_id(index, "192.0.2.1") == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (entry("192.0.2.0/24"), entry("192.0.2.0/24")),
        (entry("192.0.2.0/24", 5060), entry("192.0.2.0/24", 5060)),
        (entry("2001:db8::/32"), entry("2001:db8::/32")),
    ],
)
def test_two_customers_on_the_same_entry_conflict(first: AclEntry, second: AclEntry) -> None:
    with pytest.raises(AclConflictError) as info:
        AclIndex([customer(1, first), customer(2, second)])
    assert {p.id for p in info.value.peers} == {1, 2}
    assert info.value.port == first.port


def test_same_network_different_ports_do_not_conflict() -> None:
    index = AclIndex(
        [customer(1, entry("192.0.2.0/24", 5060)), customer(2, entry("192.0.2.0/24", 5080))]
    )
    assert matched_id(index, "192.0.2.7", 5060) == 1
    assert matched_id(index, "192.0.2.7", 5080) == 2
    assert matched_id(index, "192.0.2.7", 5090) is None


def test_one_peer_may_repeat_an_entry() -> None:
    index = AclIndex([customer(1, entry("192.0.2.0/24"), entry("192.0.2.0/24"))])
    assert matched_id(index, "192.0.2.7") == 1


def test_ipv6() -> None:
    index = AclIndex(
        [
            customer(1, entry("2001:db8::/32")),
            customer(2, entry("2001:db8:1::/48", 5062)),
            customer(3, entry("192.0.2.0/24")),
        ]
    )
    assert matched_id(index, "2001:db8:1::5", 5062) == 2
    assert matched_id(index, "2001:db8:1::5", 5060) == 1
    assert matched_id(index, "2001:DB8:0:0::1") == 1
    assert matched_id(index, "2001:db9::1") is None
    assert matched_id(index, "fe80::1%eth0") is None


def test_ipv4_mapped_ipv6_source_is_the_ipv4_address() -> None:
    index = AclIndex([customer(1, entry("192.0.2.0/24"))])
    assert matched_id(index, "::ffff:192.0.2.7") == 1
    assert matched_id(index, "::ffff:198.51.100.7") is None


@pytest.mark.parametrize("ip", ["", "not an ip", "192.0.2", "192.0.2.300", "1::2::3", "::g"])
def test_bad_source_address_matches_nothing(ip: str) -> None:
    index = AclIndex([customer(1, entry("0.0.0.0/0")), customer(2, entry("::/0"))])
    assert index.match(ip, 5060) is None


def test_empty_index() -> None:
    index = AclIndex([])
    assert matched_id(index, "192.0.2.1") is None
    assert "0 IPv4" in repr(index)


def reference_match(peers: list[Peer], ip: str, port: int) -> int | None:
    """Most specific entry by a linear scan, as a reference."""
    address = ipaddress.ip_address(ip)
    best: tuple[int, int, int] | None = None
    for peer in peers:
        for acl in peer.acl:
            if address in acl.network and acl.port in (None, port):
                key = (acl.network.prefixlen, acl.port is not None, peer.id)
                if best is None or key[:2] > best[:2]:
                    best = key
    return None if best is None else best[2]


@given(st.integers(0, 2**32 - 1), st.sampled_from([5060, 5061, 5080]), st.integers(0, 10_000))
def test_agrees_with_a_linear_scan(address: int, port: int, seed: int) -> None:
    rng = random.Random(seed)
    base = rng.getrandbits(32)
    seen: set[tuple[ipaddress.IPv4Network, int | None]] = set()
    peers: list[Peer] = []
    for peer_id in range(1, 40):
        acl: list[AclEntry] = []
        for _ in range(rng.randint(1, 3)):
            length = rng.choice([0, 8, 16, 20, 24, 28, 30, 32])
            near = base ^ rng.getrandbits(12)  # networks that overlap, to test specificity
            network = ipaddress.IPv4Network((near, length), strict=False)
            entry_port = rng.choice([None, None, 5060, 5080])
            if (network, entry_port) not in seen:
                seen.add((network, entry_port))
                acl.append(AclEntry(network, entry_port))
        peers.append(customer(peer_id, *acl))
    index = AclIndex(peers)
    for probe in (address, base, base ^ rng.getrandbits(10)):
        ip = str(ipaddress.IPv4Address(probe))
        assert matched_id(index, ip, port) == reference_match(peers, ip, port)
