"""Which requests the gateway serves, and the reply every other request gets (pure).

Sources: MODBUS Application Protocol Specification V1.1b3 (§4.1: function codes 1–127, 128–255
reserved for exception responses; §6.3, §6.4, §6.6, §6.12: request layouts and the state
diagrams that fix the order of the checks; §7: exception codes); MODBUS over Serial Line
V1.02 (§2.5.1.1: an RTU frame is at most 256 bytes; §6.2.2: CRC-16, low byte first); MODBUS
Messaging on TCP/IP Implementation Guide V1.0b (§3.1.3: the MBAP header, protocol id 0, the
length counts the unit id and the PDU, a PDU is at most 253 bytes).

`refusal(pdu)` decides from the tables below, before pymodbus decodes anything, so a request
pymodbus cannot decode never reaches its `80 01` fallback. The order follows the state
diagrams: the function code (01), then the quantity and the byte count, then the length of the
PDU (03); the address (02) and the execution (03 for a value the point refuses, 04 for a
command the master refuses) are checked later, against the register image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_VALUE = 0x03
SERVER_DEVICE_FAILURE = 0x04

EXCEPTION_BIT = 0x80
"""Function codes 128–255 are exception responses (§4.1): a request with one gets no reply,
since no reply code can be formed (fc + 0x80 overflows)."""

RTU_MIN_ADU = 4
"""Unit id, function code and CRC."""
RTU_MAX_ADU = 256
MBAP_LEN = 7
"""Transaction id, protocol id, length, unit id."""
RECEIVE_BUFFER = 516
"""pymodbus 3.16 empties a connection's receive buffer beyond this size."""


@dataclass(frozen=True)
class RequestLayout:
    """A served function's request PDU after the function code (big-endian 16-bit fields)."""

    name: str
    fields: tuple[str, ...]
    """The fixed 16-bit fields, in order (a byte count follows them when `counted`)."""
    quantity: tuple[int, int] | None
    """The allowed range of the `quantity` field, or None when the request has none."""
    counted: bool
    """A byte count follows the fixed fields; it must be 2 × quantity, and that many data
    bytes end the PDU."""
    writes: bool
    section: str
    """Where the specification defines it."""

    @property
    def fixed_len(self) -> int:
        """Bytes after the function code up to and including the byte count."""
        return 2 * len(self.fields) + (1 if self.counted else 0)


SERVED: Mapping[int, RequestLayout] = MappingProxyType(
    {
        3: RequestLayout(
            "Read Holding Registers", ("address", "quantity"), (1, 125), False, False, "§6.3"
        ),
        4: RequestLayout(
            "Read Input Registers", ("address", "quantity"), (1, 125), False, False, "§6.4"
        ),
        6: RequestLayout("Write Single Register", ("address", "value"), None, False, True, "§6.6"),
        16: RequestLayout(
            "Write Multiple Registers", ("address", "quantity"), (1, 123), True, True, "§6.12"
        ),
    }
)
"""The function codes the register map documents; every other code gets exception 01."""


@dataclass(frozen=True)
class Reason:
    exception_code: int | None
    """None: no reply."""
    says: str


REASONS: Mapping[str, Reason] = MappingProxyType(
    {
        "illegal_function": Reason(ILLEGAL_FUNCTION, "function code not served"),
        "illegal_quantity": Reason(ILLEGAL_DATA_VALUE, "quantity outside the function's range"),
        "byte_count_mismatch": Reason(ILLEGAL_DATA_VALUE, "byte count is not 2 × quantity"),
        "length_mismatch": Reason(
            ILLEGAL_DATA_VALUE,
            "PDU length does not match its fields (truncated, or bytes after them)",
        ),
        "exception_code_as_request": Reason(
            None, "function code 128–255 is reserved for exception responses"
        ),
        "undecodable": Reason(
            SERVER_DEVICE_FAILURE, "a well-formed request the Modbus library could not decode"
        ),
    }
)
"""Why a request is refused, with the exception it gets (counter suffix = key)."""


@dataclass(frozen=True)
class Refusal:
    function_code: int
    reason: str
    """A key of REASONS."""
    detail: str = ""

    @property
    def exception_code(self) -> int | None:
        return REASONS[self.reason].exception_code


def _field(pdu: bytes, layout: RequestLayout, name: str) -> int:
    at = 1 + 2 * layout.fields.index(name)
    return int.from_bytes(pdu[at : at + 2], "big")


def expected_len(pdu: bytes) -> int | None:
    """The length a served request with this beginning must have, or None when the function
    code is not served or the byte count has not arrived yet."""
    layout = SERVED.get(pdu[0]) if pdu else None
    if layout is None:
        return None
    fixed = 1 + layout.fixed_len
    if not layout.counted:
        return fixed
    return fixed + pdu[fixed - 1] if len(pdu) >= fixed else None


def refusal(pdu: bytes) -> Refusal | None:
    """Why `pdu` (function code and data) is refused, or None when it is a well-formed request
    for a served function."""
    if not pdu:
        return Refusal(0, "length_mismatch", "empty PDU")
    fc = pdu[0]
    if fc & EXCEPTION_BIT:
        return Refusal(fc, "exception_code_as_request")
    layout = SERVED.get(fc)
    if layout is None:
        return Refusal(fc, "illegal_function")
    fixed = 1 + layout.fixed_len
    if len(pdu) < fixed:
        return Refusal(fc, "length_mismatch", f"{len(pdu)} bytes, at least {fixed} needed")
    if layout.quantity is not None:
        low, high = layout.quantity
        quantity = _field(pdu, layout, "quantity")
        if not low <= quantity <= high:
            return Refusal(fc, "illegal_quantity", f"quantity {quantity}, not {low}–{high}")
        if layout.counted and pdu[fixed - 1] != 2 * quantity:
            return Refusal(
                fc, "byte_count_mismatch", f"byte count {pdu[fixed - 1]}, quantity {quantity}"
            )
    want = expected_len(pdu)
    if len(pdu) != want:
        return Refusal(fc, "length_mismatch", f"{len(pdu)} bytes, {want} expected")
    return None


# --- RTU framing ------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (Serial Line §6.2.2); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def _crc_end(buf: bytes, start: int, ends: range) -> int | None:
    """The first end in `ends` where buf[start:end] ends in its own CRC (the CRC of a frame
    with its CRC appended is 0)."""
    crc = 0xFFFF
    for at in range(start, min(len(buf), ends.stop - 1)):
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ buf[at]) & 0xFF]
        if crc == 0 and at + 1 in ends:
            return at + 1
    return None


@dataclass(frozen=True)
class RtuScan:
    """The first RTU frame in a receive buffer: `skip` bytes of noise before it, and its end
    (None when no complete frame is there yet; then `skip` bytes can be dropped for good)."""

    skip: int
    end: int | None = None


RTU_SILENCE_S = 0.05
"""Bytes held this long with no frame in them are a dead frame: RTU ends a frame with 3.5
character times of silence (2 ms at 19200 baud), USB adapters deliver with up to 16 ms of
latency, and a master waits far longer than 50 ms for a reply before it sends again."""


def scan_rtu(buf: bytes) -> RtuScan:
    """Find the first frame in `buf`.

    pymodbus finds a frame's end only from the length its function code implies, so it cannot
    frame an unknown code (it hunts byte by byte and never answers) nor a truncated request.
    Here a frame at the start of the buffer ends where its served function's length says when
    that length has arrived and its CRC matches, else at the first position where the CRC
    matches (any function code, any length up to 256 bytes). Later positions are tried only
    for served functions at their implied length, as pymodbus does (noise before a request
    in the same read). RTU delimits frames by silence, which the library does not report; the
    adapter drops bytes that waited `RTU_SILENCE_S` without forming a frame, so noise never
    hides an unknown function code for long. A CRC match is the only evidence of a frame end:
    a false one has a chance of 1 in 65536 per position tried, which arises only while a
    frame has arrived in part, or in noise.
    """
    for start in range(0, len(buf) - RTU_MIN_ADU + 1):
        want = expected_len(buf[start + 1 :])
        if want is not None:
            end = start + 1 + want + 2
            if _crc_end(buf, start, range(end, end + 1)) == end:
                return RtuScan(start, end)
        if start == 0 and (first := _crc_end(buf, 0, range(RTU_MIN_ADU, RTU_MAX_ADU + 1))):
            return RtuScan(0, first)
    return RtuScan(max(0, len(buf) - (RTU_MAX_ADU - 1)))


# --- Modbus TCP framing ----------------------------------------------------------------------


@dataclass(frozen=True)
class MbapCheck:
    """What to do with a buffer that starts with an MBAP header that pymodbus would mishandle:
    drop `drop` bytes for `reason` (a counter suffix); `drop` 0: wait for the rest of the
    frame."""

    drop: int
    reason: str


def check_mbap(buf: bytes) -> MbapCheck | None:
    """pymodbus waits forever on a frame whose protocol id is not 0 (logging each arrival)
    and on a length it will never receive. A frame of another protocol is dropped whole once
    it has arrived. A length below 2 (no function code) or one whose frame cannot fit the
    receive buffer leaves no boundary to trust, so the buffer is dropped. A length above 254
    (a PDU over 253 bytes) that fits is framed, and the PDU checks answer it (FC16 with 124
    registers: exception 03, as for any quantity out of range)."""
    if len(buf) < MBAP_LEN:
        return None
    length = int.from_bytes(buf[4:6], "big")
    if not 2 <= length <= RECEIVE_BUFFER - 6:
        return MbapCheck(len(buf), "mbap_length_invalid")
    if int.from_bytes(buf[2:4], "big") != 0:
        end = 6 + length
        return MbapCheck(end if len(buf) >= end else 0, "mbap_protocol_not_modbus")
    return None
