"""The snapshot read with a blocking engine (as a node's loader thread reads it), and what it
shares with the previous snapshot: on SQLite and on MariaDB."""

from __future__ import annotations

import textwrap
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from smartswitch.admin.provisioning import provision_text
from smartswitch.model.config import ConfigSnapshot
from smartswitch.store.database import create_sync_engine, session_factory
from smartswitch.store.snapshot import load_snapshot, read_snapshot

from .helpers import EXAMPLE, run_with_engine

DECK = [("1", "0.004000"), ("1555", "0.003000"), ("44", "0.010000"), ("4420", "0.012000")]


def _document(deck: list[tuple[str, str]], retail: str = "0.0100") -> str:
    lines = "\n".join(
        f'      - {{prefix: "{p}", price_per_minute: "{price}", increment: "60/60"}}'
        for p, price in deck
    )
    return (
        EXAMPLE.read_text()
        .replace(
            'rates: [{prefix: "1", price_per_minute: "0.0040", increment: "60/60"}]',
            f"rates:\n{lines}",
        )
        .replace('price_per_minute: "0.0100"', f'price_per_minute: "{retail}"')
    )


def _provision(url: str, text: str) -> None:
    async def apply(engine: AsyncEngine) -> None:
        await provision_text(engine, textwrap.dedent(text))

    run_with_engine(url, apply)


def _read(url: str, previous: ConfigSnapshot | None = None) -> ConfigSnapshot:
    engine = create_sync_engine(url)
    try:
        with Session(engine) as session, session.begin():
            return read_snapshot(session, previous)
    finally:
        engine.dispose()


def _tariff(snapshot: ConfigSnapshot, name: str) -> tuple[int, tuple[str, ...]]:
    tariff = next(t for t in snapshot.tariffs.values() if t.name == name)
    return tariff.id, tuple(r.prefix for r in tariff.rates)


def test_the_blocking_reader_reads_what_the_async_one_does(db_url: str) -> None:
    _provision(db_url, _document(DECK))

    async def load(engine: AsyncEngine) -> ConfigSnapshot:
        async with session_factory(engine)() as session:
            return await load_snapshot(session)

    assert _read(db_url) == run_with_engine(db_url, load)
    snapshot = _read(db_url)
    buy_b = snapshot.tariffs[_tariff(snapshot, "buy-b")[0]]
    assert [(r.prefix, r.price_per_minute) for r in buy_b.rates] == [
        (p, Decimal(price)) for p, price in DECK
    ]


def test_what_did_not_change_is_the_previous_snapshot_s(db_url: str) -> None:
    _provision(db_url, _document(DECK))
    first = _read(db_url)
    # One rate of another tariff changes: the deck is the very same object.
    _provision(db_url, _document(DECK, retail="0.0110"))
    second = _read(db_url, first)
    assert second.version == first.version + 1
    deck_id, _ = _tariff(first, "buy-b")
    retail_id, _ = _tariff(first, "retail")
    assert second.tariffs[deck_id] is first.tariffs[deck_id]
    assert second.tariffs[retail_id] is not first.tariffs[retail_id]
    assert second.tariffs[retail_id].rates[0].price_per_minute == Decimal("0.0110")
    # One line of the deck changes: a new tariff, its other lines the previous objects.
    changed = [*DECK[:2], ("44", "0.020000"), *DECK[3:]]
    _provision(db_url, _document(changed, retail="0.0110"))
    third = _read(db_url, second)
    old, new = second.tariffs[deck_id].rates, third.tariffs[deck_id].rates
    assert new[2].price_per_minute == Decimal("0.020000")
    assert [a is b for a, b in zip(old, new, strict=True)] == [True, True, False, True]
    # Without a previous snapshot nothing is shared, and the values are equal all the same.
    fresh = _read(db_url)
    assert fresh == third and fresh.tariffs[deck_id] is not third.tariffs[deck_id]
