"""Pack-level state published by the master."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.messages.envelope import Message
from shared.messages.slave import MAX_CELLS_PER_MODULE, MAX_MODULES, CelsiusReading, SlaveMode

ContactorState = Literal["standby", "precharge", "closed", "opening", "fault"]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
PackVolts = Annotated[float, Field(ge=0.0, le=1200.0, allow_inf_nan=False)]
PackAmps = Annotated[float, Field(ge=-1000.0, le=1000.0, allow_inf_nan=False)]
CellVolts = Annotated[float, Field(ge=0.0, le=6.0, allow_inf_nan=False)]
NonNegAmps = Annotated[float, Field(ge=0.0, le=1000.0, allow_inf_nan=False)]
ModuleIndex = Annotated[int, Field(ge=0, lt=MAX_MODULES)]
Code = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]


class CellLocation(BaseModel):
    """Where an extreme value sits: module and index within the module."""

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


class PackState(Message):
    """The state of one system (string of series cells), published at 10 Hz.

    `current` is positive while charging.
    """

    soc: Percent
    soh: Percent
    voltage: PackVolts
    current: PackAmps
    contactors: ContactorState
    mode: SlaveMode
    cell_v_min: CellVolts
    cell_v_max: CellVolts
    cell_v_avg: CellVolts
    cell_v_min_at: CellLocation | None = None
    cell_v_max_at: CellLocation | None = None
    sum_of_cells_v: PackVolts = 0.0
    temp_min_c: CelsiusReading | None = None
    temp_max_c: CelsiusReading | None = None
    temp_avg_c: CelsiusReading | None = None
    temp_min_at: CellLocation | None = None
    temp_max_at: CellLocation | None = None
    limits: Limits
    faults: list[Code] = Field(default_factory=list, max_length=64)
    alarms: list[Code] = Field(default_factory=list, max_length=64)
    warnings: list[Code] = Field(default_factory=list, max_length=64)
    stale_modules: list[int] = Field(default_factory=list, max_length=MAX_CELLS_PER_MODULE)
    energy_in_wh: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    """Energy charged since commissioning (sum over cells)."""
    energy_out_wh: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    equivalent_cycles: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    """Charge throughput / (2 x nominal capacity)."""
    balancing: str = Field("", max_length=200)
    """Why balancing runs, or why it does not."""


class CellSnapshot(Message):
    """Every cell voltage and temperature of the system, in series order."""

    cell_v: list[CellVolts] = Field(max_length=MAX_CELLS_PER_MODULE)
    temp_c: list[CelsiusReading | None] = Field(max_length=4 * MAX_CELLS_PER_MODULE)
    balancing: list[bool] = Field(max_length=MAX_CELLS_PER_MODULE)
    module_of_cell: list[ModuleIndex] = Field(max_length=MAX_CELLS_PER_MODULE)

    @model_validator(mode="after")
    def _one_entry_per_cell(self) -> CellSnapshot:
        # readers index one list by another; a short list would misplace every cell after it
        n = len(self.cell_v)
        if len(self.balancing) != n or len(self.module_of_cell) != n:
            raise ValueError(
                f"cell_v, balancing and module_of_cell must have one entry per cell; got "
                f"{n}, {len(self.balancing)} and {len(self.module_of_cell)}"
            )
        return self
