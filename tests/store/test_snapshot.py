"""The snapshot read with a blocking engine (as a node's reader process reads it), what a
reader that has the previous snapshot is sent again, and what the new snapshot shares with the
previous one: on SQLite and on MariaDB."""

from __future__ import annotations

import textwrap
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from smartswitch.admin.provisioning import provision_text
from smartswitch.model.config import ConfigSnapshot
from smartswitch.store.database import create_sync_engine, session_factory
from smartswitch.store.snapshot import assemble, load_snapshot, read_parts

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


Loaded = tuple[ConfigSnapshot, dict[int, bytes], set[int]]


def _read(url: str, previous: Loaded | None = None) -> Loaded:
    """The snapshot, its tariffs' digests, and the tariffs whose lines the reader sent."""
    known = previous[1] if previous is not None else {}
    engine = create_sync_engine(url)
    try:
        with Session(engine) as session, session.begin():
            parts, lines = read_parts(session, known)
    finally:
        engine.dispose()
    snapshot = assemble(
        parts, lambda head: lines[head.id], previous[0] if previous is not None else None, known
    )
    return snapshot, {head.id: head.digest for head in parts.tariffs}, set(lines)


def _tariff(snapshot: ConfigSnapshot, name: str) -> tuple[int, tuple[str, ...]]:
    tariff = next(t for t in snapshot.tariffs.values() if t.name == name)
    return tariff.id, tuple(r.prefix for r in tariff.rates)


def test_the_blocking_reader_reads_what_the_async_one_does(db_url: str) -> None:
    _provision(db_url, _document(DECK))

    async def load(engine: AsyncEngine) -> ConfigSnapshot:
        async with session_factory(engine)() as session:
            return await load_snapshot(session)

    snapshot, _, sent = _read(db_url)
    assert snapshot == run_with_engine(db_url, load)
    assert sent == set(snapshot.tariffs)
    buy_b = snapshot.tariffs[_tariff(snapshot, "buy-b")[0]]
    assert [(r.prefix, r.price_per_minute) for r in buy_b.rates] == [
        (p, Decimal(price)) for p, price in DECK
    ]


def test_what_did_not_change_is_neither_sent_again_nor_made_again(db_url: str) -> None:
    _provision(db_url, _document(DECK))
    first = _read(db_url)
    deck_id, _ = _tariff(first[0], "buy-b")
    retail_id, _ = _tariff(first[0], "retail")
    # One rate of another tariff changes: only that tariff is sent; the deck is the very same
    # object.
    _provision(db_url, _document(DECK, retail="0.0110"))
    second = _read(db_url, first)
    assert second[0].version == first[0].version + 1
    assert second[2] == {retail_id}
    assert second[0].tariffs[deck_id] is first[0].tariffs[deck_id]
    assert second[0].tariffs[retail_id].rates[0].price_per_minute == Decimal("0.0110")
    # One line of the deck changes: the deck is sent, a new tariff, its other lines the
    # previous objects.
    changed = [*DECK[:2], ("44", "0.020000"), *DECK[3:]]
    _provision(db_url, _document(changed, retail="0.0110"))
    third = _read(db_url, second)
    assert third[2] == {deck_id}
    old, new = second[0].tariffs[deck_id].rates, third[0].tariffs[deck_id].rates
    assert new[2].price_per_minute == Decimal("0.020000")
    assert [a is b for a, b in zip(old, new, strict=True)] == [True, True, False, True]
    # Without a previous snapshot everything is sent, and the values are equal all the same.
    fresh = _read(db_url)
    assert fresh[0] == third[0] and fresh[0].tariffs[deck_id] is not third[0].tariffs[deck_id]
    assert fresh[1] == third[1]
