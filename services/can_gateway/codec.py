"""DBC loading and range-checked encoding of CAN frames (pure, no bus I/O).

A value outside its signal's range is refused (`FrameRangeError`), never clamped: a clamped
voltage or current would tell the inverter something false. `None` is "unknown" and goes out
as the signal's not-available raw value, which the DBC defines per signal (attribute
`NotAvailableRaw`); a signal without one cannot carry an unknown value, so its frame is refused
(the caller withholds it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache

from cantools.database.can import Database, Message, Signal

from shared.dbc import packaged_dbc

DBC_NAMES = ("victron_0x35x", "pylon_v12", "pylon_hv", "native")
NOT_AVAILABLE_ATTRIBUTE = "NotAvailableRaw"

Frame = tuple[int, bytes]
Values = Mapping[str, float | None]


class FrameEncodeError(ValueError):
    """A frame could not be built from the given values."""


class FrameRangeError(FrameEncodeError):
    """A value lies outside the range its frame can carry; the frame must be withheld."""

    def __init__(self, frame_id: int, signal: str, value: float, span: tuple[float, float]):
        super().__init__(
            f"frame 0x{frame_id:03X}: {signal} = {value:g} is outside {span[0]:g}..{span[1]:g}; "
            f"the frame is withheld, not clamped"
        )
        self.frame_id = frame_id
        self.signal = signal


@cache
def load_dbc(name: str) -> Database:
    """The DBC `services/can_gateway/dbc/<name>.dbc`, parsed once."""
    if name not in DBC_NAMES:
        raise FrameEncodeError(f"unknown DBC {name!r}; choose one of {', '.join(DBC_NAMES)}")
    try:
        return packaged_dbc("services.can_gateway", name)
    except TypeError as exc:
        raise FrameEncodeError(str(exc)) from exc


def signal_range(signal: Signal) -> tuple[float, float]:
    """Physical range of a signal: the DBC [min|max], or what its raw bits can hold."""
    if signal.is_signed:
        raw_lo, raw_hi = -(2 ** (signal.length - 1)), 2 ** (signal.length - 1) - 1
    else:
        raw_lo, raw_hi = 0, 2**signal.length - 1
    ends = (raw_lo * signal.scale + signal.offset, raw_hi * signal.scale + signal.offset)
    lo = signal.minimum if signal.minimum is not None else min(ends)
    hi = signal.maximum if signal.maximum is not None else max(ends)
    return float(lo), float(hi)


def not_available(signal: Signal) -> float | None:
    """The physical value of the signal's not-available raw value, if the DBC defines one."""
    attributes = signal.dbc.attributes if signal.dbc is not None else {}
    attribute = attributes.get(NOT_AVAILABLE_ATTRIBUTE)
    if attribute is None:
        return None
    return float(attribute.value) * signal.scale + signal.offset


def checked_values(message: Message, values: Values) -> dict[str, float]:
    """`values` ready to encode: each in range, unknowns as not-available; raises otherwise."""
    names = {s.name for s in message.signals}
    where = f"frame 0x{message.frame_id:03X} ({message.name})"
    extra = sorted(set(values) - names)
    if extra:
        raise FrameEncodeError(f"{where}: unknown signals {extra}")
    out: dict[str, float] = {}
    for name, value in values.items():
        signal = message.get_signal_by_name(name)
        if value is None:
            na = not_available(signal)
            if na is None:
                raise FrameEncodeError(f"{where}: {name} is unknown and has no not-available value")
            out[name] = na
            continue
        value = float(value)
        if math.isnan(value):
            raise FrameEncodeError(f"{where}: signal {name} is NaN")
        lo, hi = signal_range(signal)
        # half a step of tolerance: the value rounds to a raw value inside the range
        slack = abs(signal.scale) / 2
        if not lo - slack < value < hi + slack:
            raise FrameRangeError(message.frame_id, name, value, (lo, hi))
        out[name] = value
    return out


def encode(db: Database, frame_id: int, values: Values) -> Frame:
    """(frame id, payload), every signal given; raises `FrameRangeError` beyond a range."""
    message = db.get_message_by_frame_id(frame_id)
    plain = [s.name for s in message.signals if not s.multiplexer_ids and not s.is_multiplexer]
    missing = [n for n in plain if n not in values]
    if missing:
        raise FrameEncodeError(f"frame 0x{frame_id:03X}: missing signals {missing}")
    data = message.encode(checked_values(message, values), scaling=True, strict=False)
    return frame_id, bytes(data)


def encode_group(db: Database, frame_id: int, group: int, values: Values) -> Frame:
    """One multiplexed frame: the multiplexer set to `group` and that group's signals."""
    message = db.get_message_by_frame_id(frame_id)
    mux = next(s.name for s in message.signals if s.is_multiplexer)
    checked = checked_values(message, values)
    data = message.encode({mux: group, **checked}, scaling=True, strict=False)
    return frame_id, bytes(data)


def ascii_values(text: str, pad: str = " ") -> dict[str, float | None]:
    """Signals Char0..Char7 of an 8-character ASCII frame (truncated, padded with `pad`)."""
    raw = text.encode("ascii", errors="replace")[:8].ljust(8, pad.encode("ascii"))
    return {f"Char{i}": float(b) for i, b in enumerate(raw)}


class FrameBatch:
    """The frames of one cycle, built one by one: a refused frame is withheld with its reason,
    the others still go out."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.frames: list[Frame] = []
        self.refused: list[FrameEncodeError] = []

    def add(self, frame_id: int, values: Values) -> None:
        try:
            self.frames.append(encode(self.db, frame_id, values))
        except FrameEncodeError as err:
            self.refused.append(err)

    def add_group(self, frame_id: int, group: int, values: Values) -> None:
        try:
            self.frames.append(encode_group(self.db, frame_id, group, values))
        except FrameEncodeError as err:
            self.refused.append(err)
