"""Provisioning as code: apply a declarative YAML file of accounts, tariffs, peers and routes.

``provision(engine, path)`` makes the database say what the file says, in one transaction:

* Entities are matched by name (routes by prefix) and created or updated; nothing that the file
  does not mention is deleted.  A tariff's rate list and a route's supplier list are replaced
  whole by the file's.  Optional fields left out of the file take their defaults (the file
  describes an entity completely), except an account's ``balance``, which is the *opening*
  balance, used only when the account is created: afterwards balances move only through CDRs
  and top-ups, recorded in ``balance_changes``.
* The whole file is validated before anything is written, and any error raises
  :class:`ProvisioningError` naming the file, line and field
  (``provision.yaml:12: peers[0].tariff: unknown tariff 'retial'``) with the database
  unchanged.  Line numbers come from PyYAML's node marks: the file is *composed* (parsed to
  nodes) rather than loaded, and numbers are read from their source text, never through float.
* When anything changed, ``config_version`` is bumped in the same transaction so every node
  reloads its in-memory views; a run that changes nothing leaves the version alone.

The checks and the upserts are the domain's (:mod:`smartswitch.admin.writer`), shared with
the REST API and the web UI; this module reads YAML into a :class:`ConfigChange` with the
line of every field.  The format is documented in ``docs/provisioning.md``; ``examples/provision.yaml`` is a
working example.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from sqlalchemy.ext.asyncio import AsyncEngine
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from smartswitch.admin import fields as domain_fields
from smartswitch.admin import subscribers as admin_subscribers
from smartswitch.admin.subscribers import DidSpec, RegisterSpec, SubscriberSpec
from smartswitch.admin.writer import (
    KINDS,
    AccountSpec,
    ChangeReport,
    ConfigChange,
    ConfigInvalid,
    ConfigWriter,
    Issue,
    PeerSpec,
    Ref,
    RouteSpec,
    SupplierSpec,
    TariffSpec,
    peer_rules,
)
from smartswitch.billing.rating import RateError, check_rate
from smartswitch.model.config import (
    PeerRole,
    ProfitControl,
    Rate,
    RouteStrategy,
)
from smartswitch.model.increment import Increment
from smartswitch.store.database import session_factory
from smartswitch.store.types import AMOUNT_SCALE, PRICE_SCALE

__all__ = ["Issue", "ProvisionReport", "ProvisioningError", "provision", "provision_text"]

T = TypeVar("T")

_TAG = "tag:yaml.org,2002:"

# The names this module has always exported: the domain's, under provisioning's words.
ProvisioningError = ConfigInvalid
ProvisionReport = ChangeReport


class _Invalid(Exception):
    """Internal: a field was invalid and has been reported; skip what depends on it."""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _line(node: Node) -> int:
    return node.start_mark.line + 1


# Scalar parsers: (node) -> value, raising ValueError with the operator-facing message.


def _scalar(node: Node, what: str) -> ScalarNode:
    if not isinstance(node, ScalarNode):
        raise ValueError(
            f"expected {what}, got a {'list' if isinstance(node, SequenceNode) else 'mapping'}"
        )
    return node


def _text(node: Node) -> str:
    node = _scalar(node, "text")
    # Unquoted digits are YAML ints; their source text is what was meant ("0044" stays "0044",
    # not the octal 36 that YAML 1.1 would make of it).
    if node.tag not in (_TAG + "str", _TAG + "int"):
        kind = node.tag.removeprefix(_TAG)
        raise ValueError(f"expected text, got {kind} {node.value!r} (quote it)")
    return str(node.value)


def _name(node: Node) -> str:
    return domain_fields.parse_name(_text(node))


def _optional_text(node: Node) -> str | None:
    if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
        return None
    return _text(node)


def _currency(node: Node) -> str:
    return domain_fields.parse_currency(_text(node))


def _prefix(node: Node) -> str:
    return domain_fields.parse_prefix(_text(node))


def _decimal(scale: int, *, minimum: Decimal | None = None) -> Callable[[Node], Decimal]:
    def parse(node: Node) -> Decimal:
        node = _scalar(node, "a decimal number")
        if node.tag not in (_TAG + "str", _TAG + "int", _TAG + "float"):
            raise ValueError(f"expected a decimal number, got {node.value!r}")
        # The source text, not float(node.value): "0.1" must be exactly 0.1.
        return domain_fields.parse_decimal(node.value, scale, minimum=minimum)

    return parse


def _integer(
    *, minimum: int = 0, maximum: int | None = domain_fields.INT_MAX
) -> Callable[[Node], int]:
    def parse(node: Node) -> int:
        node = _scalar(node, "a whole number")
        if node.tag not in (_TAG + "str", _TAG + "int"):
            raise ValueError(f"expected a whole number, got {node.value!r}")
        return domain_fields.parse_integer(node.value, minimum=minimum, maximum=maximum)

    return parse


def _boolean(node: Node) -> bool:
    node = _scalar(node, "true or false")
    # YAML 1.1's words (yes/no/on/off too), as the YAML the operator wrote means them.
    value = yaml.constructor.SafeConstructor.bool_values.get(node.value.lower())
    if node.tag not in (_TAG + "bool", _TAG + "str") or value is None:
        raise ValueError(f"expected true or false, got {node.value!r}")
    return bool(value)


def _datetime(node: Node) -> datetime:
    return domain_fields.parse_datetime(_scalar(node, "a date and time").value)


def _increment(node: Node) -> Increment:
    return domain_fields.parse_increment(_text(node))


def _role(node: Node) -> PeerRole:
    return domain_fields.parse_role(_text(node))


def _strategy(node: Node) -> RouteStrategy:
    return domain_fields.parse_strategy(_text(node))


def _profit_control(node: Node) -> ProfitControl:
    return domain_fields.parse_profit_control(_text(node))


def _transport(node: Node) -> str:
    return domain_fields.parse_transport(_text(node))


def _address(node: Node) -> str:
    return domain_fields.parse_address_text(_text(node))


def _secret(node: Node) -> str:
    text = _text(node)
    if not text:
        raise ValueError("must not be empty")
    return text


def _ha1(algorithm: str) -> Callable[[Node], str]:
    def parse(node: Node) -> str:
        return admin_subscribers.parse_ha1(_text(node), algorithm)

    return parse


def _number(node: Node) -> str:
    text = _prefix(node)
    if not text:
        raise ValueError("a number of at least one digit")
    return text


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError:
        raise ValueError(f"not a network (CIDR) with its host bits zero: {text!r}") from None


class _Map:
    """A YAML mapping with its fields by name, for one entity at ``path``."""

    def __init__(self, reader: _Reader, node: Node, path: str, allowed: tuple[str, ...]) -> None:
        if not isinstance(node, MappingNode):
            reader.error(node, path, "expected a mapping (name: value, ...)")
            raise _Invalid
        self.reader, self.node, self.path, self.line = reader, node, path, _line(node)
        self.fields: dict[str, Node] = {}
        seen: dict[str, int] = {}
        for key, _value in node.value:
            if key.tag == _TAG + "merge":
                continue
            name = key.value if isinstance(key, ScalarNode) else "?"
            if name in seen:
                reader.error(key, _join(path, name), f"given twice (first on line {seen[name]})")
            seen[name] = _line(key)
        try:
            reader.loader.flatten_mapping(node)  # resolve "<<: *anchor" merge keys
        except yaml.MarkedYAMLError as exc:
            reader.error(node, path, f"bad merge key: {exc.problem}")
            raise _Invalid from None
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                reader.error(key, path, "field names must be plain text")
                continue
            if key.value not in allowed:
                reader.error(
                    key,
                    _join(path, key.value),
                    f"unknown field (expected one of {', '.join(allowed)})",
                )
                continue
            self.fields[key.value] = value

    def has(self, name: str) -> bool:
        return name in self.fields

    def node_of(self, name: str) -> Node | None:
        return self.fields.get(name)

    def line_of(self, name: str) -> int:
        node = self.fields.get(name)
        return self.line if node is None else _line(node)

    def get(self, name: str, parse: Callable[[Node], T], default: T) -> T:
        """The parsed field, ``default`` if absent; an invalid value is reported and raises."""
        node = self.fields.get(name)
        if node is None:
            return default
        try:
            return parse(node)
        except ValueError as exc:
            self.reader.error(node, f"{self.path}.{name}", str(exc))
            raise _Invalid from None

    def require(self, name: str, parse: Callable[[Node], T], why: str = "required") -> T:
        if name not in self.fields:
            self.reader.error(self.node, f"{self.path}.{name}", why)
            raise _Invalid
        return cast(T, self.get(name, parse, None))


class _Reader:
    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.issues: list[Issue] = []

    def error(self, where: Node | int | None, path: str, message: str) -> None:
        line = _line(where) if isinstance(where, Node) else where
        self.issues.append(Issue(self.file, line, path, message))

    def items(self, node: Node | None, path: str) -> Iterator[tuple[int, Node]]:
        """The elements of a list field (none if absent or null)."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _TAG + "null"):
            return
        if not isinstance(node, SequenceNode):
            self.error(node, path, "expected a list")
            return
        yield from enumerate(node.value)

    def each(self, node: Node | None, path: str, parse: Callable[[Node, str], T]) -> list[T]:
        """Parse every element, reporting (and skipping) the invalid ones."""
        result = []
        for index, item in self.items(node, path):
            with contextlib.suppress(_Invalid):  # reported already; keep checking the rest
                result.append(parse(item, f"{path}[{index}]"))
        return result

    # ---- the sections

    def document(self, root: Node | None) -> ConfigChange:
        doc = ConfigChange(self.file)
        if root is None or (isinstance(root, ScalarNode) and root.tag == _TAG + "null"):
            return doc
        try:
            top = _Map(self, root, "", KINDS)
        except _Invalid:
            return doc
        doc.accounts = self.each(top.node_of("accounts"), "accounts", self.account)
        doc.tariffs = self.each(top.node_of("tariffs"), "tariffs", self.tariff)
        doc.peers = self.each(top.node_of("peers"), "peers", self.peer)
        doc.routes = self.each(top.node_of("routes"), "routes", self.route)
        doc.subscribers = self.each(top.node_of("subscribers"), "subscribers", self.subscriber)
        doc.dids = self.each(top.node_of("dids"), "dids", self.did)
        self.unique(doc.accounts, "account", lambda a: a.name)
        self.unique(doc.tariffs, "tariff", lambda t: t.name)
        self.unique(doc.peers, "peer", lambda p: p.name)
        self.unique(doc.routes, "route for prefix", lambda r: r.prefix)
        self.unique(doc.subscribers, "subscriber", lambda s: s.username)
        self.unique(doc.dids, "DID", lambda d: d.number)
        return doc

    def unique(self, specs: list[Any], what: str, key: Callable[[Any], str]) -> None:
        first: dict[str, int] = {}
        for spec in specs:
            k = key(spec)
            if k in first:
                self.error(
                    spec.line, spec.path, f"duplicate {what} {k!r} (first on line {first[k]})"
                )
            else:
                first[k] = spec.line

    def account(self, node: Node, path: str) -> AccountSpec:
        m = _Map(self, node, path, ("name", "currency", "balance", "credit_limit", "prepaid"))
        fields = self.fields_of(
            m,
            name=lambda: m.require("name", _name),
            currency=lambda: m.require("currency", _currency),
            balance=lambda: m.get("balance", _decimal(AMOUNT_SCALE), Decimal(0)),
            credit_limit=lambda: m.get(
                "credit_limit", _decimal(AMOUNT_SCALE, minimum=Decimal(0)), Decimal(0)
            ),
            prepaid=lambda: m.get("prepaid", _boolean, True),
        )
        return AccountSpec(line=m.line, path=path, **fields)

    def fields_of(self, m: _Map, **getters: Callable[[], Any]) -> dict[str, Any]:
        """Evaluate every getter, so that all invalid fields of an entity are reported at once."""
        values: dict[str, Any] = {}
        failed = False
        for name, getter in getters.items():
            try:
                values[name] = getter()
            except _Invalid:
                failed = True
        if failed:
            raise _Invalid
        return values

    def tariff(self, node: Node, path: str) -> TariffSpec:
        m = _Map(self, node, path, ("name", "currency", "rates"))
        fields = self.fields_of(
            m,
            name=lambda: m.require("name", _name),
            currency=lambda: m.get("currency", _currency, "USD"),
        )
        rates = self.each(m.node_of("rates"), f"{path}.rates", self.rate)
        seen: dict[tuple[str, datetime | None], int] = {}
        for index, (line, rate) in enumerate(rates):
            key = (rate.prefix, rate.effective_from)
            if key in seen:
                when = "" if rate.effective_from is None else f" from {rate.effective_from}"
                self.error(
                    line,
                    f"{path}.rates[{index}].prefix",
                    f"prefix {rate.prefix!r}{when} is already rated on line {seen[key]}",
                )
            seen.setdefault(key, line)
        return TariffSpec(
            line=m.line,
            path=path,
            currency_line=m.line_of("currency"),
            rates=[rate for _rate_line, rate in rates],
            **fields,
        )

    def rate(self, node: Node, path: str) -> tuple[int, Rate]:
        m = _Map(
            self,
            node,
            path,
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
        fields = self.fields_of(
            m,
            prefix=lambda: m.require("prefix", _prefix),
            price_per_minute=lambda: m.require(
                "price_per_minute", _decimal(PRICE_SCALE, minimum=Decimal(0))
            ),
            connect_fee=lambda: m.get(
                "connect_fee", _decimal(PRICE_SCALE, minimum=Decimal(0)), Decimal(0)
            ),
            increment=lambda: m.get("increment", _increment, Increment(1, 1)),
            free_seconds=lambda: m.get("free_seconds", _integer(), 0),
            effective_from=lambda: m.get("effective_from", _datetime, None),
            effective_to=lambda: m.get("effective_to", _datetime, None),
        )
        rate = Rate(**fields)
        try:
            check_rate(rate)
        except RateError as exc:
            self.error(m.node_of("effective_to") or node, path, str(exc))
            raise _Invalid from None
        return m.line, rate

    def peer(self, node: Node, path: str) -> PeerSpec:
        m = _Map(
            self,
            node,
            path,
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
        positive = _integer(minimum=1)
        fields = self.fields_of(
            m,
            name=lambda: m.require("name", _name),
            role=lambda: m.require("role", _role),
            account=lambda: Ref(
                m.require("account", _name), m.line_of("account"), f"{path}.account"
            ),
            tariff=lambda: (
                Ref(m.get("tariff", _name, ""), m.line_of("tariff"), f"{path}.tariff")
                if m.has("tariff")
                else None
            ),
            acl=lambda: self.acl(m.node_of("acl"), f"{path}.acl"),
            username=lambda: m.get("username", _optional_text, None),
            password=lambda: m.get("password", _optional_text, None),
            address=lambda: m.get("address", _address, None),
            transport=lambda: m.get("transport", _transport, "udp"),
            max_calls=lambda: m.get("max_calls", positive, None),
            max_cps=lambda: m.get("max_cps", positive, None),
            caller_rewrite=lambda: self.rewrites(
                m.node_of("caller_rewrite"), f"{path}.caller_rewrite"
            ),
            callee_rewrite=lambda: self.rewrites(
                m.node_of("callee_rewrite"), f"{path}.callee_rewrite"
            ),
            profit_control=lambda: m.get(
                "profit_control", _profit_control, ProfitControl.ALLOW_LOSS
            ),
            enabled=lambda: m.get("enabled", _boolean, True),
            deliver_dids=lambda: m.get("deliver_dids", _boolean, False),
            register=lambda: (
                self.register(m.fields["register"], f"{path}.register")
                if m.has("register")
                else None
            ),
        )
        spec = PeerSpec(
            line=m.line,
            path=path,
            role_line=m.line_of("role"),
            acl_line=m.line_of("acl"),
            username_line=m.line_of("username"),
            **fields,
        )
        problems = peer_rules(spec)
        for name, message in problems:
            self.error(m.node, f"{path}.{name}", message)
        if problems:
            raise _Invalid
        return spec

    # ---- the registrar's (docs/provisioning.md, "subscribers", "dids", a peer's "register")

    def register(self, node: Node, path: str) -> RegisterSpec:
        m = _Map(self, node, path, ("username", "password", "registrar", "expires"))
        fields = self.fields_of(
            m,
            username=lambda: m.require("username", _text),
            password=lambda: m.require("password", _text),
            registrar=lambda: m.require("registrar", _address),
            expires=lambda: m.get("expires", _integer(minimum=10, maximum=86_400), 3600),
        )
        return RegisterSpec(**fields)

    def subscriber(self, node: Node, path: str) -> SubscriberSpec:
        m = _Map(
            self,
            node,
            path,
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
        positive = _integer(minimum=1)
        fields = self.fields_of(
            m,
            username=lambda: m.require("username", _name),
            password=lambda: m.get("password", _secret, None),
            ha1_md5=lambda: m.get("ha1_md5", _ha1("MD5"), None),
            ha1_sha256=lambda: m.get("ha1_sha256", _ha1("SHA-256"), None),
            account=lambda: Ref(
                m.require("account", _name), m.line_of("account"), f"{path}.account"
            ),
            tariff=lambda: (
                Ref(m.get("tariff", _name, ""), m.line_of("tariff"), f"{path}.tariff")
                if m.has("tariff")
                else None
            ),
            allowed_cidrs=lambda: self.cidrs(m.node_of("allowed_cidrs"), f"{path}.allowed_cidrs"),
            max_contacts=lambda: m.get(
                "max_contacts", positive, admin_subscribers.DEFAULT_MAX_CONTACTS
            ),
            max_calls=lambda: m.get("max_calls", positive, None),
            caller_id=lambda: m.get("caller_id", _number, None),
            enabled=lambda: m.get("enabled", _boolean, True),
        )
        spec = SubscriberSpec(line=m.line, path=path, **fields)
        if spec.password is not None and (spec.ha1_md5 or spec.ha1_sha256):
            self.error(m.node, f"{path}.password", "give a password or its HA1s, not both")
            raise _Invalid
        if (spec.ha1_md5 is None) != (spec.ha1_sha256 is None):
            self.error(m.node, f"{path}.ha1_md5", "ha1_md5 and ha1_sha256 go together")
            raise _Invalid
        return spec

    def did(self, node: Node, path: str) -> DidSpec:
        m = _Map(self, node, path, ("number", "subscriber", "peer", "enabled"))
        fields = self.fields_of(
            m,
            number=lambda: m.require("number", _number),
            subscriber=lambda: (
                Ref(m.get("subscriber", _name, ""), m.line_of("subscriber"), f"{path}.subscriber")
                if m.has("subscriber")
                else None
            ),
            peer=lambda: (
                Ref(m.get("peer", _name, ""), m.line_of("peer"), f"{path}.peer")
                if m.has("peer")
                else None
            ),
            enabled=lambda: m.get("enabled", _boolean, True),
        )
        spec = DidSpec(line=m.line, path=path, **fields)
        if (spec.subscriber is None) == (spec.peer is None):
            self.error(m.node, f"{path}.subscriber", "a DID goes to a subscriber or a peer (one)")
            raise _Invalid
        return spec

    def cidrs(self, node: Node | None, path: str) -> list[str]:
        entries: list[str] = []
        failed = False
        for index, item in self.items(node, path):
            try:
                entry = _cidr(_text(item))
            except ValueError as exc:
                self.error(item, f"{path}[{index}]", str(exc))
                failed = True
                continue
            if entry in entries:
                self.error(item, f"{path}[{index}]", f"{entry} is listed twice")
                failed = True
            entries.append(entry)
        if failed:
            raise _Invalid
        return entries

    def acl(self, node: Node | None, path: str) -> list[str]:
        entries: list[str] = []
        failed = False
        for index, item in self.items(node, path):
            try:
                entry = domain_fields.parse_acl_item(_text(item))
            except ValueError as exc:
                self.error(item, f"{path}[{index}]", str(exc))
                failed = True
                continue
            if entry in entries:
                self.error(item, f"{path}[{index}]", f"{entry} is listed twice")
                failed = True
            entries.append(entry)
        if failed:
            raise _Invalid
        return entries

    def rewrites(self, node: Node | None, path: str) -> list[dict[str, str]]:
        def rule(item: Node, item_path: str) -> dict[str, str]:
            m = _Map(self, item, item_path, ("match", "replace"))
            fields = self.fields_of(
                m,
                match=lambda: m.require("match", _text),
                replace=lambda: m.get("replace", _text, ""),
            )
            try:
                return domain_fields.parse_rewrite(fields["match"], fields["replace"])
            except ValueError as exc:
                self.error(item, item_path, str(exc))
                raise _Invalid from None

        before = len(self.issues)
        rules = self.each(node, path, rule)
        if len(self.issues) > before:
            raise _Invalid
        return rules

    def route(self, node: Node, path: str) -> RouteSpec:
        m = _Map(self, node, path, ("prefix", "strategy", "name", "suppliers"))
        fields = self.fields_of(
            m,
            prefix=lambda: m.require("prefix", _prefix),
            strategy=lambda: m.get("strategy", _strategy, RouteStrategy.PRIORITY),
            name=lambda: m.get("name", _optional_text, None),
        )
        before = len(self.issues)
        suppliers: list[SupplierSpec] = []
        seen: dict[str, int | None] = {}
        for index, item in self.items(m.node_of("suppliers"), f"{path}.suppliers"):
            item_path = f"{path}.suppliers[{index}]"
            try:
                supplier = self.supplier(item, item_path, index)
            except _Invalid:
                continue
            if supplier.peer.name in seen:
                self.error(
                    item,
                    item_path,
                    f"supplier {supplier.peer.name!r} is listed twice "
                    f"(first on line {seen[supplier.peer.name]})",
                )
            seen.setdefault(supplier.peer.name, supplier.peer.line)
            suppliers.append(supplier)
        if not suppliers and len(self.issues) == before:
            self.error(
                m.node_of("suppliers") or m.node,
                f"{path}.suppliers",
                "at least one supplier is required",
            )
        if len(self.issues) > before:
            raise _Invalid
        return RouteSpec(line=m.line, path=path, suppliers=suppliers, **fields)

    def supplier(self, node: Node, path: str, index: int) -> SupplierSpec:
        # A bare name, or {peer, priority, weight}.  Priority defaults to the position in the
        # list, so a plain list is a failover order.
        if isinstance(node, ScalarNode):
            try:
                return SupplierSpec(Ref(_name(node), _line(node), path), index, 1)
            except ValueError as exc:
                self.error(node, path, str(exc))
                raise _Invalid from None
        m = _Map(self, node, path, ("peer", "priority", "weight"))
        fields = self.fields_of(
            m,
            peer=lambda: Ref(m.require("peer", _name), m.line_of("peer"), f"{path}.peer"),
            priority=lambda: m.get("priority", _integer(), index),
            weight=lambda: m.get("weight", _integer(), 1),
        )
        return SupplierSpec(**fields)


def parse_document(text: str, file: str) -> ConfigChange:
    """Validate ``text`` on its own (no database); raise :class:`ProvisioningError`."""
    loader = yaml.SafeLoader(text)
    reader = _Reader(file, loader)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = None if mark is None else mark.line + 1
            problem = exc.problem or exc.context or "invalid YAML"
            raise ProvisioningError([Issue(file, line, "", f"invalid YAML: {problem}")]) from None
        except yaml.YAMLError as exc:
            raise ProvisioningError([Issue(file, None, "", f"invalid YAML: {exc}")]) from None
        doc = reader.document(root)
    finally:
        loader.dispose()
    if reader.issues:
        raise ProvisioningError(sorted(reader.issues, key=lambda i: i.line or 0))
    return doc


async def provision_text(
    engine: AsyncEngine,
    text: str,
    file: str = "<text>",
    *,
    dry_run: bool = False,
    realm: str = "smartswitch",
) -> ProvisionReport:
    """:func:`provision` for a document already in memory (the web UI's upload, tests).

    ``realm`` is the digest realm subscribers' passwords are hashed for: the node's
    ``sip_realm``."""
    doc = parse_document(text, file)
    doc.realm = realm
    async with session_factory(engine)() as session:
        try:
            report = ProvisionReport(file=file, config_version=0, dry_run=dry_run)
            await ConfigWriter(session, doc, report).run()
            if dry_run:
                await session.rollback()
            else:
                await session.commit()
            return report
        except BaseException:
            await session.rollback()
            raise


async def provision(
    engine: AsyncEngine, path: Path, *, dry_run: bool = False, realm: str = "smartswitch"
) -> ProvisionReport:
    """Apply the provisioning file at ``path`` (see the module docstring).

    Raises :class:`ProvisioningError` (database unchanged) if the file cannot be read or is
    invalid.  With ``dry_run`` everything is validated and applied inside the transaction,
    which is then rolled back: the report says what would change.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisioningError([Issue(file, None, "", f"cannot read the file: {exc}")]) from None
    return await provision_text(engine, text, file, dry_run=dry_run, realm=realm)
