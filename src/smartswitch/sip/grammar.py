"""Small pieces of the RFC 3261 grammar (section 25) shared by the header parsers.

Only what the parsers need: splitting comma-separated header values outside quotes and angle
brackets, splitting ``;param`` lists, unquoting quoted-strings. Written with ``str`` methods
rather than regular expressions because they run on every message.
"""

from __future__ import annotations

# RFC 3261 section 7.3.3: compact forms of header field names.
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
}

# Header names as we write them; any other name is written as received.
CANONICAL_NAMES: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
}

# RFC 3261 section 7.3.1: these may be combined with commas in one header line, so a value holds
# several entries. Other headers (dates, Authorization, user agents) contain commas of their own.
MULTI_VALUE: frozenset[str] = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "in-reply-to",
        "reason",
    }
)


def is_digits(text: str, max_len: int) -> bool:
    """``text`` is 1 to ``max_len`` ASCII digits.

    ``str.isdigit`` alone accepts digits such as "²" that ``int()`` refuses, and ``int()`` refuses
    strings of more than 4300 digits: both would escape as ValueError instead of a 400.
    """
    return 0 < len(text) <= max_len and text.isascii() and text.isdigit()


def canonical_name(key: str) -> str:
    """The conventional spelling of a lower-case header name."""
    name = CANONICAL_NAMES.get(key)
    if name is None:
        name = "-".join(part.capitalize() for part in key.split("-"))
    return name


def split_outside_quotes(value: str, sep: str) -> list[str]:
    """Split ``value`` at ``sep`` where it is not inside a quoted-string or ``<...>``."""
    if sep not in value:
        return [value]
    if '"' not in value and "<" not in value:
        return value.split(sep)
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def split_values(value: str) -> list[str]:
    """The entries of a comma-separated header value, stripped, empty ones dropped."""
    return [p.strip() for p in split_outside_quotes(value, ",") if p.strip()]


def parse_params(text: str) -> dict[str, str | None]:
    """``;a=b;flag;c="q"`` (leading ``;`` optional) into an ordered dict; names lower-cased.

    A parameter without ``=`` maps to None (``;lr``, ``;rport``). Quoted values keep their quotes
    so that they serialise back unchanged; use :func:`unquote` to read them.
    """
    params: dict[str, str | None] = {}
    # split_outside_quotes's own fast path, without the call: most parameters are plain.
    parts = (
        text.split(";") if '"' not in text and "<" not in text else split_outside_quotes(text, ";")
    )
    for part in parts:
        part = part.strip()
        if not part:
            continue
        name, eq, val = part.partition("=")
        params[name.strip().lower()] = val.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote(text: str) -> str:
    """The content of a quoted-string, with backslash escapes resolved (RFC 3261 25.1)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if "\\" not in inner:
            return inner
        out = []
        i = 0
        while i < len(inner):
            ch = inner[i]
            if ch == "\\" and i + 1 < len(inner):
                i += 1
                ch = inner[i]
            out.append(ch)
            i += 1
        return "".join(out)
    return text


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
