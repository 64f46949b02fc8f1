"""Host settings against a configuration: which fields run with another value, and the ack
that carries them."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.config_ack import acknowledge_config
from shared.host_settings import HostSetting, in_use, shown, value_at
from shared.messages import ConfigAck, FieldInUse
from shared.messages.config import IN_USE_MAX
from shared.topics import CONFIG_ACK

CONFIG = SystemConfig.from_preset("LFP", system_id="hs", modules=1, cells_per_module=4)
TABLE = (
    HostSetting("tcp_port", "interfaces.modbus.tcp_port"),
    HostSetting("rtu_port", "interfaces.modbus.rtu_port", device=True),
    HostSetting("tcp_enabled", "interfaces.modbus.tcp_enabled"),
    HostSetting("can_bitrate", "interfaces.can.bitrate"),
)


def test_a_setting_that_differs_is_in_use_with_its_variable_and_host() -> None:
    values = {"tcp_port": 1502, "rtu_port": "/dev/ttyS3", "tcp_enabled": None}
    got = in_use(TABLE, values, CONFIG, "ipc-2")
    assert got == {
        "interfaces.modbus.rtu_port": FieldInUse(
            value="/dev/ttyS3", source="BMS_RTU_PORT", host="ipc-2", device=True
        ),
        "interfaces.modbus.tcp_port": FieldInUse(
            value="1502", source="BMS_TCP_PORT", host="ipc-2", device=False
        ),
    }


def test_a_setting_equal_to_the_configuration_is_not_in_use() -> None:
    values = {"tcp_port": CONFIG.interfaces.modbus.tcp_port, "can_bitrate": 250_000}
    assert list(in_use(TABLE, values, CONFIG, "h")) == ["interfaces.can.bitrate"]


def test_switches_read_true_or_false() -> None:
    assert shown(True) == "true" and shown(False) == "false" and shown(2.5) == "2.5"
    flipped = not CONFIG.interfaces.modbus.tcp_enabled
    got = in_use(TABLE, {"tcp_enabled": flipped}, CONFIG, "h")
    assert got["interfaces.modbus.tcp_enabled"].value == shown(flipped)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "tcp_port": st.one_of(st.none(), st.integers(1, 65535)),
            "rtu_port": st.one_of(st.none(), st.sampled_from(["/dev/ttyUSB0", "/dev/ttyS9"])),
            "tcp_enabled": st.one_of(st.none(), st.booleans()),
            "can_bitrate": st.one_of(st.none(), st.sampled_from([125_000, 250_000, 500_000])),
        },
    )
)
def test_exactly_the_set_and_different_settings_are_in_use(values: dict[str, Any]) -> None:
    got = in_use(TABLE, values, CONFIG, "h")
    expected = {
        row.path
        for row in TABLE
        if values.get(row.setting) is not None and values[row.setting] != value_at(CONFIG, row.path)
    }
    assert set(got) == expected
    for row in TABLE:
        if row.path in got:
            assert got[row.path].value == shown(values[row.setting])
            assert got[row.path].device is row.device


def _acks(**kw: Any) -> list[ConfigAck]:
    broker = InMemoryBroker()
    gateway = InMemoryBus(broker, system="hs", service="gw", kind="test")
    ui = InMemoryBus(broker, system="hs", service="config_ui", kind="test")
    seen: list[ConfigAck] = []
    ui.subscribe(CONFIG_ACK, lambda d: seen.append(d.message))
    gateway.start()
    ui.start()
    acknowledge_config(gateway, 3, **kw)
    ui.process()
    return seen


def test_the_ack_carries_the_fields_in_use_even_with_a_refusal() -> None:
    used = {"interfaces.modbus.rtu_port": FieldInUse(value="/dev/x", source="BMS_RTU_PORT")}
    (accepted,) = _acks(in_use=used)
    assert accepted.accepted and accepted.in_use == used
    (refused,) = _acks(errors=["cannot open /dev/x"], in_use=used)
    assert not refused.accepted and refused.in_use == used


def test_the_ack_keeps_at_most_its_bound_of_fields_by_path() -> None:
    entry = FieldInUse(value="1", source="BMS_X")
    used = {f"f.{i:03d}": entry for i in range(IN_USE_MAX + 5)}
    (ack,) = _acks(in_use=used)
    assert list(ack.in_use) == sorted(used)[:IN_USE_MAX]


def test_an_ack_without_fields_in_use_stays_valid() -> None:
    old = {"service": "gw", "config_version": 1, "accepted": True, "errors": []}
    assert ConfigAck.model_validate(old).in_use == {}
