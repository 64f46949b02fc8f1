"""The protection code table: stable bit layout, one bit packing, and the profiles it replaces."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.can_gateway.codec import load_dbc
from services.can_gateway.native import pack_frames
from services.can_gateway.profiles import frames_for
from services.can_gateway.pylon_hv import responses_for
from shared.config.protection import ProtectionConfig, ThreeLevel
from shared.config.system import SystemConfig
from shared.messages.pack import Limits, PackState
from shared.protection_codes import (
    BY_BIT,
    CODE_TABLE,
    OTHER_CODE_BIT,
    PYLON_0X359_OTHER_FAULT,
    PYLON_HV_OTHER_FAULT,
    SPECS,
    THREE_LEVELS,
    VICTRON_0X35A_GENERAL,
    Level,
    ProtectionCode,
    bits_codes,
    code_bits,
    evt1_bits,
    spec_of,
)

# The published layout: SCADA clients and controllers decode these bits. Append, never reorder.
PUBLISHED_BITS = (
    "cell_overvoltage", "cell_undervoltage", "pack_overvoltage", "pack_undervoltage",
    "cell_overtemp_charge", "cell_overtemp_discharge", "cell_undertemp_charge",
    "cell_undertemp_discharge", "charge_overcurrent", "discharge_overcurrent", "cell_imbalance",
    "deep_discharge", "open_wire", "measurement_out_of_range", "sensor_fault",
    "pack_voltage_plausibility", "communication_loss", "current_sensor_failure",
    "contactor_feedback_mismatch", "insulation_low", "current_on_open_string",
    "current_offset_high", "contactor_welded", "precharge_failure", "insulation_monitor_failure",
    "contactor_io_failure", "temperature_spread", "stuck_cell_voltage_channel",
    "stuck_temperature_channel",
)  # fmt: skip

known = st.sampled_from(list(ProtectionCode))
unknown = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(
    lambda c: spec_of(c) is None
)


def test_bit_positions_are_the_published_layout() -> None:
    assert [BY_BIT[i].value for i in range(len(BY_BIT))] == list(PUBLISHED_BITS)


def test_three_level_codes_are_the_three_level_thresholds() -> None:
    fields = {n for n, f in ProtectionConfig.model_fields.items() if f.annotation is ThreeLevel}
    assert {s.code.value for s in CODE_TABLE if s.levels == THREE_LEVELS} == fields


def test_only_damage_needs_a_service_reset() -> None:
    # a damaged cell, and a string that lost one of its isolating breaks
    service = {s.code for s in CODE_TABLE if s.reset == "service"}
    assert service == {"deep_discharge", "contactor_welded"}


@given(st.sets(known))
def test_known_codes_round_trip(codes: set[ProtectionCode]) -> None:
    decoded = bits_codes(code_bits(codes))
    assert set(decoded.codes) == codes
    assert not decoded.other
    assert list(decoded.codes) == sorted(codes, key=lambda c: SPECS[c].bit)


@given(st.sets(known), st.lists(unknown, min_size=1, max_size=3))
def test_unknown_codes_become_the_other_bit(codes: set[ProtectionCode], extra: list[str]) -> None:
    bits = code_bits([*codes, *extra])
    assert bits >> OTHER_CODE_BIT & 1
    decoded = bits_codes(bits)
    assert set(decoded.codes) == codes and decoded.other
    assert decoded.names()[-1] == "other"


@given(st.integers(0, 2**32 - 1))
def test_bits_round_trip_up_to_unassigned_bits(bits: int) -> None:
    decoded = bits_codes(bits)
    assigned = sum(1 << s.bit for s in CODE_TABLE)
    again = code_bits([c.value for c in decoded.codes]) | (1 << OTHER_CODE_BIT) * decoded.other
    assert again & assigned == bits & assigned
    # a bit this version has no code for (a newer master's code) reads as "other"
    assert decoded.other == bool(bits & ~assigned)


@pytest.mark.parametrize("bits", [-1, 2**32])
def test_bits_outside_32_bits_are_refused(bits: int) -> None:
    with pytest.raises(ValueError, match="32 unsigned bits"):
        bits_codes(bits)


def test_evt1_uses_each_codes_pair_and_the_other_bits() -> None:
    assert evt1_bits(["cell_overvoltage"], []) == 1 << 9
    assert evt1_bits([], ["cell_overvoltage"]) == 1 << 10
    assert evt1_bits(["open_wire"], ["something_new"]) == 1 << 25 | 1 << 26
    assert evt1_bits(["insulation_low"], ["insulation_low"]) == 1 << 22 | 1 << 26


# --- the CAN frames are built from this table ------------------------------------------------
# Each profile's frame, decoded with cantools from its DBC, carries a code at the bit its column
# names, or the profile's general / "other" bit where the column is None.

CAN_CONFIG = SystemConfig.from_preset(
    "LFP", system_id="t", name="table test", modules=2, cells_per_module=8, cell_capacity_ah=100.0
)
HV_STATUS_FIELDS = {"BasicStatus", "ForceChargeRequest", "BalanceChargeRequest", "CyclePeriod"}
NATIVE_FIELDS: Mapping[Level, str] = {
    "fault": "FaultBits", "alarm": "AlarmBits", "warning": "WarningBits"
}  # fmt: skip
PACK_FIELDS: Mapping[Level, str] = {"fault": "faults", "alarm": "alarms", "warning": "warnings"}


def _pack(codes: Mapping[Level, Iterable[str]]) -> PackState:
    """A fresh pack state, every value known, with `codes` at their levels."""
    return PackState(
        soc=55.0, soh=98.0, voltage=52.3, current=-10.0, contactors="closed", mode="working",
        cell_v_min=3.26, cell_v_max=3.31, cell_v_avg=3.28, temp_min_c=15.0, temp_max_c=21.0,
        temp_avg_c=18.0, energy_in_wh=1000.0, energy_out_wh=900.0, equivalent_cycles=3.0,
        limits=Limits(charge_voltage_v=55.2, discharge_voltage_v=48.0, charge_current_a=50.0,
                      discharge_current_a=80.0),
        **{PACK_FIELDS[level]: list(c) for level, c in codes.items()},
    )  # fmt: skip


def _frame(profile: str, frames: list[tuple[int, bytes]], frame_id: int) -> dict[str, Any]:
    message = load_dbc(profile).get_message_by_frame_id(frame_id)
    values = message.decode(dict(frames)[frame_id], decode_choices=False)
    assert isinstance(values, dict)
    return values


def sent_bits(pack: PackState) -> dict[str, set[str] | int]:
    """What each profile's frame says, decoded with cantools: the active 0x35A pairs, the set
    0x359 flags, the set 0x4250 error/alarm/protection bits, the native 32-bit fields."""
    victron = _frame("victron_0x35x", frames_for("victron_0x35x", pack, stale=False,
                     config=CAN_CONFIG), 0x35A)  # fmt: skip
    pylon = _frame("pylon_v12", frames_for("pylon_v12", pack, stale=False, config=CAN_CONFIG),
                   0x359)  # fmt: skip
    hv = _frame("pylon_hv", responses_for(b"\x00", pack, stale=False, config=CAN_CONFIG), 0x4250)
    native = _frame("native", pack_frames(pack, stale=False), 0x604) | _frame(
        "native", pack_frames(pack, stale=False), 0x605
    )
    return {
        "victron": {k for k, v in victron.items() if v == 1},
        "pylon": {k for k, v in pylon.items() if k.startswith(("Protect", "Alarm")) and v == 1},
        "hv": {k for k, v in hv.items() if k not in HV_STATUS_FIELDS and v == 1},
        **{field: int(native[field]) for field in NATIVE_FIELDS.values()},
    }


def table_bits(codes: Mapping[Level, Iterable[str]]) -> dict[str, set[str] | int]:
    """What the table says each profile's frame carries for `codes` at their levels."""
    victron: set[str] = set()
    pylon: set[str] = set()
    hv: set[str] = set()
    native = dict.fromkeys(NATIVE_FIELDS.values(), 0)
    for level, listed in codes.items():
        fault = level == "fault"
        prefix = "Alarm" if fault else "Warn"
        for code in listed:
            spec = spec_of(code)
            native[NATIVE_FIELDS[level]] |= 1 << (OTHER_CODE_BIT if spec is None else spec.bit)
            victron.add(prefix + VICTRON_0X35A_GENERAL)
            if spec is not None and spec.victron_0x35a is not None:
                victron.add(prefix + spec.victron_0x35a)
            pair = None if spec is None else spec.pylon_0x359
            flag = None if spec is None else spec.pylon_hv_flag
            error = None if spec is None else spec.pylon_hv_error
            if fault:
                pylon.add(PYLON_0X359_OTHER_FAULT if pair is None else pair[0])
                hv.add(f"Protect{flag}" if flag else error or PYLON_HV_OTHER_FAULT)
            else:
                pylon.update([] if pair is None else [pair[1]])
                hv.update([] if flag is None else [f"Alarm{flag}"])
    return {"victron": victron, "pylon": pylon, "hv": hv, **native}


@pytest.mark.parametrize(
    ("code", "level"), [(s.code.value, level) for s in CODE_TABLE for level in s.levels]
)
def test_each_code_is_sent_at_its_table_bit_in_every_profile(code: str, level: Level) -> None:
    codes = {level: [code]}
    assert sent_bits(_pack(codes)) == table_bits(codes)


def test_a_code_unknown_to_the_table_sets_the_general_and_other_bits() -> None:
    codes: dict[Level, list[str]] = {"fault": ["newer_code"], "warning": ["newer_code"]}
    assert sent_bits(_pack(codes)) == {
        "victron": {"AlarmGeneral", "WarnGeneral"},
        "pylon": {"ProtectSystemError"},
        "hv": {"OtherError"},
        "FaultBits": 1 << 31,
        "AlarmBits": 0,
        "WarningBits": 1 << 31,
    }


def test_insulation_low_is_native_bit_19_and_the_general_bits_elsewhere() -> None:
    # No CAN inverter profile has an insulation bit: the table maps none, and a fault still
    # stops the inverter through each profile's general / other bit.
    assert sent_bits(_pack({"fault": ["insulation_low"]})) == {
        "victron": {"AlarmGeneral"},
        "pylon": {"ProtectSystemError"},
        "hv": {"OtherError"},
        "FaultBits": 1 << 19,
        "AlarmBits": 0,
        "WarningBits": 0,
    }


some_codes = st.lists(st.one_of(known.map(str), unknown), max_size=4)


@settings(max_examples=60, deadline=None)
@given(some_codes, some_codes, some_codes)
def test_any_code_sets_are_sent_as_the_union_of_their_table_bits(
    faults: list[str], alarms: list[str], warnings: list[str]
) -> None:
    codes: dict[Level, list[str]] = {"fault": faults, "alarm": alarms, "warning": warnings}
    assert sent_bits(_pack(codes)) == table_bits(codes)


# --- the Modbus gateway packs its bit fields with this table -----------------------------------


def test_the_register_map_has_no_bit_tables_of_its_own() -> None:
    from services.modbus_gateway import docgen, register_map

    for module in (register_map, docgen):
        private = {"_EVT1_BITS", "_bits", "PROTECTION_CODES", "EVT1_OTHER_ALARM"}
        assert private.isdisjoint(vars(module)), module.__name__
    assert register_map.code_bits is code_bits
    assert register_map.evt1_bits is evt1_bits
    # tests/modbus_gateway/test_register_map.py checks every bit field against the table
