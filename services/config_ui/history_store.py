"""The long SOC and voltage history in SQLite: one point every PERSIST_PERIOD_S, kept for the
retention period, read back averaged into at most `max_points` buckets for a plot."""

from __future__ import annotations

import threading
from pathlib import Path

from services.config_ui.config_store import open_database
from services.config_ui.live import HistoryPoint

PERSIST_PERIOD_S = 10.0
"""Resolution of the stored history; the last hour is also kept at 1 s in memory."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pack_history (
    ts REAL PRIMARY KEY,
    soc_pct REAL NOT NULL,
    voltage_v REAL NOT NULL,
    current_a REAL NOT NULL
);
"""


class HistoryStore:
    def __init__(self, path: Path | str, *, retention_s: float) -> None:
        self.retention_s = retention_s
        self._conn = open_database(path)
        self._conn.executescript(_SCHEMA)
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
        """Oldest first; averaged over equal time buckets when there are more points."""
        bucket_s = max((until_ts - since_ts) / max(max_points, 1), PERSIST_PERIOD_S)
        with self._lock:
            rows = self._conn.execute(
                "SELECT AVG(ts), AVG(soc_pct), AVG(voltage_v), AVG(current_a) FROM pack_history"
                " WHERE ts >= ? AND ts <= ? GROUP BY CAST((ts - ?) / ? AS INTEGER) ORDER BY 1",
                (since_ts, until_ts, since_ts, bucket_s),
            ).fetchall()
        return [HistoryPoint(float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows]
