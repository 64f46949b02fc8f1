"""One simulated slave module: cells, balancing, measurement chain and faults together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from services.slave_agent.sim.balancing import ActiveBalancer
from services.slave_agent.sim.cells import CellBank, CellBankParams
from services.slave_agent.sim.faults import (
    FaultSet,
    cell_voltage_offset_v,
    drive_temperatures,
    extra_noise_sigma,
    open_wire_readings,
    stuck_mask,
)
from services.slave_agent.sim.measurement import (
    ADC_FULL_SCALE_MV,
    TEMP_READING_MAX_C,
    TEMP_READING_MIN_C,
    MeasurementChain,
    MeasurementParams,
    cell_range_flags,
    temp_range_flags,
)
from shared.messages.slave import ChannelFlag

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Mask = BoolArray | Sequence[bool]
_S = TypeVar("_S", bound=np.generic)

TRUE_VOLTAGE_MAX_V: Final = 6.0
"""A drifting cell's true voltage saturates here and at 0 V (the ground-truth payload bounds)."""


@dataclass(frozen=True)
class Reading:
    """One sample of a module as its front end reports it."""

    cell_mv: NDArray[np.int64]
    cell_flags: NDArray[np.uint8]
    temp_c: FloatArray
    temp_flags: NDArray[np.uint8]
    balancing: BoolArray
    """Cells with balancing switched on during the last step."""


@dataclass(frozen=True)
class Truth:
    """The true state behind a reading, for measuring estimators."""

    soc_pct: FloatArray
    cell_v: FloatArray
    """Terminal voltage including any `cell_drift` offset."""
    ocv_v: FloatArray
    temp_c: FloatArray
    """Per cell."""
    sensor_temp_c: FloatArray
    """What each temperature sensor would read without error: the mean of its cells."""
    current_a: float
    """String current of the last step (charging positive)."""


class SimulatedModule:
    """A slave module: `advance` the physics, then `read` what the hardware would report.

    Balancing is passive (bleed resistors of `CellBankParams`) unless an `ActiveBalancer` is
    given; a passive module ignores `balance_charge`, having no way to charge a cell.
    Give each module its own seeds (`CellBankParams.seed`, `MeasurementParams.seed`).
    """

    def __init__(
        self,
        cells: CellBankParams,
        *,
        n_temp_sensors: int = 4,
        measurement: MeasurementParams | None = None,
        active_balancer: ActiveBalancer | None = None,
    ) -> None:
        self.bank = CellBank(cells)
        self.n_cells = cells.n_cells
        self.n_temp_sensors = n_temp_sensors
        self.chain = MeasurementChain(cells.n_cells, n_temp_sensors, measurement)
        self.active_balancer = active_balancer
        self.faults = FaultSet(n_cells=cells.n_cells, n_temp_sensors=n_temp_sensors)
        self._sensor_of_cell = self.chain.sensor_of_cell
        self._balancing = np.zeros(self.n_cells, dtype=np.bool_)
        self._converter_heat_j = 0.0
        self._last_cell_mv: NDArray[np.int64] | None = None
        self._last_temp_c: FloatArray | None = None
        self._frozen_mv = np.zeros(self.n_cells, dtype=np.int64)
        self._frozen_mv_set = np.zeros(self.n_cells, dtype=np.bool_)
        self._frozen_temp = np.zeros(n_temp_sensors)
        self._frozen_temp_set = np.zeros(n_temp_sensors, dtype=np.bool_)

    @property
    def ambient_c(self) -> FloatArray:
        return self.bank.ambient_c

    def set_ambient_c(self, value: float | FloatArray) -> None:
        """Ambient temperature of every cell (scalar) or per cell, from now on."""
        self.bank.set_ambient_c(value)

    @property
    def balancing(self) -> BoolArray:
        """Cells with balancing switched on during the last step."""
        return self._balancing.copy()

    @property
    def converter_heat_j(self) -> float:
        """Heat lost in the active balancer's converter so far (J)."""
        return self._converter_heat_j

    def advance(
        self,
        dt_s: float,
        current_a: float,
        balance_discharge: Mask | None = None,
        balance_charge: Mask | None = None,
    ) -> None:
        """Let `dt_s` pass with string current `current_a` (A, charging positive).

        `balance_discharge` bleeds a cell (passive) or takes charge from it (active);
        `balance_charge` feeds a cell from the active converter. None or empty: no balancing.
        """
        discharge = self._mask("balance_discharge", balance_discharge)
        charge = self._mask("balance_charge", balance_charge)
        if np.any(discharge & charge):
            raise ValueError("a cell cannot be charged and discharged at once")
        if self.active_balancer is None:
            self.bank.step(dt_s, current_a, bleed=discharge)
            self._balancing = discharge
        else:
            transfer = self.active_balancer.transfer(self.bank.terminal_v, discharge, charge)
            self.bank.step(dt_s, current_a, transfer_a=transfer.current_a)
            self._converter_heat_j += transfer.loss_w * dt_s
            self._balancing = discharge | charge
        if self.faults:
            temps = drive_temperatures(
                self.bank.temp_c, self.faults, self._sensor_of_cell, float(dt_s)
            )
            if temps is not None:
                self.bank.set_temp_c(temps)
            self.faults.tick(float(dt_s))

    def truth(self) -> Truth:
        bank = self.bank
        cell_temp = bank.temp_c
        return Truth(
            soc_pct=bank.soc_pct,
            cell_v=self._true_cell_v(),
            ocv_v=bank.ocv_v,
            temp_c=cell_temp,
            sensor_temp_c=self.chain.sensor_temp_c(cell_temp),
            current_a=bank.current_a,
        )

    def read(self) -> Reading:
        """Sample every channel once (draws fresh noise)."""
        faults = self.faults
        true_v = self._true_cell_v()
        sensor_t = self.chain.sensor_temp_c(self.bank.temp_c)
        if not faults:
            cell_mv = self.chain.measure_cells_mv(true_v)
            temp_c = self.chain.measure_temps_c(sensor_t)
            cell_flags = cell_range_flags(cell_mv)
            temp_flags = temp_range_flags(temp_c)
            self._frozen_mv_set[:] = False
            self._frozen_temp_set[:] = False
        else:
            n, m = self.n_cells, self.n_temp_sensors
            cell_mv = self.chain.measure_cells_mv(true_v, extra_noise_sigma(faults, "cell", n))
            temp_c = self.chain.measure_temps_c(sensor_t, extra_noise_sigma(faults, "temp", m))
            cell_mv = self._freeze(
                cell_mv, stuck_mask(faults, "cell", n), self._last_cell_mv, self._frozen_mv,
                self._frozen_mv_set,
            )  # fmt: skip
            temp_c = self._freeze(
                temp_c, stuck_mask(faults, "temp", m), self._last_temp_c, self._frozen_temp,
                self._frozen_temp_set,
            )  # fmt: skip
            open_cells, open_v = open_wire_readings(faults, "cell", n)
            open_temps, open_t = open_wire_readings(faults, "temp", m)
            if open_cells.any():
                open_mv = np.clip(np.rint(open_v * 1000.0), 0, ADC_FULL_SCALE_MV).astype(np.int64)
                cell_mv = np.where(open_cells, open_mv, cell_mv)
            if open_temps.any():
                temp_c = np.where(
                    open_temps, np.clip(open_t, TEMP_READING_MIN_C, TEMP_READING_MAX_C), temp_c
                )
            wire = np.uint8(ChannelFlag.OPEN_WIRE)
            cell_flags = cell_range_flags(cell_mv) | open_cells.astype(np.uint8) * wire
            temp_flags = temp_range_flags(temp_c) | open_temps.astype(np.uint8) * wire
        self._last_cell_mv = cell_mv
        self._last_temp_c = temp_c
        return Reading(
            cell_mv=cell_mv.copy(),
            cell_flags=cell_flags,
            temp_c=temp_c.copy(),
            temp_flags=temp_flags,
            balancing=self._balancing.copy(),
        )

    def _true_cell_v(self) -> FloatArray:
        v = self.bank.terminal_v
        if self.faults.is_active("cell_drift"):
            v = np.clip(
                v + cell_voltage_offset_v(self.faults, self.n_cells), 0.0, TRUE_VOLTAGE_MAX_V
            )
        return v

    @staticmethod
    def _freeze(
        fresh: NDArray[_S],
        stuck: BoolArray,
        last: NDArray[_S] | None,
        frozen: NDArray[_S],
        frozen_set: BoolArray,
    ) -> NDArray[_S]:
        # A channel freezes at the last value it reported (this sample's if none yet).
        newly = stuck & ~frozen_set
        if newly.any():
            source = fresh if last is None else last
            frozen[newly] = source[newly]
        frozen_set[:] = stuck
        if not stuck.any():
            return fresh
        return np.where(stuck, frozen, fresh)

    def _mask(self, name: str, value: Mask | None) -> BoolArray:
        if value is None:
            return np.zeros(self.n_cells, dtype=np.bool_)
        mask = np.array(value, dtype=np.bool_)
        if mask.size == 0:
            return np.zeros(self.n_cells, dtype=np.bool_)
        if mask.shape != (self.n_cells,):
            raise ValueError(f"{name} must have one entry per cell ({self.n_cells})")
        return mask
