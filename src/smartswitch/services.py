"""The store side of a billing node: schema upgrade, in-memory views kept fresh, CDR writing.

Nothing here runs on the call path: configuration is polled in the background and swapped in
whole when its version changes; CDRs are written in batches; balances are re-read from the
database in the background so top-ups count, and in one step with each CDR batch so that no
authorisation counts a charge twice or not at all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from smartswitch.billing.accounting import Accounting
from smartswitch.config import NodeConfig
from smartswitch.routing.policy import BillingPolicy
from smartswitch.routing.views import ConfigViews
from smartswitch.sip.digest import DigestAuthenticator
from smartswitch.store.cdr_writer import CdrRecord, CdrWriter, apply_cdrs
from smartswitch.store.database import create_engine, database_url, session_factory
from smartswitch.store.migrate import upgrade_async
from smartswitch.store.schema import AccountRow
from smartswitch.store.snapshot import config_version, load_snapshot

log = logging.getLogger("smartswitch.services")


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
        self.accounting = Accounting()
        self.wall_offset = wall_offset
        self.writer = CdrWriter(deliver=self._deliver)
        self.policy: BillingPolicy | None = None
        self._lock = asyncio.Lock()  # CDR batches and balance refreshes, one at a time
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> BillingPolicy:
        await upgrade_async(self.url)
        async with self.sessions() as session:
            snapshot = await load_snapshot(session)
        views = ConfigViews.build(snapshot)
        self.accounting.load(snapshot.accounts)
        self.policy = BillingPolicy(
            views,
            self.accounting,
            self.writer,
            DigestAuthenticator(self.config.sip_realm, node_secret(self.config.data_dir)),
            max_call_duration=self.config.max_call_duration,
            node_name=self.config.node_id,
            wall_offset=self.wall_offset,
        )
        self.writer.start()
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="config-refresh"))
        log.info(
            "configuration version %s: %d peers, %d tariffs, %d routes",
            snapshot.version,
            len(snapshot.peers),
            len(snapshot.tariffs),
            len(snapshot.routes),
        )
        return self.policy

    async def _deliver(self, batch: Sequence[CdrRecord]) -> int:
        charges: dict[int, Decimal] = collections.defaultdict(Decimal)
        for record in batch:
            charges[record.customer_account_id] += record.price
            if record.supplier_account_id is not None:
                charges[record.supplier_account_id] += record.cost
        async with self._lock:
            async with self.sessions() as session, session.begin():
                written = await apply_cdrs(session, batch)
                rows = await session.execute(
                    select(AccountRow.id, AccountRow.balance).where(
                        AccountRow.id.in_(list(charges))
                    )
                )
                balances = {row[0]: row[1] for row in rows}
            self.accounting.written(charges, balances)
        return written

    async def _refresh_loop(self) -> None:
        assert self.policy is not None
        interval = self.config.refresh_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception as exc:  # the database may be down: keep serving from memory
                log.warning("configuration refresh failed: %s", exc)

    async def refresh(self) -> None:
        """Swap in new configuration if its version moved; re-read balances."""
        assert self.policy is not None
        async with self.sessions() as session:
            version = await config_version(session)
            if version != self.policy.views.version:
                started = time.monotonic()
                snapshot = await load_snapshot(session)
                try:
                    views = ConfigViews.build(snapshot)
                except ValueError as exc:
                    log.error("configuration version %s not loaded: %s", version, exc)
                    return
                self.policy.update(views)
                log.info(
                    "configuration version %s loaded in %.0f ms",
                    version,
                    (time.monotonic() - started) * 1000,
                )
        async with self._lock, self.sessions() as session:
            rows = await session.execute(select(AccountRow.id, AccountRow.balance))
            self.accounting.set_stored({row[0]: row[1] for row in rows})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.writer.close()
        await self.engine.dispose()
