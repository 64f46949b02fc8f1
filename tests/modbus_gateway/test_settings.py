"""One source of configuration: interfaces.modbus, with BMS_* only naming the device or
overriding, each override said."""

from __future__ import annotations

import pytest

from services.modbus_gateway.service import endpoints
from services.modbus_gateway.settings import DEVICE_NAMES, HOST_SETTINGS, ModbusGatewaySettings
from shared.config.interfaces import ModbusConfig

CONFIGURED = ModbusConfig(
    tcp_port=1502, rtu_enabled=True, rtu_port="/dev/ttyUSB0", rtu_baudrate=9600, rtu_parity="N"
)


def settings(**values: object) -> ModbusGatewaySettings:
    return ModbusGatewaySettings.model_validate(values)


def test_without_settings_the_configuration_is_in_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TCP_PORT", "RTU_PORT", "RTU_PARITY", "RTU_BAUDRATE", "TCP_HOST", "UNIT_ID"):
        monkeypatch.delenv(f"BMS_{name}", raising=False)
    effective, notes = settings().resolve(CONFIGURED)
    assert effective == CONFIGURED
    assert notes == []


def test_each_setting_that_changes_a_field_is_said() -> None:
    effective, notes = settings(tcp_port=5020, rtu_port="/dev/ttyS1", rtu_parity="N").resolve(
        CONFIGURED
    )
    assert effective.tcp_port == 5020 and effective.rtu_port == "/dev/ttyS1"
    assert effective.rtu_baudrate == 9600  # from the configuration
    assert notes == [
        "BMS_RTU_PORT=/dev/ttyS1 names the device: interfaces.modbus.rtu_port is '/dev/ttyUSB0' "
        "in the system configuration",
        "BMS_TCP_PORT=5020 overrides: interfaces.modbus.tcp_port is 1502 in the system "
        "configuration",
    ]


def test_an_invalid_override_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="baud rate 12345 is not supported"):
        settings(rtu_baudrate=12345)
    with pytest.raises(ValueError, match="unit_id"):
        settings(unit_id=0)


def test_endpoints_restart_only_on_their_own_fields() -> None:
    before = endpoints(CONFIGURED)
    after = endpoints(CONFIGURED.model_copy(update={"rtu_parity": "E"}))
    assert before["tcp"] == after["tcp"]
    assert before["rtu"] != after["rtu"]
    assert "parity E" in after["rtu"].describe and "/dev/ttyUSB0" in after["rtu"].describe


def test_a_configured_change_that_a_setting_pins_is_said_once_per_field() -> None:
    host = settings(tcp_port=5020, rtu_port="/dev/ttyS1")
    changed = CONFIGURED.model_copy(
        update={"tcp_port": 1503, "rtu_port": "/dev/ttyUSB1", "unit_id": 9}
    )
    assert host.pinned(CONFIGURED, changed) == [
        "the configuration changes interfaces.modbus.rtu_port from '/dev/ttyUSB0' to "
        "'/dev/ttyUSB1', but BMS_RTU_PORT=/dev/ttyS1 on this host keeps '/dev/ttyS1'",
        "the configuration changes interfaces.modbus.tcp_port from 1502 to 1503, but "
        "BMS_TCP_PORT=5020 on this host keeps 5020",
    ]
    assert host.pinned(CONFIGURED, CONFIGURED) == []
    assert settings().pinned(CONFIGURED, changed) == []  # unit_id is not pinned


def test_the_table_holds_every_setting_that_stands_in_for_a_modbus_field() -> None:
    stand_ins = ModbusConfig.model_fields.keys() & ModbusGatewaySettings.model_fields.keys()
    assert {row.setting for row in HOST_SETTINGS} == stand_ins
    for row in HOST_SETTINGS:
        assert row.path == f"interfaces.modbus.{row.setting}"
        assert row.device is (row.setting in DEVICE_NAMES)
    assert {r.setting for r in HOST_SETTINGS if r.device} == {"tcp_host", "rtu_port"}
