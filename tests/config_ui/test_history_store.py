"""The stored SOC and voltage history on a real SQLite file: kept, averaged, pruned."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config_ui.history_store import HistoryStore
from services.config_ui.live import HistoryPoint


def point(ts: float, soc: float) -> HistoryPoint:
    return HistoryPoint(ts, soc, 300.0 + soc, -10.0)


def test_points_survive_a_restart_oldest_first(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "ui.sqlite", retention_s=86400)
    for i in range(5):
        store.add(point(1000.0 + 10 * i, 50.0 + i))
    store.close()
    again = HistoryStore(tmp_path / "ui.sqlite", retention_s=86400)
    got = again.query(1000.0, 1040.0, max_points=100)
    assert [p.soc_pct for p in got] == [50.0, 51.0, 52.0, 53.0, 54.0]
    assert got[-1].ts == 1040.0


def test_a_long_span_is_averaged_into_at_most_max_points(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "ui.sqlite", retention_s=10 * 86400)
    for i in range(8640):  # a day at 10 s
        store.add(point(10.0 * i, (i % 100) / 1.0))
    got = store.query(0.0, 86400.0, max_points=144)
    assert 140 <= len(got) <= 145
    assert got == sorted(got, key=lambda p: p.ts)
    # each bucket of 600 s holds 60 points of a 0..99 saw: its mean lies in between
    assert all(0.0 < p.soc_pct < 99.0 for p in got)
    assert sum(p.soc_pct for p in got) / len(got) == pytest.approx(49.5, abs=1.0)
    assert got[0].voltage_v == pytest.approx(300.0 + got[0].soc_pct)


def test_prune_forgets_what_is_past_the_retention(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "ui.sqlite", retention_s=100.0)
    for ts in (0.0, 50.0, 150.0, 190.0):
        store.add(point(ts, 60.0))
    assert store.prune(now=200.0) == 2
    assert [p.ts for p in store.query(0.0, 200.0, 10)] == [150.0, 190.0]
