"""Make a pymodbus 3.16 server answer every request as the Modbus specification requires.

pymodbus 3.16.1 answers a request it cannot decode (a count of 0 or above 125, a truncated PDU,
an unknown function code) with `80 01`, serves function codes the register map does not
document (7, 8, 11, 12, 17 with "Pymodbus", 20, 21, 24, 43), logs a traceback for FC 8 with an
unknown sub-function, cannot frame an unknown function code on RTU, and stalls a TCP
connection on a frame of another protocol. `guard_server` replaces the server's decoder (and
its framer) before it serves: each request is checked against the pure decision table in
`conformance` first; a refused one becomes a `RefusedRequest`, whose `datastore_update`
returns the exception, so pymodbus sends it on the request's own function code (and sends
nothing for a broadcast or, on RTU, for another unit id, as before). Every refusal is counted
(`<interface>_requests_refused`, `<interface>_refused_<reason>`) and logged at most once a
minute per reason and function code.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pymodbus.datastore import ModbusServerContext
from pymodbus.framer.base import FramerBase
from pymodbus.framer.rtu import FramerRTU
from pymodbus.framer.socket import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from services.modbus_gateway.conformance import (
    REASONS,
    RTU_SILENCE_S,
    Refusal,
    check_mbap,
    refusal,
    scan_rtu,
)
from shared.log_limit import LimitedLog

log = logging.getLogger("modbus_gateway")


@dataclass
class RequestGuard:
    """Counts and logs the requests one interface refuses."""

    interface: str
    counters: Counter[str]
    limited: LimitedLog

    def refused(self, r: Refusal) -> None:
        total = self.count("requests_refused")
        n = self.count(f"refused_{r.reason}")
        reason = REASONS[r.reason]
        code = reason.exception_code
        reply = "no reply" if code is None else f"exception {code:02d}"
        self.limited.warning(
            f"{self.interface}:{r.reason}:{r.function_code}",
            "Modbus %s: function code %d refused (%s%s), %s (%d so far, %d refused in all)",
            self.interface.upper(),
            r.function_code,
            reason.says,
            f": {r.detail}" if r.detail else "",
            reply,
            n,
            total,
        )

    def dropped(self, reason: str, size: int) -> None:
        n = self.count(reason)
        self.limited.warning(
            f"{self.interface}:{reason}",
            "Modbus %s: %d bytes dropped (%s; %d so far)",
            self.interface.upper(),
            size,
            reason.replace("_", " "),
            n,
        )

    def count(self, what: str) -> int:
        key = f"{self.interface}_{what}"
        self.counters[key] += 1
        return self.counters[key]


class RefusedRequest(ModbusPDU):
    """A request answered with an exception without touching the datastore."""

    def __init__(self, function_code: int, exception_code: int) -> None:
        super().__init__()
        self.function_code = function_code
        self.exception_code = exception_code

    async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
        return ExceptionResponse(self.function_code, self.exception_code)


class Unanswered(ModbusPDU):
    """A request that gets no reply; the framers drop it before pymodbus handles it."""


class GuardedDecoder(DecodePDU):
    def __init__(self, guard: RequestGuard) -> None:
        super().__init__(True)
        self.guard = guard

    def decode(self, frame: bytes) -> ModbusPDU | None:
        refused = refusal(frame)
        if refused is None:
            pdu = super().decode(frame)
            if pdu is not None:
                return pdu
            refused = Refusal(frame[0], "undecodable", frame.hex(" "))
        self.guard.refused(refused)
        if refused.exception_code is None:
            return Unanswered()
        return RefusedRequest(refused.function_code, refused.exception_code)


def _guard_of(framer: FramerBase) -> RequestGuard:
    assert isinstance(framer.decoder, GuardedDecoder)
    return framer.decoder.guard


class _DropUnanswered(FramerBase):
    def handleFrame(  # noqa: N802  (pymodbus's name)
        self, data: bytes, exp_devid: int, exp_tid: int
    ) -> tuple[int, ModbusPDU | None]:
        """pymodbus takes one frame per read and keeps the rest until more bytes arrive: after
        a dropped frame, go on with the next one in the same read, or a request behind it
        would wait for the client's next send."""
        used, pdu = super().handleFrame(data, exp_devid, exp_tid)
        while isinstance(pdu, Unanswered):
            more, pdu = super().handleFrame(data[used:], exp_devid, exp_tid)
            used += more
        return used, pdu


class GuardedSocketFramer(_DropUnanswered, FramerSocket):
    """Modbus TCP: drops a frame of another protocol and an impossible length (see
    `check_mbap`), and a request that gets no reply."""

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        check = check_mbap(data)
        if check is None:
            return super().decode(data)
        if check.drop:
            _guard_of(self).dropped(check.reason, check.drop)
        return check.drop, 0, 0, self.EMPTY


class GuardedRtuFramer(_DropUnanswered, FramerRTU):
    """Modbus RTU: frames any function code (see `scan_rtu`); bytes that waited
    `RTU_SILENCE_S` without forming a frame are a dead frame and dropped; noise is counted."""

    clock: Callable[[], float] = time.monotonic

    def __init__(self, decoder: DecodePDU) -> None:
        super().__init__(decoder)
        self._held = 0
        """Bytes left in the receive buffer by the last call (they start the next one)."""
        self._last_s = 0.0

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        now_s = self.clock()
        dead = min(self._held, len(data)) if now_s - self._last_s >= RTU_SILENCE_S else 0
        self._last_s = now_s
        scan = scan_rtu(data[dead:])
        skip = dead + scan.skip
        if skip:
            _guard_of(self).dropped("noise_dropped", skip)
        if scan.end is None:
            self._held = len(data) - skip
            return skip, 0, 0, self.EMPTY
        end = dead + scan.end
        self._held = len(data) - end
        return end, data[skip], 0, data[skip + 1 : end - 2]


def guard_server(server: ModbusTcpServer | ModbusSerialServer, guard: RequestGuard) -> None:
    """Install the guarded decoder and framer; call before `serve_forever`."""
    server.decoder = GuardedDecoder(guard)
    server.framer = (
        GuardedRtuFramer if isinstance(server, ModbusSerialServer) else GuardedSocketFramer
    )
