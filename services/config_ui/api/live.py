"""Live values: the pack state, a server-sent event stream, the history and the services."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from services.config_ui.api.deps import Ctx, Viewer
from services.config_ui.auth import session_of

router = APIRouter()
SESSION_RECHECK_S = 5.0
"""How often a live stream checks that its session still exists."""


@router.get("/state", tags=["live"])
def state(_: Viewer, ctx: Ctx) -> dict[str, Any]:
    """The latest pack state and cells (`stale` when the master has gone quiet). Every unknown
    value is null (`power_w` too when voltage or current is); each cell and temperature
    sensor sits at its own place, null with its flags when unknown."""
    return ctx.live.snapshot()


@router.get("/live", tags=["live"], response_class=EventSourceResponse)
async def live(request: Request, _: Viewer, ctx: Ctx) -> EventSourceResponse:
    """Server-sent events: a `state` event with the `/api/state` data several times a second."""
    period = ctx.settings.ui_live_period_s

    async def stream() -> AsyncIterator[dict[str, str]]:
        checked_s = time.monotonic()
        while not await request.is_disconnected():
            if time.monotonic() - checked_s >= SESSION_RECHECK_S:
                # a stream lives for hours: a logout or a deleted user must end it too
                checked_s = time.monotonic()
                session = await run_in_threadpool(session_of, request)
                if session is None or session.must_change_password:
                    yield {"event": "session_ended", "data": "{}"}
                    return
            yield {"event": "state", "data": json.dumps(ctx.live.snapshot())}
            await asyncio.sleep(period)

    return EventSourceResponse(stream(), ping=15)


@router.get("/history", tags=["live"])
def history(
    _: Viewer, ctx: Ctx, seconds: Annotated[float, Query(gt=0, le=3660 * 86400)] = 3600
) -> list[dict[str, float | None]]:
    """SOC, voltage and current, oldest first: once a second over the last hour, averaged
    from the stored 10 s points over longer spans (at most 1500 points). A value is null where
    it was unknown, and a point of nulls marks a span where nothing was recorded."""
    return [
        {"ts": p.ts, "soc": p.soc_pct, "voltage": p.voltage_v, "current": p.current_a}
        for p in ctx.history_points(seconds)
    ]


@router.get("/services", tags=["live"])
def services(_: Viewer, ctx: Ctx) -> dict[str, Any]:
    """Each service: online or not, the configuration version it acknowledged, and the
    fields it runs with a value set on its host instead (`in_use`). `in_use` at the top lists
    the same by field (dotted path), each with the sentence the pages show at that field."""
    latest = ctx.latest()
    return {
        "active_version": None if latest is None else latest.version,
        "services": ctx.live.services(),
        "in_use": ctx.live.in_use(),
    }


@router.get("/events/recent", tags=["live"])
def recent_events(
    _: Viewer, ctx: Ctx, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[dict[str, Any]]:
    """The events received on the bus, newest first, each once (gaps in the master's `seq`
    are fetched from its log). `source` is the topic level the broker let the publisher
    write, never the payload's claim."""
    return [
        e.model_dump(mode="json", exclude={"schema_version"}) for e in ctx.live.recent_events(limit)
    ]
