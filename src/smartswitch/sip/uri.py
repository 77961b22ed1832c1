"""SIP URIs (RFC 3261 section 19.1) and name-addr values (From, To, Contact, Route).

``sip:`` and ``sips:`` URIs are parsed into their parts; any other scheme (``tel:``, ``urn:``,
``http:``) is kept as opaque text, since we only need to carry it, not route on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.grammar import (
    format_params,
    is_digits,
    parse_params,
    quote,
    split_outside_quotes,
    unquote,
)


@dataclass(slots=True)
class SipUri:
    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""  # the "?h=v&..." part, without the "?", kept as text
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError(f"not a SIP URI: {text[:60]!r}", 416)
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            # The first "@" ends the userinfo: a user may contain "?" and ";" (RFC 3261 25.1
            # user-unreserved), while no part after the host may contain an unescaped "@".
            userinfo, _, rest = rest.partition("@")
            user, _, pw = userinfo.partition(":")
            password = pw or None
        headers = ""
        if "?" in rest:
            rest, _, headers = rest.partition("?")
        hostport, semi, paramtext = rest.partition(";")
        params = parse_params(paramtext) if semi else {}
        host, port = parse_hostport(hostport, text)
        return cls(scheme, user, host, port, params, headers, password)

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        return (value or "udp").lower()

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?" + self.headers)
        return "".join(out)


_NOT_IN_HOST = frozenset(' \t<>"@')


def format_host(host: str) -> str:
    """Hosts are kept bare (``::1``); IPv6 references get their brackets back when written."""
    return f"[{host}]" if ":" in host else host


def default_port(transport: str) -> int:
    """The port a URI without one means (RFC 3261 19.1.2): 5061 over TLS, 5060 otherwise."""
    return 5061 if transport == "tls" else 5060


def parse_hostport(text: str, context: str = "") -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` into (host, port)."""
    text = text.strip()
    if not text:
        raise SipParseError(f"missing host in {context[:60]!r}")
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {context[:60]!r}")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"bad IPv6 reference in {context[:60]!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
        if not host or not _NOT_IN_HOST.isdisjoint(host):
            raise SipParseError(f"bad host in {context[:60]!r}")
    if not host:
        raise SipParseError(f"empty IPv6 reference in {context[:60]!r}")
    if not port_text:
        return host, None
    if not is_digits(port_text, 5) or not 0 < int(port_text) < 65536:
        raise SipParseError(f"bad port in {context[:60]!r}")
    return host, int(port_text)


@dataclass(slots=True)
class NameAddr:
    """``"Display" <uri>;params`` or a bare ``uri;params``: From, To, Contact, Route entries.

    In the bare form the parameters belong to the header, not to the URI (RFC 3261 20.10), so a
    ``;tag`` after a bare URI is a header parameter; the URI text is kept as given.
    """

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise SipParseError("empty address")
        lt = text.find("<") if '"' not in text else _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"unterminated '<' in address {text[:60]!r}")
            display_text = text[:lt].strip()
            display = unquote(display_text) if display_text else None
            uri = text[lt + 1 : gt].strip()
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise SipParseError(f"junk after address {text[:60]!r}")
            params = parse_params(rest) if rest else {}
        else:
            uri, semi, paramtext = text.partition(";")
            uri = uri.strip()
            if " " in uri or not uri or ":" not in uri:
                raise SipParseError(f"bad address {text[:60]!r}")
            if "?" in uri:
                # RFC 3261 20.10: a URI with headers (or "," or ";") must be enclosed in <>.
                raise SipParseError(f"URI with headers outside <> in {text[:60]!r}")
            display = None
            params = parse_params(paramtext) if semi else {}
        if ":" not in uri:
            raise SipParseError(f"address without a URI scheme: {text[:60]!r}")
        return cls(uri, display, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def __str__(self) -> str:
        head = f"{quote(self.display)} " if self.display else ""
        return f"{head}<{self.uri}>{format_params(self.params)}"


def _find_unquoted(text: str, ch: str) -> int:
    if '"' not in text:
        return text.find(ch)
    in_quotes = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == ch:
            return i
        i += 1
    return -1


@dataclass(slots=True)
class Via:
    """One Via entry: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        text = text.strip()
        # RFC 3261 25.1: sent-protocol = name SLASH version SLASH transport, where SLASH allows
        # white space around the "/" (RFC 4475 3.1.1.1); then LWS, sent-by, params.
        head, semi, paramtext = text.partition(";")
        parts = head.split("/", 2)
        if len(parts) != 3:
            raise SipParseError(f"bad Via protocol {text[:60]!r}")
        transport_sent_by = parts[2].split(None, 1)
        if parts[0].strip().upper() != "SIP" or parts[1].strip() != "2.0" or not transport_sent_by:
            raise SipParseError(f"bad Via protocol {text[:60]!r}")
        if len(transport_sent_by) != 2:
            raise SipParseError(f"missing sent-by in {text[:60]!r}")
        transport, sent_by = transport_sent_by
        host, port = parse_hostport(sent_by, text)
        params = parse_params(paramtext) if semi else {}
        return cls(transport.upper(), host, port, params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return (
            f"SIP/2.0/{self.transport} {format_host(self.host)}{port}{format_params(self.params)}"
        )


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not is_digits(parts[0], 10):
            raise SipParseError(f"bad CSeq {text[:40]!r}")
        number = int(parts[0])
        if number >= 2**31:
            raise SipParseError(f"CSeq number out of range {text[:40]!r}")
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def split_name_addrs(value: str) -> list[NameAddr]:
    """The entries of a Contact / Route / Record-Route value."""
    return [NameAddr.parse(p) for p in split_outside_quotes(value, ",") if p.strip()]
