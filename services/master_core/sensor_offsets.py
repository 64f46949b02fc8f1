"""Sensor offsets learned in the field: the current sensor's zero offset, subtracted from the
current the SOC counts (`PackEstimator.update`).

Pure: no I/O, no clock; the caller passes each sample's time step.

## The current sensor's zero offset (`ZeroOffsetLearner`)

A Hall or shunt sensor reads a small current when none flows (the IVT-S: ±0.1 A, the
specification limit `shared.config.limits.CURRENT_ACCURACY_A`). Counted for a day, 0.1 A moves
a 100 Ah cell by 2.4 % SOC; it is the counter's largest error between anchors.

The learner takes a sample as a reading of zero current only when no current can flow, or
when the pack demonstrably rests:

- **String open** (every auxiliary contact reads open and every coil is commanded off): no
  current can flow through the sensor; every sample is taken, whatever its size (a reading far
  from zero is what the offset is then, or a leak path, which `current_on_open_string` trips
  on; either way it is not a current to count).
- **Closed and resting**: the counter's rest (|I| below its rest rate) whose voltages have
  settled (`CoulombCounter.rest_settled`, dV/dt within 2 mV/min over its slope window), and a
  reading within `margin_a` (1.5 x the bound) of zero. A real standing draw below that
  (an inverter's standby) cannot be told from an offset at rest; taking it for one errs by at
  most the sensor's own specification, which the counter's uncertainty already assumes, and
  the open-string samples pull it back.
  A closed rest's samples are taken only `hold_s` away from both of its ends: held back until
  the rest has gone on that long after them, and not taken in its first `hold_s`. A load or
  PV charging that starts or fades passes through small currents while the counter rests (its
  rest is |I| < C/50), and those are real.
- Anything else (closed and not resting, an unknown reading, a non-positive time step) is
  ignored, and ends the closed rest's held-back samples: a load current is never taken for an
  offset.

The estimate is slow: a time-weighted mean of the taken samples until `time_constant_s` of
them have been taken, then an exponential average with that time constant (in sampled time,
not wall time: a week of driving without rest does not forget it). A step is counted at most
`max_step_s` (a gap in the samples must not weigh one sample as hours). It is `learned_a`
once `min_evidence_s` of samples have been taken, None before.

Bounded: what is subtracted (`correction_a`) is the learned offset clipped to ± `bound_a`
(the sensor's specification, `current_sensor.zero_offset_max_a`), so a learner fed wrong
samples moves the counted current by at most the bound. An estimate a little beyond it is a
sensor at its limit seen through noise (a hard cut there would drop the whole correction for
a mean of 0.1001 A): it is subtracted up to the bound. Beyond `margin_factor` x the bound
(only open-string samples can take it there: a rest sample is gated at that size) the sensor
is out of its specification: nothing is subtracted (`correction_a` 0), the offset is still
published, and `beyond_bound` is set for the caller to warn; the protection's own
`current_offset_high` warning rises at `protection.current_offset_warning_a`. The correction
is in steps of the sensor's resolution (`RESOLUTION_A`): less is no offset the sensor can show,
and a fraction of a mA learned from a rest's last real trickle does not move the count.

Protection, limits and the plausibility checks use the raw (calibrated) current, not the
corrected one: their thresholds are amperes to hundreds of amperes, where 0.1 A changes
nothing; `current_on_open_string` and the weld check must see what the sensor reads (a
subtracted "offset" could hide a leak path); and a safety function must not depend on a
learned state that wrong samples could have moved. The correction serves what integrates the
current over hours: the SOC and the SOH's charge counts.

## Cell-voltage offsets

Learned at full anchors, relative to the median of the cells and only where the counted SOC is
known well enough: `estimation.voltage_offsets`. What follows is why that gate is needed.

The rested voltages after a full anchor, as each channel's deviation from the median that
persists across anchors, are not in general the offset: on the field traces
(bench/bench_soc_field.py, ideal sensors, no balancing) the cells rested after the full anchor
differ by 17-23 mV (NMC, 0.97-1.03 capacities) and 120 mV (LFP, one cell aged 8 %) by their SOC
alone, and that persists across anchors as well. After balancing it would not be the offset
either: passive balancing equalises the readings, so at the top the readings agree and the true
cells differ by the offsets (and the learner, reading each against the same anchored 100 %,
takes nothing). A learner of those needs a signature the SOC cannot give (e.g. a deviation that
stays the same on the LFP plateau, where a few % SOC move a cell by under 5 mV).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from shared.config.limits import CURRENT_ACCURACY_A

RESOLUTION_A = 0.001
"""The IVT-S reports its current in mA (its result frame, `drivers/ivt_s.py` and its DBC)."""


@dataclass(frozen=True)
class ZeroOffsetParams:
    bound_a: float = CURRENT_ACCURACY_A
    """Largest |offset| that is subtracted: the sensor's specification."""
    margin_factor: float = 1.5
    """Noise margin: a sample at a closed rest is taken within this x bound_a of zero, and
    an estimate beyond it is out of specification (`beyond_bound`)."""
    time_constant_s: float = 3600.0
    """Sampled time over which the estimate averages; it follows drift with this lag."""
    min_evidence_s: float = 600.0
    """Sampled time before the offset counts as learned (10 min: sensor noise averages out)."""
    max_step_s: float = 5.0
    """Longest time step one sample stands for (the counter's max_gap_s)."""
    resolution_a: float = RESOLUTION_A
    """The correction's step."""
    hold_s: float = 300.0
    """A closed rest's sample is taken once the rest has gone on this long before and after
    it (PyBaMM field traces: PV ramps pass 0-0.15 A within a minute or two)."""
    chunk_s: float = 10.0
    """Held-back samples are kept as means over this long (the service samples at 20-50 Hz)."""

    def __post_init__(self) -> None:
        positive = ("bound_a", "margin_factor", "time_constant_s", "max_step_s", "chunk_s")
        for name in (*positive, "resolution_a"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} {value!r} must be positive")
        if not self.hold_s >= 0.0:
            raise ValueError(f"hold_s {self.hold_s!r} must not be negative")
        if self.margin_factor < 1.0:
            raise ValueError(f"margin_factor {self.margin_factor!r} must be at least 1")
        if not 0.0 <= self.min_evidence_s <= self.time_constant_s:
            raise ValueError(
                f"min_evidence_s {self.min_evidence_s!r} must be within 0..time_constant_s"
            )

    @property
    def margin_a(self) -> float:
        return self.margin_factor * self.bound_a


class ZeroOffsetLearner:
    """The current sensor's zero offset (module docstring); positive = reads charge at zero."""

    def __init__(self, params: ZeroOffsetParams | None = None) -> None:
        self.params = params or ZeroOffsetParams()
        self._mean_a = 0.0
        self.evidence_s = 0.0
        """Sampled time taken so far (capped at the time constant: older samples have faded)."""
        self._held: deque[tuple[float, float]] = deque()
        """A closed rest's samples held back, as (time, mean current) chunks, oldest first."""
        self._held_s = 0.0
        self._chunk = (0.0, 0.0)
        """The chunk being filled: (time, charge in A s)."""
        self._rest_s = 0.0
        """How long the closed rest's samples have been within the margin."""

    def update(
        self, dt_s: float, current_a: float | None, *, string_open: bool, resting: bool
    ) -> bool:
        """Take one sample if it is a reading of zero current (a closed rest's after
        `hold_s`); True when taken or held back."""
        p = self.params
        if not (math.isfinite(dt_s) and dt_s > 0.0):
            return False
        if current_a is None or not math.isfinite(current_a):
            self._drop_held()
            return False
        step_s = min(dt_s, p.max_step_s)
        if string_open:
            self._drop_held()
            self._take(step_s, current_a)
            return True
        if not (resting and abs(current_a) <= p.margin_a):
            self._drop_held()
            return False
        self._rest_s += step_s
        if self._rest_s <= p.hold_s:
            return True  # the rest's start: a fading current may still flow
        chunk_s, chunk_as = self._chunk
        chunk_s, chunk_as = chunk_s + step_s, chunk_as + step_s * current_a
        self._chunk = (chunk_s, chunk_as)
        if chunk_s >= p.chunk_s:
            self._held.append((chunk_s, chunk_as / chunk_s))
            self._held_s += chunk_s
            self._chunk = (0.0, 0.0)
            while self._held and self._held_s - self._held[0][0] >= p.hold_s:
                held_s, held_a = self._held.popleft()
                self._held_s -= held_s
                self._take(held_s, held_a)
        return True

    def _drop_held(self) -> None:
        self._rest_s = 0.0
        self._held.clear()
        self._held_s = 0.0
        self._chunk = (0.0, 0.0)

    def _take(self, step_s: float, current_a: float) -> None:
        self.evidence_s = min(self.evidence_s + step_s, self.params.time_constant_s)
        self._mean_a += step_s / self.evidence_s * (current_a - self._mean_a)

    @property
    def learned_a(self) -> float | None:
        """The learned offset; None until `min_evidence_s` of samples have been taken."""
        if self.evidence_s <= 0.0 or self.evidence_s < self.params.min_evidence_s:
            return None
        return self._mean_a

    @property
    def beyond_bound(self) -> bool:
        learned = self.learned_a
        return learned is not None and abs(learned) > self.params.margin_a

    @property
    def correction_a(self) -> float:
        """What to subtract from a measured current: the learned offset in steps of the
        resolution, clipped to the bound; 0 until learned and while beyond the margin."""
        learned = self.learned_a
        if learned is None or self.beyond_bound:
            return 0.0
        p = self.params
        steps = round(learned / p.resolution_a)
        return max(-p.bound_a, min(steps * p.resolution_a, p.bound_a))

    def corrected_a(self, current_a: float) -> float:
        return current_a - self.correction_a

    def state(self) -> dict[str, Any]:
        return {"mean_a": self._mean_a, "evidence_s": self.evidence_s}

    def load_state(self, mean_a: float, evidence_s: float) -> None:
        """A stored estimate (`persisted.OffsetsRecord`); refuses what this learner could not
        have made."""
        if not (math.isfinite(mean_a) and math.isfinite(evidence_s) and evidence_s >= 0.0):
            raise ValueError(f"zero offset {mean_a!r} A over {evidence_s!r} s is not an estimate")
        self._mean_a = mean_a if evidence_s > 0.0 else 0.0
        self.evidence_s = min(evidence_s, self.params.time_constant_s)
