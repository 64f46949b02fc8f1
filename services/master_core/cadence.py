"""The master's periodic work, each task at its own rate (pure: time is passed in).

One table of tasks and periods, asked once per cycle which are due. The cycle runs on a fixed
grid (`service.PERIOD_S`) and its wake-ups are late by the scheduler's jitter, so a task is
due once `period - tolerance` has passed since it last ran (the tolerance at most half the
period): with half a grid slot of tolerance,
a task whose period is a whole number of slots runs on every n-th slot, never a slot late
because the last wake-up happened to be later than this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Cadence:
    periods_s: Mapping[str, float]
    """Task -> period."""
    tolerance_s: float
    last_s: dict[str, float | None] = field(default_factory=dict)
    """Task -> when it last ran; None (or absent): never, so due at once."""

    def __post_init__(self) -> None:
        if not self.tolerance_s >= 0.0:
            raise ValueError(f"tolerance {self.tolerance_s:g} s must not be negative")
        for task, period_s in self.periods_s.items():
            if not period_s > 0.0:
                raise ValueError(f"{task}: period {period_s:g} s must be positive")
        unknown = set(self.last_s) - set(self.periods_s)
        if unknown:
            raise ValueError(f"no period for {sorted(unknown)}")
        # at most half a period: a task never runs at twice its rate
        self._early_s = {
            task: min(self.tolerance_s, period_s / 2) for task, period_s in self.periods_s.items()
        }

    def due(self, now_s: float) -> frozenset[str]:
        """The tasks due at `now_s`, marked as run now."""
        early = self._early_s
        due = frozenset(
            task
            for task, period_s in self.periods_s.items()
            if (last := self.last_s.get(task)) is None or now_s - last >= period_s - early[task]
        )
        for task in due:
            self.last_s[task] = now_s
        return due

    def ran(self, task: str, now_s: float) -> None:
        """`task` ran besides its rate (the pack state at once on a contactor change)."""
        if task not in self.periods_s:
            raise ValueError(f"no period for {task!r}")
        self.last_s[task] = now_s
