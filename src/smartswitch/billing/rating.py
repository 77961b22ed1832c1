"""Rating: what a call costs under a rate, and how long a balance lets a call last.

Pure functions over :class:`~smartswitch.model.config.Rate`; no IO.  The same
:func:`rate_call` prices the CDR and decrements the balance, and :func:`max_call_seconds` is
derived exactly from it, so the price written on a CDR, the money taken from the account and
the duration the switch allowed always agree to the last ten-thousandth.

Billing conventions used here (the usual carrier ones, stated so that a billing person can
check them):

1. **Duration.**  The call's answered duration in milliseconds is rounded *up* to whole seconds
   (a call of 7.2 s is a call of 8 s): every started second counts.
2. **Free seconds** are deducted from that duration first.  A call at or under the free seconds
   bills 0 seconds; a longer call bills only the remainder, to which the increment then applies.
   (Free seconds with 60/60 and 10 free seconds: 65 s -> remainder 55 s -> 60 s billed.)
3. **Increment "MIN/STEP"** on the remainder ``r > 0``: ``MIN`` seconds if ``r <= MIN``,
   otherwise ``MIN`` plus every started ``STEP`` after it: ``MIN + ceil((r - MIN) / STEP) * STEP``.
   60/60: 1 s -> 60, 61 s -> 120.  30/6: 1 s -> 30, 31 s -> 36.  1/1: 7.2 s -> 8.
   With MIN 0 ("0/60") every started STEP counts from the first second.
4. **Connect fee** is charged once for every *answered* call, even one of 0 seconds and even one
   entirely within its free seconds: it pays for the call's setup, not its airtime.  Calls that
   were not answered cost nothing at all.
5. **Amount** = connect fee + price per minute x billed seconds / 60, computed exactly (as a
   rational number, no float, no intermediate rounding) and rounded once to 4 decimal places
   (0.0001) with ROUND_HALF_UP, the commercial rounding rate sheets and invoices use.

Prices are assumed non-negative; :func:`check_rate` says why a rate is unusable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from smartswitch.model.config import Rate, Tariff
from smartswitch.model.prefix import PrefixTable

__all__ = [
    "AMOUNT_QUANTUM",
    "UNLIMITED_SECONDS",
    "Charge",
    "RateError",
    "TariffIndex",
    "billed_seconds",
    "check_rate",
    "in_force",
    "max_call_seconds",
    "rate_call",
    "select_rate",
]

AMOUNT_QUANTUM = Decimal("0.0001")
"""Every amount is a multiple of this: 4 decimal places, finer than a cent so that per-second
rates of sub-cent destinations do not lose money to rounding."""

UNLIMITED_SECONDS = 7 * 86400
"""What :func:`max_call_seconds` returns when money is not the limit (a free rate, or a balance
that covers more than this).  One week: the caller applies its own, shorter, maximum call
duration with ``min()``."""

_SCALE = 10_000  # 1 / AMOUNT_QUANTUM
_SECONDS_PER_MINUTE = 60


class RateError(ValueError):
    """A rate that cannot be used for billing, with the reason."""


@dataclass(frozen=True, slots=True)
class Charge:
    """The outcome of rating one call.

    ``billed_seconds`` are the seconds actually charged at the per-minute price: after free
    seconds are deducted and the increment is applied (so 0 for a call within its free seconds).
    ``amount`` includes the connect fee and is a multiple of :data:`AMOUNT_QUANTUM`.
    """

    billed_seconds: int
    amount: Decimal


def check_rate(rate: Rate) -> None:
    """Raise :class:`RateError` if ``rate`` cannot be billed correctly; return None if it can."""
    if not rate.price_per_minute.is_finite() or rate.price_per_minute < 0:
        raise RateError(f"prefix {rate.prefix!r}: price per minute must be a number >= 0")
    if not rate.connect_fee.is_finite() or rate.connect_fee < 0:
        raise RateError(f"prefix {rate.prefix!r}: connect fee must be a number >= 0")
    if rate.free_seconds < 0:
        raise RateError(f"prefix {rate.prefix!r}: free seconds must be >= 0")
    if rate.increment.minimum < 0 or rate.increment.step < 1:
        raise RateError(f"prefix {rate.prefix!r}: increment {rate.increment} is not MIN>=0/STEP>=1")
    if (
        rate.effective_from is not None
        and rate.effective_to is not None
        and rate.effective_to <= rate.effective_from
    ):
        raise RateError(f"prefix {rate.prefix!r}: effective period ends before it starts")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _billed_from_seconds(seconds: int, rate: Rate) -> int:
    """Conventions 2 and 3 above, on a duration already in whole seconds."""
    remainder = seconds - rate.free_seconds
    if remainder <= 0:
        return 0
    minimum, step = rate.increment.minimum, rate.increment.step
    if remainder <= minimum:
        return minimum
    return minimum + _ceil_div(remainder - minimum, step) * step


def billed_seconds(duration_ms: int, rate: Rate) -> int:
    """The seconds charged at the per-minute price for an answered duration of ``duration_ms``.

    The duration is rounded up to whole seconds, the free seconds are deducted from it, and the
    increment applies to the remainder (see the module docstring).  A zero-length call bills 0.
    """
    if duration_ms <= 0:
        return 0
    return _billed_from_seconds(_ceil_div(duration_ms, 1000), rate)


def _amount(rate: Rate, billed: int) -> Decimal:
    """connect fee + price x billed / 60, rounded once, exactly, half up to 0.0001.

    Done on integers (Decimal.as_integer_ratio is exact) so no Decimal context precision or
    rounding mode can change the result: ``floor(x * 10^4 + 1/2) / 10^4``, which is ROUND_HALF_UP
    for the non-negative amounts billed here.
    """
    fee_num, fee_den = rate.connect_fee.as_integer_ratio()
    price_num, price_den = rate.price_per_minute.as_integer_ratio()
    # x = fee_num/fee_den + price_num*billed/(price_den*60), over the common denominator.
    den = fee_den * price_den * _SECONDS_PER_MINUTE
    num = fee_num * price_den * _SECONDS_PER_MINUTE + price_num * billed * fee_den
    units = (2 * num * _SCALE + den) // (2 * den)
    return Decimal(f"{units}E-4")  # exact: string conversion ignores the Decimal context


def rate_call(rate: Rate, duration_ms: int, *, answered: bool | None = None) -> Charge:
    """Price one call: the figure for the CDR and for the balance, the same one.

    ``answered`` says whether the call was answered (200 OK to the INVITE), which is what makes
    the connect fee due.  Left as None it is taken to be ``duration_ms > 0``; pass True for a call
    that was answered and hung up within the same millisecond, which then pays the connect fee.
    An unanswered call costs nothing, whatever ``duration_ms`` says.
    """
    if answered is None:
        answered = duration_ms > 0
    if not answered:
        return Charge(0, Decimal("0.0000"))
    billed = billed_seconds(duration_ms, rate)
    return Charge(billed, _amount(rate, billed))


def max_call_seconds(available: Decimal, rate: Rate) -> int | None:
    """The longest call, in whole seconds, that ``available`` money pays for under ``rate``.

    Precisely: the largest ``s >= 1`` with ``rate_call(rate, s * 1000, answered=True).amount
    <= available``, capped at :data:`UNLIMITED_SECONDS` (which is also what a free rate, price 0,
    returns when the connect fee is covered).  The charge only grows with the duration, so any
    call up to ``s`` seconds is paid for and one of ``s + 1`` seconds would not be.

    None when not even a 1-second call is paid for: the connect fee plus the first billing
    block (the increment minimum, or the first step) exceeds ``available``, and there are no free
    seconds to offer.  The switch then refuses the call (402 Payment Required).  With free
    seconds and a covered connect fee the answer is at least the free seconds, even at a zero
    balance, because that is what the tariff promises; requiring a positive balance as well is a
    policy for the authorisation step.

    The switch must disconnect at ``s`` seconds *exactly*: durations are rounded up to whole
    seconds, so a call of ``s`` seconds and 1 ms is a call of ``s + 1`` seconds.

    Computed in closed form (no search) and exactly, from the same rounding as
    :func:`rate_call`:  ``amount(b) <= A`` iff ``fee + price*b/60 < floor4(A) + 0.00005``.
    """
    # On exact integers, as in _amount (Decimal.as_integer_ratio is exact; Fractions gave the
    # same answers at several times the cost, on every INVITE). Amounts are multiples of
    # 0.0001, so "amount <= available" is "amount <= floor4(available)".
    avail_num, avail_den = available.as_integer_ratio()
    limit = avail_num * _SCALE // avail_den  # floor4(available), in 0.0001 units
    # Half a quantum above the limit is where ROUND_HALF_UP starts to exceed it:
    # headroom = (2*limit + 1) / (2*_SCALE) - fee, as head_num / head_den.
    fee_num, fee_den = rate.connect_fee.as_integer_ratio()
    head_num = (2 * limit + 1) * fee_den - 2 * _SCALE * fee_num
    head_den = 2 * _SCALE * fee_den
    if head_num <= 0:
        return None  # even the connect fee alone is more than the money available
    price_num, price_den = rate.price_per_minute.as_integer_ratio()
    if price_num <= 0:
        return UNLIMITED_SECONDS
    # The most billed seconds b with price * b / 60 < headroom.
    max_billed = _ceil_div(head_num * _SECONDS_PER_MINUTE * price_den, head_den * price_num) - 1
    minimum, step = rate.increment.minimum, rate.increment.step
    if max_billed < minimum:
        seconds = rate.free_seconds  # only the free seconds (billed 0) are paid for
    else:
        # The end of the last affordable billing block, MIN + k*STEP billed seconds (with MIN 0
        # and k 0 that is the free seconds alone).
        seconds = rate.free_seconds + minimum + (max_billed - minimum) // step * step
    if seconds <= 0:
        return None
    return min(seconds, UNLIMITED_SECONDS)


def in_force(rate: Rate, at: datetime) -> bool:
    """Whether ``rate`` applies at ``at``: ``effective_from <= at < effective_to``.

    The period is half-open so that a new rate sheet starting when the old one ends leaves
    neither a gap nor an overlap; a missing bound is unbounded.  ``at`` and the bounds must be
    all timezone-aware (UTC, as stored) or all naive: Python refuses to compare a mix.
    """
    if rate.effective_from is not None and at < rate.effective_from:
        return False
    return rate.effective_to is None or at < rate.effective_to


def select_rate(table: PrefixTable[tuple[Rate, ...]], number: str, at: datetime) -> Rate | None:
    """The rate for ``number`` at ``at``: longest prefix whose rate is in force then.

    Each prefix holds its rates newest first (latest ``effective_from``), as
    :class:`TariffIndex` stores them; the first one in force at ``at`` wins, so a new rate sheet
    loaded without closing the old one's period still supersedes it from its start date.  When
    no rate of the longest prefix is in force (the prefix was withdrawn from the sheet, or is
    announced for later), the next shorter prefix applies, as it would had the longer one not
    been in the sheet.  None: the destination is not rated at that time (the call is refused).
    """
    for _prefix, rates in table.matches(number):
        for rate in rates:
            if in_force(rate, at):
                return rate
    return None


def _newest_first(rates: tuple[Rate, ...]) -> tuple[Rate, ...]:
    """Sort one prefix's rates by ``effective_from`` descending (unbounded start last)."""
    dated = [(r.effective_from, r) for r in rates if r.effective_from is not None]
    dated.sort(key=lambda pair: pair[0], reverse=True)
    undated = [r for r in rates if r.effective_from is None]
    ordered = (*(r for _, r in dated), *undated)
    starts = [r.effective_from for r in ordered]
    for earlier, later in zip(starts[1:], starts, strict=False):
        if earlier == later:
            prefix = ordered[0].prefix
            when = "open" if later is None else later.isoformat()
            raise RateError(f"prefix {prefix!r}: two rates start at the same time ({when})")
    return ordered


class TariffIndex:
    """A tariff's rates indexed for the call path: ``lookup(number, at)`` in microseconds.

    Built once per configuration version.  Every rate is checked (:func:`check_rate`) and two
    rates of the same prefix starting at the same time are refused, since which one applies
    would be ambiguous: a bad tariff fails to load rather than mis-bill.
    """

    __slots__ = ("currency", "name", "table", "tariff_id")

    def __init__(self, tariff: Tariff) -> None:
        for rate in tariff.rates:
            check_rate(rate)
        grouped = PrefixTable.grouped((r.prefix, r) for r in tariff.rates)
        self.tariff_id: int = tariff.id
        self.name: str = tariff.name
        self.currency: str = tariff.currency
        self.table: PrefixTable[tuple[Rate, ...]] = PrefixTable(
            (prefix, _newest_first(rates)) for prefix, rates in grouped.items()
        )

    def lookup(self, number: str, at: datetime) -> Rate | None:
        """The rate in force for ``number`` at ``at`` (see :func:`select_rate`)."""
        return select_rate(self.table, number, at)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"<TariffIndex {self.tariff_id} {self.name!r} {len(self.table)} prefixes>"
