"""A finished call as the switch records it: the CDR, its attempts, who hung up.

Made by the call policy when a call ends, kept durably by the outbox, written to the CDR table
by the store, replicated, exported. Validated when made, so a bad record fails in the code that
built it, not later in a background writer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from smartswitch.model.money import AMOUNT_SCALE, exact_decimal, utc_ms

__all__ = ["MAX_CDR_ID_LENGTH", "CdrAttempt", "CdrRecord", "HangupSide"]

MAX_CDR_ID_LENGTH = 38  # leaves room for the ":c" / ":s" suffix in balance_changes.id (40)


class HangupSide(enum.StrEnum):
    """Who ended the call: the caller, the callee, or the switch (limits, timeouts, operator)."""

    CALLER = "caller"
    CALLEE = "callee"
    SWITCH = "switch"


@dataclass(frozen=True, slots=True)
class CdrAttempt:
    """One supplier tried for the call, in order from ``seq`` 1."""

    seq: int
    supplier_peer_id: int
    sip_code: int
    reason: str
    start_time: datetime
    end_time: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_time", utc_ms(self.start_time))
        object.__setattr__(self, "end_time", utc_ms(self.end_time))


@dataclass(frozen=True, slots=True)
class CdrRecord:
    """A finished call, rated: what the CDR table stores, plus its attempts.

    Validated when made (so a bad record fails in the code that built it, not later in the
    background writer): ``price`` and ``cost`` are Decimals with at most 4 places (the rating
    code rounds; the store never does), times are timezone-aware (kept as UTC, millisecond
    precision, as stored), and a cost needs the supplier's account to charge.
    """

    id: str  # a ULID from store.ids.new_ulid(), made by the node
    call_id: str  # the A leg's Call-ID
    node: str
    customer_peer_id: int
    customer_account_id: int
    caller: str  # as received
    callee: str
    caller_out: str  # as sent to the supplier
    callee_out: str
    setup_time: datetime
    answer_time: datetime | None
    end_time: datetime
    duration_ms: int
    billed_seconds: int
    price: Decimal  # charged to the customer
    cost: Decimal  # owed to the supplier
    currency: str
    sip_code: int
    sip_reason: str
    hangup_side: HangupSide
    hangup_reason: str
    supplier_peer_id: int | None = None  # the supplier that answered, if any
    supplier_account_id: int | None = None
    attempts: tuple[CdrAttempt, ...] = ()
    subscriber_id: int | None = None  # the registrar's subscriber of the call, if any

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > MAX_CDR_ID_LENGTH:
            raise ValueError(f"CDR id must be 1-{MAX_CDR_ID_LENGTH} characters: {self.id!r}")
        for name in ("price", "cost"):
            value = getattr(self, name)
            if not isinstance(value, Decimal):
                raise ValueError(f"CDR {name} must be a Decimal, got {value!r}")
            exact_decimal(value, AMOUNT_SCALE)
        if self.cost and self.supplier_account_id is None:
            raise ValueError("a CDR with a cost needs supplier_account_id (whom we owe)")
        object.__setattr__(self, "hangup_side", HangupSide(self.hangup_side))
        object.__setattr__(self, "setup_time", utc_ms(self.setup_time))
        object.__setattr__(self, "end_time", utc_ms(self.end_time))
        if self.answer_time is not None:
            object.__setattr__(self, "answer_time", utc_ms(self.answer_time))
        object.__setattr__(self, "attempts", tuple(self.attempts))

    @property
    def profit(self) -> Decimal:
        return self.price - self.cost

    def charges(self) -> list[tuple[int, Decimal]]:
        """The amounts this call takes from accounts: (account id, amount), customer first."""
        charges = [(self.customer_account_id, self.price)]
        if self.supplier_account_id is not None:
            charges.append((self.supplier_account_id, self.cost))
        return charges
