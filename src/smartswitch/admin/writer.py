"""Configuration changes: the rules and idempotent upserts behind every writer.

``smartswitch provision`` (a YAML file), the REST API and the web UI all describe what they
want as a :class:`ConfigChange` (specs of accounts, tariffs, peers, routes, subscribers and
DIDs, each with the place it was written: a file line and field path, or a form field; the
readers of :mod:`.readers` make them), and :class:`ConfigWriter` applies it in the caller's
transaction:

* secrets left out are kept (:meth:`ConfigWriter.keep_stored_secrets`): an empty or omitted
  password of a peer, of a peer's registration or of a subscriber leaves the stored one, from
  whichever front door the change comes;
* the rules of each entity on its own (what a customer needs, a DID's one owner, a
  subscriber's password or hashes) are checked, then every rule that needs the database
  (unknown references, currencies that must agree, digest usernames unique, ACLs that would
  make a source ambiguous, a customer left as a route's supplier); any problem raises
  :class:`ConfigInvalid` listing all of them with nothing written;
* entities are matched by name (routes by prefix) and created or updated; a tariff's rates and
  a route's suppliers are replaced whole when given;
* when anything changed, ``config_version`` is bumped in the same transaction, so every node
  reloads its in-memory views, and each entity created or changed gets its entry in the audit
  log (:mod:`.audit_log`: who, from where, the fields before and after, secrets masked), in
  the same transaction too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from smartswitch.admin import audit_log, subscribers
from smartswitch.admin.audit_log import Change, Who, snapshot
from smartswitch.admin.settings import PEER_NAME_SETTINGS
from smartswitch.admin.subscribers import DidSpec, RegisterSpec, SubscriberSpec
from smartswitch.model.capture import split_names
from smartswitch.model.config import (
    Peer,
    PeerRole,
    ProfitControl,
    Rate,
    RouteStrategy,
)
from smartswitch.model.ids import new_ulid
from smartswitch.model.media import MediaMode
from smartswitch.routing.acl import AclConflictError, AclIndex
from smartswitch.store.schema import (
    AccountRow,
    BalanceChangeKind,
    BalanceChangeRow,
    ConfigVersionRow,
    PeerRow,
    RateRow,
    RouteRow,
    RouteSupplierRow,
    SettingRow,
    TariffRow,
)
from smartswitch.store.snapshot import bump_config_version, config_version, to_peer
from smartswitch.store.values import parse_acl_entry

__all__ = [
    "KINDS",
    "AccountSpec",
    "ChangeReport",
    "ConfigChange",
    "ConfigInvalid",
    "ConfigWriter",
    "Issue",
    "PeerSpec",
    "Ref",
    "RouteSpec",
    "SupplierSpec",
    "TariffSpec",
    "apply_change",
    "field_path",
    "peer_rules",
]

ACTOR = "provisioning"
_RATE_CHUNK = 1000


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


def field_path(path: str, name: str) -> str:
    """``name`` inside ``path`` (``peers[0]`` + ``acl``; a form's fields have no prefix)."""
    return f"{path}.{name}" if path else name


class ConfigInvalid(Exception):
    """The change is invalid; nothing was changed.  ``str()`` lists every issue, one a line."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = tuple(issues)


KINDS = ("accounts", "tariffs", "peers", "routes", "subscribers", "dids", "settings")


@dataclass(slots=True)
class ChangeReport:
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
class Ref:
    """A reference by name to an account, tariff or peer, with where it was written."""

    name: str
    line: int | None
    path: str


@dataclass(slots=True)
class AccountSpec:
    line: int | None
    path: str
    name: str
    currency: str
    balance: Decimal
    credit_limit: Decimal
    prepaid: bool
    reserve_seconds: int | None = None
    record: bool = False  # its relayed calls are recorded


@dataclass(slots=True)
class TariffSpec:
    line: int | None
    path: str
    name: str
    currency: str
    currency_line: int | None
    rates: list[Rate] | None  # None: leave the tariff's rates as they are


@dataclass(slots=True)
class PeerSpec:
    line: int | None
    path: str
    name: str
    role: PeerRole
    role_line: int | None
    account: Ref
    tariff: Ref | None
    acl: list[str]
    acl_line: int | None
    username: str | None
    username_line: int | None
    password: str | None = field(repr=False)  # None: keep the stored one (when a username)
    address: str | None
    transport: str
    max_calls: int | None
    max_cps: int | None
    caller_rewrite: list[dict[str, str]]
    callee_rewrite: list[dict[str, str]]
    profit_control: ProfitControl
    enabled: bool
    # The registrar's (admin/subscribers.py): DIDs it may deliver; the switch registers with it.
    deliver_dids: bool = False
    register: RegisterSpec | None = None
    # The nodes it is attached to (empty: every node).
    nodes: list[str] = field(default_factory=list)
    nodes_line: int | None = None
    tls_fingerprint: str | None = None  # mutual TLS: the client certificate identifying it
    # Media (docs/media.md): direct (SDP untouched) or relayed through rtpengine; the codecs
    # it may see and send (empty: any); its relayed calls recorded; direct when no relay is up.
    media: MediaMode = MediaMode.DIRECT
    codecs: list[str] = field(default_factory=list)
    record: bool = False
    direct_fallback: bool = False


@dataclass(slots=True)
class SupplierSpec:
    peer: Ref
    priority: int
    weight: int


@dataclass(slots=True)
class RouteSpec:
    line: int | None
    path: str
    prefix: str
    strategy: RouteStrategy
    name: str | None
    suppliers: list[SupplierSpec]


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """A global setting as a provisioning file gives it (already checked on its own)."""

    line: int | None
    path: str
    name: str
    value: str


@dataclass(slots=True)
class ConfigChange:
    file: str  # where the change comes from: a provisioning file, "web", "api"
    actor: str = ACTOR  # who makes it, for the audit trail of opening balances
    accounts: list[AccountSpec] = field(default_factory=list)
    tariffs: list[TariffSpec] = field(default_factory=list)
    peers: list[PeerSpec] = field(default_factory=list)
    routes: list[RouteSpec] = field(default_factory=list)
    subscribers: list[SubscriberSpec] = field(default_factory=list)
    dids: list[DidSpec] = field(default_factory=list)
    settings: list[SettingSpec] = field(default_factory=list)
    realm: str = "smartswitch"  # the digest realm subscribers' passwords are hashed for
    who: Who | None = None  # for the audit log; None: ``actor`` through ``file``, no address

    def origin(self) -> Who:
        return self.who or Who(self.actor, self.file)


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


def _rate_rows(tariff_id: int, rates: list[Rate]) -> list[dict[str, Any]]:
    return [
        {
            "tariff_id": tariff_id,
            "prefix": rate.prefix,
            "price_per_minute": rate.price_per_minute,
            "connect_fee": rate.connect_fee,
            "increment_min": rate.increment.minimum,
            "increment_step": rate.increment.step,
            "free_seconds": rate.free_seconds,
            "effective_from": rate.effective_from,
            "effective_to": rate.effective_to,
        }
        for rate in rates
    ]


def _same_rates(old: list[tuple[Any, ...]], new: list[Rate]) -> bool:
    return len(old) == len(new) and Counter(old) == Counter(map(_rate_key, new))


def _set(row: Any, values: dict[str, Any]) -> bool:
    """Assign the values that differ; whether anything did."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


class ConfigWriter:
    def __init__(self, session: AsyncSession, doc: ConfigChange, report: ChangeReport) -> None:
        self.session, self.doc, self.report = session, doc, report
        self.issues: list[Issue] = []
        self.changes: list[Change] = []  # for the audit log

    def error(self, line: int | None, path: str, message: str) -> None:
        self.issues.append(Issue(self.doc.file, line, path, message))

    def check(self) -> None:
        if self.issues:
            raise ConfigInvalid(sorted(self.issues, key=lambda i: i.line or 0))

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
        self.keep_stored_secrets(peers)
        self.check_rules()
        self.check()  # an entity wrong on its own: its references need not be looked at
        self.validate_against(accounts, tariffs, peers, routes)
        loaded = await subscribers.validate(self, accounts, tariffs, peers)
        self.check()

        await self.apply_accounts(accounts)
        await self.apply_tariffs(tariffs)
        await self.apply_peers(peers, accounts, tariffs)
        await self.apply_routes(routes, peers)
        await subscribers.apply(self, loaded, accounts, tariffs, peers)
        await self.apply_settings(peers)
        if self.report.changed and not self.report.dry_run:
            self.report.config_version = await bump_config_version(session)
            await audit_log.record(session, self.doc.origin(), self.changes)
        else:
            self.report.config_version = await config_version(session)

    # ---- each entity on its own

    def keep_stored_secrets(self, peers: dict[str, PeerRow]) -> None:
        """The secrets rule of every front door: a password left out or empty keeps the stored
        one. A peer's digest password stays while it keeps a username (a peer without one has
        none); its registration password stays while it registers with a default account,
        and each node's own registration password while that node keeps an account. (A
        subscriber's hashes
        stay likewise: :func:`.subscribers.apply` writes them only from a new password.)

        The specs are completed in place, so that the rules below see the secrets as they
        will be."""
        for spec in self.doc.peers:
            row = peers.get(spec.name)
            if row is None:
                continue
            if spec.password is None and spec.username is not None:
                spec.password = row.password
            register = spec.register
            if register is None:
                continue
            if register.password is None and register.username is not None:
                register.password = row.register_password
            stored = {a["node"]: a["password"] for a in row.register_nodes}
            for account in register.nodes:
                if account.password is None:
                    account.password = stored.get(account.node)

    def check_rules(self) -> None:
        """The rules about each entity alone (no database), reported at the entity."""
        doc = self.doc
        for peer in doc.peers:
            for name, message in peer_rules(peer):
                self.error(peer.line, field_path(peer.path, name), message)
            for line, path, message in subscribers.register_rules(peer):
                self.error(line, path, message)
        for sub in doc.subscribers:
            for name, message in subscribers.subscriber_rules(sub):
                self.error(sub.line, field_path(sub.path, name), message)
        for did in doc.dids:
            for name, message in subscribers.did_rules(did):
                self.error(did.line, field_path(did.path, name), message)

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

    def audited(
        self, kind: str, name: str, before: dict[str, Any] | None, after: dict[str, Any]
    ) -> None:
        """An entity created (``before`` None) or updated, for the audit log."""
        action = "create" if before is None else "update"
        self.changes.append(Change(action, kind.removesuffix("s"), name, before, after))

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
                    reserve_seconds=spec.reserve_seconds,
                    media_record=spec.record,
                )
                self.session.add(row)
                await self.session.flush()
                accounts[spec.name] = row
                self.audited("accounts", spec.name, None, snapshot(row))
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
                            actor=self.doc.actor,
                            note=f"opening balance from {self.doc.file}",
                        )
                    )
                self.note("accounts", spec.name, True, True)
            else:
                before = snapshot(row)
                changed = _set(
                    row,
                    {
                        "credit_limit": spec.credit_limit,
                        "prepaid": spec.prepaid,
                        "reserve_seconds": spec.reserve_seconds,
                        "media_record": spec.record,
                    },
                )
                self.audited("accounts", spec.name, before, snapshot(row))
                self.note("accounts", spec.name, False, changed)

    async def apply_tariffs(self, tariffs: dict[str, TariffRow]) -> None:
        session = self.session
        existing_ids = [
            tariffs[spec.name].id
            for spec in self.doc.tariffs
            if spec.name in tariffs and spec.rates is not None
        ]
        # The rates in the database as comparable tuples (the _rate_key shape), read as plain
        # columns in partitions: ORM objects for a 50 000-rate tariff would cost seconds of CPU
        # on the event loop, which a node shares with SIP.
        current: dict[int, list[tuple[Any, ...]]] = {tariff_id: [] for tariff_id in existing_ids}
        if existing_ids:
            result = await session.stream(
                select(
                    RateRow.tariff_id,
                    RateRow.prefix,
                    RateRow.effective_from,
                    RateRow.price_per_minute,
                    RateRow.connect_fee,
                    RateRow.increment_min,
                    RateRow.increment_step,
                    RateRow.free_seconds,
                    RateRow.effective_to,
                ).where(RateRow.tariff_id.in_(existing_ids))
            )
            async for partition in result.partitions(_RATE_CHUNK):
                for r in partition:
                    current[r[0]].append(tuple(r[1:]))
        for spec in self.doc.tariffs:
            row = tariffs.get(spec.name)
            created = row is None
            before: dict[str, Any] | None = None if row is None else {"currency": row.currency}
            if row is not None and spec.rates is not None:
                before = {"currency": row.currency, "rates": len(current.get(row.id, []))}
            if row is None:
                row = TariffRow(name=spec.name, currency=spec.currency)
                session.add(row)
                await session.flush()
                tariffs[spec.name] = row
                changed = True
                old: list[tuple[Any, ...]] = []
            else:
                changed = _set(row, {"currency": spec.currency})
                old = current.get(row.id, [])
            after: dict[str, Any] = {"currency": row.currency}
            if spec.rates is not None:
                after["rates"] = len(spec.rates)
            if spec.rates is None:  # the tariff itself only (the API's PUT of a tariff)
                self.audited("tariffs", spec.name, before, after)
                self.note("tariffs", spec.name, created, changed)
                continue
            # Compared as multisets (order does not matter), in a thread: CPU for big tariffs.
            same = await asyncio.to_thread(_same_rates, old, spec.rates)
            if not same:
                changed = True
                if old:
                    await session.execute(delete(RateRow).where(RateRow.tariff_id == row.id))
                rows = await asyncio.to_thread(_rate_rows, row.id, spec.rates)
                # In chunks: binding a whole 50 000-rate tariff at once would hold the event
                # loop (which also carries SIP) for the whole conversion.
                for start in range(0, len(rows), _RATE_CHUNK):
                    await session.execute(insert(RateRow), rows[start : start + _RATE_CHUNK])
            elif before is not None:
                before["rates"] = after["rates"]  # the same rates: not a change to log
            self.audited("tariffs", spec.name, before, after)
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
                "nodes": sorted(spec.nodes),
                "tls_fingerprint": spec.tls_fingerprint,
                "media_mode": spec.media.value,
                "media_codecs": list(spec.codecs),
                "media_record": spec.record,
                "media_fallback": spec.direct_fallback,
                **subscribers.register_columns(spec),
            }
            row = peers.get(spec.name)
            if row is None:
                row = PeerRow(name=spec.name, **values)
                self.session.add(row)
                peers[spec.name] = row
                self.audited("peers", spec.name, None, snapshot(row))
                self.note("peers", spec.name, True, True)
            else:
                before = snapshot(row)
                changed = _set(row, values)
                self.audited("peers", spec.name, before, snapshot(row))
                self.note("peers", spec.name, False, changed)
        await self.session.flush()

    async def apply_settings(self, peers: dict[str, PeerRow]) -> None:
        """The file's global settings; a setting naming peers names peers of the database
        or of this file."""
        for spec in self.doc.settings:
            if spec.name in PEER_NAME_SETTINGS:
                unknown = sorted(n for n in split_names(spec.value) if n not in peers)
                if unknown:
                    self.error(spec.line, spec.path, f"no peer named {', '.join(unknown)}")
        self.check()
        for spec in self.doc.settings:
            row = await self.session.get(SettingRow, spec.name)
            before = None if row is None else {"value": row.value}
            changed = row is None or row.value != spec.value
            if row is None:
                self.session.add(SettingRow(name=spec.name, value=spec.value))
            elif changed:
                row.value = spec.value
            if changed:
                self.audited("settings", spec.name, before, {"value": spec.value})
            self.note("settings", spec.name, row is None, changed)

    async def apply_routes(self, routes: dict[str, RouteRow], peers: dict[str, PeerRow]) -> None:
        session = self.session
        peer_names = {row.id: name for name, row in peers.items()}

        def route_values(row: RouteRow, suppliers: list[tuple[int, int, int, int]]) -> Any:
            listed = [f"{peer_names.get(p, p)} {prio} {weight}" for p, prio, weight, _ in suppliers]
            return {"strategy": row.strategy.value, "name": row.name, "suppliers": listed}

        for spec in self.doc.routes:
            label = spec.prefix or "(default)"
            wanted = [
                (peers[s.peer.name].id, s.priority, s.weight, position)
                for position, s in enumerate(spec.suppliers)
            ]
            row = routes.get(spec.prefix)
            before: dict[str, Any] | None = None
            if row is not None:
                before = route_values(
                    row, [(s.peer_id, s.priority, s.weight, s.position) for s in row.suppliers]
                )
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
            self.audited("routes", label, before, route_values(row, wanted))
            self.note("routes", label, created, changed)


def peer_rules(spec: PeerSpec) -> list[tuple[str, str]]:
    """What a peer of its role must have, as (field, message) pairs; empty when fine."""
    problems: list[tuple[str, str]] = []
    if (spec.username is None) != (spec.password is None):
        missing = "password" if spec.password is None else "username"
        problems.append((missing, "username and password go together"))
    if spec.role in (PeerRole.CUSTOMER, PeerRole.BOTH):
        if spec.tariff is None:
            problems.append(("tariff", "required for a customer (what to charge)"))
        if not spec.acl and spec.username is None:
            problems.append(
                ("acl", "a customer needs an acl or a username and password (how to recognise it)")
            )
    if spec.role in (PeerRole.SUPPLIER, PeerRole.BOTH) and spec.address is None:
        problems.append(("address", "required for a supplier (where to send calls)"))
    problems += subscribers.peer_rules(spec)
    return problems


async def apply_change(
    session: AsyncSession, change: ConfigChange, *, dry_run: bool = False
) -> ChangeReport:
    """Validate and apply ``change`` in the session's transaction (the caller commits)."""
    report = ChangeReport(file=change.file, config_version=0, dry_run=dry_run)
    await ConfigWriter(session, change, report).run()
    return report
