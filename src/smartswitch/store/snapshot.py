"""Loading the configuration the call path reads, and the version that says when to reload.

A node keeps a :class:`~smartswitch.model.config.ConfigSnapshot` in memory and polls
:func:`config_version`; when the number moves it calls :func:`load_snapshot` and swaps the
snapshot whole.  Every configuration change bumps the version in its own transaction
(:func:`bump_config_version`), so a snapshot read in one transaction is never half of a change:
on MariaDB the first read fixes the transaction's consistent view (REPEATABLE READ), on SQLite
the transaction holds the database lock.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from smartswitch.model.config import (
    Account,
    ConfigSnapshot,
    Did,
    NodeAccount,
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
    SettingRow,
    SubscriberRow,
    TariffRow,
)
from smartswitch.store.values import parse_acl_entry

__all__ = [
    "BIND_ADDRESS",
    "bump_config_version",
    "config_version",
    "load_snapshot",
    "to_account",
    "to_did",
    "to_peer",
    "to_rate",
    "to_subscriber",
]


# The settings row of the global signalling "bind address" (admin.operations.SETTINGS).
BIND_ADDRESS = "bind_address"


async def config_version(session: AsyncSession) -> int:
    """The current configuration version (0 before anything was configured)."""
    version = await session.scalar(select(ConfigVersionRow.version).where(ConfigVersionRow.id == 1))
    return version or 0


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


def to_rate(row: RateRow) -> Rate:
    return Rate(
        prefix=row.prefix,
        price_per_minute=row.price_per_minute,
        connect_fee=row.connect_fee,
        increment=Increment(row.increment_min, row.increment_step),
        free_seconds=row.free_seconds,
        effective_from=row.effective_from,
        effective_to=row.effective_to,
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
        nodes=frozenset(row.nodes),
    )


def to_supplier_registration(row: PeerRow) -> SupplierRegistration | None:
    """A peer's ``register`` block: its registrar, and a default account or per-node ones."""
    accounts = tuple(
        NodeAccount(node=a["node"], username=a["username"], password=a["password"])
        for a in row.register_nodes
    )
    username, password = row.register_username or "", row.register_password or ""
    if not (username and password):
        username = password = ""  # no default account: only the nodes with their own register
    if not row.register_registrar or not (username or accounts):
        return None
    return SupplierRegistration(
        username=username,
        password=password,
        registrar=row.register_registrar,
        expires=row.register_expires or 3600,
        nodes=accounts,
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
    """Everything the call path needs, read in the session's current transaction.

    Disabled peers are included (``Peer.enabled`` says so): the call path decides what
    disabled means.  Rates of every period are included; the rating code picks the one in
    force.  Account balances are those in the database at load time: the starting point from
    which the node tracks its own charges.
    """
    version = await config_version(session)
    accounts = {row.id: to_account(row) for row in await session.scalars(select(AccountRow))}
    tariffs = {
        row.id: Tariff(
            id=row.id,
            name=row.name,
            currency=row.currency,
            rates=tuple(to_rate(rate) for rate in row.rates),
        )
        for row in await session.scalars(select(TariffRow).options(selectinload(TariffRow.rates)))
    }
    peers = {row.id: to_peer(row) for row in await session.scalars(select(PeerRow))}
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
        for row in await session.scalars(
            select(RouteRow).options(selectinload(RouteRow.suppliers)).order_by(RouteRow.prefix)
        )
    )
    subscribers = {
        row.id: to_subscriber(row) for row in await session.scalars(select(SubscriberRow))
    }
    dids = {row.number: to_did(row) for row in await session.scalars(select(DidRow))}
    bind_address = await session.scalar(
        select(SettingRow.value).where(SettingRow.name == BIND_ADDRESS)
    )
    return ConfigSnapshot(
        version=version,
        accounts=accounts,
        peers=peers,
        tariffs=tariffs,
        routes=routes,
        subscribers=subscribers,
        dids=dids,
        bind_address=(bind_address or "").strip(),
    )
