"""Fault injection for the simulated module, as data plus pure functions.

`FaultSet` holds the active faults of one module; `SimulatedModule` applies the physical and
reading-level kinds, the agent loop the telemetry-level ones (`is_active`, `value_of`).

| kind                | target (default) | channel                  | value                      |
|---------------------|------------------|--------------------------|----------------------------|
| `cell_drift`        | cell             | cell                     | V/s, signed (required)     |
| `over_temperature`  | temp (or cell)   | temperature sensor/cell  | target C (required)        |
| `under_temperature` | temp (or cell)   | temperature sensor/cell  | target C (required)        |
| `open_wire`         | cell (or temp)   | cell / sensor            | reading, default 0 V/-55 C |
| `stuck_sensor`      | cell (or temp)   | cell / sensor            | -                          |
| `noisy_channel`     | cell (or temp)   | cell / sensor            | sigma V / C (required)     |
| `dropout`, `crash`  | module           | None                     | -                          |
| `slow_samples`      | module           | None                     | as the agent defines (s)   |
| `late_samples`      | module           | None                     | as the agent defines (s)   |

`channel=None` means every channel of the target. Effects:

* `cell_drift`: the cell's true voltage departs from its equivalent circuit by value * time
  active (e.g. an internal fault); truth and readings both show it, the SOC does not change,
  and the offset is gone once the fault ends.
* `over_temperature` / `under_temperature`: the true temperature of the cells behind the sensor
  (or of one cell) moves towards the target at `rate_c_per_s` and is held there; after the fault
  the cells relax through the thermal model (time constant C/h, about an hour by default).
* `open_wire`: the reading shows `value` and carries OPEN_WIRE.
* `stuck_sensor`: the reading stays at the value it had when the fault started.
* `noisy_channel`: extra unclipped Gaussian noise; no flag, the master has to spot it.

Readings outside the measurement range carry OUT_OF_RANGE whatever the cause.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from shared.messages.sim import FaultKind
from shared.messages.slave import ChannelFlag

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TEMPERATURE_RATE_C_PER_S",
    "FAULT_KINDS",
    "OPEN_WIRE_READING",
    "ActiveFault",
    "ChannelFlag",
    "FaultKind",
    "FaultSet",
    "FaultTarget",
    "cell_voltage_offset_v",
    "drive_temperatures",
    "extra_noise_sigma",
    "open_wire_readings",
    "stuck_mask",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

FaultTarget = Literal["cell", "temp", "module"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)

DEFAULT_TARGET: Final[Mapping[FaultKind, FaultTarget]] = {
    "cell_drift": "cell",
    "over_temperature": "temp",
    "under_temperature": "temp",
    "open_wire": "cell",
    "stuck_sensor": "cell",
    "noisy_channel": "cell",
    "dropout": "module",
    "slow_samples": "module",
    "late_samples": "module",
    "crash": "module",
}
_ALLOWED_TARGETS: Final[Mapping[FaultKind, frozenset[FaultTarget]]] = {
    kind: (
        frozenset({"cell", "temp"})
        if target != "module" and kind != "cell_drift"
        else frozenset({target})
    )
    for kind, target in DEFAULT_TARGET.items()
}
_VALUE_REQUIRED: Final = frozenset({"cell_drift", "over_temperature", "under_temperature"})
_NO_VALUE: Final = frozenset({"stuck_sensor", "dropout", "crash"})

DEFAULT_TEMPERATURE_RATE_C_PER_S: Final = 2.0
OPEN_WIRE_READING: Final[Mapping[FaultTarget, float]] = {"cell": 0.0, "temp": -55.0}
"""Default reading of an open channel: 0 V, or a temperature below the sensor's range."""

_EXPIRY_EPS_S: Final = 1e-9  # absorbs float residue of summed dt


@dataclass(frozen=True)
class ActiveFault:
    """One active fault; see the module docstring for what each field means per kind."""

    kind: FaultKind
    target: FaultTarget
    channel: int | None = None
    value: float | None = None
    remaining_s: float | None = None
    """Time left before the fault ends by itself; None lasts until cleared."""
    rate_c_per_s: float = DEFAULT_TEMPERATURE_RATE_C_PER_S
    elapsed_s: float = 0.0
    """Time the fault has been active (advanced by `FaultSet.tick`)."""

    @property
    def drift_v(self) -> float:
        """Voltage offset a `cell_drift` fault has built up so far."""
        if self.kind != "cell_drift" or self.value is None:
            return 0.0
        return self.value * self.elapsed_s


class FaultSet:
    """The active faults of one module, at most one per (kind, target, channel)."""

    def __init__(self, n_cells: int | None = None, n_temp_sensors: int | None = None) -> None:
        self._limits: dict[FaultTarget, int | None] = {
            "cell": n_cells,
            "temp": n_temp_sensors,
            "module": None,
        }
        self._faults: list[ActiveFault] = []
        self.version = 0
        """Counts changes of the set (a fault started, cleared or expired), so that a
        vectorised simulator recomputes its fault masks only when they can have changed."""

    def __len__(self) -> int:
        return len(self._faults)

    def __bool__(self) -> bool:
        return bool(self._faults)

    def __iter__(self) -> Iterator[ActiveFault]:
        return iter(tuple(self._faults))

    def active(self, kind: FaultKind | None = None) -> tuple[ActiveFault, ...]:
        return tuple(f for f in self._faults if kind is None or f.kind == kind)

    def activate(
        self,
        kind: FaultKind,
        *,
        channel: int | None = None,
        value: float | None = None,
        duration_s: float | None = None,
        target: FaultTarget | None = None,
        rate_c_per_s: float | None = None,
    ) -> ActiveFault:
        """Start a fault, replacing one of the same kind, target and channel."""
        if kind not in DEFAULT_TARGET:
            raise ValueError(f"unknown fault kind {kind!r}")
        tgt = DEFAULT_TARGET[kind] if target is None else target
        if tgt not in _ALLOWED_TARGETS[kind]:
            raise ValueError(f"{kind} cannot target {tgt!r}")
        if channel is not None:
            if tgt == "module":
                raise ValueError(f"{kind} applies to the whole module; channel must be None")
            limit = self._limits[tgt]
            if channel < 0 or (limit is not None and channel >= limit):
                raise ValueError(f"{kind}: {tgt} channel {channel} does not exist")
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{kind}: value must be finite, got {value!r}")
        if value is None and kind in _VALUE_REQUIRED:
            raise ValueError(f"{kind} needs a value")
        if value is not None and kind in _NO_VALUE:
            raise ValueError(f"{kind} takes no value")
        if kind == "noisy_channel" and (value is None or value < 0.0):
            raise ValueError("noisy_channel needs a noise sigma >= 0")
        if kind in ("slow_samples", "late_samples") and value is not None and value < 0.0:
            raise ValueError(f"{kind}: value must be >= 0")
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0.0):
            raise ValueError(f"duration_s must be finite and > 0, got {duration_s!r}")
        rate = DEFAULT_TEMPERATURE_RATE_C_PER_S if rate_c_per_s is None else rate_c_per_s
        if not (math.isfinite(rate) and rate > 0.0):
            raise ValueError(f"rate_c_per_s must be finite and > 0, got {rate_c_per_s!r}")
        fault = ActiveFault(
            kind=kind,
            target=tgt,
            channel=channel,
            value=value,
            remaining_s=duration_s,
            rate_c_per_s=rate,
        )
        self._faults = [f for f in self._faults if not _same_slot(f, fault)]
        self._faults.append(fault)
        self.version += 1
        return fault

    def clear(
        self, kind: FaultKind | None = None, *, channel: int | None = None
    ) -> tuple[ActiveFault, ...]:
        """End faults (all, one kind, and/or one channel); returns the ended ones."""
        kept: list[ActiveFault] = []
        gone: list[ActiveFault] = []
        for f in self._faults:
            hit = (kind is None or f.kind == kind) and (channel is None or f.channel == channel)
            (gone if hit else kept).append(f)
        self._faults = kept
        if gone:
            self.version += 1
        return tuple(gone)

    def tick(self, dt_s: float) -> tuple[ActiveFault, ...]:
        """Let `dt_s` pass: ages every fault and ends those whose duration ran out."""
        if not (math.isfinite(dt_s) and dt_s >= 0.0):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        kept: list[ActiveFault] = []
        expired: list[ActiveFault] = []
        for f in self._faults:
            remaining = None if f.remaining_s is None else f.remaining_s - dt_s
            aged = replace(f, elapsed_s=f.elapsed_s + dt_s, remaining_s=remaining)
            (expired if remaining is not None and remaining <= _EXPIRY_EPS_S else kept).append(aged)
        self._faults = kept
        if expired:
            self.version += 1
        return tuple(expired)

    def is_active(self, kind: FaultKind, channel: int | None = None) -> bool:
        """Whether `kind` is active; with `channel`, on that channel or on all channels."""
        return any(
            f.kind == kind and (channel is None or f.channel is None or f.channel == channel)
            for f in self._faults
        )

    def value_of(self, kind: FaultKind, channel: int | None = None) -> float | None:
        """Value of the latest matching fault (see `is_active`), or None."""
        for f in reversed(self._faults):
            if f.kind == kind and (channel is None or f.channel is None or f.channel == channel):
                return f.value
        return None

    def mask(self, kind: FaultKind, target: FaultTarget, n: int) -> BoolArray:
        """Channels of `target` (out of n) that a fault of `kind` affects."""
        out = np.zeros(n, dtype=np.bool_)
        for f in self._faults:
            if f.kind == kind and f.target == target:
                _mark(out, f.channel, True)
        return out


def _same_slot(a: ActiveFault, b: ActiveFault) -> bool:
    return a.kind == b.kind and a.target == b.target and a.channel == b.channel


def _mark(out: NDArray[np.generic], channel: int | None, value: float) -> None:
    if channel is None:
        out[:] = value
    elif channel < out.shape[0]:
        out[channel] = value


def cell_voltage_offset_v(faults: FaultSet, n_cells: int) -> FloatArray:
    """Sum of the `cell_drift` offsets on each cell's true voltage."""
    out = np.zeros(n_cells)
    for f in faults.active("cell_drift"):
        if f.channel is None:
            out += f.drift_v
        elif f.channel < n_cells:
            out[f.channel] += f.drift_v
    return out


def extra_noise_sigma(faults: FaultSet, target: FaultTarget, n: int) -> FloatArray | None:
    """Per-channel sigma of `noisy_channel` noise (root sum square), or None without any."""
    variance: FloatArray | None = None
    for f in faults.active("noisy_channel"):
        if f.target != target or f.value is None:
            continue
        if variance is None:
            variance = np.zeros(n)
        if f.channel is None:
            variance += f.value * f.value
        elif f.channel < n:
            variance[f.channel] += f.value * f.value
    return None if variance is None else np.sqrt(variance)


def open_wire_readings(
    faults: FaultSet, target: FaultTarget, n: int
) -> tuple[BoolArray, FloatArray]:
    """Channels with an open wire and the value (V or C) they read."""
    mask = np.zeros(n, dtype=np.bool_)
    values = np.zeros(n)
    for f in faults.active("open_wire"):
        if f.target != target:
            continue
        _mark(mask, f.channel, True)
        _mark(values, f.channel, OPEN_WIRE_READING[target] if f.value is None else f.value)
    return mask, values


def stuck_mask(faults: FaultSet, target: FaultTarget, n: int) -> BoolArray:
    """Channels whose reading is frozen."""
    return faults.mask("stuck_sensor", target, n)


def drive_temperatures(
    cell_temp_c: FloatArray,
    faults: FaultSet,
    sensor_of_cell: NDArray[np.intp],
    dt_s: float,
) -> FloatArray | None:
    """Cell temperatures after `dt_s` of the temperature faults, or None without any.

    A fault on a temperature sensor acts on all cells of that sensor's group. Over-temperature
    only heats (a cell already above the target is left alone), under-temperature only cools.
    """
    out: FloatArray | None = None
    for f in faults:
        if f.kind not in ("over_temperature", "under_temperature") or f.value is None:
            continue
        if out is None:
            out = cell_temp_c.copy()
        if f.channel is None:
            cells = np.ones(out.shape[0], dtype=np.bool_)
        elif f.target == "temp":
            cells = sensor_of_cell == f.channel
        else:
            cells = np.zeros(out.shape[0], dtype=np.bool_)
            _mark(cells, f.channel, True)
        step = f.rate_c_per_s * dt_s
        t = out[cells]
        if f.kind == "over_temperature":
            out[cells] = np.where(t < f.value, np.minimum(t + step, f.value), t)
        else:
            out[cells] = np.where(t > f.value, np.maximum(t - step, f.value), t)
    return out
