"""The decision table: which request gets which reply (MODBUS Application Protocol V1.1b3),
RTU frame boundaries and MBAP checks. The wire tests (test_wire.py) run the same cases
through the real servers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from services.modbus_gateway.conformance import (
    REASONS,
    RTU_MAX_ADU,
    SERVED,
    MbapCheck,
    RtuScan,
    check_mbap,
    crc16,
    expected_len,
    refusal,
    scan_rtu,
)


def reply(pdu: bytes) -> int | str | None:
    """The exception code `pdu` gets, None for no reply, "served" when it is served."""
    r = refusal(pdu)
    return "served" if r is None else r.exception_code


def adu(unit: int, pdu: bytes) -> bytes:
    frame = bytes([unit]) + pdu
    return frame + crc16(frame).to_bytes(2, "little")


# --- function codes ---------------------------------------------------------------------------


def test_the_served_set_is_the_documented_map() -> None:
    """Reads with FC3/FC4, writes with FC6/FC16; no coils, no diagnostics, no identification."""
    assert sorted(SERVED) == [3, 4, 6, 16]


@given(st.integers(0, 127).filter(lambda fc: fc not in SERVED), st.binary(max_size=252))
def test_every_other_function_code_is_an_illegal_function(fc: int, data: bytes) -> None:
    r = refusal(bytes([fc]) + data)
    assert r is not None and (r.function_code, r.exception_code) == (fc, 1)


@given(st.integers(128, 255), st.binary(max_size=252))
def test_a_function_code_reserved_for_exceptions_gets_no_reply(fc: int, data: bytes) -> None:
    assert reply(bytes([fc]) + data) is None


def test_an_empty_pdu_is_malformed() -> None:
    assert reply(b"") == 3


# --- quantities, byte counts and lengths ----------------------------------------------------


@pytest.mark.parametrize("fc", [3, 4])
@pytest.mark.parametrize(
    ("count", "expected"), [(0, 3), (1, "served"), (125, "served"), (126, 3), (0xFFFF, 3)]
)
def test_read_counts(fc: int, count: int, expected: int | str) -> None:
    assert reply(struct.pack(">BHH", fc, 40000, count)) == expected


def fc16(count: int, byte_count: int | None = None, data_len: int | None = None) -> bytes:
    byte_count = 2 * count if byte_count is None else byte_count
    data_len = byte_count if data_len is None else data_len
    return struct.pack(">BHHB", 16, 40000, count, byte_count & 0xFF) + bytes(data_len)


@pytest.mark.parametrize(
    ("pdu", "reason"),
    [
        (fc16(0), "illegal_quantity"),
        (fc16(1), None),
        (fc16(123), None),
        (fc16(124), "illegal_quantity"),  # a quantity out of range comes first (§6.12)
        (fc16(1, byte_count=4), "byte_count_mismatch"),
        (fc16(2, byte_count=2), "byte_count_mismatch"),
        (fc16(1, byte_count=0), "byte_count_mismatch"),
        (fc16(1, data_len=1), "length_mismatch"),
        (fc16(1, data_len=3), "length_mismatch"),
        (fc16(1)[:5], "length_mismatch"),  # no byte count
    ],
)
def test_write_multiple_quantity_byte_count_and_length(pdu: bytes, reason: str | None) -> None:
    r = refusal(pdu)
    assert (r and r.reason) == reason
    if r is not None:
        assert r.exception_code == 3


VALID = {
    3: struct.pack(">BHH", 3, 40000, 2),
    4: struct.pack(">BHH", 4, 40000, 2),
    6: struct.pack(">BHH", 6, 40000, 0xFFFF),
    16: fc16(2),
}


@pytest.mark.parametrize("fc", sorted(VALID))
def test_a_truncated_or_overlong_served_request_is_an_illegal_data_value(fc: int) -> None:
    whole = VALID[fc]
    assert reply(whole) == "served"
    for cut in range(1, len(whole)):
        assert refusal(whole[:cut]) is not None and reply(whole[:cut]) == 3, cut
    assert reply(whole + b"\x00") == 3


def test_every_reason_names_a_reply() -> None:
    assert {r.exception_code for r in REASONS.values()} <= {None, 1, 2, 3, 4}


@st.composite
def near_requests(draw: st.DrawFn) -> bytes:
    """Served function codes with quantities, byte counts and lengths near their limits."""
    fc = draw(st.sampled_from(sorted(SERVED)))
    quantity = draw(st.sampled_from([0, 1, 2, 122, 123, 124, 125, 126, 0xFFFF]))
    byte_count = draw(st.sampled_from([2 * quantity & 0xFF, draw(st.integers(0, 255))]))
    head = struct.pack(">BHH", fc, draw(st.integers(0, 0xFFFF)), quantity)
    body = bytes([byte_count]) + bytes(byte_count) if fc == 16 else b""
    pdu = head + body
    return pdu[: draw(st.integers(1, len(pdu) + 2))] + bytes(draw(st.integers(0, 2)))


@given(near_requests())
def test_whatever_the_table_serves_pymodbus_decodes_alike(pdu: bytes) -> None:
    """The table never lets through a request pymodbus would answer with `80 01`, and lets
    through only requests of the exact length."""
    if refusal(pdu) is not None:
        return
    decoded = DecodePDU(True).decode(pdu)
    assert decoded is not None and decoded.function_code == pdu[0]
    assert decoded.address == int.from_bytes(pdu[1:3], "big")
    assert expected_len(pdu) == len(pdu)


@given(near_requests())
def test_pymodbus_fails_on_what_the_table_refuses_for_its_quantity(pdu: bytes) -> None:
    """Why the table exists: pymodbus cannot decode a read of a quantity out of range, so it
    answers `80 01` where exception 03 on the request's function code is due."""
    r = refusal(pdu)
    if r is not None and r.reason == "illegal_quantity" and pdu[0] in (3, 4):
        assert DecodePDU(True).decode(pdu) is None


@given(st.integers(0, 0xFFFF), st.integers(1, 125), st.lists(st.integers(0, 0xFFFF),
       min_size=1, max_size=123))  # fmt: skip
def test_what_a_pymodbus_client_sends_is_served(
    address: int, count: int, values: list[int]
) -> None:
    requests = [
        ReadHoldingRegistersRequest(address=address, count=count),
        ReadInputRegistersRequest(address=address, count=count),
        WriteSingleRegisterRequest(address=address, registers=values[:1]),
        WriteMultipleRegistersRequest(address=address, registers=values),
    ]
    for request in requests:
        pdu = bytes([request.function_code]) + request.encode()
        assert refusal(pdu) is None, pdu.hex(" ")


# --- RTU framing ------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_crc16_is_the_modbus_crc(data: bytes) -> None:
    assert crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")
    assert crc16(b"123456789") == 0x4B37  # the CRC-16/MODBUS check value


@given(st.integers(0, 247), st.sampled_from(sorted(VALID)))
def test_a_whole_served_frame_is_found(unit: int, fc: int) -> None:
    frame = adu(unit, VALID[fc])
    assert scan_rtu(frame) == RtuScan(0, len(frame))


def test_any_function_code_is_framed_by_its_crc() -> None:
    odd = adu(1, bytes([0x41, 1, 2, 3, 4, 5, 6, 7]))
    assert scan_rtu(odd) == RtuScan(0, len(odd))
    assert scan_rtu(adu(1, bytes([17]))) == RtuScan(0, 4)


def test_a_truncated_request_is_framed_at_its_crc() -> None:
    short = adu(1, VALID[3][:3])
    assert scan_rtu(short) == RtuScan(0, len(short))


def test_noise_before_a_frame_is_skipped() -> None:
    frame = adu(1, VALID[3])
    assert scan_rtu(b"\x55\xaa" + frame) == RtuScan(2, 2 + len(frame))


def test_only_the_first_of_two_frames_is_taken() -> None:
    first, second = adu(1, VALID[3]), adu(1, VALID[16])
    assert scan_rtu(first + second) == RtuScan(0, len(first))


def test_a_partial_frame_waits() -> None:
    frame = adu(1, VALID[16])
    assert scan_rtu(frame[:-1]) == RtuScan(0)
    assert scan_rtu(frame[:3]) == RtuScan(0)


def test_a_served_frame_longer_than_256_bytes_is_framed_by_its_length() -> None:
    """FC16 with 124 registers (a 257-byte frame) is framed, so it can be answered 03."""
    frame = adu(1, fc16(124))
    assert len(frame) == 257 and scan_rtu(frame) == RtuScan(0, 257)


def test_noise_without_a_frame_is_dropped_beyond_the_longest_frame() -> None:
    noise = b"\x55" * 300  # no stretch of it ends in its own CRC
    scan = scan_rtu(noise)
    assert scan.end is None and len(noise) - scan.skip == RTU_MAX_ADU - 1
    assert scan_rtu(noise[: RTU_MAX_ADU - 1]) == RtuScan(0)


def test_an_unknown_function_code_after_noise_waits_for_the_silence_to_drop_the_noise() -> None:
    """Only served functions are hunted for past the start (as pymodbus does); the adapter
    drops what waited `RTU_SILENCE_S`, and then the frame is at the start."""
    odd = adu(1, bytes([0x41, 1, 2, 3]))
    assert scan_rtu(b"\x55" + odd) == RtuScan(0)
    assert scan_rtu(odd) == RtuScan(0, len(odd))


# --- MBAP -------------------------------------------------------------------------------------


def mbap(protocol: int, length: int, rest: bytes = b"") -> bytes:
    return struct.pack(">HHHB", 1, protocol, length, 1) + rest


@pytest.mark.parametrize(
    ("buf", "expected"),
    [
        (mbap(0, 6, VALID[3]), None),
        (mbap(0, 6, VALID[3])[:5], None),  # no header yet
        (mbap(1, 6, VALID[3]), MbapCheck(12, "mbap_protocol_not_modbus")),
        (mbap(1, 6, VALID[3][:2]), MbapCheck(0, "mbap_protocol_not_modbus")),  # wait
        (mbap(0, 1), MbapCheck(7, "mbap_length_invalid")),
        (mbap(0, 0xFFFF, VALID[3]), MbapCheck(12, "mbap_length_invalid")),
        (mbap(0, 255, fc16(124)), None),  # framed; the PDU check answers 03
    ],
)
def test_mbap_checks(buf: bytes, expected: MbapCheck | None) -> None:
    assert check_mbap(buf) == expected


# --- docs -------------------------------------------------------------------------------------


def test_the_docs_list_the_function_codes_from_the_table() -> None:
    from services.modbus_gateway import docgen

    md, _ = docgen.render()
    section = md[md.index("## Function codes") : md.index("## SunSpec marker")]
    for fc, layout in SERVED.items():
        assert f"| {fc} | {layout.name} |" in section
    for key, r in REASONS.items():
        code = "no reply" if r.exception_code is None else f"{r.exception_code:02d}"
        assert f"| `{key}` | {r.says} | {code} |" in section
    assert "answered 01: 0–2, 5, 7–15, 17–127." in section
