"""The site this system is a string of (BMS_SITE): its strings, values, limits and events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from services.config_ui.api.deps import Ctx, Viewer

router = APIRouter()


@router.get("/site", tags=["site"])
def site(_: Viewer, ctx: Ctx) -> dict[str, Any]:
    """The site as its controller last published it (`site/state`): the site's SOC, SOH, bus
    voltage, summed current, power and limits (with their reasons), its active codes, and each
    string side by side with its membership (joined, waiting, leaving, out, fault, stale) and
    the reason in words, its SOC, voltage, current and own limits. Every unknown value is null,
    never 0; `stale` is true when the controller has been silent for 2 s (`state_age_s`).
    `events`: the site's joins, leaves and waits, newest first, each naming its string
    (`system`) with its `seq` in the controller's log: the live ones merged with what the site
    controller's log answers (`events_query`, asked at start, after a reconnection and after a
    gap), each once. 404 when this system is not a string of a site (no BMS_SITE)."""
    if ctx.site is None:
        raise HTTPException(404, "this system is not a string of a site (BMS_SITE)")
    return ctx.site.snapshot()
