"""The long SOC and voltage history in SQLite: one point every PERSIST_PERIOD_S, kept for the
retention period, read back averaged into at most `max_points` buckets for a plot.

An unknown value is stored as NULL and read back as None, never as a number: a bucket averages
only its known values, and a span without points reads as a gap.
"""

from __future__ import annotations

import threading
from pathlib import Path

from services.config_ui.config_store import migrate, open_database
from services.config_ui.live import HistoryPoint, with_gaps

PERSIST_PERIOD_S = 10.0
"""Resolution of the stored history; the last hour is also kept at 1 s in memory."""
GAP_BUCKETS = 3
"""Buckets without a point that break the plot's line (one empty bucket is timing jitter)."""

SCHEMA_COMPONENT = "pack_history"
# Version 1 stored an unknown start-up state as 0 % at 0 V, in NOT NULL columns. Version 2 keeps
# that history and turns those points (no pack reads 0 V at 0 % SOC) into what they were:
# unknown.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE IF NOT EXISTS pack_history (ts REAL PRIMARY KEY, soc_pct REAL NOT NULL,"
        " voltage_v REAL NOT NULL, current_a REAL NOT NULL)",
    ),
    2: (
        "ALTER TABLE pack_history RENAME TO pack_history_v1",
        "CREATE TABLE pack_history (ts REAL PRIMARY KEY, soc_pct REAL, voltage_v REAL,"
        " current_a REAL)",
        "INSERT INTO pack_history SELECT ts, soc_pct, voltage_v, current_a FROM pack_history_v1"
        " WHERE NOT (soc_pct = 0 AND voltage_v = 0)",
        "INSERT INTO pack_history (ts) SELECT ts FROM pack_history_v1"
        " WHERE soc_pct = 0 AND voltage_v = 0",
        "DROP TABLE pack_history_v1",
    ),
}


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class HistoryStore:
    def __init__(self, path: Path | str, *, retention_s: float) -> None:
        self.retention_s = retention_s
        self._conn = open_database(path)
        migrate(self._conn, SCHEMA_COMPONENT, _MIGRATIONS)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add(self, point: HistoryPoint) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO pack_history VALUES (?, ?, ?, ?)",
                (point.ts, point.soc_pct, point.voltage_v, point.current_a),
            )

    def prune(self, now: float) -> int:
        """Forget points older than the retention; how many went."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM pack_history WHERE ts < ?", (now - self.retention_s,)
            )
            return cur.rowcount

    def query(self, since_ts: float, until_ts: float, max_points: int) -> list[HistoryPoint]:
        """Oldest first; averaged over equal time buckets when there are more points. A run of
        empty buckets reads as one unknown point."""
        bucket_s = max((until_ts - since_ts) / max(max_points, 1), PERSIST_PERIOD_S)
        with self._lock:
            rows = self._conn.execute(
                "SELECT AVG(ts), AVG(soc_pct), AVG(voltage_v), AVG(current_a) FROM pack_history"
                " WHERE ts >= ? AND ts <= ? GROUP BY CAST((ts - ?) / ? AS INTEGER) ORDER BY 1",
                (since_ts, until_ts, since_ts, bucket_s),
            ).fetchall()
        points = (
            HistoryPoint(float(r[0]), _number(r[1]), _number(r[2]), _number(r[3])) for r in rows
        )
        return with_gaps(points, GAP_BUCKETS * bucket_s)
