"""Every fault kind: its effect on truth, readings and flags; activation, clearing and expiry."""

from __future__ import annotations

import numpy as np
import pytest

from services.slave_agent.sim.cells import CellBankParams
from services.slave_agent.sim.faults import FAULT_KINDS, FaultKind, FaultSet, FaultTarget
from services.slave_agent.sim.measurement import MeasurementParams
from services.slave_agent.sim.module import SimulatedModule
from shared.messages.slave import ChannelFlag

N, SENSORS = 14, 4
WIRE, OUT = int(ChannelFlag.OPEN_WIRE), int(ChannelFlag.OUT_OF_RANGE)
BOUND_V = MeasurementParams().voltage_error_bound_v
BOUND_C = MeasurementParams().temp_error_bound_c


def make_module(seed: int = 0) -> SimulatedModule:
    return SimulatedModule(
        CellBankParams(n_cells=N, seed=seed),
        n_temp_sensors=SENSORS,
        measurement=MeasurementParams(seed=seed),
    )


def run(module: SimulatedModule, seconds: float, dt: float = 0.5, current: float = 0.0) -> None:
    for _ in range(round(seconds / dt)):
        module.advance(dt, current)


def healthy(module: SimulatedModule) -> bool:
    reading, truth = module.read(), module.truth()
    volts_ok = np.all(np.abs(reading.cell_mv / 1000.0 - truth.cell_v) <= BOUND_V)
    temps_ok = np.all(np.abs(reading.temp_c - truth.sensor_temp_c) <= BOUND_C)
    flags_ok = not reading.cell_flags.any() and not reading.temp_flags.any()
    return bool(volts_ok and temps_ok and flags_ok)


# -- FaultSet as data ------------------------------------------------------------------------------


def test_activate_replace_query_and_clear() -> None:
    faults = FaultSet(n_cells=N, n_temp_sensors=SENSORS)
    assert not faults and not faults.is_active("dropout")
    faults.activate("slow_samples", value=0.5)
    faults.activate("slow_samples", value=0.8)  # same slot: replaced
    faults.activate("noisy_channel", channel=3, value=0.1)
    faults.activate("noisy_channel", channel=None, value=0.01)
    assert len(faults) == 3
    assert faults.value_of("slow_samples") == 0.8
    assert faults.is_active("noisy_channel", channel=7)  # through the all-channel fault
    assert faults.value_of("noisy_channel", channel=3) == 0.01  # latest matching
    assert faults.value_of("late_samples") is None
    assert [f.kind for f in faults.clear("noisy_channel", channel=3)] == ["noisy_channel"]
    assert len(faults) == 2
    assert len(faults.clear()) == 2 and not faults


def test_telemetry_faults_are_plain_data_for_the_agent() -> None:
    faults = FaultSet()
    faults.activate("dropout", duration_s=2.0)
    faults.activate("late_samples", value=1.5)
    faults.activate("crash")
    assert faults.is_active("dropout") and faults.is_active("crash")
    assert faults.value_of("late_samples") == 1.5
    assert faults.tick(1.0) == ()
    (expired,) = faults.tick(1.0)
    assert expired.kind == "dropout" and expired.elapsed_s == pytest.approx(2.0)
    assert not faults.is_active("dropout") and faults.is_active("late_samples")
    faults.clear("crash")
    assert not faults.is_active("crash")


def test_expiry_tolerates_float_residue_of_summed_steps() -> None:
    faults = FaultSet()
    faults.activate("dropout", duration_s=1.0)
    for _ in range(9):
        faults.tick(0.1)
    assert faults.is_active("dropout")
    faults.tick(0.1)
    assert not faults.is_active("dropout")


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("cell_drift", {}),
        ("over_temperature", {}),
        ("stuck_sensor", {"value": 1.0}),
        ("noisy_channel", {"value": -0.1}),
        ("open_wire", {"channel": N}),
        ("over_temperature", {"channel": SENSORS, "value": 60.0}),
        ("dropout", {"channel": 0}),
        ("cell_drift", {"value": 0.1, "target": "temp"}),
        ("open_wire", {"target": "module"}),
        ("noisy_channel", {"value": float("nan")}),
        ("dropout", {"duration_s": 0.0}),
        ("over_temperature", {"value": 60.0, "rate_c_per_s": 0.0}),
        ("late_samples", {"value": -1.0}),
    ],
)
def test_malformed_faults_are_refused(kind: FaultKind, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultSet(n_cells=N, n_temp_sensors=SENSORS).activate(kind, **kwargs)  # type: ignore[arg-type]


# -- effects ---------------------------------------------------------------------------------------


def test_healthy_module_is_within_spec() -> None:
    module = make_module()
    for _ in range(50):
        module.advance(0.1, -40.0)
        assert healthy(module)


def test_cell_drift_up_pushes_one_reading_past_the_ov_limit() -> None:
    module = make_module()
    module.faults.activate("cell_drift", channel=2, value=0.02)
    run(module, 30.0)
    truth, reading = module.truth(), module.read()
    assert truth.cell_v[2] - module.bank.terminal_v[2] == pytest.approx(0.6)
    assert reading.cell_mv[2] > 4300
    assert np.all(np.delete(reading.cell_mv, 2) < 4000)
    assert reading.cell_flags[2] == 0
    run(module, 30.0)
    reading = module.read()
    assert reading.cell_mv[2] > 4950 and reading.cell_flags[2] == OUT
    soc_before = module.bank.soc_pct
    module.faults.clear("cell_drift")
    np.testing.assert_array_equal(module.bank.soc_pct, soc_before)  # a voltage fault only
    assert healthy(module)


def test_cell_drift_down_pushes_a_reading_below_the_uv_limit() -> None:
    module = make_module()
    module.faults.activate("cell_drift", channel=None, value=-0.05)
    run(module, 30.0)
    reading = module.read()
    assert np.all(reading.cell_mv < 2500)
    run(module, 30.0)
    reading, truth = module.read(), module.truth()
    assert np.all(truth.cell_v >= 0.0) and np.all(reading.cell_flags == OUT)


@pytest.mark.parametrize(
    ("kind", "target_c"), [("over_temperature", 70.0), ("under_temperature", -20.0)]
)
def test_temperature_faults_drive_a_sensor_group(kind: FaultKind, target_c: float) -> None:
    module = make_module()
    group = module.chain.sensor_of_cell == 1
    module.faults.activate(kind, channel=1, value=target_c, rate_c_per_s=2.0)
    module.advance(1.0, 0.0)
    step = module.truth().temp_c[group] - 25.0
    np.testing.assert_allclose(np.abs(step), 2.0, atol=0.01)
    run(module, 60.0)
    truth, reading = module.truth(), module.read()
    np.testing.assert_allclose(truth.temp_c[group], target_c)
    np.testing.assert_allclose(truth.temp_c[~group], 25.0, atol=0.01)
    assert abs(reading.temp_c[1] - target_c) <= BOUND_C
    assert np.all(np.abs(np.delete(reading.temp_c, 1) - 25.0) <= BOUND_C + 0.01)
    module.faults.clear(kind)
    run(module, 60.0)
    # Afterwards the cells relax through their thermal mass, slowly.
    relaxed = module.truth().temp_c[group]
    assert np.all(np.abs(relaxed - target_c) > 0.1)
    assert np.all(np.abs(relaxed - 25.0) > 0.9 * abs(target_c - 25.0))


def test_over_temperature_of_a_single_cell_shows_diluted_at_its_sensor() -> None:
    module = make_module()
    module.faults.activate("over_temperature", channel=0, value=85.0, target="cell")
    run(module, 60.0)
    truth = module.truth()
    assert truth.temp_c[0] == pytest.approx(85.0)
    assert truth.sensor_temp_c[0] == pytest.approx(25.0 + 60.0 / 4, abs=0.05)


@pytest.mark.parametrize(("value", "mv"), [(None, 0), (6.0, 6000), (2.2, 2200)])
def test_open_wire_on_a_cell_channel(value: float | None, mv: int) -> None:
    module = make_module()
    module.faults.activate("open_wire", channel=3, value=value)
    reading = module.read()
    assert reading.cell_mv[3] == mv
    expected = WIRE | (OUT if not 1000 <= mv <= 4950 else 0)
    assert reading.cell_flags[3] == expected
    assert not np.delete(reading.cell_flags, 3).any()
    module.faults.clear("open_wire", channel=3)
    assert healthy(module)


def test_open_wire_on_a_temperature_sensor() -> None:
    module = make_module()
    module.faults.activate("open_wire", channel=2, target="temp")
    reading = module.read()
    assert reading.temp_c[2] == -55.0 and reading.temp_flags[2] == WIRE | OUT
    assert not np.delete(reading.temp_flags, 2).any() and not reading.cell_flags.any()


@pytest.mark.parametrize("target", ["cell", "temp"])
def test_stuck_sensor_freezes_at_its_last_value(target: FaultTarget) -> None:
    module = make_module()
    module.advance(0.1, 0.0)
    before = module.read()
    module.faults.activate("stuck_sensor", channel=1, target=target)
    frozen = []
    for _ in range(40):
        module.advance(10.0, -150.0)  # voltages sag and cells warm
        reading = module.read()
        frozen.append(reading.cell_mv[1] if target == "cell" else reading.temp_c[1])
    if target == "cell":
        assert set(frozen) == {before.cell_mv[1]}
        assert reading.cell_mv[0] < before.cell_mv[0] - 100
    else:
        assert set(frozen) == {before.temp_c[1]}
        assert reading.temp_c[0] > before.temp_c[0] + 2.0
    assert not reading.cell_flags.any() and not reading.temp_flags.any()
    module.faults.clear("stuck_sensor")
    assert healthy(module)


def test_noisy_channel_exceeds_the_spec_without_a_flag() -> None:
    module = make_module()
    module.faults.activate("noisy_channel", channel=5, value=0.1)
    errors = []
    for _ in range(300):
        reading, truth = module.read(), module.truth()
        errors.append(reading.cell_mv / 1000.0 - truth.cell_v)
        assert not reading.cell_flags.any()
    err = np.array(errors)
    assert err[:, 5].std() == pytest.approx(0.1, rel=0.15)
    assert np.abs(err[:, 5]).max() > 0.05
    assert np.abs(np.delete(err, 5, axis=1)).max() <= BOUND_V
    module.faults.clear()
    assert healthy(module)


def test_noisy_temperature_sensor() -> None:
    module = make_module()
    module.faults.activate("noisy_channel", channel=0, value=3.0, target="temp")
    temps = np.array([module.read().temp_c for _ in range(300)])
    assert temps[:, 0].std() == pytest.approx(3.0, rel=0.15)
    assert temps[:, 1:].std(axis=0).max() < 0.2


# -- expiry of every kind --------------------------------------------------------------------------

FAULT_ARGS: dict[FaultKind, dict[str, object]] = {
    "cell_drift": {"channel": 0, "value": 0.5},
    "over_temperature": {"channel": 0, "value": 80.0, "rate_c_per_s": 100.0},
    "under_temperature": {"channel": 0, "value": -30.0, "rate_c_per_s": 100.0},
    "open_wire": {"channel": 0},
    "stuck_sensor": {"channel": 0},
    "noisy_channel": {"channel": 0, "value": 1.0},
    "dropout": {},
    "slow_samples": {"value": 0.5},
    "late_samples": {"value": 2.0},
    "crash": {},
}


def test_every_kind_is_covered() -> None:
    assert set(FAULT_ARGS) == set(FAULT_KINDS)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_kind_expires_after_its_duration(kind: FaultKind) -> None:
    module = make_module()
    module.faults.activate(kind, duration_s=1.0, **FAULT_ARGS[kind])  # type: ignore[arg-type]
    for _ in range(9):
        module.advance(0.1, 0.0)
        assert module.faults.is_active(kind)
    module.advance(0.1, 0.0)
    assert not module.faults.is_active(kind) and not module.faults
    if kind in ("over_temperature", "under_temperature"):
        # Physical: the group was driven to its target and now cools or warms back slowly.
        assert abs(module.truth().temp_c[0] - 25.0) > 40.0
    else:
        assert healthy(module)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_kind_clears_on_request(kind: FaultKind) -> None:
    module = make_module()
    module.faults.activate(kind, **FAULT_ARGS[kind])  # type: ignore[arg-type]
    module.advance(0.1, 0.0)
    assert module.faults.is_active(kind)
    assert [f.kind for f in module.faults.clear(kind)] == [kind]
    assert not module.faults.is_active(kind)
