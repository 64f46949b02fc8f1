"""Per-cell history: one cell's minutes, balancing time per cell, the imbalance trend, and a
CSV export of a window. Paths take the contract's 0-based module and cell indices; labels and
the CSV number modules and cells from 1, as people do ("M4 · C9")."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from services.config_ui.api.deps import Ctx, Viewer
from services.config_ui.cell_history import CellHistoryStore
from services.config_ui.context import UiContext
from shared.alarm_words import place_of
from shared.config.limits import CELLS_IN_SERIES_MAX
from shared.messages import CellLocation

router = APIRouter(prefix="/cells", tags=["cells"])
SPAN_MAX_S = 3660 * 86400
CSV_SPAN_MAX_S = 31 * 86400
"""One export at most a month of minutes (14 modules: 625,000 rows)."""
Index = Annotated[int, Path(ge=0, lt=CELLS_IN_SERIES_MAX)]
Seconds = Annotated[float, Query(gt=0, le=SPAN_MAX_S)]


def _store(ctx: UiContext) -> CellHistoryStore:
    if ctx.cell_history is None:
        raise HTTPException(503, "the cell history is not kept by this web application")
    return ctx.cell_history


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


@router.get("/{module}/{index}/history")
def cell_history(
    module: Index, index: Index, _: Viewer, ctx: Ctx, seconds: Seconds = 86400.0
) -> dict[str, Any]:
    """One cell's minutes over the last `seconds`, oldest first: its mean voltage (null where
    nothing was known) and its balancing time in that minute."""
    now = time.time()
    points = _store(ctx).cell(module, index, now - seconds, now)
    return {
        "module": module,
        "index": index,
        "label": place_of(CellLocation(module=module, index=index), sensor=False)[0],
        "points": [
            {"ts": p.ts, "voltage_v": p.voltage_v, "balancing_s": p.balancing_s} for p in points
        ],
    }


@router.get("/balancing")
def balancing(_: Viewer, ctx: Ctx, seconds: Seconds = 86400.0) -> dict[str, list[float]]:
    """Seconds each cell balanced over the last `seconds`, by module (0-based keys)."""
    now = time.time()
    return {str(m): v for m, v in _store(ctx).balancing_totals(now - seconds, now).items()}


@router.get("/imbalance")
def imbalance(
    _: Viewer, ctx: Ctx, days: Annotated[float, Query(gt=0, le=3660)] = 30.0
) -> list[dict[str, Any]]:
    """The cell voltage spread (highest minus lowest cell, minute means) as a daily mean in
    mV: a string drifting apart shows as a rising line."""
    now = time.time()
    rows = _store(ctx).spread_by_day(now - days * 86400, now)
    return [{"day": _iso(day)[:10], "ts": day, "spread_mv": mv} for day, mv in rows]


@router.get("/history.csv")
def history_csv(
    _: Viewer,
    ctx: Ctx,
    since_ts: Annotated[float, Query(ge=0)],
    until_ts: Annotated[float | None, Query(ge=0)] = None,
) -> Response:
    """Every cell's minutes in the window (at most 31 days) as CSV: time (UTC seconds and
    ISO), module and cell from 1, the cell's number in the series, voltage (empty: unknown)
    and balancing seconds."""
    until = time.time() if until_ts is None else until_ts
    if not 0 < until - since_ts <= CSV_SPAN_MAX_S:
        raise HTTPException(422, "the window must be after since_ts and at most 31 days long")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["ts", "time_utc", "module", "cell", "series", "voltage_v", "balancing_s"])
    config = ctx.live.broker_config
    counts = (
        [config.topology.cells_in_module(m) for m in range(config.topology.modules)]
        if config is not None
        else []
    )
    for m in _store(ctx).minutes(since_ts, until):
        before = sum(counts[: m.module]) if m.module < len(counts) else None
        for i, (volts, secs) in enumerate(zip(m.cell_v, m.balancing_s, strict=True)):
            series = "" if before is None else before + i + 1
            value = "" if volts is None else f"{volts:.4f}"
            writer.writerow([f"{m.ts:.0f}", _iso(m.ts), m.module + 1, i + 1, series, value, secs])
    name = f"cells-{ctx.system}-{_iso(since_ts)[:10]}.csv"
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
