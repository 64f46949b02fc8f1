"""The fleet view's page and API."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.fleet_view.app import create_app, render_table
from services.fleet_view.core import SiteView

NOW = 1_800_000_000.0


def row(**fields: object) -> SiteView:
    values: dict[str, object] = dict(
        site="site-a", online=True, bridge_up=True, strings_total=3, strings_joined=2,
        soc=61.54, power_w=-4200.0, worst_level="alarm", worst_code="cell_overvoltage",
        last_seen_s=NOW - 4.0, age_s=4.0, web_url="https://a.example.net/?x=1&y=2",
        summaries=5, events=9, duplicates=0, gaps=1, late=0, missing=2,
    )  # fmt: skip
    values.update(fields)
    return SiteView(**values)  # type: ignore[arg-type]


def test_api_lists_every_site_with_unknowns_as_null() -> None:
    unknown = row(site="site-b", online=None, soc=None, power_w=None, strings_total=None)
    client = TestClient(create_app(lambda now_s: [row(), unknown], clock=lambda: NOW))
    body = client.get("/api/sites").json()
    assert [s["site"] for s in body] == ["site-a", "site-b"]
    assert body[0]["soc"] == 61.54 and body[0]["missing"] == 2
    assert body[1]["soc"] is None and body[1]["online"] is None


def test_page_links_each_site_and_shows_a_dash_for_unknown() -> None:
    page = render_table([row(), row(site="site-b", soc=None, online=None, web_url=None)], NOW)
    assert '<a href="https://a.example.net/?x=1&amp;y=2">site-a</a>' in page
    assert "<td>online</td>" in page
    assert "<td>61.5</td>" in page and "<td>-4.2</td>" in page
    assert "<td>2/3</td>" in page
    assert "<td>alarm cell_overvoltage</td>" in page
    assert "<td>4 s ago</td>" in page
    assert "<td>1 (2 missing)</td>" in page
    b = page[page.index("site-b") :]
    assert "<td>–</td>" in b  # SOC and online unknown
    assert "<td>0.0</td>" not in b


def test_page_escapes_what_a_site_sends() -> None:
    page = render_table([row(worst_code="<script>", web_url='"><script>')], NOW)
    assert "<script>" not in page


def test_healthz_is_503_while_the_broker_is_disconnected() -> None:
    up = [False]
    client = TestClient(create_app(lambda now_s: [], clock=lambda: NOW, connected=lambda: up[0]))
    down = client.get("/healthz")
    assert down.status_code == 503 and down.json()["mqtt_connected"] is False
    up[0] = True
    ok = client.get("/healthz")
    assert ok.status_code == 200 and ok.json()["mqtt_connected"] is True
