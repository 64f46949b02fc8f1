"""The master calibrates its raw current reading with `current_sensor.gain` and `offset_a`;
the simulated plant reads raw, so a calibration never changes the plant's published current."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from services.master_core.current_calibration import CurrentCalibration
from services.plant.load_profiles import Constant
from services.plant.sensors import (
    CURRENT_ACCURACY_A,
    CURRENT_RANGE_A,
    InverterState,
    SimulatedPackSensors,
)
from shared.config import SystemConfig
from shared.config.system import CurrentSensorConfig
from shared.messages import PackState
from shared.topics import PACK_STATE
from tests.master_core.test_service_reset import Stack

RANGE_A = CurrentSensorConfig().range_a
gains = st.floats(0.5, 2.0)
offsets = st.floats(-0.1 * RANGE_A, 0.1 * RANGE_A)
currents = st.floats(-CURRENT_RANGE_A, CURRENT_RANGE_A)


def calibration(gain: float, offset_a: float) -> CurrentCalibration:
    """Through the configuration, so only validated calibrations are tested."""
    return CurrentCalibration.from_config(CurrentSensorConfig(gain=gain, offset_a=offset_a))


def test_measured_is_gain_times_raw_plus_offset_and_none_stays_none() -> None:
    cal = calibration(1.5, 5.0)
    assert cal.measured_a(10.0) == 20.0
    assert cal.measured_a(0.0) == 5.0
    assert cal.measured_a(None) is None
    assert CurrentCalibration().measured_a(-42.0) == -42.0


@given(gains, offsets, currents)
def test_calibrating_the_raw_reading_gives_the_true_current(
    gain: float, offset_a: float, true_a: float
) -> None:
    cal = calibration(gain, offset_a)
    measured = cal.measured_a(cal.raw_a(true_a))
    assert measured is not None
    assert abs(measured - true_a) < 1e-9 * max(1.0, abs(true_a))


@given(gains, offsets, st.floats(-CURRENT_RANGE_A / 2, CURRENT_RANGE_A / 2))
def test_the_simulated_sensor_reads_raw_for_its_calibration(
    gain: float, offset_a: float, want_a: float
) -> None:
    cal = calibration(gain, offset_a)
    sensors = SimulatedPackSensors(Constant(want_a), calibration=cal)
    sensors.update(_inverter_closed())
    raw = sensors.measure(1.0).current_a
    measured = cal.measured_a(raw)
    assert measured is not None
    # the sensor's noise plus rounding the raw reading to 10 mA
    assert abs(measured - want_a) <= CURRENT_ACCURACY_A / 2 + gain * 0.005 + 1e-9
    sensors.sensor_failed = True
    assert cal.measured_a(sensors.measure(2.0).current_a) is None


def _inverter_closed() -> InverterState:
    return InverterState(
        contactors_closed=True, charge_limit_a=CURRENT_RANGE_A,
        discharge_limit_a=CURRENT_RANGE_A, soc_pct=50.0, cell_v_min=3.7, cell_v_max=3.7,
        sum_of_cells_v=400.0, bus_voltage_v=400.0,
    )  # fmt: skip


def _stack(tmp_path: Path, gain: float, offset_a: float) -> tuple[Stack, list[PackState]]:
    data = SystemConfig.from_preset(
        "NMC", system_id="demo", modules=2, cells_per_module=4
    ).model_dump(mode="json")
    data["current_sensor"] |= {"gain": gain, "offset_a": offset_a}
    stack = Stack(tmp_path, load_profile="constant:-20", config=SystemConfig.model_validate(data))
    states: list[PackState] = []
    stack.ui.subscribe(PACK_STATE, lambda d: states.append(d.message))
    return stack, states


def test_a_calibration_does_not_change_the_published_current_of_the_plant(
    tmp_path: Path,
) -> None:
    plain, plain_states = _stack(tmp_path / "plain", 1.0, 0.0)
    tuned, tuned_states = _stack(tmp_path / "tuned", 1.5, 5.0)
    for stack in (plain, tuned):
        stack.run(8.0)
        assert stack.contactors == "closed", stack.faults()
    plain_a = [s.current for s in plain_states[-20:]]
    tuned_a = [s.current for s in tuned_states[-20:]]
    assert all(a is not None and abs(a + 20.0) <= 0.06 for a in plain_a), plain_a
    assert all(a is not None and abs(a + 20.0) <= 0.06 for a in tuned_a), tuned_a
    # what the sensor reads raw differs, and so does what a raw reading maps to
    assert plain.core.rt is not None and tuned.core.rt is not None
    tuned_raw = tuned.core.rt.io.sensors.measure(plain.clock.now).current_a
    assert tuned_raw is not None and abs(tuned_raw - (-25.0 / 1.5)) <= 0.1
    assert plain.core.supervisor.d.calibration.measured_a(10.0) == 10.0
    assert tuned.core.supervisor.d.calibration.measured_a(10.0) == 20.0
