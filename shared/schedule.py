"""A fixed-rate schedule that does not drift and reports overruns (pure: time is passed in)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class FixedRateSchedule:
    """Slots at `start + k * period_s`; a sample that misses its slot skips to the next free one.

    Deadlines are computed from the start, never from the previous wake-up, so jitter does not
    accumulate into drift.
    """

    period_s: float
    start_s: float
    slot: int = 0
    overruns: int = 0

    @property
    def deadline_s(self) -> float:
        return self.start_s + self.slot * self.period_s

    def advance(self, now_s: float) -> int:
        """Move to the next slot after the one just served; returns the slots missed."""
        self.slot += 1
        if now_s <= self.deadline_s:
            return 0
        late_slots = math.floor((now_s - self.start_s) / self.period_s) + 1
        missed = late_slots - self.slot
        self.overruns += missed
        self.slot = late_slots
        return missed

    def retime(self, period_s: float, now_s: float) -> None:
        """Switch to a new period, with the first slot now (mode changes)."""
        self.period_s = period_s
        self.start_s = now_s
        self.slot = 0
