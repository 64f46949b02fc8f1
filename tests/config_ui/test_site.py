"""The site page and its REST endpoint: the strings side by side, the site's values and
limits, its joins and leaves; every unknown value null, never 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.config_ui.site_live import STALE_AFTER_S, SiteLive
from shared.bus import InMemoryBus
from shared.config.site import SiteConfig
from shared.messages import Event
from shared.messages.pack import Limits
from shared.messages.site import SiteConfigMessage, SiteLimits, SiteState, StringState
from shared.topics import EVENTS, SITE_CONFIG, SITE_STATE
from tests.config_ui.conftest import UiHarness, make_harness
from tests.config_ui.test_api import wait_for

SITE = "site-a"
SYSTEMS = ("ui-test", "s2", "s3")


@pytest.fixture
def site_ui(tmp_path: Path) -> Iterator[UiHarness]:
    yield from make_harness(tmp_path, site=SITE)


def site_state() -> SiteState:
    own = Limits(charge_voltage_v=55.2, discharge_voltage_v=44.8, charge_current_a=90.0,
                 discharge_current_a=120.0)  # fmt: skip
    return SiteState(
        site=SITE, soc=61.5, soh=None, voltage_v=52.3, current_a=-20.0, power_w=-1046.0,
        limits=SiteLimits(charge_voltage_v=55.2, discharge_voltage_v=44.8, charge_current_a=162.0,
                          discharge_current_a=216.0, charge_reason="max_current"),
        warnings=["cell_imbalance"], strings_total=3, strings_joined=2,
        strings=[
            StringState(system="ui-test", membership="joined", soc=61.0, voltage_v=52.3,
                        current_a=-10.0, capacity_ah=100.0, limits=own, contactors="closed"),
            StringState(system="s2", membership="joined", soc=62.0, voltage_v=52.3,
                        current_a=-10.0, capacity_ah=100.0, limits=own, contactors="closed"),
            StringState(system="s3", membership="waiting", reason="3.4 V above the bus, waits "
                        "for the bus to rise", soc=None, voltage_v=55.7, current_a=None),
        ],
    )  # fmt: skip


def publish_site(ui: UiHarness) -> InMemoryBus:
    controller = InMemoryBus(ui.broker, system=SITE, service="site_controller", kind="test")
    controller.start()
    config = SiteConfig.model_validate({"site": SITE, "strings": [{"system": s} for s in SYSTEMS]})
    controller.publish(SITE_CONFIG, SiteConfigMessage(config=config))
    controller.publish(SITE_STATE, site_state())
    controller.publish(
        EVENTS,
        Event(level="info", kind="info", code="site_string_joined",
              text="s2 closed onto the DC bus", values={"system": "s2", "voltage_v": 52.3}),
    )  # fmt: skip
    controller.publish(
        EVENTS,
        Event(level="info", kind="info", code="site_string_waiting",
              text="s3: 3.4 V above the bus", values={"system": "s3"}),
    )  # fmt: skip
    return controller


def site_json(ui: UiHarness) -> dict[str, Any]:
    r = ui.client.get("/api/site")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_without_a_site_there_is_no_site_page(ui: UiHarness) -> None:
    ui.login()
    assert ui.client.get("/api/site").status_code == 404
    assert ui.client.get("/site").status_code == 404
    assert 'href="/site"' not in ui.client.get("/").text


def test_the_site_needs_a_session(site_ui: UiHarness) -> None:
    assert site_ui.client.get("/api/site").status_code == 401


def test_the_site_endpoint_shows_the_strings_side_by_side(site_ui: UiHarness) -> None:
    site_ui.login()
    publish_site(site_ui)
    wait_for(lambda: len(site_json(site_ui)["events"]) == 2)
    data = site_json(site_ui)
    assert data["site"] == SITE and data["configured"] and not data["stale"]
    assert data["config_strings"] == list(SYSTEMS)
    state = data["state"]
    assert state["soc"] == 61.5 and state["voltage_v"] == 52.3 and state["current_a"] == -20.0
    assert state["soh"] is None  # unknown stays null, never 0
    assert state["limits"]["charge_current_a"] == 162.0
    assert state["limit_words"]["charge"] == "Full current: nothing derates"
    assert state["warnings"] == ["cell_imbalance"]
    by_system = {s["system"]: s for s in state["strings"]}
    assert [s["system"] for s in state["strings"]] == list(SYSTEMS)
    assert by_system["s2"]["membership"] == "joined"
    assert by_system["s2"]["limits"]["charge_current_a"] == 90.0
    waiting = by_system["s3"]
    assert waiting["membership"] == "waiting" and "above the bus" in waiting["reason"]
    assert waiting["soc"] is None and waiting["current_a"] is None and waiting["limits"] is None
    newest, older = data["events"]
    assert (newest["code"], newest["system"]) == ("site_string_waiting", "s3")
    assert (older["code"], older["system"]) == ("site_string_joined", "s2")
    assert older["source"] == "site_controller"


def test_the_site_page_is_linked_and_loads_its_script(site_ui: UiHarness) -> None:
    site_ui.login()
    assert 'href="/site"' in site_ui.client.get("/").text
    page = site_ui.client.get("/site")
    assert page.status_code == 200
    for marker in ('data-testid="strings-table"', 'data-testid="site-events"',
                   'data-testid="site-ccl"', "/static/site.js", f">{SITE}<"):  # fmt: skip
        assert marker in page.text
    assert site_ui.client.get("/static/site.js").status_code == 200


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_silent_controller_makes_the_site_stale_and_keeps_unknowns_null() -> None:
    clock = Clock()
    live = SiteLive(SITE, clock=clock)
    assert live.snapshot()["state"] is None and live.snapshot()["stale"]
    live.on_state(site_state())
    assert not live.snapshot()["stale"]
    clock.now += STALE_AFTER_S + 0.1
    snap = live.snapshot()
    assert snap["stale"] and snap["state_age_s"] == pytest.approx(STALE_AFTER_S + 0.1)
    assert snap["state"]["soh"] is None
