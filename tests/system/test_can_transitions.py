"""Every CAN profile through start-up and a topology change, on a real mosquitto, read by an
independent client: python-can's virtual bus, every frame decoded by cantools from the DBC.

At start-up the master knows no value yet (SOC, voltage, cell extremes None): no measurement
frame may carry an invented number, and the limits are fail-safe (0 A). Once the values are
known, they go out. After a configuration with another topology, the frames follow it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, get_args

import can
import pytest

from services.can_gateway import native, pylon_hv
from services.can_gateway.codec import load_dbc
from services.can_gateway.service import CanGateway
from shared.broker import MosquittoBroker
from shared.bus import MqttBus
from shared.config import CanProfile, SystemConfig
from shared.messages import CellSnapshot, ConfigMessage, ModuleCells, PackState
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG, PACK_CELLS, PACK_STATE
from tests.factories import limits, pack_state

from .agents import publish_config, wait_until

UNKNOWN = pack_state(soc=None, soh=None, voltage=None, current=None, cell_v_min=None,
                     cell_v_max=None, cell_v_avg=None, contactors="standby")  # fmt: skip
KNOWN = pack_state(
    soc=71.0, soh=99.0, voltage=52.4, current=-18.2, cell_v_min=3.27, cell_v_max=3.30,
    cell_v_avg=3.28, temp_min_c=21.0, temp_max_c=24.0, temp_avg_c=22.5, energy_in_wh=1000.0,
    energy_out_wh=900.0, equivalent_cycles=3.0,
    limits_=limits(charge_voltage_v=55.2, discharge_voltage_v=44.8, charge_current_a=90.0,
                   discharge_current_a=120.0),
)  # fmt: skip
# frames that carry measurements, per profile: none of them may go out while unknown
MEASUREMENTS = {
    "victron_0x35x": {0x355, 0x356, 0x373, 0x378},
    "pylon_v12": {0x355, 0x356},
    "pylon_hv": {0x4210, 0x4230, 0x4240, 0x4260, 0x4270},
    "native": {native.CELL_VOLTAGE_EXTREMES_ID, native.TEMPERATURE_EXTREMES_ID},
}
LIMITS_ID = {"victron_0x35x": 0x351, "pylon_v12": 0x351, "pylon_hv": 0x4220, "native": 0x601}
CHARGE_LIMIT = {"pylon_hv": "MaxChargeCurrent"}
CHARGE_VOLTAGE = {"pylon_hv": "ChargeCutoffVoltage"}


def config_for(
    system_id: str, profile: str, modules: int, cells: int, version: int
) -> SystemConfig:
    base = SystemConfig.from_preset("LFP", system_id=system_id, modules=modules,
                                    cells_per_module=cells, config_version=version)  # fmt: skip
    data = base.model_dump(mode="json")
    data["interfaces"]["can"]["profiles"] = [profile]
    return SystemConfig.model_validate(data)


def snapshot(modules: int, cells: int, unknown: set[int] = frozenset()) -> CellSnapshot:  # type: ignore[assignment]
    """Cell k reads 3.2 V + k mV; the cells in `unknown` are None at their own place."""
    out = []
    for m in range(modules):
        volts = [None if m * cells + i in unknown else round(3.2 + (m * cells + i) / 1000, 3)
                 for i in range(cells)]  # fmt: skip
        out.append(ModuleCells(module=m, fresh=True, cell_v=volts, cell_flags=[0] * cells,
                               balancing=[False] * cells, temp_c=[20.0 + m, 21.0 + m],
                               temp_flags=[0, 0]))  # fmt: skip
    return CellSnapshot(modules=out)


class Inverter:
    """The independent reader: every frame on the channel, decoded with the profile's DBC."""

    def __init__(self, channel: str, profile: str) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.db = load_dbc(profile)
        self.frames: dict[int, list[bytes]] = defaultdict(list)
        self.lock = threading.Lock()
        self.notifier = can.Notifier(self.bus, [self._on])

    def _on(self, msg: can.Message) -> None:
        with self.lock:
            self.frames[msg.arbitration_id].append(bytes(msg.data))

    def clear(self) -> None:
        with self.lock:
            self.frames.clear()

    def seen(self) -> set[int]:
        with self.lock:
            return {i for i, v in self.frames.items() if v}

    def latest(self, frame_id: int, *, raw: bool = False) -> dict[str, Any]:
        with self.lock:
            data = self.frames[frame_id][-1]
        values = self.db.decode_message(frame_id, data, decode_choices=False, scaling=not raw)
        assert isinstance(values, dict)
        return values

    def every(self, frame_id: int) -> list[dict[str, Any]]:
        with self.lock:
            datas = list(self.frames[frame_id])
        out = []
        for data in datas:
            values = self.db.decode_message(frame_id, data, decode_choices=False)
            assert isinstance(values, dict)
            out.append(values)
        return out

    def ask(self) -> None:
        """Pylontech HV answers only when asked: ensemble and system requests."""
        for kind in (pylon_hv.REQUEST_ENSEMBLE, pylon_hv.REQUEST_SYSTEM):
            data = bytes([kind]) + bytes(7)
            self.bus.send(can.Message(arbitration_id=pylon_hv.REQUEST_ID, data=data,
                                      is_extended_id=True))  # fmt: skip

    def close(self) -> None:
        self.notifier.stop()
        self.bus.shutdown()


class Stack:
    def __init__(self, url: str, config: SystemConfig, profile: str) -> None:
        self.ui = publish_config(url, config)
        self.master = MqttBus(parse_mqtt_url(url), system=config.system_id,
                              service="master_core", kind="test")  # fmt: skip
        assert self.master.start(wait_s=10)
        self.pack: PackState = UNKNOWN
        self.cells = snapshot(1, 16, unknown=set(range(16)))
        self.stop = threading.Event()
        threading.Thread(target=self._feed, daemon=True).start()
        channel = f"can-{uuid.uuid4().hex[:8]}"
        self.bus = MqttBus(parse_mqtt_url(url), system=config.system_id, service="can_gateway",
                           kind="test")  # fmt: skip
        self.gateway = CanGateway(self.bus, can.Bus(interface="virtual", channel=channel),
                                  stale_after_s=1.0)  # fmt: skip
        assert self.bus.start(wait_s=10)
        self.runner = threading.Thread(target=self.gateway.run, args=(self.stop.is_set,))
        self.runner.start()
        self.inverter = Inverter(channel, profile)
        self.profile = profile

    def _feed(self) -> None:
        while not self.stop.is_set():
            self.master.publish(PACK_STATE, self.pack)
            self.master.publish(PACK_CELLS, self.cells)
            time.sleep(0.1)

    def settle(self, frame_id: int, timeout_s: float = 6.0, count: int = 2) -> bool:
        """Wait until `frame_id` was seen `count` times after a clear (asking, for HV)."""
        self.inverter.clear()

        def enough() -> bool:
            if self.profile == "pylon_hv":
                self.inverter.ask()
            return len(self.inverter.frames.get(frame_id, [])) >= count

        return wait_until(enough, timeout_s, step_s=0.3)

    def close(self) -> None:
        self.stop.set()
        self.runner.join(5)
        self.gateway.close()
        self.gateway.can.shutdown()
        self.inverter.close()
        for b in (self.bus, self.master, self.ui):
            b.stop()


@pytest.fixture(params=get_args(CanProfile))
def stack(request: pytest.FixtureRequest, mosquitto: MosquittoBroker,
          system_id: str) -> Iterator[Stack]:  # fmt: skip
    profile = request.param
    s = Stack(mosquitto.url, config_for(system_id, profile, 1, 16, 1), profile)
    yield s
    s.close()


def test_start_up_invents_nothing_and_the_frames_follow_a_topology_change(stack: Stack) -> None:
    profile, inv = stack.profile, stack.inverter
    limits_id = LIMITS_ID[profile]
    charge = CHARGE_LIMIT.get(profile, "ChargeCurrentLimit")
    cvl = CHARGE_VOLTAGE.get(profile, "ChargeVoltageLimit")

    # start-up: every value unknown
    assert stack.settle(limits_id)
    time.sleep(1.2)
    assert not MEASUREMENTS[profile] & inv.seen(), sorted(hex(i) for i in inv.seen())
    assert inv.latest(limits_id)[charge] == pytest.approx(0.0, abs=0.1)
    full_v = stack.gateway.config.charge_pack_voltage_v if stack.gateway.config else 0.0
    assert inv.latest(limits_id)[cvl] == pytest.approx(full_v, abs=0.1)  # 16 cells x charge_v
    if profile == "native":
        status = inv.latest(native.STATUS_ID, raw=True)
        assert (status["PackVoltage"], status["StateOfCharge"]) == (0xFFFF, 1023)  # N/A, not 0
        quality = inv.latest(native.SOC_QUALITY_ID, raw=True)
        assert (quality["SocStd"], quality["SinceAnchor"]) == (0xFFFF, 0xFFFFFFFF)
        cells = {k: v for f in inv.every(native.CELL_VOLTAGES_ID) for k, v in f.items()}
        assert cells["CellVoltage001"] == cells["CellVoltage016"] == 65535  # unknown, not 0 mV

    # the values become known: they go out
    stack.pack = KNOWN
    stack.cells = snapshot(1, 16)
    first = min(MEASUREMENTS[profile])
    assert stack.settle(first)
    if profile in ("victron_0x35x", "pylon_v12"):
        assert inv.latest(0x355)["StateOfCharge"] == 71
        assert inv.latest(0x356)["BatteryVoltage"] == pytest.approx(52.4, abs=0.01)
    elif profile == "pylon_hv":
        assert stack.settle(0x4210)
        assert inv.latest(0x4210)["PileVoltage"] == pytest.approx(52.4, abs=0.1)
        assert inv.latest(0x4260)["MaxModuleVoltage"] == pytest.approx(
            sum(round(3.2 + k / 1000, 3) for k in range(16)), abs=0.002
        )
    else:
        assert inv.latest(native.CELL_VOLTAGE_EXTREMES_ID)["CellVoltageMin"] == 3270
    assert inv.latest(limits_id)[charge] == pytest.approx(90.0, abs=0.1)

    # a new topology: 2 modules x 7 cells, and module 1's first cell unknown
    moved = config_for(stack.bus.system, profile, 2, 7, 2)
    stack.ui.publish(CONFIG, ConfigMessage(config=moved))
    stack.pack = UNKNOWN
    stack.cells = snapshot(2, 7, unknown={7})
    assert wait_until(lambda: stack.gateway.config == moved, 5)
    # the first frames after the switch may still carry the last known state (in flight);
    # judge only frames sent once the unknown state has certainly arrived
    assert stack.settle(limits_id)
    assert stack.settle(limits_id)
    assert moved.charge_pack_voltage_v < full_v
    assert inv.latest(limits_id)[cvl] == pytest.approx(moved.charge_pack_voltage_v, abs=0.1)
    assert not MEASUREMENTS[profile] & inv.seen()
    if profile == "victron_0x35x":
        assert inv.latest(0x372)["ModulesOnline"] == 2
    if profile == "pylon_hv":
        assert stack.settle(0x7320)
        info = inv.latest(0x7320)
        assert (info["TotalCells"], info["ModulesInSeries"], info["CellsPerModule"]) == (14, 2, 7)
    if profile == "native":
        stack.pack = KNOWN  # cell frames go out while the pack state is current
        assert stack.settle(native.CELL_VOLTAGES_ID, count=66)
        cells = {k: v for f in inv.every(native.CELL_VOLTAGES_ID) for k, v in f.items()}
        assert [cells[f"CellVoltage{n:03d}"] for n in range(1, 16)] == [
            3200, 3201, 3202, 3203, 3204, 3205, 3206, 65535, 3208, 3209, 3210, 3211, 3212,
            3213, 65535,
        ]  # fmt: skip
