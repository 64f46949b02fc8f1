"""The plant's physics core: pure, clock passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.plant.core import (
    DEFAULT_INSULATION_FAULT_OHM,
    CoilState,
    PlantCore,
    PlantParams,
)
from services.plant.load_profiles import Constant
from shared.config import SystemConfig, demo_config
from shared.messages import ChannelFlag, PlantControl

STEP_S = 0.01


@pytest.fixture(scope="module")
def config() -> SystemConfig:
    return demo_config()


def make(config: SystemConfig, amps: float = 20.0, **params: float) -> PlantCore:
    return PlantCore(config, PlantParams(**params), Constant(amps))  # type: ignore[arg-type]


def run(core: PlantCore, seconds: float) -> None:
    for _ in range(round(seconds / STEP_S)):
        core.step(core.time_s + STEP_S)


def close_mains(core: PlantCore) -> None:
    core.set_coils(CoilState(main_negative=True, precharge=True))
    run(core, 2.0)
    core.set_coils(CoilState(main_negative=True, main_positive=True))
    run(core, 0.1)


coil_sets = st.builds(CoilState, st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(coil_sets, st.integers(1, 40)), min_size=1, max_size=8))
def test_current_flows_only_through_closed_contacts(
    config: SystemConfig, schedule: list[tuple[CoilState, int]]
) -> None:
    core = make(config, amps=50.0)
    highest_v = core.state().string_voltage_v
    for coils, steps in schedule:
        core.set_coils(coils)
        for _ in range(steps):
            before = core.contactors.feedback
            core.step(core.time_s + STEP_S)
            s = core.state()
            if before.main_negative and before.main_positive:
                assert s.current_a == 50.0
            elif before.main_negative and before.precharge:
                # only what the precharge resistor lets through
                r_pre = config.contactors.precharge_resistor_ohm
                assert abs(s.current_a) <= highest_v / r_pre
            else:
                assert s.current_a == 0.0
            # The DC link never exceeds the source nor goes negative (an open link holds its
            # charge, so it may stay above a pack that relaxed since).
            highest_v = max(highest_v, s.string_voltage_v)
            assert -1e-9 <= s.link_voltage_v <= highest_v + 1e-6


@settings(max_examples=20, deadline=None)
@given(amps=st.floats(-100.0, 100.0), periods=st.integers(1, 50))
def test_cells_integrate_exactly_the_string_current(
    config: SystemConfig, amps: float, periods: int
) -> None:
    core = make(config, amps=amps, cell_period_s=0.1)
    core.inject(PlantControl(fault="contactor_weld", contactor="main_positive"))
    core.inject(PlantControl(fault="contactor_weld", contactor="main_negative"))
    soc0 = core.truth(0).soc_pct.copy()
    for k in range(1, periods + 1):
        core.step(k * 0.1)
    cap = core.cells.modules[0].bank.capacity_ah
    want = amps * periods * 0.1 / 3600.0 / cap * 100.0
    # self-discharge (up to ~4 %/month) adds at most 8e-6 % over 5 s
    np.testing.assert_allclose(core.truth(0).soc_pct - soc0, want, atol=1e-5)


def test_precharge_raises_the_link_with_the_configured_rc(config: SystemConfig) -> None:
    core = make(config)
    u1 = core.state().string_voltage_v
    core.set_coils(CoilState(main_negative=True, precharge=True))
    tau = config.contactors.precharge_resistor_ohm * config.contactors.dc_link_capacitance_f
    run(core, 0.03 + tau)  # contacts close after 30 ms, then one time constant
    assert core.state().link_voltage_v == pytest.approx(u1 * (1 - math.exp(-1)), rel=0.05)
    run(core, 6 * tau)
    assert u1 - core.state().link_voltage_v < config.contactors.precharge_voltage_diff_v


def test_no_current_without_main_negative_even_with_positive_closed(
    config: SystemConfig,
) -> None:
    core = make(config, amps=30.0)
    core.set_coils(CoilState(main_positive=True))
    run(core, 1.0)
    assert core.state().contacts.main_positive and core.state().current_a == 0.0
    core.set_coils(CoilState(main_positive=True, main_negative=True))
    run(core, 0.2)
    assert core.state().current_a == 30.0


def test_balancing_coils_bleed_their_cells(config: SystemConfig) -> None:
    core = make(config)
    n = config.topology.cells_per_module
    before = core.cells.truth(1).soc_pct.copy()
    core.set_balancing(1, [i == 3 for i in range(n)])
    run(core, 30.0)
    drop = before - core.cells.truth(1).soc_pct
    assert drop[3] > 10 * max(np.delete(drop, 3).max(), 1e-9)
    with pytest.raises(ValueError, match="balancing switches"):
        core.set_balancing(1, [True])


@dataclass
class Limited:
    """An inverter keeping within a fixed limit."""

    limit_a: float

    def current_a(
        self, t_s: float, *, soc_pct: float | None, cell_v_min: float, cell_v_max: float
    ) -> float:
        return self.limit_a


def test_inverter_hook_and_the_fault_that_ignores_its_limits(config: SystemConfig) -> None:
    core = PlantCore(config, PlantParams(), Constant(80.0), demand=Limited(10.0))
    close_mains(core)
    assert core.state().current_a == 10.0
    core.inject(PlantControl(fault="inverter_ignores_limits"))
    run(core, 0.05)
    assert core.state().current_a == 80.0
    core.inject(PlantControl(fault="clear"))
    run(core, 0.05)
    assert core.state().current_a == 10.0


def test_current_sensor_offset_noise_and_dropout(config: SystemConfig) -> None:
    core = make(config, amps=25.0, current_noise_a=0.1, current_offset_a=0.5)
    close_mains(core)
    reads = [core.state().sensed_current_a for _ in range(200)]
    assert all(r is not None and 25.4 - 1e-9 <= r <= 25.6 + 1e-9 for r in reads)
    assert len(set(reads)) > 100  # noisy, not a constant
    core.inject(PlantControl(fault="current_offset", value=-3.0))
    assert core.state().sensed_current_a == pytest.approx(22.5, abs=0.11)
    core.inject(PlantControl(fault="current_dropout"))
    assert core.state().sensed_current_a is None
    assert core.state().current_a == 25.0


def test_welded_contactor_stays_closed_and_feedback_tells(config: SystemConfig) -> None:
    core = make(config)
    core.inject(PlantControl(fault="contactor_weld", contactor="main_positive"))
    run(core, 0.2)
    s = core.state()
    assert s.contacts.main_positive and s.feedback["main_positive"]
    assert core.contactors.is_welded("main_positive")
    assert not core.contactors.is_welded("main_negative")
    core.inject(PlantControl(fault="clear"))
    assert not core.contactors.is_welded("main_positive")
    with pytest.raises(ValueError, match="needs a contactor"):
        core.inject(PlantControl(fault="contactor_weld"))


def test_stuck_feedback_contact_differs_from_the_truth(config: SystemConfig) -> None:
    core = make(config)
    core.inject(PlantControl(fault="feedback_stuck", contactor="main_negative", value=0))
    core.set_coils(CoilState(main_negative=True))
    run(core, 0.2)
    s = core.state()
    assert s.contacts.main_negative and not s.feedback["main_negative"]
    core.inject(PlantControl(fault="feedback_stuck", contactor="precharge", value=1))
    assert core.state().feedback["precharge"] and not core.state().contacts.precharge


def test_insulation_fault(config: SystemConfig) -> None:
    core = make(config, insulation_ohm=5e6)
    assert core.state().insulation_ohm == 5e6
    core.inject(PlantControl(fault="insulation_fault"))
    assert core.state().insulation_ohm == DEFAULT_INSULATION_FAULT_OHM
    core.inject(PlantControl(fault="insulation_fault", value=1234.0))
    assert core.state().insulation_ohm == 1234.0
    with pytest.raises(ValueError, match="positive"):
        core.inject(PlantControl(fault="insulation_fault", value=0.0))


def test_short_during_precharge_keeps_the_link_down_and_drains_the_pack(
    config: SystemConfig,
) -> None:
    core = make(config)
    core.inject(PlantControl(fault="precharge_short"))
    core.set_coils(CoilState(main_negative=True, precharge=True))
    run(core, 1.0)
    s = core.state()
    assert s.link_voltage_v == 0.0
    r_pre = config.contactors.precharge_resistor_ohm
    assert s.current_a == pytest.approx(-s.string_voltage_v / r_pre, rel=0.01)


def test_cell_faults_reach_the_board_readings(config: SystemConfig) -> None:
    core = make(config)
    core.inject(PlantControl(fault="open_wire", module=2, channel=5))
    reading = core.read_board(2)
    assert reading.cell_flags[5] & ChannelFlag.OPEN_WIRE
    assert not core.read_board(1).cell_flags[5] & ChannelFlag.OPEN_WIRE
    core.inject(PlantControl(fault="board_dropout", module=4))
    assert core.state().silent_boards == {4}
    core.inject(PlantControl(fault="clear"))
    assert not core.read_board(2).cell_flags[5] & ChannelFlag.OPEN_WIRE
    assert core.state().silent_boards == frozenset()


@pytest.mark.parametrize("fault", ["crash", "dropout", "slow_samples"])
def test_agent_loop_faults_are_refused(config: SystemConfig, fault: str) -> None:
    with pytest.raises(ValueError, match="slave agent's loop"):
        make(config).inject(PlantControl(fault=fault))  # type: ignore[arg-type]


def test_unknown_module_is_refused(config: SystemConfig) -> None:
    """The message names the module as the person who injected it typed it, from 1."""
    with pytest.raises(ValueError, match=r"^module 100 is not in this plant$"):
        make(config).inject(PlantControl(fault="open_wire", module=99, channel=0))
    with pytest.raises(ValueError, match=r"^module 8 is not in this plant$"):
        make(config).inject(PlantControl(fault="board_dropout", module=7))


def test_a_new_configuration_keeps_the_contacts_and_restarts_cells_only_when_needed(
    config: SystemConfig,
) -> None:
    core = make(config)
    close_mains(core)
    cells = core.cells
    stricter = config.model_copy(update={"config_version": config.config_version + 1})
    assert core.configure(stricter) is False and core.cells is cells
    assert core.state().contacts.main_positive
    bigger = SystemConfig.from_preset("NMC", modules=3, cells_per_module=10,
                                      cell_capacity_ah=50.0)  # fmt: skip
    assert core.configure(bigger) is True
    assert core.modules == [0, 1, 2] and core.state().contacts.main_positive


def test_plant_faults_last_until_clear_and_take_only_sensible_values(config: SystemConfig) -> None:
    core = make(config)
    with pytest.raises(ValueError, match="until clear"):
        core.inject(PlantControl(fault="current_dropout", duration_s=5.0))
    with pytest.raises(ValueError, match="1 \\(closed\\) or 0"):
        core.inject(PlantControl(fault="feedback_stuck", contactor="precharge", value=0.5))
    assert core.state().sensed_current_a is not None
    # cell faults keep their own duration
    core.inject(PlantControl(fault="open_wire", module=0, channel=1, duration_s=0.5))
    assert core.read_board(0).cell_flags[1] & ChannelFlag.OPEN_WIRE
    run(core, 0.6)
    assert not core.read_board(0).cell_flags[1] & ChannelFlag.OPEN_WIRE


def test_a_voltage_offset_moves_only_what_the_sensor_reads(config: SystemConfig) -> None:
    core = make(config)
    run(core, 0.2)
    before = core.state()
    assert before.sensed_string_voltage_v == before.string_voltage_v
    core.inject(PlantControl(fault="voltage_offset", value=5.0))
    after = core.state()
    assert after.sensed_string_voltage_v == pytest.approx(after.string_voltage_v + 5.0)
    assert after.string_voltage_v == pytest.approx(before.string_voltage_v)
    with pytest.raises(ValueError, match="needs a value"):
        core.inject(PlantControl(fault="voltage_offset"))
    core.inject(PlantControl(fault="clear"))
    assert core.state().sensed_string_voltage_v == core.state().string_voltage_v


def test_a_silent_insulation_monitor_until_cleared(config: SystemConfig) -> None:
    core = make(config)
    assert not core.state().insulation_monitor_silent
    core.inject(PlantControl(fault="insulation_monitor_silent"))
    assert core.state().insulation_monitor_silent
    core.inject(PlantControl(fault="clear"))
    assert not core.state().insulation_monitor_silent
