"""ModbusBoardDriver against pymodbus serial servers over a real pty pair made by socat."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from services.slave_agent.driver import DriverError
from services.slave_agent.modbus_driver import ModbusBoardDriver
from services.slave_agent.modbus_map import BoardRegisterMap, RegisterTable, SerialSettings
from shared.messages.slave import ChannelFlag

SOCAT = shutil.which("socat")
pytestmark = pytest.mark.skipif(
    SOCAT is None, reason="socat is needed to make a pty pair (apt-get install socat)"
)

BAUD = 115200
UNITS = (1, 2)  # modules 0 and 1 with the default unit_id_base 1
REGISTERS = 200  # per table and board; higher addresses answer ILLEGAL_ADDRESS
COILS = 64
FC_READ_COILS, FC_HOLDING, FC_INPUT = 1, 3, 4
T = TypeVar("T")
MakeDriver = Callable[..., ModbusBoardDriver]


class SocatLink:
    """A pty pair joined by socat; `board` and `agent` are symlinks to the two ends."""

    def __init__(self, directory: Path) -> None:
        assert SOCAT is not None
        self.board = str(directory / "board")
        self.agent = str(directory / "agent")
        self._args = [
            SOCAT,
            "-d",
            "-d",
            f"pty,raw,echo=0,link={self.board}",
            f"pty,raw,echo=0,link={self.agent}",
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 5.0
        while not (Path(self.board).exists() and Path(self.agent).exists()):
            if self._proc.poll() is not None:
                raise RuntimeError(f"socat exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("socat did not create its pty links within 5 s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def board_device(unit: int) -> SimDevice:
    """Coils, discrete inputs, holding and input registers as four separate tables."""
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(address=0, values=[False] * COILS, datatype=DataType.BITS)],
            [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(address=0, values=[0] * REGISTERS, datatype=DataType.REGISTERS)],
            [SimData(address=0, values=[0] * REGISTERS, datatype=DataType.REGISTERS)],
        ),
    )


@dataclass(frozen=True)
class Request:
    unit: int
    function_code: int
    address: int
    count: int


class BoardServer:
    """ModbusSerialServer playing boards `units`, on its own event loop in a thread."""

    def __init__(self, port: str, units: tuple[int, ...]) -> None:
        self.units = set(units)
        self.requests: list[Request] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="modbus-board")
        self._thread.start()
        self._server = self._call(self._start(port, [board_device(u) for u in units]))

    async def _start(self, port: str, devices: list[SimDevice]) -> ModbusSerialServer:
        # The server grabs the running loop in its constructor.
        server = ModbusSerialServer(
            devices,
            port=port,
            baudrate=BAUD,
            reconnect_delay=0.1,
            trace_packet=self._drop_foreign,
            trace_pdu=self._record,
        )
        await server.serve_forever(background=True)
        return server

    def _drop_foreign(self, sending: bool, data: bytes) -> bytes:
        # The datastore answers unknown unit ids with exception 04; a real bus stays silent.
        if sending and data and data[0] not in self.units:
            return b""
        return data

    def _record(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append(Request(pdu.dev_id, pdu.function_code, pdu.address, pdu.count))
        return pdu

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=5.0)

    def set_registers(
        self, unit: int, table: RegisterTable, address: int, values: list[int]
    ) -> None:
        fc = FC_HOLDING if table == "holding" else FC_INPUT
        self._call(self._server.async_setValues(unit, fc, address, values))

    def coils(self, unit: int, address: int, count: int) -> list[bool]:
        values = self._call(self._server.async_getValues(unit, FC_READ_COILS, address, count))
        return [bool(v) for v in values]

    def set_coils(self, unit: int, address: int, values: list[bool]) -> None:
        self._call(self._server.async_setValues(unit, FC_READ_COILS, address, values))

    def clear(self) -> None:
        for unit in self.units:
            self.set_registers(unit, "holding", 0, [0] * REGISTERS)
            self.set_registers(unit, "input", 0, [0] * REGISTERS)
            self.set_coils(unit, 0, [False] * COILS)
        self.requests.clear()

    def stop(self) -> None:
        try:
            self._call(self._server.shutdown())  # type: ignore[no-untyped-call]
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)
            self._loop.close()


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SocatLink]:
    pair = SocatLink(tmp_path_factory.mktemp("rs485"))
    pair.start()
    yield pair
    pair.stop()


@pytest.fixture(scope="module")
def boards(link: SocatLink) -> Iterator[BoardServer]:
    server = BoardServer(link.board, UNITS)
    yield server
    server.stop()


@pytest.fixture
def board(boards: BoardServer) -> BoardServer:
    boards.clear()
    return boards


def settings(port: str) -> SerialSettings:
    return SerialSettings(port=port, baudrate=BAUD, parity="N", timeout_s=0.2, retries=0)


@pytest.fixture
def make_driver(link: SocatLink) -> Iterator[MakeDriver]:
    drivers: list[ModbusBoardDriver] = []

    def make(board_map: BoardRegisterMap, modules: tuple[int, ...] = (0, 1)) -> ModbusBoardDriver:
        driver = ModbusBoardDriver(settings(link.agent), board_map, modules)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


def words(value: int, word_order: str) -> list[int]:
    hi, lo = value >> 16, value & 0xFFFF
    return [hi, lo] if word_order == "big" else [lo, hi]


def float_words(value: float, word_order: str) -> list[int]:
    return words(struct.unpack(">I", struct.pack(">f", value))[0], word_order)


def test_reads_cells_and_temperatures_of_two_modules(
    board: BoardServer, make_driver: MakeDriver
) -> None:
    board_map = BoardRegisterMap(
        cell_count=4,
        cell_voltage_address=10,
        temperature_count=3,
        temperature_address=40,
        temperature_scale_c=0.1,
        temperature_offset_c=0.0,
    )
    board.set_registers(1, "input", 10, [3301, 3302, 3303, 3304])
    board.set_registers(2, "input", 10, [4001, 4002, 1500, 2999])
    board.set_registers(1, "input", 40, [253, 0xFFCE, 0])  # 25.3, -5.0, 0.0 °C
    board.set_registers(2, "input", 40, [1000, 1001, 399])

    driver = make_driver(board_map)
    first, second = driver.read(0), driver.read(1)

    assert first.cell_mv == [3301, 3302, 3303, 3304]
    assert second.cell_mv == [4001, 4002, 1500, 2999]
    assert first.cell_flags == [0] * 4 and second.cell_flags == [0] * 4
    assert first.temp_c == pytest.approx([25.3, -5.0, 0.0])
    assert second.temp_c == pytest.approx([100.0, 100.1, 39.9])
    assert first.temp_flags == [0] * 3 and second.temp_flags == [0] * 3
    assert {r.unit for r in board.requests} == {1, 2}


@pytest.mark.parametrize("word_order", ["big", "little"])
def test_uint32_cells_in_microvolts(
    board: BoardServer, make_driver: MakeDriver, word_order: str
) -> None:
    board_map = BoardRegisterMap(
        cell_count=3,
        cell_voltage_table="holding",
        cell_voltage_address=100,
        value_type="uint32",
        word_order=word_order,
        cell_voltage_scale_v=1e-6,
    )
    microvolts = [3_300_000, 4_199_999, 65_536_000]  # last one needs both words
    registers = [w for uv in microvolts for w in words(uv, word_order)]
    board.set_registers(1, "holding", 100, registers)

    reading = make_driver(board_map, (0,)).read(0)

    assert reading.cell_mv == [3300, 4200, 6000]  # 65536 mV clamped, flagged
    assert reading.cell_flags == [0, 0, ChannelFlag.OUT_OF_RANGE]


@pytest.mark.parametrize("word_order", ["big", "little"])
def test_float32_cells_in_volts(
    board: BoardServer, make_driver: MakeDriver, word_order: str
) -> None:
    board_map = BoardRegisterMap(
        cell_count=4,
        cell_voltage_address=0,
        value_type="float32",
        word_order=word_order,
        cell_voltage_scale_v=1.0,
    )
    volts = [3.3, 3.2876, 4.95, 1.0]
    board.set_registers(2, "input", 0, [w for v in volts for w in float_words(v, word_order)])

    reading = make_driver(board_map, (1,)).read(1)

    assert reading.cell_mv == [3300, 3288, 4950, 1000]
    assert reading.cell_flags == [0, 0, 0, 0]


def test_split_reads_keep_32_bit_values_whole(board: BoardServer, make_driver: MakeDriver) -> None:
    board_map = BoardRegisterMap(
        cell_count=5,
        cell_voltage_address=20,
        value_type="uint32",
        word_order="little",
        max_registers_per_read=5,
    )
    mv = [3000, 3100, 3200, 3300, 3400]
    board.set_registers(1, "input", 20, board_map.encode_cells(mv))

    assert make_driver(board_map, (0,)).read(0).cell_mv == mv
    reads = [(r.address, r.count) for r in board.requests if r.function_code == FC_INPUT]
    assert reads == [(20, 4), (24, 4), (28, 2)]


def test_flags_for_out_of_range_open_wire_and_sensor_faults(
    board: BoardServer, make_driver: MakeDriver
) -> None:
    board_map = BoardRegisterMap(
        cell_count=18,
        cell_voltage_address=0,
        temperature_count=4,
        temperature_address=50,
        status_table="holding",
        open_wire_address=0,
        sensor_fault_address=2,
    )
    cells = [3300] * 18
    cells[1], cells[2], cells[3], cells[4] = 999, 1000, 4950, 4951
    cells[17] = 0
    board.set_registers(1, "input", 0, cells)
    board.set_registers(1, "input", 50, [250, 1300, 0xFE6E, 250])  # 25, 130, -40.2, 25 °C
    board.set_registers(1, "holding", 0, [1 << 5 | 1 << 1, 1 << 1])  # cells 1, 5 and 17
    board.set_registers(1, "holding", 2, [1 << 3])  # sensor 3

    reading = make_driver(board_map, (0,)).read(0)

    expected = [0] * 18
    expected[1] = ChannelFlag.OUT_OF_RANGE | ChannelFlag.OPEN_WIRE
    expected[4] = ChannelFlag.OUT_OF_RANGE
    expected[5] = ChannelFlag.OPEN_WIRE
    expected[17] = ChannelFlag.OUT_OF_RANGE | ChannelFlag.OPEN_WIRE
    assert reading.cell_flags == expected
    assert reading.cell_mv[:5] == [3300, 999, 1000, 4950, 4951]
    assert reading.temp_c == pytest.approx([25.0, 130.0, -40.2, 25.0])
    fault = ChannelFlag.SENSOR_FAULT
    assert reading.temp_flags == [0, fault, fault, fault]


def test_balancing_writes_coils(board: BoardServer, make_driver: MakeDriver) -> None:
    board_map = BoardRegisterMap(cell_count=6, balancing_coil_address=8)
    driver = make_driver(board_map)
    pattern = [True, False, True, True, False, True]

    driver.set_balancing(0, pattern, [False] * 6)
    driver.set_balancing(1, [False, True, False, False, False, False], [False] * 6)

    assert board.coils(1, 8, 6) == pattern
    assert board.coils(2, 8, 6) == [False, True, False, False, False, False]
    assert board.coils(1, 0, 8) == [False] * 8  # nothing outside the map's coils
    assert board.coils(1, 14, 8) == [False] * 8

    driver.set_balancing(0, [False] * 6, [False] * 6)
    assert board.coils(1, 8, 6) == [False] * 6
    with pytest.raises(DriverError, match="the board has 6 cells"):
        driver.set_balancing(0, [], [])  # one switch per cell, never an empty list


def test_charge_request_is_refused_by_a_passive_board(
    board: BoardServer, make_driver: MakeDriver
) -> None:
    driver = make_driver(BoardRegisterMap(cell_count=3))
    with pytest.raises(DriverError, match="no active balancer"):
        driver.set_balancing(0, [False, False, True], [True, False, False])
    with pytest.raises(DriverError, match="3 cells"):
        driver.set_balancing(0, [True, False], [False] * 3)
    assert board.coils(1, 0, 3) == [False] * 3
    assert not [r for r in board.requests if r.function_code == 15]


def test_exception_response_becomes_driver_error(
    board: BoardServer, make_driver: MakeDriver
) -> None:
    board_map = BoardRegisterMap(cell_count=4, cell_voltage_address=REGISTERS + 50)
    driver = make_driver(board_map)

    with pytest.raises(DriverError) as info:
        driver.read(1)
    message = str(info.value)
    assert "module 1 (unit id 2)" in message
    assert f"register {REGISTERS + 50}" in message
    assert "ILLEGAL_ADDRESS" in message

    with pytest.raises(DriverError, match="coil 500"):
        make_driver(BoardRegisterMap(cell_count=2, balancing_coil_address=500)).set_balancing(
            0, [True, True], [False, False]
        )


def test_silent_unit_times_out(board: BoardServer, make_driver: MakeDriver) -> None:
    board_map = BoardRegisterMap(cell_count=2, unit_id_base=1)
    board.set_registers(1, "input", 0, [3300, 3301])
    driver = make_driver(board_map, (0, 9))  # module 9 = unit id 10: nobody there

    start = time.monotonic()
    with pytest.raises(DriverError, match=r"module 9 \(unit id 10\).*no valid reply") as info:
        driver.read(9)
    assert time.monotonic() - start < 2.0
    assert "register 0" in str(info.value)
    assert isinstance(info.value.__cause__, Exception)
    # The line is usable again right after the timeout.
    assert driver.read(0).cell_mv == [3300, 3301]


def test_unknown_module_and_closed_driver(make_driver: MakeDriver) -> None:
    driver = make_driver(BoardRegisterMap(cell_count=2), (0,))
    with pytest.raises(DriverError, match="module 3 is not configured"):
        driver.read(3)
    driver.close()
    with pytest.raises(DriverError, match="closed"):
        driver.read(0)


def test_reopens_the_port_after_it_dropped(tmp_path: Path) -> None:
    pair = SocatLink(tmp_path)
    pair.start()
    servers = [BoardServer(pair.board, (1,))]
    driver = ModbusBoardDriver(settings(pair.agent), BoardRegisterMap(cell_count=2), (0,))
    try:
        servers[-1].set_registers(1, "input", 0, [3456, 3457])
        assert driver.read(0).cell_mv == [3456, 3457]

        pair.stop()  # both pty ends vanish, like an unplugged USB adapter
        with pytest.raises(DriverError, match=r"unit id 1\).*unavailable"):
            driver.read(0)

        # pymodbus' serial server does not reopen a vanished port, so a new board takes over.
        servers.pop().stop()
        pair.start()
        servers.append(BoardServer(pair.board, (1,)))
        servers[-1].set_registers(1, "input", 0, [3500, 3501])
        assert driver.read(0).cell_mv == [3500, 3501]
    finally:
        driver.close()
        for server in servers:
            server.stop()
        pair.stop()
