"""Simulated slave boards on one Modbus TCP server: the register map the agent's driver reads.

Module m answers at unit id `board_map.unit_id_base + m` (`BoardRegisterMap.unit_id`), with the
layout of `services/slave_agent/modbus_map.py`: cell voltages, temperatures, the open-wire and
sensor-fault bit masks in their tables, and one balancing coil per cell. Each table is one block
from address 0 to the end of the highest field in it; other addresses answer ILLEGAL_ADDRESS.

`publish(readings)` writes the measurements and reads the balancing coils back in one round trip
on the server's event loop (its own thread). A board in `silent` answers nothing (a TCP-to-RTU
gateway's lost reply): its response is dropped by the packet trace. So is every response of a
board before its first `publish`: its registers would read zeros (0 mV, flagged out of range),
which no real board serves.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, Final, TypeVar

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from services.slave_agent.modbus_map import BoardRegisterMap, encode_mask, mask_registers
from services.slave_agent.sim import Reading
from shared.messages.slave import ChannelFlag

FC_COILS: Final = 1
FC_HOLDING: Final = 3
FC_INPUT: Final = 4
_MBAP_UNIT_BYTE: Final = 6
"""Byte of the unit id in a Modbus TCP frame (after transaction, protocol and length)."""
T = TypeVar("T")


def table_sizes(board_map: BoardRegisterMap) -> dict[str, int]:
    """Registers (or coils) each table needs: up to the end of its highest field."""
    m = board_map
    fields: list[tuple[str, int, int]] = [
        (m.cell_voltage_table, m.cell_voltage_address, m.cell_register_count),
        ("coil", m.balancing_coil_address, m.cell_count),
    ]
    if m.temperature_count:
        fields.append((m.temperature_table, m.temperature_address, m.temperature_count))
    if m.open_wire_address is not None:
        fields.append((m.status_table, m.open_wire_address, mask_registers(m.cell_count)))
    if m.sensor_fault_address is not None:
        fields.append((m.status_table, m.sensor_fault_address, mask_registers(m.temperature_count)))
    sizes = {"coil": 1, "holding": 1, "input": 1}
    for table, address, count in fields:
        sizes[table] = max(sizes[table], address + count)
    return sizes


def board_writes(board_map: BoardRegisterMap, reading: Reading) -> list[tuple[int, int, list[int]]]:
    """(function code, address, registers) that make the board show `reading` (pure)."""
    m = board_map
    fc = {"holding": FC_HOLDING, "input": FC_INPUT}
    writes = [
        (
            fc[m.cell_voltage_table],
            m.cell_voltage_address,
            m.encode_cells([int(v) for v in reading.cell_mv]),
        )
    ]
    if m.temperature_count:
        temps = [float(t) for t in reading.temp_c]
        writes.append((fc[m.temperature_table], m.temperature_address, m.encode_temps(temps)))
    wire = int(ChannelFlag.OPEN_WIRE)
    if m.open_wire_address is not None:
        bits = [bool(int(f) & wire) for f in reading.cell_flags]
        writes.append((fc[m.status_table], m.open_wire_address, encode_mask(bits)))
    if m.sensor_fault_address is not None:
        bits = [bool(int(f) & (wire | int(ChannelFlag.SENSOR_FAULT))) for f in reading.temp_flags]
        writes.append((fc[m.status_table], m.sensor_fault_address, encode_mask(bits)))
    return writes


class BoardServer:
    """The boards of `modules` on a Modbus TCP server at `host:port`; `stop` closes it."""

    def __init__(
        self, board_map: BoardRegisterMap, modules: list[int], host: str, port: int
    ) -> None:
        self.board_map = board_map
        self.units = {m: board_map.unit_id(m) for m in modules}
        self.silent: frozenset[int] = frozenset()
        """Modules whose board answers nothing."""
        self._silent_units: frozenset[int] = frozenset()
        self._unwritten_units = frozenset(self.units.values())
        """Boards not shown a reading yet: they answer nothing (read and changed on the loop)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="plant-boards")
        self._thread.start()
        try:
            self._server = self._call(self._start(host, port))
        except BaseException:
            self._stop_loop()
            raise

    def _device(self, unit: int) -> SimDevice:
        sizes = table_sizes(self.board_map)
        return SimDevice(
            id=unit,
            simdata=(
                [SimData(address=0, values=[False] * sizes["coil"], datatype=DataType.BITS)],
                [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(address=0, values=[0] * sizes["holding"], datatype=DataType.REGISTERS)],
                [SimData(address=0, values=[0] * sizes["input"], datatype=DataType.REGISTERS)],
            ),
        )

    async def _start(self, host: str, port: int) -> ModbusTcpServer:
        server = ModbusTcpServer(
            [self._device(u) for u in self.units.values()],
            address=(host, port),
            trace_packet=self._gate,
        )
        await server.serve_forever(background=True)
        return server

    def _gate(self, sending: bool, data: bytes) -> bytes:
        if sending and len(data) > _MBAP_UNIT_BYTE:
            unit = data[_MBAP_UNIT_BYTE]
            if unit in self._silent_units or unit in self._unwritten_units:
                return b""
        return data

    def set_silent(self, modules: frozenset[int]) -> None:
        self.silent = modules
        self._silent_units = frozenset(self.units[m] for m in modules if m in self.units)

    def publish(self, readings: Mapping[int, Reading]) -> dict[int, list[bool]]:
        """Show each module's reading; the balancing coils of every board (module -> bits)."""
        writes = {
            self.units[m]: board_writes(self.board_map, r)
            for m, r in readings.items()
            if m in self.units
        }
        m = self.board_map
        server = self._server

        async def swap() -> dict[int, list[bool]]:
            for unit, blocks in writes.items():
                for fc, address, values in blocks:
                    await server.async_setValues(unit, fc, address, values)
            self._unwritten_units -= writes.keys()
            coils: dict[int, list[bool]] = {}
            for module, unit in self.units.items():
                bits = await server.async_getValues(
                    unit, FC_COILS, m.balancing_coil_address, m.cell_count
                )
                coils[module] = [bool(b) for b in bits]
            return coils

        return self._call(swap())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=5.0)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        self._loop.close()

    def stop(self) -> None:
        try:
            self._call(self._server.shutdown())  # type: ignore[no-untyped-call]
        finally:
            self._stop_loop()
