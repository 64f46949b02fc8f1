"""The gateway loop with its collaborators real: an in-memory bus (real msgpack contract) and
python-can's virtual bus, read by an independent client that decodes with the DBC."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import can
import pytest

from services.can_gateway import pylon_hv
from services.can_gateway.service import CanGateway
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig, demo_config
from shared.messages import PackState
from shared.topics import PACK_STATE
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
    import time

    time.sleep(0.2)
    hv_rig.cycle()
    frames = {m.arbitration_id: bytes(m.data) for m in hv_rig.received()}
    assert int.from_bytes(frames[0x4210][0:2], "big") == 3805


def test_relay_frame_without_0xaa_is_no_command(hv_rig: Rig) -> None:
    """Only 0xAA in 0x8210 asks for a relay; anything else must not open the contactors."""
    hv_rig.master.publish(PACK_STATE, hv_pack())
    hv_rig.cycle()
    hv_rig.send(pylon_hv.RELAY_ID, bytes(8))
    import time

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
