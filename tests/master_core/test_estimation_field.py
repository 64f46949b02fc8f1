"""Field guards of the published SOC and SOH: generic OCV tables, the pack rule with uncertainty,
a robust pack SOH, and the field benchmark's figures (bench/bench_soc_field.py)."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_soc_field import (
    _Snap,
    commissioned_config,
    load_commissioning,
    load_field,
    run_field,
)
from services.master_core.estimation import CoulombCounter, CoulombParams, OcvCurve, pack_soc_pct
from services.master_core.estimation.soc import GENERIC_OCV_SOC_ERROR_PCT
from services.master_core.estimation.soh import robust_pack_soh_pct
from services.master_core.estimator import PackEstimator
from services.master_core.pack import PackSnapshot
from shared.config import SystemConfig
from shared.config.chemistry import ChemistryOverrides, get_preset

_soc = st.floats(0.0, 100.0)
_cells = st.lists(_soc, min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(cells=_cells, sigma=st.floats(0.01, 50.0))
def test_pack_soc_with_uncertainty_stays_between_the_cells_and_hits_the_limits(
    cells: list[float], sigma: float
) -> None:
    soc = np.asarray(cells)
    got = pack_soc_pct(soc, np.full(len(cells), sigma))
    limits = pack_soc_pct(soc)
    assert soc.min() - 1e-9 <= got <= soc.max() + 1e-9
    if soc.min() <= 0.0:
        assert got == 0.0
    elif soc.max() >= 100.0:
        assert got == 100.0
    spread = float(soc.max() - soc.min())
    if spread <= 2.0 * sigma and soc.min() > 0.0 and soc.max() < 100.0:
        assert got == pytest.approx(float(soc.mean()))
    if spread >= 4.0 * sigma:
        assert got == pytest.approx(limits)


def test_pack_soc_noise_is_not_imbalance() -> None:
    # Four cells at 10 % with ±3 % estimate noise: the limit rule reads 7/(7+87) = 7.4 %,
    # the pack is at 10 %.
    cells = [7.0, 10.0, 12.0, 13.0]
    assert pack_soc_pct(cells) == pytest.approx(100.0 * 7.0 / 94.0)
    assert pack_soc_pct(cells, [3.0] * 4) == pytest.approx(10.5)
    # A real imbalance far beyond the noise follows the weakest cell near empty.
    assert pack_soc_pct([1.0, 20.0, 21.0], [1.0] * 3) == pytest.approx(pack_soc_pct([1, 20, 21]))


@settings(max_examples=300, deadline=None)
@given(
    soh=st.lists(st.floats(50.0, 120.0), min_size=1, max_size=16),
    std=st.floats(0.0, 20.0),
)
def test_robust_pack_soh_lies_between_the_weakest_cell_and_the_median(
    soh: list[float], std: float
) -> None:
    x = np.asarray(soh)
    got = robust_pack_soh_pct(x, np.full(len(soh), std))
    assert x.min() - 1e-9 <= got <= float(np.median(x)) + 1e-9
    if std == 0.0:
        assert got == pytest.approx(float(x.min()))


def test_robust_pack_soh_pulls_a_noisy_outlier_in_and_keeps_a_measured_weak_cell() -> None:
    cells = [97.0, 98.0, 99.0, 100.0, 80.0]
    # The fifth cell is measured as well as the others: it is the weakest.
    assert robust_pack_soh_pct(cells, [0.5] * 5) == pytest.approx(80.0, abs=0.5)
    # Measured with ±15 %, 80 % says little: the pack is near the other cells.
    assert robust_pack_soh_pct(cells, [0.5] * 4 + [15.0]) > 90.0
    assert math.isnan(robust_pack_soh_pct([math.nan, math.nan], [1.0, 1.0]))


def test_start_from_a_vague_reading_takes_the_median_of_the_cells() -> None:
    # Generic LFP table: ±12 % SOC on other cells, worth no OCV correction. Channel offsets of
    # +50 / -30 / +20 / -50 mV on a 45 % plateau cell scatter the per-cell guesses over 20-85 %.
    lfp = get_preset("LFP")
    cc = CoulombCounter(
        n_cells=4,
        capacity_ah=100.0,
        ocv=OcvCurve.from_preset(lfp),
        charge_v=lfp.charge_v,
        discharge_cutoff_v=lfp.discharge_cutoff_v,
        params=CoulombParams(table_soc_error_pct=GENERIC_OCV_SOC_ERROR_PCT["LFP"]),
    )
    readings = lfp.ocv_v(45.0) + np.array([0.05, -0.03, 0.02, -0.05])
    cc.start_from_rest(readings)
    assert np.all(cc.soc_pct == cc.soc_pct[0])
    assert cc.soc_pct[0] == pytest.approx(np.median(cc.ocv.soc(readings)))
    assert np.all(cc.soc_std_pct > GENERIC_OCV_SOC_ERROR_PCT["LFP"])


def _config(chem: str, overrides: ChemistryOverrides | None = None) -> SystemConfig:
    return SystemConfig.from_preset(
        chem, system_id="s", modules=1, cells_per_module=4, overrides=overrides
    )


def test_a_generic_lfp_table_makes_no_ocv_corrections_and_says_so() -> None:
    est = PackEstimator(_config("LFP"))
    assert est.ocv_note is not None and "generic LFP OCV table" in est.ocv_note
    lfp = get_preset("LFP")
    own = ChemistryOverrides(ocv_table_soc_pct=lfp.ocv_table_soc_pct, ocv_table_v=lfp.ocv_table_v)
    assert PackEstimator(_config("LFP", own)).ocv_note is None
    # NMC: the generic table carries its per-point spread; corrections stay on where it is small.
    nmc = PackEstimator(_config("NMC"))
    assert nmc.ocv_note is None
    spread = nmc.counter.ocv.soc_spread_pct(nmc.counter.ocv.voltage([30.0, 90.0]), 0.05)
    limit = nmc.counter.params.max_ocv_soc_error_pct
    assert spread[0] > limit and spread[1] < limit


# Field benchmark figures (bench/bench_soc_field.py, service path, shipped presets), % SOC:
# (RMSE, max |error|, RMSE after the first anchor, hours reading <= 5 % while the truth is
# > 15 %). Bounds: x 1.3 + 0.5. SOH after the one full cycle: within SOH_GOAL_PCT of the truth
# (the goal).
# With the zero offset learned at rest (sensor_offsets) the -0.1 A offset no longer counts; it
# had been pulling the SOC down by 0.1 %/h against the estimator's own upward error (with the
# offset alone, no voltage bias, both chemistries now read as with no offset: LFP 1.77 % RMSE
# at -0.1 A and 1.76 % at +0.1 A, 1.76 % without; before 4.07 and 4.20 %), so these rows show
# the voltage bias's cost (before: nmc 4.80, 10.49, 1.00; lfp 2.65, 6.12, 2.13). A full anchor
# puts each cell below the highest by its distance on the table's top (NMC after the first
# anchor: ideal 3.09 -> 2.48, spec 1.52 -> 1.19). A full anchor puts the cells it does not take
# below full (LFP after the first anchor: spec 3.33 -> 1.42, spec restored 3.96 -> 1.42, ideal
# restored 5.73 -> 2.39; NMC spec restored 1.36 -> 1.30), so LFP meets the goal there.
FIELD_MEASURED: dict[tuple[str, str, str], tuple[float, float, float, float]] = {
    ("nmc", "ideal", "rested"): (2.57, 4.71, 2.48, 0.0),
    ("nmc", "spec", "rested"): (2.78, 5.06, 1.19, 0.0),
    ("nmc", "spec", "restored"): (13.69, 20.11, 1.30, 0.0),
    ("lfp", "ideal", "rested"): (2.95, 7.92, 2.06, 0.0),
    ("lfp", "ideal", "restored"): (19.45, 22.83, 2.39, 0.0),
    ("lfp", "spec", "rested"): (5.05, 7.15, 1.42, 0.0),
    ("lfp", "spec", "restored"): (19.40, 22.78, 1.42, 0.0),
}
SOH_GOAL_PCT = 3.0
LFP_GOAL_AFTER_ANCHOR_PCT = 3.0


@pytest.mark.parametrize(("name", "sensors", "start"), list(FIELD_MEASURED))
def test_field_benchmark_holds_its_figures(name: str, sensors: str, start: str) -> None:
    rmse, max_abs, rmse_anchored, hours_low = FIELD_MEASURED[(name, sensors, start)]
    got = run_field(load_field(name), sensors, start)
    assert got.rmse <= 1.3 * rmse + 0.5, f"RMSE {got.rmse:.2f} %"
    assert got.max_abs <= 1.3 * max_abs + 0.5, f"max {got.max_abs:.2f} %"
    assert got.rmse_anchored <= 1.3 * rmse_anchored + 0.5, f"RMSE@a {got.rmse_anchored:.2f} %"
    if name == "lfp":
        assert got.rmse_anchored <= LFP_GOAL_AFTER_ANCHOR_PCT, f"RMSE@a {got.rmse_anchored:.2f} %"
    assert got.hours_low <= hours_low
    assert abs(got.soh_error) <= SOH_GOAL_PCT, f"SOH error {got.soh_error:+.2f} %"
    assert got.soh_restart == 0.0


# After commissioning (bench/bench_soc_field.py commissioned): the OCV branches the stack
# derives from its own C/20 capture of the pack (estimation/ocv_capture.py, the same sensors),
# imported through the wizard's CSV. NMC at 10 degC meets the goal after the first
# anchor (<= 2 %); the figures as above. Spec after the first anchor 0.89 -> 0.99 since a full
# anchor puts the cells it does not take below full: the -50 mV channel's cell, 1 % lower, is
# the first to reach empty at the end of the last discharge (0 % published at 5.5 % true for
# a sample earlier); LFP's commissioned restored rows gain (4.99 -> 4.27, 4.50 -> 3.61).
COMMISSIONED_MEASURED: dict[tuple[str, str], tuple[float, float, float]] = {
    ("nmc", "ideal"): (1.33, 3.31, 0.97),
    ("nmc", "spec"): (2.87, 9.74, 0.99),
}
NMC_GOAL_AFTER_ANCHOR_PCT = 2.0


@pytest.mark.parametrize(("name", "sensors"), list(COMMISSIONED_MEASURED))
def test_after_commissioning_nmc_meets_the_goal_after_the_first_anchor(
    name: str, sensors: str
) -> None:
    rmse, max_abs, rmse_anchored = COMMISSIONED_MEASURED[(name, sensors)]
    config = commissioned_config(load_commissioning(name), sensors)
    assert config.chemistry_overrides.has_own_ocv
    got = run_field(load_field(name), sensors, "rested", config=config)
    assert got.rmse <= 1.3 * rmse + 0.5, f"RMSE {got.rmse:.2f} %"
    assert got.max_abs <= 1.3 * max_abs + 0.5, f"max {got.max_abs:.2f} %"
    assert got.rmse_anchored <= min(1.3 * rmse_anchored + 0.5, NMC_GOAL_AFTER_ANCHOR_PCT)
    assert got.hours_low == 0.0
    assert abs(got.soh_error) <= SOH_GOAL_PCT, f"SOH error {got.soh_error:+.2f} %"


@pytest.mark.parametrize("name", ["nmc", "lfp"])
def test_the_published_counter_beats_the_ekf_after_the_first_anchor(name: str) -> None:
    """Why the service publishes the counter (services/master_core/estimator.py): on the same
    path the EKF of bench/soc_ekf.py is further off after the first anchor (spec sensors,
    rested start: NMC 1.00 % against 6.77 %, LFP 2.22 % against 5.80 %) and reads LFP <= 5 %
    while the truth is above 15 %."""
    trace = load_field(name)
    counter = run_field(trace, "spec", "rested")
    ekf = run_field(trace, "spec", "rested", estimator="ekf")
    assert counter.rmse_anchored < ekf.rmse_anchored - 2.0
    assert counter.hours_low <= ekf.hours_low
    if name == "lfp":
        assert ekf.hours_low > 0.0


def test_the_estimator_reports_its_soc_sigma_and_the_time_since_the_last_anchor() -> None:
    est = PackEstimator(_config("NMC"))
    assert est.pack_soc_std_pct is None and est.since_anchor_s is None
    snap = _Snap(np.full(4, 4.19))
    t = 0.0
    est.update(cast(PackSnapshot, snap), 20.0, 0.0, t)  # charging at 4.19 V: not full yet
    assert est.pack_soc_std_pct is not None and est.pack_soc_std_pct > 0.0
    assert est.since_anchor_s is None
    for _ in range(12):  # the tail current at charge_v: full
        t += 1.0
        est.update(cast(PackSnapshot, _Snap(np.full(4, 4.2))), 3.0, 1.0, t)
    assert est.since_anchor_s == 0.0
    assert est.pack_soc_std_pct == pytest.approx(est.counter.params.anchor_std_pct)
    for _ in range(30):
        t += 1.0
        est.update(cast(PackSnapshot, _Snap(np.full(4, 4.1))), -20.0, 1.0, t)
    assert est.since_anchor_s == pytest.approx(30.0)
