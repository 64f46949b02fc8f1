"""Telemetry payloads built straight from plain values: the bytes `encode(CellTelemetry(...))`
gives, without the model's construction and dump (issue 19: a pydantic round per module per
0.1 s was a tenth of the agent's CPU).

`telemetry_fields` answers only for values the model would take as they are (exact types,
inside the contract's bounds); for anything else it answers None and the caller goes the
model's way, which validates (and refuses) exactly as before. `fast_rack_telemetry` packs the
agent's samples of one step in one `RackTelemetry` message. tests/slave_agent/test_telemetry.py
checks, by property, that both ways give the same bytes.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgpack

from shared import SCHEMA_VERSION
from shared.messages.slave import (
    MAX_CELLS_PER_MODULE,
    MAX_MODULES,
    MAX_TEMPS_PER_MODULE,
    ChannelFlag,
)

CELL_MV_MAX: Final = 6000
"""`CellMillivolts`' upper bound."""
TEMP_C_MIN: Final = -60.0
TEMP_C_MAX: Final = 200.0
"""`CelsiusReading`'s bounds."""
FLAGS_MAX: Final = int(ChannelFlag.OPEN_WIRE | ChannelFlag.OUT_OF_RANGE | ChannelFlag.SENSOR_FAULT)
TIMESTAMP_MAX: Final = 1.0e10
INT64_MAX: Final = 2**63 - 1
_BOOT_ID: Final = re.compile(r"[0-9a-f]{8,32}")
_MODES: Final = frozenset({"working", "standby"})


def _ints_within(values: list[int], high: int) -> bool:
    """Every value a plain int in 0..high (a bool or an IntFlag is no plain int)."""
    if not values:
        return True
    return set(map(type, values)) == {int} and min(values) >= 0 and max(values) <= high


def fast_rack_telemetry(
    *, source: str, seq: int, ts: float, samples: list[dict[str, Any]]
) -> bytes:
    """The `RackTelemetry` payload of samples that `telemetry_fields` (or a validated model's
    `stamped`) gave, in rising module order, stamped with the agent's own `seq` and `ts`."""
    return _pack(
        {"schema_version": SCHEMA_VERSION, "source": source, "seq": seq, "ts": ts,
         "samples": samples}
    )  # fmt: skip


def _pack(fields: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def telemetry_fields(
    *,
    source: str,
    seq: int,
    ts: float,
    module: int,
    mode: str,
    sample_ts: float,
    cell_mv: list[int],
    cell_flags: list[int],
    balancing: list[bool],
    temp_c: list[float],
    temp_flags: list[int],
    overruns: int,
    boot_id: str,
) -> dict[str, Any] | None:
    """The `CellTelemetry` payload's fields stamped with `source`, `seq` and `ts`, in the
    model's order, or None when a value is not one the model would take unchanged (then build
    the model: it says what is wrong).

    `seq` is the message's own sequence number (the agent counts it per module); `source` and
    `ts` are what the bus stamps (its service name and clock)."""
    n = len(cell_mv)
    plain = (
        type(module) is int
        and 0 <= module < MAX_MODULES
        and type(mode) is str
        and mode in _MODES
        and type(sample_ts) is float
        and 0.0 <= sample_ts <= TIMESTAMP_MAX
        and type(cell_mv) is list
        and type(cell_flags) is list
        and type(balancing) is list
        and type(temp_c) is list
        and type(temp_flags) is list
        and 1 <= n <= MAX_CELLS_PER_MODULE
        and len(cell_flags) == n
        and len(balancing) == n
        and len(temp_c) <= MAX_TEMPS_PER_MODULE
        and len(temp_flags) == len(temp_c)
        and _ints_within(cell_mv, CELL_MV_MAX)
        and _ints_within(cell_flags, FLAGS_MAX)
        and _ints_within(temp_flags, FLAGS_MAX)
        and all(type(b) is bool for b in balancing)
        # NaN fails both comparisons, infinities the bounds
        and all(type(t) is float and TEMP_C_MIN <= t <= TEMP_C_MAX for t in temp_c)
        and type(overruns) is int
        and 0 <= overruns <= INT64_MAX
        and type(seq) is int
        and 0 <= seq <= INT64_MAX
        and type(boot_id) is str
        and _BOOT_ID.fullmatch(boot_id) is not None
        and type(source) is str
        and type(ts) is float
    )
    if not plain:
        return None
    # the model's field order, envelope first (Message.stamped)
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "seq": seq,
        "ts": ts,
        "module": module,
        "mode": mode,
        "sample_ts": sample_ts,
        "cell_mv": cell_mv,
        "cell_flags": cell_flags,
        "balancing": balancing,
        "temp_c": temp_c,
        "temp_flags": temp_flags,
        "overruns": overruns,
        "boot_id": boot_id,
    }
