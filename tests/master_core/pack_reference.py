"""The pack picture computed from scratch, as `PackAggregator.snapshot` did before it became
incremental (issue 19): the oracle its property test compares against, and the "before" of
bench/bench_master_cycle.py. It rebuilds every array from the latest sample of each module."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.master_core.pack import PackSnapshot, _channel_faults
from shared.config import Topology
from shared.config.limits import CELL_VOLTAGE_MAX_V, CELL_VOLTAGE_MIN_V
from shared.messages import CellLocation, CellTelemetry, ChannelFlag


def reference_snapshot(
    topology: Topology, latest: Mapping[int, CellTelemetry], stale_modules: tuple[int, ...]
) -> PackSnapshot:
    """`latest`: the last admitted sample of every module heard of."""
    modules = topology.modules
    counts = topology.module_cell_counts or (topology.cells_per_module,) * modules
    offsets = np.concatenate(([0], np.cumsum(counts)))
    module_of_cell = np.repeat(np.arange(modules), counts)
    n = int(offsets[-1])
    per = topology.temp_sensors_per_module
    cell_v = np.full(n, np.nan)
    cell_flags = np.zeros(n, dtype=np.int64)
    balancing = np.zeros(n, dtype=np.bool_)
    temp_c = np.full(per * modules, np.nan)
    temp_flags = np.zeros(per * modules, dtype=np.int64)
    missing = tuple(m for m in range(modules) if m not in latest)
    stale = tuple(sorted(set(stale_modules) | set(missing)))
    for m, t in latest.items():
        if m in stale:
            continue
        lo = int(offsets[m])
        hi = lo + len(t.cell_mv)
        cell_v[lo:hi] = np.asarray(t.cell_mv, dtype=np.float64) / 1000.0
        cell_flags[lo:hi] = t.cell_flags
        balancing[lo:hi] = t.balancing
        temp_c[m * per : (m + 1) * per] = t.temp_c
        temp_flags[m * per : (m + 1) * per] = t.temp_flags
    above = [  # (reading, cell): read above the range, flagged out of range and nothing else
        (float(v), i)
        for i, (v, f) in enumerate(zip(cell_v.tolist(), cell_flags.tolist(), strict=True))
        if f == ChannelFlag.OUT_OF_RANGE and v > CELL_VOLTAGE_MAX_V
    ]
    highest = max(above, key=lambda a: (a[0], -a[1])) if above else None  # the first of equals
    below = [
        (float(v), i)
        for i, (v, f) in enumerate(zip(cell_v.tolist(), cell_flags.tolist(), strict=True))
        if f == ChannelFlag.OUT_OF_RANGE and v < CELL_VOLTAGE_MIN_V
    ]
    lowest = min(below) if below else None  # (reading, cell): the first of equals
    cell_v[cell_flags != 0] = np.nan
    temp_c[temp_flags != 0] = np.nan
    flags = _channel_faults(cell_flags) | _channel_faults(temp_flags)
    valid = ~np.isnan(cell_v)

    def location(cell: int) -> CellLocation:
        m = int(module_of_cell[cell])
        return CellLocation(module=m, index=cell - int(offsets[m]))

    v_min = v_max = v_avg = None
    at_min = at_max = None
    if valid.any():
        i_min, i_max = int(np.nanargmin(cell_v)), int(np.nanargmax(cell_v))
        v_min, v_max = float(cell_v[i_min]), float(cell_v[i_max])
        v_avg = float(np.nanmean(cell_v))
        at_min, at_max = location(i_min), location(i_max)
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
        module_of_cell=module_of_cell, cell_flags=cell_flags, temp_flags=temp_flags,
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
        cell_v_above_range=None if highest is None else highest[0],
        cell_v_above_range_at=None if highest is None else location(highest[1]),
        cell_v_below_range=None if lowest is None else lowest[0],
        cell_v_below_range_at=None if lowest is None else location(lowest[1]),
    )  # fmt: skip
