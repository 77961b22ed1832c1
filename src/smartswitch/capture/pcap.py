"""SIP messages as the IP packets that carried them, in a classic libpcap file.

Theory of operation
-------------------
A capture holds what crossed the wire: for each SIP message its transport, its real source and
destination (address, port) and the wall-clock time it was sent or received.  This module turns
that list into a pcap file that tshark and Wireshark read as if it had been sniffed:

- **File format**: classic libpcap (https://wiki.wireshark.org/Development/LibpcapFileFormat),
  microsecond timestamps (magic ``0xa1b2c3d4``, written little-endian; the magic tells readers
  the byte order).  A wall time given as a float carries about 0.2 us of precision today, so
  nanoseconds would only show noise.
- **Link type** ``LINKTYPE_RAW`` (101): each record is an IPv4 or IPv6 packet, told apart by the
  version nibble.  No invented MAC addresses, and the same framing rtpengine uses for its pcap
  recordings, so ``mergecap`` can put a call's SIP and RTP in one file.
- **UDP**: one datagram per message, IPv4 (RFC 791) or IPv6 (RFC 8200), with real UDP checksums
  (RFC 768; mandatory over IPv6).  A datagram is limited to what an IP packet holds.
- **TCP** (also used for TLS, written decrypted): one segment per message, PSH|ACK, with
  per-flow sequence numbers that continue from message to message and acknowledgement numbers
  taken from the reverse flow, so tshark follows the stream and reassembles a message split
  across segments.  A message longer than ``max_segment`` is split into several segments with
  the same timestamp.  There is no handshake: tshark treats the stream as picked up midway,
  which is what a capture started after the connection was opened looks like.  (Messages sent
  over TLS on port 5061 need ``-d tcp.port==5061,sip`` for tshark to read them as plain SIP.)

Everything here is pure: bytes in, bytes out, no file or socket.  ``pcap_bytes(messages)`` is
the whole file; the writer thread writes it in one call.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "LINKTYPE_RAW",
    "MAX_SEGMENT",
    "PCAP_MAGIC",
    "CapturedMessage",
    "PacketBuilder",
    "file_header",
    "internet_checksum",
    "pcap_bytes",
    "record",
]

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, no link-layer header
SNAPLEN = 262_144
MAX_SEGMENT = 65_000  # bytes of TCP payload per segment: any real SIP message fits in one

IPPROTO_TCP = 6
IPPROTO_UDP = 17

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")

_TCP_PSH_ACK = 0x18
_TCP_WINDOW = 65535
_INITIAL_SEQUENCE = 1  # tshark shows relative sequence numbers; any start will do
_IPV4_DONT_FRAGMENT = 0x4000
_TTL = 64

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    """One SIP message as it crossed the wire."""

    time: float
    """Wall-clock time (seconds since the epoch) it was sent or received."""
    transport: str
    """``"udp"``, ``"tcp"`` or ``"tls"`` (written as TCP, decrypted)."""
    src: Address
    """(IP address, port) it came from."""
    dst: Address
    """(IP address, port) it went to."""
    data: bytes
    """The message's bytes, exactly as sent or received."""


def internet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``, ready to pack big-endian.

    The one's-complement sum of 16-bit words is taken modulo 0xFFFF all at once: read as one
    big-endian integer, ``data`` is the sum of ``word_i * 2**(16 i)``, and ``2**16`` is 1
    modulo 0xFFFF, so the integer modulo 0xFFFF is the end-around-carry sum modulo 0xFFFF.  The
    only case where the two differ is a sum of 0xFFFF (which a nonzero input gives instead of
    0), hence the correction.  One C-level bignum operation instead of a loop over words."""
    if len(data) & 1:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and any(data):
        total = 0xFFFF
    return ~total & 0xFFFF


def file_header(snaplen: int = SNAPLEN, linktype: int = LINKTYPE_RAW) -> bytes:
    """The 24-byte pcap global header: version 2.4, UTC, no timestamp accuracy claimed."""
    return _FILE_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen, linktype)


def record(time: float, packet: bytes) -> bytes:
    """One pcap record: its 16-byte header (time, captured and original length) and ``packet``."""
    micros = round(time * 1_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    return _RECORD_HEADER.pack(seconds, micros, len(packet), len(packet)) + packet


def _packed_address(host: str) -> bytes:
    """4 bytes for an IPv4 address, 16 for IPv6 (a zone such as ``%eth0`` is dropped)."""
    if ":" in host:
        return socket.inet_pton(socket.AF_INET6, host.partition("%")[0].strip("[]"))
    return socket.inet_pton(socket.AF_INET, host)


def _same_family(src: bytes, dst: bytes) -> tuple[bytes, bytes]:
    """A dual-stack socket reports IPv4 peers as ``::ffff:a.b.c.d``: write such a pair as
    IPv4 so both ends of one packet are in one family."""
    if len(src) == len(dst):
        return src, dst
    mapped = b"\0" * 10 + b"\xff\xff"
    if len(src) == 16 and src.startswith(mapped):
        return src[12:], dst
    if len(dst) == 16 and dst.startswith(mapped):
        return src, dst[12:]
    raise ValueError("source and destination are not in the same address family")


class PacketBuilder:
    """Builds the IP packets of a sequence of messages, keeping the state that spans messages:
    the IPv4 identification counter and each TCP flow's next sequence number.

    One builder per file: the TCP flows of one call start at the same relative sequence number
    in every capture."""

    __slots__ = ("_addresses", "_ident", "_next_seq", "max_segment")

    def __init__(self, max_segment: int = MAX_SEGMENT) -> None:
        if not 1 <= max_segment <= 65_495:
            raise ValueError("max_segment must be 1..65495 bytes")
        self.max_segment = max_segment
        self._ident = 0
        self._next_seq: dict[tuple[bytes, int, bytes, int], int] = {}
        self._addresses: dict[str, bytes] = {}

    def packets(self, message: CapturedMessage) -> list[bytes]:
        """The IP packets that carried ``message`` (one, or several TCP segments).

        Raises ``ValueError`` for what no packet can carry: an address that is not an IP
        literal, mixed address families, a UDP message larger than a datagram, an unknown
        transport."""
        src = self._address(message.src[0])
        dst = self._address(message.dst[0])
        src, dst = _same_family(src, dst)
        sport, dport = message.src[1], message.dst[1]
        transport = message.transport.lower()
        if transport == "udp":
            return [self._udp(src, sport, dst, dport, message.data)]
        if transport in ("tcp", "tls"):
            return self._tcp(src, sport, dst, dport, message.data)
        raise ValueError(f"cannot frame transport {message.transport!r}")

    def _address(self, host: str) -> bytes:
        packed = self._addresses.get(host)
        if packed is None:
            try:
                packed = _packed_address(host)
            except OSError:
                raise ValueError(f"not an IP address: {host!r}") from None
            self._addresses[host] = packed
        return packed

    def _ip(self, src: bytes, dst: bytes, protocol: int, segment: bytes) -> bytes:
        if len(src) == 4:
            self._ident = (self._ident + 1) & 0xFFFF
            header = _IPV4.pack(
                0x45,
                0,
                20 + len(segment),
                self._ident,
                _IPV4_DONT_FRAGMENT,
                _TTL,
                protocol,
                0,
                src,
                dst,
            )
            checksum = internet_checksum(header)
            return header[:10] + checksum.to_bytes(2, "big") + header[12:] + segment
        # Version 6, traffic class 0, flow label 0; the payload length excludes this header.
        return _IPV6.pack(6 << 28, len(segment), protocol, _TTL, src, dst) + segment

    @staticmethod
    def _pseudo_header(src: bytes, dst: bytes, protocol: int, length: int) -> bytes:
        # RFC 768 (IPv4) and RFC 8200 section 8.1 (IPv6): what the transport checksum covers
        # besides the segment itself.
        if len(src) == 4:
            return src + dst + struct.pack("!BBH", 0, protocol, length)
        return src + dst + struct.pack("!I3xB", length, protocol)

    def _udp(self, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
        length = 8 + len(payload)
        limit = 65_535 - (20 if len(src) == 4 else 0)
        if length > limit:
            raise ValueError(f"a {len(payload)}-byte message does not fit in a UDP datagram")
        header = _UDP.pack(sport, dport, length, 0)
        checksum = internet_checksum(
            self._pseudo_header(src, dst, IPPROTO_UDP, length) + header + payload
        )
        # RFC 768: a computed checksum of zero is sent as all ones (zero means "none").
        header = _UDP.pack(sport, dport, length, checksum or 0xFFFF)
        return self._ip(src, dst, IPPROTO_UDP, header + payload)

    def _tcp(self, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> list[bytes]:
        flow = (src, sport, dst, dport)
        reverse = (dst, dport, src, sport)
        seq = self._next_seq.get(flow, _INITIAL_SEQUENCE)
        ack = self._next_seq.setdefault(reverse, _INITIAL_SEQUENCE)
        packets = []
        step = self.max_segment
        for start in range(0, max(len(payload), 1), step):
            chunk = payload[start : start + step]
            header = _TCP.pack(sport, dport, seq, ack, 5 << 4, _TCP_PSH_ACK, _TCP_WINDOW, 0, 0)
            checksum = internet_checksum(
                self._pseudo_header(src, dst, IPPROTO_TCP, 20 + len(chunk)) + header + chunk
            )
            header = header[:16] + checksum.to_bytes(2, "big") + header[18:]
            packets.append(self._ip(src, dst, IPPROTO_TCP, header + chunk))
            seq = (seq + len(chunk)) & 0xFFFFFFFF
        self._next_seq[flow] = seq
        return packets


def pcap_bytes(
    messages: Iterable[CapturedMessage],
    max_segment: int = MAX_SEGMENT,
    skipped: list[CapturedMessage] | None = None,
) -> bytes:
    """A whole pcap file holding ``messages`` in the order given.

    A message no packet can carry (see :meth:`PacketBuilder.packets`) is left out, and appended
    to ``skipped`` when a list is given; the rest of the file is still written."""
    builder = PacketBuilder(max_segment)
    parts = [file_header()]
    for message in messages:
        try:
            packets = builder.packets(message)
        except ValueError:
            if skipped is not None:
                skipped.append(message)
            continue
        parts.extend(record(message.time, packet) for packet in packets)
    return b"".join(parts)
