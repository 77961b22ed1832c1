"""Where the sessions of a policy leave their finished calls: the CDR sink, with the node's
name and its wall clock, and the CDR of a finished call, rated or not.

The call path runs on the event loop's monotonic clock; a CDR states wall-clock times (the
loop's time plus ``wall_offset()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from smartswitch.b2bua.ports import CallSummary
from smartswitch.model.cdr import CdrAttempt, CdrRecord
from smartswitch.model.ids import new_ulid

ZERO = Decimal("0.0000")


class CallSink(Protocol):
    def append(self, record: CdrRecord, done: Callable[[], None] | None = None) -> None:
        """Keep ``record`` durably; call ``done`` once it is."""


@dataclass(frozen=True, slots=True)
class CallRecords:
    sink: CallSink
    node: str
    wall_offset: Callable[[], float]

    def wall(self, now: float) -> datetime:
        """``now`` on the loop's clock, as a wall-clock time."""
        return datetime.fromtimestamp(now + self.wall_offset(), UTC)

    def keep(self, record: CdrRecord, done: Callable[[], None]) -> None:
        """Hand ``record`` to the sink; ``done`` runs once it is durable."""
        self.sink.append(record, done)

    def cdr(
        self,
        summary: CallSummary,
        *,
        customer_peer_id: int,
        customer_account_id: int,
        subscriber_id: int | None,
        caller: str,
        callee: str,
        callee_out: str,
        currency: str,
        duration_ms: int | None = None,
        billed_seconds: int = 0,
        price: Decimal = ZERO,
        cost: Decimal = ZERO,
        supplier_peer_id: int | None = None,
        supplier_account_id: int | None = None,
        attempts: tuple[CdrAttempt, ...] = (),
    ) -> CdrRecord:
        """The record of a finished call: the numbers as received and as sent by its last
        attempt (``caller`` and ``callee_out`` if it made none), its times, how it ended, and
        what the session says of its money (by default none: no supplier, nothing billed, the
        answered duration as the summary has it). A billed call's session passes its rating,
        a DID call's the provider."""
        wall = self.wall
        last = summary.last_attempt
        # One record with everything: copying a frozen record to add the rating
        # (dataclasses.replace) validates it twice per call, on the event loop's thread.
        return CdrRecord(
            id=new_ulid(),
            call_id=summary.call_id,
            node=self.node,
            customer_peer_id=customer_peer_id,
            customer_account_id=customer_account_id,
            caller=caller,
            callee=callee,
            caller_out=last.destination.caller if last else caller,
            callee_out=last.destination.callee if last else callee_out,
            setup_time=wall(summary.setup_time),
            answer_time=wall(summary.answer_time) if summary.answer_time is not None else None,
            end_time=wall(summary.end_time),
            duration_ms=answered_ms(summary) if duration_ms is None else duration_ms,
            billed_seconds=billed_seconds,
            price=price,
            cost=cost,
            currency=currency,
            sip_code=summary.status,
            sip_reason=summary.reason,
            hangup_side=summary.hangup_side,
            hangup_reason=summary.hangup_reason,
            supplier_peer_id=supplier_peer_id,
            supplier_account_id=supplier_account_id,
            attempts=attempts,
            subscriber_id=subscriber_id,
        )


def answered_ms(summary: CallSummary) -> int:
    """The call's answered time in whole milliseconds, as a CDR states it."""
    return round(summary.duration * 1000)
