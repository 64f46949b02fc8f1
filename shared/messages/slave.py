"""Payloads published by and to slave modules."""

from __future__ import annotations

from enum import IntFlag
from itertools import pairwise
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from shared.bounds import list_item_bytes, max_encoded_bytes
from shared.config.limits import CELLS_IN_SERIES_MAX as MAX_CELLS_IN_SERIES
from shared.config.limits import CELLS_PER_MODULE_MAX, MODULES_MAX, TEMP_SENSORS_PER_MODULE_MAX
from shared.messages.envelope import Message, Timestamp, TopicLevel

# Every list of a slave payload is bounded by the hardware (shared/config/limits.py).
MAX_CELLS_PER_MODULE = CELLS_PER_MODULE_MAX
MAX_TEMPS_PER_MODULE = TEMP_SENSORS_PER_MODULE_MAX
MAX_MODULES = MODULES_MAX

CellMillivolts = Annotated[int, Field(ge=0, le=6000)]
"""A measured cell voltage in mV; readings outside 1000–4950 mV carry OUT_OF_RANGE."""
CelsiusReading = Annotated[float, Field(ge=-60.0, le=200.0, allow_inf_nan=False)]
ModuleIndex = Annotated[int, Field(ge=0, lt=MAX_MODULES)]
SlaveMode = Literal["working", "standby"]


class ChannelFlag(IntFlag):
    """Measurement flags of one cell-voltage or temperature channel (bit mask)."""

    NONE = 0
    OPEN_WIRE = 1
    OUT_OF_RANGE = 2
    SENSOR_FAULT = 4


ChannelFlags = Annotated[
    int,
    Field(
        ge=0, le=int(ChannelFlag.OPEN_WIRE | ChannelFlag.OUT_OF_RANGE | ChannelFlag.SENSOR_FAULT)
    ),
]


class CellTelemetry(Message):
    """One sample of every cell and temperature sensor of a module."""

    module: ModuleIndex
    mode: SlaveMode
    sample_ts: Timestamp
    cell_mv: list[CellMillivolts] = Field(
        min_length=1, max_length=MAX_CELLS_PER_MODULE, fail_fast=True
    )
    cell_flags: list[ChannelFlags] = Field(max_length=MAX_CELLS_PER_MODULE, fail_fast=True)
    balancing: list[bool] = Field(max_length=MAX_CELLS_PER_MODULE, fail_fast=True)
    temp_c: list[CelsiusReading] = Field(max_length=MAX_TEMPS_PER_MODULE, fail_fast=True)
    temp_flags: list[ChannelFlags] = Field(max_length=MAX_TEMPS_PER_MODULE, fail_fast=True)
    overruns: int = Field(0, ge=0)
    """Samples that missed their slot since the agent started."""
    boot_id: str | None = Field(None, min_length=8, max_length=32, pattern=r"^[0-9a-f]+$")
    """Random per start of the agent: with the envelope's `seq` (per module, counted by the
    agent) it orders the samples, so the master refuses replays. None: a publisher that does
    not say (then only the sample's age is checked)."""

    @model_validator(mode="after")
    def _lengths_match(self) -> Self:
        n = len(self.cell_mv)
        if len(self.cell_flags) != n or len(self.balancing) != n:
            raise ValueError(
                f"cell_flags ({len(self.cell_flags)}) and balancing ({len(self.balancing)}) "
                f"must have one entry per cell ({n})"
            )
        if len(self.temp_flags) != len(self.temp_c):
            raise ValueError(
                f"temp_flags ({len(self.temp_flags)}) must have one entry per sensor "
                f"({len(self.temp_c)})"
            )
        return self


class RackTelemetry(Message):
    """One sample of every module an agent hosts, in one message (`slaves/{modules}/telemetry`).

    Each entry is the module's own `CellTelemetry`, envelope included: its `seq` counts that
    module's samples, as on the per-module topic. The envelope of the whole counts the agent's
    messages on its topic. One message per sample instead of one per module: the broker's and
    each subscriber's cost is per message (issue 19)."""

    samples: list[CellTelemetry] = Field(min_length=1, max_length=MAX_MODULES, fail_fast=True)

    @model_validator(mode="after")
    def _one_system(self) -> Self:
        modules = [s.module for s in self.samples]
        if any(b <= a for a, b in pairwise(modules)):
            raise ValueError(f"samples must be in rising module order, each once: {modules}")
        total = sum(len(s.cell_mv) for s in self.samples)
        if total > MAX_CELLS_IN_SERIES:
            raise ValueError(f"{total} cells exceed the {MAX_CELLS_IN_SERIES} cells of a system")
        return self

    @classmethod
    def max_encoded_bytes(cls) -> int:
        """The largest: every module with every temperature sensor, but at most
        `MAX_CELLS_IN_SERIES` cells in all (the per-list bounds alone would allow 196 x 196)."""
        per_cell = sum(
            list_item_bytes(CellTelemetry, f) for f in ("cell_mv", "cell_flags", "balancing")
        )
        surplus = MAX_MODULES * MAX_CELLS_PER_MODULE - MAX_CELLS_IN_SERIES
        return max_encoded_bytes(cls) - surplus * per_cell


class SlaveStatus(Message):
    """Retained presence of a module; the agent's last will sets it offline."""

    module: ModuleIndex
    state: Literal["online", "offline"]
    mode: SlaveMode | None = None
    driver: str = Field("", max_length=32)
    service: TopicLevel | None = None


class BalanceCommand(Message):
    """Which cells of a module to balance, valid until `expires_at`.

    `discharge` bleeds a cell (passive) or takes charge from it (active); `charge` feeds a cell
    from the active DC/DC converter. An expired or malformed command is refused by the slave.
    """

    module: ModuleIndex
    expires_at: Timestamp
    discharge: list[bool] = Field(max_length=MAX_CELLS_PER_MODULE, fail_fast=True)
    charge: list[bool] = Field(
        default_factory=list, max_length=MAX_CELLS_PER_MODULE, fail_fast=True
    )
    reason: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _no_cell_both_ways(self) -> Self:
        if self.charge and len(self.charge) != len(self.discharge):
            raise ValueError("charge and discharge must have one entry per cell")
        both = [
            i for i, (d, c) in enumerate(zip(self.discharge, self.charge, strict=False)) if d and c
        ]
        if both:
            raise ValueError(f"cells {both} are asked to charge and discharge at once")
        return self


class SlaveModeCommand(Message):
    """Retained operating mode for every slave of a system."""

    mode: SlaveMode
