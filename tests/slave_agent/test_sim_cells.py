"""Equivalent-circuit, thermal and self-discharge behaviour of the simulated cells."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.slave_agent.sim.cells import (
    LFP_OCV_V,
    MONTH_S,
    CellBank,
    CellBankParams,
)

QUIET = CellBankParams(
    n_cells=8,
    capacity_spread_pct=0.0,
    resistance_spread_pct=0.0,
    initial_soc_spread_pct=0.0,
    self_discharge_pct_per_month=0.0,
    self_discharge_spread_pct_per_month=0.0,
)
"""Identical cells without self-discharge: every cell follows the textbook equations."""


def table_ocv(bank: CellBank) -> np.ndarray:
    p = bank.params
    return np.interp(bank.soc_pct, p.ocv_soc_pct, p.ocv_v)


# -- OCV --------------------------------------------------------------------------------------


def test_terminal_voltage_at_rest_is_the_table_ocv() -> None:
    bank = CellBank(CellBankParams(n_cells=196, seed=3))
    np.testing.assert_allclose(bank.terminal_v, table_ocv(bank), rtol=0, atol=1e-12)
    bank.step(600.0, 80.0)
    bank.step(1e6, 0.0)  # RC pairs relax completely
    np.testing.assert_allclose(bank.v_rc_v, 0.0, atol=1e-12)
    np.testing.assert_allclose(bank.terminal_v, table_ocv(bank), rtol=0, atol=1e-12)


@given(st.floats(0.0, 100.0), st.sampled_from(["nmc", "lfp"]))
@settings(max_examples=60, deadline=None)
def test_rested_cells_sit_on_the_ocv_table(soc: float, chemistry: str) -> None:
    params = QUIET if chemistry == "nmc" else replace(QUIET, ocv_v=LFP_OCV_V)
    bank = CellBank(params)
    bank.set_soc_pct(soc)
    expected = np.interp(soc, params.ocv_soc_pct, params.ocv_v)
    np.testing.assert_allclose(bank.terminal_v, expected, rtol=0, atol=1e-12)


def test_table_points_are_hit_exactly() -> None:
    bank = CellBank(replace(QUIET, n_cells=21))
    bank.set_soc_pct(np.asarray(QUIET.ocv_soc_pct))
    np.testing.assert_allclose(bank.terminal_v, QUIET.ocv_v, rtol=0, atol=1e-12)


# -- charge and voltage under current -----------------------------------------------------------


def test_charge_counts_coulombs_exactly() -> None:
    bank = CellBank(replace(QUIET, capacity_spread_pct=2.0, n_cells=14, seed=5))
    rng = np.random.default_rng(1)
    soc0 = bank.soc_pct
    charge_as = 0.0
    for current, dt in zip(rng.uniform(-60, 60, 500), rng.uniform(0.01, 5.0, 500), strict=True):
        bank.step(float(dt), float(current))
        charge_as += current * dt
    expected = soc0 + 100.0 * charge_as / 3600.0 / bank.capacity_ah
    np.testing.assert_allclose(bank.soc_pct, expected, rtol=0, atol=1e-9)


def test_terminal_voltage_is_above_ocv_charging_and_below_discharging() -> None:
    bank = CellBank(CellBankParams(n_cells=196, seed=2))
    for _ in range(20):
        bank.step(0.1, 50.0)
        assert np.all(bank.terminal_v > bank.ocv_v)
    bank.step(1e6, 0.0)
    for _ in range(20):
        bank.step(0.1, -50.0)
        assert np.all(bank.terminal_v < bank.ocv_v)


def test_current_step_gives_an_instant_ir_drop() -> None:
    bank = CellBank(CellBankParams(n_cells=196, seed=4))
    bank.step(0.0, -100.0)
    np.testing.assert_allclose(bank.terminal_v - bank.ocv_v, -100.0 * bank.r0_ohm, atol=1e-15)


def test_rc_relaxes_with_tau_r1_c1_for_any_step_size() -> None:
    params = replace(QUIET, capacity_ah=1000.0)
    current = 100.0
    tau = params.r1_ohm * params.c1_f
    results = []
    for n_steps in (1, 10, 1000):
        bank = CellBank(params)
        np.testing.assert_allclose(bank.tau_s, tau)
        bank.step(60 * tau, current)  # settle to the steady state I*R1
        np.testing.assert_allclose(bank.v_rc_v, current * params.r1_ohm, rtol=1e-12)
        for _ in range(n_steps):
            bank.step(tau / n_steps, 0.0)
        over_ocv = bank.terminal_v - bank.ocv_v
        np.testing.assert_allclose(over_ocv, bank.v_rc_v, atol=1e-15)
        results.append(over_ocv)
    for got in results:
        np.testing.assert_allclose(got, current * params.r1_ohm * math.exp(-1.0), rtol=1e-9)


def test_huge_steps_do_not_overshoot() -> None:
    bank = CellBank(replace(QUIET, capacity_ah=1e9))
    bank.step(1e7, 100.0)
    np.testing.assert_allclose(bank.v_rc_v, 100.0 * QUIET.r1_ohm, rtol=1e-12)


# -- thermal ------------------------------------------------------------------------------------


def test_heat_step_gives_a_first_order_rise() -> None:
    # Tiny C1: the RC pair settles within the first step, so the heat is I^2 (R0 + R1).
    params = replace(QUIET, capacity_ah=1000.0, c1_f=1.0)
    bank = CellBank(params)
    current = 100.0
    power = current**2 * (params.r0_ohm + params.r1_ohm)
    rise = power / params.heat_transfer_w_per_k
    tau = params.heat_capacity_j_per_k / params.heat_transfer_w_per_k
    assert bank.thermal_tau_s == pytest.approx(tau)
    for _ in range(400):
        bank.step(tau / 400, current)
    np.testing.assert_allclose(bank.temp_c, 25.0 + rise * (1 - math.exp(-1.0)), atol=1e-5)
    np.testing.assert_allclose(bank.heat_j, power * tau, rtol=1e-6)
    bank.step(20 * tau, current)
    np.testing.assert_allclose(bank.temp_c, 25.0 + rise, atol=1e-6)


def test_temperature_relaxes_to_ambient_without_current() -> None:
    bank = CellBank(replace(QUIET, initial_temp_c=45.0))
    tau = bank.thermal_tau_s
    bank.step(tau, 0.0)
    np.testing.assert_allclose(bank.temp_c, 25.0 + 20.0 * math.exp(-1.0), atol=1e-9)
    bank.step(50 * tau, 0.0)
    np.testing.assert_allclose(bank.temp_c, 25.0, atol=1e-9)


def test_ambient_can_change_at_run_time() -> None:
    bank = CellBank(QUIET)
    bank.set_ambient_c(np.linspace(-10.0, 40.0, QUIET.n_cells))
    bank.step(50 * bank.thermal_tau_s, 0.0)
    np.testing.assert_allclose(bank.temp_c, np.linspace(-10.0, 40.0, QUIET.n_cells), atol=1e-9)


def test_r1_heat_is_integrated_exactly() -> None:
    # After a current step, the energy in R1 over one long step equals that over many short ones.
    params = replace(QUIET, capacity_ah=1e6)
    tau = params.r1_ohm * params.c1_f
    one, many = CellBank(params), CellBank(params)
    one.step(3 * tau, 200.0)
    for _ in range(3000):
        many.step(3 * tau / 3000, 200.0)
    np.testing.assert_allclose(one.heat_j, many.heat_j, rtol=1e-12)
    # The thermal step holds the step's mean power, so the temperature agrees only closely.
    np.testing.assert_allclose(one.temp_c, many.temp_c, rtol=1e-4)


# -- self-discharge -----------------------------------------------------------------------------


def test_self_discharge_over_a_month_matches_the_rate() -> None:
    bank = CellBank(replace(QUIET, self_discharge_pct_per_month=2.0))
    soc0 = bank.soc_pct
    for _ in range(30):
        bank.step(MONTH_S / 30, 0.0)
    np.testing.assert_allclose(soc0 - bank.soc_pct, 2.0, rtol=1e-9)
    np.testing.assert_allclose(bank.self_discharged_ah, 0.02 * QUIET.capacity_ah, rtol=1e-9)


def test_self_discharge_spread_scatters_around_the_rate() -> None:
    bank = CellBank(CellBankParams(n_cells=196, seed=9))
    soc0 = bank.soc_pct
    bank.step(MONTH_S, 0.0)
    drop = soc0 - bank.soc_pct
    assert drop.mean() == pytest.approx(2.0, abs=0.1)
    assert 0.3 < drop.std() < 0.7
    np.testing.assert_allclose(drop, bank.self_discharge_pct_per_month, rtol=1e-9)


# -- spreads, limits, validation -----------------------------------------------------------------


def test_spreads_are_seeded_and_near_their_sigma() -> None:
    a, b = CellBank(CellBankParams(n_cells=196)), CellBank(CellBankParams(n_cells=196))
    c = CellBank(CellBankParams(n_cells=196, seed=1))
    np.testing.assert_array_equal(a.capacity_ah, b.capacity_ah)
    assert not np.array_equal(a.capacity_ah, c.capacity_ah)
    assert np.std(a.capacity_ah / 100.0) == pytest.approx(0.015, rel=0.3)
    assert np.std(a.r0_ohm / 0.0008) == pytest.approx(0.07, rel=0.3)
    assert np.std(a.soc_pct) == pytest.approx(1.5, rel=0.3)
    np.testing.assert_allclose(a.r1_ohm / a.r0_ohm, 0.5)


@pytest.mark.parametrize(
    ("soc", "current", "dt"),
    [
        (0.0, -1000.0, 3600.0),
        (100.0, 1000.0, 3600.0),
        (50.0, 200.0, 1e9),
        (50.0, -200.0, 1e-9),
        (3.0, -200.0, 0.0),
    ],
)
def test_extremes_stay_finite_and_clamped(soc: float, current: float, dt: float) -> None:
    bank = CellBank(CellBankParams(initial_soc_pct=soc, seed=7))
    bank.step(dt, current, bleed=np.ones(bank.n_cells, dtype=bool))
    bank.step(dt, current)
    for values in (bank.soc_pct, bank.terminal_v, bank.temp_c, bank.heat_j, bank.v_rc_v):
        assert np.all(np.isfinite(values))
    assert np.all((bank.soc_pct >= 0.0) & (bank.soc_pct <= 100.0))


@pytest.mark.parametrize(
    "change",
    [
        {"n_cells": 0},
        {"capacity_ah": 0.0},
        {"r1_ohm": 0.0},
        {"r0_ohm": -1e-3},
        {"heat_transfer_w_per_k": 0.0},
        {"capacity_spread_pct": 40.0},
        {"initial_soc_pct": 101.0},
        {"ambient_c": math.nan},
        {"ocv_soc_pct": (0.0, 50.0, 90.0), "ocv_v": (3.0, 3.5, 4.0)},
        {"ocv_soc_pct": (0.0, 50.0, 100.0), "ocv_v": (3.0, 3.5, 3.4)},
        {"ocv_soc_pct": (0.0, 100.0), "ocv_v": (3.0, 3.5, 4.0)},
    ],
)
def test_bad_parameters_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(QUIET, **change)  # type: ignore[arg-type]


def test_params_are_hashable_values() -> None:
    a = CellBankParams(ocv_soc_pct=[0.0, 100.0], ocv_v=np.array([3.0, 4.2]).tolist())
    b = CellBankParams(ocv_soc_pct=(0.0, 100.0), ocv_v=(3.0, 4.2))
    assert a == b and hash(a) == hash(b)


def test_bad_step_arguments_are_refused() -> None:
    bank = CellBank(QUIET)
    with pytest.raises(ValueError):
        bank.step(-1.0, 0.0)
    with pytest.raises(ValueError):
        bank.step(0.1, math.inf)
    with pytest.raises(ValueError):
        bank.step(0.1, 0.0, bleed=np.ones(3, dtype=bool))
    with pytest.raises(ValueError):
        bank.step(0.1, 0.0, transfer_a=np.full(QUIET.n_cells, 0.5))
