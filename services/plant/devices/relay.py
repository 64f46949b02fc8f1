"""A simulated Modbus relay module: coils drive contactors whose auxiliary contacts follow.

A pymodbus server (TCP, or RTU on a serial port such as one end of a socat pty pair) on its own
event loop in a thread. Input `wiring[coil]` follows coil `coil` after `follow_delay_s`; a change
back before the delay cancels the move. Faults: `weld(input)` (reads closed whatever the coil),
`stick_open(input)` (reads open), `silent = True` (answers nothing), `dead_coils` (a coil output
that stays off whatever is written).

With `follow=False` the inputs do not follow the coils by themselves: the plant service reads the
coils and writes the inputs from its contactor physics (`exchange`), once per step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

UNIT: Final = 1
COILS: Final = 8
"""Coils and discrete inputs 0-7; higher addresses answer ILLEGAL_ADDRESS."""
FC_COILS, FC_INPUTS = 1, 2
TICK_S: Final = 0.002
COIL_WRITES_KEPT: Final = 10_000
"""A plant runs for days: only the latest coil writes are kept."""
T = TypeVar("T")


class RelayModule:
    """The server side; `start_tcp` or `start_rtu` opens it, `stop` closes it."""

    def __init__(
        self,
        *,
        follow_delay_s: float = 0.02,
        wiring: dict[int, int] | None = None,
        unit: int = UNIT,
        size: int = COILS,
        follow: bool = True,
    ):
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.unit = unit
        self.size = size
        self.follow = follow
        self.follow_delay_s = follow_delay_s
        self.wiring = wiring if wiring is not None else {i: i for i in range(COILS)}
        self.silent = False
        self.welded: set[int] = set()
        self.stuck_open: set[int] = set()
        self.dead_coils: set[int] = set()
        self.coil_writes: deque[tuple[float, int, bool]] = deque(maxlen=COIL_WRITES_KEPT)
        """(monotonic time, coil, value) of the latest coil writes the module received."""
        self._contacts = [False] * size
        self._pending: dict[int, tuple[bool, float]] = {}  # input -> (target, due time)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay-module")
        self._thread.start()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._follower: asyncio.Task[None] | None = None

    def _device(self) -> SimDevice:
        bits = [False] * self.size
        return SimDevice(
            id=self.unit,
            simdata=(
                [SimData(address=0, values=list(bits), datatype=DataType.BITS)],
                [SimData(address=0, values=list(bits), datatype=DataType.BITS)],
                [SimData(address=0, values=[0] * 4, datatype=DataType.REGISTERS)],
                [SimData(address=0, values=[0] * 4, datatype=DataType.REGISTERS)],
            ),
        )

    def start_tcp(self, port: int, host: str = "127.0.0.1") -> None:
        async def start() -> ModbusTcpServer:
            server = ModbusTcpServer(
                self._device(),
                address=(host, port),
                trace_packet=self._gate,
                trace_pdu=self._record,
            )
            await server.serve_forever(background=True)
            return server

        self._server = self._call(start())
        if self.follow:
            self._call(self._start_follower())

    def start_rtu(self, port: str, baudrate: int) -> None:
        async def start() -> ModbusSerialServer:
            server = ModbusSerialServer(
                self._device(),
                port=port,
                baudrate=baudrate,
                parity="N",
                reconnect_delay=0.1,
                trace_packet=self._gate,
                trace_pdu=self._record,
            )
            await server.serve_forever(background=True)
            return server

        self._server = self._call(start())
        if self.follow:
            self._call(self._start_follower())

    def _gate(self, sending: bool, data: bytes) -> bytes:
        return b"" if sending and self.silent else data

    def _record(self, sending: bool, pdu: Any) -> Any:
        if not sending and pdu.function_code in (5, 15):
            values = pdu.bits if pdu.function_code == 15 else [pdu.bits[0]]
            for i, value in enumerate(values):
                self.coil_writes.append((time.monotonic(), pdu.address + i, bool(value)))
            if pdu.function_code == 5 and pdu.address in self.dead_coils:
                pdu.bits = [False]
        return pdu

    async def _start_follower(self) -> None:
        self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        assert self._server is not None
        while True:
            coils = await self._server.async_getValues(self.unit, FC_COILS, 0, self.size)
            now = time.monotonic()
            for coil, contact in self.wiring.items():
                target = bool(coils[coil])
                pending = self._pending.get(contact)
                if target == self._contacts[contact]:
                    self._pending.pop(contact, None)
                elif pending is None or pending[0] != target:
                    self._pending[contact] = (target, now + self.follow_delay_s)
                elif now >= pending[1]:
                    self._contacts[contact] = target
                    del self._pending[contact]
            shown = [
                (c or i in self.welded) and i not in self.stuck_open
                for i, c in enumerate(self._contacts)
            ]
            await self._server.async_setValues(self.unit, FC_INPUTS, 0, shown)
            await asyncio.sleep(TICK_S)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=5.0)

    def coils(self) -> list[bool]:
        assert self._server is not None
        values = self._call(self._server.async_getValues(self.unit, FC_COILS, 0, self.size))
        return [bool(v) for v in values]

    def inputs(self) -> list[bool]:
        assert self._server is not None
        values = self._call(self._server.async_getValues(self.unit, FC_INPUTS, 0, self.size))
        return [bool(v) for v in values]

    def exchange(self, inputs: dict[int, bool]) -> list[bool]:
        """Set discrete inputs (address -> closed) and read every coil, in one round trip.

        `welded` / `stuck_open` still apply on top (the module's own faults)."""
        server = self._server
        assert server is not None

        async def swap() -> list[bool]:
            for address, closed in inputs.items():
                shown = (closed or address in self.welded) and address not in self.stuck_open
                await server.async_setValues(self.unit, FC_INPUTS, address, [shown])
            coils = await server.async_getValues(self.unit, FC_COILS, 0, self.size)
            return [bool(v) for v in coils]

        return self._call(swap())

    def weld(self, contact: int) -> None:
        self.welded.add(contact)

    def stick_open(self, contact: int) -> None:
        self.stuck_open.add(contact)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._follower is not None:
                self._follower.cancel()
            if self._server is not None:
                await self._server.shutdown()  # type: ignore[no-untyped-call]

        try:
            self._call(shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)
            self._loop.close()
