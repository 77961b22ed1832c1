"""Loading the configuration the call path reads, and the version that says when to reload.

A node keeps a :class:`~smartswitch.model.config.ConfigSnapshot` in memory and polls
:func:`config_version`; when the number moves it reads a new snapshot and swaps it in whole.
Every configuration change bumps the version in its own transaction
(:func:`bump_config_version`), so a snapshot read in one transaction is never half of a change:
on MariaDB the first read fixes the transaction's consistent view (REPEATABLE READ), on SQLite
(WAL) so does a read transaction's first read.

A carrier's rate deck is hundreds of thousands of rows, so reading is split in two for a node
(:mod:`smartswitch.runtime.reload`): :func:`read_parts` runs in a process of its own and
gives the snapshot without the rates of the tariffs the node already has (each tariff carries
a digest of its rates as stored); :func:`assemble` makes the snapshot where it is used, taking
an unchanged tariff as the previous :class:`~smartswitch.model.config.Tariff` object itself
and keeping the previous :class:`~smartswitch.model.config.Rate` objects of a changed
tariff's unchanged lines. So a reload sends, allocates (and leaves for the garbage collector
to visit) only what changed. :func:`read_snapshot` does both at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, selectinload

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
from smartswitch.model.media import DIRECT, MediaMode, MediaSettings
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
    "RateLine",
    "SnapshotParts",
    "TariffHead",
    "assemble",
    "bump_config_version",
    "config_version",
    "load_snapshot",
    "read_parts",
    "read_snapshot",
    "to_account",
    "to_did",
    "to_peer",
    "to_rate",
    "to_subscriber",
]


# The settings row of the global signalling "bind address" (admin.operations.SETTINGS).
BIND_ADDRESS = "bind_address"
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
        reserve_seconds=row.reserve_seconds,
        record=row.media_record,
    )


def to_rate(row: RateRow) -> Rate:
    """One stored rate (the admin pages list a tariff's rates; reloads read plain columns)."""
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
        tls_fingerprint=row.tls_fingerprint,
        media=to_media(row),
    )


def to_media(row: PeerRow) -> MediaSettings:
    if row.media_mode == MediaMode.DIRECT and not row.media_codecs and not row.media_record:
        return DIRECT  # most peers: one shared value
    return MediaSettings(
        mode=MediaMode(row.media_mode),
        codecs=tuple(row.media_codecs),
        record=row.media_record,
        fallback=row.media_fallback,
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
    """:func:`read_snapshot` in an async session (on the event loop: for tools and tests; a
    node reads its configuration in a process of its own)."""
    return await session.run_sync(read_snapshot)


def read_snapshot(session: Session) -> ConfigSnapshot:
    """Everything the call path needs, read in the session's current transaction.

    Disabled peers are included (``Peer.enabled`` says so): the call path decides what
    disabled means.  Rates of every period are included; the rating code picks the one in
    force.  Account balances are those in the database at load time: the starting point from
    which the node tracks its own charges.
    """
    parts, lines = read_parts(session)
    return assemble(parts, lambda head: lines.get(head.id, ()))


#: One rate as stored: prefix, price per minute, connect fee, increment minimum and step, free
#: seconds, effective from and to (a :class:`~smartswitch.model.config.Rate`'s fields).
RateLine = tuple[str, Decimal, Decimal, int, int, int, datetime | None, datetime | None]


@dataclass(frozen=True, slots=True)
class TariffHead:
    """A tariff without its rates, and a digest of the tariff as stored (same digest, same
    name, currency and rates): a reader that has it already need not be sent it again."""

    id: int
    name: str
    currency: str
    digest: bytes
    lines: int


@dataclass(frozen=True, slots=True)
class SnapshotParts:
    """A snapshot as :func:`read_parts` reads it: the tariffs' rates apart."""

    version: int
    accounts: dict[int, Account]
    peers: dict[int, Peer]
    routes: tuple[Route, ...]
    subscribers: dict[int, Subscriber]
    dids: dict[str, Did]
    tariffs: tuple[TariffHead, ...]
    bind_address: str = ""  # the global signalling setting (settings table)
    settings: dict[str, str] | None = None  # every row of the settings table


def read_parts(
    session: Session, known: Mapping[int, bytes] | None = None
) -> tuple[SnapshotParts, dict[int, list[RateLine]]]:
    """The snapshot in the session's current transaction, and the rate lines of every tariff
    whose digest is not the one ``known`` gives for it (by tariff id).

    Rates come from one Core query (plain rows, not ORM objects) in the order the tariff
    lists them: by prefix, then as stored."""
    known = known or {}
    version = session.scalar(_VERSION) or 0
    accounts = {row.id: to_account(row) for row in session.scalars(select(AccountRow))}
    lines: dict[int, list[RateLine]] = {}
    digests: dict[int, Any] = {}
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
    tariff_id, found, digest = None, [], hashlib.blake2b(digest_size=16)
    for tid, *values in rows:  # a tariff's digest: its rates, then its name and currency
        if tid != tariff_id:
            tariff_id, found = tid, lines.setdefault(tid, [])
            digest = digests[tid] = hashlib.blake2b(digest_size=16)
        line: RateLine = tuple(values)  # type: ignore[assignment]
        digest.update(repr(line).encode())
        found.append(line)
    heads = []
    for row in session.connection().execute(
        select(TariffRow.id, TariffRow.name, TariffRow.currency).order_by(TariffRow.id)
    ):
        digest = digests.pop(row.id, None) or hashlib.blake2b(digest_size=16)
        digest.update(repr((row.name, row.currency)).encode())
        head = TariffHead(
            row.id, row.name, row.currency, digest.digest(), len(lines.get(row.id, ()))
        )
        if known.get(head.id) == head.digest:
            lines.pop(head.id, None)  # the reader has them
        heads.append(head)
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
    settings = {
        str(name): str(value)
        for name, value in session.connection().execute(select(SettingRow.name, SettingRow.value))
    }
    bind_address = settings.get(BIND_ADDRESS)
    parts = SnapshotParts(
        version,
        accounts,
        peers,
        routes,
        subscribers,
        dids,
        tuple(heads),
        (bind_address or "").strip(),
        settings,
    )
    return parts, lines


def assemble(
    parts: SnapshotParts,
    lines: Callable[[TariffHead], Iterable[RateLine]],
    previous: ConfigSnapshot | None = None,
    known: Mapping[int, bytes] | None = None,
) -> ConfigSnapshot:
    """The snapshot from its parts. A tariff whose digest is the one ``known`` gives for it is
    ``previous``'s :class:`~smartswitch.model.config.Tariff` object itself (``known`` holds the
    digests of ``previous``'s tariffs); the others are built from ``lines(head)``, keeping
    ``previous``'s Rate objects of their unchanged lines."""
    known = known or {}
    before = previous.tariffs if previous is not None else {}
    increments: dict[tuple[int, int], Increment] = {}  # one object each (a deck has a few)
    tariffs = {}
    for head in parts.tariffs:
        old = before.get(head.id)
        if old is not None and known.get(head.id) == head.digest:
            tariffs[head.id] = old
            continue
        old_rates = old.rates if old is not None else ()
        rates: list[Rate] = []
        for prefix, price, fee, inc_min, inc_step, free, start, end in lines(head):
            increment = increments.get((inc_min, inc_step))
            if increment is None:
                increment = increments[inc_min, inc_step] = Increment(inc_min, inc_step)
            values = (prefix, price, fee, increment, free, start, end)
            # The previous rate at the same place, when it says the same: most lines of a
            # tariff survive a change to it.
            same = old_rates[len(rates)] if len(rates) < len(old_rates) else None
            if same is None or _values(same) != values:
                same = Rate(*values)
            rates.append(same)
        tariffs[head.id] = Tariff(head.id, head.name, head.currency, tuple(rates))
    return ConfigSnapshot(
        version=parts.version,
        accounts=parts.accounts,
        peers=parts.peers,
        tariffs=tariffs,
        routes=parts.routes,
        subscribers=parts.subscribers,
        dids=parts.dids,
        bind_address=parts.bind_address,
        settings=dict(parts.settings or {}),
    )


def _values(rate: Rate) -> tuple[object, ...]:
    return (
        rate.prefix,
        rate.price_per_minute,
        rate.connect_fee,
        rate.increment,
        rate.free_seconds,
        rate.effective_from,
        rate.effective_to,
    )
