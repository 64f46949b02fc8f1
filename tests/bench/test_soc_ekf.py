"""The comparison EKF of bench/soc_ekf.py: it converges, its gate holds on flat OCV, its state
round-trips, it stays in range; and its pack path (`EkfPackEstimator`) takes the counter's
anchors."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_soc_field import _Snap, field_config, hysteresis_configs
from bench.soc_ekf import EkfPackEstimator, EkfParams, EkfSoc
from services.master_core.estimation import OcvCurve
from services.master_core.pack import PackSnapshot
from shared.config import demo_config
from shared.config.chemistry import get_preset
from tests.master_core.test_estimation import CAP_AH, ECM, LFP, NMC, EcmCells


def test_ekf_converges_from_20_percent_error_on_nmc() -> None:
    # 8 cells, true SOC 82-90 % and falling to ~60 % (the steep part of the NMC table),
    # estimates start 20 % wrong either way; per-channel offset ±30 mV + 10 mV noise, current
    # offset 0.1 A + 0.1 A noise.
    rng = np.random.default_rng(3)
    n = 8
    ocv = OcvCurve.from_preset(NMC)
    cells = EcmCells(ocv, np.linspace(82.0, 90.0, n))
    start = np.clip(cells.soc_pct + np.where(np.arange(n) % 2 == 0, 20.0, -20.0), 0.0, 100.0)
    ekf = EkfSoc(
        n_cells=n,
        capacity_ah=CAP_AH,
        ocv=ocv,
        params=EkfParams(**ECM),
        initial_soc_pct=start,
        initial_std_pct=20.0,
    )
    offset = rng.uniform(-0.03, 0.03, n)
    t, dt = 0.0, 1.0
    current = 0.0
    errors = []
    for k in range(3600):
        if k % 30 == 0:
            current = float(rng.uniform(-90.0, 30.0))
        v = cells.step(dt, current) + offset + rng.normal(0.0, 0.01, n)
        t += dt
        ekf.update(t, current + 0.1 + float(rng.normal(0.0, 0.1)), v)
        errors.append(ekf.soc_pct - cells.soc_pct)
    err = np.array(errors)
    assert np.all(np.abs(start - np.linspace(82.0, 90.0, n)) >= 10.0)
    late = err[900:]  # after 15 min
    assert np.sqrt(np.mean(late**2)) < 4.0
    assert np.max(np.abs(late)) < 7.0  # offset / slope: 30 mV / ~6 mV/% = 5 %
    assert np.all(ekf.soc_std_pct < 10.0)


def test_ekf_gain_on_flat_ocv_and_the_gate() -> None:
    """On the LFP plateau a single update moves SOC by only s^2 P / (s^2 P + R) of the way
    the reading points (a few %), but 10 updates a second compound that: a +50 mV offset drags
    an ungated filter far. The default gate skips the update entirely."""
    ocv = OcvCurve.from_preset(LFP)

    def ekf(max_err: float) -> EkfSoc:
        params = EkfParams(**ECM, max_soc_error_pct=max_err)
        return EkfSoc(n_cells=1, capacity_ah=CAP_AH, ocv=ocv, params=params, initial_soc_pct=60.0)

    volts = np.array([LFP.ocv_v(60.0) + 0.05])
    ungated = ekf(1e9)
    ungated.update(0.0, 0.0, volts)
    s = float(ocv.slope_v_per_pct(60.0))
    fraction = ungated.gain_soc[0] * s  # share of the reading's implied SOC step
    assert 0.0 < fraction < 0.1
    for k in range(1, 600):
        ungated.update(k * 0.1, 0.0, volts)
    assert ungated.soc_pct[0] > 75.0

    gated = ekf(10.0)
    for k in range(600):
        gated.update(k * 0.1, 0.0, volts)
    assert gated.soc_pct[0] == pytest.approx(60.0, abs=1e-9)
    assert not gated.updated[0] and gated.gain_soc[0] == 0.0
    # On steep NMC the same filter does use the voltage.
    nmc = EkfSoc(
        n_cells=1, capacity_ah=CAP_AH, ocv=OcvCurve.from_preset(NMC), params=EkfParams(**ECM)
    )
    nmc.update(0.0, 0.0, np.array([NMC.ocv_v(75.0)]))
    assert nmc.updated[0] and nmc.gain_soc[0] > 0.0


def test_ekf_reading_on_a_knee_corrects_an_estimate_on_the_plateau() -> None:
    ocv = OcvCurve.from_preset(LFP)
    ekf = EkfSoc(
        n_cells=1, capacity_ah=CAP_AH, ocv=ocv, params=EkfParams(**ECM), initial_soc_pct=60.0
    )
    for k in range(300):  # resting at 3 % SOC (60 mV/%)
        ekf.update(float(k), 0.0, np.array([LFP.ocv_v(3.0)]))
    assert abs(ekf.soc_pct[0] - 3.0) < 3.0


def test_a_generic_table_error_weighs_the_reading() -> None:
    """The shipped NMC table is 100-230 mV off below 50 % on other cells: a reading there is no
    correction; with the cells' own table the same reading is."""
    nmc = get_preset("NMC")
    own = OcvCurve.from_preset(nmc)
    generic = OcvCurve(nmc.ocv_table_soc_pct, nmc.ocv_table_v, [0.15] * len(nmc.ocv_table_v))
    volts = np.array([nmc.ocv_v(30.0)])
    for ocv, used in ((own, True), (generic, False)):
        ekf = EkfSoc(
            n_cells=1, capacity_ah=CAP_AH, ocv=ocv, params=EkfParams(**ECM), initial_soc_pct=40.0
        )
        ekf.update(0.0, 0.0, volts)
        assert bool(ekf.updated[0]) is used


def test_state_round_trip_and_restart() -> None:
    cfg = demo_config()
    n = cfg.total_cells
    rng = np.random.default_rng(4)
    ekf = EkfSoc(
        n_cells=n,
        capacity_ah=cfg.cell_capacity_ah,
        ocv=OcvCurve.from_preset(cfg.cell_chemistry),
        params=EkfParams(**ECM),
        initial_soc_pct=rng.uniform(20, 80, n),
    )
    for k in range(50):
        ekf.update(k * 0.1, -60.0 if k % 10 < 5 else 10.0, 3.7 + rng.normal(0.0, 0.01, n))
    again = EkfSoc.from_dict(json.loads(json.dumps(ekf.to_dict())))
    assert again.to_dict() == json.loads(json.dumps(ekf.to_dict()))
    # A restored filter continues like the original (at the same instant: the time of the last
    # sample is not state, a restart starts counting anew).
    v = 3.7 + rng.normal(0.0, 0.01, n)
    ekf.update(49 * 0.1, -20.0, v)
    again.update(49 * 0.1, -20.0, v)
    assert np.array_equal(ekf.soc_pct, again.soc_pct)
    assert not again.load_state({"soc_pct": [50.0] * 3})


_samples = st.lists(
    st.tuples(
        st.floats(0.0, 10.0),  # dt
        st.floats(-200.0, 200.0),  # current
        st.one_of(st.floats(1.5, 5.0), st.just(math.nan)),  # cell voltage
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(samples=_samples, chem=st.sampled_from(["NMC", "LFP"]), start=st.floats(0.0, 100.0))
def test_soc_stays_in_range_for_any_trace(
    samples: list[tuple[float, float, float]], chem: str, start: float
) -> None:
    ocv = OcvCurve.from_preset(get_preset(chem))
    # A tiny capacity so that a short trace crosses 0 % and 100 %.
    ekf = EkfSoc(
        n_cells=2, capacity_ah=0.01, ocv=ocv, params=EkfParams(**ECM), initial_soc_pct=start
    )
    t = 0.0
    for dt, current, volts in samples:
        t += dt
        soc = ekf.update(t, current, np.array([volts, volts + 0.01]))
        assert np.all((soc >= 0.0) & (soc <= 100.0))
        assert np.all(np.isfinite(ekf.soc_std_pct))


def test_the_pack_path_takes_the_counters_full_anchor() -> None:
    est = EkfPackEstimator(field_config("NMC", 4))
    charge_v = est.counter.charge_v
    t = 0.0
    est.update(cast(PackSnapshot, _Snap(np.full(4, 3.9))), 0.0, 0.0, t)
    assert est.pack_soc_pct is not None and est.pack_soc_pct < 90.0
    # CV end: at charge_v with the current falling to the tail
    while est.counter.anchors == 0 and t < 120.0:
        t += 1.0
        est.update(cast(PackSnapshot, _Snap(np.full(4, charge_v))), 4.0, 1.0, t)
    assert est.counter.anchors > 0
    assert np.all(est.ekf.soc_pct >= 99.0)
    assert est.pack_soc_pct == pytest.approx(100.0, abs=1.0)


def test_the_filter_reads_the_branch_the_hysteresis_state_selects() -> None:
    """With OCV branches in the configuration the filter reads against the counter's
    hysteresis state: the same rested voltage is a lower SOC on the charge branch (after a
    charge) than on the discharge branch (after a discharge)."""
    config = hysteresis_configs(4)["own branches"]
    soc_after: dict[float, float] = {}
    for h in (1.0, -1.0):
        est = EkfPackEstimator(config)
        est.ekf.params = replace(est.ekf.params, voltage_error_v=0.01)
        branches = est.counter.hysteresis
        assert branches is not None and est.ekf.curves is not None
        mid_v = float(np.interp(25.0, branches.branches.soc_pct, config.cell_chemistry.ocv_table_v))
        t = 0.0
        est.update(cast(PackSnapshot, _Snap(np.full(4, mid_v))), 0.0, 0.0, t)
        branches.h = np.full(4, h)
        _, model_v, _, _ = est.ekf._model()
        on_branch = branches.curves().voltage(est.ekf.soc_pct)
        np.testing.assert_allclose(model_v, on_branch)
        for _ in range(600):
            t += 1.0
            est.update(cast(PackSnapshot, _Snap(np.full(4, mid_v))), 0.0, 1.0, t)
        soc_after[h] = float(np.mean(est.ekf.soc_pct))
    assert soc_after[1.0] < soc_after[-1.0] - 4.0, soc_after
