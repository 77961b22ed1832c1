"""Rating of calls, maximum call duration, and rate selection by prefix and date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartswitch.billing.rating import (
    UNLIMITED_SECONDS,
    Charge,
    RateError,
    TariffIndex,
    billed_seconds,
    check_rate,
    in_force,
    max_call_seconds,
    rate_call,
    select_rate,
)
from smartswitch.model.config import Rate, Tariff
from smartswitch.model.increment import Increment
from smartswitch.model.prefix import PrefixTable

D = Decimal


def make_rate(
    price: str = "0.0100",
    fee: str = "0",
    increment: str = "1/1",
    free: int = 0,
    prefix: str = "44",
    start: datetime | None = None,
    end: datetime | None = None,
) -> Rate:
    return Rate(
        prefix=prefix,
        price_per_minute=D(price),
        connect_fee=D(fee),
        increment=Increment.parse(increment),
        free_seconds=free,
        effective_from=start,
        effective_to=end,
    )


def ms(seconds: str) -> int:
    """A duration written in seconds ("7.2") as milliseconds."""
    return int(D(seconds) * 1000)


# The worked examples, one call per line, as a billing person would check them by hand:
# price per minute, connect fee, increment MIN/STEP, free seconds, call duration in seconds,
# answered?, then the seconds billed and the amount charged.
WORKED_EXAMPLES = [
    # per-second billing, 1/1
    ("0.0200", "0", "1/1", 0, "30", True, 30, "0.0100"),
    ("0.0600", "0", "1/1", 0, "7.2", True, 8, "0.0080"),  # a started second counts
    ("0.0600", "0", "1/1", 0, "0.001", True, 1, "0.0010"),
    ("0.0150", "0", "1/1", 0, "3600", True, 3600, "0.9000"),  # one hour
    # per-minute billing, 60/60
    ("0.0100", "0", "60/60", 0, "1", True, 60, "0.0100"),
    ("0.0100", "0", "60/60", 0, "60", True, 60, "0.0100"),
    ("0.0100", "0", "60/60", 0, "61", True, 120, "0.0200"),
    ("0.0100", "0", "60/60", 0, "60.001", True, 120, "0.0200"),
    ("0.0100", "0", "60/60", 0, "121", True, 180, "0.0300"),
    # 30/6: 30 seconds at least, then 6-second steps
    ("0.1200", "0", "30/6", 0, "1", True, 30, "0.0600"),
    ("0.1200", "0", "30/6", 0, "30", True, 30, "0.0600"),
    ("0.1200", "0", "30/6", 0, "31", True, 36, "0.0720"),
    ("0.1200", "0", "30/6", 0, "36", True, 36, "0.0720"),
    ("0.1200", "0", "30/6", 0, "37", True, 42, "0.0840"),
    # MIN 0: every started step from the first second; MIN not a multiple of STEP
    ("0.6000", "0", "0/60", 0, "1", True, 60, "0.6000"),
    ("0.6000", "0", "45/30", 0, "50", True, 75, "0.7500"),  # 45 + one started 30
    # connect fee: every answered call pays it, even at 0 s; unanswered calls pay nothing
    ("0.0200", "0.0050", "1/1", 0, "30", True, 30, "0.0150"),
    ("0.0200", "0.0050", "1/1", 0, "0", True, 0, "0.0050"),
    ("0.0200", "0.0050", "1/1", 0, "0", False, 0, "0.0000"),
    ("0.0100", "0.0500", "60/60", 0, "61", True, 120, "0.0700"),
    # zero-length (unanswered) calls bill nothing
    ("0.0100", "0", "60/60", 0, "0", False, 0, "0.0000"),
    # free seconds come off the duration first, then the increment applies to the rest
    ("0.0600", "0", "1/1", 10, "10", True, 0, "0.0000"),
    ("0.0600", "0", "1/1", 10, "11", True, 1, "0.0010"),
    ("0.0600", "0", "1/1", 10, "10.001", True, 1, "0.0010"),
    ("0.0100", "0", "60/60", 10, "65", True, 60, "0.0100"),  # 55 s left -> one minute
    ("0.0100", "0", "60/60", 10, "70", True, 60, "0.0100"),
    ("0.0100", "0", "60/60", 10, "71", True, 120, "0.0200"),  # 61 s left -> two minutes
    ("0.1200", "0", "30/6", 5, "36", True, 36, "0.0720"),  # 31 s left -> 36
    ("0.0600", "0.0100", "1/1", 10, "5", True, 0, "0.0100"),  # free airtime, fee still due
    # rounding: exact, once, to 0.0001, half up
    ("0.0003", "0", "1/1", 0, "10", True, 10, "0.0001"),  # 0.00005 exactly -> up
    ("0.0001", "0", "1/1", 0, "20", True, 20, "0.0000"),  # 0.0000333 -> down
    ("0.01245", "0", "60/60", 0, "60", True, 60, "0.0125"),  # half up, not half even
    ("0.01234", "0", "60/60", 0, "60", True, 60, "0.0123"),
    ("0.0100", "0", "1/1", 0, "61", True, 61, "0.0102"),  # 0.0101666...
    ("0.1000", "0.00005", "1/1", 0, "1", True, 1, "0.0017"),  # 0.00005 + 0.0016666...
    ("0", "0.0250", "60/60", 0, "600", True, 600, "0.0250"),  # free minutes, fee only
]


@pytest.mark.parametrize(
    ("price", "fee", "increment", "free", "seconds", "answered", "billed", "amount"),
    WORKED_EXAMPLES,
)
def test_worked_examples(
    price: str,
    fee: str,
    increment: str,
    free: int,
    seconds: str,
    answered: bool,
    billed: int,
    amount: str,
) -> None:
    rate = make_rate(price, fee, increment, free)
    charge = rate_call(rate, ms(seconds), answered=answered)
    assert charge == Charge(billed, D(amount))
    # the amount is always written with exactly four decimal places
    assert str(charge.amount) == amount


def test_answered_defaults_to_nonzero_duration() -> None:
    rate = make_rate("0.0200", "0.0050")
    assert rate_call(rate, 0) == Charge(0, D("0.0000"))
    assert rate_call(rate, 1) == Charge(1, D("0.0053"))  # 0.005 + 0.02/60 = 0.0053333


def test_unanswered_call_costs_nothing_whatever_the_duration() -> None:
    rate = make_rate("1.0000", "0.5000", "60/60")
    assert rate_call(rate, 5000, answered=False) == Charge(0, D("0.0000"))


@pytest.mark.parametrize(
    ("duration_ms", "increment", "free", "expected"),
    [
        (0, "60/60", 0, 0),
        (-5, "1/1", 0, 0),
        (1, "60/60", 0, 60),
        (60_000, "60/60", 0, 60),
        (60_001, "60/60", 0, 120),
        (7_200, "1/1", 0, 8),
        (1_000, "30/6", 0, 30),
        (31_000, "30/6", 0, 36),
        (30_000, "30/6", 30, 0),
        (30_001, "30/6", 30, 30),
        (1, "0/1", 0, 1),
    ],
)
def test_billed_seconds(duration_ms: int, increment: str, free: int, expected: int) -> None:
    assert billed_seconds(duration_ms, make_rate(increment=increment, free=free)) == expected


# -- properties ----------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=5, places=5)
fees = st.decimals(min_value=0, max_value=D("0.5"), places=4)
increments = st.builds(Increment, st.integers(0, 120), st.integers(1, 60))
rates = st.builds(
    Rate,
    prefix=st.just("1"),
    price_per_minute=prices,
    connect_fee=fees,
    increment=increments,
    free_seconds=st.integers(0, 30),
)
durations = st.integers(0, 4 * 3600 * 1000)


def reference_amount(rate: Rate, billed: int) -> Decimal:
    """The amount by plain Decimal arithmetic at generous precision, for comparison."""
    with localcontext() as ctx:
        ctx.prec = 80
        exact = rate.connect_fee + rate.price_per_minute * billed / 60
        return exact.quantize(D("0.0001"), rounding=ROUND_HALF_UP)


@given(rates, durations)
def test_amount_matches_reference_arithmetic(rate: Rate, duration_ms: int) -> None:
    charge = rate_call(rate, duration_ms, answered=True)
    assert charge.amount == reference_amount(rate, charge.billed_seconds)
    assert charge.amount.as_tuple().exponent == -4


@given(rates, durations)
def test_billed_seconds_follow_the_increment(rate: Rate, duration_ms: int) -> None:
    billed = billed_seconds(duration_ms, rate)
    seconds = -(-duration_ms // 1000)
    remainder = seconds - rate.free_seconds
    if remainder <= 0:
        assert billed == 0
        return
    minimum, step = rate.increment.minimum, rate.increment.step
    assert billed >= remainder  # every started second is paid for
    assert billed >= minimum
    assert (billed - minimum) % step == 0  # made of the minimum and whole steps
    assert billed == minimum or billed - step < remainder  # and not one step more than needed


@given(rates, durations, durations)
def test_charge_never_decreases_with_duration(rate: Rate, a: int, b: int) -> None:
    short, long = sorted((a, b))
    assert (
        rate_call(rate, short, answered=True).amount <= rate_call(rate, long, answered=True).amount
    )


available_money = st.decimals(min_value=-1, max_value=50, places=6)


def charge_for(rate: Rate, seconds: int) -> Decimal:
    return rate_call(rate, seconds * 1000, answered=True).amount


@given(available_money, rates)
def test_max_call_seconds_is_exact_against_rate_call(available: Decimal, rate: Rate) -> None:
    limit = max_call_seconds(available, rate)
    if limit is None:
        assert charge_for(rate, 1) > available
        return
    assert 1 <= limit <= UNLIMITED_SECONDS
    assert charge_for(rate, limit) <= available
    if limit < UNLIMITED_SECONDS:
        assert charge_for(rate, limit + 1) > available
        # the limit sits at the end of a billing block: one step more crosses it too
        assert charge_for(rate, limit + rate.increment.step) > available


@pytest.mark.parametrize(
    ("available", "price", "fee", "increment", "free", "expected"),
    [
        ("0.0100", "0.0100", "0", "60/60", 0, 60),
        ("0.0199", "0.0100", "0", "60/60", 0, 60),
        ("0.0200", "0.0100", "0", "60/60", 0, 120),
        ("0.0099", "0.0100", "0", "60/60", 0, None),  # not even the first minute: 402
        ("0.0150", "0.0200", "0.0050", "1/1", 0, 30),
        ("0.0049", "0.0200", "0.0050", "1/1", 0, None),  # not even the connect fee
        ("0.0050", "0.0200", "0.0050", "1/1", 0, None),  # the fee but no second of airtime
        ("0.0600", "0.1200", "0", "30/6", 0, 30),
        ("0.0719", "0.1200", "0", "30/6", 0, 30),
        ("0.0720", "0.1200", "0", "30/6", 0, 36),
        ("0", "0.0100", "0", "60/60", 10, 10),  # the free seconds are free
        ("0.0050", "0.0100", "0.0050", "60/60", 10, 10),
        ("0.0150", "0.0100", "0.0050", "60/60", 10, 70),
        ("-0.01", "0.0100", "0", "60/60", 10, None),
        ("0", "0", "0", "1/1", 0, UNLIMITED_SECONDS),  # a free rate: money is not the limit
        ("0.0010", "0", "0.0050", "1/1", 0, None),
        ("1000000", "0.0100", "0", "1/1", 0, UNLIMITED_SECONDS),
        ("0.00019", "0.0060", "0", "1/1", 0, 1),  # amounts compare at 4 places: 0.0001
    ],
)
def test_max_call_seconds_examples(
    available: str, price: str, fee: str, increment: str, free: int, expected: int | None
) -> None:
    rate = make_rate(price, fee, increment, free)
    assert max_call_seconds(D(available), rate) == expected


def test_max_call_seconds_rounds_like_rate_call() -> None:
    # 0.0003/min for 10 s is 0.00005 exactly, which rate_call rounds up to 0.0001.
    rate = make_rate("0.0003")
    assert charge_for(rate, 9) == D("0.0000")
    assert charge_for(rate, 10) == D("0.0001")
    assert max_call_seconds(D("0"), rate) == 9
    assert max_call_seconds(D("0.0001"), rate) == 29  # 0.000145 -> 0.0001; 30 s -> 0.00015


# -- rate checks ---------------------------------------------------------------------------

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "rate",
    [
        make_rate(price="-0.01"),
        make_rate(fee="-0.01"),
        make_rate(price="NaN"),
        make_rate(free=-1),
        Rate("44", D("0.01"), increment=Increment(-1, 1)),
        Rate("44", D("0.01"), increment=Increment(1, 0)),
        make_rate(start=T0, end=T0),
        make_rate(start=T0, end=T0 - timedelta(days=1)),
    ],
)
def test_check_rate_refuses_unusable_rates(rate: Rate) -> None:
    with pytest.raises(RateError):
        check_rate(rate)


def test_check_rate_accepts_a_normal_rate() -> None:
    check_rate(make_rate("0.0100", "0.0050", "30/6", 5, start=T0, end=T0 + timedelta(days=1)))


# -- selection by prefix and effective date ------------------------------------------------


def test_in_force_is_half_open() -> None:
    rate = make_rate(start=T0, end=T0 + timedelta(days=30))
    assert not in_force(rate, T0 - timedelta(microseconds=1))
    assert in_force(rate, T0)
    assert in_force(rate, T0 + timedelta(days=30) - timedelta(microseconds=1))
    assert not in_force(rate, T0 + timedelta(days=30))
    assert in_force(make_rate(), T0)


def tariff(*rates: Rate) -> Tariff:
    return Tariff(id=7, name="retail", currency="EUR", rates=rates)


def test_tariff_index_longest_prefix() -> None:
    index = TariffIndex(
        tariff(
            make_rate("0.0500", prefix=""),
            make_rate("0.0100", prefix="44"),
            make_rate("0.0900", prefix="447"),
        )
    )
    assert len(index) == 3
    assert index.tariff_id == 7 and index.currency == "EUR"
    assert index.lookup("4479460000", T0) == make_rate("0.0900", prefix="447")
    assert index.lookup("4420700000", T0) == make_rate("0.0100", prefix="44")
    assert index.lookup("33100000", T0) == make_rate("0.0500", prefix="")


def test_tariff_index_no_rate() -> None:
    index = TariffIndex(tariff(make_rate(prefix="44")))
    assert index.lookup("33100000", T0) is None
    assert TariffIndex(tariff()).lookup("44", T0) is None


def test_new_rate_sheet_supersedes_open_ended_old_one() -> None:
    old = make_rate("0.0100", prefix="44")
    new = make_rate("0.0120", prefix="44", start=T0)
    index = TariffIndex(tariff(new, old))
    assert index.lookup("4420", T0 - timedelta(seconds=1)) == old
    assert index.lookup("4420", T0) == new
    # the order the rates are given in does not matter
    assert TariffIndex(tariff(old, new)).lookup("4420", T0) == new


def test_several_periods_for_one_prefix() -> None:
    jan = make_rate("0.0100", start=T0, end=T0 + timedelta(days=31))
    feb = make_rate("0.0110", start=T0 + timedelta(days=31), end=T0 + timedelta(days=60))
    later = make_rate("0.0130", start=T0 + timedelta(days=90))
    index = TariffIndex(tariff(feb, later, jan))
    assert index.lookup("44", T0 + timedelta(days=3)) == jan
    assert index.lookup("44", T0 + timedelta(days=31)) == feb
    assert index.lookup("44", T0 + timedelta(days=70)) is None  # the gap between sheets
    assert index.lookup("44", T0 + timedelta(days=400)) == later
    assert index.lookup("44", T0 - timedelta(days=1)) is None


def test_withdrawn_prefix_falls_back_to_shorter_one() -> None:
    country = make_rate("0.0100", prefix="44")
    mobile = make_rate("0.0900", prefix="447", end=T0)
    index = TariffIndex(tariff(country, mobile))
    assert index.lookup("4479", T0 - timedelta(days=1)) == mobile
    assert index.lookup("4479", T0) == country


def test_same_prefix_same_start_is_refused() -> None:
    with pytest.raises(RateError, match="same time"):
        TariffIndex(tariff(make_rate("0.01", start=T0), make_rate("0.02", start=T0)))
    with pytest.raises(RateError, match="same time"):
        TariffIndex(tariff(make_rate("0.01"), make_rate("0.02", end=T0)))


def test_tariff_index_checks_rates() -> None:
    with pytest.raises(RateError):
        TariffIndex(tariff(make_rate(price="-1")))


def test_select_rate_on_a_plain_table() -> None:
    rate = make_rate(prefix="1")
    table = PrefixTable([("1", (rate,))])
    assert select_rate(table, "1212", T0) == rate
    assert select_rate(table, "2", T0) is None
