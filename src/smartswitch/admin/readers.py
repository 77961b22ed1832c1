"""One reader per entity, for every front door: a provisioning file, a web form, a JSON body.

Each reader takes a :class:`~smartswitch.admin.source.Given` (from :mod:`.yaml_source` or
:mod:`.form_source`) and returns the writer's spec, having reported every bad field at its
place and raised :class:`~smartswitch.admin.source.Invalid` if there was one. A reader
checks what each field says (through the validators of :mod:`.fields`) and what a list says
about itself (an ACL entry twice, a rate twice); the rules between fields and entities (what
a customer needs, secrets kept, references) are the writer's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from smartswitch.admin import fields as f
from smartswitch.admin.source import (
    Entity,
    Given,
    Invalid,
    Kind,
    Parser,
    each,
    read_all,
)
from smartswitch.admin.subscribers import (
    DEFAULT_MAX_CONTACTS,
    DidSpec,
    RegisterSpec,
    SubscriberSpec,
    parse_ha1,
)
from smartswitch.admin.writer import (
    KINDS,
    AccountSpec,
    ConfigChange,
    PeerSpec,
    Ref,
    RouteSpec,
    SupplierSpec,
    TariffSpec,
)
from smartswitch.billing.rating import RateError, check_rate
from smartswitch.model.config import ProfitControl, Rate, RouteStrategy
from smartswitch.model.increment import Increment
from smartswitch.store.types import AMOUNT_SCALE, PRICE_SCALE

__all__ = [
    "account",
    "did",
    "document",
    "peer",
    "route",
    "subscriber",
    "tariff",
]

T = TypeVar("T")

# ---- the field kinds


def _number(text: str) -> str:
    text = f.parse_prefix(text)
    if not text:
        raise ValueError("a number of at least one digit")
    return text


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError:
        raise ValueError(f"not a network (CIDR) with its host bits zero: {text!r}") from None


def _decimal(scale: int, minimum: Decimal | None = None) -> Parser[Decimal]:
    return Parser(Kind.DECIMAL, lambda text: f.parse_decimal(text, scale, minimum=minimum))


def _integer(minimum: int = 0, maximum: int | None = f.INT_MAX) -> Parser[int]:
    return Parser(
        Kind.INTEGER, lambda text: f.parse_integer(text, minimum=minimum, maximum=maximum)
    )


def _ha1(algorithm: str) -> Parser[str]:
    return Parser(Kind.TEXT, lambda text: parse_ha1(text, algorithm))


TEXT = Parser(Kind.TEXT, str)
OPTIONAL_TEXT = Parser(Kind.TEXT, str, nullable=True)
# Empty (or null) is no secret given: the writer keeps the stored one.
SECRET = Parser(Kind.TEXT, lambda text: text or None, nullable=True)
NAME = Parser(Kind.TEXT, f.parse_name)
CURRENCY = Parser(Kind.TEXT, f.parse_currency)
PREFIX = Parser(Kind.TEXT, f.parse_prefix)
NUMBER = Parser(Kind.TEXT, _number)
CIDR = Parser(Kind.TEXT, _cidr)
ACL_ENTRY = Parser(Kind.TEXT, f.parse_acl_item)
ADDRESS = Parser(Kind.TEXT, f.parse_address_text)
TRANSPORT = Parser(Kind.TEXT, f.parse_transport)
ROLE = Parser(Kind.TEXT, f.parse_role)
STRATEGY = Parser(Kind.TEXT, f.parse_strategy)
PROFIT_CONTROL = Parser(Kind.TEXT, f.parse_profit_control)
INCREMENT = Parser(Kind.TEXT, f.parse_increment)
BOOL = Parser(Kind.BOOL, f.parse_bool)
TIME = Parser(Kind.TIME, f.parse_datetime)
AMOUNT = _decimal(AMOUNT_SCALE)
LIMIT = _decimal(AMOUNT_SCALE, minimum=Decimal(0))
PRICE = _decimal(PRICE_SCALE, minimum=Decimal(0))
COUNT = _integer()
POSITIVE = _integer(minimum=1)
EXPIRES = _integer(minimum=10, maximum=86_400)


def _distinct(e: Entity, name: str, parser: Parser[str]) -> list[str]:
    """A list of distinct scalars (ACL entries, networks), each reported at its own place."""
    entries: list[str] = []
    failed = False
    for item in e.items(name):
        try:
            entry = parser(item)
            if entry in entries:
                raise ValueError(f"{entry} is listed twice")
        except ValueError as exc:
            item.report(str(exc))
            failed = True
            continue
        assert entry is not None
        entries.append(entry)
    if failed:
        raise Invalid
    return entries


# ---- accounts and tariffs


def account(given: Given) -> AccountSpec:
    e = Entity(given, ("name", "currency", "balance", "credit_limit", "prepaid"))
    values = read_all(
        name=lambda: e.require("name", NAME),
        currency=lambda: e.require("currency", CURRENCY),
        balance=lambda: e.get("balance", AMOUNT, Decimal(0)),
        credit_limit=lambda: e.get("credit_limit", LIMIT, Decimal(0)),
        prepaid=lambda: e.get("prepaid", BOOL, True),
    )
    return AccountSpec(line=e.line, path=e.path, **values)


def tariff(given: Given) -> TariffSpec:
    """A tariff; its rates None when left out (a form's tariff: rates come by CSV)."""
    e = Entity(given, ("name", "currency", "rates"))
    values = read_all(
        name=lambda: e.require("name", NAME),
        currency=lambda: e.get("currency", CURRENCY, "USD"),
        rates=lambda: _rates(e) if e.has("rates") else None,
    )
    return TariffSpec(line=e.line, path=e.path, currency_line=e.line_of("currency"), **values)


def _rates(e: Entity) -> list[Rate]:
    rates, failed = each(e.items("rates"), rate)
    seen: dict[tuple[str, datetime | None], int | None] = {}
    for given, value in rates:
        key = (value.prefix, value.effective_from)
        if key in seen:
            when = "" if value.effective_from is None else f" from {value.effective_from}"
            given.report(
                f"prefix {value.prefix!r}{when} is already rated on line {seen[key]}", "prefix"
            )
            failed = True
        seen.setdefault(key, given.line)
    if failed:
        raise Invalid
    return [value for _given, value in rates]


def rate(given: Given) -> tuple[Given, Rate]:
    e = Entity(
        given,
        (
            "prefix",
            "price_per_minute",
            "connect_fee",
            "increment",
            "free_seconds",
            "effective_from",
            "effective_to",
        ),
    )
    values = read_all(
        prefix=lambda: e.require("prefix", PREFIX),
        price_per_minute=lambda: e.require("price_per_minute", PRICE),
        connect_fee=lambda: e.get("connect_fee", PRICE, Decimal(0)),
        increment=lambda: e.get("increment", INCREMENT, Increment(1, 1)),
        free_seconds=lambda: e.get("free_seconds", COUNT, 0),
        effective_from=lambda: e.get("effective_from", TIME, None),
        effective_to=lambda: e.get("effective_to", TIME, None),
    )
    value = Rate(**values)
    try:
        check_rate(value)  # the rate's own consistency: billing's rule
    except RateError as exc:
        (e.fields.get("effective_to") or given).report(str(exc))
        raise Invalid from None
    return given, value


# ---- peers


def _rewrite_line(line: str) -> dict[str, str]:
    """A rewrite rule on one line of a form: ``MATCH -> REPLACE``."""
    match, _arrow, replace = line.partition("->")
    return {"match": match.strip(), "replace": replace.strip()}


def _rewrites(e: Entity, name: str) -> list[dict[str, str]]:
    def rule(item: Given) -> dict[str, str]:
        r = Entity(item, ("match", "replace"))
        values = read_all(
            match=lambda: r.require("match", TEXT),
            replace=lambda: r.get("replace", TEXT, ""),
        )
        try:
            return f.parse_rewrite(values["match"], values["replace"])
        except ValueError as exc:
            item.report(str(exc))
            raise Invalid from None

    rules, failed = each(e.items(name, _rewrite_line), rule)
    if failed:
        raise Invalid
    return rules


def peer(given: Given) -> PeerSpec:
    e = Entity(
        given,
        (
            "name",
            "role",
            "account",
            "tariff",
            "acl",
            "username",
            "password",
            "address",
            "transport",
            "max_calls",
            "max_cps",
            "caller_rewrite",
            "callee_rewrite",
            "profit_control",
            "enabled",
            "deliver_dids",
            "register",
        ),
    )
    values = read_all(
        name=lambda: e.require("name", NAME),
        role=lambda: e.require("role", ROLE),
        account=lambda: e.ref("account", NAME, required=True),
        tariff=lambda: e.ref("tariff", NAME),
        acl=lambda: _distinct(e, "acl", ACL_ENTRY),
        username=lambda: e.get("username", OPTIONAL_TEXT, None),
        password=lambda: e.get("password", SECRET, None),
        address=lambda: e.get("address", ADDRESS, None),
        transport=lambda: e.get("transport", TRANSPORT, "udp"),
        max_calls=lambda: e.get("max_calls", POSITIVE, None),
        max_cps=lambda: e.get("max_cps", POSITIVE, None),
        caller_rewrite=lambda: _rewrites(e, "caller_rewrite"),
        callee_rewrite=lambda: _rewrites(e, "callee_rewrite"),
        profit_control=lambda: e.get("profit_control", PROFIT_CONTROL, ProfitControl.ALLOW_LOSS),
        enabled=lambda: e.get("enabled", BOOL, True),
        deliver_dids=lambda: e.get("deliver_dids", BOOL, False),
        register=lambda: register(e.fields["register"]) if e.has("register") else None,
    )
    return PeerSpec(
        line=e.line,
        path=e.path,
        role_line=e.line_of("role"),
        acl_line=e.line_of("acl"),
        username_line=e.line_of("username"),
        **values,
    )


def register(given: Given) -> RegisterSpec:
    """A peer's ``register``: the switch registers with this supplier."""
    e = Entity(given, ("username", "password", "registrar", "expires"))
    values = read_all(
        username=lambda: e.require("username", TEXT),
        password=lambda: e.get("password", SECRET, None),
        registrar=lambda: e.require("registrar", ADDRESS),
        expires=lambda: e.get("expires", EXPIRES, 3600),
    )
    return RegisterSpec(line=e.line, path=e.path, **values)


# ---- routes


def _supplier_line(line: str) -> dict[str, str]:
    """A supplier on one line of a form: ``PEER [PRIORITY [WEIGHT]]``."""
    return dict(zip(("peer", "priority", "weight"), line.split(), strict=False))


def _suppliers(e: Entity) -> list[SupplierSpec]:
    suppliers: list[SupplierSpec] = []
    seen: dict[str, int | None] = {}
    failed = False
    for index, item in enumerate(e.items("suppliers", _supplier_line)):
        try:
            supplier = _supplier(item, index)
        except Invalid:
            failed = True
            continue
        name = supplier.peer.name
        if name in seen:
            first = "" if seen[name] is None else f" (first on line {seen[name]})"
            item.report(f"supplier {name!r} is listed twice{first}")
            failed = True
        seen.setdefault(name, supplier.peer.line)
        suppliers.append(supplier)
    if not suppliers and not failed:
        (e.fields.get("suppliers") or e.given).report(
            "at least one supplier is required", None if e.has("suppliers") else "suppliers"
        )
        failed = True
    if failed:
        raise Invalid
    return suppliers


def _supplier(given: Given, index: int) -> SupplierSpec:
    # A bare name, or {peer, priority, weight}.  Priority defaults to the position in the
    # list, so a plain list is a failover order.
    if given.is_scalar:
        try:
            return SupplierSpec(
                Ref(NAME.parse(given.text(Kind.TEXT)), given.line, given.path), index, 1
            )
        except ValueError as exc:
            given.report(str(exc))
            raise Invalid from None
    e = Entity(given, ("peer", "priority", "weight"))
    values = read_all(
        peer=lambda: e.ref("peer", NAME, required=True),
        priority=lambda: e.get("priority", COUNT, index),
        weight=lambda: e.get("weight", COUNT, 1),
    )
    return SupplierSpec(**values)


def route(given: Given) -> RouteSpec:
    e = Entity(given, ("prefix", "strategy", "name", "suppliers"))
    values = read_all(
        prefix=lambda: e.require("prefix", PREFIX),
        strategy=lambda: e.get("strategy", STRATEGY, RouteStrategy.PRIORITY),
        name=lambda: e.get("name", OPTIONAL_TEXT, None),
        suppliers=lambda: _suppliers(e),
    )
    return RouteSpec(line=e.line, path=e.path, **values)


# ---- the registrar's: subscribers and DIDs


def subscriber(given: Given) -> SubscriberSpec:
    """A subscriber (a phone that registers). Its password is hashed by the writer and never
    stored; given already hashed, the HA1s are taken as they are."""
    e = Entity(
        given,
        (
            "username",
            "password",
            "ha1_md5",
            "ha1_sha256",
            "account",
            "tariff",
            "allowed_cidrs",
            "max_contacts",
            "max_calls",
            "caller_id",
            "enabled",
        ),
    )
    values = read_all(
        username=lambda: e.require("username", NAME),
        password=lambda: e.get("password", SECRET, None),
        ha1_md5=lambda: e.get("ha1_md5", _ha1("MD5"), None),
        ha1_sha256=lambda: e.get("ha1_sha256", _ha1("SHA-256"), None),
        account=lambda: e.ref("account", NAME, required=True),
        tariff=lambda: e.ref("tariff", NAME),
        allowed_cidrs=lambda: _distinct(e, "allowed_cidrs", CIDR),
        max_contacts=lambda: e.get("max_contacts", POSITIVE, DEFAULT_MAX_CONTACTS),
        max_calls=lambda: e.get("max_calls", POSITIVE, None),
        caller_id=lambda: e.get("caller_id", NUMBER, None),
        enabled=lambda: e.get("enabled", BOOL, True),
    )
    return SubscriberSpec(line=e.line, path=e.path, **values)


def did(given: Given) -> DidSpec:
    e = Entity(given, ("number", "subscriber", "peer", "enabled"))
    values = read_all(
        number=lambda: e.require("number", NUMBER),
        subscriber=lambda: e.ref("subscriber", NAME),
        peer=lambda: e.ref("peer", NAME),
        enabled=lambda: e.get("enabled", BOOL, True),
    )
    return DidSpec(line=e.line, path=e.path, **values)


# ---- a provisioning document


def document(given: Given | None, file: str) -> ConfigChange:
    """A provisioning file: its sections, each entity read (the invalid ones reported and
    left out), and no entity named twice. The file describes each entity completely: a
    tariff without ``rates`` has none."""
    change = ConfigChange(file)
    if given is None:
        return change
    e = Entity(given, KINDS)

    def section(
        name: str, what: str, read: Callable[[Given], T], key: Callable[[T], str]
    ) -> list[T]:
        try:
            read_items, _failed = each(e.items(name), lambda item: (item, read(item)))
        except Invalid:
            return []
        first: dict[str, int | None] = {}
        for item, spec in read_items:
            if key(spec) in first:
                item.report(f"duplicate {what} {key(spec)!r} (first on line {first[key(spec)]})")
            first.setdefault(key(spec), item.line)
        return [spec for _item, spec in read_items]

    change.accounts = section("accounts", "account", account, lambda a: a.name)
    change.tariffs = section("tariffs", "tariff", tariff, lambda t: t.name)
    for spec in change.tariffs:
        if spec.rates is None:
            spec.rates = []
    change.peers = section("peers", "peer", peer, lambda p: p.name)
    change.routes = section("routes", "route for prefix", route, lambda r: r.prefix)
    change.subscribers = section("subscribers", "subscriber", subscriber, lambda s: s.username)
    change.dids = section("dids", "DID", did, lambda d: d.number)
    return change
