"""The protection code table: stable bit layout, one bit packing, and the profiles it replaces."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config.protection import PROTECTION_CODES, ProtectionConfig, ThreeLevel
from shared.protection_codes import (
    BY_BIT,
    CODE_TABLE,
    OTHER_CODE_BIT,
    PYLON_0X359,
    PYLON_HV_ERRORS,
    PYLON_HV_FLAGS,
    SPECS,
    THREE_LEVELS,
    VICTRON_0X35A,
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
    "contactor_feedback_mismatch", "insulation_low",
)  # fmt: skip

known = st.sampled_from(list(ProtectionCode))
unknown = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(
    lambda c: spec_of(c) is None
)


def test_bit_positions_are_the_published_layout() -> None:
    assert [BY_BIT[i].value for i in range(len(BY_BIT))] == list(PUBLISHED_BITS)
    # the layout the gateways read today is a prefix of it
    assert PUBLISHED_BITS[: len(PROTECTION_CODES)] == PROTECTION_CODES


def test_three_level_codes_are_the_three_level_thresholds() -> None:
    fields = {n for n, f in ProtectionConfig.model_fields.items() if f.annotation is ThreeLevel}
    assert {s.code.value for s in CODE_TABLE if s.levels == THREE_LEVELS} == fields


def test_only_deep_discharge_needs_a_service_reset() -> None:
    assert {s.code for s in CODE_TABLE if s.reset == "service"} == {"deep_discharge"}


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


# --- the CAN gateway tables this table replaces (drop once the CAN gateway reads it) ----------


def _names(mapping: Mapping[Any, Iterable[str]]) -> dict[Any, set[str]]:
    return {signal: {str(c) for c in codes} for signal, codes in mapping.items() if codes}


def test_same_mapping_as_the_can_gateway_tables() -> None:
    from services.can_gateway.alarms import PYLON_FLAGS, VICTRON_CONDITIONS
    from services.can_gateway.pylon_hv import HV_ERRORS, HV_FLAGS

    assert _names(VICTRON_0X35A) == _names(VICTRON_CONDITIONS)
    assert _names(PYLON_0X359) == _names(PYLON_FLAGS)
    assert _names(PYLON_HV_FLAGS) == _names(HV_FLAGS)
    assert _names(PYLON_HV_ERRORS) == _names(HV_ERRORS)


# --- the Modbus gateway packs its bit fields with this table -----------------------------------


def test_the_register_map_has_no_bit_tables_of_its_own() -> None:
    from services.modbus_gateway import docgen, register_map

    for module in (register_map, docgen):
        private = {"_EVT1_BITS", "_bits", "PROTECTION_CODES", "EVT1_OTHER_ALARM"}
        assert private.isdisjoint(vars(module)), module.__name__
    assert register_map.code_bits is code_bits
    assert register_map.evt1_bits is evt1_bits
    # tests/modbus_gateway/test_register_map.py checks every bit field against the table
