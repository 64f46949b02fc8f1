"""Register map and link settings of slave boards read over Modbus RTU or TCP (pure, no I/O).

Addresses are PDU addresses (0-based, as sent on the wire), not the 3xxxx/4xxxx numbers of
some data sheets. Bit masks (open wire, sensor fault) hold one bit per channel: channel i is
bit i % 16 (LSB = 0) of register `address + i // 16`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pymodbus.client import ModbusSerialClient

from shared.messages.slave import MAX_CELLS_PER_MODULE, MAX_TEMPS_PER_MODULE

RegisterTable = Literal["holding", "input"]
WordOrder = Literal["big", "little"]
CellValueType = Literal["uint16", "uint32", "float32"]

MAX_UNIT_ID: Final = 247
"""Highest unicast address on a Modbus serial line (248–255 are reserved)."""
MAX_REGISTERS_PER_READ: Final = 125
"""Limit of function codes 3 and 4 in the Modbus specification."""
ADDRESS_SPACE: Final = 65536

_DATATYPE = ModbusSerialClient.DATATYPE
_CELL_DATATYPES: Final = {
    "uint16": _DATATYPE.UINT16,
    "uint32": _DATATYPE.UINT32,
    "float32": _DATATYPE.FLOAT32,
}
_UINT_MAX: Final = {"uint16": 0xFFFF, "uint32": 0xFFFF_FFFF}


@dataclass(frozen=True)
class RegisterSpan:
    """One read request: `count` registers from `address` of `table`."""

    table: RegisterTable
    address: int
    count: int


def split_reads(
    table: RegisterTable, address: int, count: int, max_per_read: int, width: int = 1
) -> list[RegisterSpan]:
    """Cut `count` registers into requests of at most `max_per_read` registers.

    Each request holds whole values of `width` registers, so no 32-bit value is torn between
    two requests (the board may update it in between).
    """
    if width < 1 or count % width:
        raise ValueError(f"count {count} is not a multiple of the value width {width}")
    step = (max_per_read // width) * width
    if step < 1:
        raise ValueError(f"max_per_read {max_per_read} cannot hold one value of {width} registers")
    return [
        RegisterSpan(table, address + offset, min(step, count - offset))
        for offset in range(0, count, step)
    ]


def mask_registers(channels: int) -> int:
    """Registers of a bit mask with one bit per channel."""
    return (channels + 15) // 16


def decode_mask(registers: Sequence[int], channels: int) -> list[bool]:
    """Bit i % 16 of register i // 16 for each channel i."""
    if len(registers) != mask_registers(channels):
        raise ValueError(
            f"a mask of {channels} channels needs {mask_registers(channels)} registers, "
            f"got {len(registers)}"
        )
    return [bool((registers[i // 16] >> (i % 16)) & 1) for i in range(channels)]


def encode_mask(bits: Sequence[bool]) -> list[int]:
    """Inverse of `decode_mask`."""
    registers = [0] * mask_registers(len(bits))
    for i, bit in enumerate(bits):
        if bit:
            registers[i // 16] |= 1 << (i % 16)
    return registers


def _as_list(value: int | float | str | list[bool] | list[int] | list[float]) -> list[float]:
    # convert_from_registers returns a scalar for exactly one value, a list otherwise.
    if isinstance(value, str):
        raise TypeError("numeric data type expected")
    if isinstance(value, list):
        return [float(v) for v in value]
    return [float(value)]


class BoardRegisterMap(BaseModel):
    """Where a slave board keeps its measurements and balancing switches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cell_count: int = Field(ge=1, le=MAX_CELLS_PER_MODULE)
    cell_voltage_address: int = Field(0, ge=0, lt=ADDRESS_SPACE)
    cell_voltage_table: RegisterTable = "input"
    value_type: CellValueType = "uint16"
    """Encoding of one cell voltage; 32-bit types take two registers per cell."""
    word_order: WordOrder = "big"
    """Order of the two registers of a 32-bit value ("big": high word first)."""
    cell_voltage_scale_v: float = Field(0.001, gt=0.0, allow_inf_nan=False)
    """Volts per count (per unit for float32: 1.0 when the board sends volts)."""

    temperature_count: int = Field(0, ge=0, le=MAX_TEMPS_PER_MODULE)
    temperature_address: int = Field(0, ge=0, lt=ADDRESS_SPACE)
    temperature_table: RegisterTable = "input"
    temperature_scale_c: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    temperature_offset_c: float = Field(0.0, allow_inf_nan=False)
    temperature_signed: bool = True
    """int16 registers (two's complement); False reads them as uint16."""

    balancing_coil_address: int = Field(0, ge=0, lt=ADDRESS_SPACE)
    """First coil; coil `address + i` switches the bleed resistor of cell i."""

    status_table: RegisterTable = "input"
    open_wire_address: int | None = Field(None, ge=0, lt=ADDRESS_SPACE)
    """First register of the open-wire bit mask, one bit per cell; None: not reported."""
    sensor_fault_address: int | None = Field(None, ge=0, lt=ADDRESS_SPACE)
    """First register of the sensor-fault bit mask, one bit per temperature sensor."""

    unit_id_base: int = Field(1, ge=1, le=MAX_UNIT_ID)
    """Module m answers to unit id `unit_id_base + m`."""
    max_registers_per_read: int = Field(MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ)

    @property
    def registers_per_cell(self) -> int:
        return 1 if self.value_type == "uint16" else 2

    @property
    def cell_register_count(self) -> int:
        return self.cell_count * self.registers_per_cell

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_registers_per_read < self.registers_per_cell:
            raise ValueError(
                f"max_registers_per_read ({self.max_registers_per_read}) must hold one "
                f"{self.value_type} value ({self.registers_per_cell} registers)"
            )
        if self.sensor_fault_address is not None and self.temperature_count == 0:
            raise ValueError("sensor_fault_address is set but temperature_count is 0")
        blocks = self._blocks()
        for name, _table, start, count in blocks:
            if start + count > ADDRESS_SPACE:
                raise ValueError(
                    f"{name} ({count} from address {start}) runs past the last address "
                    f"{ADDRESS_SPACE - 1}"
                )
        for i, (name_a, table_a, start_a, count_a) in enumerate(blocks):
            for name_b, table_b, start_b, count_b in blocks[i + 1 :]:
                if (
                    table_a == table_b
                    and start_a < start_b + count_b
                    and start_b < start_a + count_a
                ):
                    raise ValueError(
                        f"{name_a} ({table_a} {start_a}..{start_a + count_a - 1}) overlaps "
                        f"{name_b} ({table_b} {start_b}..{start_b + count_b - 1})"
                    )
        return self

    def _blocks(self) -> list[tuple[str, str, int, int]]:
        blocks = [
            ("cell voltages", self.cell_voltage_table, self.cell_voltage_address,
             self.cell_register_count),
            ("balancing coils", "coil", self.balancing_coil_address, self.cell_count),
        ]  # fmt: skip
        if self.temperature_count:
            blocks.append(
                ("temperatures", self.temperature_table, self.temperature_address,
                 self.temperature_count)
            )  # fmt: skip
        if self.open_wire_address is not None:
            blocks.append(
                ("open-wire mask", self.status_table, self.open_wire_address,
                 mask_registers(self.cell_count))
            )  # fmt: skip
        if self.sensor_fault_address is not None:
            blocks.append(
                ("sensor-fault mask", self.status_table, self.sensor_fault_address,
                 mask_registers(self.temperature_count))
            )  # fmt: skip
        return blocks

    # --- addressing -------------------------------------------------------------------------

    def unit_id(self, module: int) -> int:
        """Modbus unit id of `module`; ValueError outside 1–247."""
        unit = self.unit_id_base + module
        if module < 0 or unit > MAX_UNIT_ID:
            raise ValueError(
                f"module {module} maps to unit id {unit} (unit_id_base {self.unit_id_base}), "
                f"outside 1..{MAX_UNIT_ID}"
            )
        return unit

    def cell_reads(self) -> list[RegisterSpan]:
        return split_reads(
            self.cell_voltage_table,
            self.cell_voltage_address,
            self.cell_register_count,
            self.max_registers_per_read,
            self.registers_per_cell,
        )

    def temperature_reads(self) -> list[RegisterSpan]:
        if not self.temperature_count:
            return []
        return split_reads(
            self.temperature_table,
            self.temperature_address,
            self.temperature_count,
            self.max_registers_per_read,
        )

    def open_wire_reads(self) -> list[RegisterSpan]:
        if self.open_wire_address is None:
            return []
        return split_reads(
            self.status_table,
            self.open_wire_address,
            mask_registers(self.cell_count),
            self.max_registers_per_read,
        )

    def sensor_fault_reads(self) -> list[RegisterSpan]:
        if self.sensor_fault_address is None:
            return []
        return split_reads(
            self.status_table,
            self.sensor_fault_address,
            mask_registers(self.temperature_count),
            self.max_registers_per_read,
        )

    # --- conversion -------------------------------------------------------------------------

    def decode_cells(self, registers: Sequence[int]) -> list[int]:
        """Cell voltages in mV (rounded); a non-finite float32 reads as 0 mV."""
        if len(registers) != self.cell_register_count:
            raise ValueError(
                f"{self.cell_count} {self.value_type} cells need {self.cell_register_count} "
                f"registers, got {len(registers)}"
            )
        raw = _as_list(
            ModbusSerialClient.convert_from_registers(
                list(registers), _CELL_DATATYPES[self.value_type], word_order=self.word_order
            )
        )
        mv_per_unit = self.cell_voltage_scale_v * 1000.0
        return [round(v * mv_per_unit) if math.isfinite(v) else 0 for v in raw]

    def encode_cells(self, cell_mv: Sequence[int]) -> list[int]:
        """Registers that `decode_cells` turns back into `cell_mv` (for simulators and tests)."""
        if len(cell_mv) != self.cell_count:
            raise ValueError(f"expected {self.cell_count} cell voltages, got {len(cell_mv)}")
        units = [mv / (self.cell_voltage_scale_v * 1000.0) for mv in cell_mv]
        datatype = _CELL_DATATYPES[self.value_type]
        if self.value_type == "float32":
            return ModbusSerialClient.convert_to_registers(
                units, datatype, word_order=self.word_order
            )
        counts = [round(u) for u in units]
        limit = _UINT_MAX[self.value_type]
        if bad := [mv for mv, c in zip(cell_mv, counts, strict=True) if not 0 <= c <= limit]:
            raise ValueError(f"cell voltages {bad} mV do not fit a {self.value_type} register")
        return ModbusSerialClient.convert_to_registers(counts, datatype, word_order=self.word_order)

    def decode_temps(self, registers: Sequence[int]) -> list[float]:
        """Temperatures in °C, rounded to 1e-6 to drop binary noise of the scale."""
        if len(registers) != self.temperature_count:
            raise ValueError(
                f"{self.temperature_count} temperatures need as many registers, "
                f"got {len(registers)}"
            )
        if not registers:
            return []
        datatype = _DATATYPE.INT16 if self.temperature_signed else _DATATYPE.UINT16
        raw = _as_list(ModbusSerialClient.convert_from_registers(list(registers), datatype))
        return [round(r * self.temperature_scale_c + self.temperature_offset_c, 6) for r in raw]

    def encode_temps(self, temps_c: Sequence[float]) -> list[int]:
        """Registers that `decode_temps` turns back into `temps_c` to within half a count."""
        if len(temps_c) != self.temperature_count:
            raise ValueError(f"expected {self.temperature_count} temperatures, got {len(temps_c)}")
        counts = [
            round((t - self.temperature_offset_c) / self.temperature_scale_c) for t in temps_c
        ]
        low, high = (-0x8000, 0x7FFF) if self.temperature_signed else (0, 0xFFFF)
        if bad := [t for t, c in zip(temps_c, counts, strict=True) if not low <= c <= high]:
            raise ValueError(f"temperatures {bad} °C do not fit the temperature registers")
        return [c & 0xFFFF for c in counts]


TCP_SCHEME: Final = "tcp://"


def parse_tcp_port(port: str) -> tuple[str, int] | None:
    """`tcp://host:port` -> (host, port) for Modbus TCP; None for a serial device or pyserial URL.

    ValueError for a tcp:// address without a host or a valid port.
    """
    if not port.startswith(TCP_SCHEME):
        return None
    parts = urlsplit(port)
    try:
        number = parts.port
    except ValueError as exc:
        raise ValueError(f"{port!r}: {exc}") from None
    if not parts.hostname or number is None or parts.path not in ("", "/"):
        raise ValueError(f"{port!r} is not like tcp://127.0.0.1:5020")
    return parts.hostname, number


class SerialSettings(BaseModel):
    """The link of the agent: an RS-485 port (Modbus RTU) or a Modbus TCP server (gateway or
    the plant simulation); the serial fields are ignored for TCP."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: str = Field(min_length=1)
    """Device path or pyserial URL, e.g. /dev/ttyUSB0; or tcp://host:port for Modbus TCP."""
    baudrate: int = Field(19200, gt=0, le=4_000_000)
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: int = 8
    timeout_s: float = Field(0.5, gt=0.0, le=60.0, allow_inf_nan=False)
    """Time to wait for a reply before a request counts as lost."""
    retries: int = Field(1, ge=0, le=10)
    """Extra attempts after a lost reply (not after an exception response)."""

    @field_validator("port")
    @classmethod
    def _tcp_address(cls, value: str) -> str:
        parse_tcp_port(value)
        return value

    @property
    def tcp(self) -> tuple[str, int] | None:
        """(host, port) of a Modbus TCP link; None for a serial port."""
        return parse_tcp_port(self.port)

    @field_validator("bytesize")
    @classmethod
    def _rtu_bytesize(cls, value: int) -> int:
        if value != 8:
            raise ValueError(f"Modbus RTU needs 8 data bits, got {value}")
        return value
