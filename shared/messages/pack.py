"""Pack-level state published by the master."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.bounds import list_item_bytes, max_encoded_bytes
from shared.config.limits import CELLS_IN_SERIES_MAX as MAX_CELLS_IN_SERIES
from shared.messages.envelope import Message
from shared.messages.slave import (
    MAX_CELLS_PER_MODULE,
    MAX_MODULES,
    MAX_TEMPS_PER_MODULE,
    CelsiusReading,
    ChannelFlags,
    SlaveMode,
)

ContactorState = Literal["standby", "precharge", "closed", "opening", "fault"]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
PackVolts = Annotated[float, Field(ge=0.0, le=1200.0, allow_inf_nan=False)]
PACK_AMPS_MAX = 1000.0
"""Bound of a string's current and current limits on the bus (the hardware measures less,
`CURRENT_MAX_A`; the payload leaves room for other sensors)."""
PackAmps = Annotated[float, Field(ge=-PACK_AMPS_MAX, le=PACK_AMPS_MAX, allow_inf_nan=False)]
CellVolts = Annotated[float, Field(ge=0.0, le=6.0, allow_inf_nan=False)]
NonNegAmps = Annotated[float, Field(ge=0.0, le=PACK_AMPS_MAX, allow_inf_nan=False)]
ModuleIndex = Annotated[int, Field(ge=0, lt=MAX_MODULES)]
Code = Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9_]{1,64}$")]


class CellLocation(BaseModel):
    """Where an extreme value sits: module and index within the module, both from 0 (module 0,
    index 2 is the cell people see as M1 · C3)."""

    model_config = ConfigDict(frozen=True, strict=True)

    module: int = Field(ge=0)
    index: int = Field(ge=0)


class Limits(BaseModel):
    """Limits for the inverter: positive magnitudes, with the reason that limits each."""

    model_config = ConfigDict(frozen=True, strict=True)

    charge_voltage_v: PackVolts
    discharge_voltage_v: PackVolts
    charge_current_a: NonNegAmps
    discharge_current_a: NonNegAmps
    charge_reason: str = Field("", max_length=64)
    discharge_reason: str = Field("", max_length=64)
    charge_voltage_reason: str = Field("", max_length=64)
    """Why the CVL has its value: full, lowered for a high cell, or ramping back
    (`shared.limit_reasons`; "" from a master that does not say)."""


class PackState(Message):
    """The state of one system (string of series cells), published at 10 Hz.

    `current` is positive while charging. Every measured or estimated value is None while it
    is unknown (before the first complete sample, while a module or the sensor is lost, before
    the estimator has started): a subscriber must never see a number that was not measured.
    """

    soc: Percent | None
    """None until the estimator has started from a complete pack."""
    soh: Percent | None
    soc_std: Percent | None = None
    """1-sigma uncertainty of `soc`, in % SOC: grows while counting, with the downtime of a
    restart and on a generic OCV table, shrinks at anchors and rested-OCV corrections. None
    while `soc` is None (and from a master before this field)."""
    since_anchor_s: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    """Seconds since the SOC was last set at a full charge or at empty (an anchor), the
    master's downtime included; None before the first anchor (or when a restart cannot tell
    how long it was down)."""
    full_charge_requested: bool | None = None
    """The master asks for a full charge, so that the SOC gets an anchor: the last one is
    `full_charge.interval_days` old (`services.master_core.full_charge`). False while no
    interval is configured, a fault is active or the charge limit is 0 A; None while the SOC is
    not estimated, or no anchor is known and the master has not yet run the interval without
    one (and from a master before this field)."""
    voltage: PackVolts | None
    """Measured pack voltage; None while the sensor is unknown."""
    current: PackAmps | None
    contactors: ContactorState
    mode: SlaveMode
    cell_v_min: CellVolts | None
    """Over the cells with a valid reading: stale modules and flagged channels are left out."""
    cell_v_max: CellVolts | None
    cell_v_avg: CellVolts | None
    cell_v_min_at: CellLocation | None = None
    cell_v_max_at: CellLocation | None = None
    sum_of_cells_v: PackVolts | None = None
    """Only when every cell is known: a partial sum is not a pack voltage."""
    temp_min_c: CelsiusReading | None = None
    temp_max_c: CelsiusReading | None = None
    temp_avg_c: CelsiusReading | None = None
    temp_min_at: CellLocation | None = None
    temp_max_at: CellLocation | None = None
    limits: Limits
    faults: list[Code] = Field(default_factory=list, max_length=64, fail_fast=True)
    alarms: list[Code] = Field(default_factory=list, max_length=64, fail_fast=True)
    warnings: list[Code] = Field(default_factory=list, max_length=64, fail_fast=True)
    stale_modules: list[ModuleIndex] = Field(
        default_factory=list, max_length=MAX_MODULES, fail_fast=True
    )
    energy_in_wh: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    """Energy charged since commissioning (sum over cells); None until the estimator runs."""
    energy_out_wh: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    equivalent_cycles: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    """Charge throughput / (2 x nominal capacity)."""
    balancing: str = Field("", max_length=200)
    """Why balancing runs, or why it does not."""
    dc_link_voltage: PackVolts | None = None
    """Measured DC-link (inverter side of the contactors) voltage; None while unknown."""
    current_offset_a: float | None = Field(None, allow_inf_nan=False)
    """The current sensor's zero offset, estimated while the string is open (the mean of the
    last `protection.current_offset_window_s`, what `current_offset_high` warns on); None
    until estimated."""
    current_zero_offset_a: float | None = Field(None, allow_inf_nan=False)
    """The zero offset the master has learned, slowly, while the string is open and at rest:
    subtracted from the current the SOC counts while within the sensor's specification
    (`current_sensor.zero_offset_max_a`). None until learned (and from a master before this
    field)."""
    cell_voltage_offset_max_v: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    """The largest per-channel cell-voltage offset the SOC counter subtracts (learned at the
    rests after full anchors, relative to the median of the cells, within the ±50 mV channel
    accuracy); None until a channel's offset is learned (and from a master before this
    field). Protection and balancing read the channels as they are."""

    @property
    def power_w(self) -> float | None:
        if self.voltage is None or self.current is None:
            return None
        return self.voltage * self.current


class ModuleCells(BaseModel):
    """The channels of one module, each in its own place; None where the value is unknown.

    A channel is unknown while its module is stale or missing (`fresh` False) and while the
    slave flags it (open wire, out of range, sensor fault; the flag stays beside it).
    """

    model_config = ConfigDict(frozen=True, strict=True)

    module: ModuleIndex
    fresh: bool
    """Telemetry within the module timeout."""
    cell_v: list[CellVolts | None] = Field(max_length=MAX_CELLS_PER_MODULE, fail_fast=True)
    cell_flags: list[ChannelFlags] = Field(max_length=MAX_CELLS_PER_MODULE, fail_fast=True)
    balancing: list[bool] = Field(max_length=MAX_CELLS_PER_MODULE, fail_fast=True)
    temp_c: list[CelsiusReading | None] = Field(max_length=MAX_TEMPS_PER_MODULE, fail_fast=True)
    temp_flags: list[ChannelFlags] = Field(max_length=MAX_TEMPS_PER_MODULE, fail_fast=True)

    @model_validator(mode="after")
    def _one_entry_per_channel(self) -> ModuleCells:
        # readers index one list by another; a short list would misplace every channel after it
        n = len(self.cell_v)
        if len(self.cell_flags) != n or len(self.balancing) != n:
            raise ValueError(
                f"module {self.module}: cell_v, cell_flags and balancing must have one entry per "
                f"cell; got {n}, {len(self.cell_flags)} and {len(self.balancing)}"
            )
        if len(self.temp_flags) != len(self.temp_c):
            raise ValueError(
                f"module {self.module}: temp_c and temp_flags must have one entry per sensor; "
                f"got {len(self.temp_c)} and {len(self.temp_flags)}"
            )
        return self


@dataclass(frozen=True)
class CellPoint:
    """One cell of a snapshot: where it sits, and its reading (None when unknown)."""

    series_index: int
    """0-based position in the string."""
    module: int
    index: int
    """0-based position within its module."""
    voltage_v: float | None
    flags: int
    balancing: bool


@dataclass(frozen=True)
class TempPoint:
    """One temperature sensor of a snapshot, at its own place (None when unknown)."""

    sensor_index: int
    """0-based position over the whole system, module by module."""
    module: int
    index: int
    temp_c: float | None
    flags: int


class CellSnapshot(Message):
    """Every cell voltage and temperature of the system, module by module, each channel in
    its own place. Read it through `cells()` and `temperatures()`."""

    modules: list[ModuleCells] = Field(max_length=MAX_MODULES, fail_fast=True)

    @model_validator(mode="after")
    def _in_module_order(self) -> CellSnapshot:
        wrong = [i for i, m in enumerate(self.modules) if m.module != i]
        if wrong:
            raise ValueError(f"modules must be listed in order 0..n-1; entries {wrong} are not")
        total = sum(len(m.cell_v) for m in self.modules)
        if total > MAX_CELLS_IN_SERIES:
            raise ValueError(f"{total} cells exceed the {MAX_CELLS_IN_SERIES} cells of a system")
        return self

    def cells(self) -> Iterator[CellPoint]:
        """Every cell in series order."""
        k = 0
        for m in self.modules:
            for i, (v, f, b) in enumerate(zip(m.cell_v, m.cell_flags, m.balancing, strict=True)):
                yield CellPoint(k, m.module, i, v, f, b)
                k += 1

    def temperatures(self) -> Iterator[TempPoint]:
        """Every temperature sensor, module by module, at its own place."""
        k = 0
        for m in self.modules:
            for i, (t, f) in enumerate(zip(m.temp_c, m.temp_flags, strict=True)):
                yield TempPoint(k, m.module, i, t, f)
                k += 1

    @classmethod
    def max_encoded_bytes(cls) -> int:
        """The largest snapshot: every module with every temperature sensor, but at most
        `MAX_CELLS_IN_SERIES` cells in all (the per-list bounds alone would allow 196 x 196)."""
        per_cell = sum(
            list_item_bytes(ModuleCells, f) for f in ("cell_v", "cell_flags", "balancing")
        )
        surplus = MAX_MODULES * MAX_CELLS_PER_MODULE - MAX_CELLS_IN_SERIES
        return max_encoded_bytes(cls) - surplus * per_cell

    @property
    def cell_count(self) -> int:
        return sum(len(m.cell_v) for m in self.modules)

    @property
    def temp_count(self) -> int:
        return sum(len(m.temp_c) for m in self.modules)
