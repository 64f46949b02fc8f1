"""Aggregation of slave telemetry into the pack picture (pure: time is passed in).

Keeps the latest sample of every module, counts sequence gaps, and computes min, max and
average with their locations, the spread and the sum of cells. Which modules are stale is not
decided here but by the communication supervision (`comm_supervision.py`), and passed in.

Every channel keeps its place: a stale module's channels and a flagged channel (open wire, out
of range, sensor fault) are NaN in the arrays and None in the published snapshot. They leave
the statistics that protection reads; their flags raise their own codes instead (an open-wire
0 V reading is not a deep discharge).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from services.master_core.freshness import Refusal, SampleGate
from shared.config import Topology
from shared.messages import CellLocation, CellSnapshot, CellTelemetry, ChannelFlag, ModuleCells


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

    @property
    def complete(self) -> bool:
        return not self.stale_modules


@dataclass
class _ModuleState:
    telemetry: CellTelemetry | None = None


@dataclass
class PackAggregator:
    topology: Topology
    max_sample_age_s: float = 5.0
    """`comm_loss.max_sample_age_s`: older samples are refused (`freshness.py`)."""
    modules: list[_ModuleState] = field(init=False)
    gaps: int = 0
    """Telemetry samples lost, counted from sequence-number gaps."""
    refused: Counter[str] = field(default_factory=Counter)
    """Samples refused by `SampleGate`, by kind (replayed, too_old, from_the_future)."""

    def __post_init__(self) -> None:
        self.modules = [_ModuleState() for _ in range(self.topology.modules)]
        self.gate = SampleGate(self.topology.modules, self.max_sample_age_s)
        self.last_refusal: Refusal | None = None
        """Why the gate refused the last sample (None: admitted, or refused for its shape)."""
        counts = (
            self.topology.module_cell_counts
            or (self.topology.cells_per_module,) * self.topology.modules
        )
        self._counts = list(counts)
        self._offsets = np.concatenate(([0], np.cumsum(counts)))
        self._module_of_cell = np.repeat(np.arange(self.topology.modules), counts)

    def on_telemetry(self, msg: CellTelemetry, now_s: float) -> str | None:
        """Take a sample, or say why it was refused (`now_s`: wall clock). Sequence gaps are
        counted; replays and old samples are refused and counted apart."""
        self.last_refusal = None
        if msg.module >= len(self.modules):
            return f"module {msg.module} is not part of this system ({len(self.modules)} modules)"
        if len(msg.cell_mv) != self._counts[msg.module]:
            return (f"module {msg.module} reports {len(msg.cell_mv)} cells, "
                    f"the configuration has {self._counts[msg.module]}")  # fmt: skip
        sensors = self.topology.temp_sensors_per_module
        if len(msg.temp_c) != sensors:
            # a sensor missing from the sample would go unsupervised without a flag
            return (f"module {msg.module} reports {len(msg.temp_c)} temperature sensors, "
                    f"the configuration has {sensors}")  # fmt: skip
        admission = self.gate.admit(msg.module, msg.boot_id, msg.seq, msg.sample_ts, now_s)
        self.last_refusal = admission.refused
        if admission.refused is not None:
            self.refused[admission.refused] += 1
            age_s = now_s - msg.sample_ts
            return (f"module {msg.module}: sample {admission.refused.replace('_', ' ')} "
                    f"(seq {msg.seq}, age {age_s:.3f} s)")  # fmt: skip
        self.gaps += admission.gap
        self.modules[msg.module].telemetry = msg
        return None

    def snapshot(self, stale_modules: tuple[int, ...]) -> PackSnapshot:
        """The pack picture; `stale_modules` (the supervision's decision, in module order) and
        modules never heard of leave it."""
        n = int(self._offsets[-1])
        per = self.topology.temp_sensors_per_module
        cell_v = np.full(n, np.nan)
        cell_flags = np.zeros(n, dtype=np.int64)
        balancing = np.zeros(n, dtype=np.bool_)
        temp_c = np.full(per * len(self.modules), np.nan)
        temp_flags = np.zeros(per * len(self.modules), dtype=np.int64)
        missing = tuple(m for m, st in enumerate(self.modules) if st.telemetry is None)
        stale = tuple(sorted(set(stale_modules) | set(missing)))
        for m, state in enumerate(self.modules):
            t = state.telemetry
            if t is None or m in stale:
                continue
            lo = int(self._offsets[m])
            hi = lo + len(t.cell_mv)
            cell_v[lo:hi] = np.asarray(t.cell_mv, dtype=np.float64) / 1000.0
            cell_flags[lo:hi] = t.cell_flags
            balancing[lo:hi] = t.balancing
            temp_c[m * per : (m + 1) * per] = t.temp_c
            temp_flags[m * per : (m + 1) * per] = t.temp_flags
        cell_v[cell_flags != 0] = np.nan
        temp_c[temp_flags != 0] = np.nan
        flags = _channel_faults(cell_flags) | _channel_faults(temp_flags)
        valid = ~np.isnan(cell_v)
        v_min = v_max = v_avg = None
        at_min = at_max = None
        if valid.any():
            i_min = int(np.nanargmin(cell_v))
            i_max = int(np.nanargmax(cell_v))
            v_min, v_max = float(cell_v[i_min]), float(cell_v[i_max])
            v_avg = float(np.nanmean(cell_v))
            at_min, at_max = self._location(i_min), self._location(i_max)
        t_min = t_max = t_avg = None
        at_tmin = at_tmax = None
        if not np.isnan(temp_c).all():
            j_min, j_max = int(np.nanargmin(temp_c)), int(np.nanargmax(temp_c))
            t_min, t_max = float(temp_c[j_min]), float(temp_c[j_max])
            t_avg = float(np.nanmean(temp_c))
            at_tmin = CellLocation(module=j_min // per, index=j_min % per)
            at_tmax = CellLocation(module=j_max // per, index=j_max % per)
        complete = not stale and bool(valid.all())
        return PackSnapshot(
            cell_v=cell_v, temp_c=temp_c, balancing=balancing,
            module_of_cell=self._module_of_cell, cell_flags=cell_flags, temp_flags=temp_flags,
            stale_modules=stale,
            cell_v_min=v_min, cell_v_max=v_max, cell_v_avg=v_avg,
            cell_v_min_at=at_min, cell_v_max_at=at_max,
            temp_min_c=t_min, temp_max_c=t_max, temp_avg_c=t_avg,
            temp_min_at=at_tmin, temp_max_at=at_tmax,
            spread_v=(v_max - v_min) if v_min is not None and v_max is not None else None,
            sum_of_cells_v=float(np.sum(cell_v)) if complete else None,
            open_wire=bool(flags & ChannelFlag.OPEN_WIRE),
            out_of_range=bool(flags & ChannelFlag.OUT_OF_RANGE),
            sensor_fault=bool(flags & ChannelFlag.SENSOR_FAULT),
        )  # fmt: skip

    def cell_snapshot(self, snap: PackSnapshot) -> CellSnapshot:
        """The snapshot as published: per module, each channel in its place, None unknown."""
        per = self.topology.temp_sensors_per_module
        stale = set(snap.stale_modules)
        modules = []
        for m in range(len(self.modules)):
            lo, hi = int(self._offsets[m]), int(self._offsets[m + 1])
            modules.append(
                ModuleCells(
                    module=m,
                    fresh=m not in stale,
                    cell_v=[_known(v, 3) for v in snap.cell_v[lo:hi]],
                    cell_flags=[int(f) for f in snap.cell_flags[lo:hi]],
                    balancing=[bool(b) for b in snap.balancing[lo:hi]],
                    temp_c=[_known(t, 1) for t in snap.temp_c[m * per : (m + 1) * per]],
                    temp_flags=[int(f) for f in snap.temp_flags[m * per : (m + 1) * per]],
                )
            )
        return CellSnapshot(modules=modules)

    def _location(self, cell: int) -> CellLocation:
        m = int(self._module_of_cell[cell])
        return CellLocation(module=m, index=cell - int(self._offsets[m]))


def _known(value: float, digits: int) -> float | None:
    return None if np.isnan(value) else round(float(value), digits)


def _channel_faults(flags: NDArray[np.int64]) -> int:
    """The fault flags over channels; an open sense wire reads out of range by nature, so such
    a channel raises open_wire only (one cause, one code)."""
    open_wire = int(ChannelFlag.OPEN_WIRE)
    own = np.where(flags & open_wire, open_wire, flags)
    return int(np.bitwise_or.reduce(own)) if own.size else 0
