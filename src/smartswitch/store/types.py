"""Column types that behave the same on SQLite and MariaDB: exact money and UTC times.

Money
    MariaDB stores ``DECIMAL(18, s)`` exactly.  SQLite has no decimal type: a NUMERIC column
    keeps numbers as 64-bit floats, so ``0.1 + 0.2`` drifts and balances above 2**53 units lose
    digits.  On SQLite :class:`Money` therefore stores a *scaled integer* (units of
    ``10**-scale``: 1.2345 with scale 4 is 12345).  SQLite integer arithmetic is exact, so
    ``balance = balance - :price`` and ``SUM(amount)`` in SQL stay exact too; Python sees
    :class:`~decimal.Decimal` on both databases.  The catch: a person reading the SQLite file
    with the ``sqlite3`` shell sees scaled integers, and SQL that mixes a money column with a
    literal must bind the literal with this type (SQLAlchemy does that for expressions built
    from the column).

    Writing a value with more decimal places than the column holds raises instead of rounding:
    rounding money is a business decision that belongs to the rating code, not to the store.

UtcDateTime
    Accepts timezone-aware datetimes only (a naive one is a bug: whose local time?), stores
    them as UTC without zone, truncated to milliseconds on both databases (MariaDB
    ``DATETIME(3)``), and returns aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from smartswitch.model.money import (
    AMOUNT_SCALE,
    PRECISION,
    PRICE_SCALE,
    exact_decimal,
    typed_utc_ms,
    utc_ms,
)

__all__ = [
    "AMOUNT_SCALE",
    "PRICE_SCALE",
    "Money",
    "UtcDateTime",
    "exact_decimal",
    "typed_utc_ms",
    "utc_ms",
]


class Money(TypeDecorator[Decimal]):
    """An exact decimal with 18 digits, ``scale`` of them after the point (see module doc)."""

    impl = Numeric
    cache_ok = True

    def __init__(self, scale: int) -> None:
        super().__init__(precision=PRECISION, scale=scale, asdecimal=True)
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(PRECISION, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        d = exact_decimal(value, self.scale)
        if dialect.name == "sqlite":
            return int(d.scaleb(self.scale))
        return d

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-self.scale)
        return Decimal(value).quantize(Decimal(1).scaleb(-self.scale))

    def __repr__(self) -> str:
        return f"Money({self.scale})"


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime with millisecond precision (see module doc)."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=3))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise ValueError(f"expected a datetime, got {type(value).__name__}")
        return utc_ms(value).replace(tzinfo=None)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        to_utc = self.process_bind_param

        # SQLite stores the text SQLAlchemy's DATETIME writes, "YYYY-MM-DD HH:MM:SS.ffffff":
        # made here by one C call instead of this decorator's step followed by DATETIME's
        # formatting in Python (a CDR batch binds nine times for each call it carries).
        def process(value: Any) -> str | None:
            if value is None:
                return None
            naive: datetime = to_utc(value, dialect)
            return naive.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)

    def __repr__(self) -> str:
        return "UtcDateTime()"
