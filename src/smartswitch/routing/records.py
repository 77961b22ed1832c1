"""Where the sessions of a policy leave their finished calls: the CDR sink, with the node's
name and its wall clock.

The call path runs on the event loop's monotonic clock; a CDR states wall-clock times (the
loop's time plus ``wall_offset()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from smartswitch.model.cdr import CdrRecord


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
