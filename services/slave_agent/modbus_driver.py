"""Driver for slave boards read as a Modbus client: RTU on RS-485, or Modbus TCP (a gateway,
or the plant simulation serving the same register map)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from services.slave_agent.driver import DriverError, ModuleReading
from services.slave_agent.modbus_map import (
    BoardRegisterMap,
    RegisterSpan,
    SerialSettings,
    decode_mask,
)
from shared.messages.slave import ChannelFlag

CELL_MV_VALID: Final = (1000, 4950)
"""Readings outside this range carry OUT_OF_RANGE."""
TEMP_C_VALID: Final = (-40.0, 125.0)
"""Readings outside this range carry SENSOR_FAULT."""
# Flagged readings are clamped to what CellTelemetry accepts, so one wild channel cannot make
# the whole sample invalid.
_CELL_MV_LIMITS: Final = (0, 6000)
_TEMP_C_LIMITS: Final = (-60.0, 200.0)


def _exception_name(code: int) -> str:
    try:
        return ExcCodes(code).name
    except ValueError:
        return "unknown"


class ModbusBoardDriver:
    """`Driver` for passive-balancing slave boards that share one RS-485 line (or one Modbus
    TCP server when `serial.port` is tcp://host:port).

    Module m is the board at unit id `board_map.unit_id_base + m`. The link opens on first use
    and reopens after it dropped; every failure surfaces as `DriverError`.
    """

    def __init__(
        self, serial: SerialSettings, board_map: BoardRegisterMap, modules: Sequence[int]
    ) -> None:
        self._serial = serial
        self._map = board_map
        self._units = {module: board_map.unit_id(module) for module in modules}
        self._client: ModbusSerialClient | ModbusTcpClient
        tcp = serial.tcp
        if tcp is not None:
            self._client = ModbusTcpClient(
                tcp[0],
                port=tcp[1],
                timeout=serial.timeout_s,
                retries=serial.retries,
                name=f"slave-boards {serial.port}",
            )
        else:
            self._client = ModbusSerialClient(
                serial.port,
                framer=FramerType.RTU,
                baudrate=serial.baudrate,
                bytesize=serial.bytesize,
                parity=serial.parity,
                stopbits=serial.stopbits,
                timeout=serial.timeout_s,
                retries=serial.retries,
                name=f"slave-boards {serial.port}",
            )
        # One transaction at a time: read and set_balancing may come from different threads.
        self._lock = threading.Lock()
        self._closed = False

    @property
    def modules(self) -> list[int]:
        return list(self._units)

    def read(self, module: int) -> ModuleReading:
        """Sample `module`; range checks and the board's status masks set the channel flags."""
        unit = self._unit(module)
        board = self._map
        cell_mv = board.decode_cells(
            self._read_spans(module, unit, "cell voltages", board.cell_reads())
        )
        temps = board.decode_temps(
            self._read_spans(module, unit, "temperatures", board.temperature_reads())
        )
        open_wire = [False] * board.cell_count
        if spans := board.open_wire_reads():
            regs = self._read_spans(module, unit, "open-wire mask", spans)
            open_wire = decode_mask(regs, board.cell_count)
        sensor_fault = [False] * board.temperature_count
        if spans := board.sensor_fault_reads():
            regs = self._read_spans(module, unit, "sensor-fault mask", spans)
            sensor_fault = decode_mask(regs, board.temperature_count)

        cell_flags: list[int] = []
        for i, mv in enumerate(cell_mv):
            flag = ChannelFlag.NONE
            if not CELL_MV_VALID[0] <= mv <= CELL_MV_VALID[1]:
                flag |= ChannelFlag.OUT_OF_RANGE
            if open_wire[i]:
                flag |= ChannelFlag.OPEN_WIRE
            cell_flags.append(int(flag))
        temp_flags = [
            int(
                ChannelFlag.SENSOR_FAULT
                if sensor_fault[i] or not TEMP_C_VALID[0] <= t <= TEMP_C_VALID[1]
                else ChannelFlag.NONE
            )
            for i, t in enumerate(temps)
        ]
        return ModuleReading(
            cell_mv=[min(max(mv, _CELL_MV_LIMITS[0]), _CELL_MV_LIMITS[1]) for mv in cell_mv],
            cell_flags=cell_flags,
            temp_c=[min(max(t, _TEMP_C_LIMITS[0]), _TEMP_C_LIMITS[1]) for t in temps],
            temp_flags=temp_flags,
        )

    def set_balancing(self, module: int, discharge: Sequence[bool], charge: Sequence[bool]) -> None:
        """Write one bleed coil per cell (one switch per cell in each list)."""
        unit = self._unit(module)
        if any(charge):
            raise DriverError(
                f"module {module} (unit id {unit}): the board balances passively (bleed "
                "resistors) and has no active balancer, so cells cannot be charged"
            )
        count = self._map.cell_count
        bits = list(discharge)
        if len(bits) != count or len(charge) != count:
            raise DriverError(
                f"module {module} (unit id {unit}): {len(bits)} discharge and {len(charge)} "
                f"charge balancing switches given, the board has {count} cells"
            )
        address = self._map.balancing_coil_address
        self._transact(
            module,
            unit,
            f"balancing coils at coil {address} (count {count})",
            lambda: self._client.write_coils(address, bits, device_id=unit),
        )

    def advance(self, dt_s: float, current_a: float) -> None:
        """Real boards measure physics themselves."""

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_port()

    # --- bus access -------------------------------------------------------------------------

    def _close_port(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def _unit(self, module: int) -> int:
        if self._closed:
            raise DriverError("the Modbus board driver is closed")
        try:
            return self._units[module]
        except KeyError:
            raise DriverError(
                f"module {module} is not configured for this driver (modules {self.modules})"
            ) from None

    def _read_spans(
        self, module: int, unit: int, what: str, spans: Sequence[RegisterSpan]
    ) -> list[int]:
        registers: list[int] = []
        for span in spans:
            call = (
                self._client.read_holding_registers
                if span.table == "holding"
                else self._client.read_input_registers
            )
            where = f"{what} at {span.table} register {span.address} (count {span.count})"
            response = self._transact(
                module,
                unit,
                where,
                partial(call, span.address, count=span.count, device_id=unit),
            )
            if len(response.registers) != span.count:
                raise DriverError(
                    f"module {module} (unit id {unit}): {where}: the board returned "
                    f"{len(response.registers)} registers"
                )
            registers.extend(response.registers)
        return registers

    def _transact(
        self, module: int, unit: int, where: str, request: Callable[[], ModbusPDU]
    ) -> ModbusPDU:
        """Run one request; reopen the port once if it dropped."""
        prefix = f"module {module} (unit id {unit}): {where}"
        port = self._serial.port
        with self._lock:
            if self._closed:
                raise DriverError("the Modbus board driver is closed")
            for attempt in range(2):
                try:
                    response = request()
                except ConnectionException as exc:
                    # The client dropped the port after an OS error; the next call reopens it.
                    self._close_port()
                    if attempt == 0:
                        continue
                    raise DriverError(f"{prefix}: link {port} unavailable ({exc})") from exc
                except ModbusIOException as exc:
                    raise DriverError(
                        f"{prefix}: no valid reply within {self._serial.timeout_s} s "
                        f"({self._serial.retries} retries) on {port}"
                    ) from exc
                except (ModbusException, OSError) as exc:
                    self._close_port()
                    raise DriverError(f"{prefix}: request failed on {port}: {exc}") from exc
                if response.isError():
                    code = response.exception_code
                    raise DriverError(
                        f"{prefix}: the board answered with Modbus exception {code:#04x} "
                        f"({_exception_name(code)})"
                    )
                return response
        raise AssertionError("unreachable")
