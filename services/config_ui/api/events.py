"""The master's event log, filtered, as JSON and CSV.

The CSV is for people with a spreadsheet: besides the master's `values` (JSON, the message
contract's 0-based `module` and `index`), the place an event names is in `module` and `cell`
or `sensor` columns numbered from 1, as the web application shows it (M2 · C4 is module 2,
cell 4), and as the cell history CSV numbers them."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator

from services.config_ui.api.deps import Ctx, Viewer
from services.config_ui.context import UiContext
from shared.messages import (
    EventsQueryArgs,
)
from shared.messages.events import EventKind, EventLevel
from shared.numbering import number_of
from shared.protection_codes import spec_of

router = APIRouter()


EVENT_COLUMNS = ("ts", "level", "kind", "code", "text", "source", "values")
PLACE_COLUMNS = ("module", "cell", "sensor")
"""The CSV's place columns, numbered from 1 (empty: the event names no single place)."""


def place_numbers(code: str, values: object) -> tuple[int | str, int | str, int | str]:
    """(module, cell, sensor) of an event for people, from 1, or "" where it names none: a
    raise event's `module` and `index` (0-based) are a cell or a sensor by its code."""
    spec = spec_of(code)
    if spec is None or spec.located_at is None or not isinstance(values, dict):
        return "", "", ""
    module, index = values.get("module"), values.get("index")
    if type(module) is not int or type(index) is not int or module < 0 or index < 0:
        return "", "", ""
    if spec.located_at.startswith("temp"):
        return number_of(module), "", number_of(index)
    return number_of(module), number_of(index), ""


async def query_events(ctx: UiContext, f: EventFilter) -> list[dict[str, Any]]:
    """The master filters its whole log, so an old window or a rare code is found too."""
    rows = await ctx.bridge.events(EventsQueryArgs(**f.model_dump()))
    if rows is None:
        raise HTTPException(504, "the master did not answer the event query")
    if not isinstance(rows, list):
        raise HTTPException(502, f"the master refused the event query: {rows.reason}")
    return rows


_CODE = re.compile(r"^[a-z0-9_]{1,64}$")
_CODE_SEPARATORS = re.compile(r"[\s-]+")


class EventFilter(BaseModel):
    """The event log's filters as the page's form sends them: text as typed, blank = any."""

    since_ts: float = Field(0.0, ge=0.0, le=1e10)
    until_ts: float | None = Field(None, ge=0.0, le=1e10)
    min_level: EventLevel = "info"
    kind: EventKind | None = None
    code: str | None = Field(
        None,
        max_length=200,
        description="part of the code; case, spaces and '-' are read as in the codes "
        "('Cell over' finds cell_overvoltage)",
    )
    text: str | None = Field(None, max_length=100, description="part of the text")
    limit: int = Field(500, ge=1, le=1000)

    @field_validator("code", "text", mode="before")
    @classmethod
    def _blank_is_any(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("code")
    @classmethod
    def _as_in_the_codes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = _CODE_SEPARATORS.sub("_", value.casefold())
        if not _CODE.match(code):
            raise ValueError(
                f"an event code has letters, digits and '_' only (e.g. cell_overvoltage); "
                f"{value!r} cannot be part of one"
            )
        return code


@router.get("/events", tags=["events"])
async def events(_: Viewer, ctx: Ctx, f: Annotated[EventFilter, Query()]) -> list[dict[str, Any]]:
    """The master's event log, newest first, filtered."""
    return await query_events(ctx, f)


@router.get("/events.csv", tags=["events"], response_class=StreamingResponse)
async def events_csv(_: Viewer, ctx: Ctx, f: Annotated[EventFilter, Query()]) -> Response:
    rows = await query_events(ctx, f)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*EVENT_COLUMNS[:1], "time_utc", *EVENT_COLUMNS[1:-1], *PLACE_COLUMNS,
                     EVENT_COLUMNS[-1]])  # fmt: skip
    for row in rows:
        ts = float(row.get("ts", 0.0))
        values = row.get("values", {})
        writer.writerow(
            [
                f"{ts:.3f}",
                _iso(ts),
                *(row.get(c, "") for c in EVENT_COLUMNS[1:-1]),
                *place_numbers(str(row.get("code", "")), values),
                json.dumps(values, sort_keys=True),
            ]
        )
    name = f"events-{ctx.system}.csv"
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
