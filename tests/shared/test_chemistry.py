"""Chemistry presets: shipped data, consistency checks and OCV interpolation."""

from __future__ import annotations

import itertools
import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.config import (
    CHEMISTRY_NAMES,
    CHEMISTRY_PRESETS,
    OCV_WINDOW_TOLERANCE_V,
    ChemistryOverrides,
    ChemistryPreset,
    explain_errors,
    get_preset,
)
from shared.config.chemistry import PRESET_OCV_ERROR_V
from shared.config.limits import CELL_VOLTAGE_MAX_V, CELL_VOLTAGE_MIN_V

PRESETS = list(CHEMISTRY_PRESETS.values())


def _errors(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        ChemistryPreset.model_validate(data)
    return "\n".join(explain_errors(info.value))


def test_required_presets_exist() -> None:
    assert set(CHEMISTRY_PRESETS) == {"LFP", "NMC", "NCA", "LCO", "LTO", "NA_ION"}
    assert tuple(CHEMISTRY_PRESETS) == CHEMISTRY_NAMES
    for key, preset in CHEMISTRY_PRESETS.items():
        assert preset.name == key
        assert preset.ocv_source


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_is_consistent(preset: ChemistryPreset) -> None:
    assert preset.problems() == []
    soc, volts = preset.ocv_table_soc_pct, preset.ocv_table_v
    assert soc[0] == 0.0 and soc[-1] == 100.0
    assert all(b > a for a, b in itertools.pairwise(soc))
    assert all(b >= a for a, b in itertools.pairwise(volts))
    # The OCV table spans the operating window (within the documented tolerance).
    assert volts[0] <= preset.discharge_cutoff_v + OCV_WINDOW_TOLERANCE_V
    assert volts[-1] >= preset.charge_v - OCV_WINDOW_TOLERANCE_V
    assert (
        preset.deep_discharge_v
        <= preset.uv_limit_v
        < preset.uv_alarm_v
        < preset.uv_warning_v
        < preset.ov_warning_v
        < preset.ov_alarm_v
        < preset.ov_limit_v
    )
    assert preset.uv_alarm_v <= preset.discharge_cutoff_v < preset.charge_v <= preset.ov_alarm_v
    assert preset.deep_discharge_v >= CELL_VOLTAGE_MIN_V
    assert preset.ov_limit_v <= CELL_VOLTAGE_MAX_V
    assert preset.discharge_temp_min_c <= preset.charge_temp_min_c
    assert preset.charge_temp_max_c <= preset.discharge_temp_max_c


def test_reference_values_are_kept() -> None:
    # Sources: LibreSolar bms_common.c (via bms-practice §1.3/§4.3).
    nmc = CHEMISTRY_PRESETS["NMC"]
    assert (nmc.charge_v, nmc.ov_limit_v, nmc.ov_reset_v) == (4.20, 4.25, 4.05)
    # The generic NMC OCV: the mean of Chen2020 3.7509, ORegan2022 3.6856, Ecker2015 3.7873 V.
    assert nmc.ocv_v(50.0) == pytest.approx(3.7413)
    assert PRESET_OCV_ERROR_V["NMC"][10] == pytest.approx(3.7873 - 3.6856)
    assert set(PRESET_OCV_ERROR_V) == {"NMC"}
    lfp = CHEMISTRY_PRESETS["LFP"]
    assert (lfp.ov_limit_v, lfp.ov_reset_v, lfp.uv_limit_v, lfp.uv_reset_v) == (3.8, 3.4, 2.5, 3.1)
    assert lfp.ocv_table_v[-1] == pytest.approx(3.392)
    lto = CHEMISTRY_PRESETS["LTO"]
    assert (lto.ocv_table_v[0], lto.ocv_table_v[-1]) == (2.0, 2.8)
    # PyBaMM tables are stored as 0..1 SOC and scaled to percent.
    nca = CHEMISTRY_PRESETS["NCA"]
    assert nca.ocv_table_soc_pct[1] == pytest.approx(5.0)
    assert nca.ocv_v(50.0) == pytest.approx(3.6846)


def test_datasheet_limits_would_not_span_the_ocv_table() -> None:
    """The adjusted presets were adjusted for a reason: the datasheet values fail the check."""
    cases = {
        "LFP": {"charge_v": 3.65},
        "NCA": {"discharge_cutoff_v": 2.5, "uv_alarm_v": 2.5, "uv_limit_v": 2.45},
        "LCO": {"discharge_cutoff_v": 2.75, "uv_alarm_v": 2.75, "uv_limit_v": 2.7},
        "NA_ION": {"discharge_cutoff_v": 1.8, "uv_alarm_v": 1.8, "uv_limit_v": 1.7},
    }
    for name, changes in cases.items():
        data = {**CHEMISTRY_PRESETS[name].model_dump(), **changes}
        assert "does not span the operating window" in _errors(data), name


def test_every_data_file_has_a_source_header() -> None:
    data = resources.files("shared.config").joinpath("data")
    names = sorted(p.name for p in data.iterdir() if p.name.endswith((".csv", ".json")))
    assert names
    for name in names:
        text = data.joinpath(name).read_text(encoding="utf-8")
        if name.endswith(".csv"):
            assert text.startswith("# source:") or text.startswith("# Computed"), name
        else:
            assert json.loads(text)["_source"], name


def test_ocv_table_of_another_chemistry_is_rejected() -> None:
    # The foxBMS 2 pitfall: LTO voltage limits paired with an NMC curve.
    data = {
        **CHEMISTRY_PRESETS["LTO"].model_dump(),
        "ocv_table_soc_pct": CHEMISTRY_PRESETS["NMC"].ocv_table_soc_pct,
        "ocv_table_v": CHEMISTRY_PRESETS["NMC"].ocv_table_v,
    }
    text = _errors(data)
    assert "ocv_table_v: the OCV table starts at 2.50 V (0 % SOC)" in text
    assert "discharge_cutoff_v 2.00 V" in text
    assert "does not span the operating window 2.00 V to 2.80 V" in text


def test_ocv_table_shape_errors() -> None:
    base = CHEMISTRY_PRESETS["NMC"].model_dump()
    decreasing = list(base["ocv_table_v"])
    decreasing[5], decreasing[6] = decreasing[6], decreasing[5]
    assert "OCV must not decrease with SOC" in _errors({**base, "ocv_table_v": decreasing})
    soc = list(base["ocv_table_soc_pct"])
    soc[3] = soc[2]
    assert "SOC must strictly increase" in _errors({**base, "ocv_table_soc_pct": soc})
    short = base["ocv_table_v"][:-1]
    assert "21 SOC points but 20 voltages" in _errors({**base, "ocv_table_v": short})


def test_preset_voltage_ordering_and_range() -> None:
    base = CHEMISTRY_PRESETS["NMC"].model_dump()
    assert "ov_warning_v: 4.22 V must be below ov_alarm_v 4.20 V" in _errors(
        {**base, "ov_warning_v": 4.22}
    )
    text = _errors({**base, "ov_limit_v": 5.0})
    assert (
        "ov_limit_v: 5.00 V is outside the cell-voltage measurement range 1.00 V to 4.95 V" in text
    )
    text = _errors({**base, "charge_temp_max_c": 70.0})
    assert "must lie inside the discharge window -20.0 °C to 60.0 °C" in text


def test_unknown_key_in_preset_is_rejected() -> None:
    text = _errors({**CHEMISTRY_PRESETS["NMC"].model_dump(), "charge_volt": 4.2})
    assert "charge_volt: unknown setting" in text


def test_get_preset_is_case_insensitive_and_names_choices() -> None:
    assert get_preset("na-ion") is CHEMISTRY_PRESETS["NA_ION"]
    assert get_preset(" lfp ") is CHEMISTRY_PRESETS["LFP"]
    with pytest.raises(ValueError, match="unknown chemistry 'LiPo'; choose one of LFP, NMC"):
        get_preset("LiPo")


def test_overrides_apply_and_validate() -> None:
    nmc = CHEMISTRY_PRESETS["NMC"]
    assert ChemistryOverrides().apply(nmc) is nmc
    tuned = ChemistryOverrides(charge_v=4.10).apply(nmc)
    assert tuned.charge_v == 4.10 and tuned.ov_limit_v == nmc.ov_limit_v
    with pytest.raises(ValidationError, match="does not span"):
        ChemistryOverrides(charge_v=4.35, ov_alarm_v=4.35, ov_limit_v=4.4).apply(nmc)


def test_ocv_interpolation_and_clamping() -> None:
    nmc = CHEMISTRY_PRESETS["NMC"]
    assert nmc.ocv_v(0.0) == nmc.ocv_table_v[0]
    assert nmc.ocv_v(-5.0) == nmc.ocv_table_v[0]
    assert nmc.ocv_v(120.0) == nmc.ocv_table_v[-1]
    assert nmc.ocv_v(2.5) == pytest.approx((2.5 + 3.1564) / 2)
    assert nmc.soc_from_ocv_pct(1.0) == 0.0
    assert nmc.soc_from_ocv_pct(4.9) == 100.0
    assert nmc.soc_from_ocv_pct(3.7413) == pytest.approx(50.0)


def test_flat_ocv_segment_returns_lowest_soc() -> None:
    data = {
        **CHEMISTRY_PRESETS["LFP"].model_dump(),
        "ocv_table_soc_pct": (0.0, 10.0, 90.0, 100.0),
        "ocv_table_v": (2.8, 3.3, 3.3, 3.4),
    }
    flat = ChemistryPreset.model_validate(data)
    assert flat.soc_from_ocv_pct(3.3) == 10.0
    assert flat.ocv_v(50.0) == 3.3


@given(st.sampled_from(PRESETS), st.floats(0.0, 100.0))
def test_soc_ocv_round_trip(preset: ChemistryPreset, soc: float) -> None:
    # Every shipped curve is strictly increasing, so the inverse is unique.
    assert all(b > a for a, b in itertools.pairwise(preset.ocv_table_v))
    assert preset.soc_from_ocv_pct(preset.ocv_v(soc)) == pytest.approx(soc, abs=1e-6)


@given(st.sampled_from(PRESETS), st.floats(0.0, 5.5), st.floats(0.0, 5.5))
def test_soc_from_ocv_is_monotonic_and_bounded(preset: ChemistryPreset, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    s_lo, s_hi = preset.soc_from_ocv_pct(lo), preset.soc_from_ocv_pct(hi)
    assert 0.0 <= s_lo <= s_hi <= 100.0
