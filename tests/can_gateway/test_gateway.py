"""The gateway loop with its collaborators real: an in-memory bus (real msgpack contract) and
python-can's virtual bus, read by an independent client that decodes with the DBC."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import can
import pytest

from services.can_gateway import pylon_hv
from services.can_gateway.channel import ChannelOpener
from services.can_gateway.codec import load_dbc
from services.can_gateway.service import CanGateway
from services.can_gateway.settings import HOST_SETTINGS, CanGatewaySettings
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.config import CanConfig, SystemConfig, demo_config
from shared.messages import ConfigAck, ConfigMessage, FieldInUse, PackState
from shared.topics import CONFIG, CONFIG_ACK, PACK_STATE, SERVICE_STATUS
from tests.factories import pack_state


class Rig:
    def __init__(self, config: SystemConfig, **gateway_kw: Any) -> None:
        self.broker = InMemoryBroker()
        self.master = InMemoryBus(self.broker, system=config.system_id, service="master_core",
                                  kind="test")  # fmt: skip
        self.commands: list[tuple[str, bytes]] = []
        self.master.subscribe_raw("bms/v1/+/cmd/#", lambda t, p, *_: self.commands.append((t, p)))
        self.master.start()
        self.bus = InMemoryBus(self.broker, system=config.system_id, service="can_gateway",
                               kind="test")  # fmt: skip
        self.bus.start()
        channel = f"t-{uuid.uuid4().hex[:8]}"
        self.gateway = CanGateway(self.bus, can.Bus(interface="virtual", channel=channel),
                                  **gateway_kw)  # fmt: skip
        self.gateway.apply_config(config)
        self.inverter = can.Bus(interface="virtual", channel=channel)

    def cycle(self, n: int = 1) -> None:
        for _ in range(n):
            self.bus.process(0.0)
            self.gateway.step()
            self.master.process(0.0)

    def send(self, frame_id: int, data: bytes) -> None:
        self.inverter.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=True))

    def received(self, timeout_s: float = 0.3) -> list[can.Message]:
        out = []
        while (msg := self.inverter.recv(timeout=timeout_s)) is not None:
            out.append(msg)
        return out

    def close(self) -> None:
        self.gateway.close()
        self.gateway.can.shutdown()
        self.inverter.shutdown()


def with_can(config: SystemConfig, **can_fields: Any) -> SystemConfig:
    """`config` with `interfaces.can` fields changed, validated again."""
    data = config.model_dump(mode="json")
    data["interfaces"]["can"].update(can_fields)
    return SystemConfig.model_validate(data)


@pytest.fixture
def hv_rig() -> Iterator[Rig]:
    rig = Rig(with_can(demo_config("hv"), pylon_hv_byte_order="big"))
    yield rig
    rig.close()


def hv_pack() -> PackState:
    return pack_state(voltage=380.5, current=-12.0, equivalent_cycles=3.0)


def test_pylon_hv_byte_order_reaches_the_frames(hv_rig: Rig) -> None:
    """Item 8: the byte order was read from BMS_PYLON_HV_BYTE_ORDER but never used."""
    hv_rig.master.publish(PACK_STATE, hv_pack())
    hv_rig.cycle()
    hv_rig.send(pylon_hv.REQUEST_ID, bytes(8))
    time.sleep(0.2)
    hv_rig.cycle()
    frames = {m.arbitration_id: bytes(m.data) for m in hv_rig.received()}
    assert int.from_bytes(frames[0x4210][0:2], "big") == 3805


def test_relay_frame_without_0xaa_is_no_command(hv_rig: Rig) -> None:
    """Only 0xAA in 0x8210 asks for a relay; anything else must not open the contactors."""
    hv_rig.master.publish(PACK_STATE, hv_pack())
    hv_rig.cycle()
    hv_rig.send(pylon_hv.RELAY_ID, bytes(8))
    time.sleep(0.2)
    hv_rig.cycle(3)
    assert hv_rig.commands == []
    assert pylon_hv.decode_command(pylon_hv.RELAY_ID, bytes(8)) is None


def test_no_false_not_served_warning(caplog: pytest.LogCaptureFixture, hv_rig: Rig) -> None:
    with caplog.at_level(logging.WARNING):
        hv_rig.gateway.apply_config(demo_config("hv"))
    assert "not served" not in caplog.text
    assert "not registered" not in caplog.text
    assert [p.name for p in hv_rig.gateway.profiles] == ["pylon_hv"]


def test_a_bms_setting_overrides_the_configuration_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="can_gateway"):
        rig = Rig(demo_config("hv"), protocol_overrides={"pylon_hv_byte_order": "big"})
    try:
        assert (
            "BMS_PYLON_HV_BYTE_ORDER=big overrides interfaces.can.pylon_hv_byte_order=little"
            in (caplog.text)
        )
        rig.master.publish(PACK_STATE, hv_pack())
        rig.cycle()
        rig.send(pylon_hv.REQUEST_ID, bytes(8))
        time.sleep(0.2)
        rig.cycle()
        frames = {m.arbitration_id: bytes(m.data) for m in rig.received()}
        assert int.from_bytes(frames[0x4210][0:2], "big") == 3805
    finally:
        rig.close()


LV = SystemConfig.from_preset("LFP", system_id="lv", modules=1, cells_per_module=16)


def test_a_frame_beyond_its_range_is_withheld_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(LV)
    try:
        rig.master.publish(PACK_STATE, pack_state(voltage=600.0))  # a false reading, say
        with caplog.at_level(logging.ERROR, logger="can_gateway"):
            rig.cycle(5)
        assert rig.bus.counters["can_frames_withheld"] == 5
        assert len(caplog.records) == 1
        assert "BatteryVoltage = 600" in caplog.text
        ids = {m.arbitration_id for m in rig.received(0.5)}
        assert 0x351 in ids and 0x356 not in ids
    finally:
        rig.close()


def test_a_channel_change_reopens_the_bus_without_a_restart() -> None:
    """Item 7: a CAN channel or bit-rate change was acknowledged but needed a restart."""
    broker = InMemoryBroker()
    ui = InMemoryBus(broker, system="lv", service="config_ui", kind="test")
    acks: list[ConfigAck] = []
    ui.subscribe(CONFIG_ACK, lambda d: acks.append(d.message), service="can_gateway")
    ui.start()
    bus = InMemoryBus(broker, system="lv", service="can_gateway", kind="test")
    bus.start()
    first, second = (f"t-{uuid.uuid4().hex[:8]}" for _ in range(2))
    config = with_can(LV, interface="virtual", channel=first)
    opener = ChannelOpener()
    params = opener.params(config.interfaces.can)
    gateway = CanGateway(bus, opener.open(params), opener=opener)
    gateway.bus_params = params
    gateway.apply_config(config)
    old, new = (can.Bus(interface="virtual", channel=c) for c in (first, second))
    try:
        gateway.step()
        assert old.recv(timeout=1.0) is not None
        moved = with_can(config, channel=second, bitrate=250_000).model_copy(
            update={"config_version": 2}
        )
        ui.publish(CONFIG, ConfigMessage(config=moved))
        bus.process(0.0)
        gateway.step()
        ui.process(0.0)
        assert acks[-1].config_version == 2 and acks[-1].accepted, acks
        assert gateway.bus_params is not None and gateway.bus_params.channel == second
        assert gateway.bus_params.bitrate == 250_000
        msg = new.recv(timeout=1.0)
        assert msg is not None and msg.arbitration_id in {
            m.frame_id for m in load_dbc("victron_0x35x").messages
        }
        while old.recv(timeout=0.3) is not None:  # drain what was queued before the move
            pass
        gateway.step()
        assert old.recv(timeout=0.5) is None  # the old channel is closed
        broken = with_can(moved, interface="no_such_interface").model_copy(
            update={"config_version": 3}
        )
        ui.publish(CONFIG, ConfigMessage(config=broken))
        bus.process(0.0)
        ui.process(0.0)
        assert not acks[-1].accepted
        assert "cannot open" in acks[-1].errors[0] and second in acks[-1].errors[0]
        assert gateway.config == moved  # refused: the previous configuration stays in force
        assert new.recv(timeout=1.0) is not None  # still sending on the working channel
    finally:
        gateway.close()
        gateway.can.shutdown()
        for b in (old, new):
            b.shutdown()


def test_the_same_configuration_again_keeps_the_cyclic_frames_running() -> None:
    rig = Rig(LV)
    try:
        rig.master.publish(PACK_STATE, pack_state())
        rig.cycle()
        tasks = dict(rig.gateway.tasks)
        assert 0x351 in tasks
        rig.gateway.apply_config(LV.model_copy())  # a publisher's reconnect re-sends it
        rig.cycle()
        assert rig.gateway.tasks == tasks  # same tasks: no gap, no restart of the timing
        renamed = LV.model_copy(update={"name": "bank two", "config_version": 2})
        rig.gateway.apply_config(renamed)
        rig.cycle()
        assert rig.gateway.tasks.keys() == tasks.keys()
        task: Any = rig.gateway.tasks[0x370]  # python-can keeps the data it sends
        names = load_dbc("victron_0x35x").decode_message(0x370, task.messages[0].data)
        assert names["Char0"] == ord("b")  # the new name goes out in the running task
    finally:
        rig.close()


def test_the_status_with_its_counters_is_republished_while_running() -> None:
    """Found from outside: the gateway never republished its status, so its counters showed
    only after a reconnect."""
    clock = [0.0]
    rig = Rig(demo_config("st"), monotonic=lambda: clock[0])
    seen: list[dict[str, int]] = []
    rig.master.subscribe(SERVICE_STATUS, lambda d: seen.append(dict(d.message.counters)),
                         service="can_gateway")  # fmt: skip
    rig.master.process(0.0)
    seen.clear()
    rig.gateway.bus.counters["can_frames_refused"] += 7
    ticks = iter(range(100))

    def should_stop() -> bool:
        clock[0] += 0.5  # 50 iterations: 25 s of gateway time
        rig.master.process(0.0)
        return next(ticks) >= 50

    rig.gateway.run(should_stop, period_s=0.0)
    rig.master.process(0.0)
    try:
        assert len(seen) == 2, seen  # at 10 s and 20 s
        assert all(s.get("can_frames_refused") == 7 for s in seen)
    finally:
        rig.close()


def test_the_ack_names_each_field_a_host_setting_runs_differently() -> None:
    settings = CanGatewaySettings.model_validate(
        {"can_channel": "can1", "can_bitrate": 250_000, "pylon_hv_byte_order": "little"}
    )
    config = with_can(LV, channel="can0", bitrate=500_000, pylon_hv_byte_order="little")
    broker = InMemoryBroker()
    ui = InMemoryBus(broker, system="lv", service="config_ui", kind="test")
    acks: list[ConfigAck] = []
    ui.subscribe(CONFIG_ACK, lambda d: acks.append(d.message), service="can_gateway")
    ui.start()
    bus = InMemoryBus(broker, system="lv", service="can_gateway", kind="test")
    bus.start()
    channel = f"t-{uuid.uuid4().hex[:8]}"
    gateway = CanGateway(
        bus,
        can.Bus(interface="virtual", channel=channel),
        in_use=lambda c: settings.in_use(c, "ipc-3"),
    )
    try:
        ui.publish(CONFIG, ConfigMessage(config=config))
        bus.process(0.0)
        ui.process(0.0)
        assert acks[-1].accepted
        # the byte order equals the configuration: not in use
        assert acks[-1].in_use == {
            "interfaces.can.bitrate": FieldInUse(
                value="250000", source="BMS_CAN_BITRATE", host="ipc-3", device=False
            ),
            "interfaces.can.channel": FieldInUse(
                value="can1", source="BMS_CAN_CHANNEL", host="ipc-3", device=True
            ),
        }
    finally:
        gateway.close()
        gateway.can.shutdown()


def test_the_table_holds_every_setting_that_stands_in_for_a_can_field() -> None:
    stand_ins = {n for n in CanGatewaySettings.model_fields if n.startswith(("can_", "pylon_hv_"))}
    assert {row.setting for row in HOST_SETTINGS} == stand_ins
    for row in HOST_SETTINGS:
        leaf = row.path.removeprefix("interfaces.can.")
        assert leaf in CanConfig.model_fields, row
        assert row.device is (leaf in {"interface", "channel"})
