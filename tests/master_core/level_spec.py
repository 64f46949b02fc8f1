"""The level rules written as checks on a sampled trace, shared by the monitor and the composed
protection tests: no missed trip, no early trip, release only past hysteresis, latch and reset.

Time is the samples' own (their time stamps, at any spacing, never going back): a level must
trip at exactly the first sample stamped at least its delay after the first sample of the
stretch beyond its threshold, and at no sample before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from services.master_core.level_monitor import TIME_TOLERANCE_S
from shared.config.protection import Direction

Zone = str
ZONES: tuple[Zone, ...] = ("beyond", "threshold", "band", "release", "released", "unknown", "nan")


@dataclass
class LevelSpec:
    """Checks one level against its rules, sample by sample."""

    direction: Direction
    threshold: float
    release: float
    delay_s: float
    latching: bool
    active: bool = False
    stretch_start: float | None = None
    """First known, armed, beyond sample since the last known sample that was not."""
    last: float | None = None

    def beyond(self, v: float) -> bool:
        return v > self.threshold if self.direction == "high" else v < self.threshold

    def released(self, v: float) -> bool:
        return v < self.release if self.direction == "high" else v > self.release

    def step(
        self, value: float | None, now_s: float, active_after: bool, armed: bool = True
    ) -> None:
        v = None if value is None or math.isnan(value) else value
        self.last = v
        hot = v is not None and armed and self.beyond(v)
        out = v is not None and self.released(v)
        if v is not None and not hot:
            self.stretch_start = None
        elif hot and self.stretch_start is None:
            self.stretch_start = now_s
        held = None if self.stretch_start is None else now_s - self.stretch_start
        ctx = f"t={now_s} value={value} armed={armed} held={held} {self}"
        if not self.active and active_after:
            assert hot, f"raised on a sample that is not beyond: {ctx}"
            assert held is not None and held >= self.delay_s - TIME_TOLERANCE_S, f"early: {ctx}"
        if not self.active and hot and held is not None and held >= self.delay_s:
            assert active_after, f"missed trip: {ctx}"
        if self.active and not active_after:
            assert not self.latching, f"a latched level cleared without reset: {ctx}"
            assert out, f"cleared before release: {ctx}"
        if self.active and out and not self.latching:
            assert not active_after, f"not cleared past release: {ctx}"
        self.active = active_after

    def reset(self, cleared: bool) -> None:
        """Check a reset: it clears exactly a latched level whose last sample is released."""
        expected = (
            self.active and self.latching and self.last is not None and self.released(self.last)
        )
        assert cleared == expected, f"reset cleared={cleared}, expected {expected}: {self}"
        if cleared:
            self.active = False


def zone_value(
    draw: Callable[[st.SearchStrategy[float]], float], spec: LevelSpec, zone: Zone
) -> float | None:
    """A value in `zone` of the level: beyond, at threshold, inside the band, at release..."""
    high = spec.direction == "high"
    sign = 1.0 if high else -1.0
    away = math.inf if high else -math.inf
    if zone == "unknown":
        return None
    if zone == "nan":
        return math.nan
    if zone == "threshold":
        return spec.threshold
    if zone == "release":
        return spec.release
    if zone == "band":
        f = draw(st.floats(0.0, 1.0))
        return spec.release + f * (spec.threshold - spec.release)
    d = draw(st.floats(0.0, 50.0))
    if zone == "beyond":
        v = spec.threshold + sign * d
        return v if spec.beyond(v) else math.nextafter(spec.threshold, away)
    v = spec.release - sign * d
    return v if spec.released(v) else math.nextafter(spec.release, -away)
