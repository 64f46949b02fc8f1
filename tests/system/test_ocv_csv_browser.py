"""The wizard's OCV import in real headless Chromium: the web application on mosquitto.

On the Cell data step a user reads what the generic LFP table means for the SOC's accuracy,
uploads a CSV with a bad line (named, nothing changes), then the cells' charge and discharge
branches at two temperatures; the step then shows the branches and says how the estimator uses
them. Screenshots go to build/test-artifacts/config_ui/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.broker import MosquittoBroker, free_port
from shared.config.chemistry import get_preset
from tests.system.agents import ServiceProcess
from tests.system.browser import first_login, ui_is_up
from tests.system.test_config_ui_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    serious_violations,
)

pytestmark = pytest.mark.broker

PASSWORD = "ocv-csv-password"


@pytest.fixture
def ui(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (deploy/install-system-deps.sh does it)")
    secret = tmp_path / "admin-password"
    secret.write_text(PASSWORD)
    port = free_port()
    service = ServiceProcess(
        "config_ui", mosquitto.url, system_id, tmp_path, data_dir=str(tmp_path / "ui"),
        ui_port=str(port), ui_admin_password_file=str(secret),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    try:
        assert ui_is_up(base), service.log()
        yield base
    finally:
        service.stop()


def branches_csv() -> str:
    lfp = get_preset("LFP")
    rows = ["soc_pct,ocv_charge_v,ocv_discharge_v,temperature_c,capacity_pct"]
    for t, shift, cap in ((0.0, -0.01, 90.0), (25.0, 0.0, 100.0)):
        for s, v in zip(lfp.ocv_table_soc_pct, lfp.ocv_table_v, strict=True):
            rows.append(f"{s:g},{v + 0.01 + shift:.4f},{v - 0.01 + shift:.4f},{t:g},{cap:g}")
    return "\n".join(rows) + "\n"


def test_the_cell_data_step_imports_ocv_branches_from_a_csv(ui: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = ARTIFACTS / "config_ui"
    shots.mkdir(parents=True, exist_ok=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("soc_pct,ocv_charge_v,ocv_discharge_v\n0,2.9,2.95\n100,3.40,3.38\n")
    good = tmp_path / "cell-maker-x.csv"
    good.write_text(branches_csv())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            first_login(page, ui, "/wizard", PASSWORD)
            page.goto(f"{ui}/wizard")
            page.select_option('select[name="chemistry"]', "LFP")
            page.click('[data-testid="next"]')
            if "/wizard/chemistry" in page.url:  # the derived settings are listed first
                page.click('[data-testid="next"]')
            expect(page).to_have_url(re.compile(r"/wizard/cells$"))
            note = page.locator('[data-testid="ocv-note"]')
            expect(note).to_contain_text("Generic LFP OCV table")
            expect(note).to_contain_text("no OCV corrections")
            assert serious_violations(page) == [], "cell data step"

            page.click('[data-testid="ocv-csv"] summary')
            page.set_input_files('[data-testid="ocv-csv-file"]', str(bad))
            page.click('[data-testid="ocv-csv-import"]')
            expect(page.locator('[data-testid="ocv-csv-error"]')).to_contain_text(
                "line 2: ocv_charge_v 2.9 V is below ocv_discharge_v 2.95 V"
            )
            expect(note).to_contain_text("Generic LFP OCV table")  # nothing changed
            page.screenshot(path=shots / "ocv-csv-error.png", full_page=True)

            page.set_input_files('[data-testid="ocv-csv-file"]', str(good))
            page.fill('[data-testid="ocv-csv"] input[name="source"]', "Maker X, C/20 at 0/25 C")
            page.click('[data-testid="ocv-csv-import"]')
            expect(page).to_have_url(re.compile(r"/wizard/cells$"))
            expect(note).to_contain_text("charge and discharge branches at 2 temperatures")
            expect(page.locator('[data-testid="ocv-source"]')).to_contain_text("Maker X")
            temps = page.locator('input[name="chemistry_overrides.ocv_temperatures_c"]')
            expect(temps).to_have_value("0, 25")
            charge = page.locator('input[name="chemistry_overrides.ocv_charge_v"]')
            expect(charge).to_have_value(re.compile(r"^2\.833, "))
            page.screenshot(path=shots / "ocv-csv-imported.png", full_page=True)
            # the step is valid: Next goes on to the topology
            page.click('[data-testid="next"]')
            expect(page).to_have_url(re.compile(r"/wizard/topology$"))
        finally:
            browser.close()
