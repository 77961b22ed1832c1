"""SDP, the Session Description Protocol (RFC 8866, which obsoletes RFC 4566): parse, edit, write.

Sans-IO and standard library only, in the manner of aiortc's ``sdp.py``:
``SessionDescription.parse(body)`` reads a body, ``str(sd)`` / ``bytes(sd)`` writes it.

Theory of operation
-------------------
RFC 8866 section 5: a description is lines ``<type>=<value>``, one letter of type, no space
around the "=". The session part comes first::

    v=  (protocol version, "0")          o=  (originator and session identifier)
    s=  (session name)                   i=* u=* e=* p=*  (information, URI, email, phone)
    c=* (connection data)                b=* (bandwidth)
    t=  r=* (timing, one or more)        z=* k=* a=*  (time zones, key, attributes)

then zero or more media sections, each opened by ``m=`` and holding ``i=* c=* b=* k=* a=*``.

What we keep and how:

- ``v``, ``o``, ``s`` are fields of :class:`SessionDescription` (typed: :class:`Origin`).
- Every other line is kept **in the order it came**, in ``SessionDescription.lines`` or
  ``Media.lines``: ``c=`` as :class:`Connection`, ``b=`` as :class:`Bandwidth`, ``a=`` as
  :class:`Attribute` (a flag, or a name and an opaque value: crypto, candidates, fingerprints
  stay text), anything else (``i u e p t r z k`` and letters RFC 8866 does not define) as
  :class:`Field`, text unchanged. So an SDP written back is the SDP that came in, line for line,
  with CRLF line ends (section 5: "CRLF", though a bare LF is accepted on input).
- What the B2BUA needs is typed on demand: the codecs of a media (:meth:`Media.codecs`, with
  RFC 3551's static payload types), its address and port (:meth:`SessionDescription.endpoint`),
  its direction, rtcp port, rtcp-mux, ptime; and one edit, :meth:`SessionDescription.keep_codecs`.

Strictness: what we cannot relay raises :class:`SdpError` with the status to answer — 400 for a
body that is not SDP at all (binary, empty, not ``x=`` lines), 488 Not Acceptable Here for an
SDP that breaks the grammar where it matters (v= not first or not 0; o=, s=, t= missing or
malformed; a bad ``m=`` or ``c=``; an rtpmap without a clock rate; too many media; too big).
We are lenient where real endpoints differ harmlessly: an empty ``s=``, a bare LF, blank lines,
runs of spaces between the fields of ``o=``, ``c=`` and ``m=``, lines in an unusual order.
No input makes :meth:`SessionDescription.parse` raise anything but :class:`SdpError`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from smartswitch.sip.errors import SipError
from smartswitch.sip.grammar import is_digits

__all__ = [
    "AUXILIARY_CODECS",
    "DIRECTIONS",
    "MAX_BODY",
    "MAX_MEDIA",
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "Field",
    "Line",
    "Media",
    "MediaEndpoint",
    "Origin",
    "SdpError",
    "SessionDescription",
]

MAX_BODY = 65536  # bytes; one UDP datagram at most, and no real offer comes near it
MAX_MEDIA = 64  # media sections; WebRTC bundles stay well under it

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 8866 section 6.7

# RFC 3551 tables 4 and 5: payload types with a fixed meaning, usable without a=rtpmap.
# payload type -> (encoding name, clock rate, channels)
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),  # 16 kHz sampling, 8000 by a historical error the RFC keeps
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, None),
    26: ("JPEG", 90000, None),
    28: ("nv", 90000, None),
    31: ("H261", 90000, None),
    32: ("MPV", 90000, None),
    33: ("MP2T", 90000, None),
    34: ("H263", 90000, None),
}

# Payload formats that ride along with a codec but carry no voice of their own: a media left
# with only these after filtering has no codec in common.
AUXILIARY_CODECS = frozenset({"telephone-event", "cn", "red", "ulpfec", "flexfec", "rtx"})

_SESSION_ONLY = frozenset("vostrzuep")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # any C0 but tab and line feed; DEL
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 8866 section 9: token
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")


class SdpError(SipError):
    """An SDP body we cannot accept: ``status`` and ``reason`` are what the request gets answered
    (488 Not Acceptable Here, or 400 when the body is not SDP at all); ``line_number`` (from 1)
    names the offending line when there is one."""

    def __init__(self, status: int, reason: str, line_number: int | None = None) -> None:
        where = f"SDP line {line_number}: " if line_number is not None else "SDP: "
        super().__init__(where + reason)
        self.status = status
        self.reason = reason
        self.line_number = line_number


# --------------------------------------------------------------------------------------------
# Line values


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``.

    The numbers stay text (they may exceed 64 bits and are compared, not computed with), except
    when :meth:`next_version` makes the version a modified SDP must carry (RFC 3264 section 8).
    """

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    def next_version(self) -> Origin:
        return Origin(
            self.username,
            self.session_id,
            str(int(self.session_version) + 1),
            self.nettype,
            self.addrtype,
            self.address,
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>``; multicast keeps its ``/ttl/count``."""

    addrtype: str
    address: str
    nettype: str = "IN"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl`` or ``/count``."""
        return self.address.split("/", 1)[0]

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0 (or ::): the RFC 2543 way of putting a stream on hold (RFC 3264 section 8.4)."""
        return self.host in ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (kilobits per second for CT and AS)."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=<name>`` (a flag, ``value`` None) or ``a=<name>:<value>`` (value kept as text)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class Field:
    """Any other line, its text unchanged: ``i u e p t r z k`` and unknown letters."""

    type: str
    value: str

    def __str__(self) -> str:
        return self.value


Line = Connection | Bandwidth | Attribute | Field

_PREFIX: dict[type, str] = {Connection: "c=", Bandwidth: "b=", Attribute: "a="}


def _write(line: Line) -> str:
    if isinstance(line, Field):
        return f"{line.type}={line.value}"
    return _PREFIX[type(line)] + str(line)


@dataclass(frozen=True, slots=True)
class Codec:
    """One payload format of an RTP media: from its ``a=rtpmap`` or RFC 3551's static table.

    ``name`` is None for a dynamic payload type without an rtpmap (nothing says what it is).
    """

    payload_type: int
    name: str | None
    clock_rate: int | None
    channels: int | None = None
    fmtp: str | None = None

    def matches(self, spec: str) -> bool:
        """``spec`` names this codec: "PCMA", "pcma", "opus/48000" or "opus/48000/2"
        (encoding names are case-insensitive, RFC 4855 section 3)."""
        if self.name is None:
            return False
        name, _, rest = spec.partition("/")
        if name.lower() != self.name.lower():
            return False
        if not rest:
            return True
        rate, _, channels = rest.partition("/")
        if rate != str(self.clock_rate):
            return False
        return not channels or channels == str(self.channels or 1)

    @property
    def auxiliary(self) -> bool:
        """DTMF, comfort noise, redundancy, FEC: no voice of its own."""
        return self.name is not None and self.name.lower() in AUXILIARY_CODECS


@dataclass(frozen=True, slots=True)
class MediaEndpoint:
    """Where a media section's RTP goes: its connection address and port (rtcp if stated)."""

    kind: str
    address: str | None  # None: no c= applies (allowed only for a disabled media)
    port: int
    addrtype: str | None
    rtcp_port: int | None  # a=rtcp, or None (then port + 1, or the RTP port with rtcp-mux)
    rtcp_mux: bool


# --------------------------------------------------------------------------------------------
# Sections


class _Section:
    """What a session and a media section both have: their lines in order, with the c= and
    a= lines read and edited through these accessors.

    The lines are each subclass's dataclass field, reached through :meth:`_lines_of`, and the
    constants are methods: to mypyc (setup.py compiles this module) an annotation or a class
    attribute here or in a subclass is a field with a default, placed ahead of the subclasses'
    fields without one."""

    __slots__ = ()

    def _lines_of(self) -> list[Line]:
        raise NotImplementedError

    def _leading(self) -> str:
        """The field types RFC 8866 places before c= in this section."""
        raise NotImplementedError

    @property
    def connection(self) -> Connection | None:
        return _first(self._lines_of(), Connection)

    @connection.setter
    def connection(self, value: Connection | None) -> None:
        _set_connection(self._lines_of(), value, leading=self._leading())

    @property
    def attributes(self) -> list[Attribute]:
        return [line for line in self._lines_of() if isinstance(line, Attribute)]

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value`` (None if absent or a flag)."""
        return _attribute(self._lines_of(), name)

    def has(self, name: str) -> bool:
        """``a=name`` is present (as a flag or with a value)."""
        return any(isinstance(line, Attribute) and line.name == name for line in self._lines_of())

    def remove_attributes(self, name: str) -> None:
        lines = self._lines_of()
        lines[:] = [
            line for line in lines if not (isinstance(line, Attribute) and line.name == name)
        ]


@dataclass(slots=True)
class Media(_Section):
    """``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` and the lines under it."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    lines: list[Line] = field(default_factory=list)
    port_count: int | None = None

    def _lines_of(self) -> list[Line]:
        return self.lines

    def _leading(self) -> str:
        return "i"

    def copy(self) -> Media:
        """A copy to edit (see :meth:`SessionDescription.copy`)."""
        return replace(self, formats=list(self.formats), lines=list(self.lines))

    def __str__(self) -> str:
        return "\r\n".join(self._lines()) + "\r\n"

    def _lines(self) -> Iterator[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        yield " ".join(["m=" + self.kind, port, self.proto, *self.formats])
        for line in self.lines:
            yield _write(line)

    @property
    def is_rtp(self) -> bool:
        """RTP/AVP, RTP/SAVP, RTP/AVPF, UDP/TLS/RTP/SAVPF, ...: formats are payload types."""
        return "RTP/" in self.proto.upper()

    @property
    def disabled(self) -> bool:
        """Port 0: a stream rejected or disabled (RFC 3264 sections 6 and 8.2)."""
        return self.port == 0

    @property
    def direction(self) -> str | None:
        """The media's own sendrecv/sendonly/recvonly/inactive (None: not stated here)."""
        return _direction(self.lines)

    @direction.setter
    def direction(self, value: str | None) -> None:
        if value is not None and value not in DIRECTIONS:
            raise ValueError(f"not a direction: {value!r}")
        self.lines = [
            line
            for line in self.lines
            if not (isinstance(line, Attribute) and line.name in DIRECTIONS)
        ]
        if value is not None:
            self.lines.append(Attribute(value))

    @property
    def rtcp(self) -> tuple[int, Connection | None] | None:
        """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605)."""
        value = self.attribute("rtcp")
        return None if value is None else _rtcp(value)

    @property
    def rtcp_mux(self) -> bool:
        return self.has("rtcp-mux")  # RFC 5761 section 5.1.1

    @property
    def ptime(self) -> float | None:
        """``a=ptime`` in milliseconds."""
        value = self.attribute("ptime")
        return None if value is None else float(value)

    # Codecs ----------------------------------------------------------------------------------

    def codecs(self) -> list[Codec]:
        """The payload formats in ``m=`` order (empty for a non-RTP media)."""
        if not self.is_rtp:
            return []
        rtpmaps: dict[int, tuple[str, int, int | None]] = {}
        fmtps: dict[int, str] = {}
        for line in self.lines:
            if not isinstance(line, Attribute) or line.value is None:
                continue
            if line.name == "rtpmap":
                pt, encoding = _rtpmap(line.value)
                rtpmaps.setdefault(pt, encoding)
            elif line.name == "fmtp":
                fmt, _, params = line.value.partition(" ")
                if is_digits(fmt, 3):
                    fmtps.setdefault(int(fmt), params)
        codecs = []
        for fmt in self.formats:
            pt = int(fmt)
            known = rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if known is None:
                codecs.append(Codec(pt, None, None, None, fmtps.get(pt)))
            else:
                codecs.append(Codec(pt, known[0], known[1], known[2], fmtps.get(pt)))
        return codecs

    def keep_codecs(self, allowed: Iterable[str]) -> list[Codec]:
        """Remove every codec no spec in ``allowed`` matches (see :meth:`Codec.matches`), with
        its rtpmap, fmtp and rtcp-fb lines; the codecs kept, in order.

        A media left with no voice codec (nothing, or only telephone-event / CN) is disabled:
        port 0, its first original format kept because ``m=`` needs one (RFC 3264 section 6).
        A non-RTP media is left alone.
        """
        if not self.is_rtp:
            return []
        specs = list(allowed)
        codecs = self.codecs()
        kept = [codec for codec in codecs if any(codec.matches(spec) for spec in specs)]
        if not any(not codec.auxiliary for codec in kept):
            if codecs:
                self.port = 0
                self.port_count = None
                self.formats = self.formats[:1]
            return []
        keep = {str(codec.payload_type) for codec in kept}
        self.formats = [fmt for fmt in self.formats if fmt in keep]
        self.lines = [line for line in self.lines if not _names_dropped_format(line, keep)]
        return kept


@dataclass(slots=True)
class SessionDescription(_Section):
    """A whole SDP: ``v=``, ``o=``, ``s=``, the other session lines in order, the media."""

    origin: Origin
    name: str = "-"
    lines: list[Line] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)
    version: int = 0

    def _lines_of(self) -> list[Line]:
        return self.lines

    def _leading(self) -> str:
        return "iuep"

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Read an SDP body (bytes as they came in the SIP message, or text).

        Raises :class:`SdpError` (400 or 488), and nothing else, for a body we cannot accept.
        """
        return _Parser(data).parse()

    def __str__(self) -> str:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.name}"]
        out.extend(_write(line) for line in self.lines)
        for media in self.media:
            out.extend(media._lines())
        return "\r\n".join(out) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8", "surrogateescape")

    def copy(self) -> SessionDescription:
        """A copy to edit: its lists are new, the lines in them (frozen) are shared. Not
        ``copy.deepcopy``, which would set the fields of frozen lines one by one: refused when
        they are compiled (setup.py)."""
        return replace(self, lines=list(self.lines), media=[media.copy() for media in self.media])

    # What each media resolves to -------------------------------------------------------------

    def connection_of(self, media: Media) -> Connection | None:
        """The media's own c=, else the session's (RFC 8866 section 5.7)."""
        return media.connection or self.connection

    def direction_of(self, media: Media) -> str:
        """The media's direction, else the session's, else sendrecv (RFC 8866 section 6.7)."""
        return media.direction or _direction(self.lines) or "sendrecv"

    def is_on_hold(self, media: Media) -> bool:
        """Held: sendonly or inactive (RFC 3264 section 8.4), or the old c=0.0.0.0 (RFC 2543)."""
        connection = self.connection_of(media)
        if connection is not None and connection.is_unspecified:
            return True
        return self.direction_of(media) in ("sendonly", "inactive")

    def endpoint(self, media: Media) -> MediaEndpoint:
        connection = self.connection_of(media)
        rtcp = media.rtcp
        return MediaEndpoint(
            kind=media.kind,
            address=connection.host if connection is not None else None,
            port=media.port,
            addrtype=connection.addrtype if connection is not None else None,
            rtcp_port=rtcp[0] if rtcp is not None else None,
            rtcp_mux=media.rtcp_mux,
        )

    def endpoints(self) -> list[MediaEndpoint]:
        """:meth:`endpoint` of every media, in order."""
        return [self.endpoint(media) for media in self.media]

    def keep_codecs(self, allowed: Iterable[str]) -> None:
        """:meth:`Media.keep_codecs` on every enabled RTP media.

        Raises ``SdpError(488)`` when no RTP media is left with a voice codec (the answer to an
        offer that shares no codec with us, RFC 3261 section 13.3.1.1), leaving the description
        as it was.
        """
        specs = list(allowed)
        if not any(media.is_rtp and not media.disabled for media in self.media):
            return
        edited = [media.copy() for media in self.media]
        kept = [media.keep_codecs(specs) for media in edited if media.is_rtp and not media.disabled]
        if not any(kept):
            raise SdpError(488, "no allowed codec offered (" + ", ".join(specs) + ")")
        self.media = edited


def _first(lines: list[Line], kind: type[Connection]) -> Connection | None:
    for line in lines:
        if isinstance(line, kind):
            return line
    return None


def _set_connection(lines: list[Line], value: Connection | None, leading: str) -> None:
    """Replace the first c= (and drop any other), or put one where RFC 8866 places it: after
    the section's leading fields (``i``, and ``u e p`` at session level)."""
    index = next((i for i, line in enumerate(lines) if isinstance(line, Connection)), None)
    rest: list[Line] = [line for line in lines if not isinstance(line, Connection)]
    if value is None:
        lines[:] = rest
        return
    if index is None:
        index = 0
        while index < len(rest) and _is_field(rest[index], leading):
            index += 1
    rest.insert(index, value)
    lines[:] = rest


def _is_field(line: Line, types: str) -> bool:
    return isinstance(line, Field) and line.type in types


def _attribute(lines: list[Line], name: str) -> str | None:
    for line in lines:
        if isinstance(line, Attribute) and line.name == name:
            return line.value
    return None


def _direction(lines: list[Line]) -> str | None:
    found = None
    for line in lines:
        if isinstance(line, Attribute) and line.value is None and line.name in DIRECTIONS:
            found = line.name
    return found


def _names_dropped_format(line: Line, keep: set[str]) -> bool:
    """An rtpmap, fmtp or rtcp-fb line about a payload type no longer offered."""
    if not isinstance(line, Attribute) or line.value is None:
        return False
    if line.name not in ("rtpmap", "fmtp", "rtcp-fb"):
        return False
    fmt = line.value.split(" ", 1)[0]
    return fmt != "*" and fmt not in keep


def _rtpmap(value: str) -> tuple[int, tuple[str, int, int | None]]:
    """``<payload type> <encoding name>/<clock rate>[/<encoding parameters>]``; ValueError."""
    pt, _, encoding = value.partition(" ")
    parts = encoding.strip().split("/")
    if not is_digits(pt, 3) or int(pt) > 127 or len(parts) not in (2, 3):
        raise ValueError("rtpmap is not '<payload type> <encoding>/<clock rate>[/<channels>]'")
    name, rate = parts[0], parts[1]
    if not name or not is_digits(rate, 7):
        raise ValueError("rtpmap encoding name or clock rate missing")
    channels: int | None = None
    if len(parts) == 3:
        if not is_digits(parts[2], 3):
            raise ValueError("rtpmap channels is not a number")
        channels = int(parts[2])
    return int(pt), (name, int(rate), channels)


def _rtcp(value: str) -> tuple[int, Connection | None]:
    """``a=rtcp:<port> [<nettype> <addrtype> <connection-address>]`` (RFC 3605); ValueError."""
    parts = value.split()
    if not parts or not _is_port(parts[0]) or len(parts) not in (1, 4):
        raise ValueError("rtcp is not '<port> [IN IP4|IP6 <address>]'")
    if len(parts) == 1:
        return int(parts[0]), None
    return int(parts[0]), _connection(parts[1:])


def _is_port(text: str) -> bool:
    return is_digits(text, 5) and int(text) <= 65535


def _connection(parts: list[str]) -> Connection:
    """``IN IP4|IP6 <address>``; ValueError naming what is wrong."""
    if len(parts) != 3:
        raise ValueError("c= is not '<nettype> <addrtype> <address>'")
    nettype, addrtype, address = parts
    if nettype != "IN":
        raise ValueError(f"unsupported network type {nettype!r} (only IN)")
    if addrtype not in ("IP4", "IP6"):
        raise ValueError(f"unsupported address type {addrtype!r} (IP4 or IP6)")
    if not _valid_address(addrtype, address):
        raise ValueError(f"bad {addrtype} address {address!r}")
    return Connection(addrtype, address, nettype)


def _is_ipv4(host: str) -> bool:
    """Dotted decimal, four numbers 0-255 without leading zeros (which some read as octal)."""
    parts = host.split(".")
    return len(parts) == 4 and all(
        is_digits(part, 3) and int(part) <= 255 and (part == "0" or part[0] != "0")
        for part in parts
    )


def _valid_address(addrtype: str, address: str) -> bool:
    """An IPv4/IPv6 literal of the right family or a host name (RFC 8866 section 5.7), with a
    multicast ``/ttl[/count]`` suffix allowed."""
    host, *suffix = address.split("/")
    if len(suffix) > 2 or not all(is_digits(part, 5) for part in suffix):
        return False
    if not host or len(host) > 253:
        return False
    if addrtype == "IP4" and host.replace(".", "").isdigit():
        return _is_ipv4(host)
    if addrtype == "IP6" and ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOSTNAME.fullmatch(host) is not None and not host.replace(".", "").isdigit()


# --------------------------------------------------------------------------------------------
# The parser


class _Parser:
    def __init__(self, data: bytes | str) -> None:
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
            if len(raw) > MAX_BODY:
                raise SdpError(488, f"SDP body of {len(raw)} bytes is over {MAX_BODY}")
            self.text = raw.decode("utf-8", "surrogateescape")
        elif isinstance(data, str):
            if len(data) > MAX_BODY:
                raise SdpError(488, f"SDP body of {len(data)} characters is over {MAX_BODY}")
            self.text = data
        else:
            raise TypeError(f"SDP is bytes or str, not {type(data).__name__}")
        self.number = 0

    def fail(self, reason: str) -> SdpError:
        return SdpError(488, reason, self.number)

    def parse(self) -> SessionDescription:
        text = self.text
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        first = next((i for i, line in enumerate(lines) if line and not line.isspace()), None)
        if first is None:
            raise SdpError(400, "empty body, not SDP", 1 if text else None)
        head = lines[first]
        if head[1:2] != "=" or not "a" <= head[0] <= "z":
            raise SdpError(400, "not an SDP body (no '<type>=' line)", first + 1)
        bad = _CONTROL.search(text)
        if bad is not None:
            line_number = text.count("\n", 0, bad.start()) + 1
            raise SdpError(488, "control character in the line", line_number)
        version: int | None = None
        origin: Origin | None = None
        name: str | None = None
        timing = False
        session: list[Line] = []
        media: list[Media] = []
        for number, line in enumerate(lines, 1):
            if not line or line.isspace():
                continue  # blank lines (a trailing CRLF, multipart leftovers) carry nothing
            self.number = number
            kind = line[0]
            if line[1:2] != "=" or not "a" <= kind <= "z":
                raise self.fail(f"not '<type>=<value>': {line[:40]!r}")
            value = line[2:]
            if version is None:
                if kind != "v":
                    raise self.fail("v= must be the first line")
                if value.strip() != "0":
                    raise self.fail(f"unsupported SDP version {value!r} (v=0)")
                version = 0
                continue
            if kind == "m":
                if len(media) >= MAX_MEDIA:
                    raise self.fail(f"more than {MAX_MEDIA} media sections")
                media.append(self.media(value))
                continue
            if media:
                if kind in _SESSION_ONLY:
                    raise self.fail(f"{kind}= is a session-level line, found in a media section")
                media[-1].lines.append(self.line(kind, value))
                continue
            if kind == "v":
                raise self.fail("v= given twice")
            if kind == "o":
                if origin is not None:
                    raise self.fail("o= given twice")
                origin = self.origin(value)
            elif kind == "s":
                if name is not None:
                    raise self.fail("s= given twice")
                name = value
            else:
                if kind == "t":
                    self.timing(value)
                    timing = True
                session.append(self.line(kind, value))
        self.number = 0
        if origin is None:
            raise SdpError(488, "no o= line")
        if name is None:
            raise SdpError(488, "no s= line")
        if not timing:
            raise SdpError(488, "no t= line")
        session_connection = _first(session, Connection)
        for index, section in enumerate(media, 1):
            if section.port and session_connection is None and section.connection is None:
                raise SdpError(
                    488, f"media {index} ({section.kind}) has no c= and neither has the session"
                )
        return SessionDescription(origin, name, session, media, 0)

    def origin(self, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise self.fail("o= is not '<username> <sess-id> <sess-version> IN IP4|IP6 <address>'")
        username, session_id, session_version, nettype, addrtype, address = parts
        if not is_digits(session_id, 64) or not is_digits(session_version, 64):
            raise self.fail("o= session id and version must be numbers")
        if addrtype not in ("IP4", "IP6"):
            raise self.fail(f"o= address type {addrtype!r} is not IP4 or IP6")
        return Origin(username, session_id, session_version, nettype, addrtype, address)

    def timing(self, value: str) -> None:
        parts = value.split()
        if len(parts) != 2 or not all(is_digits(part, 20) for part in parts):
            raise self.fail("t= is not '<start-time> <stop-time>'")

    def media(self, value: str) -> Media:
        parts = value.split()
        if len(parts) < 3:
            raise self.fail("m= is not '<media> <port> <proto> <fmt> ...'")
        kind, port_text, proto, *formats = parts
        if _TOKEN.fullmatch(kind) is None:
            raise self.fail(f"m= media type {kind[:20]!r} is not a token")
        port_text, slash, count_text = port_text.partition("/")
        if not _is_port(port_text):
            raise self.fail(f"m= port {port_text[:20]!r} is not a number from 0 to 65535")
        port_count: int | None = None
        if slash:
            if not is_digits(count_text, 5) or int(count_text) == 0:
                raise self.fail(f"m= number of ports {count_text[:20]!r} is not a number")
            port_count = int(count_text)
        port = int(port_text)
        if not formats and port != 0:
            raise self.fail("m= lists no format")
        section = Media(kind, port, proto, formats, [], port_count)
        if section.is_rtp:
            for fmt in formats:
                if not is_digits(fmt, 3) or int(fmt) > 127:
                    raise self.fail(f"m= RTP payload type {fmt[:20]!r} is not 0-127")
        return section

    def line(self, kind: str, value: str) -> Line:
        try:
            if kind == "c":
                return _connection(value.split())
            if kind == "b":
                bwtype, colon, amount = value.partition(":")
                if not colon or _TOKEN.fullmatch(bwtype) is None or not is_digits(amount, 12):
                    raise ValueError("b= is not '<bwtype>:<bandwidth>'")
                return Bandwidth(bwtype, int(amount))
            if kind == "a":
                return self.attribute(value)
        except ValueError as exc:
            raise self.fail(str(exc)) from None
        return Field(kind, value)

    def attribute(self, value: str) -> Attribute:
        name, colon, rest = value.partition(":")
        if _TOKEN.fullmatch(name) is None:
            raise ValueError(f"a= attribute name {name[:20]!r} is not a token")
        if not colon:
            return Attribute(name)
        if name == "rtpmap":
            _rtpmap(rest)
        elif name == "rtcp":
            _rtcp(rest)
        elif name == "ptime" or name == "maxptime":
            text = rest.strip()
            whole, dot, fraction = text.partition(".")
            if not is_digits(whole, 6) or (dot and not is_digits(fraction, 6)):
                raise ValueError(f"a={name} is not a number of milliseconds")
        return Attribute(name, rest)
