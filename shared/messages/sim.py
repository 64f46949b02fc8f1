"""Simulation control and ground truth (simulated hardware only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.messages.envelope import Message, Timestamp
from shared.messages.slave import MAX_CELLS_PER_MODULE, MAX_TEMPS_PER_MODULE, ModuleIndex

FaultKind = Literal[
    "cell_drift",
    "over_temperature",
    "under_temperature",
    "open_wire",
    "stuck_sensor",
    "noisy_channel",
    "dropout",
    "slow_samples",
    "late_samples",
    "crash",
]
"""Faults the simulated hardware can play."""
Finite = Annotated[float, Field(allow_inf_nan=False)]


class SimControl(Message):
    """Inject or clear a fault in the simulated hardware at run time."""

    fault: FaultKind | Literal["clear"]
    module: ModuleIndex | None = None
    """None targets every module."""
    channel: int | None = Field(None, ge=0, lt=MAX_CELLS_PER_MODULE)
    target: Literal["cell", "temp"] | None = None
    """Which kind of channel a sensor fault hits (default: the fault's natural target)."""
    value: Finite | None = None
    """Fault magnitude in the unit of the fault (V/s drift, °C, noise V, delay s)."""
    duration_s: Finite | None = Field(None, gt=0.0)
    expires_at: Timestamp | None = None


PlantFaultKind = Literal[
    "board_dropout",
    "current_offset",
    "current_dropout",
    "contactor_weld",
    "feedback_stuck",
    "insulation_fault",
    "precharge_short",
    "inverter_ignores_limits",
    "voltage_offset",
    "insulation_monitor_silent",
]
"""Faults of the plant service beyond the cells: a slave board that stops answering, the current
sensor (offset A, silence), a welded contactor, an auxiliary contact stuck (value 1 closed,
0 open), an insulation fault (value ohm), a short across the DC link during precharge, an
inverter drawing its load profile whatever the BMS limits, the current sensor's pack voltage
U1 off by `value` V, an insulation monitor that stops sending."""
PLANT_CELL_FAULTS: tuple[FaultKind, ...] = (
    "cell_drift",
    "over_temperature",
    "under_temperature",
    "open_wire",
    "stuck_sensor",
    "noisy_channel",
)
"""Cell faults the plant plays in its simulated boards (the others belong to the agent loop)."""
ContactorName = Literal["main_positive", "main_negative", "precharge"]


class PlantControl(Message):
    """Inject or clear a fault in the plant service (simulation only)."""

    fault: PlantFaultKind | FaultKind | Literal["clear"]
    module: ModuleIndex | None = None
    """Cell faults and board_dropout: None targets every module."""
    channel: int | None = Field(None, ge=0, lt=MAX_CELLS_PER_MODULE)
    target: Literal["cell", "temp"] | None = None
    contactor: ContactorName | None = None
    """contactor_weld and feedback_stuck: which contactor."""
    value: Finite | None = None
    """In the unit of the fault: V/s drift, °C, noise V, offset A, ohm, 1/0 contact position."""
    duration_s: Finite | None = Field(None, gt=0.0)
    """Cell faults only; the plant's own faults last until `clear`."""
    expires_at: Timestamp | None = None


class GroundTruth(Message):
    """True state of the simulated cells of one module, for measuring estimators."""

    module: ModuleIndex
    sample_ts: Timestamp
    soc_pct: list[Annotated[float, Field(ge=-5.0, le=105.0, allow_inf_nan=False)]] = Field(
        max_length=MAX_CELLS_PER_MODULE, fail_fast=True
    )
    cell_v: list[Annotated[float, Field(ge=0.0, le=6.0, allow_inf_nan=False)]] = Field(
        max_length=MAX_CELLS_PER_MODULE, fail_fast=True
    )
    temp_c: list[Annotated[float, Field(ge=-60.0, le=200.0, allow_inf_nan=False)]] = Field(
        max_length=MAX_TEMPS_PER_MODULE, fail_fast=True
    )
    current_a: Finite
