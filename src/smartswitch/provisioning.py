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

The format is documented in ``docs/provisioning.md``; ``examples/provision.yaml`` is a
working example.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import selectinload
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from smartswitch.billing.increment import Increment, IncrementError
from smartswitch.billing.rating import RateError, check_rate
from smartswitch.routing.acl import AclConflictError, AclIndex
from smartswitch.routing.model import (
    Peer,
    PeerRole,
    ProfitControl,
    Rate,
    RewriteRule,
    RouteStrategy,
)
from smartswitch.routing.selection import RewriteError, check_rewrite_rule
from smartswitch.store.database import session_factory
from smartswitch.store.ids import new_ulid
from smartswitch.store.schema import (
    NAME_LENGTH,
    PREFIX_LENGTH,
    AccountRow,
    BalanceChangeKind,
    BalanceChangeRow,
    ConfigVersionRow,
    PeerRow,
    RateRow,
    RouteRow,
    RouteSupplierRow,
    TariffRow,
)
from smartswitch.store.snapshot import bump_config_version, config_version, to_peer
from smartswitch.store.types import AMOUNT_SCALE, PRICE_SCALE, exact_decimal, utc_ms
from smartswitch.store.values import format_acl_entry, parse_acl_entry, parse_address

__all__ = ["Issue", "ProvisionReport", "ProvisioningError", "provision", "provision_text"]

T = TypeVar("T")

ACTOR = "provisioning"
TRANSPORTS = ("udp", "tcp")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_PREFIX = re.compile(r"^[0-9]*$")
_INT = re.compile(r"^[+-]?[0-9]+$")
_TAG = "tag:yaml.org,2002:"


# --------------------------------------------------------------------------------------------
# Errors and the report


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in the file: where (line and field path) and what."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ProvisioningError(Exception):
    """The file is invalid; nothing was changed.  ``str()`` lists every issue, one a line."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = tuple(issues)


KINDS = ("accounts", "tariffs", "peers", "routes")


@dataclass(slots=True)
class ProvisionReport:
    """What a run did (or, with ``dry_run``, would do), by kind and name."""

    file: str
    config_version: int
    dry_run: bool = False
    created: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    updated: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    unchanged: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})

    @property
    def changed(self) -> bool:
        return any(self.created[k] or self.updated[k] for k in KINDS)

    def summary(self) -> str:
        """A few lines for the operator."""
        lines = []
        for kind in KINDS:
            c, u, n = len(self.created[kind]), len(self.updated[kind]), len(self.unchanged[kind])
            if c or u or n:
                lines.append(f"{kind}: {c} created, {u} updated, {n} unchanged")
        if self.dry_run:
            lines.append("dry run: nothing was written")
        elif self.changed:
            lines.append(f"configuration version is now {self.config_version}")
        else:
            lines.append(f"no changes (configuration version {self.config_version})")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# What the file says, validated on its own (no database yet)


@dataclass(frozen=True, slots=True)
class _Ref:
    """A reference by name to an account, tariff or peer, with where it was written."""

    name: str
    line: int
    path: str


@dataclass(slots=True)
class _AccountSpec:
    line: int
    path: str
    name: str
    currency: str
    balance: Decimal
    credit_limit: Decimal
    prepaid: bool


@dataclass(slots=True)
class _TariffSpec:
    line: int
    path: str
    name: str
    currency: str
    currency_line: int
    rates: list[Rate]


@dataclass(slots=True)
class _PeerSpec:
    line: int
    path: str
    name: str
    role: PeerRole
    role_line: int
    account: _Ref
    tariff: _Ref | None
    acl: list[str]
    acl_line: int
    username: str | None
    username_line: int
    password: str | None
    address: str | None
    transport: str
    max_calls: int | None
    max_cps: int | None
    caller_rewrite: list[dict[str, str]]
    callee_rewrite: list[dict[str, str]]
    profit_control: ProfitControl
    enabled: bool


@dataclass(slots=True)
class _SupplierSpec:
    peer: _Ref
    priority: int
    weight: int


@dataclass(slots=True)
class _RouteSpec:
    line: int
    path: str
    prefix: str
    strategy: RouteStrategy
    name: str | None
    suppliers: list[_SupplierSpec]


@dataclass(slots=True)
class _Document:
    file: str
    accounts: list[_AccountSpec] = field(default_factory=list)
    tariffs: list[_TariffSpec] = field(default_factory=list)
    peers: list[_PeerSpec] = field(default_factory=list)
    routes: list[_RouteSpec] = field(default_factory=list)


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
    text = _text(node)
    if not _NAME.match(text) or len(text) > NAME_LENGTH:
        raise ValueError(
            f"{text!r} is not a valid name (letters, digits and . _ @ + -, "
            f"at most {NAME_LENGTH} characters, starting with a letter or digit)"
        )
    return text


def _optional_text(node: Node) -> str | None:
    if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
        return None
    return _text(node)


def _currency(node: Node) -> str:
    text = _text(node)
    if not _CURRENCY.match(text):
        raise ValueError(f"currency must be a 3-letter ISO 4217 code in capitals, got {text!r}")
    return text


def _prefix(node: Node) -> str:
    text = _text(node)
    if not _PREFIX.match(text) or len(text) > PREFIX_LENGTH:
        raise ValueError(f"a prefix is digits only (at most {PREFIX_LENGTH}), got {text!r}")
    return text


def _decimal(scale: int, *, minimum: Decimal | None = None) -> Callable[[Node], Decimal]:
    def parse(node: Node) -> Decimal:
        node = _scalar(node, "a decimal number")
        if node.tag not in (_TAG + "str", _TAG + "int", _TAG + "float"):
            raise ValueError(f"expected a decimal number, got {node.value!r}")
        # The source text, not float(node.value): "0.1" must be exactly 0.1.
        try:
            value = Decimal(node.value.strip())
        except InvalidOperation:
            raise ValueError(f"expected a decimal number, got {node.value!r}") from None
        if not value.is_finite():
            raise ValueError(f"expected a finite decimal number, got {node.value!r}")
        value = exact_decimal(value, scale)
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _integer(*, minimum: int = 0, maximum: int | None = None) -> Callable[[Node], int]:
    def parse(node: Node) -> int:
        node = _scalar(node, "a whole number")
        if node.tag not in (_TAG + "str", _TAG + "int") or not _INT.match(node.value.strip()):
            raise ValueError(f"expected a whole number, got {node.value!r}")
        value = int(node.value)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"{minimum}-{maximum}"
            raise ValueError(f"must be {bound}, got {value}")
        return value

    return parse


def _boolean(node: Node) -> bool:
    node = _scalar(node, "true or false")
    value = yaml.constructor.SafeConstructor.bool_values.get(node.value.lower())
    if node.tag not in (_TAG + "bool", _TAG + "str") or value is None:
        raise ValueError(f"expected true or false, got {node.value!r}")
    return bool(value)


def _datetime(node: Node) -> datetime:
    node = _scalar(node, "a date and time")
    try:
        value = datetime.fromisoformat(node.value.strip().replace(" ", "T", 1))
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 date and time (2025-01-31T00:00:00Z), got {node.value!r}"
        ) from None
    if value.tzinfo is None:  # documented: times without a zone are UTC
        value = value.replace(tzinfo=UTC)
    return utc_ms(value)


def _increment(node: Node) -> Increment:
    try:
        return Increment.parse(_text(node))
    except IncrementError as exc:
        raise ValueError(str(exc)) from None


def _choice(enum_type: type[T], values: tuple[str, ...]) -> Callable[[Node], T]:
    def parse(node: Node) -> T:
        text = _text(node)
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}; got {text!r}")
        return enum_type(text)  # type: ignore[call-arg]

    return parse


def _role(node: Node) -> PeerRole:
    return _choice(PeerRole, tuple(r.value for r in PeerRole))(node)


def _strategy(node: Node) -> RouteStrategy:
    return _choice(RouteStrategy, tuple(s.value for s in RouteStrategy))(node)


def _profit_control(node: Node) -> ProfitControl:
    return _choice(ProfitControl, tuple(p.value for p in ProfitControl))(node)


def _transport(node: Node) -> str:
    return _choice(str, TRANSPORTS)(node)


def _address(node: Node) -> str:
    text = _text(node).strip()
    parse_address(text)
    return text


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

    def document(self, root: Node | None) -> _Document:
        doc = _Document(self.file)
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
        self.unique(doc.accounts, "account", lambda a: a.name)
        self.unique(doc.tariffs, "tariff", lambda t: t.name)
        self.unique(doc.peers, "peer", lambda p: p.name)
        self.unique(doc.routes, "route for prefix", lambda r: r.prefix)
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

    def account(self, node: Node, path: str) -> _AccountSpec:
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
        return _AccountSpec(line=m.line, path=path, **fields)

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

    def tariff(self, node: Node, path: str) -> _TariffSpec:
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
        return _TariffSpec(
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

    def peer(self, node: Node, path: str) -> _PeerSpec:
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
            ),
        )
        positive = _integer(minimum=1)
        fields = self.fields_of(
            m,
            name=lambda: m.require("name", _name),
            role=lambda: m.require("role", _role),
            account=lambda: _Ref(
                m.require("account", _name), m.line_of("account"), f"{path}.account"
            ),
            tariff=lambda: (
                _Ref(m.get("tariff", _name, ""), m.line_of("tariff"), f"{path}.tariff")
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
        )
        spec = _PeerSpec(
            line=m.line,
            path=path,
            role_line=m.line_of("role"),
            acl_line=m.line_of("acl"),
            username_line=m.line_of("username"),
            **fields,
        )
        ok = True
        if (spec.username is None) != (spec.password is None):
            missing = "password" if spec.password is None else "username"
            self.error(m.node, f"{path}.{missing}", "username and password go together")
            ok = False
        if spec.role in (PeerRole.CUSTOMER, PeerRole.BOTH):
            if spec.tariff is None:
                self.error(m.node, f"{path}.tariff", "required for a customer (what to charge)")
                ok = False
            if not spec.acl and spec.username is None:
                self.error(
                    m.node,
                    f"{path}.acl",
                    "a customer needs an acl or a username and password (how to recognise it)",
                )
                ok = False
        if spec.role in (PeerRole.SUPPLIER, PeerRole.BOTH) and spec.address is None:
            self.error(m.node, f"{path}.address", "required for a supplier (where to send calls)")
            ok = False
        if not ok:
            raise _Invalid
        return spec

    def acl(self, node: Node | None, path: str) -> list[str]:
        entries: list[str] = []
        failed = False
        for index, item in self.items(node, path):
            try:
                entry = format_acl_entry(parse_acl_entry(_text(item)))
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
                check_rewrite_rule(RewriteRule(fields["match"], fields["replace"]))
            except RewriteError as exc:
                self.error(item, item_path, str(exc))
                raise _Invalid from None
            return {"match": fields["match"], "replace": fields["replace"]}

        before = len(self.issues)
        rules = self.each(node, path, rule)
        if len(self.issues) > before:
            raise _Invalid
        return rules

    def route(self, node: Node, path: str) -> _RouteSpec:
        m = _Map(self, node, path, ("prefix", "strategy", "name", "suppliers"))
        fields = self.fields_of(
            m,
            prefix=lambda: m.require("prefix", _prefix),
            strategy=lambda: m.get("strategy", _strategy, RouteStrategy.PRIORITY),
            name=lambda: m.get("name", _optional_text, None),
        )
        before = len(self.issues)
        suppliers: list[_SupplierSpec] = []
        seen: dict[str, int] = {}
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
        return _RouteSpec(line=m.line, path=path, suppliers=suppliers, **fields)

    def supplier(self, node: Node, path: str, index: int) -> _SupplierSpec:
        # A bare name, or {peer, priority, weight}.  Priority defaults to the position in the
        # list, so a plain list is a failover order.
        if isinstance(node, ScalarNode):
            try:
                return _SupplierSpec(_Ref(_name(node), _line(node), path), index, 1)
            except ValueError as exc:
                self.error(node, path, str(exc))
                raise _Invalid from None
        m = _Map(self, node, path, ("peer", "priority", "weight"))
        fields = self.fields_of(
            m,
            peer=lambda: _Ref(m.require("peer", _name), m.line_of("peer"), f"{path}.peer"),
            priority=lambda: m.get("priority", _integer(), index),
            weight=lambda: m.get("weight", _integer(), 1),
        )
        return _SupplierSpec(**fields)


def parse_document(text: str, file: str) -> _Document:
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


# --------------------------------------------------------------------------------------------
# Applying it to the database


def _rate_key(rate: Rate) -> tuple[Any, ...]:
    return (
        rate.prefix,
        rate.effective_from,
        rate.price_per_minute,
        rate.connect_fee,
        rate.increment.minimum,
        rate.increment.step,
        rate.free_seconds,
        rate.effective_to,
    )


def _set(row: Any, values: dict[str, Any]) -> bool:
    """Assign the values that differ; whether anything did."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


class _Applier:
    def __init__(self, session: AsyncSession, doc: _Document, report: ProvisionReport) -> None:
        self.session, self.doc, self.report = session, doc, report
        self.issues: list[Issue] = []

    def error(self, line: int | None, path: str, message: str) -> None:
        self.issues.append(Issue(self.doc.file, line, path, message))

    def check(self) -> None:
        if self.issues:
            raise ProvisioningError(sorted(self.issues, key=lambda i: i.line or 0))

    async def run(self) -> None:
        session = self.session
        # Serialise configuration writers (MariaDB row lock; SQLite holds the write lock).
        await session.execute(select(ConfigVersionRow).with_for_update())
        accounts = {r.name: r for r in await session.scalars(select(AccountRow))}
        tariffs = {r.name: r for r in await session.scalars(select(TariffRow))}
        peers = {r.name: r for r in await session.scalars(select(PeerRow))}
        routes = {
            r.prefix: r
            for r in await session.scalars(
                select(RouteRow).options(selectinload(RouteRow.suppliers))
            )
        }
        self.validate_against(accounts, tariffs, peers, routes)
        self.check()

        await self.apply_accounts(accounts)
        await self.apply_tariffs(tariffs)
        await self.apply_peers(peers, accounts, tariffs)
        await self.apply_routes(routes, peers)
        if self.report.changed and not self.report.dry_run:
            self.report.config_version = await bump_config_version(session)
        else:
            self.report.config_version = await config_version(session)

    # ---- validation that needs what is already in the database

    def validate_against(
        self,
        accounts: dict[str, AccountRow],
        tariffs: dict[str, TariffRow],
        peers: dict[str, PeerRow],
        routes: dict[str, RouteRow],
    ) -> None:
        doc = self.doc
        account_currency = {name: row.currency for name, row in accounts.items()}
        for account in doc.accounts:
            existing = accounts.get(account.name)
            if existing is not None and existing.currency != account.currency:
                self.error(
                    account.line,
                    f"{account.path}.currency",
                    f"account {account.name!r} exists in {existing.currency}; the currency of "
                    "an account with a balance cannot be changed",
                )
            account_currency[account.name] = account.currency
        tariff_currency = {name: row.currency for name, row in tariffs.items()}
        tariff_currency.update({t.name: t.currency for t in doc.tariffs})

        # Peers as they will be: the database's, overridden by the file's.
        by_name: dict[str, tuple[PeerRole, bool, str | None]] = {
            name: (row.role, row.tariff_id is not None, row.username) for name, row in peers.items()
        }
        for spec in doc.peers:
            by_name[spec.name] = (spec.role, spec.tariff is not None, spec.username)
            if spec.account.name not in account_currency:
                self.error(
                    spec.account.line, spec.account.path, f"unknown account {spec.account.name!r}"
                )
            if spec.tariff is not None:
                if spec.tariff.name not in tariff_currency:
                    self.error(
                        spec.tariff.line, spec.tariff.path, f"unknown tariff {spec.tariff.name!r}"
                    )
                elif (
                    spec.account.name in account_currency
                    and tariff_currency[spec.tariff.name] != account_currency[spec.account.name]
                ):
                    self.error(
                        spec.tariff.line,
                        spec.tariff.path,
                        f"tariff {spec.tariff.name!r} is in {tariff_currency[spec.tariff.name]} "
                        f"but account {spec.account.name!r} is in "
                        f"{account_currency[spec.account.name]}",
                    )
        # A tariff whose currency the file changes must still suit the peers left alone.
        in_file = {spec.name for spec in doc.peers}
        tariff_names = {row.id: name for name, row in tariffs.items()}
        currency_by_account_id = {row.id: row.currency for row in accounts.values()}
        for tariff in doc.tariffs:
            for name, row in peers.items():
                if name in in_file or tariff_names.get(row.tariff_id or -1) != tariff.name:
                    continue
                if currency_by_account_id.get(row.account_id) != tariff.currency:
                    self.error(
                        tariff.currency_line,
                        f"{tariff.path}.currency",
                        f"peer {name!r} uses tariff {tariff.name!r} and its account is in "
                        f"{currency_by_account_id.get(row.account_id)}",
                    )
        self.validate_usernames(peers)
        self.validate_acls(peers)

        file_prefixes = {r.prefix for r in doc.routes}
        for route_spec in doc.routes:
            for supplier in route_spec.suppliers:
                known = by_name.get(supplier.peer.name)
                if known is None:
                    self.error(
                        supplier.peer.line,
                        supplier.peer.path,
                        f"unknown peer {supplier.peer.name!r}",
                    )
                elif known[0] == PeerRole.CUSTOMER:
                    self.error(
                        supplier.peer.line,
                        supplier.peer.path,
                        f"peer {supplier.peer.name!r} is a customer; a route needs suppliers "
                        "(role supplier or both)",
                    )
                elif route_spec.strategy == RouteStrategy.LEAST_COST and not known[1]:
                    self.error(
                        supplier.peer.line,
                        supplier.peer.path,
                        f"peer {supplier.peer.name!r} has no tariff, so a least_cost route "
                        "cannot compare its price",
                    )
        # A peer turned into a customer must not stay a supplier of a route the file leaves alone.
        peer_names = {row.id: name for name, row in peers.items()}
        for prefix, route in routes.items():
            if prefix in file_prefixes:
                continue
            for supplier_row in route.suppliers:
                peer_name = peer_names.get(supplier_row.peer_id)
                peer_spec = next((p for p in doc.peers if p.name == peer_name), None)
                if peer_spec is not None and peer_spec.role == PeerRole.CUSTOMER:
                    self.error(
                        peer_spec.role_line,
                        f"{peer_spec.path}.role",
                        f"peer {peer_name!r} is a supplier of the route for prefix {prefix!r}; "
                        "remove it there first",
                    )

    def validate_usernames(self, peers: dict[str, PeerRow]) -> None:
        in_file = {spec.name for spec in self.doc.peers}
        owners = {
            row.username: name
            for name, row in peers.items()
            if row.username is not None and name not in in_file
        }
        for spec in self.doc.peers:
            if spec.username is None:
                continue
            owner = owners.setdefault(spec.username, spec.name)
            if owner != spec.name:
                self.error(
                    spec.username_line,
                    f"{spec.path}.username",
                    f"username {spec.username!r} is already used by peer {owner!r}",
                )

    def validate_acls(self, peers: dict[str, PeerRow]) -> None:
        specs = {spec.name: spec for spec in self.doc.peers}
        merged: list[Peer] = [to_peer(row) for name, row in peers.items() if name not in specs]
        for index, spec in enumerate(self.doc.peers):
            merged.append(
                Peer(
                    id=-1 - index,  # not in the database yet; only needs to be distinct
                    name=spec.name,
                    role=spec.role,
                    account_id=0,
                    tariff_id=None,
                    acl=tuple(parse_acl_entry(entry) for entry in spec.acl),
                    enabled=spec.enabled,
                )
            )
        try:
            AclIndex(merged)
        except AclConflictError as exc:
            for peer in reversed(exc.peers):  # report at the later one, the file's if possible
                claimant = specs.get(peer.name)
                if claimant is not None:
                    self.error(claimant.acl_line, f"{claimant.path}.acl", str(exc))
                    break

    # ---- writing

    def note(self, kind: str, name: str, created: bool, changed: bool) -> None:
        bucket = (
            self.report.created
            if created
            else self.report.updated
            if changed
            else self.report.unchanged
        )
        bucket[kind].append(name)

    async def apply_accounts(self, accounts: dict[str, AccountRow]) -> None:
        now = datetime.now(UTC)
        for spec in self.doc.accounts:
            row = accounts.get(spec.name)
            if row is None:
                row = AccountRow(
                    name=spec.name,
                    currency=spec.currency,
                    balance=spec.balance,
                    credit_limit=spec.credit_limit,
                    prepaid=spec.prepaid,
                )
                self.session.add(row)
                await self.session.flush()
                accounts[spec.name] = row
                if spec.balance:
                    # The opening balance enters the audit trail like any other movement, so
                    # balance == SUM(balance_changes.amount) holds for every account.
                    self.session.add(
                        BalanceChangeRow(
                            id=new_ulid(),
                            account_id=row.id,
                            amount=spec.balance,
                            kind=BalanceChangeKind.ADJUSTMENT,
                            reference=None,
                            created_at=now,
                            actor=ACTOR,
                            note=f"opening balance from {self.doc.file}",
                        )
                    )
                self.note("accounts", spec.name, True, True)
            else:
                changed = _set(row, {"credit_limit": spec.credit_limit, "prepaid": spec.prepaid})
                self.note("accounts", spec.name, False, changed)

    async def apply_tariffs(self, tariffs: dict[str, TariffRow]) -> None:
        session = self.session
        existing_ids = [tariffs[spec.name].id for spec in self.doc.tariffs if spec.name in tariffs]
        current: dict[int, list[Rate]] = {tariff_id: [] for tariff_id in existing_ids}
        if existing_ids:
            for rate_row in await session.scalars(
                select(RateRow).where(RateRow.tariff_id.in_(existing_ids))
            ):
                current[rate_row.tariff_id].append(
                    Rate(
                        prefix=rate_row.prefix,
                        price_per_minute=rate_row.price_per_minute,
                        connect_fee=rate_row.connect_fee,
                        increment=Increment(rate_row.increment_min, rate_row.increment_step),
                        free_seconds=rate_row.free_seconds,
                        effective_from=rate_row.effective_from,
                        effective_to=rate_row.effective_to,
                    )
                )
        for spec in self.doc.tariffs:
            row = tariffs.get(spec.name)
            created = row is None
            if row is None:
                row = TariffRow(name=spec.name, currency=spec.currency)
                session.add(row)
                await session.flush()
                tariffs[spec.name] = row
                changed = True
                old: list[Rate] = []
            else:
                changed = _set(row, {"currency": spec.currency})
                old = current[row.id]
            wanted = sorted(map(_rate_key, spec.rates), key=repr)
            if sorted(map(_rate_key, old), key=repr) != wanted:
                changed = True
                if old:
                    await session.execute(delete(RateRow).where(RateRow.tariff_id == row.id))
                if spec.rates:
                    await session.execute(
                        insert(RateRow),
                        [
                            {
                                "tariff_id": row.id,
                                "prefix": rate.prefix,
                                "price_per_minute": rate.price_per_minute,
                                "connect_fee": rate.connect_fee,
                                "increment_min": rate.increment.minimum,
                                "increment_step": rate.increment.step,
                                "free_seconds": rate.free_seconds,
                                "effective_from": rate.effective_from,
                                "effective_to": rate.effective_to,
                            }
                            for rate in spec.rates
                        ],
                    )
            self.note("tariffs", spec.name, created, changed)

    async def apply_peers(
        self,
        peers: dict[str, PeerRow],
        accounts: dict[str, AccountRow],
        tariffs: dict[str, TariffRow],
    ) -> None:
        for spec in self.doc.peers:
            values: dict[str, Any] = {
                "role": spec.role,
                "account_id": accounts[spec.account.name].id,
                "tariff_id": None if spec.tariff is None else tariffs[spec.tariff.name].id,
                "acl": spec.acl,
                "username": spec.username,
                "password": spec.password,
                "address": spec.address,
                "transport": spec.transport,
                "max_calls": spec.max_calls,
                "max_cps": spec.max_cps,
                "caller_rewrite": spec.caller_rewrite,
                "callee_rewrite": spec.callee_rewrite,
                "profit_control": spec.profit_control,
                "enabled": spec.enabled,
            }
            row = peers.get(spec.name)
            if row is None:
                row = PeerRow(name=spec.name, **values)
                self.session.add(row)
                peers[spec.name] = row
                self.note("peers", spec.name, True, True)
            else:
                self.note("peers", spec.name, False, _set(row, values))
        await self.session.flush()

    async def apply_routes(self, routes: dict[str, RouteRow], peers: dict[str, PeerRow]) -> None:
        session = self.session
        for spec in self.doc.routes:
            label = spec.prefix or "(default)"
            wanted = [
                (peers[s.peer.name].id, s.priority, s.weight, position)
                for position, s in enumerate(spec.suppliers)
            ]
            row = routes.get(spec.prefix)
            if row is None:
                row = RouteRow(prefix=spec.prefix, strategy=spec.strategy, name=spec.name)
                session.add(row)
                await session.flush()
                created = changed = True
                old: list[tuple[int, int, int, int]] = []
            else:
                created = False
                changed = _set(row, {"strategy": spec.strategy, "name": spec.name})
                old = [(s.peer_id, s.priority, s.weight, s.position) for s in row.suppliers]
            if old != wanted:
                changed = True
                if old:
                    await session.execute(
                        delete(RouteSupplierRow).where(RouteSupplierRow.route_id == row.id)
                    )
                await session.execute(
                    insert(RouteSupplierRow),
                    [
                        {
                            "route_id": row.id,
                            "peer_id": peer_id,
                            "priority": priority,
                            "weight": weight,
                            "position": position,
                        }
                        for peer_id, priority, weight, position in wanted
                    ],
                )
            self.note("routes", label, created, changed)


async def provision_text(
    engine: AsyncEngine, text: str, file: str = "<text>", *, dry_run: bool = False
) -> ProvisionReport:
    """:func:`provision` for a document already in memory (the web UI's upload, tests)."""
    doc = parse_document(text, file)
    async with session_factory(engine)() as session:
        try:
            report = ProvisionReport(file=file, config_version=0, dry_run=dry_run)
            await _Applier(session, doc, report).run()
            if dry_run:
                await session.rollback()
            else:
                await session.commit()
            return report
        except BaseException:
            await session.rollback()
            raise


async def provision(engine: AsyncEngine, path: Path, *, dry_run: bool = False) -> ProvisionReport:
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
    return await provision_text(engine, text, file, dry_run=dry_run)
