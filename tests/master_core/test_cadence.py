"""`Cadence`: each task at its own rate on a jittery grid, never a slot late, never too often."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.cadence import Cadence

GRID_S = 0.05


@settings(max_examples=200, deadline=None)
@given(
    slots=st.integers(1, 40),
    jitter=st.lists(st.floats(0.0, 0.02), min_size=200, max_size=200),
)
def test_a_task_of_n_slots_runs_on_every_nth_slot_of_a_late_grid(
    slots: int, jitter: list[float]
) -> None:
    """Wake-ups late by up to 20 ms each, independently: a task whose period is n slots runs
    on slots 0, n, 2n, ... (the tolerance absorbs the jitter), so its rate holds exactly."""
    cadence = Cadence({"task": slots * GRID_S}, tolerance_s=GRID_S / 2)
    ran = [k for k, late in enumerate(jitter) if cadence.due(k * GRID_S + late)]
    assert ran == list(range(0, len(jitter), slots))


@given(period_s=st.floats(0.01, 10.0), times=st.lists(st.floats(0.0, 100.0), max_size=50))
def test_a_task_never_runs_twice_within_half_its_period(
    period_s: float, times: list[float]
) -> None:
    """However the cycles fall (a cycle right after a trip, off the grid), a large tolerance is
    cut to half the period."""
    cadence = Cadence({"task": period_s}, tolerance_s=60.0)
    ran = [t for t in sorted(times) if cadence.due(t)]
    assert all(b - a >= period_s / 2 for a, b in pairwise(ran))


def test_first_runs_and_extra_runs() -> None:
    cadence = Cadence({"state": 0.1, "status": 5.0}, tolerance_s=0.025, last_s={"status": 0.0})
    assert cadence.due(0.0) == {"state"}  # never ran: at once; status waits a period
    assert cadence.due(0.05) == frozenset()
    cadence.ran("state", 0.06)  # published besides its rate (a contactor change)
    assert cadence.due(0.1) == frozenset()
    assert cadence.due(0.15) == {"state"}
    assert "status" in cadence.due(5.0)
    with pytest.raises(ValueError, match="no period"):
        cadence.ran("cells", 1.0)
    with pytest.raises(ValueError, match="no period"):
        Cadence({"state": 0.1}, tolerance_s=0.0, last_s={"cells": 0.0})
    with pytest.raises(ValueError, match="positive"):
        Cadence({"state": 0.0}, tolerance_s=0.0)
