"""The zero-offset learner: converges to a constant offset, never subtracts more than its
bound, takes no current while the string is closed and not resting, and is slow."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.sensor_offsets import ZeroOffsetLearner, ZeroOffsetParams

BOUND_A = 0.1

offsets = st.floats(-BOUND_A, BOUND_A)
steps = st.floats(0.01, 20.0)
currents = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32))
samples = st.tuples(steps, currents, st.booleans(), st.booleans())


def learner(**kw: float) -> ZeroOffsetLearner:
    return ZeroOffsetLearner(ZeroOffsetParams(bound_a=BOUND_A, **kw))


@settings(max_examples=60, deadline=None)
@given(offset=offsets, noise=st.floats(0.0, 0.05), seed=st.integers(0, 2**16), rest=st.booleans())
def test_it_converges_to_a_constant_offset(
    offset: float, noise: float, seed: int, rest: bool
) -> None:
    """Open string, or a settled rest: the learned offset is the sensor's, within the noise's
    standard error, and all of it is subtracted."""
    rng = np.random.default_rng(seed)
    z = learner()
    for _ in range(2000):  # 2000 s of samples at 1 s
        z.update(1.0, offset + rng.uniform(-noise, noise), string_open=not rest, resting=rest)
    assert z.learned_a == pytest.approx(offset, abs=0.005)
    assert z.corrected_a(5.0 + offset) == pytest.approx(5.0, abs=0.005)
    assert abs(z.correction_a) <= BOUND_A
    assert not z.beyond_bound


@settings(max_examples=200, deadline=None)
@given(st.lists(samples, max_size=300))
def test_it_never_subtracts_more_than_its_bound(
    seq: list[tuple[float, float | None, bool, bool]],
) -> None:
    z = learner(min_evidence_s=0.0)
    for dt, current, string_open, resting in seq:
        z.update(dt, current, string_open=string_open, resting=resting)
        assert abs(z.correction_a) <= BOUND_A
        learned = z.learned_a
        assert learned is None or math.isfinite(learned)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(steps, currents), max_size=300))
def test_current_while_closed_and_not_resting_is_ignored(
    seq: list[tuple[float, float | None]],
) -> None:
    z = learner(min_evidence_s=0.0)
    for dt, current in seq:
        assert not z.update(dt, current, string_open=False, resting=False)
    assert z.learned_a is None and z.evidence_s == 0.0 and z.correction_a == 0.0


@settings(max_examples=100, deadline=None)
@given(current=st.floats(0.1501, 500.0), sign=st.sampled_from([-1.0, 1.0]))
def test_a_current_at_rest_beyond_the_gate_is_a_load_not_an_offset(
    current: float, sign: float
) -> None:
    z = learner()
    for _ in range(1000):
        assert not z.update(1.0, sign * current, string_open=False, resting=True)
    assert z.learned_a is None


def test_an_offset_beyond_the_bound_is_published_not_subtracted() -> None:
    z = learner()
    for _ in range(1000):
        z.update(1.0, 0.3, string_open=True, resting=False)
    assert z.learned_a == pytest.approx(0.3)
    assert z.beyond_bound and z.correction_a == 0.0
    assert z.corrected_a(-10.0) == -10.0


def test_an_offset_a_little_beyond_the_bound_is_subtracted_up_to_it() -> None:
    """A sensor at its limit read through noise: no cliff at the specification."""
    z = learner()
    for _ in range(1000):
        z.update(1.0, -0.12, string_open=True, resting=False)
    assert not z.beyond_bound and z.correction_a == -BOUND_A


@settings(max_examples=100, deadline=None)
@given(offset=st.floats(-0.0005, 0.0005))
def test_an_offset_below_the_sensors_resolution_is_not_subtracted(offset: float) -> None:
    z = learner()
    for _ in range(1000):
        z.update(1.0, offset, string_open=True, resting=False)
    assert z.learned_a == pytest.approx(offset) and z.correction_a == 0.0


def test_an_offset_at_the_specification_limit_is_subtracted() -> None:
    z = learner()
    for _ in range(1000):
        z.update(5.0, -0.1, string_open=False, resting=True)
    assert not z.beyond_bound and z.correction_a == pytest.approx(-0.1)


def test_it_is_unknown_until_enough_samples() -> None:
    z = learner()
    for _ in range(599):
        z.update(1.0, 0.05, string_open=True, resting=False)
    assert z.learned_a is None and z.correction_a == 0.0
    z.update(1.0, 0.05, string_open=True, resting=False)
    assert z.learned_a == pytest.approx(0.05)


def test_it_is_slow() -> None:
    """After an hour's learning a short different stretch moves it in proportion to its
    length over the time constant; a long gap between samples counts as one step."""
    z = learner()
    for _ in range(3600):
        z.update(1.0, 0.05, string_open=True, resting=False)
    for _ in range(1200):  # twenty minutes at rest with a standing 0.14 A draw
        z.update(1.0, 0.14, string_open=False, resting=True)
    learned = z.learned_a
    assert learned is not None and 0.05 < learned < 0.05 + 0.09 * 1200 / 3600
    z.update(86400.0, -0.1, string_open=True, resting=False)
    assert z.learned_a is not None and z.learned_a > 0.05 - 0.15 * 6 / 3600


def test_the_small_currents_that_end_a_rest_are_not_taken() -> None:
    """A load or PV ramp starts while the counter still rests: the rest's last `hold_s` are
    held back, and dropped when the current leaves the rest."""
    z = learner()
    for _ in range(3600):
        z.update(1.0, 0.0, string_open=True, resting=False)
    for _ in range(120):  # ten minutes of rest at 5 s
        assert z.update(5.0, 0.0, string_open=False, resting=True)
    for ramp_a in (0.05, 0.1, 0.14, 0.14):
        z.update(5.0, ramp_a, string_open=False, resting=True)
    assert not z.update(5.0, 0.5, string_open=False, resting=True)
    assert z.learned_a == 0.0


def test_the_small_currents_that_begin_a_rest_are_not_taken() -> None:
    z = learner()
    for _ in range(3600):
        z.update(1.0, 0.0, string_open=True, resting=False)
    for fading_a in (0.14, 0.1, 0.05, 0.02):  # the evening's PV fading out
        z.update(5.0, fading_a, string_open=False, resting=True)
    for _ in range(240):  # twenty minutes of rest at 5 s
        assert z.update(5.0, 0.0, string_open=False, resting=True)
    assert z.learned_a == 0.0


def test_its_state_round_trips() -> None:
    z = learner()
    for _ in range(700):
        z.update(1.0, -0.07, string_open=True, resting=False)
    again = learner()
    again.load_state(**{k: v for k, v in z.state().items()})
    assert again.learned_a == z.learned_a and again.evidence_s == z.evidence_s
    with pytest.raises(ValueError):
        again.load_state(math.nan, 10.0)
    with pytest.raises(ValueError):
        again.load_state(0.0, -1.0)
