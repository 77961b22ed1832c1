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
from smartswitch.admin.passwords import check_password
from smartswitch.admin.settings import SETTINGS
from smartswitch.admin.source import (
    Entity,
    FieldRead,
    Given,
    Invalid,
    Kind,
    Parser,
    each,
    optional,
    read_entity,
    required,
)
from smartswitch.admin.subscribers import (
    DEFAULT_MAX_CONTACTS,
    DidSpec,
    NodeAccountSpec,
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
    SettingSpec,
    SupplierSpec,
    TariffSpec,
)
from smartswitch.billing.rating import RateError, check_rate
from smartswitch.model.config import ProfitControl, Rate, RouteStrategy
from smartswitch.model.increment import Increment
from smartswitch.model.media import MediaMode
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


def reference(*, required: bool = False) -> FieldRead:
    """A reference by name to another entity, with where it was written."""
    return lambda e, name: e.ref(name, NAME, required=required)


def _ha1(algorithm: str) -> Parser[str]:
    return Parser(Kind.TEXT, lambda text: parse_ha1(text, algorithm))


TEXT = Parser(Kind.TEXT, str)
OPTIONAL_TEXT = Parser(Kind.TEXT, str, nullable=True)
# Empty (or null) is no secret given: the writer keeps the stored one.
SECRET = Parser(Kind.TEXT, lambda text: text or None, nullable=True)
NAME = Parser(Kind.TEXT, f.parse_name)
NODE = NAME  # a node's name (its node_name, else its node_id)
CURRENCY = Parser(Kind.TEXT, f.parse_currency)
PREFIX = Parser(Kind.TEXT, f.parse_prefix)
NUMBER = Parser(Kind.TEXT, _number)
CIDR = Parser(Kind.TEXT, _cidr)
ACL_ENTRY = Parser(Kind.TEXT, f.parse_acl_item)
ADDRESS = Parser(Kind.TEXT, f.parse_address_text)
TRANSPORT = Parser(Kind.TEXT, f.parse_transport)
FINGERPRINT = Parser(Kind.TEXT, f.parse_fingerprint, nullable=True)
ROLE = Parser(Kind.TEXT, f.parse_role)
MEDIA_MODE = Parser(Kind.TEXT, lambda text: f.parse_media_mode(text or "direct"))  # blank: default
CODEC = Parser(Kind.TEXT, f.parse_codec)
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
SLICE = _integer(minimum=1, maximum=86_400)  # an account's reservation slice, seconds


def _distinct(parser: Parser[str]) -> FieldRead:
    """A list of distinct scalars (ACL entries, networks), each reported at its own place."""

    def read(e: Entity, name: str) -> list[str]:
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

    return read


def _sub(reader: Callable[[Given], T]) -> FieldRead:
    """A sub-object (a peer's ``register``), None when not given."""
    return lambda e, name: reader(e.fields[name]) if e.has(name) else None


# ---- accounts and tariffs


def account(given: Given) -> AccountSpec:
    e, values = read_entity(
        given,
        name=required(NAME),
        currency=required(CURRENCY),
        balance=optional(AMOUNT, Decimal(0)),
        credit_limit=optional(LIMIT, Decimal(0)),
        prepaid=optional(BOOL, True),
        reserve_seconds=optional(SLICE, None),
        record=optional(BOOL, False),
    )
    return AccountSpec(line=e.line, path=e.path, **values)


def tariff(given: Given) -> TariffSpec:
    """A tariff; its rates None when left out (a form's tariff: rates come by CSV)."""
    e, values = read_entity(
        given,
        name=required(NAME),
        currency=optional(CURRENCY, "USD"),
        rates=lambda e, name: _rates(e, name) if e.has(name) else None,
    )
    return TariffSpec(line=e.line, path=e.path, currency_line=e.line_of("currency"), **values)


def _rates(e: Entity, name: str) -> list[Rate]:
    rates, failed = each(e.items(name), rate)
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


# A rate's fields (also the columns of a tariff's rates as CSV).
RATE: dict[str, FieldRead] = {
    "prefix": required(PREFIX),
    "price_per_minute": required(PRICE),
    "connect_fee": optional(PRICE, Decimal(0)),
    "increment": optional(INCREMENT, Increment(1, 1)),
    "free_seconds": optional(COUNT, 0),
    "effective_from": optional(TIME, None),
    "effective_to": optional(TIME, None),
}


def rate(given: Given) -> tuple[Given, Rate]:
    e, values = read_entity(given, **RATE)
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


def _rewrite(item: Given) -> dict[str, str]:
    _e, values = read_entity(item, match=required(TEXT), replace=optional(TEXT, ""))
    try:
        return f.parse_rewrite(values["match"], values["replace"])
    except ValueError as exc:
        item.report(str(exc))
        raise Invalid from None


def _rewrites(e: Entity, name: str) -> list[dict[str, str]]:
    rules, failed = each(e.items(name, _rewrite_line), _rewrite)
    if failed:
        raise Invalid
    return rules


def _password_policy(e: Entity, values: dict[str, object], username: str | None) -> None:
    """The password policy (:mod:`.passwords`) for a password given (one left out keeps the
    stored one, not judged again), reported at the field."""
    password = values.get("password")
    if not isinstance(password, str):
        return
    try:
        check_password(password, username)
    except ValueError as exc:
        e.fields["password"].report(str(exc))
        raise Invalid from None


def peer(given: Given) -> PeerSpec:
    e, values = read_entity(
        given,
        name=required(NAME),
        role=required(ROLE),
        account=reference(required=True),
        tariff=reference(),
        acl=_distinct(ACL_ENTRY),
        username=optional(OPTIONAL_TEXT, None),
        password=optional(SECRET, None),
        address=optional(ADDRESS, None),
        transport=optional(TRANSPORT, "udp"),
        max_calls=optional(POSITIVE, None),
        max_cps=optional(POSITIVE, None),
        caller_rewrite=_rewrites,
        callee_rewrite=_rewrites,
        profit_control=optional(PROFIT_CONTROL, ProfitControl.ALLOW_LOSS),
        enabled=optional(BOOL, True),
        deliver_dids=optional(BOOL, False),
        register=_sub(register),
        nodes=_distinct(NODE),
        tls_fingerprint=optional(FINGERPRINT, None),
        media=optional(MEDIA_MODE, MediaMode.DIRECT),
        codecs=_distinct(CODEC),
        record=optional(BOOL, False),
        direct_fallback=optional(BOOL, False),
    )
    _password_policy(e, values, values["username"])
    return PeerSpec(
        line=e.line,
        path=e.path,
        role_line=e.line_of("role"),
        acl_line=e.line_of("acl"),
        username_line=e.line_of("username"),
        nodes_line=e.line_of("nodes"),
        **values,
    )


def register(given: Given) -> RegisterSpec:
    """A peer's ``register``: the switch registers with this supplier, each node with its
    entry in ``nodes`` if it has one, else with the default ``username`` (the passwords are the
    supplier's, not ours to choose: no policy)."""
    e, values = read_entity(
        given,
        username=optional(OPTIONAL_TEXT, None),
        password=optional(SECRET, None),
        registrar=required(ADDRESS),
        expires=optional(EXPIRES, 3600),
        nodes=_node_accounts,
    )
    return RegisterSpec(line=e.line, path=e.path, **values)


def _node_accounts(e: Entity, name: str) -> list[NodeAccountSpec]:
    """A registration's per-node accounts, each node at most once."""
    accounts: list[NodeAccountSpec] = []
    first: dict[str, int | None] = {}
    failed = False
    for item in e.items(name):
        try:
            account = node_account(item)
        except Invalid:
            failed = True
            continue
        if account.node in first:
            where = "" if first[account.node] is None else f" (first on line {first[account.node]})"
            item.report(f"node {account.node!r} is listed twice{where}", "node")
            failed = True
        first.setdefault(account.node, item.line)
        accounts.append(account)
    if failed:
        raise Invalid
    return accounts


def node_account(given: Given) -> NodeAccountSpec:
    """One node's own account: ``{node, username, password}`` (no password: the stored one)."""
    e, values = read_entity(
        given, node=required(NODE), username=required(TEXT), password=optional(SECRET, None)
    )
    return NodeAccountSpec(line=e.line, path=e.path, **values)


# ---- routes


def _supplier_line(line: str) -> dict[str, str]:
    """A supplier on one line of a form: ``PEER [PRIORITY [WEIGHT]]``."""
    return dict(zip(("peer", "priority", "weight"), line.split(), strict=False))


def _suppliers(e: Entity, name: str) -> list[SupplierSpec]:
    suppliers: list[SupplierSpec] = []
    seen: dict[str, int | None] = {}
    failed = False
    for index, item in enumerate(e.items(name, _supplier_line)):
        try:
            supplier = _supplier(item, index)
        except Invalid:
            failed = True
            continue
        peer = supplier.peer.name
        if peer in seen:
            first = "" if seen[peer] is None else f" (first on line {seen[peer]})"
            item.report(f"supplier {peer!r} is listed twice{first}")
            failed = True
        seen.setdefault(peer, supplier.peer.line)
        suppliers.append(supplier)
    if not suppliers and not failed:
        message = "at least one supplier is required"
        if e.has(name):
            e.fields[name].report(message)
        else:
            e.given.report(message, name)
        failed = True
    if failed:
        raise Invalid
    return suppliers


def _supplier(given: Given, index: int) -> SupplierSpec:
    # A bare name, or {peer, priority, weight}.  Priority defaults to the position in the
    # list, so a plain list is a failover order.
    if given.is_scalar:
        try:
            name = NAME.parse(given.text(Kind.TEXT))
        except ValueError as exc:
            given.report(str(exc))
            raise Invalid from None
        return SupplierSpec(Ref(name, given.line, given.path), index, 1)
    _e, values = read_entity(
        given,
        peer=reference(required=True),
        priority=optional(COUNT, index),
        weight=optional(COUNT, 1),
    )
    return SupplierSpec(**values)


def route(given: Given) -> RouteSpec:
    e, values = read_entity(
        given,
        prefix=required(PREFIX),
        strategy=optional(STRATEGY, RouteStrategy.PRIORITY),
        name=optional(OPTIONAL_TEXT, None),
        suppliers=_suppliers,
    )
    return RouteSpec(line=e.line, path=e.path, **values)


# ---- the registrar's: subscribers and DIDs


def subscriber(given: Given) -> SubscriberSpec:
    """A subscriber (a phone that registers). Its password is hashed by the writer and never
    stored; given already hashed, the HA1s are taken as they are."""
    e, values = read_entity(
        given,
        username=required(NAME),
        password=optional(SECRET, None),
        ha1_md5=optional(_ha1("MD5"), None),
        ha1_sha256=optional(_ha1("SHA-256"), None),
        account=reference(required=True),
        tariff=reference(),
        allowed_cidrs=_distinct(CIDR),
        max_contacts=optional(POSITIVE, DEFAULT_MAX_CONTACTS),
        max_calls=optional(POSITIVE, None),
        caller_id=optional(NUMBER, None),
        enabled=optional(BOOL, True),
    )
    _password_policy(e, values, values["username"])
    return SubscriberSpec(line=e.line, path=e.path, **values)


def did(given: Given) -> DidSpec:
    e, values = read_entity(
        given,
        number=required(NUMBER),
        subscriber=reference(),
        peer=reference(),
        enabled=optional(BOOL, True),
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
    change.settings = settings(e)
    return change


def settings(e: Entity) -> list[SettingSpec]:
    """The ``settings:`` mapping: setting name -> its text, each checked by its own rule."""
    given = e.fields.get("settings")
    if given is None or given.is_null:
        return []
    try:
        fields_given = given.fields(tuple(SETTINGS))
    except Invalid:
        return []
    found = []
    for name, value in fields_given.items():
        try:
            text = SETTINGS[name][1](value.text(Kind.TEXT))
        except ValueError as exc:
            value.report(str(exc))
            continue
        except Invalid:
            continue
        found.append(SettingSpec(value.line, value.path, name, text))
    return found
