"""The durable outbox: what is appended survives the process, once per id, byte-exact money
and times; and the forwarder that drains it keeps what it could not deliver."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartswitch.model.cdr import CdrAttempt, CdrRecord, HangupSide
from smartswitch.model.ids import new_ulid
from smartswitch.store.forwarder import Forwarder
from smartswitch.store.outbox import Outbox, record_from_json, record_to_json

T = TypeVar("T")

START = datetime(2026, 11, 24, 21, 0, 0, 123000, tzinfo=UTC)


def record(n: int = 0, **changes: Any) -> CdrRecord:
    values: dict[str, Any] = {
        "id": new_ulid(),
        "call_id": f"call-{n}@127.0.0.2",
        "node": "node1",
        "customer_peer_id": 1,
        "customer_account_id": 1,
        "caller": "5550001",
        "callee": "15551234567",
        "caller_out": "5550001",
        "callee_out": "15551234567",
        "setup_time": START,
        "answer_time": START + timedelta(milliseconds=700),
        "end_time": START + timedelta(seconds=61, milliseconds=900),
        "duration_ms": 61200,
        "billed_seconds": 120,
        "price": Decimal("0.0200"),
        "cost": Decimal("0.0120"),
        "currency": "USD",
        "sip_code": 200,
        "sip_reason": "OK",
        "hangup_side": HangupSide.CALLEE,
        "hangup_reason": "bye",
        "supplier_peer_id": 2,
        "supplier_account_id": 2,
        "attempts": (
            CdrAttempt(1, 3, 503, "Service Unavailable", START, START + timedelta(seconds=0.1)),
            CdrAttempt(2, 2, 200, "OK", START, START + timedelta(milliseconds=700)),
        ),
    }
    values.update(changes)
    return CdrRecord(**values)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(fn(), 30)

    return asyncio.run(main())


async def appended(outbox: Outbox, *records: CdrRecord) -> list[str]:
    """Append and wait until every one is durable; the order the callbacks came in."""
    done: list[str] = []
    for r in records:
        outbox.append(r, lambda r=r: done.append(r.id))  # type: ignore[misc]
    while len(done) < len(records):
        await asyncio.sleep(0.005)
    return done


def stored_ids(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT id FROM outbox ORDER BY seq")]
    finally:
        db.close()


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_is_exact() -> None:
    original = record(
        price=Decimal("1234.5000"),
        cost=Decimal("0.0001"),
        answer_time=None,
        subscriber_id=7,
        hangup_side=HangupSide.SWITCH,
        sip_reason="Caf\u00e9 \u00fcber \U0001f4de",
    )
    back = record_from_json(record_to_json(original))
    assert back == original
    # Decimal equality ignores trailing zeros: the text must be the same too.
    assert (str(back.price), str(back.cost)) == ("1234.5000", "0.0001")
    assert back.setup_time.tzinfo is not None and back.setup_time.utcoffset() == timedelta(0)
    assert type(back.hangup_side) is HangupSide
    assert all(isinstance(a, CdrAttempt) for a in back.attempts)


def test_json_times_in_another_zone_come_back_as_the_same_instant_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    original = record(setup_time=START.astimezone(paris))
    back = record_from_json(record_to_json(original))
    assert back.setup_time == START
    assert back.setup_time.utcoffset() == timedelta(0)


_money = st.decimals(
    min_value=Decimal("-99999999.9999"),
    max_value=Decimal("99999999.9999"),
    places=4,
    allow_nan=False,
    allow_infinity=False,
)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=200, deadline=None)
@given(price=_money, cost=_money, setup=_times, answered=st.booleans(), text=st.text(max_size=40))
def test_json_round_trip_property(
    price: Decimal, cost: Decimal, setup: datetime, answered: bool, text: str
) -> None:
    original = record(
        price=price,
        cost=cost,
        setup_time=setup,
        answer_time=setup + timedelta(seconds=1) if answered else None,
        end_time=setup + timedelta(seconds=2),
        caller=text,
        hangup_reason=text,
    )
    back = record_from_json(record_to_json(original))
    assert back == original
    assert (str(back.price), str(back.cost)) == (str(original.price), str(original.cost))


def reference_json(record: CdrRecord) -> str:
    """The payload written the plain way, field by field: what the outbox's encoder, which
    works out its fields once, must write byte for byte (payloads already on disk, and the
    forwarders of other versions, read it)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, HangupSide):
            return value.value
        if isinstance(value, CdrAttempt):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    data = {f.name: plain(getattr(record, f.name)) for f in fields(record)}
    return json.dumps(data, separators=(",", ":"))


def unanswered(**changes: Any) -> CdrRecord:
    values: dict[str, Any] = {
        "answer_time": None,
        "duration_ms": 0,
        "billed_seconds": 0,
        "price": Decimal("0.0000"),
        "cost": Decimal("0.0000"),
        "supplier_peer_id": None,
        "supplier_account_id": None,
    }
    return record(**{**values, **changes})


@pytest.mark.parametrize(
    "original",
    [
        record(),
        record(attempts=(), hangup_side=HangupSide.CALLER, subscriber_id=7),
        record(
            price=Decimal("1234.5"),
            cost=Decimal("-0.0001"),
            setup_time=START.replace(microsecond=0),
        ),
        unanswered(
            hangup_side=HangupSide.SWITCH, sip_code=503, sip_reason='Caf\u00e9 "\\ \U0001f4de'
        ),
        unanswered(attempts=(), caller="", hangup_reason="cancel"),
    ],
    ids=["answered", "no-attempts", "decimal-places", "unanswered", "unanswered-no-attempts"],
)
def test_json_is_the_reference_encoding(original: CdrRecord) -> None:
    text = record_to_json(original)
    assert text == reference_json(original)
    assert record_to_json(record_from_json(text)) == text


@settings(max_examples=200, deadline=None)
@given(
    price=_money,
    cost=_money,
    setup=_times,
    answered=st.booleans(),
    attempts=st.integers(min_value=0, max_value=3),
    side=st.sampled_from(HangupSide),
    text=st.text(max_size=40),
    subscriber=st.none() | st.integers(min_value=1, max_value=2**31),
)
def test_json_is_the_reference_encoding_property(
    price: Decimal,
    cost: Decimal,
    setup: datetime,
    answered: bool,
    attempts: int,
    side: HangupSide,
    text: str,
    subscriber: int | None,
) -> None:
    tried = tuple(
        CdrAttempt(n, 2, 200 if n == attempts and answered else 503, text, setup, setup)
        for n in range(1, attempts + 1)
    )
    if answered:
        original = record(
            price=price,
            cost=cost,
            setup_time=setup,
            answer_time=setup + timedelta(microseconds=1500),
            end_time=setup + timedelta(seconds=2),
            hangup_side=side,
            sip_reason=text,
            attempts=tried,
            subscriber_id=subscriber,
        )
    else:
        original = unanswered(
            price=price,
            setup_time=setup,
            end_time=setup + timedelta(seconds=2),
            hangup_side=side,
            sip_reason=text,
            attempts=tried,
            subscriber_id=subscriber,
        )
    text_json = record_to_json(original)
    assert text_json == reference_json(original)
    back = record_from_json(text_json)
    assert back == original
    assert record_to_json(back) == text_json


# --------------------------------------------------------------------------- durability


def test_append_is_durable_before_the_callback_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(5)]

    async def first() -> None:
        outbox = Outbox(path)
        await outbox.open()
        done = await appended(outbox, *records)
        assert done == [r.id for r in records]
        # on disk when the callback ran: another connection sees it (WAL, committed)
        assert stored_ids(path) == [r.id for r in records]
        assert outbox.depth == 5
        await outbox.close()

    run(first)

    async def second() -> None:
        outbox = Outbox(path)
        await outbox.open()
        assert outbox.depth == 5
        batch = await outbox.read_batch(100)
        assert [r for _, r in batch] == records
        await outbox.delete_through([seq for seq, _ in batch[:2]])
        assert outbox.depth == 3
        await outbox.close()

    run(second)

    async def third() -> None:
        outbox = Outbox(path)
        await outbox.open()
        assert outbox.depth == 3
        assert [r for _, r in await outbox.read_batch(100)] == records[2:]
        await outbox.close()

    run(third)


def test_a_killed_process_leaves_every_acknowledged_record(tmp_path: Path) -> None:
    """What the callback acknowledged is in the file even if close() never runs."""
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(50)]

    async def crash() -> None:
        outbox = Outbox(path)
        await outbox.open()
        await appended(outbox, *records)
        # no close(): the connection is simply abandoned, as by SIGKILL

    run(crash)
    assert stored_ids(path) == [r.id for r in records]


def test_the_same_id_is_kept_once_and_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    one = record(1)
    other = record(2)

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        await appended(outbox, one, one, other)
        await appended(outbox, one)
        assert stored_ids(path) == [one.id, other.id]
        assert outbox.depth == 2
        batch = await outbox.read_batch(10)
        await outbox.delete_through([seq for seq, _ in batch])
        assert outbox.depth == 0
        await outbox.close()

    run(main)


def test_group_commit_keeps_order_and_calls_every_callback(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(2000)]

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        done = await appended(outbox, *records)
        assert sorted(done) == sorted(r.id for r in records)
        assert outbox.depth == 2000
        got = await outbox.read_batch(5000)
        assert [r.id for _, r in got] == [r.id for r in records]
        await outbox.close()

    run(main)


def test_the_outbox_thread_makes_a_few_statements_per_operation_whatever_its_size(
    tmp_path: Path,
) -> None:
    # The outbox's thread gives up the GIL at each SQLite step and waits up to the switch
    # interval to take it back while the event loop runs: a statement per row stretched a
    # commit of 54 records to 70 ms on a busy node and held the 200 to every BYE past sipp's
    # retransmission. Counted here as SQLite runs statements (its trace callback).
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(1000)]

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        statements: list[str] = []
        assert outbox._conn is not None
        outbox._conn.set_trace_callback(statements.append)
        await appended(outbox, *records)
        commits = statements.count("COMMIT")
        assert len(statements) <= commits * (3 + len(records) // 400), statements[:5]
        for operation in (
            lambda: outbox.read_batch(5000),
            lambda: outbox.delivered_ids(),
        ):
            statements.clear()
            await operation()
            assert len(statements) == 1, statements[:5]
        batch = await outbox.read_batch(5000)
        assert [r.id for _, r in batch] == [r.id for r in records]
        seqs = [seq for seq, _ in batch]
        statements.clear()
        await outbox.mark_delivered(seqs[:600], epoch=1)
        assert len(statements) == 3 and outbox.unconfirmed == 600
        statements.clear()
        assert await outbox.delivered_ids() == [r.id for r in records[:600]]
        assert await outbox.confirm([r.id for r in records[:700]]) == 700
        assert (outbox.depth, outbox.unconfirmed) == (300, 0)
        statements.clear()
        await outbox.delete_through(seqs[700:])
        assert len(statements) == 3 and outbox.depth == 0
        assert stored_ids(path) == []
        await outbox.close()

    run(main)


def test_drain_appends_waits_for_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        for n in range(20):
            outbox.append(record(n))
        await outbox.drain_appends()
        assert len(stored_ids(path)) == 20
        await outbox.close()

    run(main)


def test_a_commit_window_gathers_appends_into_one_commit(tmp_path: Path) -> None:
    # Records appended within the window share one commit: each is durable before its
    # callback runs, and none before the window is over.
    path = tmp_path / "outbox.db"

    async def main() -> None:
        outbox = Outbox(path, commit_window=0.2)
        await outbox.open()
        loop = asyncio.get_running_loop()
        durable: list[tuple[int, float, int]] = []
        started = loop.time()

        def seen(n: int) -> Callable[[], None]:
            return lambda: durable.append((n, loop.time() - started, len(stored_ids(path))))

        for n in range(5):
            outbox.append(record(n), seen(n))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert durable == [] and stored_ids(path) == []  # still inside the window
        deadline = loop.time() + 5
        while len(durable) < 5 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert [n for n, _, _ in durable] == [0, 1, 2, 3, 4]
        assert all(seen == 5 and at >= 0.2 for _, at, seen in durable), durable
        await outbox.close()

    run(main)


def test_drain_and_close_do_not_wait_for_the_commit_window(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"

    async def main() -> None:
        outbox = Outbox(path, commit_window=0.3)
        await outbox.open()
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        outbox.append(record(1))
        started = loop.time()
        await outbox.drain_appends()
        assert len(stored_ids(path)) == 1 and loop.time() - started < 0.25
        outbox.append(record(2))
        await outbox.close()
        assert len(stored_ids(path)) == 2
        # The window's timer was cancelled: nothing is submitted to the closed executor.
        await asyncio.sleep(0.5)
        assert errors == []

    run(main)


# --------------------------------------------------------------------------- forwarder


class Destination:
    """A delivery function that fails while ``failing`` and keeps what it was given."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.calls = 0
        self.delivered: dict[str, CdrRecord] = {}

    async def __call__(self, batch: Sequence[CdrRecord]) -> int:
        self.calls += 1
        if self.failing:
            raise ConnectionError("primary down")
        new = [r for r in batch if r.id not in self.delivered]
        self.delivered.update((r.id, r) for r in batch)
        return len(new)


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_forwarder_delivers_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(1200)]

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        destination = Destination()
        notified: list[int] = []
        forwarder = Forwarder(
            outbox, destination, batch_size=500, on_delivered=lambda: notified.append(1)
        )
        forwarder.start()
        await appended(outbox, *records)
        await _until(lambda: outbox.depth == 0)
        assert set(destination.delivered) == {r.id for r in records}
        assert destination.delivered[records[7].id] == records[7]
        assert stored_ids(path) == []
        assert forwarder.delivered == 1200 and forwarder.last_error is None
        assert notified
        await forwarder.close()
        await outbox.close()

    run(main)


def test_forwarder_retries_and_the_outbox_keeps_records_while_delivery_fails(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(30)]

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        destination = Destination(failing=True)
        forwarder = Forwarder(outbox, destination, retry_delay=0.01, max_retry_delay=0.05)
        forwarder.start()
        await appended(outbox, *records)
        await _until(lambda: destination.calls >= 3)
        assert forwarder.last_error == "primary down"
        assert outbox.depth == 30
        assert stored_ids(path) == [r.id for r in records]
        assert not await forwarder.drain(timeout=0.1)
        destination.failing = False  # the primary is back
        await _until(lambda: outbox.depth == 0)
        assert forwarder.last_error is None
        assert set(destination.delivered) == {r.id for r in records}
        assert stored_ids(path) == []
        await forwarder.close()
        await outbox.close()

    run(main)


def test_a_restarted_forwarder_delivers_what_an_earlier_run_left(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(10)]

    async def before() -> None:
        outbox = Outbox(path)
        await outbox.open()
        await appended(outbox, *records)
        await outbox.close()

    run(before)
    destination = Destination()

    async def after() -> None:
        outbox = Outbox(path)
        await outbox.open()
        forwarder = Forwarder(outbox, destination)
        forwarder.start()
        assert await forwarder.drain(timeout=10)
        await forwarder.close()
        await outbox.close()

    run(after)
    assert set(destination.delivered) == {r.id for r in records}


def test_forwarder_is_woken_by_a_record_made_durable_during_its_empty_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record made durable while the forwarder reads an empty outbox, the race made
    certain: the read is slowed down, a record is appended meanwhile (its commit queues
    behind the read), and the event loop is busy (as with SIP traffic) until both have
    finished, so "the outbox was empty" and "a record is durable" reach the loop together.
    The record must leave at once, not at the forwarder's next idle poll (1 s later)."""
    path = tmp_path / "outbox.db"

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        reading = threading.Event()
        read = outbox._read

        def slow_read(limit: int) -> list[tuple[int, str]]:
            reading.set()
            time.sleep(0.1)
            return read(limit)

        monkeypatch.setattr(outbox, "_read", slow_read)
        destination = Destination()
        forwarder = Forwarder(outbox, destination)
        forwarder.start()
        await asyncio.get_running_loop().run_in_executor(None, reading.wait)
        started = time.monotonic()
        late = record(1)
        outbox.append(late)
        time.sleep(0.3)  # the loop is busy; the read and the commit both finish meanwhile
        await _until(lambda: late.id in destination.delivered)
        waited = time.monotonic() - started
        assert waited < 0.8, f"the record waited {waited:.2f} s for the idle poll"
        await forwarder.close()
        await outbox.close()

    run(main)


def test_forwarder_survives_a_failing_outbox_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.db"

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        read = outbox._read
        failures = [sqlite3.OperationalError("disk I/O error")] * 2

        def flaky_read(limit: int) -> list[tuple[int, str]]:
            if failures:
                raise failures.pop()
            return read(limit)

        monkeypatch.setattr(outbox, "_read", flaky_read)
        destination = Destination()
        forwarder = Forwarder(outbox, destination, retry_delay=0.01)
        forwarder.start()
        records = [record(n) for n in range(3)]
        await appended(outbox, *records)
        await _until(lambda: len(destination.delivered) == 3)
        assert not failures
        await forwarder.close()
        await outbox.close()

    run(main)


def test_an_unreadable_record_is_set_aside_and_the_others_are_delivered(tmp_path: Path) -> None:
    """One record the code cannot read back (a payload from another version, a damaged
    row) must not stop every later CDR from reaching the money database: it is moved to
    the outbox_rejected table, with why, for an operator."""
    path = tmp_path / "outbox.db"
    good = [record(n) for n in range(4)]

    async def write() -> None:
        outbox = Outbox(path)
        await outbox.open()
        await appended(outbox, *good[:2])
        await outbox.close()

    run(write)
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO outbox (id, payload) VALUES ('broken', '{\"id\": \"broken\"}')")
    db.close()

    async def deliver() -> None:
        outbox = Outbox(path)
        await outbox.open()
        assert outbox.depth == 3
        destination = Destination()
        forwarder = Forwarder(outbox, destination)
        forwarder.start()
        await appended(outbox, *good[2:])
        await _until(lambda: len(destination.delivered) == 4)
        await _until(lambda: outbox.depth == 0)
        assert set(destination.delivered) == {r.id for r in good}
        await forwarder.close()
        await outbox.close()

    run(deliver)
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
        rejected = db.execute("SELECT id, payload, error FROM outbox_rejected").fetchall()
    finally:
        db.close()
    assert [(r[0], r[1]) for r in rejected] == [("broken", '{"id": "broken"}')]
    assert rejected[0][2]


@pytest.mark.parametrize("failures", [1, 3])
def test_forwarder_redelivery_after_a_failure_is_harmless(tmp_path: Path, failures: int) -> None:
    """Delivered but the acknowledgement lost: the batch comes again, and an idempotent
    destination (apply_cdrs) applies it once."""
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(5)]
    attempts: list[list[str]] = []
    applied: dict[str, CdrRecord] = {}

    async def deliver(batch: Sequence[CdrRecord]) -> int:
        attempts.append([r.id for r in batch])
        new = [r for r in batch if r.id not in applied]
        applied.update((r.id, r) for r in batch)
        if len(attempts) <= failures:
            raise TimeoutError("commit acknowledgement lost")
        return len(new)

    async def main() -> None:
        outbox = Outbox(path)
        await outbox.open()
        forwarder = Forwarder(outbox, deliver, retry_delay=0.01)
        forwarder.start()
        await appended(outbox, *records)
        await _until(lambda: outbox.depth == 0)
        await forwarder.close()
        await outbox.close()

    run(main)
    assert len(attempts) == failures + 1
    assert set(applied) == {r.id for r in records}


# ------------------------------------------------- delivered, confirmed, re-sent on a new epoch


class Cluster:
    """Two primaries in turn and this node's own replica, as the forwarder sees them: what
    a primary committed reaches the replica only when ``replicate()`` says so, and a primary
    that dies takes what it had not replicated with it."""

    def __init__(self) -> None:
        self.primaries = [Destination(), Destination()]
        self.current = 0
        self.epoch = 1
        self.replica: set[str] = set()

    async def deliver(self, batch: Sequence[CdrRecord]) -> int:
        return await self.primaries[self.current](batch)

    def replicate(self) -> None:
        self.replica |= set(self.primaries[self.current].delivered)

    async def confirm(self, ids: Sequence[str]) -> list[str]:
        return [i for i in ids if i in self.replica]

    def fail_over(self) -> None:
        self.current, self.epoch = 1, 2

    async def forwarding(self, path: Path) -> tuple[Outbox, Forwarder]:
        """An outbox at ``path`` and its forwarder, running, confirming against the replica."""
        outbox = Outbox(path)
        await outbox.open()
        forwarder = Forwarder(
            outbox,
            self.deliver,
            confirm=self.confirm,
            epoch=lambda: self.epoch,
            confirm_interval=0.02,
        )
        forwarder.start()
        return outbox, forwarder


def test_delivered_records_stay_until_seen_in_the_nodes_own_database(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    records = [record(n) for n in range(20)]

    async def main() -> None:
        cluster = Cluster()
        outbox, forwarder = await cluster.forwarding(path)
        await appended(outbox, *records)
        await _until(lambda: outbox.depth == 0 and outbox.unconfirmed == 20)
        assert set(cluster.primaries[0].delivered) == {r.id for r in records}
        assert len(stored_ids(path)) == 20  # delivered is not done
        cluster.replicate()
        await _until(lambda: outbox.unconfirmed == 0)
        assert stored_ids(path) == []
        await forwarder.close()
        await outbox.close()

    run(main)


def test_a_new_epoch_resends_what_the_dead_primary_never_replicated(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    early = [record(n) for n in range(5)]
    late = [record(n) for n in range(5, 12)]

    async def main() -> None:
        cluster = Cluster()
        outbox, forwarder = await cluster.forwarding(path)
        await appended(outbox, *early)
        await _until(lambda: outbox.unconfirmed == 5)
        cluster.replicate()  # the early ones reached this node's replica...
        await _until(lambda: outbox.unconfirmed == 0)
        await appended(outbox, *late)  # ...the late ones were committed, then the primary died
        await _until(lambda: outbox.depth == 0 and outbox.unconfirmed == 7)
        assert set(cluster.primaries[0].delivered) == {r.id for r in early + late}
        await asyncio.sleep(0.1)
        assert outbox.unconfirmed == 7  # still not seen: kept
        cluster.fail_over()
        await _until(lambda: set(cluster.primaries[1].delivered) == {r.id for r in late})
        assert forwarder.requeued == 7
        cluster.replicate()
        await _until(lambda: outbox.unconfirmed == 0 and outbox.depth == 0)
        assert stored_ids(path) == []
        assert not set(cluster.primaries[1].delivered) & {r.id for r in early}
        await forwarder.close()
        await outbox.close()

    run(main)


def test_unconfirmed_records_survive_a_restart_and_an_old_file_gains_the_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    conn = sqlite3.connect(path)  # an outbox file of the previous layout, one record left
    conn.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " payload TEXT NOT NULL)"
    )
    old = record(0)
    conn.execute("INSERT INTO outbox (id, payload) VALUES (?, ?)", (old.id, record_to_json(old)))
    conn.commit()
    conn.close()
    records = [record(n) for n in range(1, 4)]

    async def first_run() -> None:
        outbox = Outbox(path)
        await outbox.open()
        assert (outbox.depth, outbox.unconfirmed) == (1, 0)
        await appended(outbox, *records)
        batch = await outbox.read_batch(10)
        assert [r.id for _, r in batch] == [old.id, *(r.id for r in records)]
        await outbox.mark_delivered([seq for seq, _ in batch[:3]], epoch=4)
        await outbox.mark_delivered([batch[0][0]], epoch=9)  # already delivered: unchanged
        assert (outbox.depth, outbox.unconfirmed) == (1, 3)
        await outbox.close()

    async def second_run() -> None:
        outbox = Outbox(path)
        await outbox.open()
        assert (outbox.depth, outbox.unconfirmed) == (1, 3)
        delivered = await outbox.read_delivered(10)
        assert [r.id for _, r in delivered] == [old.id, records[0].id, records[1].id]
        assert await outbox.delivered_ids() == [old.id, records[0].id, records[1].id]
        # Seen in the node's database: done, whatever its state (the pending one too).
        assert await outbox.confirm([records[0].id, records[2].id, "unknown"]) == 2
        assert (outbox.depth, outbox.unconfirmed) == (0, 2)
        assert await outbox.requeue_before(4) == 0  # delivered in epoch 4: not older
        assert await outbox.requeue_before(5) == 2
        assert (outbox.depth, outbox.unconfirmed) == (2, 0)
        assert [r.id for _, r in await outbox.read_batch(10)] == [old.id, records[1].id]
        await outbox.close()

    run(first_run)
    run(second_run)


def test_an_online_backup_of_the_outbox_restores_its_pending_records(tmp_path: Path) -> None:
    """docs/operations.md: ``sqlite3 DATA_DIR/outbox.db ".backup FILE"`` while the node runs,
    restored by copying FILE to outbox.db while it is stopped."""
    import shutil
    import subprocess

    if shutil.which("sqlite3") is None:
        pytest.skip("sqlite3 (the command) is not installed")
    records = [record(n) for n in range(3)]

    async def main() -> list[CdrRecord]:
        outbox = Outbox(tmp_path / "outbox.db")
        await outbox.open()
        try:
            await appended(outbox, *records)
            subprocess.run(
                ["sqlite3", str(tmp_path / "outbox.db"), f".backup {tmp_path / 'backup.db'}"],
                check=True,
                timeout=30,
            )
        finally:
            await outbox.close()
        restored = tmp_path / "restored"
        restored.mkdir()
        shutil.copy(tmp_path / "backup.db", restored / "outbox.db")
        again = Outbox(restored / "outbox.db")
        await again.open()
        try:
            assert again.depth == len(records)
            return [r for _, r in await again.read_batch(10)]
        finally:
            await again.close()

    assert run(main) == records


def test_a_lingering_forwarder_gathers_steady_traffic_into_few_batches(tmp_path: Path) -> None:
    """Records arriving one by one (a call ending every few ms): without a linger nearly
    every record is a delivery of its own; with one they gather. The first record after a
    quiet spell still leaves at once."""

    async def deliveries(linger: float) -> tuple[int, float]:
        outbox = Outbox(tmp_path / f"outbox-{linger}.db")
        await outbox.open()
        destination = Destination()
        forwarder = Forwarder(outbox, destination, linger=linger)
        forwarder.start()
        first = record(0)
        started = time.monotonic()
        outbox.append(first)
        await _until(lambda: first.id in destination.delivered)
        first_wait = time.monotonic() - started
        records = [record(n) for n in range(1, 121)]
        for r in records:
            outbox.append(r)
            await asyncio.sleep(0.005)
        await _until(lambda: all(r.id in destination.delivered for r in records))
        await forwarder.close()
        await outbox.close()
        return destination.calls, first_wait

    eager, _ = run(lambda: deliveries(0.0))
    gathered, first_wait = run(lambda: deliveries(0.25))
    assert eager > 30, eager
    assert gathered <= 8, gathered
    assert first_wait < 0.2, first_wait
