"""Money and time as the whole switch keeps them: exact decimals of a fixed scale, UTC to the
millisecond.

Amounts (balances, prices of calls) carry 4 decimal places, prices per minute 6; both fit in
18 digits, the width MariaDB's DECIMAL and the scaled-integer SQLite column hold (see
:mod:`smartswitch.store.types`). Rounding is the rating code's business, never the store's: a
value with more places than its scale is refused here.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal

__all__ = ["AMOUNT_SCALE", "PRECISION", "PRICE_SCALE", "exact_decimal", "utc_ms"]

PRECISION = 18
AMOUNT_SCALE = 4  # amounts and balances
PRICE_SCALE = 6  # prices per minute and connect fees


@functools.cache
def _quantum_and_bound(scale: int) -> tuple[Decimal, Decimal]:
    """The smallest step of ``scale`` places and the first value too wide for them, made once
    per scale: exact_decimal runs for every amount of every record made, and building these
    was most of its time."""
    return Decimal(1).scaleb(-scale), Decimal(10) ** (PRECISION - scale)


def exact_decimal(value: object, scale: int) -> Decimal:
    """``value`` as a Decimal with at most ``scale`` places, or ValueError.

    Floats are refused outright: a float has already lost the exact value the caller meant.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise ValueError(f"money must be a Decimal or int, not {type(value).__name__}: {value!r}")
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"money must be finite, got {d}")
    quantum, bound = _quantum_and_bound(scale)
    if d != d.quantize(quantum):
        raise ValueError(f"{d:f} has more than {scale} decimal places")
    if abs(d) >= bound:
        raise ValueError(f"{d:f} does not fit in {PRECISION} digits with {scale} decimal places")
    return d


def utc_ms(value: datetime) -> datetime:
    """``value`` converted to UTC and truncated to milliseconds; naive datetimes are refused."""
    if value.tzinfo is UTC:
        # The common case (the node's own times, and any value this made already), without
        # the conversion and the copy: a record's times go through here at each of its steps.
        micro = value.microsecond
        return value if micro % 1000 == 0 else value.replace(microsecond=micro - micro % 1000)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware (UTC), got naive {value.isoformat()}")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def typed_utc_ms(value: datetime) -> datetime:
    """A time a person typed (a form, provisioning, the API, the CLI) as ``utc_ms``: without a
    zone it is UTC, the documented default there. The node's own times go through ``utc_ms``,
    which refuses a naive time because there it would be a bug."""
    return utc_ms(value if value.tzinfo else value.replace(tzinfo=UTC))
