"""The master through the transitions that latched `communication_loss` without a cause:
a configuration apply (with a new module count or the same one) while the slaves reconfigure,
standby -> working while the slaves still sample on the 2 s standby period, and a cold start
with slave racks that boot long after the master (a module never seen is waited for, with the
contactors open, and never lost)."""

from __future__ import annotations

from pathlib import Path

from services.master_core.contactors import ContactorFeedback
from services.master_core.service import MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from services.plant.in_process import in_process_factory
from shared.bus import Delivery, InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import CellTelemetry, ConfigMessage, ContactorsArgs, PackState, SetModeArgs
from shared.messages.slave import SlaveMode
from shared.topics import CONFIG, PACK_STATE, SLAVE_TELEMETRY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, tmp_path: Path, modules: int = 2) -> None:
        broker = InMemoryBroker()
        self.clock = Clock()
        bus = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
        self.core = MasterCore(
            MasterCoreSettings(auto_close=True), bus, Store(tmp_path / "m.sqlite"),
            in_process_factory(bus, load_profile="cycle:30:40:20:80"),
            monotonic=self.clock, wall=self.clock,
        )  # fmt: skip
        bus.start()
        self.peer = InMemoryBus(broker, system="demo", service="slave_agent", kind="test")
        self.peer.start()
        self.states: list[PackState] = []
        """Every state the master published (each contactor change is published at once)."""
        self.peer.subscribe(PACK_STATE, self._state)
        self.seq = 0
        self.apply(modules)

    def _state(self, d: Delivery[PackState]) -> None:
        self.states.append(d.message)

    def config(self, modules: int, version: int = 1) -> SystemConfig:
        c = SystemConfig.from_preset("NMC", system_id="demo", modules=modules, cells_per_module=4)
        return c.model_copy(update={"config_version": version})

    def apply(self, modules: int, version: int = 1) -> None:
        self.peer.publish(CONFIG, ConfigMessage(config=self.config(modules, version)))
        self.core.bus.process()

    def sample(self, modules: range, mode: SlaveMode = "working") -> None:
        self.seq += 1
        for m in modules:
            self.peer.publish(
                SLAVE_TELEMETRY,
                CellTelemetry(module=m, mode=mode, sample_ts=self.clock.now, cell_mv=[3700] * 4,
                              cell_flags=[0] * 4, balancing=[False] * 4, temp_c=[25.0, 25.0],
                              temp_flags=[0, 0], seq=self.seq),
                module=m,
            )  # fmt: skip
        self.core.bus.process()

    def run(self, seconds: float, modules: range, period_s: float, mode: SlaveMode) -> None:
        """Cycle the master every 50 ms while the slaves sample every `period_s`."""
        next_sample = self.clock.now
        end = self.clock.now + seconds
        while self.clock.now < end:
            if self.clock.now >= next_sample - 1e-9:
                self.sample(modules, mode)
                next_sample += period_s
            self.core.cycle()
            self.peer.process()
            self.clock.now += 0.05

    def latched(self) -> set[str]:
        assert self.core.rt is not None
        return set(self.core.supervisor.d.protection.latched_state()["faults"])

    @property
    def contactors(self) -> str:
        assert self.core.rt is not None
        return self.core.supervisor.contactor_state


def test_a_new_module_count_does_not_latch_while_the_slaves_reconfigure(tmp_path: Path) -> None:
    rig = Rig(tmp_path, modules=2)
    rig.run(15.0, range(2), 0.1, "working")  # well past the start-up grace
    assert rig.contactors == "closed" and not rig.latched()
    rig.apply(modules=3, version=2)
    rig.core.cycle()  # the cycle right after the apply, before any slave has reconfigured
    rig.clock.now += 1.5
    rig.core.cycle()  # the slaves take a while to rebuild their drivers
    assert "communication_loss" not in rig.latched()
    rig.run(3.0, range(3), 0.1, "working")
    assert "communication_loss" not in rig.latched()
    assert rig.contactors == "closed"  # auto-close: the new contactor sequence closes again


def test_the_same_module_count_does_not_latch_either(tmp_path: Path) -> None:
    rig = Rig(tmp_path, modules=2)
    rig.run(15.0, range(2), 0.1, "working")
    rig.apply(modules=2, version=2)
    rig.core.cycle()
    rig.clock.now += 0.3
    rig.core.cycle()
    rig.run(2.0, range(2), 0.1, "working")
    assert "communication_loss" not in rig.latched()
    assert rig.contactors == "closed"


def assert_waiting_for(rig: Rig, missing: set[int]) -> None:
    """Every state published since `rig.states` was cleared: contactors open, no fault, the
    missing modules listed as stale, limits 0 A, every contact open."""
    assert rig.states
    for s in rig.states:
        assert s.contactors == "standby", s
        assert not s.faults, s.faults
        assert missing <= set(s.stale_modules), s.stale_modules
        assert (s.limits.charge_current_a, s.limits.discharge_current_a) == (0.0, 0.0)
    assert set(rig.states[-1].stale_modules) == missing
    assert not rig.latched()
    assert rig.core.rt is not None
    assert rig.core.rt.io.contactors.feedback == ContactorFeedback()  # every contact reads open


def test_a_module_that_never_reports_is_waited_for_with_the_contactors_open(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, modules=2)
    rig.run(15.0, range(2), 0.1, "working")
    assert rig.contactors == "closed"
    rig.apply(modules=3, version=2)  # module 2's rack is still booting
    rig.states.clear()
    rig.run(180.0, range(2), 0.1, "working")
    assert_waiting_for(rig, {2})
    reply = rig.core._cmd_contactors(ContactorsArgs(action="close"))
    assert not reply.accepted
    assert "module 3 has not reported: the pack is not fully supervised" in reply.reason
    rig.run(0.5, range(2), 0.1, "working")
    assert rig.contactors == "standby"  # the refused command left nothing pending
    rig.run(3.0, range(3), 0.1, "working")  # the rack is up
    assert rig.contactors == "closed" and not rig.latched()  # auto-close


def test_a_cold_start_with_racks_booting_one_by_one_latches_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, modules=3)  # the retained configuration is there at once
    rig.run(45.0, range(0), 0.1, "working")
    assert_waiting_for(rig, {0, 1, 2})
    rig.states.clear()
    rig.run(45.0, range(1), 0.1, "working")
    assert_waiting_for(rig, {1, 2})
    rig.states.clear()
    rig.run(45.0, range(2), 0.1, "working")
    assert_waiting_for(rig, {2})
    rig.run(3.0, range(3), 0.1, "working")
    assert rig.contactors == "closed" and not rig.latched()


def test_a_module_seen_after_the_apply_and_then_silent_is_lost(tmp_path: Path) -> None:
    rig = Rig(tmp_path, modules=2)
    rig.run(15.0, range(2), 0.1, "working")
    rig.apply(modules=3, version=2)
    rig.run(3.0, range(3), 0.1, "working")
    assert rig.contactors == "closed"
    rig.run(1.0, range(2), 0.1, "working")  # module 2 stops: 5 x 0.1 s is its timeout
    assert "communication_loss" in rig.latched()
    assert rig.contactors == "fault"


def test_standby_to_working_does_not_latch(tmp_path: Path) -> None:
    rig = Rig(tmp_path, modules=2)
    rig.run(15.0, range(2), 0.1, "working")
    for _ in range(10):
        rig.core._cmd_mode(SetModeArgs(mode="standby"))
        rig.run(7.9, range(2), 2.0, "standby")  # the last standby sample is 1.9 s old
        rig.core._cmd_mode(SetModeArgs(mode="working"))
        rig.core.cycle()
        rig.clock.now += 0.05
        rig.core.cycle()  # the slave has not yet received the mode
        rig.run(1.0, range(2), 0.1, "working")
        assert "communication_loss" not in rig.latched()
        rig.run(3.0, range(2), 0.1, "working")
        assert rig.contactors == "closed"  # auto-close: back to work closes again


def test_an_operators_open_holds_through_a_mode_switch_until_a_close_command(
    tmp_path: Path,
) -> None:
    """Auto-close serves start-up, back-to-work and a trip's reset, never against an operator:
    contactors opened by command stay open through standby and working until a close."""
    from shared.messages import ContactorsArgs

    rig = Rig(tmp_path, modules=2)
    rig.run(15.0, range(2), 0.1, "working")
    assert rig.contactors == "closed"
    assert rig.core._cmd_contactors(ContactorsArgs(action="open")).accepted
    rig.run(2.0, range(2), 0.1, "working")
    rig.core._cmd_mode(SetModeArgs(mode="standby"))
    rig.run(4.0, range(2), 2.0, "standby")
    rig.core._cmd_mode(SetModeArgs(mode="working"))
    rig.run(10.0, range(2), 0.1, "working")
    assert rig.contactors == "standby"
    assert rig.core._cmd_contactors(ContactorsArgs(action="close")).accepted
    rig.run(5.0, range(2), 0.1, "working")
    assert rig.contactors == "closed"
