"""The wizard's "Derive from a C/20 cycle" in real headless Chromium, on a real stack: mosquitto,
the plant with slave agents on its boards, the master on the wire, the web application.

The master's store holds a finished capture (a C/20 cycle takes ~40 h: `ocv_seed`), so the
Cell data step first shows its result: the capacity, the CSV to download (what the master
derived), and the import, which puts the branches into the draft. Then the user starts a new
capture with the button: the page shows it waiting for the full anchor and the master has it
(asked over the bus, not through the page); then reaches the anchor (the plant's cells at
98 %, at rest); then aborts it (confirmed): the page and the master say aborted on request.
Screenshots go to build/test-artifacts/config_ui/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import MosquittoBroker, free_port
from shared.config import SystemConfig
from shared.messages import OcvCaptureArgs
from tests.system.agents import WireStack, publish_config
from tests.system.browser import first_login, ui_is_up
from tests.system.ocv_seed import seed_finished_capture
from tests.system.test_config_ui_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.system.test_master_core import Watch

pytestmark = pytest.mark.broker

PASSWORD = "ocv-capture-password"
STATUS = '[data-testid="ocv-capture-status"]'


@pytest.fixture
def stack(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (deploy/install-system-deps.sh does it)")
    wire = WireStack(mosquitto.url, system_id, tmp_path, initial_soc_pct=98.0)
    config = wire.wire(
        SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    )
    data = tmp_path / "data"
    csv = seed_finished_capture(data / f"master_core-{system_id}.sqlite", config)
    publisher = publish_config(mosquitto.url, config)
    watch = Watch(mosquitto.url, system_id)
    secret = tmp_path / "admin-password"
    secret.write_text(PASSWORD)
    port = free_port()
    try:
        wire.agent()
        wire.master(data_dir=str(data), auto_close="false")
        wire.service(
            "config_ui", data_dir=str(tmp_path / "ui"), ui_port=str(port),
            ui_admin_password_file=str(secret),
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        assert ui_is_up(base), wire.logs()
        yield dict(base=base, csv=csv, watch=watch, wire=wire)
    finally:
        watch.close()
        wire.stop()
        publisher.stop()


def master_state(watch: Watch) -> tuple[str, str | None]:
    """The capture as the master has it, asked over the bus (not through the page)."""
    reply = watch.command("ocv_capture", OcvCaptureArgs(action="status"))
    return reply.result["state"], reply.result.get("abort_reason")


def test_the_wizard_shows_starts_and_aborts_the_capture_and_offers_a_finished_one(
    stack: dict[str, Any],
) -> None:
    from playwright.sync_api import Dialog, expect, sync_playwright

    ui, watch = stack["base"], stack["watch"]
    shots = ARTIFACTS / "config_ui"
    shots.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []

    def confirm(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.on("dialog", confirm)
        try:
            first_login(page, ui, "/wizard", PASSWORD)
            page.goto(f"{ui}/wizard")
            page.select_option('select[name="chemistry"]', "NMC")
            page.click('[data-testid="next"]')
            if "/wizard/chemistry" in page.url:  # the derived settings are listed first
                page.click('[data-testid="next"]')
            expect(page).to_have_url(re.compile(r"/wizard/cells$"))
            status = page.locator(STATUS)
            expect(status).to_have_text("Status: not asked yet.")

            # the finished capture the master keeps: its figures, the CSV and the import
            page.click('[data-testid="ocv-capture"] summary')
            expect(status).to_contain_text("Status: done", timeout=15_000)
            expect(status).to_contain_text(re.compile(r"Capacity \d+\.\d+ Ah"))
            csv_link = page.locator('[data-testid="ocv-capture-csv"]')
            expect(csv_link).to_be_visible()
            with page.expect_download() as download:
                csv_link.click()
            assert Path(download.value.path()).read_text() == stack["csv"]
            page.screenshot(path=shots / "ocv-capture-done.png", full_page=True)
            page.click('[data-testid="ocv-capture-import"]')
            expect(page.locator('[data-testid="ocv-source"]')).to_contain_text(
                "C/20 cycle recorded by the stack"
            )
            expect(page.locator('[data-testid="ocv-note"]')).to_contain_text(
                "charge and discharge branches"
            )

            # a new capture, with the button: shown waiting, and the master has it
            page.click('[data-testid="ocv-capture"] summary')
            expect(status).to_contain_text("Status: done", timeout=15_000)
            page.click('[data-testid="ocv-capture-start"]')
            expect(status).to_contain_text("Status: awaiting_start, phase discharge")
            expect(status).to_contain_text("waiting for the full anchor")
            expect(page.locator('[data-testid="ocv-capture-import"]')).to_be_hidden()
            expect(csv_link).to_be_hidden()
            assert master_state(watch)[0] in ("awaiting_start", "first")
            # at rest at 98 % the full anchor is reached within seconds; the page polls
            expect(status).to_contain_text("Status: first, phase discharge", timeout=40_000)
            expect(status).to_contain_text("full anchor reached")
            page.screenshot(path=shots / "ocv-capture-running.png", full_page=True)

            page.click('[data-testid="ocv-capture-abort"]')
            expect(status).to_contain_text("Status: aborted")
            expect(status).to_contain_text("aborted on request")
            assert dialogs == ["Abort the capture? What it recorded is lost."]
            assert master_state(watch) == ("aborted", "aborted")
            page.screenshot(path=shots / "ocv-capture-aborted.png", full_page=True)
        finally:
            browser.close()
