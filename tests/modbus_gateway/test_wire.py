"""Raw requests on the wire, TCP and RTU (a socat pty pair), against the gateway's own servers
(`ModbusGateway._start`): every function code 1–127, every count edge, byte-count mismatches
and truncated PDUs get the reply the MODBUS Application Protocol V1.1b3 requires, no
traceback is logged, and refused requests are counted and logged at most once per minute.

Run inside a private network namespace (see the helper rules): the TCP server listens on
127.0.0.1 at a free port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from services.modbus_gateway.register_map import Command, register_map
from services.modbus_gateway.server import GatewayData
from services.modbus_gateway.service import ModbusGateway
from services.modbus_gateway.settings import ModbusGatewaySettings
from shared.broker import free_port
from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from tests.modbus_gateway.test_register_map import IDENTITY, make_cells, make_pack

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")

UNIT = 1
SUNS = 40000
CONFIG = SystemConfig.from_preset("NMC", system_id="wire", modules=7, cells_per_module=14)
POINTS = {(p.model, p.name): p.address for p in register_map(CONFIG).points}
ALMRST = POINTS[(802, "AlmRst")]
NO_REPLY = b""


def crc16(frame: bytes) -> bytes:
    """CRC-16/MODBUS, low byte first (MODBUS over Serial Line V1.02 §6.2.2)."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


class Wire:
    """Blocking raw clients for the gateway's TCP server and RTU pty."""

    def __init__(self, port: int, tty: str) -> None:
        self.port = port
        self.fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
        self.tid = 0

    def tcp(self, pdu: bytes, unit: int = UNIT, timeout_s: float = 3.0) -> bytes:
        """The reply PDU (without the MBAP header), or b"" when none comes in `timeout_s`."""
        self.tid = (self.tid + 1) & 0xFFFF
        adu = struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, unit) + pdu
        return self.tcp_raw(adu, timeout_s)

    def tcp_raw(self, adu: bytes, timeout_s: float = 3.0) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as sock:
            sock.sendall(adu)
            return _read_mbap(sock, timeout_s)

    def rtu(self, pdu: bytes, unit: int = UNIT, timeout_s: float = 3.0) -> bytes:
        """The reply PDU (without unit id and CRC), or b"" when none comes in `timeout_s`."""
        adu = bytes([unit]) + pdu
        return self.rtu_raw(adu + crc16(adu), timeout_s)

    def rtu_raw(self, adu: bytes, timeout_s: float = 3.0) -> bytes:
        os.write(self.fd, adu)
        reply = b""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                break
            reply += os.read(self.fd, 512)
            if len(reply) >= 4 and crc16(reply[:-2]) == reply[-2:]:
                assert reply[0] == UNIT, reply.hex(" ")
                return reply[1:-2]
        assert reply == b"", f"no complete RTU reply: {reply.hex(' ')}"
        return NO_REPLY

    def close(self) -> None:
        os.close(self.fd)


def _read_mbap(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    try:
        while len(data) < 6 or len(data) < 6 + int.from_bytes(data[4:6], "big"):
            chunk = sock.recv(512)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data[7:]


class Harness:
    """The gateway's TCP and RTU servers on an event loop in a thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.pair = str(tmp_path / "gw"), str(tmp_path / "client")
        self.socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.pair[0]}", f"pty,raw,echo=0,link={self.pair[1]}"],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not all(Path(p).exists() for p in self.pair):
            assert time.monotonic() < deadline, "socat made no pty pair"
            time.sleep(0.05)
        self.commands: list[Command] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        bus = InMemoryBus(InMemoryBroker(), system="wire", service="modbus_gateway", kind="t")
        self.gateway = ModbusGateway(ModbusGatewaySettings.model_validate({}), bus)
        data = GatewayData(CONFIG, IDENTITY, 1e9)
        data.update_pack(make_pack())
        data.update_cells(make_cells())
        self.gateway.data = data

        async def send(command: Command) -> str | None:
            self.commands.append(command)
            return None

        self.gateway.send = send  # type: ignore[method-assign]
        self.port = free_port()
        modbus = CONFIG.interfaces.modbus.model_copy(
            update=dict(
                tcp_enabled=True, tcp_host="127.0.0.1", tcp_port=self.port, rtu_enabled=True,
                rtu_port=self.pair[0], rtu_baudrate=19200, rtu_parity="N", rtu_stop_bits=1,
                unit_id=UNIT,
            )
        )  # fmt: skip
        self.servers = [self.run(self.gateway._start(name, modbus)) for name in ("tcp", "rtu")]
        self.wire = Wire(self.port, self.pair[1])

    @property
    def counters(self) -> Any:
        return self.gateway.bus.counters

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.wire.close()
        for server in self.servers:
            self.run(server.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.socat.kill()
        self.socat.wait()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("wire"))
    yield h
    h.close()


@pytest.fixture(params=["tcp", "rtu"])
def ask(harness: Harness, request: pytest.FixtureRequest) -> Callable[..., bytes]:
    send: Callable[..., bytes] = getattr(harness.wire, request.param)
    return send


def exc(fc: int, code: int) -> bytes:
    return bytes([fc | 0x80, code])


def read(fc: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", fc, address, count)


def write_multiple(address: int, values: list[int], count: int | None = None,
                   byte_count: int | None = None) -> bytes:  # fmt: skip
    count = len(values) if count is None else count
    byte_count = 2 * len(values) if byte_count is None else byte_count
    return struct.pack(f">BHHB{len(values)}H", 16, address, count, byte_count, *values)


# --- every function code --------------------------------------------------------------------

SERVED = {3, 4, 6, 16}


def expected_for_probe(fc: int) -> bytes:
    """The reply to `fc 00 00 00 01`: unsupported codes 01; address 0 is not mapped (02); FC16
    needs a byte count after the quantity, so these 4 bytes are a truncated request (03)."""
    if fc not in SERVED:
        return exc(fc, 1)
    return exc(fc, 3) if fc == 16 else exc(fc, 2)


def test_every_function_code_gets_the_reply_the_specification_requires(
    ask: Callable[..., bytes],
) -> None:
    replies = {fc: ask(bytes([fc, 0, 0, 0, 1])) for fc in range(1, 128)}
    wrong = {
        fc: r.hex(" ") for fc, r in replies.items() if r != expected_for_probe(fc)
    }  # fmt: skip
    assert wrong == {}


@pytest.mark.parametrize("fc", range(1, 128))
def test_a_bare_function_code_is_answered_on_its_own_code(
    ask: Callable[..., bytes], fc: int
) -> None:
    """Only the function code, no data: 01 when not served, else 03 (malformed)."""
    assert ask(bytes([fc])) == exc(fc, 3 if fc in SERVED else 1)


def test_identification_and_diagnostics_are_not_served(ask: Callable[..., bytes]) -> None:
    """FC17 told "Pymodbus", FC43/14 a vendor, FC8 with an unknown sub-function logged a
    traceback: none of them is in the documented map."""
    assert ask(bytes([17])) == exc(17, 1)
    assert ask(bytes.fromhex("2b 0e 01 00")) == exc(43, 1)
    assert ask(bytes.fromhex("08 0000 1234")) == exc(8, 1)
    assert ask(bytes.fromhex("08 0099 0000")) == exc(8, 1)
    assert ask(bytes.fromhex("07")) == exc(7, 1)
    assert ask(bytes.fromhex("0b")) == exc(11, 1)
    assert ask(bytes.fromhex("0c")) == exc(12, 1)
    assert ask(bytes.fromhex("18 9c40")) == exc(24, 1)
    assert ask(read(1, SUNS, 8)) == exc(1, 1)
    assert ask(bytes.fromhex("0f 9c40 0008 01 ff")) == exc(15, 1)
    assert ask(bytes.fromhex("16 9c40 ffff 0000")) == exc(22, 1)
    assert ask(bytes.fromhex("17 9c40 0002 9c40 0001 02 0001")) == exc(23, 1)


# --- count edges ------------------------------------------------------------------------------


@pytest.mark.parametrize("fc", [3, 4])
@pytest.mark.parametrize(
    ("count", "ok"), [(0, False), (1, True), (125, True), (126, False), (0xFFFF, False)]
)
def test_read_count_edges(ask: Callable[..., bytes], fc: int, count: int, ok: bool) -> None:
    reply = ask(read(fc, SUNS, count))
    if ok:
        assert reply[:2] == bytes([fc, 2 * count]) and len(reply) == 2 + 2 * count
        assert reply[2:6] == b"SunS"[: 2 * count] or count == 1
    else:
        assert reply == exc(fc, 3)


def test_a_read_beyond_the_address_space_is_an_illegal_address(ask: Callable[..., bytes]) -> None:
    assert ask(read(3, 0xFFFF, 2)) == exc(3, 2)
    assert ask(read(4, 30000, 2)) == exc(4, 2)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, exc(16, 3)),
        (1, bytes.fromhex("10") + struct.pack(">HH", ALMRST, 1)),  # accepted: a command
        (123, exc(16, 2)),  # a valid quantity; the range holds read-only registers
        (124, exc(16, 3)),
    ],
)
def test_write_multiple_count_edges(
    harness: Harness, ask: Callable[..., bytes], count: int, expected: bytes
) -> None:
    before = len(harness.commands)
    assert ask(write_multiple(ALMRST, [1] * count)) == expected
    assert len(harness.commands) == before + (1 if count == 1 else 0)


@pytest.mark.parametrize(
    "pdu",
    [
        write_multiple(ALMRST, [1], byte_count=4),  # byte count says 2 registers
        write_multiple(ALMRST, [1], byte_count=0),
        write_multiple(ALMRST, [1, 1], count=1),  # 1 register, 4 data bytes
        write_multiple(ALMRST, [1], count=2, byte_count=2),
        write_multiple(ALMRST, [1]) + b"\x00",  # a trailing byte
        write_multiple(ALMRST, [1])[:-1],  # a data byte missing
    ],
    ids=["bc4-q1", "bc0-q1", "q1-4bytes", "q2-bc2", "trailing", "short"],
)
def test_byte_count_mismatches_are_illegal_data_values(
    harness: Harness, ask: Callable[..., bytes], pdu: bytes
) -> None:
    before = len(harness.commands)
    assert ask(pdu) == exc(16, 3)
    assert len(harness.commands) == before  # nothing executed


VALID = {
    3: read(3, SUNS, 2),
    4: read(4, SUNS, 2),
    6: struct.pack(">BHH", 6, ALMRST, 1),
    16: write_multiple(ALMRST, [1]),
}


@pytest.mark.parametrize("fc", sorted(VALID))
def test_truncated_and_overlong_pdus_are_illegal_data_values(
    ask: Callable[..., bytes], fc: int
) -> None:
    whole = VALID[fc]
    for cut in range(1, len(whole)):
        assert ask(whole[:cut]) == exc(fc, 3), whole[:cut].hex(" ")
    assert ask(whole + b"\x00") == exc(fc, 3)
    assert ask(whole)[:1] == bytes([fc])  # and the whole request is served


def test_a_valid_read_still_reads_the_map(ask: Callable[..., bytes]) -> None:
    assert ask(read(3, SUNS, 2)) == bytes.fromhex("03 04") + b"SunS"
    assert ask(read(4, SUNS, 2)) == bytes.fromhex("04 04") + b"SunS"


def test_a_modbus_client_reads_the_full_charge_request(harness: Harness) -> None:
    """pymodbus reads the native FullChargeReq register over TCP as the pack state changes."""
    address = register_map(CONFIG).by_key["native.FullChargeReq"].address
    client = ModbusTcpClient("127.0.0.1", port=harness.port, timeout=3)
    assert client.connect()
    try:
        for requested, raw in ((True, 1), (False, 0), (None, 0xFFFF)):
            harness.gateway.data.update_pack(make_pack(full_charge_requested=requested))
            reply = client.read_holding_registers(address, count=1, device_id=UNIT)
            assert not reply.isError() and reply.registers == [raw], requested
    finally:
        client.close()
        harness.gateway.data.update_pack(make_pack())


# --- no reply where the specification allows none ------------------------------------------


@pytest.mark.parametrize("fc", [0x80, 0x83, 0x90, 0xFF])
def test_a_function_code_reserved_for_exceptions_gets_no_reply(
    ask: Callable[..., bytes], fc: int
) -> None:
    assert ask(bytes([fc, 2]), timeout_s=0.5) == NO_REPLY
    assert ask(read(3, SUNS, 2)) == bytes.fromhex("03 04") + b"SunS"


def test_function_code_0_is_an_illegal_function(ask: Callable[..., bytes]) -> None:
    assert ask(bytes([0, 0, 0, 0, 1])) == exc(0, 1)


def test_rtu_a_refused_broadcast_gets_no_reply(harness: Harness) -> None:
    for pdu in (bytes([17]), read(3, SUNS, 0), write_multiple(ALMRST, [1], byte_count=4)):
        assert harness.wire.rtu(pdu, unit=0, timeout_s=0.5) == NO_REPLY
    assert harness.wire.rtu(read(3, SUNS, 2)) == bytes.fromhex("03 04") + b"SunS"


def test_rtu_requests_for_other_units_get_no_reply_even_when_refused(harness: Harness) -> None:
    for pdu in (bytes([17]), read(3, SUNS, 0), bytes([0x83, 2])):
        assert harness.wire.rtu(pdu, unit=7, timeout_s=0.5) == NO_REPLY
    assert harness.wire.rtu(read(3, SUNS, 2)) == bytes.fromhex("03 04") + b"SunS"


def test_rtu_finds_frames_after_noise(harness: Harness) -> None:
    """A noise byte before a request, an unknown function code: each still answered."""
    good = bytes([UNIT]) + read(3, SUNS, 2)
    assert harness.wire.rtu_raw(b"\x55" + good + crc16(good)) == bytes.fromhex("03 04") + b"SunS"
    odd = bytes([UNIT, 0x41, 1, 2, 3, 4, 5, 6, 7])
    assert harness.wire.rtu_raw(odd + crc16(odd)) == exc(0x41, 1)


def test_rtu_bytes_that_formed_no_frame_are_dropped_after_a_silence(harness: Harness) -> None:
    """A partial frame, then silence: RTU ends a frame with silence, so the next request
    (here of an unknown function code, framed by its CRC alone) is not glued to it."""
    before = harness.counters["rtu_noise_dropped"]
    os.write(harness.wire.fd, bytes([UNIT, 0x03, 0x9C]))
    time.sleep(0.3)
    odd = bytes([UNIT, 0x41, 1, 2, 3])
    assert harness.wire.rtu_raw(odd + crc16(odd)) == exc(0x41, 1)
    assert harness.counters["rtu_noise_dropped"] == before + 1


def test_tcp_a_frame_of_another_protocol_is_dropped_and_the_connection_serves_on(
    harness: Harness,
) -> None:
    other = struct.pack(">HHHB", 9, 1, 6, UNIT) + read(3, SUNS, 2)  # protocol id 1
    good = struct.pack(">HHHB", 10, 0, 6, UNIT) + read(3, SUNS, 2)
    with socket.create_connection(("127.0.0.1", harness.port), timeout=3) as sock:
        sock.sendall(other)
        time.sleep(0.2)
        sock.sendall(good)
        reply = _read_mbap(sock, 3.0)
    assert reply == bytes.fromhex("03 04") + b"SunS"


# --- logs and counters ------------------------------------------------------------------------


def test_no_traceback_and_a_bounded_log_for_a_flood_of_bad_requests(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = harness.counters["tcp_requests_refused"]
    for _ in range(50):
        assert harness.wire.tcp(read(3, SUNS, 0)) == exc(3, 3)
        assert harness.wire.tcp(bytes.fromhex("08 0099 0000")) == exc(8, 1)
    assert harness.counters["tcp_requests_refused"] - before == 100
    assert harness.counters["tcp_refused_illegal_quantity"] >= 50
    assert harness.counters["tcp_refused_illegal_function"] >= 50
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("Traceback" in r.getMessage() for r in caplog.records)
    assert len(warnings) <= 2, [r.getMessage() for r in warnings]


def test_rtu_refusals_are_counted_per_interface(harness: Harness) -> None:
    before = harness.counters["rtu_requests_refused"]
    assert harness.wire.rtu(bytes([17])) == exc(17, 1)
    assert harness.counters["rtu_requests_refused"] == before + 1
