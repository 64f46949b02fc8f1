"""The plant service's wiring without transports: configuration from the bus, the device
registry, fault injection on `sim/plant/control`, the inverter hook, ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from services.plant import registry
from services.plant.core import PlantState
from services.plant.load_profiles import LoadProfile
from services.plant.registry import DeviceContext
from services.plant.service import PlantService
from services.plant.settings import PlantSettings
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig, demo_config
from shared.messages import ConfigMessage, GroundTruth, PlantControl
from shared.topics import CONFIG, PLANT_CONTROL, SIM_TRUTH


@dataclass
class Probe:
    """A device that records what it was given."""

    config: SystemConfig
    ticks: list[PlantState] = field(default_factory=list)
    closed: bool = False

    def tick(self, now_s: float, state: PlantState) -> None:
        self.ticks.append(state)

    def close(self) -> None:
        self.closed = True


@dataclass
class Clock:
    now_s: float = 100.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[Probe]:
    made: list[Probe] = []

    def factory(ctx: DeviceContext) -> Probe:
        made.append(Probe(ctx.config))
        return made[-1]

    # Adding a device is one line in the registry.
    monkeypatch.setitem(registry.DEVICE_FACTORIES, "probe", factory)
    return made


@dataclass
class Rig:
    service: PlantService
    ui: InMemoryBus
    clock: Clock
    truth: list[GroundTruth]

    def publish_config(self, config: SystemConfig) -> None:
        self.ui.publish(CONFIG, ConfigMessage(config=config))
        self.service.bus.process()

    def inject(self, **fields: object) -> None:
        self.ui.publish(PLANT_CONTROL, PlantControl(**fields))  # type: ignore[arg-type]
        self.service.bus.process()

    def step(self, seconds: float, period_s: float = 0.01) -> None:
        for _ in range(round(seconds / period_s)):
            self.clock.now_s += period_s
            self.service.tick(self.clock.now_s)
        self.ui.process()


@dataclass
class Limited:
    """An inverter that keeps within a fixed limit, ticked like a device."""

    profile: LoadProfile
    limit_a: float = 5.0
    ticks: int = 0
    closed: bool = False

    def current_a(
        self, t_s: float, *, soc_pct: float | None, cell_v_min: float, cell_v_max: float
    ) -> float:
        want = self.profile.current_a(
            t_s, soc_pct=soc_pct, cell_v_min=cell_v_min, cell_v_max=cell_v_max
        )
        return max(-self.limit_a, min(self.limit_a, want))

    def tick(self, now_s: float, state: PlantState) -> None:
        self.ticks += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def rig(probes: list[Probe]) -> Iterator[Rig]:
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="plant", kind="plant")
    ui = InMemoryBus(broker, system="demo", service="ui", kind="test")
    bus.start()
    ui.start()
    clock = Clock()
    settings = PlantSettings(devices="probe", load_profile="constant:40", truth_period_s=1.0)
    service = PlantService(
        settings,
        bus,
        inverter=lambda profile, _ctx: Limited(profile),
        monotonic=clock,
        wall=lambda: 1.7e9,
    )
    truth: list[GroundTruth] = []
    ui.subscribe(SIM_TRUTH, lambda d: truth.append(d.message))
    yield Rig(service, ui, clock, truth)
    service.stop()


def test_configuration_from_the_bus_opens_the_devices_once(rig: Rig, probes: list[Probe]) -> None:
    config = demo_config()
    rig.publish_config(config)
    assert len(probes) == 1 and rig.service.core is not None
    rig.publish_config(config)  # the same again (a publisher's reconnect)
    assert len(probes) == 1
    # A threshold change keeps the devices (and the contacts where they are).
    rig.publish_config(config.model_copy(update={"config_version": 2}))
    assert len(probes) == 1 and not probes[0].closed
    # A new topology reopens them.
    rig.publish_config(
        SystemConfig.from_preset("NMC", modules=3, cells_per_module=8, config_version=3)
    )
    assert len(probes) == 2 and probes[0].closed
    assert rig.service.core.modules == [0, 1, 2]


def test_devices_that_do_not_open_are_retried_with_back_off_until_they_do(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port still held when the configuration arrives: the plant retries by itself (it was
    left serving nothing until somebody republished the same configuration)."""
    failures = [OSError(98, "Address already in use")] * 2
    opened: list[Probe] = []

    def flaky(ctx: DeviceContext) -> Probe:
        if failures:
            raise failures.pop()
        opened.append(Probe(ctx.config))
        return opened[-1]

    monkeypatch.setitem(registry.DEVICE_FACTORIES, "probe", flaky)
    service, clock = rig.service, rig.clock

    def after(seconds: float) -> None:
        clock.now_s += seconds
        service.retry_pending(clock.now_s)

    rig.publish_config(demo_config())
    assert service.core is None and service.bus.counters["config_errors"] == 1
    after(0.9)  # the first back-off is 1 s
    assert service.bus.counters["config_errors"] == 1
    after(0.1)
    assert service.core is None and service.bus.counters["config_errors"] == 2
    after(1.9)  # the second is 2 s
    assert service.core is None
    after(0.1)
    assert service.core is not None and len(opened) == 1
    after(60.0)  # nothing pending any more
    assert len(opened) == 1 and service.bus.counters["config_errors"] == 2


def test_every_step_serves_the_state_and_truth_goes_out(rig: Rig, probes: list[Probe]) -> None:
    rig.publish_config(demo_config())
    rig.step(2.0)
    assert len(probes[0].ticks) == 200
    assert probes[0].ticks[-1].string_voltage_v > 300.0
    assert {t.module for t in rig.truth} == set(range(7))
    assert len(rig.truth) == 2 * 7


def test_faults_arrive_on_the_control_topic_and_bad_ones_are_counted(
    rig: Rig, probes: list[Probe]
) -> None:
    rig.publish_config(demo_config())
    rig.inject(fault="insulation_fault", value=25_000.0)
    rig.step(0.02)
    assert probes[0].ticks[-1].insulation_ohm == 25_000.0
    rig.inject(fault="contactor_weld")  # no contactor named
    rig.inject(fault="crash")  # the agent's, not the plant's
    assert rig.service.bus.counters["plant_control_refused"] == 2
    rig.inject(fault="clear", expires_at=1.0)  # long expired
    rig.step(0.02)
    assert probes[0].ticks[-1].insulation_ohm == 25_000.0


def test_the_inverter_hook_limits_the_current_and_is_ticked(rig: Rig, probes: list[Probe]) -> None:
    rig.publish_config(demo_config())
    core = rig.service.core
    assert core is not None
    inverter = core.demand
    assert isinstance(inverter, Limited)
    rig.inject(fault="contactor_weld", contactor="main_positive")
    rig.inject(fault="contactor_weld", contactor="main_negative")
    rig.step(0.1)
    assert probes[0].ticks[-1].current_a == 5.0 and inverter.ticks == 10
    rig.inject(fault="inverter_ignores_limits")
    rig.step(0.1)
    assert probes[0].ticks[-1].current_a == 40.0
    rig.service.stop()
    assert inverter.closed
