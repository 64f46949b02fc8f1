"""Register map of the Modbus slave board: validation, conversions and read planning."""

from __future__ import annotations

import math
import struct
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.slave_agent.modbus_map import (
    BoardRegisterMap,
    CellValueType,
    RegisterSpan,
    SerialSettings,
    WordOrder,
    decode_mask,
    encode_mask,
    mask_registers,
    parse_tcp_port,
    split_reads,
)

VALUE_TYPES: tuple[CellValueType, ...] = get_args(CellValueType)
WORD_ORDERS: tuple[WordOrder, ...] = get_args(WordOrder)
# A scale per value type that represents every mV exactly.
SCALE_V: dict[str, float] = {"uint16": 0.001, "uint32": 1e-6, "float32": 1.0}


def float32_words(volts: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", volts))
    return [hi, lo]


# --- validation ---------------------------------------------------------------------------


def test_defaults() -> None:
    board = BoardRegisterMap(cell_count=16)
    assert board.value_type == "uint16" and board.word_order == "big"
    assert board.registers_per_cell == 1 and board.cell_register_count == 16
    assert board.unit_id(0) == 1
    assert board.max_registers_per_read == 125


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cell_count": 0}, "cell_count"),
        ({"cell_count": 197}, "cell_count"),
        ({"temperature_count": 65}, "temperature_count"),
        ({"unit_id_base": 0}, "unit_id_base"),
        ({"unit_id_base": 248}, "unit_id_base"),
        ({"max_registers_per_read": 126}, "max_registers_per_read"),
        ({"max_registers_per_read": 0}, "max_registers_per_read"),
        ({"cell_voltage_address": 65536}, "cell_voltage_address"),
        ({"cell_voltage_scale_v": 0.0}, "cell_voltage_scale_v"),
        ({"cell_voltage_scale_v": math.nan}, "cell_voltage_scale_v"),
        ({"temperature_scale_c": -0.1}, "temperature_scale_c"),
        ({"value_type": "int16"}, "value_type"),
        ({"word_order": "middle"}, "word_order"),
        ({"cell_voltage_table": "coil"}, "cell_voltage_table"),
        ({"cell_voltage_adress": 4}, "cell_voltage_adress"),
        (
            {"value_type": "uint32", "max_registers_per_read": 1},
            r"max_registers_per_read \(1\) must hold one uint32 value \(2 registers\)",
        ),
        (
            {"cell_voltage_address": 65530, "value_type": "float32"},
            r"cell voltages \(32 from address 65530\) runs past the last address 65535",
        ),
        (
            {"balancing_coil_address": 65530},
            r"balancing coils \(16 from address 65530\) runs past",
        ),
        ({"sensor_fault_address": 10}, "sensor_fault_address is set but temperature_count is 0"),
        (
            {"cell_voltage_address": 0, "temperature_count": 2, "temperature_address": 15},
            r"cell voltages \(input 0..15\) overlaps temperatures \(input 15..16\)",
        ),
        (
            {"status_table": "input", "open_wire_address": 8},
            r"cell voltages \(input 0..15\) overlaps open-wire mask \(input 8..8\)",
        ),
    ],
)
def test_invalid_maps_are_rejected_with_a_readable_message(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        BoardRegisterMap.model_validate({"cell_count": 16, **fields})


def test_blocks_in_different_tables_may_share_addresses() -> None:
    board = BoardRegisterMap(
        cell_count=16,
        cell_voltage_table="input",
        temperature_count=4,
        temperature_table="holding",
        status_table="holding",
        open_wire_address=4,
        sensor_fault_address=5,
        balancing_coil_address=0,
    )
    assert board.temperature_address == board.cell_voltage_address == 0


def test_unit_ids() -> None:
    board = BoardRegisterMap(cell_count=4, unit_id_base=10)
    assert board.unit_id(0) == 10
    assert board.unit_id(237) == 247
    with pytest.raises(ValueError, match=r"module 238 maps to unit id 248 .* outside 1..247"):
        board.unit_id(238)
    with pytest.raises(ValueError, match="module -1"):
        board.unit_id(-1)


def test_serial_settings() -> None:
    serial = SerialSettings(port="/dev/ttyUSB0")
    assert (serial.baudrate, serial.parity, serial.stopbits, serial.bytesize) == (19200, "E", 1, 8)
    with pytest.raises(ValidationError, match="Modbus RTU needs 8 data bits, got 7"):
        SerialSettings(port="/dev/ttyUSB0", bytesize=7)
    for bad in ({"parity": "X"}, {"stopbits": 3}, {"timeout_s": 0}, {"retries": -1}, {"port": ""}):
        with pytest.raises(ValidationError):
            SerialSettings.model_validate({"port": "/dev/ttyUSB0", **bad})


# --- read planning ------------------------------------------------------------------------


def test_split_reads_examples() -> None:
    assert split_reads("input", 0, 10, 125) == [RegisterSpan("input", 0, 10)]
    assert split_reads("holding", 100, 250, 125) == [
        RegisterSpan("holding", 100, 125),
        RegisterSpan("holding", 225, 125),
    ]
    # 32-bit values are never torn: 125 rounds down to 124 registers per request.
    assert split_reads("input", 0, 260, 125, width=2) == [
        RegisterSpan("input", 0, 124),
        RegisterSpan("input", 124, 124),
        RegisterSpan("input", 248, 12),
    ]
    assert split_reads("input", 0, 0, 125) == []
    with pytest.raises(ValueError, match="multiple of the value width"):
        split_reads("input", 0, 3, 125, width=2)
    with pytest.raises(ValueError, match="cannot hold one value"):
        split_reads("input", 0, 4, 1, width=2)


@given(
    address=st.integers(0, 60000),
    values=st.integers(0, 400),
    width=st.sampled_from([1, 2]),
    max_per_read=st.integers(2, 125),
)
def test_split_reads_cover_the_block(
    address: int, values: int, width: int, max_per_read: int
) -> None:
    spans = split_reads("input", address, values * width, max_per_read, width)
    position = address
    for span in spans:
        assert span.address == position
        assert 0 < span.count <= max_per_read and span.count % width == 0
        position += span.count
    assert position == address + values * width


def test_board_read_plans() -> None:
    board = BoardRegisterMap(
        cell_count=100,
        value_type="float32",
        cell_voltage_table="holding",
        cell_voltage_address=1000,
        temperature_count=8,
        temperature_address=10,
        status_table="holding",
        open_wire_address=0,
        sensor_fault_address=7,
        max_registers_per_read=64,
    )
    assert board.cell_reads() == [
        RegisterSpan("holding", 1000, 64),
        RegisterSpan("holding", 1064, 64),
        RegisterSpan("holding", 1128, 64),
        RegisterSpan("holding", 1192, 8),
    ]
    assert board.temperature_reads() == [RegisterSpan("input", 10, 8)]
    assert board.open_wire_reads() == [RegisterSpan("holding", 0, 7)]
    assert board.sensor_fault_reads() == [RegisterSpan("holding", 7, 1)]
    bare = BoardRegisterMap(cell_count=4)
    assert bare.temperature_reads() == bare.open_wire_reads() == bare.sensor_fault_reads() == []


# --- cell voltages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value_type", "word_order", "scale", "registers", "expected"),
    [
        ("uint16", "big", 0.001, [3300, 4200], [3300, 4200]),
        ("uint16", "little", 0.001, [3300, 4200], [3300, 4200]),  # one word: no order
        ("uint16", "big", 0.0001, [33001, 42006], [3300, 4201]),
        ("uint32", "big", 1e-6, [0x0032, 0x5AA0, 0x0040, 0x1640], [3300, 4200]),
        ("uint32", "little", 1e-6, [0x5AA0, 0x0032, 0x1640, 0x0040], [3300, 4200]),
        ("float32", "big", 1.0, float32_words(3.3) + float32_words(4.2), [3300, 4200]),
        (
            "float32",
            "little",
            1.0,
            float32_words(3.3)[::-1] + float32_words(4.2)[::-1],
            [3300, 4200],
        ),
        ("float32", "big", 0.001, float32_words(3300.4) + float32_words(-12.0), [3300, -12]),
    ],
)
def test_decode_cells_known_registers(
    value_type: CellValueType,
    word_order: WordOrder,
    scale: float,
    registers: list[int],
    expected: list[int],
) -> None:
    board = BoardRegisterMap(
        cell_count=2, value_type=value_type, word_order=word_order, cell_voltage_scale_v=scale
    )
    assert board.decode_cells(registers) == expected


def test_decode_single_cell() -> None:
    # One value is where pymodbus' converter returns a scalar instead of a list.
    for value_type in VALUE_TYPES:
        board = BoardRegisterMap(
            cell_count=1, value_type=value_type, cell_voltage_scale_v=SCALE_V[value_type]
        )
        assert board.decode_cells(board.encode_cells([3711])) == [3711]


def test_decode_cells_rejects_wrong_register_count() -> None:
    board = BoardRegisterMap(cell_count=3, value_type="uint32")
    with pytest.raises(ValueError, match="3 uint32 cells need 6 registers, got 5"):
        board.decode_cells([0] * 5)


def test_non_finite_float_reads_as_zero() -> None:
    board = BoardRegisterMap(cell_count=3, value_type="float32", cell_voltage_scale_v=1.0)
    nan, inf = [0x7FC0, 0x0000], [0x7F80, 0x0000]
    assert board.decode_cells(nan + inf + float32_words(3.0)) == [0, 0, 3000]


def test_encode_cells_refuses_values_that_do_not_fit() -> None:
    board = BoardRegisterMap(cell_count=2)
    with pytest.raises(ValueError, match=r"cell voltages \[70000\] mV do not fit a uint16"):
        board.encode_cells([3300, 70000])
    with pytest.raises(ValueError, match="expected 2 cell voltages, got 1"):
        board.encode_cells([3300])


@pytest.mark.parametrize("value_type", VALUE_TYPES)
@pytest.mark.parametrize("word_order", WORD_ORDERS)
@given(data=st.data())
def test_cells_round_trip(value_type: CellValueType, word_order: WordOrder, data: Any) -> None:
    cells = data.draw(st.integers(1, 196), label="cells")
    board = BoardRegisterMap(
        cell_count=cells,
        value_type=value_type,
        word_order=word_order,
        cell_voltage_scale_v=SCALE_V[value_type],
    )
    mv = data.draw(st.lists(st.integers(0, 6000), min_size=cells, max_size=cells), label="mv")
    registers = board.encode_cells(mv)
    assert len(registers) == board.cell_register_count
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert board.decode_cells(registers) == mv


@given(
    registers=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    value_type=st.sampled_from(["uint32", "float32"]),
)
def test_word_orders_mirror_each_other(registers: list[int], value_type: CellValueType) -> None:
    big = BoardRegisterMap(cell_count=2, value_type=value_type, word_order="big")
    little = BoardRegisterMap(cell_count=2, value_type=value_type, word_order="little")
    swapped = [registers[1], registers[0], registers[3], registers[2]]
    assert big.decode_cells(registers) == little.decode_cells(swapped)


# --- temperatures -------------------------------------------------------------------------


def test_decode_temps() -> None:
    signed = BoardRegisterMap(cell_count=1, temperature_count=4, temperature_address=100)
    assert signed.decode_temps([253, 0xFFCE, 0x8000, 0x7FFF]) == [25.3, -5.0, -3276.8, 3276.7]
    unsigned = BoardRegisterMap(
        cell_count=1,
        temperature_count=2,
        temperature_address=100,
        temperature_signed=False,
        temperature_scale_c=0.01,
        temperature_offset_c=-273.15,
    )
    assert unsigned.decode_temps([29815, 0xFFFF]) == [25.0, 382.2]
    assert BoardRegisterMap(cell_count=1).decode_temps([]) == []
    with pytest.raises(ValueError, match="4 temperatures need as many registers, got 3"):
        signed.decode_temps([0, 0, 0])


@given(
    signed=st.booleans(),
    scale=st.sampled_from([0.1, 0.01, 0.5, 1.0, 0.0625]),
    offset=st.sampled_from([0.0, -40.0, -273.15]),
    data=st.data(),
)
def test_temps_round_trip(signed: bool, scale: float, offset: float, data: Any) -> None:
    count = data.draw(st.integers(1, 64), label="count")
    board = BoardRegisterMap(
        cell_count=1,
        temperature_count=count,
        temperature_address=100,
        temperature_signed=signed,
        temperature_scale_c=scale,
        temperature_offset_c=offset,
    )
    low = max(-60.0, offset + (-0x8000 if signed else 0) * scale)
    high = min(200.0, offset + (0x7FFF if signed else 0xFFFF) * scale)
    temps = data.draw(st.lists(st.floats(low, high), min_size=count, max_size=count), label="temps")
    decoded = board.decode_temps(board.encode_temps(temps))
    assert decoded == pytest.approx(temps, abs=scale / 2 + 1e-6)
    # Decoding is exact on the register grid.
    assert board.decode_temps(board.encode_temps(decoded)) == decoded


def test_encode_temps_refuses_values_that_do_not_fit() -> None:
    board = BoardRegisterMap(
        cell_count=1, temperature_count=1, temperature_address=1, temperature_signed=False
    )
    with pytest.raises(ValueError, match=r"temperatures \[-1.0\] °C do not fit"):
        board.encode_temps([-1.0])


# --- bit masks ----------------------------------------------------------------------------


def test_mask_layout() -> None:
    assert mask_registers(16) == 1 and mask_registers(17) == 2 and mask_registers(0) == 0
    bits = decode_mask([0b100010, 0b10], 18)
    assert [i for i, bit in enumerate(bits) if bit] == [1, 5, 17]
    with pytest.raises(ValueError, match="a mask of 18 channels needs 2 registers, got 1"):
        decode_mask([0], 18)


@given(st.lists(st.booleans(), max_size=196))
def test_mask_round_trip(bits: list[bool]) -> None:
    registers = encode_mask(bits)
    assert len(registers) == mask_registers(len(bits))
    assert decode_mask(registers, len(bits)) == bits


@pytest.mark.parametrize(
    ("port", "want"),
    [
        ("tcp://127.0.0.1:5020", ("127.0.0.1", 5020)),
        ("tcp://plant.local:502/", ("plant.local", 502)),
        ("/dev/ttyUSB0", None),
        ("rfc2217://host:4000", None),
    ],
)
def test_tcp_ports_are_told_from_serial_ports(port: str, want: tuple[str, int] | None) -> None:
    assert parse_tcp_port(port) == want
    assert SerialSettings(port=port).tcp == want


@pytest.mark.parametrize("port", ["tcp://127.0.0.1", "tcp://:5020", "tcp://h:99999", "tcp://h:1/x"])
def test_bad_tcp_ports_are_refused(port: str) -> None:
    with pytest.raises(ValueError, match="tcp://"):
        parse_tcp_port(port)
    with pytest.raises(ValueError):
        SerialSettings(port=port)
