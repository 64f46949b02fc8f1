"""The stored SOC and voltage history on a real SQLite file: kept, averaged, pruned."""

from __future__ import annotations

import sqlite3
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


# --- unknown stays unknown (issue 12) ----------------------------------------------------------
def test_an_unknown_is_stored_as_null_and_read_back_as_none(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "ui.sqlite", retention_s=86400)
    store.add(HistoryPoint(1000.0, None, None, None))  # start-up: nothing measured yet
    store.add(HistoryPoint(1010.0, 55.0, None, -3.0))
    got = store.query(1000.0, 1010.0, max_points=100)
    assert [(p.soc_pct, p.voltage_v, p.current_a) for p in got] == [
        (None, None, None), (55.0, None, -3.0)
    ]  # fmt: skip


def test_a_bucket_averages_only_the_known_points(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "ui.sqlite", retention_s=86400)
    store.add(HistoryPoint(0.0, None, None, None))
    store.add(HistoryPoint(10.0, 60.0, 400.0, 1.0))
    store.add(HistoryPoint(600.0, None, None, None))
    (known, unknown) = store.query(0.0, 1200.0, max_points=2)
    assert (known.soc_pct, known.voltage_v) == (60.0, 400.0)  # not (0 + 60) / 2
    assert (unknown.soc_pct, unknown.voltage_v) == (None, None)


def test_a_span_without_points_reads_as_a_gap(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "ui.sqlite", retention_s=86400)
    for ts in (0.0, 10.0, 20.0, 3600.0, 3610.0):  # the UI was down for an hour
        store.add(point(ts, 50.0))
    got = store.query(0.0, 3610.0, max_points=10_000)
    assert [p.soc_pct for p in got] == [50.0, 50.0, 50.0, None, 50.0, 50.0]
    assert got[2].ts < got[3].ts < got[4].ts


def test_a_history_from_an_older_version_is_kept_and_its_zeros_become_unknown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ui.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE pack_history (ts REAL PRIMARY KEY, soc_pct REAL NOT NULL,"
        " voltage_v REAL NOT NULL, current_a REAL NOT NULL)"
    )
    # the old UI stored an unknown start-up state as 0 % at 0 V
    old.executemany(
        "INSERT INTO pack_history VALUES (?, ?, ?, ?)",
        [(0.0, 0.0, 0.0, 0.0), (10.0, 55.0, 400.0, -2.0), (20.0, 0.0, 380.0, 0.0)],
    )
    old.commit()
    old.close()
    store = HistoryStore(path, retention_s=86400)
    store.add(HistoryPoint(30.0, None, None, None))
    got = store.query(0.0, 30.0, max_points=100)
    assert [(p.soc_pct, p.voltage_v, p.current_a) for p in got] == [
        (None, None, None), (55.0, 400.0, -2.0), (0.0, 380.0, 0.0), (None, None, None)
    ]  # fmt: skip
