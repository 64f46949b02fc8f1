"""The gateway's acknowledgement: restart-required fields from the field table, and a log line
for each configured change that a BMS_* setting of this host pins.

Pure wiring: the servers are replaced by a stand-in that opens no port (the system tests in
tests/system/test_modbus_gateway.py run the real servers)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from services.modbus_gateway.service import ModbusGateway
from services.modbus_gateway.settings import ModbusGatewaySettings
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.config import fields as config_fields
from shared.config.fields import MODBUS, FieldUse, Reader
from shared.messages import ConfigAck, ConfigMessage, FieldInUse
from shared.topics import CONFIG, CONFIG_ACK

SYSTEM = "acktest"


class _Server:
    async def shutdown(self) -> None:
        return None


def config(version: int, **modbus: Any) -> SystemConfig:
    data = SystemConfig.from_preset(
        "NMC", system_id=SYSTEM, modules=2, cells_per_module=4, config_version=version
    ).model_dump(mode="json")
    data["interfaces"]["modbus"] |= {"tcp_enabled": True, "tcp_port": 1502, **modbus}
    return SystemConfig.model_validate(data)


def run(
    settings: dict[str, Any], configs: list[SystemConfig], host: str = "ipc-2"
) -> list[ConfigAck]:
    """Feed `configs` to a gateway with BMS_* `settings`; the acknowledgements it sends."""
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system=SYSTEM, service="modbus_gateway", kind="modbus_gateway")
    ui = InMemoryBus(broker, system=SYSTEM, service="config_ui", kind="test")
    acks: list[ConfigAck] = []
    ui.subscribe(CONFIG_ACK, lambda d: acks.append(d.message))
    gateway = ModbusGateway(ModbusGatewaySettings.model_validate(settings), bus, host=host)

    async def start(name: str, modbus: object) -> _Server:
        return _Server()

    gateway._start = start  # type: ignore[method-assign,assignment]
    bus.start()
    ui.start()

    async def drive() -> None:
        serve = asyncio.create_task(gateway.serve())
        for c in configs:
            ui.publish(CONFIG, ConfigMessage(config=c))
            bus.process()
            for _ in range(20):
                await asyncio.sleep(0)
        serve.cancel()

    asyncio.run(drive())
    ui.process()
    return acks


def test_no_modbus_field_needs_a_restart_today() -> None:
    acks = run({}, [config(1), config(2, tcp_port=1503, unit_id=4, rtu_parity="O")])
    assert [(a.config_version, a.accepted, a.restart_required) for a in acks] == [
        (1, True, []),
        (2, True, []),
    ]


def test_a_field_the_table_marks_restart_required_is_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    restart = FieldUse(
        "interfaces.modbus.tcp_port",
        (Reader(MODBUS, "services/modbus_gateway/service.py", "restart"),),
    )
    monkeypatch.setattr(config_fields, "FIELD_USES", (restart, *config_fields.FIELD_USES))
    acks = run({}, [config(1), config(2, tcp_port=1503), config(3, tcp_port=1503, unit_id=4)])
    # against the configuration the gateway started with: still pending at version 3
    assert [a.restart_required for a in acks] == [
        [],
        ["interfaces.modbus.tcp_port"],
        ["interfaces.modbus.tcp_port"],
    ]
    assert all(a.accepted for a in acks)


def test_a_change_pinned_by_a_host_setting_is_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modbus_gateway")
    acks = run(
        {"tcp_port": 5020},
        [config(1), config(2, tcp_port=1503), config(3, tcp_port=1503, unit_id=4)],
    )
    assert all(a.accepted and a.restart_required == [] for a in acks)
    pinned = [r.getMessage() for r in caplog.records if "keeps" in r.getMessage()]
    assert pinned == [
        "configuration 2: the configuration changes interfaces.modbus.tcp_port from 1502 to "
        "1503, but BMS_TCP_PORT=5020 on this host keeps 5020"
    ]


def test_the_ack_names_each_field_a_host_setting_runs_differently() -> None:
    acks = run(
        {"tcp_port": 5020, "unit_id": 7, "rtu_port": "/dev/ttyS1", "tcp_host": "127.0.0.1"},
        [config(1), config(2, tcp_port=5020, tcp_host="127.0.0.1")],
    )
    assert acks[0].in_use == {
        "interfaces.modbus.rtu_port": FieldInUse(
            value="/dev/ttyS1", source="BMS_RTU_PORT", host="ipc-2", device=True
        ),
        "interfaces.modbus.tcp_host": FieldInUse(
            value="127.0.0.1", source="BMS_TCP_HOST", host="ipc-2", device=True
        ),
        "interfaces.modbus.tcp_port": FieldInUse(
            value="5020", source="BMS_TCP_PORT", host="ipc-2", device=False
        ),
        "interfaces.modbus.unit_id": FieldInUse(
            value="7", source="BMS_UNIT_ID", host="ipc-2", device=False
        ),
    }
    # the configuration now says what the host sets: nothing differs there any more
    assert set(acks[1].in_use) == {"interfaces.modbus.rtu_port", "interfaces.modbus.unit_id"}
    assert all(a.accepted for a in acks)


def test_without_host_settings_the_ack_names_no_field() -> None:
    acks = run({}, [config(1)])
    assert acks[0].in_use == {}
