"""Measurement chain of a slave module: true cell voltages and temperatures to readings.

Error budget of one cell-voltage reading with the default `MeasurementParams`; every term is
bounded, so the bound holds for every sample, not only statistically:

    per-channel offset   |o| <= 20 mV   drawn once per channel, N(0, 7 mV) clipped at 20 mV
    noise                |n| <= 25 mV   per sample, N(0, 5 mV) clipped at 5 sigma
    quantisation         |q| <= 0.5 mV  1 mV steps, rounded to nearest
    total                    <= 45.5 mV  within the specified +-50 mV

`MeasurementParams` refuses settings whose bound exceeds the accuracy. Faults such as
`noisy_channel` or `cell_drift` are applied outside this chain and exceed it on purpose.

Temperature sensors are fewer than cells: sensor k reads the mean temperature of a contiguous
group of cells (`sensor_of_cell`). Defaults: offset <= 1.0 C, noise N(0, 0.1 C) clipped at
0.5 C, 0.1 C steps, so a reading is within +-1.55 C of its group mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from shared.config.limits import (
    CELL_TEMPERATURE_MAX_C,
    CELL_TEMPERATURE_MIN_C,
    CELL_VOLTAGE_ACCURACY_V,
    CELL_VOLTAGE_MAX_V,
    CELL_VOLTAGE_MIN_V,
)
from shared.messages.slave import ChannelFlag

FloatArray = NDArray[np.float64]


CELL_VOLTAGE_MIN_MV: Final = round(CELL_VOLTAGE_MIN_V * 1000)
CELL_VOLTAGE_MAX_MV: Final = round(CELL_VOLTAGE_MAX_V * 1000)

# Where the converters saturate; also the bounds of the telemetry payload fields.
ADC_FULL_SCALE_MV: Final = 6000
TEMP_READING_MIN_C: Final = -60.0
TEMP_READING_MAX_C: Final = 200.0

VOLTAGE_LSB_V: Final = 0.001
QUANTISATION_ERROR_V: Final = VOLTAGE_LSB_V / 2

_RNG_STREAM: Final = 0x6D656173  # keeps this generator apart from the cells' one for equal seeds


@dataclass(frozen=True)
class MeasurementParams:
    """Error model of the cell-voltage and temperature channels of one module."""

    voltage_offset_sigma_v: float = 0.007
    voltage_offset_max_v: float = 0.020
    voltage_noise_sigma_v: float = 0.005
    voltage_noise_clip_v: float = 0.025
    temp_offset_sigma_c: float = 0.3
    temp_offset_max_c: float = 1.0
    temp_noise_sigma_c: float = 0.1
    temp_noise_clip_c: float = 0.5
    temp_resolution_c: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "voltage_offset_sigma_v",
            "voltage_offset_max_v",
            "voltage_noise_sigma_v",
            "voltage_noise_clip_v",
            "temp_offset_sigma_c",
            "temp_offset_max_c",
            "temp_noise_sigma_c",
            "temp_noise_clip_c",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not (math.isfinite(self.temp_resolution_c) and self.temp_resolution_c > 0.0):
            raise ValueError(f"temp_resolution_c must be > 0, got {self.temp_resolution_c!r}")
        if self.voltage_error_bound_v > CELL_VOLTAGE_ACCURACY_V:
            raise ValueError(
                f"voltage error bound {self.voltage_error_bound_v * 1000:.1f} mV (offset max + "
                f"noise clip + quantisation) exceeds the +-{CELL_VOLTAGE_ACCURACY_V * 1000:.0f} mV "
                "accuracy"
            )

    @property
    def voltage_error_bound_v(self) -> float:
        """Worst-case |reading - true voltage| of a healthy channel."""
        return self.voltage_offset_max_v + self.voltage_noise_clip_v + QUANTISATION_ERROR_V

    @property
    def temp_error_bound_c(self) -> float:
        """Worst-case |reading - group mean temperature| of a healthy sensor."""
        return self.temp_offset_max_c + self.temp_noise_clip_c + self.temp_resolution_c / 2


def sensor_groups(n_cells: int, n_temp_sensors: int) -> NDArray[np.intp]:
    """Index of the temperature sensor of each cell: contiguous groups of near-equal size."""
    if n_cells < 1 or n_temp_sensors < 0 or n_temp_sensors > n_cells:
        raise ValueError(
            f"need 1 <= n_cells and 0 <= n_temp_sensors <= n_cells, got {n_cells}, {n_temp_sensors}"
        )
    if n_temp_sensors == 0:
        return np.full(n_cells, -1, dtype=np.intp)
    return (np.arange(n_cells, dtype=np.intp) * n_temp_sensors) // n_cells


def cell_range_flags(cell_mv: NDArray[np.int64]) -> NDArray[np.uint8]:
    """OUT_OF_RANGE where a voltage reading lies outside the 1.00-4.95 V measurement range."""
    out = (cell_mv < CELL_VOLTAGE_MIN_MV) | (cell_mv > CELL_VOLTAGE_MAX_MV)
    return out.astype(np.uint8) * np.uint8(ChannelFlag.OUT_OF_RANGE)


def temp_range_flags(temp_c: FloatArray) -> NDArray[np.uint8]:
    """OUT_OF_RANGE where a temperature reading lies outside the sensor's range."""
    out = (temp_c < CELL_TEMPERATURE_MIN_C) | (temp_c > CELL_TEMPERATURE_MAX_C)
    return out.astype(np.uint8) * np.uint8(ChannelFlag.OUT_OF_RANGE)


def _clipped_normal(rng: np.random.Generator, sigma: float, limit: float, size: int) -> FloatArray:
    if sigma == 0.0 or limit == 0.0:
        return np.zeros(size)
    return np.clip(rng.normal(0.0, sigma, size), -limit, limit)


class MeasurementChain:
    """Cell-voltage channels and temperature sensors of one module, with their errors."""

    def __init__(
        self, n_cells: int, n_temp_sensors: int, params: MeasurementParams | None = None
    ) -> None:
        self.params = params if params is not None else MeasurementParams()
        self.n_cells = n_cells
        self.n_temp_sensors = n_temp_sensors
        self._sensor_of_cell = sensor_groups(n_cells, n_temp_sensors)
        self._cells_per_sensor = np.bincount(
            self._sensor_of_cell[self._sensor_of_cell >= 0], minlength=n_temp_sensors
        ).astype(np.float64)
        self._rng = np.random.default_rng([_RNG_STREAM, self.params.seed])
        p = self.params
        self._voltage_offset_v = _clipped_normal(
            self._rng, p.voltage_offset_sigma_v, p.voltage_offset_max_v, n_cells
        )
        self._temp_offset_c = _clipped_normal(
            self._rng, p.temp_offset_sigma_c, p.temp_offset_max_c, n_temp_sensors
        )

    @property
    def sensor_of_cell(self) -> NDArray[np.intp]:
        """Temperature-sensor index of each cell (-1 when the module has no sensor)."""
        return self._sensor_of_cell.copy()

    @property
    def voltage_offset_v(self) -> FloatArray:
        """The fixed offset of each voltage channel."""
        return self._voltage_offset_v.copy()

    @property
    def temp_offset_c(self) -> FloatArray:
        """The fixed offset of each temperature sensor."""
        return self._temp_offset_c.copy()

    def sensor_temp_c(self, cell_temp_c: FloatArray) -> FloatArray:
        """True temperature at each sensor: the mean of its group of cells."""
        if self.n_temp_sensors == 0:
            return np.zeros(0)
        sums = np.bincount(self._sensor_of_cell, weights=cell_temp_c, minlength=self.n_temp_sensors)
        return sums / self._cells_per_sensor

    def measure_cells_mv(
        self, true_v: FloatArray, extra_noise_sigma_v: FloatArray | None = None
    ) -> NDArray[np.int64]:
        """Integer-mV readings of the true cell voltages.

        `extra_noise_sigma_v` (per channel, unclipped) models a degraded channel and may
        break the error bound; readings saturate at 0 and ADC_FULL_SCALE_MV.
        """
        v = np.asarray(true_v, dtype=np.float64)
        if v.shape != (self.n_cells,) or not np.all(np.isfinite(v)):
            raise ValueError(f"true_v must be {self.n_cells} finite voltages")
        p = self.params
        noise = _clipped_normal(self._rng, p.voltage_noise_sigma_v, p.voltage_noise_clip_v, v.size)
        measured = v + self._voltage_offset_v + noise
        if extra_noise_sigma_v is not None:
            measured += self._rng.standard_normal(v.size) * extra_noise_sigma_v
        mv = np.rint(measured * 1000.0)
        return np.clip(mv, 0, ADC_FULL_SCALE_MV).astype(np.int64)

    def measure_temps_c(
        self, sensor_temp_c: FloatArray, extra_noise_sigma_c: FloatArray | None = None
    ) -> FloatArray:
        """Readings of the true sensor temperatures, in steps of `temp_resolution_c`."""
        t = np.asarray(sensor_temp_c, dtype=np.float64)
        if t.shape != (self.n_temp_sensors,) or not np.all(np.isfinite(t)):
            raise ValueError(f"sensor_temp_c must be {self.n_temp_sensors} finite temperatures")
        p = self.params
        noise = _clipped_normal(self._rng, p.temp_noise_sigma_c, p.temp_noise_clip_c, t.size)
        measured = t + self._temp_offset_c + noise
        if extra_noise_sigma_c is not None:
            measured += self._rng.standard_normal(t.size) * extra_noise_sigma_c
        step = p.temp_resolution_c
        quantised = np.round(np.rint(measured / step) * step, 6)
        return np.clip(quantised, TEMP_READING_MIN_C, TEMP_READING_MAX_C)
