"""OCV branches from a CSV in the wizard: the parser, the REST API and the Cell data page."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.config_ui.wizard.ocv_csv import parse_ocv_csv
from services.master_core.estimator import PackEstimator
from shared.config.chemistry import ChemistryOverrides, get_preset

from .conftest import UiHarness

LFP = get_preset("LFP")


def lfp_csv(gap_v: float = 0.01, temps: tuple[float, ...] = ()) -> str:
    head = "soc_pct,ocv_charge_v,ocv_discharge_v" + (",temperature_c" if temps else "")
    rows = [head]
    for t in temps or (None,):
        shift = 0.0 if t is None else 0.0005 * (t - 25.0)
        for s, v in zip(LFP.ocv_table_soc_pct, LFP.ocv_table_v, strict=True):
            row = f"{s:g},{v + gap_v + shift:.4f},{v - gap_v + shift:.4f}"
            rows.append(row + ("" if t is None else f",{t:g}"))
    return "\n".join(rows) + "\n"


def test_branches_become_the_override_fields_with_their_middle() -> None:
    got = parse_ocv_csv(lfp_csv(), "maker X")
    assert got.errors == []
    v = got.values
    assert v["chemistry_overrides.ocv_table_soc_pct"] == list(LFP.ocv_table_soc_pct)
    assert v["chemistry_overrides.ocv_table_v"] == pytest.approx(LFP.ocv_table_v, abs=1e-4)
    assert v["chemistry_overrides.ocv_temperatures_c"] == []
    assert v["chemistry_overrides.ocv_source"] == "maker X"
    chem = ChemistryOverrides.model_validate({k.split(".")[1]: x for k, x in v.items()}).apply(LFP)
    assert chem.ocv_blocks == 1


def test_temperatures_with_different_points_are_put_on_one_grid() -> None:
    text = """# two temperatures, different SOC points, any row order
soc_pct,ocv_charge_v,ocv_discharge_v,temperature_c,capacity_pct
100,3.40,3.38,25,100
0,2.85,2.83,25,100
50,3.30,3.28,25,100
0,2.80,2.78,0,85
40,3.25,3.23,0,85
100,3.35,3.33,0,85
"""
    got = parse_ocv_csv(text)
    assert got.errors == []
    v = got.values
    assert v["chemistry_overrides.ocv_table_soc_pct"] == [0.0, 40.0, 50.0, 100.0]
    assert v["chemistry_overrides.ocv_temperatures_c"] == [0.0, 25.0]
    assert v["chemistry_overrides.capacity_temperature_pct"] == [85.0, 100.0]
    # 0 degC first, interpolated at 50 %; 25 degC interpolated at 40 %
    assert v["chemistry_overrides.ocv_charge_v"] == pytest.approx(
        [2.80, 3.25, 3.25 + 0.1 * 10 / 60, 3.35, 2.85, 2.85 + 0.45 * 40 / 50, 3.30, 3.40],
        abs=1e-5,
    )
    # the single curve: the middle at 25 degC
    assert v["chemistry_overrides.ocv_table_v"] == pytest.approx(
        [2.84, 2.84 + 0.45 * 40 / 50, 3.29, 3.39], abs=1e-4
    )


def test_a_single_curve_clears_older_branches() -> None:
    got = parse_ocv_csv("soc_pct,ocv_v\n0,2.9\n50,3.3\n100,3.4\n")
    assert got.errors == [] and not got.branches
    assert got.values["chemistry_overrides.ocv_charge_v"] == []
    assert got.values["chemistry_overrides.ocv_table_v"] == [2.9, 3.3, 3.4]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no header"),
        ("soc_pct,ocv_charge_v\n0,3\n", "line 1: the header needs soc_pct and either both"),
        ("soc_pct,ocv_v,volts\n0,3,3\n", "line 1: unknown column(s) volts"),
        ("soc_pct,ocv_v\n0,3.0\n50,abc\n100,3.4\n", "line 3: ocv_v 'abc' is not a number"),
        ("soc_pct,ocv_v\n0,3.0\n50,3.3,1\n100,3.4\n", "line 3: 3 values for 2 columns"),
        ("soc_pct,ocv_v\n0,3.0\n150,3.3\n", "line 3: soc_pct 150 is outside 0 to 100 %"),
        ("soc_pct,ocv_v\n0,3.0\n50,9.3\n100,3.4\n", "line 3: ocv_v 9.3 V is outside"),
        (
            "soc_pct,ocv_charge_v,ocv_discharge_v\n0,2.9,2.95\n100,3.4,3.3\n",
            "line 2: ocv_charge_v 2.9 V is below ocv_discharge_v 2.95 V",
        ),
        (
            "soc_pct,ocv_charge_v,ocv_discharge_v\n0,3.2,2.9\n100,3.4,3.3\n",
            "line 2: the branches are 300 mV apart",
        ),
        ("soc_pct,ocv_v\n0,3.0\n50,3.3\n60,3.2\n100,3.4\n", "line 4: the OCV falls from 50 %"),
        ("soc_pct,ocv_v\n0,3.0\n50,3.3\n50,3.3\n100,3.4\n", "line 4: soc_pct 50 is already"),
        ("soc_pct,ocv_v\n5,3.0\n100,3.4\n", "the rows run from 5 % to 100 % SOC"),
        (
            "soc_pct,ocv_v,temperature_c\n0,3.0,25\n100,3.4,25\n0,3.0,0\n90,3.4,0\n",
            "the rows at 0 °C run from 0 % to 90 % SOC",
        ),
        (
            "soc_pct,ocv_v,temperature_c,capacity_pct\n0,3.0,25,100\n100,3.4,25,95\n",
            "line 3: capacity_pct 95 at 25 °C differs from 100 on line 2",
        ),
        ("soc_pct,ocv_v,capacity_pct\n0,3.0,100\n100,3.4,100\n", "capacity_pct needs"),
    ],
)
def test_each_bad_line_is_named(text: str, error: str) -> None:
    got = parse_ocv_csv(text)
    assert got.values == {}
    assert any(error in e for e in got.errors), got.errors


@given(
    points=st.lists(st.integers(1, 99), max_size=30, unique=True),
    steps=st.lists(st.floats(0.0, 0.02), min_size=101, max_size=101),
    gaps=st.lists(st.floats(0.0, 0.05), min_size=101, max_size=101),
)
def test_any_rising_table_is_taken_exactly_at_its_points(
    points: list[int], steps: list[float], gaps: list[float]
) -> None:
    soc = sorted({0, 100, *points})
    down = 2.5 + np.cumsum(steps[: len(soc)])
    up = down + np.sort(gaps[: len(soc)])  # a gap that does not shrink keeps both rising
    text = "soc_pct,ocv_charge_v,ocv_discharge_v\n" + "\n".join(
        f"{s},{float(u)!r},{float(d)!r}" for s, u, d in zip(soc, up, down, strict=True)
    )
    got = parse_ocv_csv(text)
    assert got.errors == []
    assert got.values["chemistry_overrides.ocv_table_soc_pct"] == soc
    assert np.allclose(got.values["chemistry_overrides.ocv_charge_v"], up, atol=1e-5)
    assert np.allclose(got.values["chemistry_overrides.ocv_discharge_v"], down, atol=1e-5)
    mid = got.values["chemistry_overrides.ocv_table_v"]
    assert np.all(np.asarray(mid) >= down - 1e-4) and np.all(np.asarray(mid) <= up + 1e-4)


def _to_lfp(ui: UiHarness, token: str) -> None:
    for _ in range(2):  # the first submission lists what the chemistry derives again
        ui.client.post(
            "/wizard/chemistry",
            data={"csrf_token": token, "chemistry": "LFP", "name": "Rack A", "go": "next"},
            follow_redirects=False,
        )
    assert ui.ctx.draft_for("admin")["chemistry"] == "LFP"


def test_the_api_takes_branches_per_temperature_and_the_master_uses_them(ui: UiHarness) -> None:
    token = ui.login()
    _to_lfp(ui, token)
    note = ui.client.get("/api/wizard/steps/cells").json()["ocv_note"]
    assert note.startswith("Generic LFP OCV table") and "no OCV corrections" in note
    r = ui.client.put(
        "/api/wizard/ocv-csv", json={"csv": lfp_csv(temps=(0.0, 25.0)), "source": "maker X"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["errors"] == {}
    assert (body["points"], body["temperatures"], body["branches"]) == (21, 2, True)
    assert "charge and discharge branches at 2 temperatures" in body["ocv_note"]
    assert ui.client.get("/api/wizard/steps/cells").json()["ocv_note"] == body["ocv_note"]
    r = ui.client.post(
        "/wizard/review", data={"csrf_token": token, "go": "apply", "comment": "own OCV"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303, r.text
    latest = ui.ctx.store.latest()
    assert latest is not None
    chem = latest.config.cell_chemistry
    assert chem.ocv_temperatures_c == (0.0, 25.0) and chem.ocv_source == "maker X"
    est = PackEstimator(latest.config)
    assert est.counter.hysteresis is not None and est.ocv_note is None


def test_a_bad_file_changes_nothing_and_names_its_lines(ui: UiHarness) -> None:
    ui.login()
    before = ui.ctx.draft_for("admin")
    bad = lfp_csv().replace("\n50,", "\n50,x")  # line of 50 %: not a number
    r = ui.client.put("/api/wizard/ocv-csv", json={"csv": bad})
    assert r.status_code == 422
    errors = r.json()["errors"]["csv"]
    assert len(errors) == 1 and errors[0].startswith("line 12: ocv_charge_v 'x")
    assert ui.ctx.draft_for("admin") == before


def test_a_table_outside_the_cells_window_is_a_step_error(ui: UiHarness) -> None:
    token = ui.login()
    _to_lfp(ui, token)
    r = ui.client.put("/api/wizard/ocv-csv", json={"csv": "soc_pct,ocv_v\n0,3.1\n100,3.4\n"})
    assert r.status_code == 200
    problems = r.json()["errors"]["chemistry_overrides.ocv_table_v"]
    assert any("above discharge_cutoff_v" in p for p in problems)


def test_the_cell_data_page_uploads_a_csv(ui: UiHarness) -> None:
    token = ui.login()
    _to_lfp(ui, token)
    page = ui.client.get("/wizard/cells").text
    assert 'data-testid="ocv-note">SOC accuracy: Generic LFP OCV table' in page
    r = ui.client.post(
        "/wizard/cells/ocv-csv",
        data={"csrf_token": token},
        files={"file": ("cell.csv", lfp_csv().encode(), "text/csv")},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = ui.client.get("/wizard/cells").text
    assert "OCV table source: imported from cell.csv" in page
    assert "charge and discharge branches" in page
    r = ui.client.post(
        "/wizard/cells/ocv-csv",
        data={"csrf_token": token},
        files={"file": ("bad.csv", b"soc_pct,ocv_v\n0,3.0\n50,abc\n100,3.4\n", "text/csv")},
    )
    assert r.status_code == 422
    assert 'data-testid="ocv-csv-error">line 3: ocv_v &#39;abc&#39; is not a number' in r.text


def test_the_web_application_does_not_need_numpy() -> None:
    # its image installs deploy/requirements/config_ui.txt, which has no numpy
    import subprocess
    import sys

    code = (
        "import sys, services.config_ui.app, services.config_ui.pages; "
        "sys.exit('numpy' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
