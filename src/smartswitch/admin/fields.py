"""Field values from text: the one set of validators for provisioning, the REST API and the UI.

Each parser takes the text an operator wrote (a YAML scalar's source, a form field, a JSON
string, a CSV cell) and returns the value or raises :class:`ValueError` with a message fit to
show next to the field.  Money is parsed from its text, never through float.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from smartswitch.model.config import PeerRole, ProfitControl, RewriteRule, RouteStrategy
from smartswitch.model.increment import Increment, IncrementError
from smartswitch.model.media import MediaMode
from smartswitch.routing.selection import RewriteError, check_rewrite_rule
from smartswitch.store.schema import NAME_LENGTH, PREFIX_LENGTH
from smartswitch.store.types import exact_decimal, typed_utc_ms
from smartswitch.store.values import format_acl_entry, parse_acl_entry, parse_address

__all__ = [
    "TRANSPORTS",
    "parse_acl",
    "parse_address_text",
    "parse_bool",
    "parse_choice",
    "parse_currency",
    "parse_datetime",
    "parse_decimal",
    "parse_fingerprint",
    "parse_increment",
    "parse_integer",
    "parse_name",
    "parse_prefix",
    "parse_rewrite",
]

E = TypeVar("E")

TRANSPORTS = ("udp", "tcp", "tls")
MEDIA_MODES = tuple(m.value for m in MediaMode)
MONEY_DIGITS = 18  # store.types.PRECISION
INT_MAX = 2**31 - 1  # what an INTEGER column holds on MariaDB
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_PREFIX = re.compile(r"^[0-9]*$")
_INT = re.compile(r"^[+-]?[0-9]+$")
_TRUE = frozenset({"yes", "true", "on", "y", "1"})
_FALSE = frozenset({"no", "false", "off", "n", "0"})

ROLES = tuple(r.value for r in PeerRole)
STRATEGIES = tuple(s.value for s in RouteStrategy)
PROFIT_CONTROLS = tuple(p.value for p in ProfitControl)


def parse_name(text: str) -> str:
    if not _NAME.match(text) or len(text) > NAME_LENGTH:
        raise ValueError(
            f"{text!r} is not a valid name (letters, digits and . _ @ + -, "
            f"at most {NAME_LENGTH} characters, starting with a letter or digit)"
        )
    return text


def parse_currency(text: str) -> str:
    if not _CURRENCY.match(text):
        raise ValueError(f"currency must be a 3-letter ISO 4217 code in capitals, got {text!r}")
    return text


def parse_prefix(text: str) -> str:
    if not _PREFIX.match(text) or len(text) > PREFIX_LENGTH:
        raise ValueError(f"a prefix is digits only (at most {PREFIX_LENGTH}), got {text!r}")
    return text


def parse_decimal(text: str, scale: int, *, minimum: Decimal | None = None) -> Decimal:
    """Exact decimal text with at most ``scale`` places (more is refused, never rounded)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"expected a decimal number, got {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"expected a finite decimal number, got {text!r}")
    # The columns are DECIMAL(18, scale): refuse what they cannot hold before any arithmetic
    # (quantizing 1E+100 would itself fail).
    if value.adjusted() >= MONEY_DIGITS - scale:
        raise ValueError(f"too large: at most {MONEY_DIGITS - scale} digits before the point")
    value = exact_decimal(value, scale)
    if minimum is not None and value < minimum:
        raise ValueError(f"must be at least {minimum}, got {value}")
    return value


def parse_integer(text: str, *, minimum: int = 0, maximum: int | None = INT_MAX) -> int:
    if not _INT.match(text.strip()) or len(text.strip()) > 12:
        if _INT.match(text.strip()):
            raise ValueError(f"must be at most {maximum}, got {text.strip()}")
        raise ValueError(f"expected a whole number, got {text!r}")
    value = int(text)
    if value < minimum:
        raise ValueError(f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be at most {maximum}, got {value}")
    return value


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_datetime(text: str) -> datetime:
    """ISO 8601; a time without a zone is UTC (documented for provisioning and the API)."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 date and time (2025-01-31T00:00:00Z), got {text!r}"
        ) from None
    return typed_utc_ms(value)


def parse_increment(text: str) -> Increment:
    try:
        return Increment.parse(text)
    except IncrementError as exc:
        raise ValueError(str(exc)) from None


def parse_choice(enum_type: Callable[[str], E], values: tuple[str, ...]) -> Callable[[str], E]:
    def parse(text: str) -> E:
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}; got {text!r}")
        return enum_type(text)

    return parse


parse_role = parse_choice(PeerRole, ROLES)
parse_strategy = parse_choice(RouteStrategy, STRATEGIES)
parse_profit_control = parse_choice(ProfitControl, PROFIT_CONTROLS)
parse_transport = parse_choice(str, TRANSPORTS)
parse_media_mode = parse_choice(MediaMode, MEDIA_MODES)

_CODEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,31}")


def parse_codec(text: str) -> str:
    """A codec's encoding name as rtpengine and SDP's rtpmap spell it (PCMA, G729, opus,
    telephone-event): letters, digits, dots and dashes; "all" is rtpengine's word, not a codec."""
    text = text.strip()
    if not _CODEC.fullmatch(text) or text.lower() == "all":
        raise ValueError(f"not a codec name (like PCMA, PCMU, G729, opus): {text!r}")
    return text


def parse_address_text(text: str) -> str:
    text = text.strip()
    parse_address(text)
    return text


def parse_fingerprint(text: str) -> str | None:
    """A certificate's SHA-256 fingerprint as an operator pastes it (any case, colons or not,
    ``openssl x509 -fingerprint -sha256``'s ``sha256 Fingerprint=`` prefix), in the one form
    the TLS transport gives (``AB:CD:...``); empty is none."""
    value = text.strip()
    if not value:
        return None
    if "=" in value:
        value = value.rpartition("=")[2]
    digits = value.replace(":", "").replace(" ", "").upper()
    if len(digits) != 64 or any(c not in "0123456789ABCDEF" for c in digits):
        raise ValueError("a SHA-256 fingerprint: 64 hex digits, colons allowed")
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def parse_acl_item(text: str) -> str:
    """One ACL entry in its canonical text (so the same network written two ways is one)."""
    return format_acl_entry(parse_acl_entry(text))


def parse_acl(items: list[str]) -> list[str]:
    """A whole ACL; the first bad entry raises, naming it."""
    entries: list[str] = []
    for item in items:
        entry = parse_acl_item(item)
        if entry in entries:
            raise ValueError(f"{entry} is listed twice")
        entries.append(entry)
    return entries


def parse_rewrite(match: str, replace: str) -> dict[str, str]:
    try:
        check_rewrite_rule(RewriteRule(match, replace))
    except RewriteError as exc:
        raise ValueError(str(exc)) from None
    return {"match": match, "replace": replace}
