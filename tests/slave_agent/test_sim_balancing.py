"""Charge and heat accounting of passive and active balancing; the 0.5 A limit always holds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from services.slave_agent.sim.balancing import (
    BALANCING_CURRENT_LIMIT_A,
    MAX_BALANCING_CURRENT_A,
    ActiveBalancer,
    bleed_current_a,
)
from services.slave_agent.sim.cells import CellBank, CellBankParams
from services.slave_agent.sim.module import SimulatedModule

N = 14
NO_LEAK = CellBankParams(
    n_cells=N, self_discharge_pct_per_month=0.0, self_discharge_spread_pct_per_month=0.0
)

voltages = hnp.arrays(np.float64, N, elements=st.floats(-1.0, 7.0))
masks = hnp.arrays(np.bool_, N)


def disjoint_masks() -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    return hnp.arrays(np.int8, N, elements=st.integers(0, 2)).map(lambda a: (a == 1, a == 2))


# -- passive --------------------------------------------------------------------------------------


@given(voltages, masks, st.floats(0.01, 1e4))
@settings(max_examples=300, deadline=None)
def test_bleed_current_is_v_over_r_below_the_limit(
    cell_v: np.ndarray, mask: np.ndarray, r_ohm: float
) -> None:
    current = bleed_current_a(cell_v, mask, r_ohm)
    assert np.all(current >= 0.0) and np.all(current < MAX_BALANCING_CURRENT_A)
    assert np.all(current[~mask] == 0.0)
    expected = np.minimum(np.maximum(cell_v, 0.0) / r_ohm, BALANCING_CURRENT_LIMIT_A)
    np.testing.assert_allclose(current[mask], expected[mask])


def test_passive_bleed_removes_exactly_the_integral_of_v_over_r() -> None:
    bank = CellBank(NO_LEAK)
    r_ohm = NO_LEAK.bleed_resistance_ohm
    mask = np.arange(N) % 3 == 0
    soc0 = bank.soc_pct
    expected_ah = np.zeros(N)
    expected_heat_j = np.zeros(N)
    dt = 2.0
    for _ in range(900):
        v = bank.terminal_v
        expected_ah += np.where(mask, v / r_ohm, 0.0) * dt / 3600.0
        expected_heat_j += np.where(mask, v * v / r_ohm, 0.0) * dt
        bank.step(dt, 0.0, bleed=mask)
    np.testing.assert_allclose(bank.bled_ah, expected_ah, rtol=1e-12, atol=0)
    assert np.all(bank.bled_ah[~mask] == 0.0)
    np.testing.assert_allclose(soc0 - bank.soc_pct, 100.0 * expected_ah / bank.capacity_ah)
    np.testing.assert_allclose(bank.bleed_heat_j, expected_heat_j, rtol=1e-12, atol=0)
    # The bleed current also flows through the cell's own resistances.
    assert np.all(bank.heat_j[mask] > bank.bleed_heat_j[mask])
    assert np.all(bank.heat_j[~mask] == 0.0)


def test_bleed_heat_warms_only_the_bled_cells() -> None:
    bank = CellBank(replace(NO_LEAK, bleed_resistance_ohm=10.0))
    mask = np.zeros(N, dtype=bool)
    mask[4] = True
    bank.step(3600.0, 0.0, bleed=mask)
    assert bank.temp_c[4] > 25.5
    np.testing.assert_allclose(np.delete(bank.temp_c, 4), 25.0)


def test_a_too_small_bleed_resistor_is_clamped_below_the_limit() -> None:
    bank = CellBank(replace(NO_LEAK, bleed_resistance_ohm=1.0))
    bank.step(1.0, 0.0, bleed=np.ones(N, dtype=bool))
    np.testing.assert_allclose(bank.cell_current_a, -BALANCING_CURRENT_LIMIT_A)
    np.testing.assert_allclose(bank.bled_ah, BALANCING_CURRENT_LIMIT_A / 3600.0)


@given(masks, st.floats(0.2, 1000.0), st.floats(0.0, 100.0))
@settings(max_examples=100, deadline=None)
def test_no_bled_cell_ever_reaches_the_limit(mask: np.ndarray, r_ohm: float, soc: float) -> None:
    bank = CellBank(replace(NO_LEAK, bleed_resistance_ohm=r_ohm, initial_soc_pct=soc))
    for _ in range(3):
        bank.step(1.0, 0.0, bleed=mask)
        assert np.all(np.abs(bank.cell_current_a) < MAX_BALANCING_CURRENT_A)


# -- active ---------------------------------------------------------------------------------------


@given(
    voltages,
    disjoint_masks(),
    st.floats(0.01, 0.499),
    st.floats(0.5, 1.0),
)
@settings(max_examples=400, deadline=None)
def test_active_transfer_conserves_charge_within_the_limit(
    cell_v: np.ndarray,
    donors_receivers: tuple[np.ndarray, np.ndarray],
    set_point: float,
    efficiency: float,
) -> None:
    discharge, charge = donors_receivers
    result = ActiveBalancer(set_point, efficiency).transfer(cell_v, discharge, charge)
    for current in (result.taken_a, result.delivered_a):
        assert np.all(current >= 0.0)
        assert np.all(current <= set_point * (1 + 1e-12))
    assert np.all(np.abs(result.current_a) < MAX_BALANCING_CURRENT_A)
    assert result.delivered_a.sum() == pytest.approx(efficiency * result.taken_a.sum())
    expected_loss = (1 - efficiency) * np.dot(np.maximum(cell_v, 0.0), result.taken_a)
    assert result.loss_w == pytest.approx(expected_loss, abs=1e-12)
    if discharge.any():
        assert np.all(result.taken_a[~discharge] == 0.0)
        assert np.all(result.taken_a[discharge] > 0.0)
    if charge.any():
        assert np.all(result.delivered_a[~charge] == 0.0)
        assert np.all(result.delivered_a[charge] > 0.0)
    if not (discharge.any() or charge.any()):
        assert np.all(result.current_a == 0.0) and result.loss_w == 0.0


def test_cell_to_module_feeds_every_cell() -> None:
    discharge = np.zeros(N, dtype=bool)
    discharge[[2, 9]] = True
    result = ActiveBalancer(0.4, 0.9).transfer(np.full(N, 3.7), discharge, np.zeros(N, bool))
    np.testing.assert_allclose(result.delivered_a, 0.9 * 2 * 0.4 / N)
    np.testing.assert_allclose(result.taken_a[discharge], 0.4)
    assert result.current_a.sum() == pytest.approx(-(1 - 0.9) * 0.8)


def test_active_balancing_in_a_module_moves_charge_with_the_efficiency() -> None:
    module = SimulatedModule(NO_LEAK, active_balancer=ActiveBalancer(0.45, 0.85))
    discharge = np.zeros(N, dtype=bool)
    charge = np.zeros(N, dtype=bool)
    discharge[[0, 1, 2]] = True
    charge[[7, 8]] = True
    soc0 = module.bank.soc_pct
    loss_j = 0.0
    for _ in range(600):
        v = module.bank.terminal_v
        loss_j += ActiveBalancer(0.45, 0.85).transfer(v, discharge, charge).loss_w
        module.advance(1.0, 0.0, discharge, charge)
    moved = module.bank.transfer_ah
    taken, delivered = -moved[discharge].sum(), moved[charge].sum()
    assert taken > 0
    assert delivered == pytest.approx(0.85 * taken, rel=1e-12)
    assert np.all(moved[~(discharge | charge)] == 0.0)
    np.testing.assert_allclose(
        module.bank.soc_pct - soc0, 100.0 * moved / module.bank.capacity_ah, atol=1e-12
    )
    assert module.converter_heat_j == pytest.approx(loss_j, rel=1e-12)
    assert np.all(np.abs(module.bank.cell_current_a) < MAX_BALANCING_CURRENT_A)
    np.testing.assert_array_equal(module.balancing, discharge | charge)


@pytest.mark.parametrize(
    ("current", "efficiency"), [(0.5, 0.9), (0.0, 0.9), (0.4, 0.0), (0.4, 1.1)]
)
def test_active_balancer_refuses_bad_settings(current: float, efficiency: float) -> None:
    with pytest.raises(ValueError):
        ActiveBalancer(current, efficiency)


def test_charging_and_discharging_one_cell_is_refused() -> None:
    both = np.zeros(N, dtype=bool)
    both[3] = True
    with pytest.raises(ValueError):
        ActiveBalancer().transfer(np.full(N, 3.7), both, both)
