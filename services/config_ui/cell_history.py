"""Per-cell history for people: each cell's voltage, its temperature sensors and its balancing
time, one point a minute per module, kept for a retention period in SQLite.

Storage is bounded by design: a row per module and minute (the cells of the module as one JSON
list), so a 196-cell string of 14 modules writes 20,160 rows a day whatever its cell count, and
rows older than the retention go. `MinuteAccumulator` (pure, times passed in) averages the
snapshots the master publishes (`pack/cells`, about once a second) into those minutes; an
unknown reading counts nowhere and a minute without any known reading stays None, never 0.
Balancing time is the time between consecutive snapshots while the cell's switch was on,
each gap capped (`BALANCING_GAP_MAX_S`) so a silence is not counted as balancing.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.config_ui.config_store import migrate, open_database
from shared.messages import CellSnapshot, ModuleCells

MINUTE_S = 60.0
BALANCING_GAP_MAX_S = 5.0
"""Longest gap between snapshots counted as balancing (the master publishes about 1 Hz)."""
SCHEMA_COMPONENT = "cell_history"
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE IF NOT EXISTS cell_history (module INTEGER NOT NULL, ts REAL NOT NULL,"
        " cell_v TEXT NOT NULL, temp_c TEXT NOT NULL, balancing_s TEXT NOT NULL,"
        " PRIMARY KEY (module, ts))",
        "CREATE INDEX IF NOT EXISTS cell_history_ts ON cell_history (ts)",
    ),
}


@dataclass(frozen=True)
class ModuleMinute:
    """One module's minute: the averages of its known readings (None: none known)."""

    module: int
    ts: float
    """Start of the minute (UTC seconds)."""
    cell_v: list[float | None]
    temp_c: list[float | None]
    balancing_s: list[float]


@dataclass
class _Sums:
    cell_sum: list[float] = field(default_factory=list)
    cell_n: list[int] = field(default_factory=list)
    temp_sum: list[float] = field(default_factory=list)
    temp_n: list[int] = field(default_factory=list)
    balancing_s: list[float] = field(default_factory=list)

    def fit(self, cells: int, temps: int) -> None:
        """A module whose channel count changed (a new configuration) starts its lists again."""
        if len(self.cell_sum) != cells or len(self.temp_sum) != temps:
            self.cell_sum, self.cell_n = [0.0] * cells, [0] * cells
            self.balancing_s = [0.0] * cells
            self.temp_sum, self.temp_n = [0.0] * temps, [0] * temps


def _mean(total: float, n: int) -> float | None:
    return round(total / n, 4) if n else None


class MinuteAccumulator:
    """Averages cell snapshots into one `ModuleMinute` per module and minute."""

    def __init__(self) -> None:
        self._minute_ts: float | None = None
        self._sums: dict[int, _Sums] = {}
        self._last: tuple[float, dict[int, list[bool]]] | None = None

    def add(self, cells: CellSnapshot, at_s: float) -> list[ModuleMinute]:
        """Take one snapshot received at `at_s`; the minutes it completed, if any."""
        minute = math.floor(at_s / MINUTE_S) * MINUTE_S
        self._count_balancing(at_s)  # the gap belongs to the minute its switch state began in
        done = self.flush(before_ts=minute)
        self._minute_ts = minute
        for m in cells.modules:
            self._add_module(m)
        self._last = (at_s, {m.module: list(m.balancing) for m in cells.modules})
        return done

    def _count_balancing(self, at_s: float) -> None:
        if self._last is None:
            return
        last_s, switches = self._last
        gap_s = min(max(at_s - last_s, 0.0), BALANCING_GAP_MAX_S)
        for module, on in switches.items():
            sums = self._sums.get(module)
            if sums is None or len(sums.balancing_s) != len(on):
                continue
            for i, active in enumerate(on):
                if active:
                    sums.balancing_s[i] += gap_s

    def _add_module(self, m: ModuleCells) -> None:
        sums = self._sums.setdefault(m.module, _Sums())
        sums.fit(len(m.cell_v), len(m.temp_c))
        for i, v in enumerate(m.cell_v):
            if v is not None and m.fresh:
                sums.cell_sum[i] += v
                sums.cell_n[i] += 1
        for i, t in enumerate(m.temp_c):
            if t is not None and m.fresh:
                sums.temp_sum[i] += t
                sums.temp_n[i] += 1

    def flush(self, before_ts: float = math.inf) -> list[ModuleMinute]:
        """The minute in progress when it started before `before_ts` (all of it by default)."""
        if self._minute_ts is None or self._minute_ts >= before_ts:
            return []
        out = [
            ModuleMinute(
                module=module,
                ts=self._minute_ts,
                cell_v=[_mean(s, n) for s, n in zip(sums.cell_sum, sums.cell_n, strict=True)],
                temp_c=[_mean(s, n) for s, n in zip(sums.temp_sum, sums.temp_n, strict=True)],
                balancing_s=[round(b, 1) for b in sums.balancing_s],
            )
            for module, sums in sorted(self._sums.items())
        ]
        self._sums = {}
        self._minute_ts = None
        return out


@dataclass(frozen=True)
class CellPoint:
    ts: float
    voltage_v: float | None
    balancing_s: float


class CellHistoryStore:
    """The minutes in SQLite (thread-safe); queries for one cell, a CSV window and totals."""

    def __init__(self, path: Path | str, *, retention_s: float) -> None:
        self.retention_s = retention_s
        self._conn = open_database(path)
        migrate(self._conn, SCHEMA_COMPONENT, _MIGRATIONS)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add(self, minutes: list[ModuleMinute]) -> None:
        rows = [
            (m.module, m.ts, json.dumps(m.cell_v), json.dumps(m.temp_c), json.dumps(m.balancing_s))
            for m in minutes
        ]
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO cell_history VALUES (?, ?, ?, ?, ?)", rows
            )

    def prune(self, now: float) -> int:
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM cell_history WHERE ts < ?", (now - self.retention_s,)
            )
            return cur.rowcount

    def _rows(
        self, since_ts: float, until_ts: float, module: int | None = None
    ) -> list[tuple[int, float, str, str, str]]:
        where, args = "ts >= ? AND ts <= ?", [since_ts, until_ts]
        if module is not None:
            where += " AND module = ?"
            args.append(module)
        with self._lock:
            rows: list[tuple[int, float, str, str, str]] = self._conn.execute(
                f"SELECT module, ts, cell_v, temp_c, balancing_s FROM cell_history WHERE {where}"
                " ORDER BY ts, module",
                args,
            ).fetchall()
        return rows

    def cell(self, module: int, index: int, since_ts: float, until_ts: float) -> list[CellPoint]:
        """One cell's minutes, oldest first (a minute from before a re-wiring that had no such
        cell is left out)."""
        out = []
        for _, ts, cell_v, _temps, balancing in self._rows(since_ts, until_ts, module):
            volts, secs = json.loads(cell_v), json.loads(balancing)
            if index < len(volts):
                out.append(CellPoint(ts, volts[index], secs[index]))
        return out

    def minutes(self, since_ts: float, until_ts: float) -> Iterator[ModuleMinute]:
        for module, ts, cell_v, temp_c, balancing in self._rows(since_ts, until_ts):
            yield ModuleMinute(
                module, ts, json.loads(cell_v), json.loads(temp_c), json.loads(balancing)
            )

    def balancing_totals(self, since_ts: float, until_ts: float) -> dict[int, list[float]]:
        """Seconds of balancing per cell, by module, over the window."""
        totals: dict[int, list[float]] = {}
        for m in self.minutes(since_ts, until_ts):
            acc = totals.setdefault(m.module, [0.0] * len(m.balancing_s))
            if len(acc) != len(m.balancing_s):
                continue  # a re-wired module: the newer layout is counted from its first minute
            for i, s in enumerate(m.balancing_s):
                acc[i] += s
        return {k: [round(s, 1) for s in v] for k, v in totals.items()}

    def spread_by_day(self, since_ts: float, until_ts: float) -> list[tuple[float, float | None]]:
        """The cell voltage spread (highest minus lowest minute average over all modules) as
        the mean over each UTC day's minutes with two known cells or more: (day, mV)."""
        by_minute: dict[float, list[float]] = {}
        for m in self.minutes(since_ts, until_ts):
            by_minute.setdefault(m.ts, []).extend(v for v in m.cell_v if v is not None)
        days: dict[float, list[float]] = {}
        for ts, volts in by_minute.items():
            if len(volts) >= 2:
                day = math.floor(ts / 86400.0) * 86400.0
                days.setdefault(day, []).append((max(volts) - min(volts)) * 1000.0)
        return [(day, round(sum(v) / len(v), 1)) for day, v in sorted(days.items())]
