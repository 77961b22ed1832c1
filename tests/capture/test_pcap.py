"""pcap files of a two-leg call, read back by the real tshark."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from smartswitch.capture.pcap import (
    LINKTYPE_RAW,
    PCAP_MAGIC,
    CapturedMessage,
    PacketBuilder,
    internet_checksum,
    pcap_bytes,
    record,
)

from .calls import A_CALL_ID, B_CALL_ID, two_leg_call
from .tools import needs_tshark, tshark_fields

# (source address, source port, method or status, Call-ID) of the 14 messages, in wire order.
CALLER, SWITCH, CALLEE = ("127.0.0.2", 5061), ("127.0.0.1", 5060), ("127.0.0.3", 5070)
EXPECTED = [
    (CALLER, "INVITE", A_CALL_ID),
    (SWITCH, "100", A_CALL_ID),
    (SWITCH, "INVITE", B_CALL_ID),
    (CALLEE, "100", B_CALL_ID),
    (CALLEE, "180", B_CALL_ID),
    (SWITCH, "180", A_CALL_ID),
    (CALLEE, "200", B_CALL_ID),
    (SWITCH, "200", A_CALL_ID),
    (CALLER, "ACK", A_CALL_ID),
    (SWITCH, "ACK", B_CALL_ID),
    (CALLER, "BYE", A_CALL_ID),
    (SWITCH, "BYE", B_CALL_ID),
    (CALLEE, "200", B_CALL_ID),
    (SWITCH, "200", A_CALL_ID),
]
V6 = {"127.0.0.2": "2001:db8::2", "127.0.0.1": "2001:db8::1", "127.0.0.3": "2001:db8::3"}


def expected_rows(ipv6: bool) -> list[list[str]]:
    rows = []
    for (host, port), kind, call_id in EXPECTED:
        method, status = (kind, "") if kind.isalpha() else ("", kind)
        rows.append([V6[host] if ipv6 else host, str(port), method, status, call_id])
    return rows


def write(tmp_path: Path, messages: list[CapturedMessage], max_segment: int = 65_000) -> Path:
    path = tmp_path / "call.pcap"
    path.write_bytes(pcap_bytes(messages, max_segment=max_segment))
    return path


def sip_rows(path: Path, transport: str = "udp", ipv6: bool = False) -> list[list[str]]:
    """What tshark says of each SIP message: source address and port, method, status,
    Call-ID (as :func:`expected_rows`)."""
    ip = "ipv6" if ipv6 else "ip"
    fields = (f"{ip}.src", f"{transport}.srcport", "sip.Method", "sip.Status-Code", "sip.Call-ID")
    return tshark_fields(path, *fields)


@needs_tshark
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_tshark_reads_both_legs(tmp_path: Path, transport: str, ipv6: bool) -> None:
    path = write(tmp_path, two_leg_call(transport, ipv6))
    assert sip_rows(path, transport, ipv6) == expected_rows(ipv6)
    if transport == "tcp":
        # Two TCP streams: the A leg's connection and the B leg's.
        streams = {row[0] for row in tshark_fields(path, "tcp.stream", display_filter="tcp")}
        assert streams == {"0", "1"}


@needs_tshark
def test_tshark_reassembles_a_message_split_over_segments(tmp_path: Path) -> None:
    path = write(tmp_path, two_leg_call("tcp"), max_segment=100)
    assert sip_rows(path, "tcp") == expected_rows(False)
    counts = [int(row[0]) for row in tshark_fields(path, "tcp.segment.count")]
    assert len(counts) == 14 and all(count > 1 for count in counts)
    # No gaps, overlaps or unseen acknowledgements in the made-up streams.
    assert tshark_fields(path, "frame.number", display_filter="tcp.analysis.flags") == []


@needs_tshark
@pytest.mark.parametrize(
    ("transport", "ipv6"), [("udp", False), ("udp", True), ("tcp", False), ("tcp", True)]
)
def test_checksums_are_right(tmp_path: Path, transport: str, ipv6: bool) -> None:
    path = write(tmp_path, two_leg_call(transport, ipv6))
    fields = [f"{transport}.checksum.status"] + ([] if ipv6 else ["ip.checksum.status"])
    options = tuple(f"{proto}.check_checksum:TRUE" for proto in ("ip", "udp", "tcp"))
    rows = tshark_fields(path, *fields, display_filter=transport, options=options)
    assert rows == [["1"] * len(fields)] * 14  # 1: "Good"
    # And by the definition: a header or segment with its checksum sums to zero.
    for message in two_leg_call(transport, ipv6):
        for packet in PacketBuilder().packets(message):
            if not ipv6:
                assert internet_checksum(packet[:20]) == 0
            assert verify_transport_checksum(packet, ipv6)


def verify_transport_checksum(packet: bytes, ipv6: bool) -> bool:
    if ipv6:
        src, dst, proto, segment = packet[8:24], packet[24:40], packet[6], packet[40:]
        pseudo = src + dst + struct.pack("!I3xB", len(segment), proto)
    else:
        src, dst, proto, segment = packet[12:16], packet[16:20], packet[9], packet[20:]
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    return internet_checksum(pseudo + segment) == 0


@needs_tshark
def test_timestamps_are_the_wire_times(tmp_path: Path) -> None:
    messages = two_leg_call("udp", start=1_700_000_000.123456)
    path = write(tmp_path, messages)
    times = [row[0] for row in tshark_fields(path, "frame.time_epoch")]
    assert times == [f"{m.time:.6f}000" for m in messages]


def test_file_header_and_records() -> None:
    data = pcap_bytes([])
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", data)
    assert (magic, major, minor, linktype) == (PCAP_MAGIC, 2, 4, LINKTYPE_RAW)
    assert snaplen >= 65_535
    assert record(1.5, b"xyz") == struct.pack("<IIII", 1, 500_000, 3, 3) + b"xyz"
    # Rounding to the microsecond never gives 1 000 000 microseconds.
    assert record(1.9999999, b"")[:8] == struct.pack("<II", 2, 0)


def test_internet_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (end-around carry).
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    # An odd length is padded with a zero byte.
    assert internet_checksum(b"\x01") == internet_checksum(b"\x01\x00") == 0xFEFF
    assert internet_checksum(b"\xff\xff") == 0  # one's complement sum 0xffff
    assert internet_checksum(b"") == 0xFFFF


def test_ipv4_mapped_peer_is_written_as_ipv4() -> None:
    message = CapturedMessage(0.0, "udp", ("::ffff:127.0.0.2", 5061), ("127.0.0.1", 5060), b"x")
    (packet,) = PacketBuilder().packets(message)
    assert packet[0] >> 4 == 4
    assert packet[12:16] == bytes([127, 0, 0, 2])


def test_ipv6_zone_is_dropped() -> None:
    message = CapturedMessage(0.0, "udp", ("fe80::1%eth0", 5060), ("fe80::2", 5060), b"x")
    (packet,) = PacketBuilder().packets(message)
    assert packet[0] >> 4 == 6


def test_what_no_packet_carries_is_skipped_not_fatal() -> None:
    good = two_leg_call()[0]
    bad = [
        CapturedMessage(0.0, "udp", ("sip.example.com", 5060), ("127.0.0.1", 5060), b"x"),
        CapturedMessage(0.0, "udp", ("2001:db8::1", 5060), ("127.0.0.1", 5060), b"x"),
        CapturedMessage(0.0, "sctp", ("127.0.0.2", 5060), ("127.0.0.1", 5060), b"x"),
        CapturedMessage(0.0, "udp", ("127.0.0.2", 5060), ("127.0.0.1", 5060), bytes(65_508)),
    ]
    skipped: list[CapturedMessage] = []
    data = pcap_bytes([good, *bad], skipped=skipped)
    assert skipped == bad
    assert data == pcap_bytes([good])
    # The largest datagram IPv4 carries is still written.
    biggest = CapturedMessage(0.0, "udp", ("127.0.0.2", 1), ("127.0.0.1", 2), bytes(65_507))
    assert len(PacketBuilder().packets(biggest)[0]) == 65_535


def test_tcp_sequence_numbers_continue_per_flow() -> None:
    builder = PacketBuilder()
    a, b = ("127.0.0.2", 5061), ("127.0.0.1", 5060)
    first = builder.packets(CapturedMessage(0.0, "tcp", a, b, b"x" * 10))[0]
    reply = builder.packets(CapturedMessage(0.0, "tcp", b, a, b"y" * 7))[0]
    second = builder.packets(CapturedMessage(0.0, "tcp", a, b, b"z" * 5))[0]

    def seq_ack(packet: bytes) -> tuple[int, int]:
        seq, ack = struct.unpack("!II", packet[24:32])
        return seq, ack

    assert seq_ack(first) == (1, 1)
    assert seq_ack(reply) == (1, 11)
    assert seq_ack(second) == (11, 8)
