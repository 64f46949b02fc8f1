"""Per-cell history: minute averages of the cell snapshots, balancing time, a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from services.config_ui.cell_history import (
    BALANCING_GAP_MAX_S,
    CellHistoryStore,
    MinuteAccumulator,
)
from shared.messages import CellSnapshot, ModuleCells


def snapshot(
    volts: list[float | None], *, balancing: list[bool] | None = None, fresh: bool = True
) -> CellSnapshot:
    n = len(volts)
    module = ModuleCells(
        module=0, fresh=fresh, cell_v=volts, cell_flags=[0] * n,
        balancing=balancing or [False] * n, temp_c=[25.0, None], temp_flags=[0, 0],
    )  # fmt: skip
    other = ModuleCells(
        module=1, fresh=True, cell_v=[3.30] * n, cell_flags=[0] * n, balancing=[False] * n,
        temp_c=[24.0, 24.0], temp_flags=[0, 0],
    )  # fmt: skip
    return CellSnapshot(modules=[module, other])


def test_a_minute_averages_the_known_readings_and_unknown_stays_none() -> None:
    acc = MinuteAccumulator()
    t0 = 1_800_000_000.0  # a whole minute
    assert acc.add(snapshot([3.30, None, 3.40]), t0 + 1) == []
    assert acc.add(snapshot([3.32, None, None]), t0 + 2) == []
    acc.add(snapshot([5.9, 5.9, 5.9], fresh=False), t0 + 3)  # a stale module counts nowhere
    [m0, m1] = acc.add(snapshot([3.50, 3.50, 3.50]), t0 + 61)  # the next minute closes it
    assert (m0.module, m0.ts) == (0, t0)
    assert m0.cell_v == [3.31, None, 3.4]
    assert m0.temp_c == [25.0, None]
    assert m1.cell_v == [3.3, 3.3, 3.3]
    [rest, _] = acc.flush()
    assert rest.ts == t0 + 60 and rest.cell_v == [3.5, 3.5, 3.5]


def test_balancing_time_counts_the_gaps_while_on_and_caps_a_silence() -> None:
    acc = MinuteAccumulator()
    t0 = 1_800_000_000.0
    on = [True, False]
    for k in range(10):  # 1 Hz for 10 s with cell 0 balancing
        acc.add(snapshot([3.4, 3.3], balancing=on), t0 + k)
    acc.add(snapshot([3.4, 3.3], balancing=on), t0 + 40)  # 30 s of silence: capped
    [m0, _] = acc.flush()
    assert m0.balancing_s == [9.0 + BALANCING_GAP_MAX_S, 0.0]


def test_the_store_answers_one_cell_totals_and_the_daily_spread(tmp_path: Path) -> None:
    store = CellHistoryStore(tmp_path / "ui.sqlite", retention_s=3 * 86400)
    acc = MinuteAccumulator()
    t0 = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # midnight UTC
    minutes = []
    for k in range(180):  # three minutes at 1 Hz, cell 2 of module 0 balancing throughout
        minutes += acc.add(snapshot([3.30, 3.31, 3.36], balancing=[False, False, True]), t0 + k)
    minutes += acc.flush()
    store.add(minutes)
    points = store.cell(0, 2, t0, t0 + 3600)
    assert [p.ts for p in points] == [t0, t0 + 60, t0 + 120]
    assert [p.voltage_v for p in points] == [3.36] * 3
    assert points[1].balancing_s == 60.0
    assert store.cell(0, 7, t0, t0 + 3600) == []  # no such cell
    totals = store.balancing_totals(t0, t0 + 3600)
    assert totals[0] == [0.0, 0.0, 179.0] and totals[1] == [0.0, 0.0, 0.0]
    assert store.spread_by_day(t0, t0 + 86400) == [(t0, 60.0)]  # 3.36 - 3.30 V
    # a reopened file keeps it; the retention prunes it
    store.close()
    again = CellHistoryStore(tmp_path / "ui.sqlite", retention_s=3 * 86400)
    assert len(again.cell(0, 2, t0, t0 + 3600)) == 3
    assert again.prune(t0 + 3 * 86400 + 30) == 2  # the first minute of both modules
    assert len(again.cell(0, 2, t0, t0 + 3600)) == 2
    again.close()
