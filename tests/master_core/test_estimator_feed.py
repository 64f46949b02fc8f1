"""When the estimator steps, and the current each step counts (`estimator_feed`)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.estimator_feed import (
    ESTIMATE_PERIOD_S,
    EstimatorFeed,
    EstimatorStep,
    StringState,
)

Cycle = tuple[bool, StringState, float | None, float]
"""A new snapshot?, the string's state, the reading (A), the time since the last cycle (s)."""

cycles = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(["counted", "open", "idle"]),
        st.one_of(st.none(), st.floats(-200.0, 200.0)),
        st.floats(0.001, 0.3),
    ),
    min_size=1,
    max_size=120,
)


Steps = list[EstimatorStep[int]]


def run(feed: EstimatorFeed[int], plan: list[Cycle]) -> tuple[Steps, list[float]]:
    snapshot, now = 0, 1000.0
    steps: Steps = []
    times = []
    for new, state, current, dt in plan:
        snapshot += new
        now += dt
        times.append(now)
        steps += feed.add(snapshot, state, current, dt, now)
    return steps, times


@settings(max_examples=300, deadline=None)
@given(cycles)
def test_no_reading_is_lost_or_counted_twice(plan: list[Cycle]) -> None:
    """Each state's time, and each counted or open window's charge, add up over the steps to
    what the cycles read (a flush counts the rest), and a step never mixes states."""
    feed: EstimatorFeed[int] = EstimatorFeed()
    steps, _ = run(feed, plan)
    rest = feed.flush()
    steps += [rest] if rest is not None else []
    for state in ("counted", "open", "idle"):
        for unknown in (False, True):
            mine = [
                c[3] for c in plan
                if c[1] == state and (c[2] is None and state != "idle") == unknown
            ]  # fmt: skip
            taken = [s.dt_s for s in steps if s.state == state and (s.current_a is None) == unknown]
            assert math.isclose(sum(taken), sum(mine), abs_tol=1e-9)
    assert all(s.current_a == 0.0 for s in steps if s.state == "idle")
    want_as = sum(c[2] * c[3] for c in plan if c[1] != "idle" and c[2] is not None)
    got_as = sum(s.current_a * s.dt_s for s in steps if s.current_a is not None)
    assert math.isclose(got_as, want_as, rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(sum(s.dt_s for s in steps), sum(c[3] for c in plan), abs_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(cycles)
def test_steps_on_each_new_picture_and_at_least_every_period(plan: list[Cycle]) -> None:
    feed: EstimatorFeed[int] = EstimatorFeed()
    steps, times = run(feed, plan)
    ends = [s.end_s for s in steps]
    assert ends == sorted(ends)
    # every picture the cycles saw is stepped on in the cycle it arrived
    snapshot = 0
    for (new, _state, _current, _dt), now in zip(plan, times, strict=True):
        snapshot += new
        if new:
            assert any(s.snapshot == snapshot and s.end_s == now for s in steps)
    # between two steps, no cycle lies later than a period after the first
    stepped = set(ends)
    last = None
    for now in times:
        if now in stepped:
            last = now
        else:
            assert last is not None and now - last < ESTIMATE_PERIOD_S


def test_a_change_of_state_counts_the_window_before_it_at_its_own_end() -> None:
    feed: EstimatorFeed[str] = EstimatorFeed()
    assert [s.current_a for s in feed.add("a", "counted", 10.0, 0.05, 1.0)] == [10.0]
    assert feed.add("a", "counted", 20.0, 0.02, 1.02) == []
    assert feed.add("a", "counted", 30.0, 0.02, 1.04) == []
    before, after = feed.add("a", "open", 0.3, 0.05, 1.09)
    assert (before.end_s, before.dt_s, before.string_open) == (1.04, 0.04, False)
    assert math.isclose(before.current_a or 0.0, 25.0)
    assert (after.end_s, after.current_a, after.string_open) == (1.09, 0.3, True)
    # unknown readings: a window of their own, counted as unknown
    (unknown,) = feed.add("a", "open", None, 0.05, 1.14)
    assert unknown.current_a is None and unknown.string_open
    (idle,) = feed.add("b", "idle", 5.0, 0.05, 1.19)
    assert idle.current_a == 0.0 and not idle.string_open
    assert feed.flush() is None
