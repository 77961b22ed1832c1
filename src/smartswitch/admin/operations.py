"""The operations behind the web UI and the REST API, on top of :mod:`smartswitch.admin.writer`.

Writes go through :func:`~smartswitch.admin.writer.apply_change` (the provisioning writer:
same checks, same upserts, same version bump) or, for money, through the store's audited
top-up and adjustment.  Each function opens its own transaction from the sessionmaker.

Errors are types: :class:`ConfigInvalid` (a field is wrong: 422), :class:`NotFound` (404),
:class:`Conflict` (the change contradicts what exists: 409).
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from smartswitch.admin import fields as f
from smartswitch.admin.subscribers import DidSpec, SubscriberSpec
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
from smartswitch.model.config import Rate
from smartswitch.model.increment import Increment
from smartswitch.store.ledger import UnknownAccountError, adjust, topup
from smartswitch.store.schema import (
    AccountRow,
    BalanceChangeRow,
    CdrRow,
    DidRow,
    PeerRow,
    RateRow,
    RegistrationRow,
    RouteRow,
    RouteSupplierRow,
    SettingRow,
    SubscriberRow,
    TariffRow,
)
from smartswitch.store.snapshot import bump_config_version
from smartswitch.store.types import AMOUNT_SCALE, PRICE_SCALE

Sessions = async_sessionmaker[AsyncSession]
Spec = AccountSpec | TariffSpec | PeerSpec | RouteSpec | SubscriberSpec | DidSpec


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


def invalid(source: str, path: str, message: str) -> ConfigInvalid:
    return ConfigInvalid([Issue(source, None, path, message)])


# --------------------------------------------------------------------------------------------
# Configuration entities


async def save(
    sessions: Sessions,
    spec: Spec,
    *,
    source: str,
    actor: str,
    create_only: bool = False,
    realm: str = "smartswitch",
) -> ChangeReport:
    """Create or update one entity through the provisioning writer.  ``realm``: the node's
    digest realm, which a subscriber's password is hashed for."""
    change = ConfigChange(source, actor, realm=realm)
    kind = {
        AccountSpec: "accounts",
        TariffSpec: "tariffs",
        PeerSpec: "peers",
        RouteSpec: "routes",
        SubscriberSpec: "subscribers",
        DidSpec: "dids",
    }[type(spec)]
    getattr(change, kind).append(spec)
    async with sessions() as session, session.begin():
        if create_only and await _exists(session, spec):
            label = _label(spec)
            raise Conflict(f"{kind[:-1]} {label!r} exists already")
        return await apply_change(session, change)


def _label(spec: Any) -> str:
    if isinstance(spec, RouteSpec):
        return spec.prefix or "(default)"
    if isinstance(spec, SubscriberSpec):
        return str(spec.username)
    if isinstance(spec, DidSpec):
        return str(spec.number)
    return str(spec.name)


async def _exists(session: AsyncSession, spec: Any) -> bool:
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


async def list_accounts(sessions: Sessions) -> list[AccountRow]:
    async with sessions() as session:
        return list(await session.scalars(select(AccountRow).order_by(AccountRow.name)))


async def get_account(sessions: Sessions, name: str) -> AccountRow:
    async with sessions() as session:
        row = await session.scalar(select(AccountRow).where(AccountRow.name == name))
    if row is None:
        raise NotFound(f"no account named {name!r}")
    return row


async def delete_account(sessions: Sessions, name: str) -> None:
    async with sessions() as session, session.begin():
        row = await session.scalar(select(AccountRow).where(AccountRow.name == name))
        if row is None:
            raise NotFound(f"no account named {name!r}")
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
        await bump_config_version(session)
        await session.delete(row)


async def change_balance(
    sessions: Sessions,
    name: str,
    kind: str,
    data: dict[str, Any],
    *,
    actor: str,
    source: str,
) -> tuple[Decimal, str]:
    """A top-up (``kind`` "topup", amount > 0) or adjustment (signed), with the reason in the
    audit trail; returns the new balance and the change id."""
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
    async with sessions() as session, session.begin():
        try:
            result = await operation(session, name, amount, actor, note)
        except UnknownAccountError as exc:
            raise NotFound(str(exc)) from None
    return result.balance, result.change_id


async def balance_changes(
    sessions: Sessions, account_id: int, limit: int = 50, offset: int = 0
) -> list[BalanceChangeRow]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(BalanceChangeRow)
                .where(BalanceChangeRow.account_id == account_id)
                .order_by(BalanceChangeRow.created_at.desc(), BalanceChangeRow.id.desc())
                .limit(limit)
                .offset(offset)
            )
        )


@dataclass(frozen=True, slots=True)
class TariffInfo:
    row: TariffRow
    rates: int


async def list_tariffs(sessions: Sessions) -> list[TariffInfo]:
    async with sessions() as session:
        counts: dict[int, int] = {
            row[0]: row[1]
            for row in await session.execute(
                select(RateRow.tariff_id, func.count()).group_by(RateRow.tariff_id)
            )
        }
        rows = await session.scalars(select(TariffRow).order_by(TariffRow.name))
        return [TariffInfo(row, counts.get(row.id, 0)) for row in rows]


async def get_tariff(sessions: Sessions, name: str) -> TariffInfo:
    for info in await list_tariffs(sessions):
        if info.row.name == name:
            return info
    raise NotFound(f"no tariff named {name!r}")


async def delete_tariff(sessions: Sessions, name: str) -> None:
    async with sessions() as session, session.begin():
        row = await session.scalar(select(TariffRow).where(TariffRow.name == name))
        if row is None:
            raise NotFound(f"no tariff named {name!r}")
        peers = list(await session.scalars(select(PeerRow.name).where(PeerRow.tariff_id == row.id)))
        if peers:
            raise Conflict(f"tariff {name!r} is used by peers {', '.join(peers)}")
        await bump_config_version(session)
        await session.execute(delete(RateRow).where(RateRow.tariff_id == row.id))
        await session.delete(row)


async def list_rates(
    sessions: Sessions, tariff_id: int, prefix: str = "", limit: int = 100, offset: int = 0
) -> tuple[int, list[RateRow]]:
    async with sessions() as session:
        where = [RateRow.tariff_id == tariff_id]
        if prefix:
            where.append(RateRow.prefix.startswith(prefix, autoescape=True))
        total = await session.scalar(select(func.count()).select_from(RateRow).where(*where))
        rows = await session.scalars(
            select(RateRow).where(*where).order_by(RateRow.prefix).limit(limit).offset(offset)
        )
        return total or 0, list(rows)


# ---- rates as CSV

RATE_COLUMNS = (
    "prefix",
    "price_per_minute",
    "connect_fee",
    "increment",
    "free_seconds",
    "effective_from",
    "effective_to",
)
MAX_CSV_ISSUES = 50  # enough to fix a file by; a wholly wrong file would list every line


def _time_text(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


async def export_rates(sessions: Sessions, name: str) -> str:
    """The tariff's rates as CSV, read as plain columns in partitions and written a partition
    at a time, so a 50 000-rate export never holds the event loop for long."""
    info = await get_tariff(sessions, name)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RATE_COLUMNS)
    async with sessions() as session:
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
            .where(RateRow.tariff_id == info.row.id)
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


async def import_rates(
    sessions: Sessions, name: str, text: str, *, actor: str, source: str = "rates.csv"
) -> tuple[int, ChangeReport]:
    """Replace the tariff's rates with the CSV's; with any bad line nothing changes."""
    info = await get_tariff(sessions, name)
    # Parsing 50 000 lines is a few hundred ms of CPU: off the event loop, which carries SIP.
    rates = await asyncio.to_thread(parse_rates_csv, text, source)
    spec = TariffSpec(
        line=None, path="", name=name, currency=info.row.currency, currency_line=None, rates=rates
    )
    report = await save(sessions, spec, source=source, actor=actor)
    return len(rates), report


# ---- peers and routes


async def list_peers(sessions: Sessions) -> list[PeerRow]:
    async with sessions() as session:
        return list(await session.scalars(select(PeerRow).order_by(PeerRow.name)))


async def get_peer(sessions: Sessions, name: str) -> PeerRow:
    async with sessions() as session:
        row = await session.scalar(select(PeerRow).where(PeerRow.name == name))
    if row is None:
        raise NotFound(f"no peer named {name!r}")
    return row


async def delete_peer(sessions: Sessions, name: str) -> None:
    async with sessions() as session, session.begin():
        row = await session.scalar(select(PeerRow).where(PeerRow.name == name))
        if row is None:
            raise NotFound(f"no peer named {name!r}")
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
        await bump_config_version(session)
        await session.delete(row)


async def list_routes(sessions: Sessions) -> list[RouteRow]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(RouteRow).options(selectinload(RouteRow.suppliers)).order_by(RouteRow.prefix)
            )
        )


async def get_route(sessions: Sessions, prefix: str) -> RouteRow:
    async with sessions() as session:
        row = await session.scalar(
            select(RouteRow)
            .options(selectinload(RouteRow.suppliers))
            .where(RouteRow.prefix == prefix)
        )
    if row is None:
        raise NotFound(f"no route for prefix {prefix!r}")
    return row


async def delete_route(sessions: Sessions, prefix: str) -> None:
    async with sessions() as session, session.begin():
        row = await session.scalar(select(RouteRow).where(RouteRow.prefix == prefix))
        if row is None:
            raise NotFound(f"no route for prefix {prefix!r}")
        await bump_config_version(session)
        await session.execute(delete(RouteSupplierRow).where(RouteSupplierRow.route_id == row.id))
        await session.delete(row)


async def peer_names(sessions: Sessions) -> dict[int, str]:
    async with sessions() as session:
        return {row[0]: row[1] for row in await session.execute(select(PeerRow.id, PeerRow.name))}


# --------------------------------------------------------------------------------------------
# Subscribers, DIDs, registrations (the registrar's tables)


async def list_subscribers(sessions: Sessions) -> list[SubscriberRow]:
    async with sessions() as session:
        return list(await session.scalars(select(SubscriberRow).order_by(SubscriberRow.username)))


async def get_subscriber(sessions: Sessions, username: str) -> SubscriberRow:
    async with sessions() as session:
        row = await session.scalar(select(SubscriberRow).where(SubscriberRow.username == username))
    if row is None:
        raise NotFound(f"no subscriber named {username!r}")
    return row


async def delete_subscriber(sessions: Sessions, username: str) -> None:
    async with sessions() as session, session.begin():
        row = await session.scalar(select(SubscriberRow).where(SubscriberRow.username == username))
        if row is None:
            raise NotFound(f"no subscriber named {username!r}")
        dids = list(
            await session.scalars(select(DidRow.number).where(DidRow.subscriber_id == row.id))
        )
        if dids:
            raise Conflict(f"subscriber {username!r} owns the DIDs {', '.join(dids)}")
        await bump_config_version(session)
        await session.delete(row)


async def list_dids(sessions: Sessions) -> list[DidRow]:
    async with sessions() as session:
        return list(await session.scalars(select(DidRow).order_by(DidRow.number)))


async def get_did(sessions: Sessions, number: str) -> DidRow:
    async with sessions() as session:
        row = await session.scalar(select(DidRow).where(DidRow.number == number))
    if row is None:
        raise NotFound(f"no DID {number!r}")
    return row


async def delete_did(sessions: Sessions, number: str) -> None:
    async with sessions() as session, session.begin():
        row = await session.scalar(select(DidRow).where(DidRow.number == number))
        if row is None:
            raise NotFound(f"no DID {number!r}")
        await bump_config_version(session)
        await session.delete(row)


async def subscriber_names(sessions: Sessions) -> dict[int, str]:
    async with sessions() as session:
        return {
            row[0]: row[1]
            for row in await session.execute(select(SubscriberRow.id, SubscriberRow.username))
        }


async def list_registrations(sessions: Sessions, aor: str | None = None) -> list[RegistrationRow]:
    """The bindings as persisted by the nodes' registrars (each node writes its own)."""
    async with sessions() as session:
        query = select(RegistrationRow).order_by(RegistrationRow.aor, RegistrationRow.expires_at)
        if aor is not None:
            query = query.where(RegistrationRow.aor == aor)
        return list(await session.scalars(query))


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    label: str
    help: str
    default: str = ""


def _bind_address(text: str) -> str:
    text = text.strip()
    if text:
        import ipaddress

        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"an IP address (the shared IP) or empty, got {text!r}") from None
    return text


SETTINGS: dict[str, tuple[Setting, Any]] = {
    "bind_address": (
        Setting(
            "bind_address",
            "Signalling bind address",
            "Empty: each node originates calls from its own dedicated IP (fail-over and load "
            "balancing). The shared IP: calls leave from the shared IP (fail-over only).",
        ),
        _bind_address,
    ),
}


async def get_settings(sessions: Sessions) -> dict[str, str]:
    async with sessions() as session:
        stored = {
            r[0]: r[1] for r in await session.execute(select(SettingRow.name, SettingRow.value))
        }
    return {name: stored.get(name, s.default) for name, (s, _) in SETTINGS.items()}


async def set_setting(sessions: Sessions, name: str, value: Any, *, source: str) -> str:
    if name not in SETTINGS:
        raise NotFound(f"no setting named {name!r} (known: {', '.join(SETTINGS)})")
    if not isinstance(value, str):
        raise invalid(source, "value", "expected text")
    try:
        value = SETTINGS[name][1](value)
    except ValueError as exc:
        raise invalid(source, "value", str(exc)) from None
    async with sessions() as session, session.begin():
        await bump_config_version(session)
        row = await session.get(SettingRow, name)
        if row is None:
            session.add(SettingRow(name=name, value=value))
        else:
            row.value = value
    return str(value)
