"""When the estimator steps, and what current it counts over each step (pure: time is passed in).

The estimator's step costs about as much as the supervisor's, and the periodic cycle runs at
twice the telemetry rate (`service.PERIOD_S`), so stepping it every cycle spent half its cost on
pictures it had already seen. It steps instead:

* when the pack picture is new (a sample arrived: the aggregator returns the same snapshot
  object until one does, `PackAggregator.snapshot`);
* in the first cycle `ESTIMATE_PERIOD_S` or more after its last step (counting goes on without
  telemetry);
* at once when the string's state changes (current counted, the string open with the sensor's
  zero reading, or nothing counted), or the reading becomes known or unknown: the window before
  the change steps first, at its own end, then the new one.

In between, the master's own readings are summed over the cycles' intervals, and the step counts
their mean: a reading's charge is never dropped (the counter's trapezoid runs over two windows'
means, which moves charge between neighbouring windows but neither adds nor loses any beyond
the first and last half window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

S = TypeVar("S")

ESTIMATE_PERIOD_S = 0.1
"""Without new pictures, the estimator steps in the first cycle this long after its last step:
the pack state's rate (`service.PUBLISH_PERIOD_S`)."""

StringState = Literal["counted", "open", "idle"]
"""`counted`: contactors closed, the current flows through the string; `open`: every contact
reads open and every coil is off, so the reading is the sensor's zero; `idle`: in between
(precharge, opening), nothing is counted."""


@dataclass(frozen=True)
class EstimatorStep(Generic[S]):
    """One call of `PackEstimator.update`."""

    snapshot: S
    current_a: float | None
    """The mean reading over the window (`idle`: 0.0); None: unknown."""
    dt_s: float
    end_s: float
    """The window's end: the time of its last reading."""
    state: StringState

    @property
    def string_open(self) -> bool:
        return self.state == "open"


class EstimatorFeed(Generic[S]):
    """See the module docstring. `add` once per cycle; it returns the steps to run, in order."""

    def __init__(self, period_s: float = ESTIMATE_PERIOD_S) -> None:
        if not period_s > 0.0:
            raise ValueError(f"period {period_s:g} s must be positive")
        self.period_s = period_s
        self._snapshot: S | None = None
        self._fed: S | None = None
        """The snapshot the last step read: one not seen since is new."""
        self._state: tuple[StringState, bool] | None = None
        self._charge_as = 0.0
        self._dt_s = 0.0
        self._end_s = 0.0
        self._last_step_s: float | None = None
        self._last_reading_a = 0.0

    def add(
        self, snapshot: S, state: StringState, current_a: float | None, dt_s: float, now_s: float
    ) -> list[EstimatorStep[S]]:
        steps: list[EstimatorStep[S]] = []
        if state == "idle":
            current_a = 0.0  # nothing counted, whatever the sensor reads
        key = (state, current_a is None)
        if self._state is not None and key != self._state and self._dt_s > 0.0:
            steps.append(self._take())
        if key != self._state:
            self._state = key
            changed = True
        else:
            changed = False
        reading = 0.0 if current_a is None else current_a
        self._charge_as += reading * dt_s
        self._last_reading_a = reading
        self._dt_s += dt_s
        self._end_s = now_s
        self._snapshot = snapshot
        due = (
            changed
            or snapshot is not self._fed
            or self._last_step_s is None
            or now_s - self._last_step_s >= self.period_s
        )
        if due:
            steps.append(self._take())
        return steps

    def flush(self) -> EstimatorStep[S] | None:
        """The readings not counted yet (before the records are saved for good)."""
        return self._take() if self._snapshot is not None and self._dt_s > 0.0 else None

    def _take(self) -> EstimatorStep[S]:
        assert self._state is not None and self._snapshot is not None
        state, unknown = self._state
        dt = self._dt_s
        if unknown:
            current: float | None = None
        else:
            # no time in the window (the first cycle): the reading itself
            current = self._charge_as / dt if dt > 0.0 else self._last_reading_a
        step = EstimatorStep(self._snapshot, current, dt, self._end_s, state)
        self._fed = self._snapshot
        self._last_step_s = self._end_s
        self._charge_as = self._dt_s = 0.0
        return step
