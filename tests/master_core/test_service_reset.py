"""Open wire and the service reset, through the master's own loop and command server.

An open sense wire reads 0 V: it must raise `open_wire` (its own code), never
`deep_discharge`, and a normal reset must clear it once the wire is fixed. A deep discharge
needs a service reset: an override with a user and a reason, only on `cmd/service_reset`,
logged as an event, clearing only what the override covers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.protection import LATCHED_STATE_VERSION, Protection
from services.master_core.service import MasterCore
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from services.plant.in_process import in_process_factory
from shared.bus import InMemoryBroker, InMemoryBus
from shared.commands import CommandClient
from shared.config import SystemConfig
from shared.config.system import demo_config
from shared.messages import (
    CellTelemetry,
    ChannelFlag,
    CommandArgs,
    CommandReply,
    ConfigMessage,
    ContactorsArgs,
    Event,
    ResetFaultsArgs,
    ServiceOverride,
    ServiceResetArgs,
    SetModeArgs,
)
from shared.protection_codes import reset_need
from shared.topics import CONFIG, EVENTS, SLAVE_TELEMETRY
from tests.master_core.test_protection import nominal

STEP_S = 0.05
HEALTHY_MV = 3700
OVERRIDE = ServiceOverride(user="alice", reason="cell 0/1 replaced and checked")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stack:
    """A master on an in-memory bus, fed telemetry by the test, commanded like the UI."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        auto_close: bool = True,
        load_profile: str = "constant:0",
        config: SystemConfig | None = None,
    ) -> None:
        broker = InMemoryBroker()
        self.clock = Clock()
        self.store_path = tmp_path / "master.sqlite"
        self.bus = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
        self.bus.start()
        self.core = MasterCore(
            MasterCoreSettings(load_profile=load_profile, auto_close=auto_close),
            self.bus, Store(self.store_path),
            in_process_factory(self.bus, load_profile=load_profile),
            monotonic=self.clock, wall=self.clock,
        )  # fmt: skip
        self.slaves = InMemoryBus(broker, system="demo", service="slaves", kind="test")
        self.slaves.start()
        self.ui = InMemoryBus(broker, system="demo", service="config_ui", kind="test")
        self.ui.start()
        self.client = CommandClient(self.ui, clock=self.clock)
        self.events: list[Event] = []
        self.ui.subscribe(EVENTS, lambda d: self.events.append(d.message))
        self.config = config or SystemConfig.from_preset(
            "NMC", system_id="demo", modules=2, cells_per_module=4
        )
        self.ui.publish(CONFIG, ConfigMessage(config=self.config))
        self.bus.process()
        self.cell_mv = {m: [HEALTHY_MV] * 4 for m in range(2)}
        self.cell_flags = {m: [0] * 4 for m in range(2)}
        self.seen_faults: set[str] = set()

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP_S)):
            self.clock.now += STEP_S
            for m in range(2):
                self.slaves.publish(
                    SLAVE_TELEMETRY,
                    CellTelemetry(
                        module=m, mode="working", sample_ts=self.clock.now,
                        cell_mv=self.cell_mv[m], cell_flags=self.cell_flags[m],
                        balancing=[False] * 4, temp_c=[25.0, 25.0], temp_flags=[0, 0],
                    ),
                    module=m,
                )  # fmt: skip
            self.bus.process()
            self.core.cycle()
            self.seen_faults |= set(self.faults())
            self.ui.process()

    def faults(self) -> tuple[str, ...]:
        assert self.core.rt is not None
        return self.core.supervisor.d.protection.status().faults

    @property
    def contactors(self) -> str:
        assert self.core.rt is not None
        return self.core.supervisor.contactor_state

    def command(self, name: str, args: CommandArgs) -> CommandReply:
        replies: list[CommandReply | None] = []
        self.client.send(name, args, on_reply=replies.append)
        self.bus.process()
        self.ui.process()
        [reply] = replies
        assert reply is not None
        return reply


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    s = Stack(tmp_path)
    s.run(5.0)
    assert s.contactors == "closed", s.faults()
    return s


def open_wire(stack: Stack, module: int, channel: int) -> None:
    stack.cell_mv[module][channel] = 0
    stack.cell_flags[module][channel] = int(ChannelFlag.OPEN_WIRE)


def fix_wire(stack: Stack, module: int, channel: int) -> None:
    stack.cell_mv[module][channel] = HEALTHY_MV
    stack.cell_flags[module][channel] = 0


def test_open_wire_raises_its_own_code_and_a_normal_reset_clears_it(stack: Stack) -> None:
    open_wire(stack, 1, 2)
    stack.run(3.0)
    assert "open_wire" in stack.faults()
    assert stack.contactors == "fault"
    fix_wire(stack, 1, 2)
    stack.run(1.0)
    assert "deep_discharge" not in stack.seen_faults, stack.seen_faults
    assert "cell_undervoltage" not in stack.seen_faults

    reply = stack.command("reset_faults", ResetFaultsArgs())
    assert reply.status == "accepted", reply.reason
    stack.run(5.0)
    assert stack.faults() == ()
    assert stack.contactors == "closed"  # the reset was the only operator action


def test_without_auto_close_a_reset_leaves_the_contactors_open(tmp_path: Path) -> None:
    stack = Stack(tmp_path, auto_close=False)
    stack.run(2.0)
    assert stack.command("contactors", ContactorsArgs(action="close")).status == "accepted"
    stack.run(5.0)
    assert stack.contactors == "closed"
    open_wire(stack, 0, 0)
    stack.run(3.0)
    fix_wire(stack, 0, 0)
    stack.run(1.0)
    assert stack.command("reset_faults", ResetFaultsArgs()).status == "accepted"
    stack.run(5.0)
    assert stack.contactors == "standby"


def test_a_reset_in_standby_mode_does_not_close_the_contactors(stack: Stack) -> None:
    open_wire(stack, 0, 0)
    stack.run(3.0)
    fix_wire(stack, 0, 0)
    assert stack.command("set_mode", SetModeArgs(mode="standby")).status == "accepted"
    stack.run(1.0)
    assert stack.command("reset_faults", ResetFaultsArgs()).status == "accepted"
    stack.run(5.0)
    assert stack.contactors in ("standby", "fault")
    assert stack.contactors != "closed"


def deep_discharge(stack: Stack) -> None:
    """A real deep discharge on cell 1 of module 0, then the cell is recharged past release."""
    stack.cell_mv[0][1] = 2000
    stack.run(10.0)
    assert "deep_discharge" in stack.faults()
    stack.cell_mv[0][1] = HEALTHY_MV
    stack.run(1.0)


def test_a_deep_discharge_needs_the_service_reset(stack: Stack) -> None:
    deep_discharge(stack)
    reply = stack.command("reset_faults", ResetFaultsArgs())
    assert reply.status == "refused"
    assert "deep_discharge" in reply.reason and "service reset" in reply.reason

    reply = stack.command("service_reset", ServiceResetArgs(service_override=OVERRIDE))
    assert reply.status == "accepted", reply.reason
    assert stack.faults() == ()
    [audit] = [e for e in stack.events if e.code == "service_reset"]
    assert audit.kind == "command" and audit.level == "warning"
    assert audit.values["user"] == "alice"
    assert audit.values["reason"] == OVERRIDE.reason
    assert "deep_discharge" in str(audit.values["cleared"])
    assert stack.core.writer.flush()  # the latches are handed over at once, written apart
    assert "deep_discharge" not in Store(stack.store_path).get("protection_latched")["faults"]
    stack.run(5.0)
    assert stack.contactors == "closed"


def test_an_override_on_the_ordinary_topic_is_refused(stack: Stack) -> None:
    deep_discharge(stack)
    reply = stack.command("reset_faults", ResetFaultsArgs(service_override=OVERRIDE))
    assert reply.status == "refused"
    assert "cmd/service_reset" in reply.reason
    assert "deep_discharge" in stack.faults()  # nothing was cleared
    refusal = [e for e in stack.events if e.code == "service_reset"]
    assert refusal and refusal[-1].values["user"] == "alice"  # the attempt is logged too


def test_the_override_clears_only_what_it_covers(stack: Stack) -> None:
    deep_discharge(stack)
    stack.cell_mv[1][0] = 4400  # an overvoltage that is still present
    stack.run(5.0)
    assert "cell_overvoltage" in stack.faults()
    reply = stack.command("service_reset", ServiceResetArgs(service_override=OVERRIDE))
    assert reply.status == "refused"
    assert "cell_overvoltage" in reply.reason
    assert "cell_overvoltage" in stack.faults()
    assert "deep_discharge" not in stack.faults()  # what the override covers is cleared
    [audit] = [e for e in stack.events if e.code == "service_reset"]
    cleared = str(audit.values["cleared"]).split(", ")
    assert "deep_discharge" in cleared and "cell_overvoltage" not in cleared


def test_a_deep_discharge_latched_before_a_restart_is_cleared_by_the_service_reset(
    tmp_path: Path,
) -> None:
    before = Stack(tmp_path)
    before.run(5.0)
    deep_discharge(before)
    before.core.stop()
    after = Stack(tmp_path)  # the same SQLite file: the latch comes back
    after.run(1.0)
    assert "deep_discharge" in after.faults()
    assert after.command("reset_faults", ResetFaultsArgs()).status == "refused"
    reply = after.command("service_reset", ServiceResetArgs(service_override=OVERRIDE))
    assert reply.status == "accepted", reply.reason
    after.run(5.0)
    assert after.faults() == () and after.contactors == "closed"
    assert after.core.writer.flush()
    assert Store(after.store_path).get("protection_latched")["faults"] == {}


_DEMO_PROTECTION = Protection.from_system(demo_config())
LATCHING = sorted(c for c in _DEMO_PROTECTION.codes if "fault" in _DEMO_PROTECTION.monitors(c))


@given(
    # the latching codes a system without an insulation monitor supervises (nominal() has no
    # reading)
    latched=st.sets(st.sampled_from(LATCHING), min_size=1),
    override=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_a_reset_clears_exactly_what_its_authority_covers(
    latched: set[str], override: bool
) -> None:
    """Every condition has released: a normal reset clears every latch whose reset needs only
    a release and none that needs service; an override clears them all."""
    config = demo_config()
    p = Protection.from_system(config)
    p.restore({"version": LATCHED_STATE_VERSION, "faults": {c: {"value": None} for c in latched}})
    p.evaluate(nominal(config), 0.0)
    reset = p.reset(1.0, service_override=override)
    service = {c for c in latched if reset_need(c) == "service"}
    expected = latched if override else latched - service
    assert {t.code for t in reset.cleared} == expected
    assert set(reset.still_latched) == latched - expected
    assert set(p.status().faults) == latched - expected
