"""Specs from submitted fields: a REST API body or a web form, one entity at a time.

The values arrive as JSON values (text, numbers, booleans, lists) or as form text; each is
checked by the same validators as a provisioning file (:mod:`smartswitch.admin.fields`), and
the entity rules are the domain's (:func:`~smartswitch.admin.writer.peer_rules`).  Every bad
field is reported at once, as an :class:`~smartswitch.admin.writer.Issue` whose ``path`` is the
field's name (``acl[1]``, ``suppliers[0].peer``), in a :class:`ConfigInvalid`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar, cast

from smartswitch.admin import fields as f
from smartswitch.admin.subscribers import (
    DEFAULT_MAX_CONTACTS,
    DidSpec,
    RegisterSpec,
    SubscriberSpec,
)
from smartswitch.admin.writer import (
    AccountSpec,
    ConfigInvalid,
    Issue,
    PeerSpec,
    Ref,
    RouteSpec,
    SupplierSpec,
    TariffSpec,
    peer_rules,
)
from smartswitch.model.config import ProfitControl, RouteStrategy
from smartswitch.store.types import AMOUNT_SCALE

__all__ = [
    "Fields",
    "account_spec",
    "did_spec",
    "peer_spec",
    "route_spec",
    "subscriber_spec",
    "tariff_spec",
]

T = TypeVar("T")


class _Bad(Exception):
    pass


def _as_text(value: Any) -> str:
    """JSON scalars as the text an operator would have typed.  Floats are refused: money and
    prefixes must arrive as exact text (``"0.1"``, ``"0044"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        raise ValueError(f"give {value!r} as text (a JSON string) so it stays exact")
    raise ValueError(f"expected text, got {type(value).__name__}")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class Fields:
    """The submitted values of one entity and the problems found in them."""

    def __init__(self, source: str, data: Mapping[str, Any]) -> None:
        self.source = source
        self.data = data
        self.issues: list[Issue] = []

    def error(self, path: str, message: str) -> None:
        self.issues.append(Issue(self.source, None, path, message))

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        value = self.data.get(name)
        if _blank(value):
            return default
        try:
            return parse(_as_text(value))
        except ValueError as exc:
            self.error(name, str(exc))
            raise _Bad from None

    def given(self, name: str, text: str, parse: Callable[[str], T]) -> T:
        """A value that came from elsewhere (the URL path), reported under ``name``."""
        try:
            return parse(text)
        except ValueError as exc:
            self.error(name, str(exc))
            raise _Bad from None

    def require(self, name: str, parse: Callable[[str], T]) -> T:
        if _blank(self.data.get(name)):
            self.error(name, "required")
            raise _Bad
        return cast(T, self.get(name, parse, None))

    def each(self, **getters: Callable[[], Any]) -> dict[str, Any]:
        """Every getter evaluated, so that all bad fields are reported together."""
        values: dict[str, Any] = {}
        for name, getter in getters.items():
            with contextlib.suppress(_Bad):
                values[name] = getter()
        return values

    def items(self, name: str) -> list[Any]:
        """A list field: a JSON list, or form text with one item a line (or comma-separated)."""
        value = self.data.get(name)
        if _blank(value):
            return []
        if isinstance(value, str):
            parts = value.replace(",", "\n").splitlines()
            return [p.strip() for p in parts if p.strip()]
        if isinstance(value, list | tuple):
            return list(value)
        self.error(name, "expected a list")
        raise _Bad

    def check(self) -> None:
        if self.issues:
            raise ConfigInvalid(self.issues)


def account_spec(source: str, data: Mapping[str, Any], name: str | None = None) -> AccountSpec:
    form = Fields(source, data)
    values = form.each(
        name=lambda: (
            form.given("name", name, f.parse_name)
            if name is not None
            else form.require("name", f.parse_name)
        ),
        currency=lambda: form.require("currency", f.parse_currency),
        balance=lambda: form.get("balance", lambda t: f.parse_decimal(t, AMOUNT_SCALE), Decimal(0)),
        credit_limit=lambda: form.get(
            "credit_limit",
            lambda t: f.parse_decimal(t, AMOUNT_SCALE, minimum=Decimal(0)),
            Decimal(0),
        ),
        prepaid=lambda: form.get("prepaid", f.parse_bool, True),
    )
    form.check()
    return AccountSpec(line=None, path="", **values)


def tariff_spec(source: str, data: Mapping[str, Any], name: str | None = None) -> TariffSpec:
    """A tariff without its rates (they come and go by CSV): ``rates`` is None."""
    form = Fields(source, data)
    values = form.each(
        name=lambda: (
            form.given("name", name, f.parse_name)
            if name is not None
            else form.require("name", f.parse_name)
        ),
        currency=lambda: form.get("currency", f.parse_currency, "USD"),
    )
    form.check()
    return TariffSpec(line=None, path="", currency_line=None, rates=None, **values)


def _rewrites(form: Fields, name: str) -> list[dict[str, str]]:
    rules: list[dict[str, str]] = []
    bad = False
    for index, item in enumerate(form.items(name)):
        path = f"{name}[{index}]"
        if isinstance(item, str):  # form text: "MATCH -> REPLACE"
            match, _arrow, replace = item.partition("->")
            item = {"match": match.strip(), "replace": replace.strip()}
        if not isinstance(item, Mapping) or not isinstance(item.get("match"), str):
            form.error(path, 'expected {"match": REGEX, "replace": TEMPLATE}')
            bad = True
            continue
        replace = item.get("replace", "")
        try:
            rules.append(f.parse_rewrite(item["match"], _as_text(replace or "")))
        except ValueError as exc:
            form.error(path, str(exc))
            bad = True
    if bad:
        raise _Bad
    return rules


def _acl(form: Fields) -> list[str]:
    entries: list[str] = []
    bad = False
    for index, item in enumerate(form.items("acl")):
        try:
            entry = f.parse_acl_item(_as_text(item))
            if entry in entries:
                raise ValueError(f"{entry} is listed twice")
            entries.append(entry)
        except ValueError as exc:
            form.error(f"acl[{index}]", str(exc))
            bad = True
    if bad:
        raise _Bad
    return entries


def _optional(form: Fields, name: str) -> str | None:
    value = form.data.get(name)
    if _blank(value):
        return None
    try:
        return _as_text(value)
    except ValueError as exc:
        form.error(name, str(exc))
        raise _Bad from None


def peer_spec(source: str, data: Mapping[str, Any], name: str | None = None) -> PeerSpec:
    form = Fields(source, data)
    positive = lambda t: f.parse_integer(t, minimum=1)  # noqa: E731
    values = form.each(
        name=lambda: (
            form.given("name", name, f.parse_name)
            if name is not None
            else form.require("name", f.parse_name)
        ),
        role=lambda: form.require("role", f.parse_role),
        account=lambda: Ref(form.require("account", f.parse_name), None, "account"),
        tariff=lambda: (
            None
            if _blank(data.get("tariff"))
            else Ref(form.get("tariff", f.parse_name, ""), None, "tariff")
        ),
        acl=lambda: _acl(form),
        username=lambda: _optional(form, "username"),
        password=lambda: _optional(form, "password"),
        address=lambda: form.get("address", f.parse_address_text, None),
        transport=lambda: form.get("transport", f.parse_transport, "udp"),
        max_calls=lambda: form.get("max_calls", positive, None),
        max_cps=lambda: form.get("max_cps", positive, None),
        caller_rewrite=lambda: _rewrites(form, "caller_rewrite"),
        callee_rewrite=lambda: _rewrites(form, "callee_rewrite"),
        profit_control=lambda: form.get(
            "profit_control", f.parse_profit_control, ProfitControl.ALLOW_LOSS
        ),
        enabled=lambda: form.get("enabled", f.parse_bool, True),
        deliver_dids=lambda: form.get("deliver_dids", f.parse_bool, False),
        register=lambda: _register(form),
    )
    form.check()
    spec = PeerSpec(line=None, path="", role_line=None, acl_line=None, username_line=None, **values)
    for field_name, message in peer_rules(spec):
        form.error(field_name, message)
    form.check()
    return spec


def _suppliers(form: Fields) -> list[SupplierSpec]:
    suppliers: list[SupplierSpec] = []
    seen: set[str] = set()
    bad = False
    for index, item in enumerate(form.items("suppliers")):
        path = f"suppliers[{index}]"
        try:
            if isinstance(item, str):  # form text: "PEER [PRIORITY [WEIGHT]]"
                parts = item.split()
                item = dict(zip(("peer", "priority", "weight"), parts, strict=False))
            if not isinstance(item, Mapping):
                raise ValueError('expected {"peer": NAME, "priority": N, "weight": N}')
            peer = f.parse_name(_as_text(item.get("peer", "")))
            priority = f.parse_integer(_as_text(item.get("priority", index)))
            weight = f.parse_integer(_as_text(item.get("weight", 1)))
        except ValueError as exc:
            form.error(path, str(exc))
            bad = True
            continue
        if peer in seen:
            form.error(path, f"supplier {peer!r} is listed twice")
            bad = True
        seen.add(peer)
        suppliers.append(SupplierSpec(Ref(peer, None, f"{path}.peer"), priority, weight))
    if not suppliers and not bad:
        form.error("suppliers", "at least one supplier is required")
        bad = True
    if bad:
        raise _Bad
    return suppliers


def route_spec(source: str, data: Mapping[str, Any], prefix: str | None = None) -> RouteSpec:
    form = Fields(source, data)
    values = form.each(
        prefix=lambda: (
            form.given("prefix", prefix, f.parse_prefix)
            if prefix is not None
            else form.get("prefix", f.parse_prefix, "")
        ),
        strategy=lambda: form.get("strategy", f.parse_strategy, RouteStrategy.PRIORITY),
        name=lambda: _optional(form, "name"),
        suppliers=lambda: _suppliers(form),
    )
    form.check()
    return RouteSpec(line=None, path="", **values)


def _register(form: Fields) -> RegisterSpec | None:
    """A peer's ``register``: a JSON object, or the form's register_* fields (empty: none)."""
    raw = form.data.get("register")
    if isinstance(raw, Mapping):
        values = {k: raw.get(k) for k in ("username", "password", "registrar", "expires")}
    else:
        values = {
            k: form.data.get(f"register_{k}")
            for k in ("username", "password", "registrar", "expires")
        }
        if all(_blank(v) for v in values.values()):
            return None
    inner = Fields(form.source, values)
    got = inner.each(
        username=lambda: inner.require("username", str),
        password=lambda: inner.require("password", str),
        registrar=lambda: inner.require("registrar", f.parse_address_text),
        expires=lambda: inner.get(
            "expires", lambda t: f.parse_integer(t, minimum=10, maximum=86_400), 3600
        ),
    )
    for issue in inner.issues:
        form.error(f"register.{issue.path}", issue.message)
    if inner.issues:
        raise _Bad
    return RegisterSpec(**got)


def _number(text: str) -> str:
    if not text:
        raise ValueError("a number of at least one digit")
    return f.parse_prefix(text)


def _cidrs(form: Fields, name: str) -> list[str]:
    import ipaddress

    entries: list[str] = []
    bad = False
    for index, item in enumerate(form.items(name)):
        try:
            entry = str(ipaddress.ip_network(_as_text(item).strip(), strict=True))
        except ValueError:
            form.error(
                f"{name}[{index}]", f"not a network (CIDR) with its host bits zero: {item!r}"
            )
            bad = True
            continue
        if entry in entries:
            form.error(f"{name}[{index}]", f"{entry} is listed twice")
            bad = True
        entries.append(entry)
    if bad:
        raise _Bad
    return entries


def subscriber_spec(
    source: str, data: Mapping[str, Any], username: str | None = None
) -> SubscriberSpec:
    """A subscriber (a phone that registers).  The password is hashed into HA1s by the
    writer and never stored; left out on an existing subscriber, its hashes stay."""
    form = Fields(source, data)
    positive = lambda t: f.parse_integer(t, minimum=1)  # noqa: E731
    values = form.each(
        username=lambda: (
            form.given("username", username, f.parse_name)
            if username is not None
            else form.require("username", f.parse_name)
        ),
        account=lambda: Ref(form.require("account", f.parse_name), None, "account"),
        tariff=lambda: (
            None
            if _blank(data.get("tariff"))
            else Ref(form.get("tariff", f.parse_name, ""), None, "tariff")
        ),
        password=lambda: _optional(form, "password"),
        allowed_cidrs=lambda: _cidrs(form, "allowed_cidrs"),
        max_contacts=lambda: form.get("max_contacts", positive, DEFAULT_MAX_CONTACTS),
        max_calls=lambda: form.get("max_calls", positive, None),
        caller_id=lambda: form.get("caller_id", _number, None),
        enabled=lambda: form.get("enabled", f.parse_bool, True),
    )
    form.check()
    return SubscriberSpec(line=None, path="", ha1_md5=None, ha1_sha256=None, **values)


def did_spec(source: str, data: Mapping[str, Any], number: str | None = None) -> DidSpec:
    form = Fields(source, data)
    values = form.each(
        number=lambda: (
            form.given("number", number, _number)
            if number is not None
            else form.require("number", _number)
        ),
        subscriber=lambda: (
            None
            if _blank(data.get("subscriber"))
            else Ref(form.get("subscriber", f.parse_name, ""), None, "subscriber")
        ),
        peer=lambda: (
            None
            if _blank(data.get("peer"))
            else Ref(form.get("peer", f.parse_name, ""), None, "peer")
        ),
        enabled=lambda: form.get("enabled", f.parse_bool, True),
    )
    form.check()
    spec = DidSpec(line=None, path="", **values)
    if (spec.subscriber is None) == (spec.peer is None):
        form.error("subscriber", "a DID goes to a subscriber or a peer (one)")
        form.check()
    return spec
