"""Configuration reloads: read and indexed in the loader's thread while the event loop keeps
running; what did not change shared with the views in use; a configuration that cannot be
indexed refused, the one in use kept."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from smartswitch.admin.provisioning import provision_text
from smartswitch.runtime.config import NodeConfig
from smartswitch.runtime.reload import ConfigLoader, ReaderError
from smartswitch.runtime.services import BillingServices
from smartswitch.store.database import create_engine, database_url
from smartswitch.store.migrate import upgrade_async

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provision.yaml"


async def _provision(url: str, text: str) -> None:
    await upgrade_async(url)
    engine = create_engine(url)
    try:
        await provision_text(engine, text)
    finally:
        await engine.dispose()


def _sql(data_dir: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Write straight into the node's SQLite file (what the writer would refuse, or would take
    long to write), then bump the configuration version as every change does."""
    db = sqlite3.connect(data_dir / "smartswitch.db")
    try:
        for sql, params in statements:
            db.execute(sql, params)
        db.execute("UPDATE config_version SET version = version + 1 WHERE id = 1")
        db.commit()
    finally:
        db.close()


def _add_rates(data_dir: Path, tariff: str, count: int) -> None:
    db = sqlite3.connect(data_dir / "smartswitch.db")
    try:
        (tariff_id,) = db.execute("SELECT id FROM tariffs WHERE name = ?", (tariff,)).fetchone()
        db.executemany(
            "INSERT INTO rates (tariff_id, prefix, price_per_minute, connect_fee, increment_min,"
            " increment_step, free_seconds) VALUES (?, ?, ?, 0, 1, 1, 0)",
            ((tariff_id, f"9{n:07d}", 1000 + n % 977) for n in range(count)),
        )
        db.commit()
    finally:
        db.close()
    _sql(data_dir)


def test_the_loop_keeps_running_while_a_large_configuration_loads(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    asyncio.run(_provision(url, EXAMPLE.read_text()))
    _add_rates(tmp_path, "buy-b", 50_000)
    loader = ConfigLoader(url)

    async def main() -> tuple[float, int, float]:
        loop = asyncio.get_running_loop()
        ticks: list[float] = []
        done = asyncio.Event()

        async def tick() -> None:
            while not done.is_set():
                ticks.append(loop.time())
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.02)
        started = loop.time()
        views = await loader.load()
        took = loop.time() - started
        done.set()
        await ticker
        assert len(views.tariffs[3]) == 50_001
        during = [t for t in ticks if t >= started]
        gaps = [b - a for a, b in itertools.pairwise(during)]
        return took, len(during), max(gaps, default=took)

    try:
        took, ticks, worst = asyncio.run(main())
    finally:
        loader.close()
    # On the loop the load would be one gap as long as the load; here the loop ticks on.
    assert ticks >= took / 0.05, f"{ticks} ticks in {took:.2f} s, worst gap {worst * 1000:.0f} ms"


def test_refresh_swaps_in_a_new_version_sharing_what_did_not_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = NodeConfig(data_dir=tmp_path, node_id="test1")
    url = database_url(tmp_path)
    asyncio.run(_provision(url, EXAMPLE.read_text()))

    async def main() -> None:
        services = BillingServices(config, lambda: time.time() - asyncio.get_running_loop().time())
        try:
            policy = await services.start()
            first = policy.views
            assert services.config_version == first.version == 1
            await services.refresh()  # nothing changed: the same views
            assert policy.views is first

            await _provision(url, EXAMPLE.read_text().replace('"0.0060"', '"0.0065"'))
            await services.refresh()
            second = policy.views
            assert second.version == 2 and services.registrar is not None
            assert services.registrar.views is second
            buy_a, buy_b = (
                next(t for t in second.snapshot.tariffs.values() if t.name == name).id
                for name in ("buy-a", "buy-b")
            )
            assert second.tariffs[buy_b] is first.tariffs[buy_b]
            assert second.tariffs[buy_a] is not first.tariffs[buy_a]

            # Two rates for one prefix from the same time: the tariff cannot be indexed, so
            # the node keeps what it runs on and says why.
            _sql(
                tmp_path,
                (
                    "INSERT INTO rates (tariff_id, prefix, price_per_minute, connect_fee,"
                    " increment_min, increment_step, free_seconds) VALUES (?, '1', 1, 0, 1, 1, 0)",
                    (buy_b,),
                ),
            )
            await services.refresh()
            assert policy.views is second and services.config_version == 2
            assert "configuration version 3 not loaded" in caplog.text
        finally:
            await services.close()

    asyncio.run(main())


def test_a_reader_that_cannot_read_says_why_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    loader = ConfigLoader(url)

    async def main() -> None:
        # No schema yet: the reader says why, and stays up for the next load.
        with pytest.raises(ReaderError, match="no such table"):
            await loader.load()
        await _provision(url, EXAMPLE.read_text())
        views = await loader.load()
        assert views.version == 1
        # The reader was killed: the next load starts a new one.
        reader = loader._reader
        assert reader is not None
        reader._process.kill()
        reader._process.wait()
        again = await loader.load(views)
        assert again.version == 1 and loader._reader is not reader

    try:
        asyncio.run(main())
    finally:
        loader.close()
