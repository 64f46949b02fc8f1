"""The pure supervisor in closed loop with the plant's contactor physics, over random sequences
of cell voltages, temperatures, commands, module silence and contactor I/O dropouts.

Properties: no missed trip, no early trip, no coil on while a fault latches, no close
accepted while a fault latches; a dead relay module trips contactor_io_failure."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.hardware import CONTACTOR_IO, CURRENT_SENSOR, HardwareReading
from services.master_core.pack import PackSnapshot
from services.master_core.plausibility import PlausibilityValues
from services.master_core.protection import Transition
from services.master_core.supervisor import (
    CURRENT_SENSOR_START_GRACE_S,
    NO_CURRENT_SENSOR_YET,
    CommandResult,
    Supervisor,
    SupervisorInputs,
    SupervisorOutputs,
    transition_event,
    unsupervised,
)
from services.plant.contactors import SimulatedContactors
from shared.config import demo_config
from shared.messages import CellLocation

CONFIG = demo_config()
OV = CONFIG.protection.cell_overvoltage.fault
MODULES = CONFIG.topology.modules
CELLS = CONFIG.topology.total_cells
DT_S = 0.05


def snapshot(cell_v: float, temp_c: float, stale: tuple[int, ...] = ()) -> PackSnapshot:
    per = CONFIG.topology.cells_per_module
    cells = np.full(CELLS, cell_v)
    module_of = np.repeat(np.arange(MODULES), per)
    for m in stale:
        cells[module_of == m] = np.nan
    temps = np.full(MODULES * CONFIG.topology.temp_sensors_per_module, temp_c)
    known = not stale
    return PackSnapshot(
        cell_v=cells, temp_c=temps, balancing=np.zeros(CELLS, dtype=bool),
        module_of_cell=module_of, cell_flags=np.zeros(CELLS, dtype=np.int64),
        temp_flags=np.zeros(len(temps), dtype=np.int64), stale_modules=stale,
        cell_v_min=cell_v, cell_v_max=cell_v, cell_v_avg=cell_v,
        cell_v_min_at=None, cell_v_max_at=None,
        temp_min_c=temp_c, temp_max_c=temp_c, temp_avg_c=temp_c,
        temp_min_at=None, temp_max_at=None, spread_v=0.0,
        sum_of_cells_v=cell_v * CELLS if known else None,
        open_wire=False, out_of_range=False, sensor_fault=False,
    )  # fmt: skip


@dataclass
class Rig:
    sup: Supervisor = field(
        default_factory=lambda: Supervisor(auto_close=True, heartbeat_timeout_s=0.0)
    )
    plant: SimulatedContactors = field(
        default_factory=lambda: SimulatedContactors(CONFIG.contactors)
    )
    now: float = 0.0
    cell_v: float = 3.7
    temp_c: float = 25.0
    silent: set[int] = field(default_factory=set)
    io_dead: bool = False
    sensor_silent: bool = False
    """The current sensor gives no reading (not booted yet, or lost)."""
    current_a: float = 0.0
    """What flows while both main contacts are closed (a welded contact conducts too)."""
    sensor_offset_a: float = 0.0
    broker_connected: bool = True
    link_unknown: bool = False
    """The DC link voltage reading is missing (a sensor frame that did not come)."""
    over_since: float | None = None
    """When the cells went above the overvoltage fault threshold (None: not above)."""

    def __post_init__(self) -> None:
        self.sup.adopt(Supervisor.prepare(CONFIG, insulation_monitor=False), self.now)

    def step(self, dt_s: float = DT_S) -> SupervisorOutputs:
        self.now += dt_s
        for m in range(MODULES):
            if m not in self.silent:
                self.sup.comm.on_sample(m, self.sup.mode, self.now)
        modules = self.sup.module_status(self.now)
        pack_v = self.cell_v * CELLS
        fb = self.plant.feedback
        flowing = self.current_a if fb.main_positive and fb.main_negative else 0.0
        errors = {CONTACTOR_IO: ("no answer",)} if self.io_dead else {}
        if self.sensor_silent:
            errors[CURRENT_SENSOR] = ("no answer",)
        reading = HardwareReading(
            current_a=None if self.sensor_silent else flowing + self.sensor_offset_a,
            pack_voltage_v=pack_v,
            link_voltage_v=None if self.link_unknown else self.plant.bus_voltage_v,
            feedback=None if self.io_dead else self.plant.feedback,
            device_errors=errors,
        )
        inputs = SupervisorInputs(
            snapshot=snapshot(self.cell_v, self.temp_c, modules.stale_modules),
            modules=modules, reading=reading, soc_pct=50.0, broker_connected=self.broker_connected,
        )  # fmt: skip
        out = self.sup.step(inputs, self.now)
        if not self.io_dead:
            # the readings of the next cycle lag the physics by this cycle (as a sensor's do)
            self.plant.step(dt_s, out.coils, pack_v)
        return out


action = st.one_of(
    st.tuples(st.just("steps"), st.integers(1, 40)),
    st.tuples(st.just("cell_v"), st.sampled_from([3.7, 4.0, OV.threshold + 0.02, 4.4, 3.6])),
    st.tuples(st.just("temp_c"), st.sampled_from([25.0, 58.0, 65.0])),
    st.tuples(st.just("close"), st.none()),
    st.tuples(st.just("open"), st.none()),
    st.tuples(st.just("reset"), st.none()),
    st.tuples(st.just("mode"), st.sampled_from(["working", "standby"])),
    st.tuples(st.just("silence"), st.integers(0, MODULES - 1)),
    st.tuples(st.just("talk"), st.none()),
    st.tuples(st.just("io_dead"), st.booleans()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(action, max_size=30))
def test_no_missed_trip_no_early_trip_no_coil_on_while_a_fault_latches(
    actions: list[tuple[str, object]],
) -> None:
    rig = Rig()
    for _ in range(20):
        rig.step()
    for kind, arg in actions:
        if kind == "steps":
            assert isinstance(arg, int)
            for _ in range(arg):
                above = rig.cell_v > OV.threshold
                if above and rig.over_since is None:
                    rig.over_since = rig.now + DT_S  # first seen in the next step
                elif not above:
                    rig.over_since = None
                out = rig.step()
                latched = "cell_overvoltage" in out.protection.faults
                if out.protection.faults:
                    assert not (out.coils.main_positive or out.coils.precharge), out
                    assert out.coils.state == "fault" or out.coils.all_off
                if rig.over_since is not None and rig.now - rig.over_since >= OV.delay_s + DT_S:
                    assert latched, "missed trip"
                raised = [t for t in out.protection.transitions if t.code == "cell_overvoltage"]
                if any(t.kind == "raise" and t.level == "fault" for t in raised):
                    assert rig.over_since is not None
                    assert rig.now - rig.over_since >= OV.delay_s - 1e-9, "early trip"
        elif kind == "cell_v":
            assert isinstance(arg, float)
            rig.cell_v = arg
        elif kind == "temp_c":
            assert isinstance(arg, float)
            rig.temp_c = arg
        elif kind == "close":
            d = rig.sup.d
            assert d is not None
            latched_before = bool(d.protection.latched_state()["faults"])
            if rig.sup.close(rig.now, "command").ok:
                assert not latched_before, "close accepted while a fault latches"
        elif kind == "open":
            rig.sup.open(rig.now)
        elif kind == "reset":
            rig.sup.reset(rig.now, service_override=False)
        elif kind == "mode":
            assert arg in ("working", "standby")
            rig.sup.set_mode(arg, rig.now)  # type: ignore[arg-type]
        elif kind == "silence":
            assert isinstance(arg, int)
            rig.silent.add(arg)
        elif kind == "talk":
            rig.silent.clear()
        elif kind == "io_dead":
            assert isinstance(arg, bool)
            rig.io_dead = arg


def test_the_rig_closes_and_an_overvoltage_trips_it() -> None:
    """The property above is not vacuous: the loop closes, and the trip opens it."""
    rig = Rig()
    for _ in range(100):
        out = rig.step()
    assert out.coils.state == "closed" and out.coils.main_positive
    rig.cell_v = OV.threshold + 0.05
    for _ in range(round(OV.delay_s / DT_S) + 2):
        out = rig.step()
    assert "cell_overvoltage" in out.protection.faults
    assert out.coils.all_off and out.coils.state == "fault"


def test_a_dead_relay_module_trips_and_nothing_closes_until_it_answers() -> None:
    rig = Rig()
    for _ in range(100):
        out = rig.step()
    assert out.coils.state == "closed"
    rig.io_dead = True
    timeout_s = CONFIG.protection.contactor_io_timeout_s
    for _ in range(round(timeout_s / DT_S) - 2):
        out = rig.step()
        # blind, the sequence holds: the relay module keeps its outputs
        assert out.coils.state == "closed" and "contactor_io_failure" not in out.protection.faults
    for _ in range(6):
        out = rig.step()
    assert "contactor_io_failure" in out.protection.faults
    assert out.coils.all_off and out.coils.state == "fault"
    assert not rig.sup.close(rig.now, "command").ok


def test_a_dead_relay_module_in_standby_refuses_the_close_command() -> None:
    """contactor_io_failure latched with the contactors open: the sequence gets no step while
    the relay module is silent, so the supervisor itself refuses the close."""
    rig = Rig()
    for _ in range(20):
        rig.step()
    rig.sup.open(rig.now)
    for _ in range(10):
        out = rig.step()
    assert out.coils.state == "standby"
    rig.io_dead = True
    for _ in range(round(CONFIG.protection.contactor_io_timeout_s / DT_S) + 4):
        out = rig.step()
    # the supervisor puts the sequence in fault itself (see the next test)
    assert "contactor_io_failure" in out.protection.faults and out.coils.state == "fault"
    refused = CommandResult(False, "a protection fault is latched")
    assert rig.sup.close(rig.now, "command") == refused


def test_a_current_sensor_that_boots_after_the_master_is_waited_for_and_latches_nothing() -> None:
    """The master and its sensor power up together; the sensor answers a few seconds later.
    Until then nothing closes (the current is not supervised); then the start-up close runs."""
    rig = Rig(sensor_silent=True)
    for _ in range(round(3.0 / DT_S)):
        out = rig.step()
        assert out.coils.all_off and out.coils.state == "standby", out
        assert not out.protection.faults, out.protection.faults
    assert rig.sup.close(rig.now, "command").why == NO_CURRENT_SENSOR_YET
    rig.sensor_silent = False
    for _ in range(100):
        out = rig.step()
    assert out.coils.state == "closed" and not out.protection.faults


def test_a_current_sensor_that_never_answers_latches_its_failure_after_the_grace() -> None:
    rig = Rig(sensor_silent=True)
    while rig.now < CURRENT_SENSOR_START_GRACE_S - DT_S:
        out = rig.step()
        assert "current_sensor_failure" not in out.protection.faults
        assert out.coils.all_off
    for _ in range(round(1.0 / DT_S)):
        out = rig.step()
    assert "current_sensor_failure" in out.protection.faults
    assert out.coils.all_off
    # answering late does not undo the latch: it takes a reset
    rig.sensor_silent = False
    for _ in range(10):
        out = rig.step()
    assert "current_sensor_failure" in out.protection.faults and out.coils.all_off


def test_a_current_sensor_lost_after_it_answered_trips_without_a_grace() -> None:
    rig = Rig()
    for _ in range(100):
        out = rig.step()
    assert out.coils.state == "closed"
    rig.sensor_silent = True
    for _ in range(round(1.0 / DT_S)):
        out = rig.step()
    assert rig.now < CURRENT_SENSOR_START_GRACE_S
    assert "current_sensor_failure" in out.protection.faults
    assert out.coils.all_off and out.coils.state == "fault"


def test_a_relay_module_dead_in_standby_shows_the_contactors_in_fault() -> None:
    """Found by the fault matrix (relay_silent/standby): with no feedback the sequence was never
    stepped, so a fault latched in standby left the contactors in standby, unlike every other
    code latched there."""
    rig = Rig(sup=Supervisor(auto_close=False, heartbeat_timeout_s=0.0))
    rig.sup.set_mode("standby", rig.now)
    for _ in range(20):
        out = rig.step()
    assert out.coils.state == "standby"
    rig.io_dead = True
    for _ in range(round(CONFIG.protection.contactor_io_timeout_s / DT_S) + 8):
        out = rig.step()
    assert "contactor_io_failure" in out.protection.faults
    assert out.coils.all_off and out.coils.state == "fault"
    assert not rig.sup.close(rig.now, "command").ok


def test_a_sensor_reading_current_on_the_open_string_trips_current_on_open_string() -> None:
    rig = Rig()
    rig.sup.set_mode("standby", rig.now)
    for _ in range(10):
        rig.step()
    rig.sensor_offset_a = 3.0  # 3 A where nothing can flow
    delay_s = CONFIG.protection.open_string_delay_s
    for _ in range(round(delay_s / DT_S) + 3):
        out = rig.step()
    assert "current_on_open_string" in out.protection.faults
    assert out.coils.all_off


def test_a_shorted_dc_link_fails_the_precharge_on_the_first_attempt() -> None:
    rig = Rig()
    rig.plant.precharge_short()
    for _ in range(60):
        out = rig.step()
        if "precharge_failure" in out.protection.faults:
            break
    assert "precharge_failure" in out.protection.faults
    assert rig.sup.d is not None and rig.sup.d.contactors.precharge_attempt <= 1
    assert out.coils.all_off and out.coils.state == "fault"


def test_a_timed_out_precharge_try_is_an_event_and_the_next_try_closes() -> None:
    rig = Rig(link_unknown=True)
    c = CONFIG.contactors
    events = []
    for _ in range(round(c.precharge_timeout_s / DT_S) + 5):
        events += rig.step().events
    retries = [e for e in events if e.code == "precharge_retry"]
    assert len(retries) == 1, events
    assert retries[0].level == "warning" and "try 1 timed out" in retries[0].text
    rig.link_unknown = False
    for _ in range(round((c.precharge_retry_wait_s + c.precharge_timeout_s) / DT_S) + 20):
        out = rig.step()
        events += out.events
    assert out.coils.state == "closed", out.coils.reason
    assert [e.code for e in events].count("precharge_retry") == 1


def test_current_after_the_open_is_a_welded_contactor_that_needs_a_service_reset() -> None:
    rig = Rig(current_a=-20.0)
    for _ in range(100):
        out = rig.step()
    assert out.coils.state == "closed"
    rig.plant.weld("main_positive")
    rig.plant.weld("main_negative")
    rig.sup.open(rig.now)
    timeout_s = CONFIG.contactors.feedback_timeout_s
    for _ in range(round(timeout_s / DT_S) + 20):
        out = rig.step()
    assert "contactor_welded" in out.protection.faults
    assert not rig.sup.reset(rig.now, service_override=False).ok


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.001, 0.08), min_size=80, max_size=80))
def test_a_healthy_precharge_never_fails_on_late_readings_and_irregular_cycles(
    periods_s: list[float],
) -> None:
    """Found live: cycles run on a grid and on fresh telemetry, and a reading is one cycle
    old; a healthy DC link must still pass the precharge check."""
    rig = Rig()
    for dt_s in [*periods_s, *[DT_S] * 60]:  # then long enough on the grid to end the sequence
        out = rig.step(dt_s)
        assert "precharge_failure" not in out.protection.faults, out.plausibility.precharge_reason
    assert out.coils.state == "closed"


def test_a_contact_stuck_open_latches_its_code_and_the_limits_fall_to_zero() -> None:
    """Found by the fault matrix: the sequence tripped on the mismatch, then command and
    feedback agreed again, so the code never latched and the limits stayed up."""
    rig = Rig()
    rig.plant.stuck_open("main_positive")
    for _ in range(100):
        out = rig.step()
    assert out.coils.state == "fault" and out.coils.all_off
    assert "contactor_feedback_mismatch" in out.protection.faults
    assert out.limits.charge_current_a == 0.0 and out.limits.discharge_current_a == 0.0


def test_contactors_in_fault_without_a_protection_code_give_zero_limits() -> None:
    rig = Rig()
    for _ in range(100):
        out = rig.step()
    assert out.limits.charge_current_a > 0.0
    d = rig.sup.d
    assert d is not None
    d.contactors.trip(rig.now, "test")  # the sequence's own trip, no protection code
    out = rig.step()
    assert not out.protection.faults and out.coils.state == "fault"
    assert (out.limits.charge_current_a, out.limits.discharge_current_a) == (0.0, 0.0)
    assert out.limits.charge_reason == "contactors_fault"


def test_unknown_voltages_never_complete_a_precharge() -> None:
    """Found in review: an unknown U1/U2 went to the sequence as 0 V, and |0 - 0| V reads as
    a finished precharge: main positive would close over a DC link nobody measured."""
    rig = Rig()
    real = rig.plant.bus_voltage_v
    assert real == 0.0
    sup = rig.sup
    for _ in range(60):
        rig.now += DT_S
        for m in range(MODULES):
            sup.comm.on_sample(m, sup.mode, rig.now)
        modules = sup.module_status(rig.now)
        reading = HardwareReading(
            current_a=0.0, pack_voltage_v=None, link_voltage_v=None,
            feedback=rig.plant.feedback,
        )  # fmt: skip
        out = sup.step(
            SupervisorInputs(snapshot=snapshot(3.7, 25.0, modules.stale_modules),
                             modules=modules, reading=reading, soc_pct=50.0),
            rig.now,
        )  # fmt: skip
        rig.plant.step(DT_S, out.coils, 3.7 * CELLS)
        assert not out.coils.main_positive, out.coils.reason


def test_a_raise_event_names_the_cell_that_held_the_extreme_then() -> None:
    """The place goes with the raise: the live extreme may move later (a runaway cell leaves
    its measurement range and the next-highest cell becomes the maximum)."""
    at = CellLocation(module=1, index=3)
    hottest = CellLocation(module=0, index=1)
    snap = replace(snapshot(4.3, 25.0), cell_v_max_at=at, temp_max_at=hottest)
    raised = Transition("raise", "fault", "cell_overvoltage", 4.3, 4.25, 4.2, "V", 0.0)
    event = transition_event(raised, snap=snap)
    assert event.values == {"value": 4.3, "threshold": 4.25, "release": 4.2, "unit": "V",
                            "module": 1, "index": 3}  # fmt: skip
    assert "module" not in transition_event(replace(raised, kind="clear"), snap=snap).values
    pack_ov = Transition("raise", "fault", "pack_overvoltage", 60.0, 58.0, 57.0, "V", 0.0)
    assert "module" not in transition_event(pack_ov, snap=snap).values  # no single place
    hot = Transition("raise", "alarm", "cell_overtemp_discharge", 58.0, 55.0, 50.0, "°C", 0.0)
    assert transition_event(hot, snap=snap).values["module"] == 0


def test_event_texts_number_places_from_one_the_values_from_zero() -> None:
    """People read the text ("M2 · C4"); programs read the contract's indices in the values."""
    snap = replace(snapshot(4.3, 25.0), cell_v_max_at=CellLocation(module=1, index=3),
                   temp_max_at=CellLocation(module=0, index=1))  # fmt: skip
    raised = Transition("raise", "fault", "cell_overvoltage", 4.3, 4.25, 4.2, "V", 0.0)
    event = transition_event(raised, snap=snap)
    assert event.text == (
        "cell_overvoltage fault raised: 4.300 V (threshold 4.25 V, release 4.2) at M2 · C4"
    )
    assert (event.values["module"], event.values["index"]) == (1, 3)
    hot = Transition("raise", "alarm", "cell_overtemp_discharge", 58.0, 55.0, 50.0, "°C", 0.0)
    assert transition_event(hot, snap=snap).text.endswith(" at M1 · T2")
    cleared = transition_event(replace(raised, kind="clear"), snap=snap)
    assert " at " not in cleared.text
    stuck = PlausibilityValues(
        open_string_current_a=None, current_offset_a=None, contactor_welded=None,
        precharge_failed=None, insulation_monitor_age_s=None, contactor_io_age_s=None,
        module_temp_spread_c=None, stuck_cell_voltage_channels=frozenset({(2, 0), (0, 5)}),
        stuck_temperature_channels=frozenset({(1, 1)}),
    )  # fmt: skip
    cell = Transition("raise", "fault", "stuck_cell_voltage_channel", 1.0, 1.0, 0.0, "", 0.0)
    assert transition_event(cell, stuck).text.endswith("; channels M1 · C6, M3 · C1")
    temp = Transition("raise", "fault", "stuck_temperature_channel", 1.0, 1.0, 0.0, "", 0.0)
    assert transition_event(temp, stuck).text.endswith("; channels M2 · T2")


def test_a_close_refused_for_silent_modules_numbers_them_from_one() -> None:
    assert unsupervised((2,)) == "module 3 has not reported: the pack is not fully supervised"
    assert unsupervised((0, 4)).startswith("modules 1, 5 have not reported")


def test_the_checks_are_fed_a_snapshot_once() -> None:
    """The aggregator hands out the same snapshot object while no sample arrived and the stale
    set held: the stuck-channel and temperature-spread checks get its vectors once, and again
    from new checks (a new configuration)."""
    rig = Rig()
    rig.step()
    modules = rig.sup.module_status(rig.now)
    reading = HardwareReading(
        current_a=0.0, pack_voltage_v=3.7 * CELLS, link_voltage_v=None, feedback=None
    )
    snap = snapshot(3.7, 25.0)
    inputs = SupervisorInputs(
        snapshot=snap, modules=modules, reading=reading, soc_pct=50.0, broker_connected=True
    )
    first = rig.sup._facts(inputs, 0.0)
    assert first.cells_by_module is not None and first.temps_by_module is not None
    again = rig.sup._facts(inputs, 0.0)
    assert again.cells_by_module is None and again.temps_by_module is None
    rig.sup.adopt(Supervisor.prepare(CONFIG, insulation_monitor=False), rig.now)
    assert rig.sup._facts(inputs, 0.0).cells_by_module is not None
    new = replace(inputs, snapshot=snapshot(3.7, 25.0))
    assert rig.sup._facts(new, 0.0).cells_by_module is not None
