"""The wizard's "derive from a C/20 cycle": the REST path to the master's `ocv_capture`
command, the CSV of a finished capture, and its import through the wizard's CSV import."""

from __future__ import annotations

from services.config_ui.wizard.ocv_csv import parse_ocv_csv
from services.master_core.estimation.ocv_capture import CaptureResult
from shared.config.chemistry import get_preset
from shared.messages import OcvCaptureArgs
from tests.config_ui.conftest import UiHarness


def derived() -> CaptureResult:
    """A result as the capture makes it: the NMC preset's curve +- 10 mV, on its grid."""
    preset = get_preset("NMC")
    soc = tuple(preset.ocv_table_soc_pct)
    mid = preset.ocv_table_v
    n = len(soc)
    return CaptureResult(
        soc_pct=soc,
        charge_v=tuple(v + 0.01 for v in mid),
        discharge_v=tuple(v - 0.01 for v in mid),
        cell_charge_v=(tuple(v + 0.01 for v in mid),),
        cell_discharge_v=(tuple(v - 0.01 for v in mid),),
        capacity_ah=97.5,
        charge_capacity_ah=97.6,
        resistance_ohm=(0.002,),
        temperature_c=24.0,
        spread_charge_v=(0.0,) * n,
        spread_discharge_v=(0.0,) * n,
        monotone_fix_v=0.0,
        crossing_fix_v=0.0,
    )


def test_start_and_abort_reach_the_master(ui: UiHarness) -> None:
    ui.login()
    r = ui.client.post("/api/wizard/ocv-capture", json={"action": "start", "order": "empty_first"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted"
    r = ui.client.post("/api/wizard/ocv-capture", json={"action": "abort"})
    assert r.status_code == 200
    sent = [args for name, args in ui.master.received if name == "ocv_capture"]
    assert sent == [
        OcvCaptureArgs(action="start", order="empty_first"),
        OcvCaptureArgs(action="abort"),
    ]
    bad = ui.client.post("/api/wizard/ocv-capture", json={"action": "status"})
    assert bad.status_code == 422  # asking is GET


def test_the_status_and_no_csv_while_running(ui: UiHarness) -> None:
    ui.login()
    running = {"state": "first", "phase": "discharge", "reason": "slow discharge running",
               "progress_pct": 12.5}  # fmt: skip
    ui.master.results["ocv_capture"] = running
    r = ui.client.get("/api/wizard/ocv-capture")
    assert r.status_code == 200 and r.json()["result"] == running
    assert ui.master.received[-1] == ("ocv_capture", OcvCaptureArgs(action="status"))
    csv = ui.client.get("/api/wizard/ocv-capture.csv")
    assert csv.status_code == 409
    assert "first" in csv.json()["detail"]


def test_a_finished_capture_imports_through_the_csv_import(ui: UiHarness) -> None:
    ui.login()
    result = derived()
    ui.master.results["ocv_capture"] = {
        "state": "done", "csv": result.csv(), "summary": result.summary(),
    }  # fmt: skip
    r = ui.client.get("/api/wizard/ocv-capture.csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text == result.csv()
    assert parse_ocv_csv(r.text).errors == []
    put = ui.client.put("/api/wizard/ocv-csv", json={"csv": r.text, "source": "C/20 cycle"})
    assert put.status_code == 200, put.text
    assert put.json()["branches"] is True
    draft = ui.client.get("/api/wizard/draft").json()["draft"]
    overrides = draft["chemistry_overrides"]
    assert overrides["ocv_charge_v"] == [round(v, 4) for v in result.charge_v]
    assert overrides["ocv_temperatures_c"] == [24.0]
    assert overrides["ocv_source"] == "C/20 cycle"


def test_only_admins_and_the_page_has_the_button(ui: UiHarness) -> None:
    assert ui.client.get("/api/wizard/ocv-capture").status_code == 401
    ui.login()
    page = ui.client.get("/wizard/cells")
    assert page.status_code == 200
    assert 'data-testid="ocv-capture-start"' in page.text
    assert "/static/ocv_capture.js" in page.text
    assert ui.client.get("/static/ocv_capture.js").status_code == 200
