"""The measurement chain keeps every healthy reading within the +-50 mV accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from services.slave_agent.sim.measurement import (
    CELL_VOLTAGE_ACCURACY_V,
    ChannelFlag,
    MeasurementChain,
    MeasurementParams,
    cell_range_flags,
    sensor_groups,
    temp_range_flags,
)

OUT = int(ChannelFlag.OUT_OF_RANGE)


@given(
    st.integers(1, 196).flatmap(lambda n: hnp.arrays(np.float64, n, elements=st.floats(1.0, 4.95))),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=200, deadline=None)
def test_every_reading_is_within_the_accuracy(true_v: np.ndarray, seed: int) -> None:
    chain = MeasurementChain(true_v.size, 1, MeasurementParams(seed=seed))
    for _ in range(5):
        mv = chain.measure_cells_mv(true_v)
        assert mv.dtype.kind == "i"
        assert np.all(np.abs(mv / 1000.0 - true_v) <= CELL_VOLTAGE_ACCURACY_V)


def test_error_bound_holds_over_a_million_samples() -> None:
    params = MeasurementParams(seed=11)
    chain = MeasurementChain(196, 4, params)
    true_v = np.linspace(1.0, 4.95, 196)
    errors = np.empty((5000, 196))
    for k in range(errors.shape[0]):
        errors[k] = chain.measure_cells_mv(true_v) / 1000.0 - true_v
    assert np.abs(errors).max() <= params.voltage_error_bound_v + 1e-12
    assert params.voltage_error_bound_v <= CELL_VOLTAGE_ACCURACY_V
    # Per channel: mean = fixed offset, spread = the noise.
    np.testing.assert_allclose(errors.mean(axis=0), chain.voltage_offset_v, atol=0.0005)
    assert errors.std(axis=0).mean() == pytest.approx(params.voltage_noise_sigma_v, rel=0.05)
    assert np.abs(chain.voltage_offset_v).max() <= params.voltage_offset_max_v


def test_readings_are_integer_millivolts() -> None:
    chain = MeasurementChain(14, 2)
    mv = chain.measure_cells_mv(np.full(14, 3.7))
    assert mv.dtype == np.int64 and mv.shape == (14,)


def test_budget_beyond_the_accuracy_is_refused() -> None:
    with pytest.raises(ValueError):
        MeasurementParams(voltage_offset_max_v=0.030, voltage_noise_clip_v=0.025)
    with pytest.raises(ValueError):
        MeasurementParams(voltage_noise_sigma_v=-0.001)


def test_out_of_range_flags() -> None:
    mv = np.array([0, 999, 1000, 3700, 4950, 4951, 6000], dtype=np.int64)
    assert cell_range_flags(mv).tolist() == [OUT, OUT, 0, 0, 0, OUT, OUT]
    temps = np.array([-41.0, -40.0, 25.0, 125.0, 125.1])
    assert temp_range_flags(temps).tolist() == [OUT, 0, 0, 0, OUT]


def test_readings_saturate_at_the_converter_range() -> None:
    chain = MeasurementChain(3, 1)
    mv = chain.measure_cells_mv(np.array([-2.0, 0.5, 9.0]))
    assert mv[0] == 0 and mv[2] == 6000
    assert cell_range_flags(mv).tolist() == [OUT, OUT, OUT]


def test_same_seed_same_readings() -> None:
    a, b = MeasurementChain(14, 2), MeasurementChain(14, 2)
    v = np.full(14, 3.6)
    np.testing.assert_array_equal(a.measure_cells_mv(v), b.measure_cells_mv(v))
    c = MeasurementChain(14, 2, MeasurementParams(seed=1))
    assert not np.array_equal(a.voltage_offset_v, c.voltage_offset_v)


def test_temperature_sensors_read_the_mean_of_their_cells() -> None:
    assert sensor_groups(14, 4).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    params = MeasurementParams(seed=2)
    chain = MeasurementChain(14, 4, params)
    cell_t = np.arange(14, dtype=float)
    truth = chain.sensor_temp_c(cell_t)
    np.testing.assert_allclose(truth, [1.5, 5.0, 8.5, 12.0])
    for _ in range(500):
        reading = chain.measure_temps_c(truth)
        assert np.all(np.abs(reading - truth) <= params.temp_error_bound_c + 1e-9)
        np.testing.assert_allclose(reading * 10, np.rint(reading * 10), atol=1e-9)


def test_a_module_without_temperature_sensors() -> None:
    chain = MeasurementChain(6, 0)
    assert chain.sensor_temp_c(np.full(6, 25.0)).shape == (0,)
    assert chain.measure_temps_c(np.zeros(0)).shape == (0,)
