"""The operations behind the web UI, the REST API and ``provision``: :class:`Admin`.

Writes go through :func:`~smartswitch.admin.writer.apply_change` (the one writer: same
rules, same upserts, same version bump) or, for money, through the store's audited top-up and
adjustment. Each operation opens its own transaction from the sessionmaker; after one that
changed something is committed, the ``on_change`` hook runs (a node reloads its views at once
rather than at its next poll), so no caller has to remember to. Reads return the frozen
values of :mod:`.views`, references by name.

Errors are types: :class:`ConfigInvalid` (a field is wrong: 422), :class:`NotFound` (404),
:class:`Conflict` (the change contradicts what exists: 409).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from smartswitch.admin import audit_log, readers
from smartswitch.admin import fields as f
from smartswitch.admin.audit_log import AuditEntry, AuditFilter, Change, Who, snapshot
from smartswitch.admin.form_source import read_form
from smartswitch.admin.readers import RATE
from smartswitch.admin.settings import PEER_NAME_SETTINGS, SETTINGS, Setting
from smartswitch.admin.subscribers import DidSpec, SubscriberSpec
from smartswitch.admin.views import (
    Account,
    BalanceChange,
    DidView,
    Names,
    NodeView,
    PeerView,
    RouteView,
    SubscriberView,
    TariffView,
)
from smartswitch.admin.writer import (
    AccountSpec,
    ChangeReport,
    ConfigChange,
    ConfigInvalid,
    Issue,
    PeerSpec,
    RouteSpec,
    TariffSpec,
    apply_change,
)
from smartswitch.billing.rating import RateError, check_rate
from smartswitch.model import capture as cap
from smartswitch.model.config import Rate
from smartswitch.model.increment import Increment
from smartswitch.store.database import Sessions
from smartswitch.store.ledger import UnknownAccountError, adjust, topup
from smartswitch.store.schema import (
    AccountRow,
    BalanceChangeRow,
    CdrRow,
    DidRow,
    NodeRow,
    PeerRow,
    RateRow,
    RouteRow,
    RouteSupplierRow,
    SettingRow,
    SubscriberRow,
    TariffRow,
)
from smartswitch.store.snapshot import bump_config_version, to_account, to_rate
from smartswitch.store.types import AMOUNT_SCALE, PRICE_SCALE

__all__ = ["SETTINGS", "Admin", "Conflict", "NotFound", "Setting", "Spec", "parse_rates_csv"]

V = TypeVar("V")
Spec = AccountSpec | TariffSpec | PeerSpec | RouteSpec | SubscriberSpec | DidSpec

_KIND = {
    AccountSpec: "accounts",
    TariffSpec: "tariffs",
    PeerSpec: "peers",
    RouteSpec: "routes",
    SubscriberSpec: "subscribers",
    DidSpec: "dids",
}


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


def invalid(source: str, path: str, message: str) -> ConfigInvalid:
    return ConfigInvalid([Issue(source, None, path, message)])


def _nothing() -> None:
    pass


def _label(spec: Spec) -> str:
    if isinstance(spec, RouteSpec):
        return spec.prefix or "(default)"
    if isinstance(spec, SubscriberSpec):
        return spec.username
    if isinstance(spec, DidSpec):
        return spec.number
    return spec.name


async def _exists(session: AsyncSession, spec: Spec) -> bool:
    if isinstance(spec, RouteSpec):
        query: Any = select(RouteRow.id).where(RouteRow.prefix == spec.prefix)
    elif isinstance(spec, SubscriberSpec):
        query = select(SubscriberRow.id).where(SubscriberRow.username == spec.username)
    elif isinstance(spec, DidSpec):
        query = select(DidRow.id).where(DidRow.number == spec.number)
    else:
        row: Any = {AccountSpec: AccountRow, TariffSpec: TariffRow, PeerSpec: PeerRow}[type(spec)]
        query = select(row.id).where(row.name == spec.name)
    return await session.scalar(query) is not None


async def _one(session: AsyncSession, query: Any, missing: str) -> Any:
    row = await session.scalar(query)
    if row is None:
        raise NotFound(missing)
    return row


async def _names(session: AsyncSession) -> Names:
    async def pairs(id_: Any, name: Any) -> dict[int, str]:
        return {row[0]: row[1] for row in await session.execute(select(id_, name))}

    return Names(
        accounts=await pairs(AccountRow.id, AccountRow.name),
        tariffs=await pairs(TariffRow.id, TariffRow.name),
        peers=await pairs(PeerRow.id, PeerRow.name),
        subscribers=await pairs(SubscriberRow.id, SubscriberRow.username),
    )


class Admin:
    """The operator's reads and writes on one database.

    ``realm``: the digest realm subscribers' passwords are hashed for (the node's
    ``sip_realm``). ``on_change``: called after every committed change (a node sets its
    refresh event); never for a change that changed nothing, or failed. ``who``: who makes
    the changes, for the audit log (:mod:`.audit_log`); without it, the ``actor`` and
    ``source`` of each call.
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        realm: str = "smartswitch",
        on_change: Callable[[], None] = _nothing,
        who: Who | None = None,
    ) -> None:
        self.sessions = sessions
        self.realm = realm
        self.on_change = on_change
        self.who = who

    def origin(self, actor: str, source: str) -> Who:
        """Who the audit log names for a change made with this ``actor`` and ``source``."""
        return self.who or Who(actor, source)

    # ---- configuration changes

    async def apply(
        self, change: ConfigChange, *, dry_run: bool = False, create_only: Spec | None = None
    ) -> ChangeReport:
        """Validate and apply ``change`` in one transaction (with ``dry_run``: then roll it
        back); ``create_only``: refuse (:class:`Conflict`) if that entity exists already."""
        change.realm = self.realm
        if self.who is not None:
            change.who = self.who
        async with self.sessions() as session:
            try:
                if create_only is not None and await _exists(session, create_only):
                    kind = _KIND[type(create_only)][:-1]
                    raise Conflict(f"{kind} {_label(create_only)!r} exists already")
                report = await apply_change(session, change, dry_run=dry_run)
                if dry_run:
                    await session.rollback()
                else:
                    await session.commit()
            except BaseException:
                await session.rollback()
                raise
        if report.changed and not dry_run:
            self.on_change()
        return report

    async def save(
        self, spec: Spec, *, source: str, actor: str, create_only: bool = False
    ) -> ChangeReport:
        """Create or update one entity (``create_only``: create, or :class:`Conflict`)."""
        change = ConfigChange(source, actor)
        getattr(change, _KIND[type(spec)]).append(spec)
        return await self.apply(change, create_only=spec if create_only else None)

    async def _delete(
        self, query: Any, missing: str, check: Callable[..., Any], entity: str, name: str
    ) -> None:
        """Delete the one row ``query`` finds, once ``check(session, row)`` found nothing
        against it (it raises :class:`Conflict`); the audit log keeps what it was."""
        async with self.sessions() as session, session.begin():
            row = await _one(session, query, missing)
            await check(session, row)
            await bump_config_version(session)
            who = self.who or Who("?", "admin")
            await audit_log.record(
                session, who, [Change("delete", entity, name, snapshot(row), None)]
            )
            await session.delete(row)
        self.on_change()

    async def _views(self, query: Any, view: Callable[[Any, Names], V]) -> list[V]:
        """The rows ``query`` finds, as views with their references' names."""
        async with self.sessions() as session:
            names = await _names(session)
            return [view(row, names) for row in await session.scalars(query)]

    async def _view(self, query: Any, view: Callable[[Any, Names], V], missing: str) -> V:
        """The one row ``query`` finds, as a view; :class:`NotFound` saying ``missing``."""
        for found in await self._views(query, view):
            return found
        raise NotFound(missing)

    # ---- accounts

    async def list_accounts(self) -> list[Account]:
        async with self.sessions() as session:
            rows = await session.scalars(select(AccountRow).order_by(AccountRow.name))
            return [to_account(row) for row in rows]

    async def get_account(self, name: str) -> Account:
        async with self.sessions() as session:
            query = select(AccountRow).where(AccountRow.name == name)
            return to_account(await _one(session, query, f"no account named {name!r}"))

    async def delete_account(self, name: str) -> None:
        async def check(session: AsyncSession, row: AccountRow) -> None:
            peers = list(
                await session.scalars(select(PeerRow.name).where(PeerRow.account_id == row.id))
            )
            if peers:
                raise Conflict(f"account {name!r} is used by peers {', '.join(peers)}")
            history = await session.scalar(
                select(func.count())
                .select_from(BalanceChangeRow)
                .where(BalanceChangeRow.account_id == row.id)
            )
            if history:
                # balance == SUM(changes) must keep holding for the audit: keep the account.
                raise Conflict(f"account {name!r} has a balance history; it cannot be deleted")

        query = select(AccountRow).where(AccountRow.name == name)
        await self._delete(query, f"no account named {name!r}", check, "account", name)

    async def change_balance(
        self, name: str, kind: str, data: dict[str, Any], *, actor: str, source: str
    ) -> tuple[Decimal, str]:
        """A top-up (``kind`` "topup", amount > 0) or adjustment (signed), with the reason in
        the audit trail; returns the new balance and the change id."""
        issues: list[Issue] = []
        amount: Decimal | None = None
        raw = data.get("amount")
        try:
            if isinstance(raw, float):
                raise ValueError(f"give {raw!r} as text (a JSON string) so it stays exact")
            amount = f.parse_decimal(str(raw if raw is not None else ""), AMOUNT_SCALE)
            if kind == "topup" and amount <= 0:
                raise ValueError(f"a top-up must be positive, got {amount}")
            if kind != "topup" and not amount:
                raise ValueError("an adjustment of 0 changes nothing")
        except ValueError as exc:
            issues.append(Issue(source, None, "amount", str(exc)))
        note = str(data.get("note") or "").strip()
        if not note:
            issues.append(Issue(source, None, "note", "say why (it goes into the audit trail)"))
        if issues:
            raise ConfigInvalid(issues)
        assert amount is not None
        operation = topup if kind == "topup" else adjust
        async with self.sessions() as session, session.begin():
            try:
                result = await operation(session, name, amount, actor, note)
            except UnknownAccountError as exc:
                raise NotFound(str(exc)) from None
            change = Change(
                kind,
                "account",
                name,
                {"balance": f"{result.balance - amount:f}"},
                {"balance": f"{result.balance:f}"},
                extra={"amount": amount, "note": note, "change": result.change_id},
            )
            await audit_log.record(session, self.origin(actor, source), [change])
        self.on_change()  # the nodes re-read balances with their next refresh
        return result.balance, result.change_id

    async def balance_changes(
        self, account_id: int, limit: int = 50, offset: int = 0
    ) -> list[BalanceChange]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(BalanceChangeRow)
                .where(BalanceChangeRow.account_id == account_id)
                .order_by(BalanceChangeRow.created_at.desc(), BalanceChangeRow.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [BalanceChange.of(row) for row in rows]

    # ---- tariffs and rates

    async def list_tariffs(self) -> list[TariffView]:
        async with self.sessions() as session:
            counts: dict[int, int] = {
                row[0]: row[1]
                for row in await session.execute(
                    select(RateRow.tariff_id, func.count()).group_by(RateRow.tariff_id)
                )
            }
            rows = await session.scalars(select(TariffRow).order_by(TariffRow.name))
            return [TariffView.of(row, counts.get(row.id, 0)) for row in rows]

    async def get_tariff(self, name: str) -> TariffView:
        for tariff in await self.list_tariffs():
            if tariff.name == name:
                return tariff
        raise NotFound(f"no tariff named {name!r}")

    async def delete_tariff(self, name: str) -> None:
        async def check(session: AsyncSession, row: TariffRow) -> None:
            peers = list(
                await session.scalars(select(PeerRow.name).where(PeerRow.tariff_id == row.id))
            )
            if peers:
                raise Conflict(f"tariff {name!r} is used by peers {', '.join(peers)}")
            await session.execute(delete(RateRow).where(RateRow.tariff_id == row.id))

        query = select(TariffRow).where(TariffRow.name == name)
        await self._delete(query, f"no tariff named {name!r}", check, "tariff", name)

    async def list_rates(
        self, tariff_id: int, prefix: str = "", limit: int = 100, offset: int = 0
    ) -> tuple[int, list[Rate]]:
        """How many rates of the tariff start with ``prefix``, and a page of them."""
        async with self.sessions() as session:
            where = [RateRow.tariff_id == tariff_id]
            if prefix:
                where.append(RateRow.prefix.startswith(prefix, autoescape=True))
            total = await session.scalar(select(func.count()).select_from(RateRow).where(*where))
            rows = await session.scalars(
                select(RateRow).where(*where).order_by(RateRow.prefix).limit(limit).offset(offset)
            )
            return total or 0, [to_rate(row) for row in rows]

    async def export_rates(self, name: str) -> str:
        """The tariff's rates as CSV, read as plain columns in partitions and written a partition
        at a time, so a 50 000-rate export never holds the event loop for long."""
        tariff = await self.get_tariff(name)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(RATE_COLUMNS)
        async with self.sessions() as session:
            result = await session.stream(
                select(
                    RateRow.prefix,
                    RateRow.price_per_minute,
                    RateRow.connect_fee,
                    RateRow.increment_min,
                    RateRow.increment_step,
                    RateRow.free_seconds,
                    RateRow.effective_from,
                    RateRow.effective_to,
                )
                .where(RateRow.tariff_id == tariff.id)
                .order_by(RateRow.prefix)
            )
            async for partition in result.partitions(2000):
                writer.writerows(
                    (
                        r[0],
                        f"{r[1]:f}",
                        f"{r[2]:f}",
                        f"{r[3]}/{r[4]}",
                        r[5],
                        _time_text(r[6]),
                        _time_text(r[7]),
                    )
                    for r in partition
                )
        return out.getvalue()

    async def import_rates(
        self, name: str, text: str, *, actor: str, source: str = "rates.csv"
    ) -> tuple[int, ChangeReport]:
        """Replace the tariff's rates with the CSV's; with any bad line nothing changes."""
        tariff = await self.get_tariff(name)
        # Parsing 50 000 lines is a few hundred ms of CPU: off the event loop, which carries SIP.
        rates = await asyncio.to_thread(parse_rates_csv, text, source)
        spec = TariffSpec(
            line=None, path="", name=name, currency=tariff.currency, currency_line=None, rates=rates
        )
        return len(rates), await self.save(spec, source=source, actor=actor)

    # ---- peers and routes

    async def list_peers(self) -> list[PeerView]:
        return await self._views(select(PeerRow).order_by(PeerRow.name), PeerView.of)

    async def get_peer(self, name: str) -> PeerView:
        query = select(PeerRow).where(PeerRow.name == name)
        return await self._view(query, PeerView.of, f"no peer named {name!r}")

    async def delete_peer(self, name: str) -> None:
        async def check(session: AsyncSession, row: PeerRow) -> None:
            routes = list(
                await session.scalars(
                    select(RouteRow.prefix)
                    .join(RouteSupplierRow, RouteSupplierRow.route_id == RouteRow.id)
                    .where(RouteSupplierRow.peer_id == row.id)
                )
            )
            if routes:
                labels = ", ".join(repr(p) if p else "(default)" for p in routes)
                raise Conflict(f"peer {name!r} is a supplier of the routes {labels}")
            history = await session.scalar(
                select(func.count())
                .select_from(CdrRow)
                .where(or_(CdrRow.customer_peer_id == row.id, CdrRow.supplier_peer_id == row.id))
            )
            if history:
                raise Conflict(f"peer {name!r} has CDRs; disable it instead (enabled: false)")

        await self._delete(
            select(PeerRow).where(PeerRow.name == name),
            f"no peer named {name!r}",
            check,
            "peer",
            name,
        )

    async def list_routes(self) -> list[RouteView]:
        query = select(RouteRow).options(selectinload(RouteRow.suppliers))
        return await self._views(query.order_by(RouteRow.prefix), RouteView.of)

    async def get_route(self, prefix: str) -> RouteView:
        query = select(RouteRow).options(selectinload(RouteRow.suppliers))
        query = query.where(RouteRow.prefix == prefix)
        return await self._view(query, RouteView.of, f"no route for prefix {prefix!r}")

    async def delete_route(self, prefix: str) -> None:
        async def check(session: AsyncSession, row: RouteRow) -> None:
            await session.execute(
                delete(RouteSupplierRow).where(RouteSupplierRow.route_id == row.id)
            )

        query = select(RouteRow).where(RouteRow.prefix == prefix)
        label = prefix or "(default)"
        await self._delete(query, f"no route for prefix {prefix!r}", check, "route", label)

    # ---- subscribers and DIDs (the registrar's tables)

    async def list_subscribers(self) -> list[SubscriberView]:
        query = select(SubscriberRow).order_by(SubscriberRow.username)
        return await self._views(query, SubscriberView.of)

    async def get_subscriber(self, username: str) -> SubscriberView:
        query = select(SubscriberRow).where(SubscriberRow.username == username)
        return await self._view(query, SubscriberView.of, f"no subscriber named {username!r}")

    async def set_subscriber_password(
        self, username: str, password: str, *, source: str, actor: str
    ) -> ChangeReport:
        """A subscriber's new password, judged by the password policy like any other (the
        reader's), everything else about the subscriber as it is."""
        current = await self.get_subscriber(username)
        data: dict[str, Any] = {
            "username": current.username,
            "account": current.account,
            "tariff": current.tariff,
            "allowed_cidrs": list(current.allowed_cidrs),
            "max_contacts": current.max_contacts,
            "max_calls": current.max_calls,
            "caller_id": current.caller_id,
            "enabled": current.enabled,
            "password": password,
        }
        spec = read_form(readers.subscriber, source, data)
        return await self.save(spec, source=source, actor=actor)

    async def delete_subscriber(self, username: str) -> None:
        async def check(session: AsyncSession, row: SubscriberRow) -> None:
            dids = list(
                await session.scalars(select(DidRow.number).where(DidRow.subscriber_id == row.id))
            )
            if dids:
                raise Conflict(f"subscriber {username!r} owns the DIDs {', '.join(dids)}")

        query = select(SubscriberRow).where(SubscriberRow.username == username)
        await self._delete(
            query, f"no subscriber named {username!r}", check, "subscriber", username
        )

    async def list_dids(self) -> list[DidView]:
        return await self._views(select(DidRow).order_by(DidRow.number), DidView.of)

    async def get_did(self, number: str) -> DidView:
        query = select(DidRow).where(DidRow.number == number)
        return await self._view(query, DidView.of, f"no DID {number!r}")

    async def delete_did(self, number: str) -> None:
        async def check(session: AsyncSession, row: DidRow) -> None:
            pass

        query = select(DidRow).where(DidRow.number == number)
        await self._delete(query, f"no DID {number!r}", check, "did", number)

    async def list_nodes(self) -> list[NodeView]:
        """The nodes of the cluster, as each registered itself (none for a single node)."""
        async with self.sessions() as session:
            rows = await session.scalars(select(NodeRow).order_by(NodeRow.name))
            return [NodeView.of(row) for row in rows]

    async def names(self) -> Names:
        """Every account, tariff, peer and subscriber name by id (for choosing one)."""
        async with self.sessions() as session:
            return await _names(session)

    # ---- the audit log of changes

    async def audit_log(
        self, where: AuditFilter, limit: int | None = 100, offset: int = 0
    ) -> list[AuditEntry]:
        """The audit log's entries, newest first (``limit`` None: all of them)."""
        async with self.sessions() as session:
            return await audit_log.query(session, where, limit, offset)

    async def export_audit_log(self, where: AuditFilter) -> str:
        """The entries as CSV."""
        return audit_log.to_csv(await self.audit_log(where, limit=None))

    # ---- settings

    async def get_settings(self) -> dict[str, str]:
        async with self.sessions() as session:
            stored = {
                r[0]: r[1] for r in await session.execute(select(SettingRow.name, SettingRow.value))
            }
        return {name: stored.get(name, s.default) for name, (s, _) in SETTINGS.items()}

    async def set_setting(self, name: str, value: Any, *, source: str, actor: str = "?") -> str:
        if name not in SETTINGS:
            raise NotFound(f"no setting named {name!r} (known: {', '.join(SETTINGS)})")
        if not isinstance(value, str):
            raise invalid(source, "value", "expected text")
        try:
            value = SETTINGS[name][1](value)
        except ValueError as exc:
            raise invalid(source, "value", str(exc)) from None
        async with self.sessions() as session, session.begin():
            if name in PEER_NAME_SETTINGS and value:
                known = set(await session.scalars(select(PeerRow.name)))
                unknown = [n for n in sorted(cap.split_names(value)) if n not in known]
                if unknown:
                    raise invalid(source, "value", f"no peer named {', '.join(unknown)}")
            await bump_config_version(session)
            row = await session.get(SettingRow, name)
            before = None if row is None else {"value": row.value}
            if row is None:
                session.add(SettingRow(name=name, value=value))
            else:
                row.value = value
            action = "create" if before is None else "update"
            change = Change(action, "setting", name, before, {"value": value})
            await audit_log.record(session, self.origin(actor, source), [change])
        self.on_change()
        return str(value)


# ---- rates as CSV

RATE_COLUMNS = tuple(RATE)  # the rate reader's fields
MAX_CSV_ISSUES = 50  # enough to fix a file by; a wholly wrong file would list every line


def _time_text(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def parse_rates_csv(text: str, source: str = "rates.csv") -> list[Rate]:
    """Every line checked; any problem raises :class:`ConfigInvalid` with line numbers (the
    header is line 1).  Pure CPU work: callers run it in a thread."""
    issues: list[Issue] = []

    def bad(line: int, path: str, message: str) -> None:
        issues.append(Issue(source, line, path, message))

    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None:
        raise ConfigInvalid([Issue(source, None, "", "the file is empty (a header line first)")])
    columns = [h.strip().lower() for h in header]
    unknown = [c for c in columns if c not in RATE_COLUMNS]
    if unknown:
        bad(1, unknown[0], f"unknown column (expected {', '.join(RATE_COLUMNS)})")
    for required in ("prefix", "price_per_minute"):
        if required not in columns:
            bad(1, required, "this column is required")
    if issues:
        raise ConfigInvalid(issues)
    index = {name: columns.index(name) for name in RATE_COLUMNS if name in columns}
    rates: list[Rate] = []
    seen: dict[tuple[str, datetime | None], int] = {}
    zero = Decimal(0)
    one = Increment(1, 1)
    for cells in reader:
        line = reader.line_num
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if len(cells) > len(columns):
            bad(line, "", f"{len(cells)} cells but {len(columns)} columns")
            continue

        values = {name: cells[i].strip() for name, i in index.items() if i < len(cells)}
        cell = values.get

        try:
            column = "prefix"
            prefix = cell("prefix", "")
            if not prefix:
                raise ValueError("required")
            f.parse_prefix(prefix)
            column = "price_per_minute"
            price = f.parse_decimal(cell(column, ""), PRICE_SCALE, minimum=zero)
            column = "connect_fee"
            text = cell(column, "")
            fee = f.parse_decimal(text, PRICE_SCALE, minimum=zero) if text else zero
            column = "increment"
            text = cell(column, "")
            increment = f.parse_increment(text) if text else one
            column = "free_seconds"
            text = cell(column, "")
            free = f.parse_integer(text) if text else 0
            column = "effective_from"
            text = cell(column, "")
            start = f.parse_datetime(text) if text else None
            column = "effective_to"
            text = cell(column, "")
            end = f.parse_datetime(text) if text else None
            rate = Rate(prefix, price, fee, increment, free, start, end)
            column = "effective_to"
            check_rate(rate)
        except (ValueError, RateError) as exc:
            bad(line, column, str(exc))
            if len(issues) >= MAX_CSV_ISSUES:
                break
            continue
        key = (prefix, start)
        first = seen.get(key)
        if first is not None:
            when = "" if start is None else f" from {start}"
            bad(line, "prefix", f"prefix {prefix!r}{when} is already rated on line {first}")
        else:
            seen[key] = line
        rates.append(rate)
    if issues:
        raise ConfigInvalid(issues[:MAX_CSV_ISSUES])
    return rates
