"""The site configuration page in real headless Chromium: the web application that keeps the
site configuration (BMS_UI_SITE_CONFIG) and the real site controller on mosquitto. A problem
shows at its field; an applied version is acknowledged by the site controller.

Screenshots go to build/test-artifacts/config_ui/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import MosquittoBroker, free_port
from tests.system.agents import ServiceProcess
from tests.system.browser import first_login, ui_is_up
from tests.system.test_config_ui_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    serious_violations,
)

pytestmark = pytest.mark.broker

PASSWORD = "site-config-password"


@pytest.fixture
def keeper(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (deploy/install-system-deps.sh does it)")
    site = f"{system_id}-site"
    secret = tmp_path / "admin-password"
    secret.write_text(PASSWORD)
    port = free_port()
    ui = ServiceProcess(
        "config_ui", mosquitto.url, system_id, tmp_path, data_dir=str(tmp_path / "ui"),
        ui_port=str(port), ui_admin_password_file=str(secret), site=site, ui_site_config="true",
    )  # fmt: skip
    controller = ServiceProcess(
        "site_controller", mosquitto.url, site, tmp_path, data_dir=str(tmp_path / "site")
    )
    base = f"http://127.0.0.1:{port}"

    try:
        assert ui_is_up(base), ui.log()
        yield base, site, system_id
    finally:
        controller.stop()
        ui.stop()


def test_the_site_configuration_page_shows_problems_at_their_field_and_the_ack(
    keeper: Any,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, site, system_id = keeper
    shots = ARTIFACTS / "config_ui"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            first_login(page, base, "/site/config", PASSWORD)
            page.goto(f"{base}/")
            page.click('nav a[href="/site/config"]')
            expect(page).to_have_url(re.compile(r"/site/config$"))
            rows = page.locator('[data-testid="site-strings"] tbody tr')
            expect(rows).to_have_count(1)
            page.fill('[data-path="strings.0.system"]', "s1")
            page.click('[data-testid="add-string"]')
            page.fill('[data-path="strings.1.system"]', "s1")  # twice
            page.fill('[data-path="join_window_v"]', "3")
            page.click('[data-testid="apply-site"]')
            error = page.locator('[data-error-for="strings.1.system"]')
            expect(error).to_contain_text("listed twice (also string 1)")
            expect(page.locator('[data-path="strings.1.system"]')).to_have_class(
                re.compile("invalid")
            )
            page.screenshot(path=shots / "site-config-error.png", full_page=True)
            page.fill('[data-path="strings.1.system"]', site)  # the site's own id
            page.click('[data-testid="apply-site"]')
            expect(page.locator('[data-error-for="site"]')).to_contain_text(
                "is also the id of one of its strings"
            )
            expect(error).to_contain_text("is also the id of one of its strings")
            page.fill('[data-path="strings.1.system"]', "s2")
            page.click('[data-testid="apply-site"]')
            expect(page.get_by_test_id("site-result")).to_have_text("version 1 applied")
            expect(error).to_have_text("")
            versions = page.locator('[data-testid="site-versions"] tbody tr')
            expect(versions).to_have_count(1)
            expect(versions.first).to_contain_text("2 strings: s1, s2")
            # the real site controller runs it and says so
            expect(page.get_by_test_id("site-ack")).to_contain_text(
                "site_controller runs version 1 (the newest)", timeout=15_000
            )
            expect(page.locator('[data-path="join_window_v"]')).to_have_value("3")
            page.screenshot(path=shots / "site-config.png", full_page=True)
            assert serious_violations(page) == [], "site configuration page"
        finally:
            browser.close()
    del system_id
