"""One protection level of one quantity: debounced trip, hysteresis release, optional latch.

Semantics (pure; time is passed in as monotonic seconds):

- beyond: `value > threshold` for a high-side level, `value < threshold` for a low-side one;
  a value exactly at the threshold is not beyond.
- trip: the level becomes active at a sample that is beyond while every known sample since the
  first beyond one of the current stretch was beyond too, and `delay_s` has passed since that
  first sample. A known sample that is not beyond (or not armed) restarts the timer.
- released: `value < release` (high side) or `value > release` (low side), strictly. An active
  level clears at the first released sample (no release delay: the hysteresis band is the
  debounce); a latching level stays active until `reset()`, which succeeds only while the last
  sample is released.
- unknown (None or NaN): holds everything. The pending timer is kept (a flapping input must not
  keep restarting it), but nothing trips, nothing clears and a reset is refused until a known
  sample arrives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from shared.config.protection import Direction

Level = Literal["warning", "alarm", "fault"]
LEVEL_ORDER: tuple[Level, ...] = ("warning", "alarm", "fault")
Change = Literal["raise", "clear"]

TIME_TOLERANCE_S = 1e-3
"""The resolution of sample times for a delay: a slave stamps its samples with a few
microseconds of scheduling jitter, so the span of 6 samples 0.1 s apart lands either side of
0.5 s. Without this a 0.5 s delay would complete at the 6th or the 7th sample at random (a
whole sample period, 100 ms, of spread in the reaction); 1 ms is far below the sample period
and the cells' thermal and electrical time constants."""


@dataclass
class LevelMonitor:
    direction: Direction
    threshold: float
    release: float
    delay_s: float
    latching: bool = False
    active: bool = False
    beyond_since: float | None = None
    """Time of the first beyond sample of the current stretch; None when none is pending."""
    last_value: float | None = None
    """The last sample, None while unknown."""
    trip_value: float | None = None
    """The value that raised the level."""

    def __post_init__(self) -> None:
        # Equal release and threshold is allowed: flags use 0.5/0.5 (no band needed).
        wrong_side = (
            self.release > self.threshold
            if self.direction == "high"
            else self.release < self.threshold
        )
        if wrong_side or math.isnan(self.release) or math.isnan(self.threshold):
            raise ValueError(
                f"release {self.release:g} is on the wrong side of threshold {self.threshold:g} "
                f"for a {self.direction}-side level"
            )
        if not self.delay_s >= 0.0:
            raise ValueError(f"delay {self.delay_s:g} s must not be negative")

    def is_beyond(self, value: float) -> bool:
        return value > self.threshold if self.direction == "high" else value < self.threshold

    def is_released(self, value: float) -> bool:
        return value < self.release if self.direction == "high" else value > self.release

    @property
    def released(self) -> bool:
        """The last sample is known and past the release value."""
        return self.last_value is not None and self.is_released(self.last_value)

    def update(self, value: float | None, now_s: float, *, armed: bool = True) -> Change | None:
        """Feed one sample; `armed=False` means the level does not apply now (may not trip)."""
        if value is None or math.isnan(value):
            self.last_value = None
            return None
        self.last_value = value
        if self.active:
            if not self.latching and self.is_released(value):
                self.active = False
                self.trip_value = None
                return "clear"
            return None
        if not (armed and self.is_beyond(value)):
            self.beyond_since = None
            return None
        if self.beyond_since is None:
            self.beyond_since = now_s
        if now_s - self.beyond_since >= self.delay_s - TIME_TOLERANCE_S:
            self.active = True
            self.beyond_since = None
            self.trip_value = value
            return "raise"
        return None

    def reset(self) -> bool:
        """Clear a latched level whose condition has released; True if it was cleared."""
        if not (self.active and self.released):
            return False
        self.active = False
        self.trip_value = None
        self.beyond_since = None
        return True

    def force_latched(self, trip_value: float | None) -> None:
        """Restore a latched level (after a restart): active, value unknown until sampled."""
        self.active = True
        self.trip_value = trip_value
        self.beyond_since = None
        self.last_value = None
