"""Loading the configuration the call path reads, and the version that says when to reload.

A node keeps a :class:`~smartswitch.model.config.ConfigSnapshot` in memory and polls
:func:`config_version`; when the number moves it reads a new snapshot with
:func:`read_snapshot`, in a thread of its own (a carrier's rate deck is hundreds of thousands
of rows), and swaps it in whole.  Every configuration change bumps the version in its own
transaction (:func:`bump_config_version`), so a snapshot read in one transaction is never half
of a change: on MariaDB the first read fixes the transaction's consistent view (REPEATABLE
READ), on SQLite (WAL) so does a read transaction's first read.

Rates are read as plain columns, not ORM objects, and what did not change since the previous
snapshot is taken from it rather than built again: an unchanged tariff is the previous
:class:`~smartswitch.model.config.Tariff` object itself, a changed one keeps the previous
:class:`~smartswitch.model.config.Rate` objects of its unchanged lines.  So a reload allocates
(and leaves for the garbage collector to visit) only what changed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, selectinload

from smartswitch.model.config import (
    Account,
    ConfigSnapshot,
    Did,
    Peer,
    Rate,
    RewriteRule,
    Route,
    RouteSupplier,
    Subscriber,
    SupplierRegistration,
    Tariff,
)
from smartswitch.model.increment import Increment
from smartswitch.store.schema import (
    AccountRow,
    ConfigVersionRow,
    DidRow,
    PeerRow,
    RateRow,
    RouteRow,
    SubscriberRow,
    TariffRow,
)
from smartswitch.store.values import parse_acl_entry

__all__ = [
    "bump_config_version",
    "config_version",
    "load_snapshot",
    "read_snapshot",
    "to_account",
    "to_did",
    "to_peer",
    "to_subscriber",
]


_VERSION = select(ConfigVersionRow.version).where(ConfigVersionRow.id == 1)


async def config_version(session: AsyncSession) -> int:
    """The current configuration version (0 before anything was configured)."""
    return await session.scalar(_VERSION) or 0


async def bump_config_version(session: AsyncSession) -> int:
    """Add one to the configuration version inside the caller's transaction; the new number.

    The UPDATE also takes the row lock on MariaDB, which serialises concurrent configuration
    writers: call it first in a configuration transaction to avoid deadlocks later in it.
    """
    result = await session.execute(
        update(ConfigVersionRow)
        .where(ConfigVersionRow.id == 1)
        .values(version=ConfigVersionRow.version + 1)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 1) == 0:  # the migration seeds the row; be safe anyway
        session.add(ConfigVersionRow(id=1, version=1))
        await session.flush()
    return await config_version(session)


def to_account(row: AccountRow) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        currency=row.currency,
        balance=row.balance,
        credit_limit=row.credit_limit,
        prepaid=row.prepaid,
    )


def to_peer(row: PeerRow) -> Peer:
    return Peer(
        id=row.id,
        name=row.name,
        role=row.role,
        account_id=row.account_id,
        tariff_id=row.tariff_id,
        acl=tuple(parse_acl_entry(text) for text in row.acl),
        username=row.username,
        password=row.password,
        address=row.address,
        transport=row.transport,
        max_calls=row.max_calls,
        max_cps=row.max_cps,
        caller_rewrite=tuple(RewriteRule(r["match"], r["replace"]) for r in row.caller_rewrite),
        callee_rewrite=tuple(RewriteRule(r["match"], r["replace"]) for r in row.callee_rewrite),
        profit_control=row.profit_control,
        enabled=row.enabled,
        deliver_dids=row.deliver_dids,
        register=to_supplier_registration(row),
    )


def to_supplier_registration(row: PeerRow) -> SupplierRegistration | None:
    if not (row.register_username and row.register_password and row.register_registrar):
        return None
    return SupplierRegistration(
        username=row.register_username,
        password=row.register_password,
        registrar=row.register_registrar,
        expires=row.register_expires or 3600,
    )


def to_subscriber(row: SubscriberRow) -> Subscriber:
    return Subscriber(
        id=row.id,
        username=row.username,
        account_id=row.account_id,
        tariff_id=row.tariff_id,
        realm=row.realm,
        ha1_md5=row.ha1_md5,
        ha1_sha256=row.ha1_sha256,
        allowed_cidrs=tuple(ipaddress.ip_network(text) for text in row.allowed_cidrs),
        max_contacts=row.max_contacts,
        max_calls=row.max_calls,
        caller_id=row.caller_id,
        enabled=row.enabled,
    )


def to_did(row: DidRow) -> Did:
    return Did(
        id=row.id,
        number=row.number,
        subscriber_id=row.subscriber_id,
        peer_id=row.peer_id,
        enabled=row.enabled,
    )


async def load_snapshot(session: AsyncSession) -> ConfigSnapshot:
    """:func:`read_snapshot` in an async session (on the event loop: for tools and tests; a
    node reads its configuration in a thread)."""
    return await session.run_sync(read_snapshot)


def read_snapshot(session: Session, previous: ConfigSnapshot | None = None) -> ConfigSnapshot:
    """Everything the call path needs, read in the session's current transaction.

    Disabled peers are included (``Peer.enabled`` says so): the call path decides what
    disabled means.  Rates of every period are included; the rating code picks the one in
    force.  Account balances are those in the database at load time: the starting point from
    which the node tracks its own charges.  Values equal to ``previous``'s are shared with it
    (see the module docstring).
    """
    version = session.scalar(_VERSION) or 0
    accounts = {row.id: to_account(row) for row in session.scalars(select(AccountRow))}
    tariffs = _read_tariffs(session, previous.tariffs if previous is not None else {})
    peers = {row.id: to_peer(row) for row in session.scalars(select(PeerRow))}
    routes = tuple(
        Route(
            id=row.id,
            prefix=row.prefix,
            strategy=row.strategy,
            suppliers=tuple(
                RouteSupplier(peer_id=s.peer_id, priority=s.priority, weight=s.weight)
                for s in row.suppliers
            ),
        )
        for row in session.scalars(
            select(RouteRow).options(selectinload(RouteRow.suppliers)).order_by(RouteRow.prefix)
        )
    )
    subscribers = {row.id: to_subscriber(row) for row in session.scalars(select(SubscriberRow))}
    dids = {row.number: to_did(row) for row in session.scalars(select(DidRow))}
    return ConfigSnapshot(
        version=version,
        accounts=accounts,
        peers=peers,
        tariffs=tariffs,
        routes=routes,
        subscribers=subscribers,
        dids=dids,
    )


_RateValues = tuple[str, Decimal, Decimal, Increment, int, datetime | None, datetime | None]


def _read_tariffs(session: Session, previous: dict[int, Tariff]) -> dict[int, Tariff]:
    """Every tariff with its rates (by prefix, then as stored), one query for all the rates."""
    rates: dict[int, list[Rate]] = {}
    increments: dict[tuple[int, int], Increment] = {}  # one object each (a deck has a few)
    old: Sequence[Rate] = ()
    tariff_id = None
    # Core, not the ORM: plain rows, half the time for a deck of half a million lines.
    rows = session.connection().execute(
        select(
            RateRow.tariff_id,
            RateRow.prefix,
            RateRow.price_per_minute,
            RateRow.connect_fee,
            RateRow.increment_min,
            RateRow.increment_step,
            RateRow.free_seconds,
            RateRow.effective_from,
            RateRow.effective_to,
        ).order_by(RateRow.tariff_id, RateRow.prefix, RateRow.id)
    )
    for tid, prefix, price, fee, inc_min, inc_step, free, start, end in rows:
        if tid != tariff_id:
            tariff_id = tid
            found = rates[tid] = []
            known = previous.get(tid)
            old = known.rates if known is not None else ()
        increment = increments.get((inc_min, inc_step))
        if increment is None:
            increment = increments[inc_min, inc_step] = Increment(inc_min, inc_step)
        values: _RateValues = (prefix, price, fee, increment, free, start, end)
        # The previous snapshot's rate at the same place, when it says the same: most lines
        # of a tariff survive a change (and every line of every other tariff).
        same = old[len(found)] if len(found) < len(old) else None
        if same is None or _values(same) != values:
            same = Rate(*values)
        found.append(same)
    tariffs = {}
    for row in session.connection().execute(
        select(TariffRow.id, TariffRow.name, TariffRow.currency)
    ):
        lines = rates.get(row.id, [])
        known = previous.get(row.id)
        if known is not None and _unchanged(known, row.name, row.currency, lines):
            tariffs[row.id] = known
        else:
            tariffs[row.id] = Tariff(row.id, row.name, row.currency, tuple(lines))
    return tariffs


def _values(rate: Rate) -> _RateValues:
    return (
        rate.prefix,
        rate.price_per_minute,
        rate.connect_fee,
        rate.increment,
        rate.free_seconds,
        rate.effective_from,
        rate.effective_to,
    )


def _unchanged(tariff: Tariff, name: str, currency: str, lines: list[Rate]) -> bool:
    return (
        tariff.name == name
        and tariff.currency == currency
        and len(tariff.rates) == len(lines)
        and all(a is b for a, b in zip(tariff.rates, lines, strict=True))
    )
