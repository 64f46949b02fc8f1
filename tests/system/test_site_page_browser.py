"""The site page in real headless Chromium: the web application (BMS_SITE) on mosquitto, fed
with a site state and the site's events as the site controller publishes them.

Screenshots go to build/test-artifacts/config_ui/.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import MosquittoBroker, free_port
from shared.bus import MqttBus
from shared.commands import CommandOutcome, CommandServer
from shared.config.site import SiteConfig
from shared.messages import CommandArgs, Event, SiteOperationArgs
from shared.messages.pack import Limits
from shared.messages.site import SiteConfigMessage, SiteLimits, SiteState, StringState
from shared.settings import parse_mqtt_url
from shared.topics import EVENTS, SITE_CONFIG, SITE_STATE
from tests.system.agents import ServiceProcess
from tests.system.browser import first_login, ui_is_up
from tests.system.test_config_ui_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    serious_violations,
)

pytestmark = pytest.mark.broker

PASSWORD = "site-page-password"


def site_state(site: str, systems: list[str]) -> SiteState:
    own = Limits(charge_voltage_v=55.2, discharge_voltage_v=44.8, charge_current_a=90.0,
                 discharge_current_a=120.0)  # fmt: skip
    return SiteState(
        site=site, soc=61.5, soh=None, voltage_v=52.3, current_a=-20.0, power_w=-1046.0,
        limits=SiteLimits(charge_voltage_v=55.2, discharge_voltage_v=44.8, charge_current_a=162.0,
                          discharge_current_a=216.0),
        strings_total=3, strings_joined=2,
        strings=[
            StringState(system=systems[0], membership="joined", soc=61.0, voltage_v=52.3,
                        current_a=-10.0, capacity_ah=100.0, limits=own, contactors="closed"),
            StringState(system=systems[1], membership="joined", soc=62.0, voltage_v=52.3,
                        current_a=-10.0, capacity_ah=100.0, limits=own, contactors="closed"),
            StringState(system=systems[2], membership="waiting",
                        reason="3.4 V above the bus, waits for the bus to rise", voltage_v=55.7),
        ],
    )  # fmt: skip


@pytest.fixture
def site_ui(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (deploy/install-system-deps.sh does it)")
    site, systems = f"{system_id}-site", [system_id, f"{system_id}-b", f"{system_id}-c"]
    secret = tmp_path / "admin-password"
    secret.write_text(PASSWORD)
    port = free_port()
    ui = ServiceProcess(
        "config_ui", mosquitto.url, system_id, tmp_path, data_dir=str(tmp_path / "ui"),
        ui_port=str(port), ui_admin_password_file=str(secret), site=site,
    )  # fmt: skip
    controller = MqttBus(parse_mqtt_url(mosquitto.url), system=site, service="site_controller",
                         kind="test")  # fmt: skip
    assert controller.start(wait_s=10)
    config = SiteConfig.model_validate({"site": site, "strings": [{"system": s} for s in systems]})
    controller.publish(SITE_CONFIG, SiteConfigMessage(config=config))
    stop = threading.Event()
    asked: list[SiteOperationArgs] = []

    def operation(args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, SiteOperationArgs)
        asked.append(args)
        return CommandOutcome(True, result={"operation": args.action, "held": 3})

    CommandServer(controller, {"site_operation": operation})

    def feed() -> None:
        while not stop.is_set():
            controller.publish(SITE_STATE, site_state(site, systems))
            controller.process(0.2)  # and answer the site commands

    threading.Thread(target=feed, daemon=True).start()
    base = f"http://127.0.0.1:{port}"

    try:
        assert ui_is_up(base), ui.log()
        yield base, controller, systems, asked
    finally:
        stop.set()
        controller.stop()
        ui.stop()


def test_the_site_page_shows_the_strings_side_by_side_and_the_joins(site_ui: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, controller, systems, asked = site_ui
    shots = ARTIFACTS / "config_ui"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            first_login(page, base, "/site", PASSWORD)
            page.goto(f"{base}/")
            page.click('nav a[href="/site"]')
            expect(page).to_have_url(re.compile(r"/site$"))
            expect(page.get_by_test_id("site-status")).to_contain_text("2 of 3 strings joined")
            rows = page.locator('[data-testid="strings-table"] tbody tr')
            expect(rows).to_have_count(3)
            expect(rows.nth(0)).to_have_attribute("data-membership", "joined")
            expect(rows.nth(2)).to_contain_text("waiting")
            expect(rows.nth(2)).to_contain_text("3.4 V above the bus")
            # unknown is shown as unknown, never as 0
            expect(rows.nth(2).locator("td").nth(3)).to_have_text("–")
            expect(page.get_by_test_id("site-soh")).to_have_text("–")
            expect(page.get_by_test_id("site-soc")).to_have_text("61.5")
            expect(page.get_by_test_id("site-ccl")).to_have_text("162.0 A")
            controller.publish(
                EVENTS,
                Event(level="info", kind="info", code="site_string_joined",
                      text=f"{systems[1]} closed onto the DC bus", values={"system": systems[1]}),
            )  # fmt: skip
            events = page.locator('[data-testid="site-events"] tbody tr')
            expect(events.first).to_contain_text("site_string_joined")
            expect(events.first).to_contain_text(systems[1])
            # an operator disconnects the whole site (the dialog asks first)
            expect(page.get_by_test_id("op-operation")).to_have_text("connected")
            page.once("dialog", lambda dialog: dialog.accept())
            page.click('[data-testid="op-disconnect"]')
            expect(page.get_by_test_id("op-operation-result")).to_have_text("site disconnected")
            assert [(a.action, a.by) for a in asked] == [("disconnect", "operator")]
            page.screenshot(path=shots / "site-page.png", full_page=True)
            assert serious_violations(page) == [], "site page"
        finally:
            browser.close()
