"""Aggregation of slave telemetry into the pack picture (pure: time is passed in).

Keeps the latest sample of every module, counts sequence gaps, and computes min, max and
average with their locations, the spread and the sum of cells. Which modules are stale is not
decided here but by the communication supervision (`comm_supervision.py`), and passed in.

Every channel keeps its place: a stale module's channels and a flagged channel (open wire, out
of range, sensor fault) are NaN in the arrays and None in the published snapshot. They leave
the statistics that protection reads; their flags raise their own codes instead (an open-wire
0 V reading is not a deep discharge).

Incremental (issue 19): a sample is written into preallocated arrays when it arrives, and the
snapshot is computed again only when a sample arrived or the stale set changed since the last
one; otherwise the last snapshot is returned as it is. The master cycles several times per
telemetry period, so most cycles cost a comparison. A snapshot's arrays are its own and read
only: the next sample cannot change a picture already handed out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from services.master_core.freshness import Refusal, SampleGate
from shared.config import Topology
from shared.config.limits import CELL_VOLTAGE_MAX_V, CELL_VOLTAGE_MIN_V
from shared.messages import CellLocation, CellSnapshot, CellTelemetry, ChannelFlag


@dataclass(frozen=True)
class PackSnapshot:
    cell_v: NDArray[np.float64]
    """Every cell in series order; NaN where the module is stale or missing or the channel
    is flagged."""
    temp_c: NDArray[np.float64]
    """Every temperature sensor, module by module; NaN where unknown."""
    balancing: NDArray[np.bool_]
    module_of_cell: NDArray[np.int64]
    cell_flags: NDArray[np.int64]
    temp_flags: NDArray[np.int64]
    stale_modules: tuple[int, ...]
    cell_v_min: float | None
    cell_v_max: float | None
    cell_v_avg: float | None
    cell_v_min_at: CellLocation | None
    cell_v_max_at: CellLocation | None
    temp_min_c: float | None
    temp_max_c: float | None
    temp_avg_c: float | None
    temp_min_at: CellLocation | None
    temp_max_at: CellLocation | None
    spread_v: float | None
    sum_of_cells_v: float | None
    """Only when every module is fresh: a partial sum would not be a pack voltage."""
    open_wire: bool
    out_of_range: bool
    sensor_fault: bool
    cell_v_above_range: float | None = None
    """The highest reading above the measurement range of a cell flagged out of range alone
    (an open wire's reading says nothing of the cell); None when no cell reads above it. No
    value to publish, but such a cell is above every over-voltage threshold (they lie within
    the range): protection judges it (`protection_inputs`)."""
    cell_v_above_range_at: CellLocation | None = None
    cell_v_below_range: float | None = None
    """As `cell_v_above_range`, the lowest reading below the range."""
    cell_v_below_range_at: CellLocation | None = None

    @property
    def complete(self) -> bool:
        return not self.stale_modules


@dataclass
class PackAggregator:
    topology: Topology
    max_sample_age_s: float = 5.0
    """`comm_loss.max_sample_age_s`: older samples are refused (`freshness.py`)."""
    gaps: int = 0
    """Telemetry samples lost, counted from sequence-number gaps."""
    refused: Counter[str] = field(default_factory=Counter)
    """Samples refused by `SampleGate`, by kind (replayed, too_old, from_the_future)."""
    snapshots_computed: int = 0
    """Snapshots computed afresh (the rest were the last one again): for the benches."""

    def __post_init__(self) -> None:
        modules = self.topology.modules
        self.gate = SampleGate(modules, self.max_sample_age_s)
        self.last_refusal: Refusal | None = None
        """Why the gate refused the last sample (None: admitted, or refused for its shape)."""
        counts = self.topology.module_cell_counts or (self.topology.cells_per_module,) * modules
        self._counts = list(counts)
        self._offsets = [0, *np.cumsum(counts).tolist()]
        self._module_of_cell = np.repeat(np.arange(modules), counts)
        self._module_of_cell.setflags(write=False)
        per = self._per = self.topology.temp_sensors_per_module
        self._module_of_temp = np.repeat(np.arange(modules), per)
        n, n_t = self._offsets[-1], per * modules
        # the latest admitted sample of every module, in place; NaN until a module is heard
        self._cell_v = np.full(n, np.nan)
        self._cell_flags = np.zeros(n, dtype=np.int64)
        self._balancing = np.zeros(n, dtype=np.bool_)
        self._temp_c = np.full(n_t, np.nan)
        self._temp_flags = np.zeros(n_t, dtype=np.int64)
        self._heard = np.zeros(modules, dtype=np.bool_)
        # the locations, made once: a pydantic model per extreme per cycle was a third of
        # the master's time (issue 19)
        self._cell_at = tuple(
            CellLocation(module=m, index=i) for m in range(modules) for i in range(counts[m])
        )
        self._temp_at = tuple(
            CellLocation(module=m, index=i) for m in range(modules) for i in range(per)
        )
        self._last: PackSnapshot | None = None
        """The last snapshot, valid while `_changed` is False and for its stale set."""
        self._changed = True

    def on_telemetry(self, msg: CellTelemetry, now_s: float) -> str | None:
        """Take a sample, or say why it was refused (`now_s`: wall clock). Sequence gaps are
        counted; replays and old samples are refused and counted apart."""
        self.last_refusal = None
        m = msg.module
        if m >= len(self._counts):
            return f"module {m} is not part of this system ({len(self._counts)} modules)"
        if len(msg.cell_mv) != self._counts[m]:
            return (f"module {m} reports {len(msg.cell_mv)} cells, "
                    f"the configuration has {self._counts[m]}")  # fmt: skip
        per = self._per
        if len(msg.temp_c) != per:
            # a sensor missing from the sample would go unsupervised without a flag
            return (f"module {m} reports {len(msg.temp_c)} temperature sensors, "
                    f"the configuration has {per}")  # fmt: skip
        admission = self.gate.admit(m, msg.boot_id, msg.seq, msg.sample_ts, now_s)
        self.last_refusal = admission.refused
        if admission.refused is not None:
            self.refused[admission.refused] += 1
            age_s = now_s - msg.sample_ts
            return (f"module {m}: sample {admission.refused.replace('_', ' ')} "
                    f"(seq {msg.seq}, age {age_s:.3f} s)")  # fmt: skip
        self.gaps += admission.gap
        lo, hi = self._offsets[m], self._offsets[m + 1]
        self._cell_v[lo:hi] = np.array(msg.cell_mv, dtype=np.float64) / 1000.0
        self._cell_flags[lo:hi] = msg.cell_flags
        self._balancing[lo:hi] = msg.balancing
        self._temp_c[m * per : (m + 1) * per] = msg.temp_c
        self._temp_flags[m * per : (m + 1) * per] = msg.temp_flags
        self._heard[m] = True
        self._changed = True
        return None

    def snapshot(self, stale_modules: tuple[int, ...]) -> PackSnapshot:
        """The pack picture; `stale_modules` (the supervision's decision, in module order) and
        modules never heard of leave it. The last snapshot again when no sample arrived and
        the stale set is the same."""
        heard = self._heard
        if heard.all():
            stale = tuple(sorted(set(stale_modules))) if stale_modules else ()
        else:
            stale = tuple(sorted(set(stale_modules) | set(np.flatnonzero(~heard).tolist())))
        last = self._last
        if last is not None and not self._changed and last.stale_modules == stale:
            return last
        self._last = self._compute(stale)
        self._changed = False
        self.snapshots_computed += 1
        return self._last

    def _compute(self, stale: tuple[int, ...]) -> PackSnapshot:
        if stale:
            out = np.zeros(len(self._counts), dtype=np.bool_)
            out[[m for m in stale if 0 <= m < out.size]] = True
            gone, gone_t = out[self._module_of_cell], out[self._module_of_temp]
            cell_flags = np.where(gone, 0, self._cell_flags)
            temp_flags = np.where(gone_t, 0, self._temp_flags)
            balancing = self._balancing & ~gone
            cell_v = np.where(gone | (cell_flags != 0), np.nan, self._cell_v)
            temp_c = np.where(gone_t | (temp_flags != 0), np.nan, self._temp_c)
        else:
            cell_flags, temp_flags = self._cell_flags.copy(), self._temp_flags.copy()
            balancing = self._balancing.copy()
            # the usual case, no channel flagged, needs no masking
            cell_v = np.where(cell_flags != 0, np.nan, self._cell_v) if cell_flags.any() else (
                self._cell_v.copy()
            )  # fmt: skip
            temp_c = np.where(temp_flags != 0, np.nan, self._temp_c) if temp_flags.any() else (
                self._temp_c.copy()
            )  # fmt: skip
        for a in (cell_v, temp_c, balancing, cell_flags, temp_flags):
            a.setflags(write=False)
        flags = _channel_faults(cell_flags) | _channel_faults(temp_flags)
        above_at, below_at = (
            _beyond_range_at(self._cell_v, cell_flags) if flags & _OUT_OF_RANGE else (None, None)
        )
        v = _Extremes.of(cell_v)
        t = _Extremes.of(temp_c)
        complete = not stale and v.count == cell_v.size
        return PackSnapshot(
            cell_v=cell_v, temp_c=temp_c, balancing=balancing,
            module_of_cell=self._module_of_cell, cell_flags=cell_flags, temp_flags=temp_flags,
            stale_modules=stale,
            cell_v_min=v.low, cell_v_max=v.high, cell_v_avg=v.avg,
            cell_v_min_at=self._cell_at[v.low_at] if v.low is not None else None,
            cell_v_max_at=self._cell_at[v.high_at] if v.high is not None else None,
            temp_min_c=t.low, temp_max_c=t.high, temp_avg_c=t.avg,
            temp_min_at=self._temp_at[t.low_at] if t.low is not None else None,
            temp_max_at=self._temp_at[t.high_at] if t.high is not None else None,
            spread_v=(v.high - v.low) if v.low is not None and v.high is not None else None,
            sum_of_cells_v=v.total if complete else None,
            open_wire=bool(flags & _OPEN_WIRE),
            out_of_range=bool(flags & _OUT_OF_RANGE),
            sensor_fault=bool(flags & _SENSOR_FAULT),
            cell_v_above_range=None if above_at is None else float(self._cell_v[above_at]),
            cell_v_above_range_at=None if above_at is None else self._cell_at[above_at],
            cell_v_below_range=None if below_at is None else float(self._cell_v[below_at]),
            cell_v_below_range_at=None if below_at is None else self._cell_at[below_at],
        )  # fmt: skip

    def cell_snapshot(self, snap: PackSnapshot) -> CellSnapshot:
        """The snapshot as published: per module, each channel in its place, None unknown.

        Built as plain data and validated once, as a whole: a model built per module cost
        three times as much (issue 19)."""
        per = self._per
        offsets = self._offsets
        stale = set(snap.stale_modules)
        cell_v = _rounded(snap.cell_v, 3)
        temp_c = _rounded(snap.temp_c, 1)
        cell_flags, temp_flags = snap.cell_flags.tolist(), snap.temp_flags.tolist()
        balancing = snap.balancing.tolist()
        modules = [
            {
                "module": m,
                "fresh": m not in stale,
                "cell_v": cell_v[offsets[m] : offsets[m + 1]],
                "cell_flags": cell_flags[offsets[m] : offsets[m + 1]],
                "balancing": balancing[offsets[m] : offsets[m + 1]],
                "temp_c": temp_c[m * per : (m + 1) * per],
                "temp_flags": temp_flags[m * per : (m + 1) * per],
            }
            for m in range(len(self._counts))
        ]
        return CellSnapshot.model_validate({"modules": modules})


@dataclass(frozen=True)
class _Extremes:
    """Min and max with their places, average and sum over the known (non-NaN) values."""

    count: int
    low: float | None = None
    high: float | None = None
    low_at: int = 0
    high_at: int = 0
    avg: float | None = None
    total: float = 0.0

    @classmethod
    def of(cls, values: NDArray[np.float64]) -> _Extremes:
        unknown = np.isnan(values)
        if not unknown.any():  # the usual case: no masking needed
            count = values.size
            low_at, high_at = int(values.argmin()), int(values.argmax())
            total = float(values.sum())
        else:  # the first of equal extremes, as np.nanargmin/nanargmax take it
            count = values.size - int(np.count_nonzero(unknown))
            if count == 0:
                return cls(0)
            low_at = int(np.where(unknown, np.inf, values).argmin())
            high_at = int(np.where(unknown, -np.inf, values).argmax())
            total = float(np.where(unknown, 0.0, values).sum())
        return cls(
            count=count,
            low=float(values[low_at]),
            high=float(values[high_at]),
            low_at=low_at,
            high_at=high_at,
            avg=total / count,
            total=total,
        )


def _known(value: float, digits: int) -> float | None:
    return None if value != value else round(value, digits)  # NaN is not equal to itself


def _rounded(values: NDArray[np.float64], digits: int) -> list[float | None]:
    """`[_known(v, digits) for v in values]`, exactly, without Python's `round` (about 1.5 µs
    a value) for the values already on the decimal grid, the usual case (millivolts / 1000):
    `rint(v * 10**digits) / 10**digits` is the double nearest that decimal (IEEE division is
    correctly rounded), and `round` returns such a double as it is."""
    scale = 10.0**digits
    with np.errstate(invalid="ignore", over="ignore"):
        on_grid = np.rint(values * scale) / scale == values
    out: list[float | None] = values.tolist()
    if not on_grid.all():
        for i in np.flatnonzero(~on_grid).tolist():
            value = out[i]
            assert value is not None
            out[i] = _known(value, digits)
    return out


_OPEN_WIRE = int(ChannelFlag.OPEN_WIRE)
_OUT_OF_RANGE = int(ChannelFlag.OUT_OF_RANGE)
_SENSOR_FAULT = int(ChannelFlag.SENSOR_FAULT)
"""As plain ints: an IntFlag's `&` is a Python call."""


def _beyond_range_at(
    cell_v: NDArray[np.float64], flags: NDArray[np.int64]
) -> tuple[int | None, int | None]:
    """The cells with the highest reading above and the lowest below the measurement range,
    among those flagged out of range alone (the first of equals); None where there is none."""
    alone = flags == _OUT_OF_RANGE
    above, below = alone & (cell_v > CELL_VOLTAGE_MAX_V), alone & (cell_v < CELL_VOLTAGE_MIN_V)
    return (
        int(np.where(above, cell_v, -np.inf).argmax()) if above.any() else None,
        int(np.where(below, cell_v, np.inf).argmin()) if below.any() else None,
    )


def _channel_faults(flags: NDArray[np.int64]) -> int:
    """The fault flags over channels; an open sense wire reads out of range by nature, so such
    a channel raises open_wire only (one cause, one code)."""
    if not flags.any():
        return 0
    own = np.where(flags & _OPEN_WIRE, _OPEN_WIRE, flags)
    return int(np.bitwise_or.reduce(own))
