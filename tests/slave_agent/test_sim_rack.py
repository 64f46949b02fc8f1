"""SimulatedRack: N modules stepped as one array read as N independent SimulatedModules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.slave_agent.sim.balancing import ActiveBalancer
from services.slave_agent.sim.cells import LFP_OCV_V, CellBankParams
from services.slave_agent.sim.faults import FaultKind, FaultTarget
from services.slave_agent.sim.measurement import MeasurementParams
from services.slave_agent.sim.module import SimulatedModule
from services.slave_agent.sim.rack import SimulatedRack
from shared.messages.slave import ChannelFlag


@dataclass(frozen=True)
class Fault:
    module: int
    kind: FaultKind
    target: FaultTarget | None
    channel: int | None
    value: float | None
    duration_s: float | None


@dataclass(frozen=True)
class Step:
    dt_s: float
    current_a: float
    discharge: list[list[bool]]
    charge: list[list[bool]]
    faults: list[Fault]
    clear: list[int]
    extra_reads: list[int]


@dataclass(frozen=True)
class Scenario:
    modules: int
    cells: int
    sensors: int
    seed: int
    active: bool
    lfp: bool
    steps: list[Step]


@st.composite
def faults(draw: st.DrawFn, modules: int, cells: int, sensors: int) -> Fault:
    module = draw(st.integers(0, modules - 1))
    kind: FaultKind = draw(
        st.sampled_from(
            ["cell_drift", "over_temperature", "under_temperature", "open_wire", "stuck_sensor",
             "noisy_channel", "dropout"]
        )
    )  # fmt: skip
    target: FaultTarget | None = None
    if kind in ("over_temperature", "under_temperature", "open_wire", "stuck_sensor",
                "noisy_channel") and sensors > 0:  # fmt: skip
        target = draw(st.sampled_from(["cell", "temp"]))
    effective = target or ("temp" if "temperature" in kind else "cell")
    if kind in ("over_temperature", "under_temperature") and sensors == 0:
        target = effective = "cell"
    limit = {"cell": cells, "temp": sensors, "module": 0}[effective]
    channel = None if kind == "dropout" else draw(st.none() | st.integers(0, max(limit - 1, 0)))
    values: dict[str, st.SearchStrategy[float | None]] = {
        "cell_drift": st.floats(-0.05, 0.05),
        "over_temperature": st.floats(30.0, 90.0),
        "under_temperature": st.floats(-30.0, 15.0),
        "open_wire": st.none() | st.floats(-100.0, 7.0),
        "stuck_sensor": st.none(),
        "noisy_channel": st.floats(0.0, 0.05 if effective == "cell" else 3.0),
        "dropout": st.none(),
    }
    value = draw(values[kind])
    duration = draw(st.none() | st.floats(0.5, 20.0))
    return Fault(module, kind, target, channel, value, duration)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    modules = draw(st.integers(1, 4))
    cells = draw(st.integers(1, 8))
    sensors = draw(st.integers(0, min(cells, 3)))
    active = draw(st.booleans())
    steps = []
    masks = st.lists(st.lists(st.booleans(), min_size=cells, max_size=cells),
                     min_size=modules, max_size=modules)  # fmt: skip
    for _ in range(draw(st.integers(1, 12))):
        discharge = draw(masks)
        charge = [[c and not d for c, d in zip(cr, dr, strict=True)]
                  for cr, dr in zip(draw(masks), discharge, strict=True)]  # fmt: skip
        steps.append(
            Step(
                dt_s=draw(st.sampled_from([0.0, 0.1, 0.5, 2.0, 30.0])),
                current_a=draw(st.floats(-300.0, 300.0)),
                discharge=discharge,
                charge=charge,
                faults=draw(st.lists(faults(modules, cells, sensors), max_size=3)),
                clear=draw(st.lists(st.integers(0, modules - 1), max_size=1)),
                extra_reads=draw(st.lists(st.integers(0, modules - 1), max_size=2)),
            )
        )
    seed = draw(st.integers(0, 2**16))
    return Scenario(modules, cells, sensors, seed, active, draw(st.booleans()), steps)


def build(sc: Scenario) -> tuple[list[SimulatedModule], SimulatedRack]:
    cells = [
        CellBankParams(
            n_cells=sc.cells,
            seed=sc.seed + m,
            initial_soc_pct=20.0 + 15.0 * m,
            ocv_v=LFP_OCV_V if sc.lfp else CellBankParams().ocv_v,
        )
        for m in range(sc.modules)
    ]
    meas = [MeasurementParams(seed=sc.seed + 100 + m) for m in range(sc.modules)]
    balancer = ActiveBalancer(0.3, 0.9) if sc.active else None
    reference = [
        SimulatedModule(c, n_temp_sensors=sc.sensors, measurement=p, active_balancer=balancer)
        for c, p in zip(cells, meas, strict=True)
    ]
    rack = SimulatedRack(cells, n_temp_sensors=sc.sensors, measurement=meas,
                         active_balancer=balancer)  # fmt: skip
    return reference, rack


def assert_same_reading(ref: SimulatedModule, rack: SimulatedRack, m: int) -> None:
    want, got = ref.read(), rack.read(m)
    np.testing.assert_array_equal(got.cell_mv, want.cell_mv)
    np.testing.assert_array_equal(got.cell_flags, want.cell_flags)
    np.testing.assert_allclose(got.temp_c, want.temp_c, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.temp_flags, want.temp_flags)
    np.testing.assert_array_equal(got.balancing, want.balancing)
    assert got.cell_mv.dtype == want.cell_mv.dtype and got.cell_flags.dtype == np.uint8


def assert_same_truth(ref: SimulatedModule, rack: SimulatedRack, m: int) -> None:
    want, got = ref.truth(), rack.truth(m)
    for name in ("soc_pct", "cell_v", "ocv_v", "temp_c", "sensor_temp_c"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12,
                                   atol=1e-9, err_msg=name)  # fmt: skip
    assert got.current_a == want.current_a


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_a_rack_reads_as_independent_modules(sc: Scenario) -> None:
    reference, rack = build(sc)
    for m in range(sc.modules):
        assert_same_reading(reference[m], rack, m)
    for step in sc.steps:
        for f in step.faults:
            for faults in (reference[f.module].faults, rack.faults[f.module]):
                faults.activate(f.kind, channel=f.channel, value=f.value,
                                duration_s=f.duration_s, target=f.target)  # fmt: skip
        for m in step.clear:
            reference[m].faults.clear()
            rack.faults[m].clear()
        for m, ref in enumerate(reference):
            ref.advance(step.dt_s, step.current_a, step.discharge[m], step.charge[m])
        rack.advance(
            step.dt_s,
            step.current_a,
            np.array(step.discharge, dtype=bool).reshape(sc.modules, sc.cells),
            np.array(step.charge, dtype=bool).reshape(sc.modules, sc.cells),
        )
        for m in range(sc.modules):
            assert_same_truth(reference[m], rack, m)
            assert_same_reading(reference[m], rack, m)
        for m in step.extra_reads:  # a second sample before the next step: fresh noise
            assert_same_reading(reference[m], rack, m)
        for m, ref in enumerate(reference):
            assert rack.faults[m].active() == ref.faults.active()
            heat = rack.converter_heat_j[m]
            assert heat == pytest.approx(ref.converter_heat_j, rel=1e-9, abs=1e-12)
            np.testing.assert_allclose(rack.transfer_ah[m], ref.bank.transfer_ah, atol=1e-15)
            np.testing.assert_allclose(rack.bled_ah[m], ref.bank.bled_ah, atol=1e-15)
            np.testing.assert_allclose(rack.heat_j[m], ref.bank.heat_j, rtol=1e-12, atol=1e-12)


def make_rack(modules: int = 3, cells: int = 4, **kwargs: object) -> SimulatedRack:
    return SimulatedRack(
        [CellBankParams(n_cells=cells, seed=m) for m in range(modules)],
        measurement=[MeasurementParams(seed=m) for m in range(modules)],
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_fault_on_one_module_leaves_the_others_alone() -> None:
    rack = make_rack()
    rack.faults[1].activate("open_wire", channel=2)
    rack.advance(0.1, 0.0)
    flags = [rack.read(m).cell_flags.tolist() for m in range(3)]
    assert flags[1][2] & ChannelFlag.OPEN_WIRE
    assert [f & ChannelFlag.OPEN_WIRE for f in flags[1]] == [0, 0, ChannelFlag.OPEN_WIRE, 0]
    assert flags[0] == flags[2] == [0, 0, 0, 0]


def test_a_second_read_before_the_next_step_draws_fresh_noise() -> None:
    rack = make_rack(modules=2, cells=14)
    rack.advance(0.1, 0.0)
    first, second = rack.read(0).cell_mv, rack.read(0).cell_mv
    assert not np.array_equal(first, second)


def test_masks_of_the_wrong_shape_or_overlapping_are_refused() -> None:
    rack = make_rack()
    with pytest.raises(ValueError, match="modules, cells"):
        rack.advance(0.1, 0.0, np.zeros((2, 4), dtype=bool))
    both = np.zeros((3, 4), dtype=bool)
    both[0, 0] = True
    with pytest.raises(ValueError, match="charged and discharged"):
        rack.advance(0.1, 0.0, both, both)
    with pytest.raises(ValueError, match="dt_s"):
        rack.advance(float("nan"), 0.0)


def test_modules_of_a_rack_must_share_cell_count_and_ocv_table() -> None:
    with pytest.raises(ValueError, match="share"):
        SimulatedRack([CellBankParams(n_cells=4), CellBankParams(n_cells=5)])
    with pytest.raises(ValueError, match="share"):
        SimulatedRack([CellBankParams(), CellBankParams(ocv_v=LFP_OCV_V)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_read_all_is_a_read_of_every_module_in_turn(sc: Scenario) -> None:
    _, one_by_one = build(sc)
    _, at_once = build(sc)
    for step in sc.steps:
        for f in step.faults:
            for faults in (one_by_one.faults[f.module], at_once.faults[f.module]):
                faults.activate(f.kind, channel=f.channel, value=f.value,
                                duration_s=f.duration_s, target=f.target)  # fmt: skip
        for rack in (one_by_one, at_once):
            rack.advance(
                step.dt_s,
                step.current_a,
                np.array(step.discharge, dtype=bool).reshape(sc.modules, sc.cells),
                np.array(step.charge, dtype=bool).reshape(sc.modules, sc.cells),
            )
            for m in step.extra_reads:  # read before: those rows are sampled afresh
                rack.read(m)
        want = [one_by_one.read(m) for m in range(sc.modules)]
        mv, flags, temp, temp_flags = at_once.read_all()
        np.testing.assert_array_equal(mv, [r.cell_mv for r in want])
        np.testing.assert_array_equal(flags, [r.cell_flags for r in want])
        shape = temp.shape
        np.testing.assert_array_equal(temp, np.array([r.temp_c for r in want]).reshape(shape))
        want_flags = np.array([r.temp_flags for r in want]).reshape(shape)
        np.testing.assert_array_equal(temp_flags, want_flags)
        for m in step.clear:  # a read after read_all: fresh for both
            np.testing.assert_array_equal(at_once.read(m).cell_mv, one_by_one.read(m).cell_mv)
