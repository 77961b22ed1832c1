"""HEP3 (the Homer Encapsulation Protocol, version 3; also called EEP): encoder and decoder.

Written from the HEP3 specification (sipcapture "HEP3 Network Protocol Specification") and
checked against Kamailio's ``sipcapture/hep.h`` and ``siptrace/siptrace_hep.c`` and sngrep's
``capture_eep.c``.  Everything on the wire is big-endian (network order).

A HEP3 packet is a 6-byte control header, then chunks::

    "HEP3" (4 bytes) | total length (uint16, the whole packet, header included)
    chunk: vendor id (uint16) | type id (uint16) | length (uint16, *including* these 6 bytes)
           | value (length - 6 bytes)

Generic chunks (vendor 0x0000) used here:

======  ===========  ===========================================================
type    value        meaning
======  ===========  ===========================================================
0x0001  uint8        IP protocol family: 2 = IPv4, 10 = IPv6 (Linux AF_INET/AF_INET6)
0x0002  uint8        IP protocol id: 17 = UDP, 6 = TCP
0x0003  4 bytes      IPv4 source address
0x0004  4 bytes      IPv4 destination address
0x0005  16 bytes     IPv6 source address
0x0006  16 bytes     IPv6 destination address
0x0007  uint16       source port
0x0008  uint16       destination port
0x0009  uint32       timestamp, seconds since the epoch
0x000a  uint32       timestamp, microseconds offset added to the seconds
0x000b  uint8        protocol type: 1 = SIP
0x000c  uint32       capture agent id
0x000d  uint16       keep-alive timer (not sent)
0x000e  bytes        authentication key (optional)
0x000f  bytes        payload (the SIP message)
0x0010  bytes        compressed payload (not sent; kept as an unknown chunk)
0x0011  bytes        internal correlation id: links the legs of one call in Homer
======  ===========  ===========================================================

Chunk order: the specification allows any order and Homer, Kamailio and heplify parse chunks by
type, but sngrep's receiver reads a fixed layout (family, protocol, ports, times, protocol type,
capture id, addresses, then an optional auth key, one optional extra chunk, the payload), so the
encoder writes exactly that order: the packets are readable by both kinds of receiver.  The
decoder accepts any order and keeps chunks it does not know (other vendors, other types).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = [
    "AF_INET",
    "AF_INET6",
    "HEP3_MAGIC",
    "PROTO_SIP",
    "HepError",
    "HepMessage",
    "decode",
    "encode",
    "encode_fields",
]

HEP3_MAGIC = b"HEP3"

# Values of chunk 0x0001 (the Linux address family numbers, which every HEP agent sends).
AF_INET = 2
AF_INET6 = 10
# Values of chunk 0x0002 (IANA protocol numbers).
IPPROTO_TCP = 6
IPPROTO_UDP = 17
# Values of chunk 0x000b.
PROTO_SIP = 1

CHUNK_IP_FAMILY = 0x0001
CHUNK_IP_PROTO = 0x0002
CHUNK_IPV4_SRC = 0x0003
CHUNK_IPV4_DST = 0x0004
CHUNK_IPV6_SRC = 0x0005
CHUNK_IPV6_DST = 0x0006
CHUNK_SRC_PORT = 0x0007
CHUNK_DST_PORT = 0x0008
CHUNK_TIME_SEC = 0x0009
CHUNK_TIME_USEC = 0x000A
CHUNK_PROTO_TYPE = 0x000B
CHUNK_CAPTURE_ID = 0x000C
CHUNK_AUTH_KEY = 0x000E
CHUNK_PAYLOAD = 0x000F
CHUNK_CORRELATION_ID = 0x0011

_CONTROL = struct.Struct("!4sH")
_CHUNK = struct.Struct("!HHH")
# Everything up to the variable chunks, in one struct: the control header, then family, ip
# protocol, source port, destination port, seconds, microseconds, protocol type, capture id,
# source and destination address.
_FIXED = "!4sH HHHB HHHB HHHH HHHH HHHI HHHI HHHB HHHI"
_HEAD4 = struct.Struct(_FIXED + " HHH4s HHH4s")
_HEAD6 = struct.Struct(_FIXED + " HHH16s HHH16s")
_MAX_LENGTH = 0xFFFF

# Size of the value of each fixed-size generic chunk: a decoder must refuse other sizes.
_VALUE_SIZES = {
    CHUNK_IP_FAMILY: 1,
    CHUNK_IP_PROTO: 1,
    CHUNK_IPV4_SRC: 4,
    CHUNK_IPV4_DST: 4,
    CHUNK_IPV6_SRC: 16,
    CHUNK_IPV6_DST: 16,
    CHUNK_SRC_PORT: 2,
    CHUNK_DST_PORT: 2,
    CHUNK_TIME_SEC: 4,
    CHUNK_TIME_USEC: 4,
    CHUNK_PROTO_TYPE: 1,
    CHUNK_CAPTURE_ID: 4,
}

# Chunks this module interprets; others (any vendor's, or later generic types) go to ``extra``.
_KNOWN = frozenset(_VALUE_SIZES) | {CHUNK_AUTH_KEY, CHUNK_PAYLOAD, CHUNK_CORRELATION_ID}

Address = tuple[str, int]


class HepError(ValueError):
    """Bytes that are not a well-formed HEP3 packet, or a message HEP3 cannot carry."""


@dataclass(frozen=True, slots=True)
class HepMessage:
    """One captured packet as HEP3 carries it."""

    src: Address
    """(IP address, port) the message came from."""
    dst: Address
    """(IP address, port) it went to."""
    payload: bytes
    """The SIP message."""
    seconds: int
    """Time it crossed the wire: seconds since the epoch..."""
    microseconds: int
    """...plus this many microseconds."""
    capture_id: int
    """Capture agent id, a uint32 naming the node that captured it."""
    ip_protocol: int = IPPROTO_UDP
    """17 (UDP) or 6 (TCP; also used for TLS, whose payload is sent decrypted)."""
    correlation_id: bytes | None = None
    """Links messages in Homer: one per call (the A leg's Call-ID), shared by both legs."""
    auth_key: bytes | None = None
    """Shared secret some collectors require."""
    proto_type: int = PROTO_SIP
    """What the payload is: 1 for SIP."""
    extra: tuple[tuple[int, int, bytes], ...] = ()
    """Chunks this module does not interpret: (vendor id, type id, value)."""

    @property
    def family(self) -> int:
        """2 (IPv4) or 10 (IPv6), from the addresses."""
        return AF_INET6 if ":" in self.src[0] else AF_INET

    @property
    def time(self) -> float:
        return self.seconds + self.microseconds / 1_000_000


_ADDRESSES: dict[str, bytes] = {}  # inet_pton results: a node talks to a bounded set of peers


def _packed(host: str) -> bytes:
    packed = _ADDRESSES.get(host)
    if packed is None:
        try:
            if ":" in host:
                packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0].strip("[]"))
            else:
                packed = socket.inet_pton(socket.AF_INET, host)
        except OSError:
            raise HepError(f"not an IP address: {host!r}") from None
        if len(_ADDRESSES) >= 4096:
            _ADDRESSES.clear()
        _ADDRESSES[host] = packed
    return packed


def _variable(type_id: int, value: bytes) -> bytes:
    return _CHUNK.pack(0, type_id, _CHUNK.size + len(value)) + value


def encode(message: HepMessage) -> bytes:
    """The HEP3 packet carrying ``message`` (chunk order: see the module docstring)."""
    return encode_fields(
        message.src,
        message.dst,
        message.payload,
        message.seconds,
        message.microseconds,
        message.capture_id,
        message.ip_protocol,
        message.correlation_id,
        message.auth_key,
        message.proto_type,
        message.extra,
    )


def encode_fields(
    src: Address,
    dst: Address,
    payload: bytes,
    seconds: int,
    microseconds: int,
    capture_id: int,
    ip_protocol: int = IPPROTO_UDP,
    correlation_id: bytes | None = None,
    auth_key: bytes | None = None,
    proto_type: int = PROTO_SIP,
    extra: tuple[tuple[int, int, bytes], ...] = (),
) -> bytes:
    """:func:`encode` without making a :class:`HepMessage` first (the sender's path, once per
    captured message on the event loop)."""
    ipv6 = ":" in src[0]
    if ipv6 != (":" in dst[0]):
        raise HepError("source and destination are not in the same address family")
    if not 0 <= capture_id <= 0xFFFFFFFF:
        raise HepError("the capture id is a uint32")
    tail = []
    if auth_key is not None:
        tail.append(_variable(CHUNK_AUTH_KEY, auth_key))
    if correlation_id is not None:
        tail.append(_variable(CHUNK_CORRELATION_ID, correlation_id))
    for vendor, type_id, value in extra:
        tail.append(_CHUNK.pack(vendor, type_id, _CHUNK.size + len(value)) + value)
    tail.append(_CHUNK.pack(0, CHUNK_PAYLOAD, _CHUNK.size + len(payload)))
    tail.append(payload)
    if ipv6:
        head, family, address_type, address_length = _HEAD6, AF_INET6, CHUNK_IPV6_SRC, 22
    else:
        head, family, address_type, address_length = _HEAD4, AF_INET, CHUNK_IPV4_SRC, 10
    total = head.size + sum(map(len, tail))
    if total > _MAX_LENGTH:
        raise HepError(f"a HEP3 packet holds at most {_MAX_LENGTH} bytes, this one {total}")
    # fmt: off
    return head.pack(
        HEP3_MAGIC, total,
        0, CHUNK_IP_FAMILY, 7, family,
        0, CHUNK_IP_PROTO, 7, ip_protocol,
        0, CHUNK_SRC_PORT, 8, src[1],
        0, CHUNK_DST_PORT, 8, dst[1],
        0, CHUNK_TIME_SEC, 10, seconds,
        0, CHUNK_TIME_USEC, 10, microseconds,
        0, CHUNK_PROTO_TYPE, 7, proto_type,
        0, CHUNK_CAPTURE_ID, 10, capture_id,
        0, address_type, address_length, _packed(src[0]),
        0, address_type + 1, address_length, _packed(dst[0]),
    ) + b"".join(tail)
    # fmt: on


def decode(data: bytes) -> HepMessage:
    """The message in one HEP3 packet (a UDP datagram, or one packet cut from a TCP stream by
    its total length).  Raises :class:`HepError` for anything malformed: wrong magic, a length
    that disagrees with the data, a chunk running past the end, a fixed-size chunk of the wrong
    size, a missing address, port, time or payload."""
    if len(data) < _CONTROL.size:
        raise HepError("shorter than the HEP3 header")
    magic, total = _CONTROL.unpack_from(data)
    if magic != HEP3_MAGIC:
        raise HepError(f"not HEP3: starts with {bytes(data[:4])!r}")
    if total != len(data):
        raise HepError(f"the header says {total} bytes, the packet has {len(data)}")
    values: dict[int, bytes] = {}
    extra: list[tuple[int, int, bytes]] = []
    offset = _CONTROL.size
    while offset < total:
        if total - offset < _CHUNK.size:
            raise HepError(f"a truncated chunk header at offset {offset}")
        vendor, type_id, length = _CHUNK.unpack_from(data, offset)
        if length < _CHUNK.size or offset + length > total:
            raise HepError(f"chunk 0x{type_id:04x} at offset {offset} has length {length}")
        value = bytes(data[offset + _CHUNK.size : offset + length])
        offset += length
        if vendor != 0:
            extra.append((vendor, type_id, value))
            continue
        size = _VALUE_SIZES.get(type_id)
        if size is not None and len(value) != size:
            raise HepError(f"chunk 0x{type_id:04x} holds {len(value)} bytes, not {size}")
        if type_id in values or type_id not in _KNOWN:
            if type_id in _KNOWN:
                raise HepError(f"chunk 0x{type_id:04x} appears twice")
            extra.append((vendor, type_id, value))
            continue
        values[type_id] = value

    def integer(type_id: int) -> int:
        value = values.get(type_id)
        if value is None:
            raise HepError(f"chunk 0x{type_id:04x} is missing")
        return int.from_bytes(value, "big")

    family = integer(CHUNK_IP_FAMILY)
    if family == AF_INET:
        src_type, dst_type, socket_family = CHUNK_IPV4_SRC, CHUNK_IPV4_DST, socket.AF_INET
    elif family == AF_INET6:
        src_type, dst_type, socket_family = CHUNK_IPV6_SRC, CHUNK_IPV6_DST, socket.AF_INET6
    else:
        raise HepError(f"unknown IP family {family}")
    try:
        src_host = socket.inet_ntop(socket_family, values[src_type])
        dst_host = socket.inet_ntop(socket_family, values[dst_type])
    except KeyError:
        raise HepError("an address of the packet's family is missing") from None
    if CHUNK_PAYLOAD not in values:
        raise HepError("chunk 0x000f (payload) is missing")
    return HepMessage(
        src=(src_host, integer(CHUNK_SRC_PORT)),
        dst=(dst_host, integer(CHUNK_DST_PORT)),
        payload=values[CHUNK_PAYLOAD],
        seconds=integer(CHUNK_TIME_SEC),
        microseconds=integer(CHUNK_TIME_USEC),
        capture_id=integer(CHUNK_CAPTURE_ID),
        ip_protocol=integer(CHUNK_IP_PROTO),
        correlation_id=values.get(CHUNK_CORRELATION_ID),
        auth_key=values.get(CHUNK_AUTH_KEY),
        proto_type=values[CHUNK_PROTO_TYPE][0] if CHUNK_PROTO_TYPE in values else PROTO_SIP,
        extra=tuple(extra),
    )
