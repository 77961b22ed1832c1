"""The store side of a billing node: schema upgrade, in-memory views kept fresh, the outbox.

Nothing here runs on the call path. Configuration is polled in the background; when its
version changes it is read in a reader process and indexed in a thread
(:mod:`smartswitch.runtime.reload`), then swapped in whole on the loop. Finished calls go to
the durable outbox, which the forwarder drains into the money database (the embedded database
of a single node; the primary of a cluster). Balances are re-read from the node's own database
together with the CDR ids that database already holds, so authorisation counts each charge
exactly once (see :mod:`smartswitch.billing.accounting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from smartswitch.billing.accounting import Accounting
from smartswitch.billing.reservations import ClusterLedger
from smartswitch.model.cdr import CdrRecord
from smartswitch.routing.policy import BillingPolicy
from smartswitch.routing.views import ConfigViews
from smartswitch.runtime.config import NodeConfig
from smartswitch.runtime.registrar import RegistrarService
from smartswitch.runtime.reload import ConfigLoader
from smartswitch.sip.digest import DigestAuthenticator
from smartswitch.store.cluster_state import read_cluster_state
from smartswitch.store.database import create_engine, database_url, session_factory
from smartswitch.store.forwarder import Forwarder
from smartswitch.store.ledger import apply_cdrs, existing_cdr_ids
from smartswitch.store.migrate import prepare_schema, upgrade_async
from smartswitch.store.outbox import Outbox
from smartswitch.store.schema import AccountRow, CdrRow
from smartswitch.store.snapshot import config_version

log = logging.getLogger("smartswitch.runtime.services")

_ID_CHUNK = 500
# CDRs gather for this long between deliveries under traffic (store/forwarder.py): measured
# with bench/speed.py, the billing node's CPU per call at 300 calls/s went from 2.95 ms to
# 1.5 ms when batches stopped being a record or two each.
DELIVERY_LINGER = 0.25


def node_secret(data_dir: Path) -> bytes:
    """The node's secret (digest nonces), made once and kept in the data directory."""
    path = data_dir / "node.secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


class BillingServices:
    def __init__(self, config: NodeConfig, wall_offset: Callable[[], float]) -> None:
        self.config = config
        self.url = database_url(config.data_dir, config.database_url)
        self.engine = create_engine(self.url)
        self.sessions = session_factory(self.engine)
        # Where money is kept: this node's database, unless a cluster names its primary.
        self.money_url = (
            database_url(config.data_dir, config.primary_database_url)
            if config.primary_database_url
            else self.url
        )
        self.money_engine = (
            create_engine(self.money_url) if self.money_url != self.url else self.engine
        )
        self.money_sessions = session_factory(self.money_engine)
        self.accounting = Accounting()
        # A cluster node grants against what every node holds (runtime/money.py feeds it).
        self.ledger: ClusterLedger | None = (
            ClusterLedger(config.name, self.accounting, money_share=config.money_share)
            if config.db_scheme != "single"
            else None
        )
        self.loader = ConfigLoader(self.url)
        self.wall_offset = wall_offset
        self.outbox = Outbox(
            config.data_dir / "outbox.db", commit_window=config.outbox_commit_window
        )
        # The cluster's epoch as this node last read it (runtime/primary.py keeps it): in the
        # replication scheme a delivered record stays until seen in this node's own database,
        # and is delivered again when the epoch moves on (a primary that died may have lost it).
        self.epoch = 0
        replicated = config.db_scheme == "replication"
        self.forwarder = Forwarder(
            self.outbox,
            self._deliver,
            on_delivered=self._delivered,
            confirm=self._confirm if replicated else None,
            epoch=(lambda: self.epoch) if replicated else None,
            linger=DELIVERY_LINGER,
        )
        self._old_money_engines: list[AsyncEngine] = []
        self.policy: BillingPolicy | None = None
        self.registrar: RegistrarService | None = None
        self.local_engine: AsyncEngine | None = None
        self.db_revision: str | None = None  # the schema revision of this node's database
        self._refresh_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Told of each new configuration once the policy and the registrar have it.
        self.listeners: list[Callable[[ConfigViews], None]] = []

    async def start(self) -> BillingPolicy:
        # A single node migrates its own database; a cluster's is migrated by `smartswitch db
        # upgrade` on the primary, and this release runs on the previous one's schema meanwhile.
        self.db_revision = await prepare_schema(
            self.url, migrate_existing=self.config.db_scheme == "single"
        )
        await self.outbox.open()
        views = await self.loader.load()
        snapshot = views.snapshot
        self.accounting.load(snapshot.accounts)
        # Records left in the outbox by an earlier run are charges not delivered yet.
        for _, record in await self.outbox.read_batch(10**9):
            self.accounting.charge(record.id, record.charges())
        # One authenticator for REGISTER and INVITE: one nonce replay table.
        authenticator = DigestAuthenticator(
            self.config.sip_realm,
            node_secret(self.config.data_dir),
            algorithms=self.config.digest_algorithms,
        )
        self.registrar = RegistrarService(
            self.config, authenticator, await self._node_local_sessions(), self.wall_offset
        )
        await self.registrar.start(views, asyncio.get_running_loop().time())
        self.policy = BillingPolicy(
            views,
            self.accounting,
            self.outbox,
            authenticator,
            max_call_duration=self.config.max_call_duration,
            node_name=self.config.name,
            wall_offset=self.wall_offset,
            reserve_seconds=self.config.reserve_seconds,
            location=self.registrar.location,
            guard=self.registrar.guard,
            ledger=self.ledger,
            min_grant_seconds=self.config.min_grant_seconds,
        )
        if self.config.db_scheme == "replication":
            # Stamped on the first deliveries: read before the forwarder starts, or its first
            # look at the epoch would count them as an older epoch's.
            with contextlib.suppress(Exception):  # the database may be away: 0 until read
                async with self.sessions() as session:
                    state = await read_cluster_state(session)
                self.epoch = state.epoch if state is not None else 0
        self.forwarder.start()
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="config-refresh"))
        log.info(
            "configuration version %s: %d peers, %d tariffs, %d routes; outbox %d",
            snapshot.version,
            len(snapshot.peers),
            len(snapshot.tariffs),
            len(snapshot.routes),
            self.outbox.depth,
        )
        return self.policy

    async def _node_local_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Where this node keeps what is its own (registrations): its database when it runs
        alone; in a cluster the embedded SQLite file, since a replica's database must not be
        written and a node must start while the primary is away."""
        if self.config.db_scheme == "single":
            return self.sessions
        url = database_url(self.config.data_dir)
        await upgrade_async(url)
        self.local_engine = create_engine(url)
        return session_factory(self.local_engine)

    async def _deliver(self, batch: Sequence[CdrRecord]) -> int:
        async with self.money_sessions() as session, session.begin():
            return await apply_cdrs(session, batch)

    async def _confirm(self, ids: Sequence[str]) -> set[str]:
        async with self.sessions() as session:
            return await existing_cdr_ids(session, ids)

    def use_money_url(self, url: str) -> None:
        """Deliver money to ``url`` from now on (the primary changed)."""
        if url == self.money_url:
            return
        log.warning("money is delivered to %s from now on", url.rsplit("@", 1)[-1])
        old = self.money_engine
        self.money_url = url
        self.money_engine = create_engine(url) if url != self.url else self.engine
        self.money_sessions = session_factory(self.money_engine)
        if old is not self.engine:
            self._old_money_engines.append(old)

    def _delivered(self) -> None:
        self._refresh_now.set()

    def reload_soon(self) -> None:
        """Configuration was just changed here: look at its version now, not at the next poll."""
        self._refresh_now.set()

    @property
    def config_version(self) -> int | None:
        """The version of the configuration the call path runs on (None before the start)."""
        return self.policy.views.version if self.policy is not None else None

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), self.config.refresh_interval)
            self._refresh_now.clear()
            try:
                await self.refresh()
            except Exception as exc:  # the database may be down: keep serving from memory
                log.warning("refresh from the database failed: %s", exc)

    async def refresh(self) -> None:
        """Swap in new configuration if its version moved; re-read balances."""
        assert self.policy is not None
        async with self.sessions() as session:
            version = await config_version(session)
        if version != self.policy.views.version:
            started = time.monotonic()
            try:
                views = await self.loader.load(self.policy.views)
            except ValueError as exc:
                log.error("configuration version %s not loaded: %s", version, exc)
                return
            # The swap is all the loop does: the views were read and indexed elsewhere.
            self.policy.update(views)
            if self.registrar is not None:
                self.registrar.update(views, asyncio.get_running_loop().time())
            for listener in self.listeners:
                listener(views)
            log.info(
                "configuration version %s loaded in %.0f ms",
                views.version,
                (time.monotonic() - started) * 1000,
            )
        await self.refresh_balances()

    async def refresh_balances(self) -> None:
        """Balances and the pending CDRs they include, read in one snapshot."""
        pending = list(self.accounting.pending)
        async with self.sessions() as session, session.begin():
            rows = await session.execute(select(AccountRow.id, AccountRow.balance))
            balances = {row[0]: row[1] for row in rows}
            present: list[str] = []
            for start in range(0, len(pending), _ID_CHUNK):
                chunk = pending[start : start + _ID_CHUNK]
                present.extend(await session.scalars(select(CdrRow.id).where(CdrRow.id.in_(chunk))))
        self.accounting.confirm(balances, present)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.outbox.drain_appends()
        await self.forwarder.drain(timeout=2.0)
        await self.forwarder.close()
        await self.outbox.close()
        if self.registrar is not None:
            await self.registrar.close()  # the last bindings, before the engine goes
        if self.money_engine is not self.engine:
            await self.money_engine.dispose()
        for engine in self._old_money_engines:
            await engine.dispose()
        if self.local_engine is not None:
            await self.local_engine.dispose()
        await self.engine.dispose()
        await asyncio.to_thread(self.loader.close)
