"""The adapter around pymodbus: refused requests become exception PDUs, counters and at most
one log line per minute and kind; the RTU framer drops bytes that waited through a silence.
No sockets: the framers are fed bytes directly, with a fake clock."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from services.modbus_gateway.conformance import RTU_SILENCE_S, crc16
from services.modbus_gateway.guard import (
    GuardedDecoder,
    GuardedRtuFramer,
    GuardedSocketFramer,
    RefusedRequest,
    RequestGuard,
)
from shared.log_limit import LimitedLog


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def make_guard(clock: Clock, interface: str = "rtu") -> RequestGuard:
    return RequestGuard(interface, Counter(), LimitedLog(logging.getLogger("modbus_gateway"),
                        clock=clock))  # fmt: skip


def adu(unit: int, pdu: bytes) -> bytes:
    frame = bytes([unit]) + pdu
    return frame + crc16(frame).to_bytes(2, "little")


def rtu_framer(guard: RequestGuard, clock: Clock) -> GuardedRtuFramer:
    framer = GuardedRtuFramer(GuardedDecoder(guard))
    framer.clock = clock
    return framer


def test_a_refused_request_answers_its_exception_on_its_own_code() -> None:
    guard = make_guard(Clock())
    pdu = GuardedDecoder(guard).decode(bytes([17]))
    assert isinstance(pdu, RefusedRequest)
    reply = asyncio.run(pdu.datastore_update(None, 1))  # type: ignore[arg-type]
    assert isinstance(reply, ExceptionResponse)
    assert (reply.function_code, reply.exception_code) == (0x91, 1)
    assert guard.counters == Counter({"rtu_requests_refused": 1, "rtu_refused_illegal_function": 1})


def test_a_served_request_is_decoded_by_pymodbus() -> None:
    pdu = GuardedDecoder(make_guard(Clock())).decode(bytes.fromhex("03 9c40 0002"))
    assert isinstance(pdu, ReadHoldingRegistersRequest) and (pdu.address, pdu.count) == (40000, 2)


def test_refusals_are_logged_once_a_minute_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modbus_gateway")
    clock = Clock()
    decoder = GuardedDecoder(make_guard(clock, "tcp"))
    for _ in range(100):
        decoder.decode(bytes.fromhex("03 9c40 0000"))
        decoder.decode(bytes([17]))
    assert len(caplog.records) == 2
    first = caplog.records[0].getMessage()
    assert first == (
        "Modbus TCP: function code 3 refused (quantity outside the function's range: quantity "
        "0, not 1–125), exception 03 (1 so far, 1 refused in all)"
    )
    clock.now_s += 61
    decoder.decode(bytes.fromhex("03 9c40 0000"))
    assert len(caplog.records) == 3 and "(101 so far, 201 refused in all)" in (
        caplog.records[2].getMessage()
    )
    assert decoder.guard.counters["tcp_refused_illegal_quantity"] == 101


def test_an_exception_code_as_request_is_dropped_by_the_framer() -> None:
    clock = Clock()
    framer = rtu_framer(make_guard(clock), clock)
    frame = adu(1, bytes([0x83, 2]))
    assert framer.handleFrame(frame, 0, 0) == (len(frame), None)
    tcp = GuardedSocketFramer(GuardedDecoder(make_guard(clock, "tcp")))
    mbap = bytes.fromhex("0001 0000 0003 01 83 02")
    assert tcp.handleFrame(mbap, 0, 0) == (len(mbap), None)


def test_a_request_behind_an_unanswered_frame_in_the_same_read_is_served() -> None:
    """Found by bench/chaos.py: pymodbus takes one frame per read and keeps the rest until more
    bytes arrive; a dropped frame ended that call, so the request behind it (a pipelining
    client, or two frames in one TCP segment) waited for the client's next request."""
    clock = Clock()
    tcp = GuardedSocketFramer(GuardedDecoder(make_guard(clock, "tcp")))
    silent = bytes.fromhex("0001 0000 0007 01 ee5045e4da96")
    read = bytes.fromhex("0002 0000 0006 01 03 0000 0001")
    used, pdu = tcp.handleFrame(silent + read, 0, 0)
    assert used == len(silent + read)
    assert isinstance(pdu, ReadHoldingRegistersRequest) and pdu.transaction_id == 2
    framer = rtu_framer(make_guard(clock), clock)
    frames = adu(1, bytes([0x83, 2])) + adu(1, bytes.fromhex("03 0000 0001"))
    used, pdu = framer.handleFrame(frames, 0, 0)
    assert used == len(frames) and isinstance(pdu, ReadHoldingRegistersRequest)


def test_rtu_bytes_held_through_a_silence_are_dropped() -> None:
    clock = Clock()
    guard = make_guard(clock)
    framer = rtu_framer(guard, clock)
    partial = bytes([1, 3, 0x9C])
    assert framer.handleFrame(partial, 0, 0) == (0, None)  # waits for the rest
    clock.now_s += RTU_SILENCE_S / 2
    assert framer.handleFrame(partial + b"\x40", 0, 0) == (0, None)  # still one frame
    clock.now_s += 2 * RTU_SILENCE_S
    odd = adu(1, bytes([0x41]))
    used, pdu = framer.handleFrame(partial + b"\x40" + odd, 0, 0)
    assert used == 4 + len(odd) and isinstance(pdu, RefusedRequest) and pdu.function_code == 0x41
    assert guard.counters["rtu_noise_dropped"] == 1


def test_rtu_a_frame_split_across_reads_within_the_silence_is_kept() -> None:
    clock = Clock()
    framer = rtu_framer(make_guard(clock), clock)
    frame = adu(1, bytes.fromhex("03 9c40 0002"))
    assert framer.handleFrame(frame[:3], 0, 0) == (0, None)
    clock.now_s += RTU_SILENCE_S / 2
    used, pdu = framer.handleFrame(frame, 0, 0)
    assert used == len(frame) and isinstance(pdu, ReadHoldingRegistersRequest)
    assert pdu.dev_id == 1 and pdu.count == 2
