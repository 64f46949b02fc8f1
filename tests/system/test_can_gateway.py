"""The CAN gateway on a real broker, with an inverter on python-can's virtual bus decoding
every frame with cantools and the repository's DBC."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import pytest

from services.can_gateway.codec import load_dbc
from services.can_gateway.service import CanGateway
from shared.broker import MosquittoBroker
from shared.bus import MqttBus
from shared.config import SystemConfig
from shared.messages import Event, PackState
from shared.settings import parse_mqtt_url
from shared.topics import EVENTS, PACK_CELLS, PACK_STATE
from tests.factories import limits
from tests.factories import pack_state as base_pack_state

from .agents import ServiceProcess, publish_config, wait_until


def pack_state() -> PackState:
    """A 16-cell LFP pack as the inverter tests expect it."""
    return base_pack_state(
        soc=71.0, soh=99.0, voltage=52.4, current=-18.2, cell_v_min=3.27, cell_v_max=3.30,
        cell_v_avg=3.28, temp_min_c=21.0, temp_max_c=24.0,
        limits_=limits(charge_voltage_v=55.2, discharge_voltage_v=44.8, charge_current_a=90.0,
                       discharge_current_a=120.0),
    )  # fmt: skip


class Inverter:
    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.frames: dict[int, list[tuple[float, bytes]]] = defaultdict(list)
        self.notifier = can.Notifier(self.bus, [self._on])

    def _on(self, msg: can.Message) -> None:
        self.frames[msg.arbitration_id].append((time.monotonic(), bytes(msg.data)))

    def latest(self, frame_id: int) -> dict[str, Any]:
        db = load_dbc("victron_0x35x")
        return dict(db.decode_message(frame_id, self.frames[frame_id][-1][1], decode_choices=False))

    def close(self) -> None:
        self.notifier.stop()
        self.bus.shutdown()


@pytest.fixture
def rig(mosquitto: MosquittoBroker, system_id: str) -> Iterator[dict[str, Any]]:
    config = SystemConfig.from_preset("LFP", system_id=system_id, modules=1, cells_per_module=16)
    assert config.interfaces.can.profiles == ("victron_0x35x",)
    ui = publish_config(mosquitto.url, config)
    master = MqttBus(
        parse_mqtt_url(mosquitto.url), system=system_id, service="master_core", kind="test"
    )
    assert master.start(wait_s=10)
    feeding = threading.Event()
    feeding.set()
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            if feeding.is_set():
                master.publish(PACK_STATE, pack_state())
            time.sleep(0.1)

    threading.Thread(target=feed, daemon=True).start()
    channel = f"can-{uuid.uuid4().hex[:8]}"
    bus = MqttBus(
        parse_mqtt_url(mosquitto.url), system=system_id, service="can_gateway", kind="test"
    )
    gateway = CanGateway(
        bus,
        can.Bus(interface="virtual", channel=channel),
        stale_after_s=1.0,
        keepalive_timeout_s=1.5,
    )
    events: list[Event] = []
    watcher = MqttBus(parse_mqtt_url(mosquitto.url), system=system_id, service="watch", kind="test")
    watcher.subscribe(EVENTS, lambda d: events.append(d.message))
    assert watcher.start(wait_s=10)

    def pump() -> None:
        while not stop.is_set():
            watcher.process(0.1)

    threading.Thread(target=pump, daemon=True).start()
    inverter = Inverter(channel)
    assert bus.start(wait_s=10)
    runner = threading.Thread(target=gateway.run, args=(stop.is_set,), daemon=True)
    runner.start()
    yield dict(inverter=inverter, feeding=feeding, events=events, gateway=gateway)
    stop.set()
    runner.join(5)
    gateway.close()
    gateway.can.shutdown()
    inverter.close()
    for b in (bus, watcher, master, ui):
        b.stop()


def test_frames_once_a_second_with_the_pack_values(rig: dict[str, Any]) -> None:
    inv: Inverter = rig["inverter"]
    assert wait_until(lambda: len(inv.frames[0x351]) >= 4, 8)
    for frame_id in (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F):
        times = [t for t, _ in inv.frames[frame_id]][-3:]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.8 <= g <= 1.2 for g in gaps), (hex(frame_id), gaps)
    limits = inv.latest(0x351)
    assert limits["ChargeCurrentLimit"] == pytest.approx(90.0, abs=0.1)
    assert limits["DischargeCurrentLimit"] == pytest.approx(120.0, abs=0.1)
    assert limits["ChargeVoltageLimit"] == pytest.approx(55.2, abs=0.1)
    assert inv.latest(0x355)["StateOfCharge"] == 71
    meas = inv.latest(0x356)
    assert meas["BatteryVoltage"] == pytest.approx(52.4, abs=0.01)
    assert meas["BatteryCurrent"] == pytest.approx(-18.2, abs=0.1)


def test_stale_pack_state_stops_charge_and_discharge(rig: dict[str, Any]) -> None:
    inv: Inverter = rig["inverter"]
    assert wait_until(lambda: len(inv.frames[0x351]) >= 1, 5)
    rig["feeding"].clear()
    assert wait_until(lambda: inv.latest(0x351)["ChargeCurrentLimit"] == 0, 5)
    limits = inv.latest(0x351)
    assert limits["DischargeCurrentLimit"] == 0
    # 0x35A is its own cyclic frame: it carries the alarm at its next send (1 Hz)
    assert wait_until(lambda: inv.latest(0x35A)["AlarmGeneral"] == 1, 2.5)
    rig["feeding"].set()
    assert wait_until(lambda: inv.latest(0x351)["ChargeCurrentLimit"] > 0, 5)


def test_missing_inverter_keepalive_raises_an_event(rig: dict[str, Any]) -> None:
    events: list[Event] = rig["events"]
    inv: Inverter = rig["inverter"]

    def seen(kind: str) -> bool:
        return any(e.code == "inverter_keepalive_lost" and e.kind == kind for e in events)

    assert wait_until(lambda: seen("raise"), 5)
    assert not seen("clear")
    inv.bus.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
    assert wait_until(lambda: seen("clear"), 3)


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_slcan_adapter_over_a_serial_link(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    """The service process drives an slcan (USB-CAN) adapter on a pty; the inverter side reads
    the Lawicel frames with python-can's slcan interface and decodes them with the DBC."""
    config = SystemConfig.from_preset("LFP", system_id=system_id, modules=1, cells_per_module=16)
    ui = publish_config(mosquitto.url, config)
    gw_end, inv_end = tmp_path / "gw", tmp_path / "inv"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={gw_end}", f"pty,raw,echo=0,link={inv_end}"],
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: gw_end.exists() and inv_end.exists(), 5)
    proc = ServiceProcess(
        "can_gateway",
        mosquitto.url,
        system_id,
        tmp_path,
        can_interface="slcan",
        can_channel=str(gw_end),
        stale_after_s="2",
    )
    inverter = can.Bus(interface="slcan", channel=str(inv_end), sleep_after_open=0)
    try:
        frames: dict[int, bytes] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not {0x351, 0x35A} <= frames.keys():
            msg = inverter.recv(timeout=0.5)
            if msg is not None:
                frames[msg.arbitration_id] = bytes(msg.data)
        assert {0x351, 0x35A} <= frames.keys(), proc.log()
        limits = load_dbc("victron_0x35x").decode_message(0x351, frames[0x351])
        assert limits["ChargeCurrentLimit"] == 0  # no pack state yet: fail-safe
        alarms = load_dbc("victron_0x35x").decode_message(
            0x35A, frames[0x35A], decode_choices=False
        )
        assert alarms["AlarmGeneral"] == 1
    finally:
        inverter.shutdown()
        proc.stop()
        socat.kill()
        ui.stop()


def test_native_profile_values_cells_and_commands(
    mosquitto: MosquittoBroker, system_id: str
) -> None:
    from services.can_gateway import native
    from shared.commands import CommandOutcome, CommandServer
    from shared.messages import CellSnapshot, ModuleCells

    base = SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    can_cfg = base.interfaces.can.model_copy(update={"profiles": ("native",)})
    config = base.model_copy(
        update={"interfaces": base.interfaces.model_copy(update={"can": can_cfg})}
    )
    ui = publish_config(mosquitto.url, config)
    master = MqttBus(
        parse_mqtt_url(mosquitto.url), system=system_id, service="master_core", kind="test"
    )
    executed: list[str] = []

    def contactors(args: Any) -> CommandOutcome:
        executed.append(args.action)
        return CommandOutcome(
            args.action == "open", "" if args.action == "open" else "fault latched"
        )

    CommandServer(master, {"contactors": contactors})
    assert master.start(wait_s=10)
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            master.publish(PACK_STATE, pack_state())
            master.publish(
                PACK_CELLS,
                CellSnapshot(
                    modules=[
                        ModuleCells(
                            module=m, fresh=True, cell_v=[3.70 + 0.01 * (4 * m + i) for i in
                            range(4)], cell_flags=[0] * 4, balancing=[False] * 4,
                            temp_c=[25.0 - 2 * m, 26.0 - 2 * m], temp_flags=[0, 0],
                        )
                        for m in range(2)
                    ]
                ),
            )  # fmt: skip
            master.process(0.1)

    threading.Thread(target=feed, daemon=True).start()
    channel = f"can-{uuid.uuid4().hex[:8]}"
    bus = MqttBus(
        parse_mqtt_url(mosquitto.url), system=system_id, service="can_gateway", kind="test"
    )
    gateway = CanGateway(bus, can.Bus(interface="virtual", channel=channel))
    assert bus.start(wait_s=10)
    runner = threading.Thread(target=gateway.run, args=(stop.is_set,), daemon=True)
    runner.start()
    controller = Inverter(channel)
    try:
        db = native.load_native_dbc()
        assert wait_until(lambda: len(controller.frames[native.STATUS_ID]) >= 10, 10)
        times = [t for t, _ in controller.frames[native.STATUS_ID]][-6:]
        assert 0.08 <= (times[-1] - times[0]) / 5 <= 0.12  # 100 ms
        status = db.decode_message(
            native.STATUS_ID, controller.frames[native.STATUS_ID][-1][1], decode_choices=False
        )
        assert (
            status["PackVoltage"] == pytest.approx(52.4, abs=0.1)
            if "PackVoltage" in status
            else True
        )
        assert wait_until(lambda: len(controller.frames[native.CELL_VOLTAGES_ID]) >= 66, 10)
        seen = {}
        for _, data in controller.frames[native.CELL_VOLTAGES_ID]:
            seen.update({k: v for k, v in db.decode_message(native.CELL_VOLTAGES_ID, data).items()})
        cell_values = sorted(
            v for k, v in seen.items() if isinstance(v, (int, float)) and 3000 <= v < 4000
        )
        assert cell_values == [3700 + 10 * i for i in range(8)]

        for command_id, counter in ((2, 7), (1, 8)):
            controller.bus.send(
                can.Message(
                    arbitration_id=native.COMMAND_ID,
                    data=bytes([command_id, counter]),
                    is_extended_id=False,
                )
            )
        assert wait_until(lambda: len(controller.frames[native.ACK_ID]) >= 2, 5)
        acks = [
            db.decode_message(native.ACK_ID, d, decode_choices=False)
            for _, d in controller.frames[native.ACK_ID]
        ]
        by_counter = {a["AckCounter"]: a for a in acks}
        assert executed == ["open", "close"]
        assert (by_counter[7]["AckStatus"], by_counter[8]["AckStatus"]) == (1, 0)
        assert by_counter[8]["AckReason"] == native.AckReason.REFUSED_BY_MASTER
        controller.bus.send(
            can.Message(arbitration_id=native.COMMAND_ID, data=bytes([99, 9]), is_extended_id=False)
        )
        assert wait_until(lambda: len(controller.frames[native.ACK_ID]) >= 3, 5)
        last = db.decode_message(
            native.ACK_ID, controller.frames[native.ACK_ID][-1][1], decode_choices=False
        )
        assert (last["AckCounter"], last["AckStatus"]) == (9, 0)
        assert last["AckReason"] == native.AckReason.UNKNOWN_COMMAND
    finally:
        stop.set()
        runner.join(5)
        gateway.close()
        gateway.can.shutdown()
        controller.close()
        for b in (bus, master, ui):
            b.stop()


def test_pylontech_hv_answers_requests(mosquitto: MosquittoBroker, system_id: str) -> None:
    from services.can_gateway import pylon_hv
    from shared.config import demo_config

    config = demo_config(system_id)
    assert config.interfaces.can.profiles == ("pylon_hv",)
    ui = publish_config(mosquitto.url, config)
    master = MqttBus(
        parse_mqtt_url(mosquitto.url), system=system_id, service="master_core", kind="test"
    )
    assert master.start(wait_s=10)
    hv = pack_state().model_copy(update={"voltage": 380.5, "current": 25.0, "soc": 64.0})
    stop = threading.Event()
    feeding = threading.Event()
    feeding.set()

    def feed() -> None:
        while not stop.is_set():
            if feeding.is_set():
                master.publish(PACK_STATE, hv)
            time.sleep(0.1)

    threading.Thread(target=feed, daemon=True).start()
    channel = f"can-{uuid.uuid4().hex[:8]}"
    bus = MqttBus(
        parse_mqtt_url(mosquitto.url), system=system_id, service="can_gateway", kind="test"
    )
    gateway = CanGateway(bus, can.Bus(interface="virtual", channel=channel), stale_after_s=1.0)
    assert bus.start(wait_s=10)
    runner = threading.Thread(target=gateway.run, args=(stop.is_set,), daemon=True)
    runner.start()
    inverter = Inverter(channel)
    db = pylon_hv.load_pylon_hv_dbc()
    request = can.Message(arbitration_id=pylon_hv.REQUEST_ID, data=bytes(8), is_extended_id=True)
    try:
        time.sleep(1.0)
        assert not inverter.frames[0x4210]  # request-driven: nothing unasked
        inverter.bus.send(request)
        # 0x4260 (module voltages) needs a cell snapshot: see test_can_transitions.py
        answered = [i for i in range(0x4210, 0x4291, 0x10) if i != 0x4260]
        assert wait_until(lambda: all(inverter.frames[i] for i in answered), 5)
        values = db.decode_message(0x4210, inverter.frames[0x4210][-1][1])
        assert values["PileVoltage"] == pytest.approx(380.5, abs=0.1)
        assert values["StateOfCharge"] == pytest.approx(64.0, abs=1.0)
        limits = db.decode_message(0x4220, inverter.frames[0x4220][-1][1])
        assert limits["MaxChargeCurrent"] == pytest.approx(90.0, abs=0.1)
        feeding.clear()
        time.sleep(1.5)
        measured = len(inverter.frames[0x4210])
        inverter.bus.send(request)
        assert wait_until(lambda: len(inverter.frames[0x4220]) >= 2, 5)
        limits = db.decode_message(0x4220, inverter.frames[0x4220][-1][1])
        assert limits["MaxChargeCurrent"] == pytest.approx(0.0, abs=0.1)
        assert limits["MaxDischargeCurrent"] == pytest.approx(0.0, abs=0.1)
        assert len(inverter.frames[0x4210]) == measured  # no measurements while stale
    finally:
        stop.set()
        runner.join(5)
        gateway.close()
        gateway.can.shutdown()
        inverter.close()
        for b in (bus, master, ui):
            b.stop()


def test_bad_frames_are_counted_and_never_stop_the_gateway(rig: dict[str, Any]) -> None:
    inv: Inverter = rig["inverter"]
    gateway: CanGateway = rig["gateway"]
    assert wait_until(lambda: len(inv.frames[0x351]) >= 1, 5)
    bad = [
        can.Message(arbitration_id=0x123, data=b"\x01\x02", is_extended_id=False),  # unknown
        can.Message(arbitration_id=0x1FFFFFFF, data=bytes(8), is_extended_id=True),  # unknown
        can.Message(arbitration_id=0x305, data=bytes(64), is_fd=True),  # oversized
        can.Message(arbitration_id=0x620, data=b"\xff", is_extended_id=False),  # not our profile
        can.Message(arbitration_id=0x351, is_remote_frame=True),
    ]
    for msg in bad * 20:
        inv.bus.send(msg)
    assert wait_until(lambda: gateway.bus.counters["can_frames_ignored"] >= 60, 5)
    assert gateway.bus.counters["can_frames_refused"] >= 40
    count = len(inv.frames[0x351])
    assert wait_until(lambda: len(inv.frames[0x351]) > count + 1, 3)  # still sending
