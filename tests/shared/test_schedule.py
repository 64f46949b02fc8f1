"""The fixed-rate schedule: no drift, overruns counted, slots skipped rather than bunched."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.schedule import FixedRateSchedule


@given(st.lists(st.floats(0.0, 0.09), min_size=1, max_size=500))
def test_jitter_below_one_period_never_drifts(jitters: list[float]) -> None:
    s = FixedRateSchedule(period_s=0.1, start_s=10.0)
    for j in jitters:
        woke = s.deadline_s + j  # work finished j seconds after the slot
        assert s.advance(woke) == 0
    assert s.overruns == 0
    assert abs(s.deadline_s - (10.0 + 0.1 * len(jitters))) < 1e-9


@given(st.floats(0.1001, 1.0))
def test_an_overrun_skips_to_the_next_free_slot(late_s: float) -> None:
    s = FixedRateSchedule(period_s=0.1, start_s=0.0)
    missed = s.advance(late_s)
    assert missed >= 1
    assert s.deadline_s > late_s
    assert s.deadline_s - late_s <= 0.1 + 1e-9
    assert s.overruns == missed


def test_retime_starts_a_new_grid_now() -> None:
    s = FixedRateSchedule(period_s=0.1, start_s=0.0)
    s.advance(0.05)
    s.retime(2.0, now_s=7.3)
    assert s.deadline_s == 7.3
    s.advance(7.31)
    assert s.deadline_s == 9.3
