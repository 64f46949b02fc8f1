"""The generic level state machine: debounced trip, hysteresis release, latch, unknown values."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.master_core.level_monitor import TIME_TOLERANCE_S, LevelMonitor
from shared.config.protection import Direction
from tests.master_core.level_spec import ZONES, LevelSpec, zone_value

PERIOD_S = 0.1


@st.composite
def specs(draw: st.DrawFn) -> LevelSpec:
    direction: Direction = draw(st.sampled_from(("high", "low")))
    threshold = draw(st.floats(-1000.0, 1000.0))
    hysteresis = draw(st.one_of(st.just(0.0), st.floats(0.0, 100.0)))
    release = threshold - hysteresis if direction == "high" else threshold + hysteresis
    delay = draw(st.one_of(st.sampled_from((0.0, 0.1, 0.2, 0.5, 1.0, 2.0)), st.floats(0.0, 3.0)))
    return LevelSpec(direction, threshold, release, delay, latching=draw(st.booleans()))


@st.composite
def traces(draw: st.DrawFn, spec: LevelSpec) -> list[tuple[float | None, bool, bool]]:
    """(value, armed, reset after the sample) per sample, as runs of one zone."""
    out: list[tuple[float | None, bool, bool]] = []
    for _ in range(draw(st.integers(1, 12))):
        zone = draw(st.sampled_from(ZONES))
        armed = draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True
        for _ in range(draw(st.integers(1, 40))):
            out.append((zone_value(draw, spec, zone), armed, draw(st.integers(0, 15)) == 0))
    return out


def monitor_of(spec: LevelSpec) -> LevelMonitor:
    return LevelMonitor(
        spec.direction, spec.threshold, spec.release, spec.delay_s, latching=spec.latching
    )


@st.composite
def sample_times(draw: st.DrawFn, n: int) -> list[float]:
    """`n` sample time stamps, never going back: a steady period, a jittery one (a slave's
    wake-up latency, either side of the period) or arbitrary gaps (late, lost and coalesced
    samples, two modules sampled at the same instant)."""
    t = draw(st.floats(0.0, 1e5))
    kind = draw(st.sampled_from(("steady", "jitter", "irregular")))
    period = draw(st.one_of(st.just(PERIOD_S), st.floats(0.01, 1.0)))
    out = []
    for _ in range(n):
        out.append(t)
        if kind == "steady":
            t += period
        elif kind == "jitter":
            t += period + draw(st.floats(-0.005, 0.005))
        else:
            t += draw(st.one_of(st.just(0.0), st.floats(0.0, 1.5)))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_level_rules_hold_on_random_traces(data: st.DataObject) -> None:
    """No missed trip, no early trip, release only past hysteresis, latch and reset: in sample
    time, on samples at any time stamps (`level_spec.LevelSpec`)."""
    spec = data.draw(specs())
    trace = data.draw(traces(spec))
    times = data.draw(sample_times(len(trace)))
    m = monitor_of(spec)
    for (value, armed, reset), now in zip(trace, times, strict=True):
        change = m.update(value, now, armed=armed)
        was = spec.active
        spec.step(value, now, m.active, armed=armed)
        assert change == (
            "raise" if m.active and not was else "clear" if was and not m.active else None
        )
        if reset:
            spec.reset(m.reset())
            assert spec.active == m.active


@settings(max_examples=200, deadline=None)
@given(specs(), st.integers(0, 60), st.floats(0.0, 1e4))
def test_no_missed_trip_on_a_steady_excursion(spec: LevelSpec, extra: int, t0: float) -> None:
    """Beyond for the delay plus one sample period: active at the end of the run."""
    m = monitor_of(spec)
    v = math.nextafter(spec.threshold, math.inf if spec.direction == "high" else -math.inf)
    samples = math.ceil(spec.delay_s / PERIOD_S) + 2 + extra
    for k in range(samples):
        m.update(v, t0 + k * PERIOD_S)
    assert m.active


@settings(max_examples=200, deadline=None)
@given(specs(), st.floats(0.0, 1e4))
def test_no_early_trip_when_interrupted_just_before_the_delay(spec: LevelSpec, t0: float) -> None:
    """Beyond for just under the delay (by more than the resolution of sample times), back at
    the threshold, again: never trips."""
    assume(spec.delay_s >= 10 * TIME_TOLERANCE_S)
    m = monitor_of(spec)
    beyond = spec.threshold + (1.0 if spec.direction == "high" else -1.0)
    run = math.floor((spec.delay_s - 2 * TIME_TOLERANCE_S) / PERIOD_S) + 1  # just under the delay
    k = 0
    for _ in range(3):
        for _ in range(run):
            m.update(beyond, t0 + k * PERIOD_S)
            k += 1
        assert not m.active
        m.update(spec.threshold, t0 + k * PERIOD_S)  # at the threshold is not beyond
        k += 1


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_trip_comes_at_exactly_the_first_sample_a_delay_after_the_crossing(
    data: st.DataObject,
) -> None:
    """Every sample beyond, at irregular time stamps: the level raises at the first sample whose
    time stamp is at least the delay after the first one, and at no other."""
    spec = data.draw(specs())
    times = data.draw(sample_times(data.draw(st.integers(1, 60))))
    v = math.nextafter(spec.threshold, math.inf if spec.direction == "high" else -math.inf)
    m = monitor_of(spec)
    changes = [m.update(v, t) for t in times]
    due = [k for k, t in enumerate(times) if t - times[0] >= spec.delay_s - TIME_TOLERANCE_S]
    assert changes == ["raise" if k == (due or [None])[0] else None for k in range(len(times))]


def test_a_late_jittered_sample_waits_for_the_next() -> None:
    """The fifth sample 2 ms short of a 0.4 s delay does not trip (never early, beyond the
    1 ms resolution of sample times); the next one does, though the stretch has lasted longer
    than the delay by then."""
    m = LevelMonitor("high", 4.25, 4.05, 0.4, latching=True)
    times = [10.0, 10.1003, 10.2, 10.3001, 10.398, 10.5]
    assert [m.update(4.3, t) for t in times] == [None] * 5 + ["raise"]


def test_a_whole_number_of_periods_completes_at_its_sample_despite_jitter() -> None:
    """Six samples stamped with microseconds of scheduling jitter span 0.5 s give or take a
    few microseconds: the sixth completes a 0.5 s delay either way, never the seventh."""
    for jitter_s in (-5e-6, 0.0, 5e-6):
        m = LevelMonitor("high", 4.25, 4.05, 0.5, latching=True)
        times = [100.0 + k * PERIOD_S for k in range(5)] + [100.5 + jitter_s, 100.6]
        assert [m.update(4.3, t) for t in times].index("raise") == 5


def test_trip_time_counts_from_the_first_beyond_sample() -> None:
    m = LevelMonitor("high", 4.25, 4.05, 0.5, latching=True)
    times = [100.0 + k * PERIOD_S for k in range(10)]
    changes = [m.update(4.3, t) for t in times]
    # Six samples span 0.5 s: the sixth raises.
    assert changes.index("raise") == 5
    assert m.trip_value == 4.3


def test_zero_delay_trips_on_the_first_sample() -> None:
    m = LevelMonitor("low", 3.0, 3.5, 0.0)
    assert m.update(3.5, 0.0) is None
    assert m.update(2.9, 0.1) == "raise"


def test_at_threshold_is_not_beyond_and_at_release_is_not_released() -> None:
    m = LevelMonitor("high", 10.0, 8.0, 0.0)
    assert m.update(10.0, 0.0) is None
    assert m.update(10.01, 0.1) == "raise"
    assert m.update(8.0, 0.2) is None and m.active
    assert m.update(7.99, 0.3) == "clear"


def test_inside_threshold_restarts_the_timer_but_band_keeps_an_active_level() -> None:
    m = LevelMonitor("high", 10.0, 8.0, 0.3)
    for k, v in enumerate([11, 11, 11, 9, 11, 11, 11]):
        m.update(v, k * PERIOD_S)
    assert not m.active  # 0.3 s never passed in one stretch
    m.update(11, 0.7)
    assert m.active
    m.update(9, 0.8)  # inside the threshold, not past release
    assert m.active


@pytest.mark.parametrize("unknown", [None, math.nan])
def test_unknown_holds_timer_and_state(unknown: float | None) -> None:
    m = LevelMonitor("high", 10.0, 8.0, 0.5, latching=True)
    m.update(11, 0.0)
    for k in range(1, 10):
        assert m.update(unknown, k * PERIOD_S) is None
    assert not m.active  # unknown never trips
    assert m.update(11, 1.0) == "raise"  # the gap did not restart the timer
    m.update(5, 1.1)
    m.update(unknown, 1.2)
    assert not m.released and not m.reset()  # unknown is not a release
    m.update(5, 1.3)
    assert m.reset() and not m.active


def test_unknown_never_clears_a_warning() -> None:
    m = LevelMonitor("low", 5.0, 10.0, 0.0)
    m.update(0.0, 0.0)
    for k in range(1, 20):
        m.update(None, k * PERIOD_S)
    assert m.active


def test_disarmed_level_does_not_trip_but_still_needs_release_to_clear() -> None:
    m = LevelMonitor("high", 40.0, 35.0, 0.2)
    for k in range(10):
        m.update(45.0, k * PERIOD_S, armed=False)
    assert not m.active
    for k in range(10, 13):
        m.update(45.0, k * PERIOD_S)
    assert m.active
    m.update(38.0, 1.3, armed=False)
    assert m.active
    assert m.update(34.0, 1.4, armed=False) == "clear"


def test_latching_level_waits_for_reset() -> None:
    m = LevelMonitor("high", 10.0, 8.0, 0.0, latching=True)
    m.update(12, 0.0)
    assert not m.reset()  # still beyond
    m.update(9, 0.1)
    assert not m.reset()  # inside the band
    m.update(7, 0.2)
    assert m.active and m.reset() and not m.active
    assert not m.reset()  # nothing left to clear


@pytest.mark.parametrize(
    ("direction", "threshold", "release", "delay"),
    [
        ("high", 10.0, 11.0, 0.0),
        ("low", 10.0, 9.0, 0.0),
        ("high", 10.0, 9.0, -1.0),
        ("high", 10.0, math.nan, 0.0),
    ],
)
def test_invalid_levels_are_refused(
    direction: str, threshold: float, release: float, delay: float
) -> None:
    with pytest.raises(ValueError):
        LevelMonitor(direction, threshold, release, delay)  # type: ignore[arg-type]
