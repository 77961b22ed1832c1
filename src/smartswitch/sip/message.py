"""SIP requests and responses: parsing and serialising (RFC 3261 sections 7, 18.3, 20, 25).

Parsing is lazy where it pays: the head is split once into header lines indexed by their
lower-cased, compact-expanded name; a header's value is parsed (Via, CSeq, From, ...) only when
asked for, and then cached. Headers we never touch are written out as they came in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.grammar import (
    COMPACT_FORMS,
    MULTI_VALUE,
    canonical_name,
    is_digits,
    split_values,
)
from smartswitch.sip.uri import CSeq, NameAddr, SipUri, Via

T = TypeVar("T")

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    429: "Too Many Requests",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")

# RFC 3986 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")

# Headers a message carries at most once (RFC 3261 7.3.1: only list headers may repeat). Two
# Content-Lengths leave the body's size unknown, two CSeqs or Call-IDs the transaction
# (RFC 4475 3.3.9 mcl01, 3.3.8 multi01): a 400 either way.
_SINGLE_VALUE = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length"})


class Headers:
    """Header lines in order, as (key, name, value): key lower-case and compact-expanded.

    A message has a dozen or so headers, so a linear scan beats building a dict per message.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    @staticmethod
    def key(name: str) -> str:
        key = name.lower()
        return COMPACT_FORMS.get(key, key)

    def get(self, name: str) -> str | None:
        """The first value of a header (the whole line's value), or None."""
        key = name.lower()  # Headers.key, inline: this runs for every message
        key = COMPACT_FORMS.get(key, key)
        for k, _, v in self._items:
            if k == key:
                return v
        return None

    def get_lines(self, name: str) -> list[str]:
        key = self.key(name)
        return [v for k, _, v in self._items if k == key]

    def get_all(self, name: str) -> list[str]:
        """Every entry of a header, splitting comma-combined values of list headers."""
        key = name.lower()  # as in get
        key = COMPACT_FORMS.get(key, key)
        lines = [v for k, _, v in self._items if k == key]
        if key not in MULTI_VALUE:
            return lines
        out: list[str] = []
        for line in lines:
            out.extend(split_values(line))
        return out

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def add(self, name: str, value: str, first: bool = False) -> None:
        key = self.key(name)
        if name == key or len(name) == 1:
            name = canonical_name(key)
        if first:
            self._items.insert(0, (key, name, value))
        else:
            self._items.append((key, name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of a header by one line with ``value`` (kept at the first's place)."""
        key = self.key(name)
        for i, (k, n, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (k, n, value)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != key]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = self.key(name)
        self._items = [it for it in self._items if it[0] != key]

    def remove_first(self, name: str) -> None:
        key = self.key(name)
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                del self._items[i]
                return

    def items(self) -> Iterator[tuple[str, str, str]]:
        return iter(self._items)

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def __len__(self) -> int:
        return len(self._items)


def _parse_header(value: str | None, name: str, parse: Callable[[str], T]) -> T:
    """A single-valued header's value parsed, or the error naming it (missing, or how it is bad)."""
    if value is None:
        raise SipParseError(f"missing {name} header")
    try:
        return parse(value)
    except SipParseError as exc:
        raise SipParseError(f"bad {name} header: {exc.reason}", exc.status) from None


class SipMessage:
    """What requests and responses share: headers, body, and cached parsed header values."""

    __slots__ = ("_cseq", "_from", "_to", "_vias", "body", "headers")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._vias: list[Via] | None = None
        self._cseq: CSeq | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None

    # --- parsed views of the headers every transaction and dialog needs -----------------------

    @property
    def vias(self) -> list[Via]:
        if self._vias is None:
            values = self.headers.get_all("via")
            if not values:
                raise SipParseError("missing Via header")
            try:
                self._vias = [Via.parse(v) for v in values]
            except SipParseError as exc:
                raise SipParseError(f"bad Via header: {exc.reason}", exc.status) from None
        return self._vias

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = _parse_header(self.headers.get("cseq"), "CSeq", CSeq.parse)
        return self._cseq

    @property
    def from_(self) -> NameAddr:
        if self._from is None:
            self._from = _parse_header(self.headers.get("from"), "From", NameAddr.parse)
        return self._from

    @property
    def to(self) -> NameAddr:
        if self._to is None:
            self._to = _parse_header(self.headers.get("to"), "To", NameAddr.parse)
        return self._to

    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if not value:
            raise SipParseError("missing Call-ID header")
        return value

    def contacts(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("contact")]

    def invalidate(self) -> None:
        """Forget cached parsed values after editing headers in place."""
        self._vias = None
        self._cseq = None
        self._from = None
        self._to = None

    # --- serialising ----------------------------------------------------------------------------

    def first_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        lines = [self.first_line()]
        lines += [f"{n}: {v}" for k, n, v in self.headers._items if k != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body


class Request(SipMessage):
    __slots__ = ("_ruri", "method", "uri")

    def __init__(
        self, method: str, uri: str, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri
        self._ruri: SipUri | None = None

    @property
    def sip_uri(self) -> SipUri:
        """The Request-URI parsed (416 for a scheme other than sip/sips)."""
        if self._ruri is None:
            self._ruri = SipUri.parse(self.uri)
        return self._ruri

    def first_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(SipMessage):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")

    def first_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


class PartialMessage:
    """What could be read of a message that failed to parse: enough to address a 400."""

    __slots__ = ("first_line", "headers", "is_request")

    def __init__(self, first_line: str, headers: Headers, is_request: bool) -> None:
        self.first_line = first_line
        self.headers = headers
        self.is_request = is_request


# Header names as they came (before the colon), mapped to (name as written, key) once checked: a
# network uses a few dozen spellings, so the token check, lower-casing and compact-form lookup
# run once per spelling rather than once per line. Bounded in entries and length, so that a
# stream of invented names cannot grow it: past the bound, new spellings are checked each time.
_NAMES: dict[str, tuple[str, str]] = {}
_NAMES_MAX = 1024
_NAME_MAX_LENGTH = 64


def _header_name(raw: str, line: str) -> tuple[str, str]:
    name = raw.rstrip(" \t")
    if not name or not _TOKEN_CHARS.issuperset(name):
        raise SipParseError(f"malformed header line {line[:40]!r}")
    key = name.lower()
    known = (name, COMPACT_FORMS.get(key, key))
    if len(_NAMES) < _NAMES_MAX and len(raw) <= _NAME_MAX_LENGTH:
        _NAMES[raw] = known
    return known


def _split_head(data: bytes) -> tuple[str, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end].decode("utf-8", "surrogateescape"), data[end + 4 :]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end].decode("utf-8", "surrogateescape"), data[end + 2 :]
    # A datagram without the empty line: all head, no body (lenient, as most stacks are).
    return data.rstrip(b"\r\n").decode("utf-8", "surrogateescape"), b""


def parse_message(data: bytes, require_content_length: bool = False) -> Request | Response:
    """Parse one complete message (a datagram, or one message framed off a stream).

    Raises :class:`SipParseError` naming the fault; for requests its ``partial`` attribute holds
    the header lines read so far, so the caller can still answer with a 400.
    """
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head, rest = _split_head(data)
    if head.count("\n") == head.count("\r\n"):
        # Every line ends in CRLF, as it should (RFC 3261 7), but perhaps the last one's CR.
        lines = head.split("\r\n")
        if lines[-1].endswith("\r"):
            lines[-1] = lines[-1][:-1]
    else:
        lines = [raw[:-1] if raw.endswith("\r") else raw for raw in head.split("\n")]
    first = lines[0].rstrip("\r")
    is_request = not first.startswith("SIP/")
    headers = Headers()
    partial = PartialMessage(first, headers, is_request)
    items = headers._items
    append = items.append
    # The first line of each single-valued header, by key; the first repeated one, if any.
    singles: dict[str, int] = {}
    repeated: str | None = None
    try:
        for line in lines[1:]:
            if not line:
                continue
            if line[0] in " \t":
                # RFC 3261 7.3.1: a line starting with white space continues the previous one.
                if not items:
                    raise SipParseError("continuation line before any header")
                value = line.strip()
                if value:
                    key, name, previous = items[-1]
                    items[-1] = (key, name, f"{previous} {value}" if previous else value)
                continue
            raw, colon, value = line.partition(":")
            if not colon:
                raise SipParseError(f"malformed header line {line[:40]!r}")
            known = _NAMES.get(raw)
            if known is None:
                known = _header_name(raw, line)
            key = known[1]
            if key in _SINGLE_VALUE:
                if key not in singles:
                    singles[key] = len(items)
                elif repeated is None:
                    repeated = key
            append((key, known[0], value.strip()))
        if repeated is not None:
            raise SipParseError(f"more than one {canonical_name(repeated)} header")

        body = rest
        cl_index = singles.get("content-length")
        if cl_index is not None:
            cl_value = items[cl_index][2]
            cl_text = cl_value.strip()
            if not is_digits(cl_text, 10):
                raise SipParseError(f"bad Content-Length {cl_value[:20]!r}")
            length = int(cl_text)
            if length > len(rest):
                raise SipParseError("Content-Length larger than the body received")
            body = rest[:length]
        elif require_content_length:
            raise SipParseError("missing Content-Length on a stream transport")

        message: Request | Response
        if is_request:
            message = _parse_request_line(first, headers, body)
        else:
            message = _parse_status_line(first, headers, body)
        _check_mandatory(message, singles)
        return message
    except SipParseError as exc:
        exc.partial = partial
        raise


def _parse_request_line(line: str, headers: Headers, body: bytes) -> Request:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("malformed request line")
    method, uri, version = parts
    if not _TOKEN_CHARS.issuperset(method):
        raise SipParseError(f"bad method {method[:20]!r}")
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {version[:20]!r}", 505)
    scheme, colon, _ = uri.partition(":")
    if not colon or not scheme or not scheme[0].isalpha() or not _SCHEME_CHARS.issuperset(scheme):
        # Also catches "<sip:...>" (RFC 4475 3.1.2.7 ltgtruri).
        raise SipParseError(f"bad Request-URI {uri[:60]!r}")
    request = Request(method, uri, headers, body)
    if scheme.lower() in ("sip", "sips"):
        try:
            parsed = SipUri.parse(uri)
        except SipParseError as exc:
            raise SipParseError(f"bad Request-URI: {exc.reason}") from None
        if parsed.headers:
            # RFC 3261 19.1.1 (headers are not allowed in a Request-URI); RFC 4475 escruri.
            raise SipParseError(f"Request-URI with headers {uri[:60]!r}")
        request._ruri = parsed
    return request


def _parse_status_line(line: str, headers: Headers, body: bytes) -> Response:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {version[:20]!r}", 505)
    if len(code) != 3 or not is_digits(code, 3) or not 100 <= int(code) <= 699:
        raise SipParseError(f"bad status code {code[:20]!r}")
    return Response(int(code), reason, headers, body)


def _check_mandatory(message: Request | Response, singles: dict[str, int]) -> None:
    """RFC 3261 8.1.1: To, From, CSeq, Call-ID, Via are mandatory; parse the ones we rely on.

    ``singles`` indexes the first line of each single-valued header (from the header loop), so
    the values are read without a search and their parsed forms cached on the message.
    """
    message.vias  # noqa: B018 - parses and validates the Via entries
    items = message.headers._items

    def value(key: str) -> str | None:
        index = singles.get(key)
        return None if index is None else items[index][2]

    cseq = _parse_header(value("cseq"), "CSeq", CSeq.parse)
    message._cseq = cseq
    message._from = _parse_header(value("from"), "From", NameAddr.parse)
    message._to = _parse_header(value("to"), "To", NameAddr.parse)
    if not value("call-id"):
        raise SipParseError("missing Call-ID header")
    if isinstance(message, Request):
        if cseq.method != message.method:
            raise SipParseError("CSeq method does not match the request method")
        max_forwards = value("max-forwards")
        if max_forwards is not None and not is_digits(max_forwards.strip(), 10):
            raise SipParseError(f"bad Max-Forwards {max_forwards[:20]!r}")


def make_response(
    request: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    """A response to ``request`` carrying its Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6)."""
    headers = Headers()
    items = headers._items
    for item in request.headers._items:
        if item[0] in ("via", "from", "call-id", "cseq"):
            items.append(item)
        elif item[0] == "to":
            if to_tag is not None and status != 100 and "tag" not in request.to.params:
                items.append((item[0], item[1], f"{item[2]};tag={to_tag}"))
            else:
                items.append(item)
    return Response(status, reason, headers)


def response_from_partial(partial: PartialMessage, status: int, reason: str, to_tag: str) -> bytes:
    """Bytes of an error response to a request we could not fully parse.

    Copies whichever of Via, From, To, Call-ID and CSeq were readable, so the sender can match
    the answer to its transaction if at all possible.
    """
    lines = [f"SIP/2.0 {status} {reason}"]
    for key, name, value in partial.headers._items:
        if key in ("via", "from", "call-id", "cseq"):
            lines.append(f"{name}: {value}")
        elif key == "to":
            lines.append(
                f"{name}: {value}" if ";tag=" in value else f"{name}: {value};tag={to_tag}"
            )
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
