"""``smartswitch cluster dns``'s records: A/AAAA for the shared IP and the nodes, SRV with the
shared IP first and the nodes behind it evenly; bad zones and names refused."""

from __future__ import annotations

import pytest

from smartswitch.cluster.dns import DnsError, DnsNode, zone_records

NODES = [DnsNode("n1", "10.77.0.11"), DnsNode("n2", "10.77.0.12"), DnsNode("N_3", "10.77.0.13")]


def test_the_shared_ip_first_then_every_node_evenly() -> None:
    lines = zone_records("Voice.Example.NET.", NODES, "10.77.0.100", ttl=120)
    assert lines == [
        "sip.voice.example.net. 120 IN A 10.77.0.100",
        "n1.voice.example.net. 120 IN A 10.77.0.11",
        "n2.voice.example.net. 120 IN A 10.77.0.12",
        "n-3.voice.example.net. 120 IN A 10.77.0.13",
        "_sip._udp.voice.example.net. 120 IN SRV 10 0 5060 sip.voice.example.net.",
        "_sip._udp.voice.example.net. 120 IN SRV 20 10 5060 n1.voice.example.net.",
        "_sip._udp.voice.example.net. 120 IN SRV 20 10 5060 n2.voice.example.net.",
        "_sip._udp.voice.example.net. 120 IN SRV 20 10 5060 n-3.voice.example.net.",
        "_sip._tcp.voice.example.net. 120 IN SRV 10 0 5060 sip.voice.example.net.",
        "_sip._tcp.voice.example.net. 120 IN SRV 20 10 5060 n1.voice.example.net.",
        "_sip._tcp.voice.example.net. 120 IN SRV 20 10 5060 n2.voice.example.net.",
        "_sip._tcp.voice.example.net. 120 IN SRV 20 10 5060 n-3.voice.example.net.",
    ]


def test_every_srv_target_has_an_address_record() -> None:
    lines = zone_records("example.net", NODES, "10.77.0.100")
    owners = {line.split()[0] for line in lines if " IN A " in line}
    targets = {line.split()[-1] for line in lines if " SRV " in line}
    assert targets == owners


def test_without_a_shared_ip_the_nodes_share_the_first_priority() -> None:
    lines = zone_records("example.net", [DnsNode("a", "2001:db8::1", 5080)])
    assert lines == [
        "a.example.net. 60 IN AAAA 2001:db8::1",
        "_sip._udp.example.net. 60 IN SRV 10 10 5080 a.example.net.",
        "_sip._tcp.example.net. 60 IN SRV 10 10 5080 a.example.net.",
    ]


@pytest.mark.parametrize(
    ("zone", "nodes", "shared", "message"),
    [
        ("exa mple.net", NODES, "", "not a DNS zone name"),
        ("", NODES, "", "not a DNS zone name"),
        ("-bad.net", NODES, "", "not a DNS zone name"),
        ("example.net", [DnsNode("n 1", "10.0.0.1")], "", "cannot be a DNS label"),
        ("example.net", [DnsNode("n1", "10.0.0.x")], "", "not an IP address"),
        ("example.net", NODES, "10.0.0.999", "shared IP"),
        ("example.net", [DnsNode("n1", "10.0.0.1"), DnsNode("N1", "10.0.0.2")], "", "same"),
        ("example.net", [DnsNode("sip", "10.0.0.1")], "10.0.0.9", "shared IP's name"),
        ("example.net", [DnsNode("n1", "10.0.0.1", 70000)], "", "not a port"),
        ("example.net", [], "", "nothing to publish"),
    ],
)
def test_what_cannot_be_records_is_refused(
    zone: str, nodes: list[DnsNode], shared: str, message: str
) -> None:
    with pytest.raises(DnsError, match=message):
        zone_records(zone, nodes, shared)
