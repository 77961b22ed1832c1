"""HEP3: the codec against packets built by hand from the specification, against packets sngrep
sent (an independent implementation), and sngrep decoding what we send."""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smartswitch.capture.hep import (
    AF_INET,
    AF_INET6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    HepError,
    HepMessage,
    decode,
    encode,
)
from smartswitch.capture.pcap import pcap_bytes

from .calls import A_CALL_ID, two_leg_call
from .test_pcap import expected_rows, sip_rows
from .tools import KAMAILIO, SNGREP, needs_kamailio, needs_sngrep, needs_tshark, tshark_fields

VECTORS = Path(__file__).parents[1] / "vectors" / "hep"

# IPv4, UDP, 192.0.2.1:5060 -> 192.0.2.2:5080 at 1700000000.123456, capture id 0x01020304,
# correlation id "abc", payload "SIP!", built chunk by chunk from the specification in the order
# the encoder writes (the fixed layout sngrep reads).
HAND_BUILT_V4 = bytes.fromhex(
    "48455033 0070"  # "HEP3", total length 112
    "0000 0001 0007 02"  # IP family: IPv4
    "0000 0002 0007 11"  # IP protocol: 17 (UDP)
    "0000 0007 0008 13c4"  # source port 5060
    "0000 0008 0008 13d8"  # destination port 5080
    "0000 0009 000a 6553f100"  # seconds 1700000000
    "0000 000a 000a 0001e240"  # microseconds 123456
    "0000 000b 0007 01"  # protocol type: SIP
    "0000 000c 000a 01020304"  # capture id
    "0000 0003 000a c0000201"  # IPv4 source 192.0.2.1
    "0000 0004 000a c0000202"  # IPv4 destination 192.0.2.2
    "0000 0011 0009 616263"  # correlation id "abc"
    "0000 000f 000a 53495021"  # payload "SIP!"
)
HAND_BUILT_V4_MESSAGE = HepMessage(
    src=("192.0.2.1", 5060),
    dst=("192.0.2.2", 5080),
    payload=b"SIP!",
    seconds=1_700_000_000,
    microseconds=123_456,
    capture_id=0x01020304,
    ip_protocol=IPPROTO_UDP,
    correlation_id=b"abc",
)

# IPv6, TCP, in Kamailio siptrace's order (addresses before ports, correlation id before the
# auth key), capture id 0xffffffff (the whole uint32), an unknown vendor chunk, payload "x".
HAND_BUILT_V6_KAMAILIO_ORDER = bytes.fromhex(
    "48455033 0096"  # "HEP3", total length 150
    "0000 0001 0007 0a"  # IP family: IPv6
    "0000 0002 0007 06"  # IP protocol: 6 (TCP)
    "0000 0005 0016 20010db8000000000000000000000001"  # IPv6 source 2001:db8::1
    "0000 0006 0016 20010db8000000000000000000000002"  # IPv6 destination 2001:db8::2
    "0000 0007 0008 13c5"  # source port 5061
    "0000 0008 0008 13c6"  # destination port 5062
    "0000 0009 000a 00000001"  # seconds 1
    "0000 000a 000a 000f423f"  # microseconds 999999
    "0000 000b 0007 01"  # protocol type: SIP
    "0000 000c 000a ffffffff"  # capture id 4294967295
    "0000 0011 0007 63"  # correlation id "c"
    "0000 000e 000b 7365637265"  # auth key "secre"
    "1234 0001 0008 beef"  # vendor 0x1234's chunk 1: kept, not understood
    "0000 000f 0007 78"  # payload "x"
)


def test_hand_built_vector_decodes() -> None:
    assert decode(HAND_BUILT_V4) == HAND_BUILT_V4_MESSAGE
    assert HAND_BUILT_V4_MESSAGE.family == AF_INET


def test_encoder_writes_the_hand_built_vector() -> None:
    assert encode(HAND_BUILT_V4_MESSAGE) == HAND_BUILT_V4


def test_chunks_in_any_order_decode() -> None:
    message = decode(HAND_BUILT_V6_KAMAILIO_ORDER)
    assert message == HepMessage(
        src=("2001:db8::1", 5061),
        dst=("2001:db8::2", 5062),
        payload=b"x",
        seconds=1,
        microseconds=999_999,
        capture_id=0xFFFFFFFF,
        ip_protocol=IPPROTO_TCP,
        correlation_id=b"c",
        auth_key=b"secre",
        extra=((0x1234, 1, b"\xbe\xef"),),
    )
    assert message.family == AF_INET6
    assert decode(encode(message)) == message


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_round_trip_of_a_call(transport: str, ipv6: bool) -> None:
    for wire in two_leg_call(transport, ipv6):
        micros = round(wire.time * 1_000_000)
        message = HepMessage(
            src=wire.src,
            dst=wire.dst,
            payload=wire.data,
            seconds=micros // 1_000_000,
            microseconds=micros % 1_000_000,
            capture_id=2**32 - 2,
            ip_protocol=IPPROTO_UDP if transport == "udp" else IPPROTO_TCP,
            correlation_id=A_CALL_ID.encode(),
            auth_key=b"k",
        )
        packet = encode(message)
        assert int.from_bytes(packet[4:6], "big") == len(packet)
        decoded = decode(packet)
        assert decoded == message
        assert abs(decoded.time - wire.time) < 1e-6


@pytest.mark.parametrize(
    ("packet", "complaint"),
    [
        (b"HEP", "shorter"),
        (b"HEP2" + HAND_BUILT_V4[4:], "not HEP3"),
        (HAND_BUILT_V4[:-1], "says 112 bytes"),
        (HAND_BUILT_V4 + b"\0", "says 112 bytes"),
        # A chunk length under 6, and one running past the end.
        (HAND_BUILT_V4[:10] + b"\x00\x05" + HAND_BUILT_V4[12:], "has length 5"),
        (HAND_BUILT_V4[:-10] + bytes.fromhex("0000 000f 00ff 53495021"), "has length 255"),
        # A fixed-size chunk of the wrong size (a 2-byte family).
        (
            b"HEP3\x00\x0e" + bytes.fromhex("0000 0001 0008 0002"),
            "holds 2 bytes, not 1",
        ),
    ],
)
def test_malformed_packets_are_refused(packet: bytes, complaint: str) -> None:
    with pytest.raises(HepError, match=complaint):
        decode(packet)


def without_chunk(packet: bytes, type_id: int) -> bytes:
    out, offset = [packet[:6]], 6
    while offset < len(packet):
        length = int.from_bytes(packet[offset + 4 : offset + 6], "big")
        if int.from_bytes(packet[offset + 2 : offset + 4], "big") != type_id:
            out.append(packet[offset : offset + length])
        offset += length
    body = b"".join(out)
    return body[:4] + len(body).to_bytes(2, "big") + body[6:]


@pytest.mark.parametrize("type_id", [0x0001, 0x0003, 0x0004, 0x0007, 0x0009, 0x000C, 0x000F])
def test_missing_mandatory_chunks_are_refused(type_id: int) -> None:
    with pytest.raises(HepError, match="missing"):
        decode(without_chunk(HAND_BUILT_V4, type_id))


def test_a_repeated_chunk_is_refused() -> None:
    port = bytes.fromhex("0000 0007 0008 13c4")
    body = HAND_BUILT_V4 + port
    packet = body[:4] + len(body).to_bytes(2, "big") + body[6:]
    with pytest.raises(HepError, match="twice"):
        decode(packet)


def test_what_hep_cannot_carry_is_refused() -> None:
    with pytest.raises(HepError, match="same address family"):
        encode(HepMessage(("127.0.0.1", 1), ("::1", 2), b"x", 0, 0, capture_id=1))
    with pytest.raises(HepError, match="uint32"):
        encode(HepMessage(("127.0.0.1", 1), ("127.0.0.2", 2), b"x", 0, 0, capture_id=2**32))
    with pytest.raises(HepError, match="at most 65535"):
        encode(HepMessage(("127.0.0.1", 1), ("127.0.0.2", 2), bytes(65_500), 0, 0, 1))
    with pytest.raises(HepError, match="not an IP address"):
        encode(HepMessage(("example.com", 1), ("127.0.0.2", 2), b"x", 0, 0, 1))


def sngrep_vectors() -> list[bytes]:
    lines = (VECTORS / "sngrep-1.6-call.hex").read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]


def check_sngrep_packets(packets: list[bytes], capture_id: int) -> None:
    """sngrep's packets carry the call's 14 messages exactly.  sngrep 1.6 writes the capture id
    as ``htons(id)`` into the uint32 chunk, so id N arrives as N << 16 (for N < 65536): the
    decoder reads what is on the wire."""
    calls = two_leg_call("udp")
    assert len(packets) == len(calls)
    for packet, wire in zip(packets, calls, strict=True):
        message = decode(packet)
        assert (message.src, message.dst, message.payload) == (wire.src, wire.dst, wire.data)
        assert message.seconds + message.microseconds / 1e6 == pytest.approx(wire.time, abs=1e-6)
        assert message.ip_protocol == IPPROTO_UDP
        assert message.capture_id == capture_id << 16
        assert message.correlation_id is None and message.extra == ()


def test_packets_sngrep_sent_decode() -> None:
    """Known packets from an independent implementation, kept as a vector file."""
    check_sngrep_packets(sngrep_vectors(), 2002)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@needs_sngrep
def test_sngrep_sends_packets_the_decoder_reads(tmp_path: Path) -> None:
    assert SNGREP is not None
    pcap = tmp_path / "call.pcap"
    pcap.write_bytes(pcap_bytes(two_leg_call("udp")))
    config = tmp_path / "sngreprc"
    config.write_text("set eep.send.id 4321\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        command = [SNGREP, "-N", "-q", "-f", str(config), "-I", str(pcap)]
        subprocess.run([*command, "-H", f"udp:127.0.0.1:{port}"], check=True, timeout=30)
        # sngrep has sent everything before it exits; the datagrams wait in our buffer.
        receiver.setblocking(False)
        packets = []
        with contextlib.suppress(BlockingIOError):
            while True:
                packets.append(receiver.recv(65_536))
    check_sngrep_packets(packets, 4321)


def wait_until_listening(
    process: subprocess.Popen[bytes], port: int, why: str | Callable[[], str]
) -> None:
    """Wait until ``process`` has bound UDP 127.0.0.1:``port`` (binding it ourselves fails);
    ``why`` says what went wrong if it exits first."""
    deadline = time.monotonic() + 15
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                assert exc.errno == errno.EADDRINUSE
                return
        if process.poll() is not None:
            pytest.fail(f"exited: {why if isinstance(why, str) else why()}")
        assert time.monotonic() < deadline, f"port {port} not bound"
        time.sleep(0.02)


@contextlib.contextmanager
def sngrep_listening(tmp_path: Path, port: int, out: Path) -> Iterator[None]:
    """sngrep receiving HEP3 on 127.0.0.1:port and writing what it decodes to ``out``, told to
    skip the one chunk (our correlation id) between the addresses and the payload."""
    assert SNGREP is not None
    config = tmp_path / "sngreprc"
    config.write_text("set eep.listen.uuid on\n")
    command = [SNGREP, "-N", "-q", "-f", str(config), "-L", f"udp:127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, "-O", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_listening(process, port, "sngrep")
        yield
    finally:
        process.terminate()
        process.wait(10)


@needs_sngrep
@needs_tshark
def test_sngrep_decodes_what_we_send(tmp_path: Path) -> None:
    port = free_udp_port()
    out = tmp_path / "sngrep.pcap"
    with (
        sngrep_listening(tmp_path, port, out),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        for wire in two_leg_call("udp"):
            micros = round(wire.time * 1_000_000)
            message = HepMessage(
                wire.src,
                wire.dst,
                wire.data,
                micros // 1_000_000,
                micros % 1_000_000,
                capture_id=7,
                correlation_id=A_CALL_ID.encode(),
            )
            sender.sendto(encode(message), ("127.0.0.1", port))
        deadline = time.monotonic() + 10
        rows: list[list[str]] = []
        while time.monotonic() < deadline:
            if out.exists() and out.stat().st_size > 24:
                rows = sip_rows(out)
                if len(rows) >= 14:
                    break
            time.sleep(0.05)
    assert rows == expected_rows(False)
    times = [float(row[0]) for row in tshark_fields(out, "frame.time_epoch")]
    assert times == pytest.approx([wire.time for wire in two_leg_call("udp")], abs=1e-6)


KAMAILIO_CONFIG = """#!KAMAILIO
debug=1
log_stderror=yes
children=1
listen=udp:127.0.0.1:{sip_port}
mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "siptrace.so"
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_on", 1)
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", 3)
modparam("siptrace", "hep_capture_id", {capture_id})
request_route {{
    sip_trace("sip:127.0.0.1:{hep_port}", "corr-$ci");
    sl_send_reply("200", "OK");
}}
"""
KAMAILIO_CAPTURE_ID = 0x12345678  # its modparam is a signed int: the high bit stays clear


def kamailio_hep(tmp_path: Path) -> tuple[bytes, bytes, tuple[str, int], int]:
    """Kamailio (siptrace, HEP3) receives the INVITE of the synthetic call over UDP and sends it
    to us as HEP3 with the correlation id ``corr-<Call-ID>``.  Returns the HEP packet, the
    INVITE (its Via names the port it is sent from, where Kamailio answers), the address it
    was sent from and Kamailio's SIP port."""
    assert KAMAILIO is not None
    modules = sorted(Path("/usr/lib").glob("*/kamailio/modules/siptrace.so"))
    if not modules:
        pytest.skip("kamailio's siptrace module is not installed")
    sip_port = free_udp_port()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(10)
        client.bind(("127.0.0.2", 0))
        client.settimeout(10)
        config = tmp_path / "kamailio.cfg"
        config.write_text(
            KAMAILIO_CONFIG.format(
                sip_port=sip_port,
                modules=modules[0].parent,
                capture_id=KAMAILIO_CAPTURE_ID,
                hep_port=collector.getsockname()[1],
            )
        )
        log = (tmp_path / "kamailio.log").open("wb")
        process = subprocess.Popen(
            [KAMAILIO, "-f", str(config), "-D", "-E", "-Y", str(tmp_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_listening(process, sip_port, (tmp_path / "kamailio.log").read_text)
            via = f"SIP/2.0/UDP 127.0.0.2:{client.getsockname()[1]};".encode()
            data = two_leg_call("udp")[0].data.replace(b"SIP/2.0/UDP 127.0.0.2:5061;", via)
            client.sendto(data, ("127.0.0.1", sip_port))
            assert client.recv(65_536).startswith(b"SIP/2.0 200")
            packet = collector.recv(65_536)
        finally:
            process.terminate()
            process.wait(15)
            log.close()
        return packet, data, client.getsockname(), sip_port


def check_kamailio_packet(
    packet: bytes, data: bytes, source: tuple[str, int], sip_port: int
) -> HepMessage:
    message = decode(packet)
    assert (message.src, message.dst) == (source, ("127.0.0.1", sip_port))
    assert message.payload == data
    assert message.capture_id == KAMAILIO_CAPTURE_ID
    assert message.correlation_id == b"corr-" + A_CALL_ID.encode()
    assert (message.ip_protocol, message.family, message.extra) == (IPPROTO_UDP, AF_INET, ())
    return message


def test_packets_kamailio_sent_decode() -> None:
    """A known packet from Kamailio 5.6's siptrace (chunks in its own order, with a correlation
    id and a capture id that uses the whole uint32 field), kept as a vector file."""
    header, packet = (VECTORS / "kamailio-5.6-siptrace.hex").read_text().splitlines()[-2:]
    source, sip_port, data = header.split()
    host, port = source.rsplit(":", 1)
    check_kamailio_packet(
        bytes.fromhex(packet), bytes.fromhex(data), (host, int(port)), int(sip_port)
    )


@needs_kamailio
def test_kamailio_sends_packets_the_decoder_reads(tmp_path: Path) -> None:
    before = time.time()
    packet, data, source, sip_port = kamailio_hep(tmp_path)
    message = check_kamailio_packet(packet, data, source, sip_port)
    assert before - 1 <= message.time <= time.time() + 1
