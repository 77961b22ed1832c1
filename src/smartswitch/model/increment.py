"""Billing increments: the "min/step" notation of carrier rate sheets.

"60/60" bills the first 60 seconds, then every further started 60 seconds;
"1/1" is per-second billing; "30/6" bills 30 seconds at least, then 6-second steps.
"""

from __future__ import annotations

from dataclasses import dataclass


class IncrementError(ValueError):
    """An increment that is not "MIN/STEP" with whole seconds, MIN >= 0, STEP >= 1."""


@dataclass(frozen=True, slots=True)
class Increment:
    minimum: int
    step: int

    @classmethod
    def parse(cls, text: str) -> Increment:
        parts = text.strip().split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise IncrementError(f"increment must be MIN/STEP in whole seconds, got {text!r}")
        minimum, step = int(parts[0]), int(parts[1])
        if step < 1:
            raise IncrementError(f"increment step must be at least 1 second, got {text!r}")
        return cls(minimum, step)

    def __str__(self) -> str:
        return f"{self.minimum}/{self.step}"
