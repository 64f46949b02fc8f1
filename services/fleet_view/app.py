"""The fleet view's web application: `GET /api/sites` (JSON), `GET /` (a plain table) and
`GET /healthz` (the container's health check: 200 while the central broker is connected, 503
while it is not, so an orchestrator sees a view that cannot hear the fleet as not ready).

Read-only: it shows what `FleetView` holds and links each site to its own web application.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import asdict

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse

from services.fleet_view.core import SiteView

Snapshot = Callable[[float], list[SiteView]]

_COLUMNS = ("site", "online", "strings", "SOC %", "power kW", "worst", "last seen", "gaps")


def _cell(value: object) -> str:
    return "–" if value is None else html.escape(str(value))


def render_table(sites: list[SiteView], now_s: float) -> str:
    """The page: one row per site; unknown values are a dash, never 0."""
    rows = []
    for s in sites:
        name = _cell(s.site)
        if s.web_url is not None:
            name = f'<a href="{html.escape(s.web_url, quote=True)}">{name}</a>'
        strings = None if s.strings_total is None else f"{s.strings_joined}/{s.strings_total}"
        power_kw = None if s.power_w is None else f"{s.power_w / 1000:.1f}"
        soc = None if s.soc is None else f"{s.soc:.1f}"
        worst = s.worst_level if s.worst_code is None else f"{s.worst_level} {s.worst_code}"
        seen = None if s.last_seen_s is None else f"{now_s - s.last_seen_s:.0f} s ago"
        online = {True: "online", False: "offline", None: None}[s.online]
        gaps = f"{s.gaps} ({s.missing} missing)"
        cells = [name, *map(_cell, (online, strings, soc, power_kw, worst, seen, gaps))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Fleet</title>"
        "<meta http-equiv='refresh' content='5'></head><body><h1>Fleet</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "</body></html>"
    )


def create_app(
    snapshot: Snapshot,
    clock: Callable[[], float] = time.time,
    connected: Callable[[], bool] | None = None,
) -> FastAPI:
    """`connected` says whether the central broker is connected; None: not known (200)."""
    app = FastAPI(title="BMS fleet view", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz(response: Response) -> dict[str, object]:
        up = None if connected is None else connected()
        if up is False:
            response.status_code = 503
        return {"status": "ok" if up is not False else "broker disconnected", "mqtt_connected": up}

    @app.get("/api/sites")
    def sites() -> list[dict[str, object]]:
        return [asdict(s) for s in snapshot(clock())]

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        now_s = clock()
        return render_table(snapshot(now_s), now_s)

    return app
