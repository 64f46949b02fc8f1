"""The per-channel voltage offset learner: learns a bias pattern relative to the median, not a
common-mode shift; bounded; only from a settled rest after a full anchor with little charge
moved; stored and refused under another layout; applied to what the counter reads."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_soc_field import _Snap
from services.master_core.estimation.soc import OcvCurve
from services.master_core.estimation.voltage_offsets import (
    VoltageOffsetLearner,
    VoltageOffsetParams,
    soc_spread_v,
)
from services.master_core.estimator import PackEstimator
from services.master_core.pack import PackSnapshot
from services.master_core.persisted import CellOffsetsRecord, load, save
from shared.config import SystemConfig
from shared.config.chemistry import ChemistryOverrides
from shared.event_store import Store

BOUND_V = 0.05
N_ANCHORS = 4

biases = st.lists(st.floats(-BOUND_V, BOUND_V), min_size=3, max_size=16)


def anchor_and_rest(
    learner: VoltageOffsetLearner,
    residual_v: np.ndarray,
    spread_v: float = 0.002,
    moved_pct: float = 0.5,
) -> bool:
    """One full anchor of every cell, a little charge, a settled rest reading OCV + residual."""
    n = learner.n_cells
    learner.full_anchor(np.ones(n, dtype=bool))
    learner.count(np.full(n, moved_pct))
    ocv = np.full(n, 3.4)
    return learner.settled_rest(ocv + residual_v, ocv, np.full(n, spread_v))


@settings(max_examples=80, deadline=None)
@given(
    # within ±bound/2, so that each channel's part relative to the median is within the bound
    # (beyond 1.5 x the bound it is out of specification and not subtracted: tested below)
    bias=st.lists(st.floats(-BOUND_V / 2, BOUND_V / 2), min_size=3, max_size=16),
    table_v=st.floats(-0.03, 0.03),
    noise=st.floats(0.0, 0.003),
    seed=st.integers(0, 2**16),
)
def test_a_bias_pattern_is_learned_relative_to_the_median(
    bias: list[float], table_v: float, noise: float, seed: int
) -> None:
    """Each rest reads bias + the table's error (common) + noise: after N anchors each channel's
    correction is its bias less the median bias, within the noise and the 1 mV steps."""
    rng = np.random.default_rng(seed)
    b = np.asarray(bias)
    learner = VoltageOffsetLearner(len(b))
    assert np.all(np.isnan(learner.learned_v)) and learner.max_abs_correction_v is None
    for _ in range(N_ANCHORS):
        residual = b + table_v + rng.uniform(-noise, noise, size=len(b))
        assert anchor_and_rest(learner, residual)
    expected = b - np.median(b)
    # the median of noisy residuals moves by up to the noise too; 0.5 mV for the rounding
    assert learner.correction_v == pytest.approx(expected, abs=2.0 * noise + 0.0005 + 1e-9)
    assert learner.learned_count == len(b)


@settings(max_examples=60, deadline=None)
@given(shift=st.floats(-0.2, 0.2), n=st.integers(3, 16), rests=st.integers(1, 8))
def test_a_common_mode_shift_is_not_learned_as_a_channel_offset(
    shift: float, n: int, rests: int
) -> None:
    """Every channel off by the same (the table's error, a common SOC error): nothing per
    channel."""
    learner = VoltageOffsetLearner(n)
    for _ in range(rests):
        anchor_and_rest(learner, np.full(n, shift))
    assert np.all(learner.correction_v == 0.0)


@settings(max_examples=80, deadline=None)
@given(
    residuals=st.lists(
        st.lists(st.floats(-10.0, 10.0), min_size=5, max_size=5), min_size=1, max_size=8
    ),
    bound=st.floats(0.001, 0.1),
)
def test_what_is_subtracted_stays_within_the_bound(
    residuals: list[list[float]], bound: float
) -> None:
    """Whatever it is fed, the correction is within the bound, and zero beyond the margin."""
    learner = VoltageOffsetLearner(5, VoltageOffsetParams(bound_v=bound, min_anchors=1))
    for r in residuals:
        anchor_and_rest(learner, np.asarray(r))
        corr = learner.correction_v
        assert np.all(np.abs(corr) <= bound + 1e-12)
        assert np.all(corr[learner.beyond_bound] == 0.0)


@settings(max_examples=60, deadline=None)
@given(bias=biases, moved=st.floats(2.01, 50.0))
def test_nothing_is_learned_without_a_settled_rest_soon_after_a_full_anchor(
    bias: list[float], moved: float
) -> None:
    b = np.asarray(bias) + 0.01
    n = len(b)
    ocv, spread = np.full(n, 3.4), np.full(n, 0.002)
    learner = VoltageOffsetLearner(n, VoltageOffsetParams(min_anchors=1))
    # a settled rest with no full anchor before it
    assert not learner.settled_rest(ocv + b, ocv, spread)
    # a full anchor, then more charge moved than the anchor's SOC survives
    learner.full_anchor(np.ones(n, dtype=bool))
    learner.count(np.full(n, moved))
    assert not learner.armed
    assert not learner.settled_rest(ocv + b, ocv, spread)
    # one rest per anchor: the anchor is used up by its rest
    learner.full_anchor(np.ones(n, dtype=bool))
    assert learner.settled_rest(ocv + b, ocv, spread)
    taken = learner.anchors.copy()
    assert not learner.settled_rest(ocv + b, ocv, spread)
    assert np.array_equal(learner.anchors, taken) and learner.taken == 1


def test_cells_whose_counted_soc_is_too_uncertain_are_not_taken() -> None:
    """A cell whose SOC sigma moves its OCV by more than max_soc_spread_v (an anchored cell on
    a steep top, an unanchored one) is left out; fewer than min_cells: no rest is taken."""
    learner = VoltageOffsetLearner(4, VoltageOffsetParams(min_anchors=1))
    ocv = np.full(4, 4.1)
    residual = np.array([0.04, -0.02, 0.0, 0.01])
    spread = np.array([0.002, 0.002, 0.002, 0.03])
    learner.full_anchor(np.array([True, True, True, True]))
    assert learner.settled_rest(ocv + residual, ocv, spread)
    assert learner.anchors.tolist() == [1, 1, 1, 0]
    assert learner.correction_v.tolist() == pytest.approx([0.04, -0.02, 0.0, 0.0])
    learner.full_anchor(np.array([True, True, False, False]))  # two cells: no median
    assert not learner.settled_rest(ocv + residual, ocv, spread)


def test_the_soc_spread_is_the_ocv_span_of_the_sigma() -> None:
    curve = OcvCurve([0.0, 50.0, 100.0], [3.0, 3.5, 4.2])
    got = soc_spread_v(curve, [50.0, 100.0, 0.0], [10.0, 10.0, 0.0])
    # 40..60 % on 10 and 14 mV/%; at the top only 90..100 % counts
    assert got == pytest.approx([0.5 * (0.1 + 0.14), 0.5 * 0.14, 0.0])


def test_stored_offsets_are_checked() -> None:
    learner = VoltageOffsetLearner(3)
    with pytest.raises(ValueError):
        learner.load_state([0.0, 0.0], [1, 1])
    with pytest.raises(ValueError):
        learner.load_state([0.0, float("nan"), 0.0], [1, 1, 1])
    with pytest.raises(ValueError):
        learner.load_state([0.0, 0.0, 0.0], [1, -1, 1])
    learner.load_state([0.01, 0.02, 0.03], [9, 2, 0])
    assert learner.anchors.tolist() == [4, 2, 0]  # capped at anchors_averaged
    assert learner.correction_v.tolist() == pytest.approx([0.01, 0.02, 0.0])


def _config(modules: int = 1, chemistry: str = "NMC") -> SystemConfig:
    return SystemConfig.from_preset(
        chemistry, system_id="s", modules=modules, cells_per_module=4, cell_capacity_ah=100.0
    )


def test_learned_offsets_survive_a_restart_and_are_refused_under_another_layout(
    tmp_path: Path,
) -> None:
    config = _config()
    est = PackEstimator(config)
    est.update(cast(PackSnapshot, _Snap(np.full(4, 3.7))), 0.0, 0.0, 0.0)
    est.cell_offsets.load_state([0.012, -0.007, 0.0, 0.02], [3, 3, 3, 3])
    records = est.records()
    assert records is not None and records.cell_offsets is not None
    store = Store(tmp_path / "m.sqlite")
    for record in records.all():
        save(store, record, ts=1.0)
    loaded = load(store, CellOffsetsRecord, config)
    assert loaded.refusal is None and loaded.record == records.cell_offsets
    again = PackEstimator(config)
    again.restore(type(records)(cell_offsets=loaded.record))
    assert again.cell_offsets.correction_v.tolist() == pytest.approx([0.012, -0.007, 0.0, 0.02])
    # other channels (another layout) or another chemistry's table: learned again
    for other in (_config(modules=2), _config(chemistry="LFP")):
        assert load(store, CellOffsetsRecord, other).refusal is not None
        fresh = PackEstimator(other)
        fresh.restore(type(records)(cell_offsets=loaded.record))
        assert fresh.cell_offsets.learned_count == 0
    store.close()


def test_the_counter_reads_the_channels_less_their_offsets() -> None:
    """The estimator subtracts the learned offsets from what the counter reads (its start from
    rest here); the snapshot itself, which protection reads, is left as it was."""
    offsets = np.array([0.03, -0.03, 0.0, 0.0])
    readings = np.array([3.73, 3.67, 3.7, 3.7])
    est = PackEstimator(_config())
    est.cell_offsets.load_state(offsets, [4, 4, 4, 4])
    snap = _Snap(readings.copy())
    est.update(cast(PackSnapshot, snap), 0.0, 0.0, 0.0)
    plain = PackEstimator(_config())
    plain.update(cast(PackSnapshot, _Snap(readings - offsets)), 0.0, 0.0, 0.0)
    assert est.counter.soc_pct == pytest.approx(plain.counter.soc_pct)
    assert np.ptp(est.counter.soc_pct) == pytest.approx(0.0, abs=1e-9)
    assert np.array_equal(snap.cell_v, readings)


# A table of these cells with a flat top (2 mV/% above 90 %): the anchor's 3 % sigma moves the
# OCV by 3 mV there, so the rest after a full anchor is taken (`max_soc_spread_v`).
FLAT_TOP = ChemistryOverrides(
    ocv_table_soc_pct=(0.0, 10.0, 50.0, 90.0, 100.0),
    ocv_table_v=(3.2, 3.5, 3.7, 4.10, 4.12),
)
BIAS_V = np.array([0.02, -0.01, 0.0, -0.02, 0.015, 0.005])


def _cycle(est: PackEstimator, t: float, rest_s: float) -> float:
    """Discharge, charge, the CV end at the tail current (a full anchor), then a rest; each
    channel reads its cell + BIAS_V. Returns the time at the end."""
    phases = (
        (1800.0, -20.0, 3.9),
        (1800.0, 20.0, 4.1),
        (60.0, 3.0, 4.2),  # the tail at charge_v: full after anchor_hold_s
        (rest_s, 0.0, 4.12),  # rested at the table's 100 %
    )
    for duration_s, current_a, cell_v in phases:
        for _ in range(int(duration_s / 5.0)):
            t += 5.0
            snap = _Snap(np.full(len(BIAS_V), cell_v) + BIAS_V)
            est.update(cast(PackSnapshot, snap), current_a, 5.0, t)
    return t


def test_the_estimator_learns_the_offsets_at_rests_after_full_anchors() -> None:
    config = SystemConfig.from_preset(
        "NMC", system_id="s", modules=1, cells_per_module=6, overrides=FLAT_TOP
    )
    est = PackEstimator(config)
    t = _cycle(est, 0.0, 1500.0)
    assert est.cell_offsets.taken == 1 and est.cell_offsets.learned_count == 0
    assert est.cell_offsets.max_abs_correction_v is None
    for _ in range(2):
        t = _cycle(est, t, 1500.0)
    assert est.cell_offsets.taken == 3
    expected = BIAS_V - np.median(BIAS_V)
    assert est.cell_offsets.correction_v == pytest.approx(expected, abs=0.0011)
    assert est.cell_offsets.max_abs_correction_v == pytest.approx(0.022, abs=0.0011)


def test_no_offset_is_learned_from_a_rest_too_short_to_read() -> None:
    config = SystemConfig.from_preset(
        "NMC", system_id="s", modules=1, cells_per_module=6, overrides=FLAT_TOP
    )
    est = PackEstimator(config)
    t = 0.0
    for _ in range(3):
        t = _cycle(est, t, 240.0)  # under rest_time_s
    assert est.counter.anchors >= 3
    assert est.cell_offsets.taken == 0 and est.cell_offsets.learned_count == 0
