"""DBC loading and range-checked encoding of CAN frames (pure, no bus I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from importlib import resources

import cantools
from cantools.database.can import Database, Message, Signal

DBC_NAMES = ("victron_0x35x", "pylon_v12")


class FrameEncodeError(ValueError):
    """A frame could not be built from the given values."""


@cache
def load_dbc(name: str) -> Database:
    """The DBC `services/can_gateway/dbc/<name>.dbc`, parsed once."""
    if name not in DBC_NAMES:
        raise FrameEncodeError(f"unknown DBC {name!r}; choose one of {', '.join(DBC_NAMES)}")
    text = resources.files("services.can_gateway").joinpath("dbc", f"{name}.dbc").read_text("utf-8")
    db = cantools.database.load_string(text, database_format="dbc", strict=True)
    if not isinstance(db, Database):  # load_string may also return a diagnostics database
        raise FrameEncodeError(f"{name}.dbc is not a CAN database")
    return db


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


def clamp_values(message: Message, values: Mapping[str, float]) -> dict[str, float]:
    """Every signal of `message` clamped into its range; raises on missing, extra or NaN values."""
    names = [s.name for s in message.signals]
    missing = [n for n in names if n not in values]
    extra = sorted(set(values) - set(names))
    where = f"frame 0x{message.frame_id:03X} ({message.name})"
    if missing or extra:
        raise FrameEncodeError(f"{where}: missing signals {missing}, unknown signals {extra}")
    out: dict[str, float] = {}
    for signal in message.signals:
        value = float(values[signal.name])
        if math.isnan(value):
            raise FrameEncodeError(f"{where}: signal {signal.name} is NaN")
        lo, hi = signal_range(signal)
        out[signal.name] = min(max(value, lo), hi)
    return out


def encode(db: Database, frame_id: int, values: Mapping[str, float]) -> tuple[int, bytes]:
    """(frame id, payload) with the values clamped into their ranges, encoded strictly."""
    message = db.get_message_by_frame_id(frame_id)
    data = message.encode(clamp_values(message, values), scaling=True, strict=True)
    return frame_id, bytes(data)


def ascii_values(text: str, pad: str = " ") -> dict[str, float]:
    """Signals Char0..Char7 of an 8-character ASCII frame (truncated, padded with `pad`)."""
    raw = text.encode("ascii", errors="replace")[:8].ljust(8, pad.encode("ascii"))
    return {f"Char{i}": float(b) for i, b in enumerate(raw)}
