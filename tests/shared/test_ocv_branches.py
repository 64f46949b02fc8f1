"""OCV charge and discharge branches, per temperature, in the chemistry configuration."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.config import SystemConfig
from shared.config.chemistry import ChemistryOverrides, get_preset

LFP = get_preset("LFP")
MID = LFP.ocv_table_v
UP = tuple(round(v + 0.01, 4) for v in MID)
DOWN = tuple(round(v - 0.01, 4) for v in MID)


def problem(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as exc:
        ChemistryOverrides.model_validate(overrides).apply(LFP)
    return str(exc.value)


def test_the_shipped_presets_have_a_single_curve_meaning_no_hysteresis_known() -> None:
    assert LFP.ocv_blocks == 0
    assert LFP.ocv_charge_v == LFP.ocv_discharge_v == ()


def test_branches_alone_give_their_middle_as_the_single_curve() -> None:
    chem = ChemistryOverrides(ocv_charge_v=UP, ocv_discharge_v=DOWN).apply(LFP)
    assert chem.ocv_blocks == 1
    assert chem.ocv_table_v == pytest.approx(MID, abs=1e-4)
    assert chem.ocv_branch(0) == (UP, DOWN)


def test_per_temperature_the_single_curve_is_the_block_nearest_25_degc() -> None:
    cold_up = tuple(v - 0.03 for v in UP)
    cold_down = tuple(v - 0.03 for v in DOWN)
    chem = ChemistryOverrides(
        ocv_charge_v=cold_up + UP + UP,
        ocv_discharge_v=cold_down + DOWN + DOWN,
        ocv_temperatures_c=(0.0, 23.0, 45.0),
        capacity_temperature_pct=(85.0, 100.0, 101.0),
    ).apply(LFP)
    assert chem.ocv_blocks == 3
    assert chem.ocv_reference_block == 1
    assert chem.ocv_table_v == pytest.approx(MID, abs=1e-4)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"ocv_charge_v": UP}, "ocv_discharge_v: ocv_charge_v is given"),
        ({"ocv_charge_v": DOWN, "ocv_discharge_v": UP}, "columns swapped"),
        ({"ocv_charge_v": UP[:-1], "ocv_discharge_v": DOWN}, "need 21"),
        (
            {"ocv_charge_v": UP * 2, "ocv_discharge_v": DOWN * 2, "ocv_temperatures_c": (25, 0)},
            "temperatures must strictly rise",
        ),
        (
            {"ocv_charge_v": UP, "ocv_discharge_v": DOWN, "ocv_temperatures_c": (200.0,)},
            "outside the temperature sensor range",
        ),
        (
            {"ocv_charge_v": tuple(v + 0.3 for v in MID), "ocv_discharge_v": DOWN},
            "taken under load",
        ),
        (
            {"ocv_charge_v": (*UP[:5], UP[3], *UP[6:]), "ocv_discharge_v": DOWN},
            "must not decrease with SOC",
        ),
        (
            {"ocv_charge_v": UP, "ocv_discharge_v": DOWN, "ocv_table_v": [v + 0.05 for v in MID]},
            "lies outside the branches",
        ),
        (
            {
                "ocv_charge_v": UP,
                "ocv_discharge_v": DOWN,
                "ocv_temperatures_c": (25.0,),
                "capacity_temperature_pct": (100.0, 90.0),
            },
            "capacity_temperature_pct: 2 values for 1 temperatures",
        ),
        ({"ocv_temperatures_c": (25.0,)}, "temperatures need the OCV branches"),
    ],
)
def test_bad_branches_are_named(overrides: dict[str, Any], words: str) -> None:
    assert words in problem(**overrides)


def test_a_system_config_prefixes_the_override_path() -> None:
    base = SystemConfig.from_preset("LFP", system_id="x", modules=1, cells_per_module=4)
    data = base.model_dump(mode="json")
    data["chemistry_overrides"] = {"ocv_charge_v": list(DOWN), "ocv_discharge_v": list(UP)}
    with pytest.raises(ValidationError, match=r"chemistry_overrides\.ocv_charge_v"):
        SystemConfig.model_validate(data)


def test_a_new_single_table_drops_the_presets_branches() -> None:
    with_branches = ChemistryOverrides(ocv_charge_v=UP, ocv_discharge_v=DOWN).apply(LFP)
    grid = (0.0, 50.0, 100.0)
    other = ChemistryOverrides(ocv_table_soc_pct=grid, ocv_table_v=(2.8, 3.3, 3.45))
    chem = other.apply(with_branches)
    assert chem.ocv_blocks == 0


@given(
    gap=st.lists(st.floats(0.0, 0.05), min_size=21, max_size=21),
    shift=st.floats(-0.05, 0.05),
)
def test_any_monotonic_pair_with_a_small_gap_is_valid(gap: list[float], shift: float) -> None:
    # branches = the preset's curve shifted, +- a gap that itself does not shrink too fast
    up = [v + shift + g for v, g in zip(MID, sorted(gap), strict=True)]
    down = [v + shift for v in MID]
    chem = ChemistryOverrides(ocv_charge_v=up, ocv_discharge_v=down).apply(LFP)
    lo, hi = chem.ocv_branch(0)
    assert all(d - 1e-3 <= m <= c + 1e-3 for m, c, d in zip(chem.ocv_table_v, lo, hi, strict=True))
