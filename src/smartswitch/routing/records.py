"""Where the sessions of a policy leave their finished calls: the CDR sink, with the node's
name and its wall clock, and the part of a CDR every finished call has, rated or not.

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
from smartswitch.model.cdr import CdrRecord
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

    def unrated(
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
    ) -> CdrRecord:
        """The record of a finished call with no money on it: the numbers as received and as
        sent by its last attempt (``caller`` and ``callee_out`` if it made none), its times,
        its answered duration, how it ended. No supplier, nothing billed: a billed call's
        session rates it, a DID call's names the provider."""
        wall = self.wall
        last = summary.last_attempt
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
            duration_ms=round(summary.duration * 1000),
            billed_seconds=0,
            price=ZERO,
            cost=ZERO,
            currency=currency,
            sip_code=summary.status,
            sip_reason=summary.reason,
            hangup_side=summary.hangup_side,
            hangup_reason=summary.hangup_reason,
            subscriber_id=subscriber_id,
        )
