"""The plant's inverter and iso165C where the configuration puts them (python-can `virtual`, in
process): the inverter keeps the string current within the limits it reads off the inverter
bus (`interfaces.can`), `inverter_ignores_limits` lifts them; the master's own iso165C adapter
reads the plant's insulation resistance on `insulation_monitor.can`, and `insulation_fault`
lowers it. The relay module is driven through the master's Modbus driver."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import can
import pytest

from services.can_gateway.codec import encode, load_dbc
from services.master_core.devices import CanBuses, open_can_bus
from services.master_core.drivers.contactor_io import ModbusContactorIo
from services.master_core.insulation_sources import Iso165cInsulation
from services.plant.core import CoilState
from services.plant.registry import CanInverter
from services.plant.service import PlantService
from services.plant.settings import PlantSettings
from shared.broker import free_port
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig, plant_demo_config
from shared.messages import PlantControl
from shared.topics import PLANT_CONTROL

LOAD_A = 20.0
LIMIT_A = 5.0
WAIT_S = 15.0


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def sil_config() -> SystemConfig:
    """`plant_demo_config` moved onto private virtual channels and a free relay port; the
    inverter speaks the native profile (plain physical limits, 1 s timeout)."""
    tag = uuid.uuid4().hex
    data = plant_demo_config().model_dump(mode="json")
    data["interfaces"]["can"].update(interface="virtual", channel=f"inv-{tag}",
                                     profiles=["native"])  # fmt: skip
    device_bus = {"interface": "virtual", "channel": f"dev-{tag}"}
    data["current_sensor"]["can"].update(device_bus)
    data["insulation_monitor"]["can"].update(device_bus)
    data["contactors"]["io"]["tcp_port"] = free_port()
    return SystemConfig.model_validate(data)


@dataclass
class Rig:
    service: PlantService
    config: SystemConfig

    def inject(self, **fields: object) -> None:
        self.service.bus.publish(PLANT_CONTROL, PlantControl(**fields))  # type: ignore[arg-type]

    def current_a(self) -> float:
        core = self.service.core
        assert core is not None
        return core.state().current_a


class LimitsSender:
    """The BMS side of the inverter bus: native 0x601 limits every 100 ms."""

    def __init__(self, config: SystemConfig, limit_a: float) -> None:
        cfg = config.interfaces.can
        self.bus = can.Bus(interface=cfg.interface, channel=cfg.channel)
        self.limit_a = limit_a
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = load_dbc("native")
        while not self._stop.is_set():
            frame_id, data = encode(db, 0x601, {
                "ChargeVoltageLimit": 450.0, "DischargeVoltageLimit": 250.0,
                "ChargeCurrentLimit": self.limit_a, "DischargeCurrentLimit": self.limit_a,
            })  # fmt: skip
            self.bus.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))
            self._stop.wait(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.bus.shutdown()


@pytest.fixture
def rig() -> Iterator[Rig]:
    config = sil_config()
    settings = PlantSettings(
        boards_port=free_port(), load_profile=f"constant:{LOAD_A}", current_noise_a=0.0
    )
    bus = InMemoryBus(InMemoryBroker(), system="demo", service="plant", kind="plant")
    bus.start()
    service = PlantService(settings, bus, inverter=CanInverter)
    service.apply_config(config)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop.is_set,), name="plant")
    thread.start()
    try:
        yield Rig(service, config)
    finally:
        stop.set()
        thread.join(timeout=10.0)
        service.stop()


def close_contactors(rig: Rig) -> ModbusContactorIo:
    relay = ModbusContactorIo(rig.config.contactors.io)
    relay.write(CoilState(main_negative=True, precharge=True))
    time.sleep(1.0)  # precharge of the demo's DC link: well under a second
    relay.write(CoilState(main_negative=True, main_positive=True))

    def closed() -> bool:
        fb = relay.read(time.monotonic())
        return not fb.stale and fb.main_positive is True and fb.main_negative is True

    wait_for("the main contacts", closed)
    return relay


def test_the_inverter_keeps_within_the_limits_on_the_bus_until_it_ignores_them(rig: Rig) -> None:
    relay = close_contactors(rig)
    try:
        # no limits on the bus: the inverter draws nothing
        time.sleep(0.5)
        assert rig.current_a() == 0.0
        sender = LimitsSender(rig.config, LIMIT_A)
        try:
            wait_for("the load clipped to the limit", lambda: rig.current_a() == LIMIT_A)
            rig.inject(fault="inverter_ignores_limits")
            wait_for("the whole load", lambda: rig.current_a() == LOAD_A)
            rig.inject(fault="clear")
            wait_for("the limit again", lambda: rig.current_a() == LIMIT_A)
        finally:
            sender.close()
        wait_for("stale limits: nothing", lambda: rig.current_a() == 0.0)
    finally:
        relay.close()


def test_the_masters_iso165c_adapter_reads_the_plants_insulation(rig: Rig) -> None:
    buses = CanBuses(open_can_bus)
    monitor = Iso165cInsulation(rig.config, buses, time.monotonic)
    try:

        def resistance() -> float | None:
            return monitor.sample(time.monotonic()).resistance_ohm

        wait_for("a measurement", lambda: resistance() == 10e6, timeout_s=30.0)
        rig.inject(fault="insulation_fault", value=200e3)
        wait_for("the injected fault", lambda: resistance() == 200e3)
    finally:
        monitor.close()
