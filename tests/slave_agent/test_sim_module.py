"""SimulatedModule as the agent sees it: shapes, types, determinism and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from services.slave_agent.sim.balancing import ActiveBalancer
from services.slave_agent.sim.cells import CellBankParams
from services.slave_agent.sim.measurement import MeasurementParams
from services.slave_agent.sim.module import SimulatedModule

N = 14


def make_module(seed: int = 0, **kwargs: object) -> SimulatedModule:
    return SimulatedModule(
        CellBankParams(n_cells=N, seed=seed),
        measurement=MeasurementParams(seed=seed),
        **kwargs,  # type: ignore[arg-type]
    )


def test_reading_and_truth_shapes_and_types() -> None:
    module = make_module(n_temp_sensors=3)
    module.advance(0.1, 10.0, [True] + [False] * (N - 1))
    reading, truth = module.read(), module.truth()
    assert reading.cell_mv.dtype == np.int64 and reading.cell_mv.shape == (N,)
    assert reading.cell_flags.dtype == np.uint8 and reading.cell_flags.shape == (N,)
    assert reading.temp_c.shape == (3,) and reading.temp_flags.shape == (3,)
    assert reading.balancing.tolist() == [True] + [False] * (N - 1)
    assert truth.soc_pct.shape == truth.cell_v.shape == truth.temp_c.shape == (N,)
    assert truth.sensor_temp_c.shape == (3,) and truth.current_a == 10.0


def test_same_seeds_give_the_same_run() -> None:
    a, b = make_module(seed=4), make_module(seed=4)
    for _ in range(20):
        a.advance(0.1, -30.0)
        b.advance(0.1, -30.0)
        ra, rb = a.read(), b.read()
        np.testing.assert_array_equal(ra.cell_mv, rb.cell_mv)
        np.testing.assert_array_equal(ra.temp_c, rb.temp_c)
    assert not np.array_equal(make_module(seed=5).read().cell_mv, a.read().cell_mv)


def test_readings_follow_the_string_current() -> None:
    module = make_module()
    module.advance(0.1, 0.0)
    rest = module.read().cell_mv
    module.advance(0.1, -200.0)
    loaded = module.read().cell_mv
    # 200 A through ~0.8 mOhm: ~160 mV lower, well beyond the measurement error.
    assert np.all(loaded < rest - 60)


def test_passive_module_cannot_charge_a_cell() -> None:
    module = make_module()
    charge = np.zeros(N, dtype=bool)
    charge[2] = True
    module.advance(1.0, 0.0, None, charge)
    assert not module.balancing.any()
    assert np.all(module.bank.cell_current_a == 0.0)


def test_active_module_reports_both_directions_as_balancing() -> None:
    module = make_module(active_balancer=ActiveBalancer())
    discharge = np.zeros(N, dtype=bool)
    charge = np.zeros(N, dtype=bool)
    discharge[0], charge[1] = True, True
    module.advance(1.0, 0.0, discharge, charge)
    assert module.read().balancing.tolist()[:3] == [True, True, False]


def test_empty_masks_mean_no_balancing() -> None:
    module = make_module()
    module.advance(1.0, 0.0, [], [])
    assert not module.balancing.any()


@pytest.mark.parametrize(
    ("discharge", "charge"),
    [([True] * 3, None), (None, [False] * (N + 1)), ([True] + [False] * (N - 1),) * 2],
)
def test_bad_masks_are_refused(discharge: list[bool] | None, charge: list[bool] | None) -> None:
    with pytest.raises(ValueError):
        make_module().advance(0.1, 0.0, discharge, charge)


def test_masks_are_copied() -> None:
    module = make_module()
    mask = np.zeros(N, dtype=bool)
    mask[0] = True
    module.advance(0.1, 0.0, mask)
    mask[:] = True
    assert module.balancing.sum() == 1


def test_ambient_changes_at_run_time() -> None:
    module = make_module()
    module.set_ambient_c(5.0)
    np.testing.assert_allclose(module.ambient_c, 5.0)
    module.advance(10 * module.bank.thermal_tau_s, 0.0)
    np.testing.assert_allclose(module.truth().temp_c, 5.0, atol=0.01)
    assert np.all(np.abs(module.read().temp_c - 5.0) <= 1.6)


def test_a_reading_fits_the_telemetry_contract() -> None:
    from shared.messages.slave import CellTelemetry

    module = make_module()
    module.faults.activate("open_wire", channel=0)
    module.faults.activate("over_temperature", channel=1, value=150.0, rate_c_per_s=100.0)
    module.advance(2.0, 0.0)
    reading = module.read()
    CellTelemetry(
        module=0,
        mode="working",
        sample_ts=1.7e9,
        cell_mv=reading.cell_mv.tolist(),
        cell_flags=reading.cell_flags.tolist(),
        balancing=reading.balancing.tolist(),
        temp_c=reading.temp_c.tolist(),
        temp_flags=reading.temp_flags.tolist(),
    )
