"""The user access application in real headless Chromium, on a running stack on mosquitto.

Logs in, configures a system with the wizard, applies it, and watches the dashboard update
with live values from the master; screenshots go to build/test-artifacts/config_ui/.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.broker import MosquittoBroker, free_port
from tests.system.agents import ROOT, ServiceProcess, wait_until

pytestmark = pytest.mark.broker

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium keeps calling home from a machine without internet access.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps",
]  # fmt: skip
ARTIFACTS = Path(os.environ.get("BMS_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
PASSWORD = "browser-test-password"


@pytest.fixture
def stack(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[str]:
    """Slaves, master and UI; no configuration until the wizard applies one."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (deploy/install-system-deps.sh does it)")
    secret = tmp_path / "admin-password"
    secret.write_text(PASSWORD)
    port = free_port()
    procs = [
        ServiceProcess("slave_agent", mosquitto.url, system_id, tmp_path, initial_soc_pct="60"),
        ServiceProcess(
            "master_core", mosquitto.url, system_id, tmp_path,
            data_dir=str(tmp_path / "master"), load_profile="constant:-8",
        ),
        ServiceProcess(
            "config_ui", mosquitto.url, system_id, tmp_path,
            data_dir=str(tmp_path / "ui"), ui_port=str(port),
            ui_admin_password_file=str(secret), ui_live_period_s="0.25",
        ),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(up, 20), procs[2].log()
        yield base
    finally:
        for p in procs:
            p.stop()


def test_wizard_configures_the_system_and_the_dashboard_goes_live(stack: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = ARTIFACTS / "config_ui"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda dialog: dialog.accept())  # every confirmation: yes
        try:
            page.goto(f"{stack}/")
            expect(page).to_have_url(re.compile(r"/login\?next=/$"))
            page.fill('input[name="username"]', "admin")
            page.fill('input[name="password"]', PASSWORD)
            page.click('button[type="submit"]')
            expect(page.get_by_text("No configuration yet")).to_be_visible()
            page.screenshot(path=shots / "01-no-configuration.png", full_page=True)

            # 1-3: chemistry, cells, topology
            page.goto(f"{stack}/wizard")
            page.select_option('select[name="chemistry"]', "LFP")
            page.fill('input[name="name"]', "Browser rack")
            page.click('[data-testid="next"]')
            page.fill('input[name="cell_capacity_ah"]', "50")
            page.click('[data-testid="next"]')
            page.fill('input[name="topology.modules"]', "2")
            page.fill('input[name="topology.cells_per_module"]', "8")
            page.screenshot(path=shots / "02-wizard-topology.png", full_page=True)
            page.click('[data-testid="next"]')
            # 4: protection, three levels on one chart; a wrong value is shown at its field
            expect(page.locator('[data-testid="level-chart-cell_overvoltage"]')).to_be_visible()
            field = 'input[name="protection.cell_overvoltage.alarm.threshold"]'
            good = page.input_value(field)
            page.fill(field, "9")
            page.click('[data-testid="next"]')
            group = page.locator("fieldset", has_text="Cell overvoltage").first
            expect(group.locator(".field-error").first).to_contain_text("threshold")
            page.screenshot(path=shots / "03-wizard-protection-error.png", full_page=True)
            page.fill(field, good)
            page.click('[data-testid="next"]')
            # 5-8: balancing, contactors, current sensor, interfaces keep their defaults
            for title in ("Balancing", "Contactors", "Current sensor", "Interfaces"):
                expect(page.locator('[data-testid="wizard-title"]')).to_contain_text(title)
                page.click('[data-testid="next"]')
            # 9: review as a diff, then apply
            expect(page.locator('[data-testid="diff-table"]')).to_contain_text("Browser rack")
            page.fill('input[name="comment"]', "commissioning")
            page.screenshot(path=shots / "04-wizard-review.png", full_page=True)
            page.click('[data-testid="apply"]')
            expect(page.locator('[data-testid="applied"]')).to_contain_text("Version 1 applied")

            # every service acknowledges version 1
            def acknowledged() -> bool:
                page.reload()
                table = page.locator('[data-testid="services-table"]').inner_text()
                rows = [r for r in table.splitlines() if r.startswith(("master_core", "slave"))]
                return len(rows) == 2 and all("\t1" in r and "refused" not in r for r in rows)

            assert wait_until(acknowledged, 20, step_s=0.5)
            page.screenshot(path=shots / "05-config-acknowledged.png", full_page=True)

            # the dashboard: live values at two or more updates a second
            page.goto(f"{stack}/")
            status = page.locator('[data-testid="live-status"]')
            expect(status).to_have_class("live", timeout=30_000)
            volts = float(page.locator('[data-testid="pack-voltage"]').inner_text())
            assert 16 * 2.5 < volts < 16 * 3.65  # 16 LFP cells
            first = int(status.get_attribute("data-updates") or 0)
            time.sleep(2.0)
            updates = int(status.get_attribute("data-updates") or 0) - first
            assert updates >= 4, f"{updates} updates in 2 s"
            expect(page.locator('[data-testid="pack-contactors"]')).not_to_have_text("–")
            expect(page.locator("#heatmap .hrow")).to_have_count(2)
            assert page.locator('[data-testid="cells-chart"]').bounding_box() is not None
            page.screenshot(path=shots / "06-dashboard-live.png", full_page=True)

            # a control asks for confirmation and shows the master's reply
            page.click('button[data-command="contactors"][data-args*="open"]')
            reply = page.locator('[data-testid="command-reply"]')
            expect(reply).to_contain_text("accepted by the master", timeout=10_000)
            expect(page.locator('[data-testid="pack-contactors"]')).to_have_text(
                re.compile("standby|opening"), timeout=10_000
            )
            page.screenshot(path=shots / "07-dashboard-opened.png", full_page=True)

            page.goto(f"{stack}/events")
            expect(page.locator('[data-testid="events-table"] tbody tr').first).to_be_visible()
            page.screenshot(path=shots / "08-events.png", full_page=True)

            # the API documentation renders from the site's own files
            page.goto(f"{stack}/docs")
            expect(page.get_by_text("/api/commands/contactors").first).to_be_visible()
            page.screenshot(path=shots / "09-api-docs.png")
        except Exception:
            page.screenshot(path=shots / "failure.png", full_page=True)
            raise
        finally:
            browser.close()
