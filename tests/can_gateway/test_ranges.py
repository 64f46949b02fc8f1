"""Item 9: a value outside a CAN profile's range is refused, never clamped: in the
configuration (cross-field check) and at encode time."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from services.can_gateway.codec import FrameEncodeError, encode, load_dbc, signal_range
from services.can_gateway.registry import PROFILES, load_profile
from shared.config import CanProfile, SystemConfig
from shared.config.can_ranges import CAN_PROFILE_RANGES, pylon_hv_range


def with_profile(config: SystemConfig, profile: str) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    data["interfaces"]["can"]["profiles"] = [profile]
    return data


def test_victron_profile_refused_for_a_614_v_pack() -> None:
    hv = SystemConfig.from_preset("LFP", modules=12, cells_per_module=16)  # 192 cells, 614 V
    assert hv.nominal_pack_voltage_v == pytest.approx(614.4)
    with pytest.raises(ValidationError, match="victron_0x35x"):
        SystemConfig.model_validate(with_profile(hv, "victron_0x35x"))


def test_encode_refuses_a_voltage_beyond_the_frame() -> None:
    db = load_dbc("victron_0x35x")
    with pytest.raises(FrameEncodeError, match="BatteryVoltage"):
        encode(db, 0x356, {"BatteryVoltage": 614.4, "BatteryCurrent": 0.0,
                           "BatteryTemperature": 20.0})  # fmt: skip


# (frame, signal) per role: what the shared ranges must match in each DBC
VOLTAGE_SIGNALS = {
    "victron_0x35x": [(0x356, "BatteryVoltage"), (0x351, "ChargeVoltageLimit"),
                      (0x351, "DischargeVoltageLimit")],
    "pylon_v12": [(0x356, "BatteryVoltage"), (0x351, "ChargeVoltageLimit"),
                  (0x351, "DischargeVoltageLimit")],
    "pylon_hv": [(0x4210, "PileVoltage"), (0x4220, "ChargeCutoffVoltage"),
                 (0x4220, "DischargeCutoffVoltage")],
    "native": [(0x600, "PackVoltage"), (0x601, "ChargeVoltageLimit"),
               (0x601, "DischargeVoltageLimit")],
}  # fmt: skip
CURRENT_SIGNAL = {
    "victron_0x35x": (0x356, "BatteryCurrent"),
    "pylon_v12": (0x356, "BatteryCurrent"),
    "pylon_hv": (0x4210, "PileCurrent"),
    "native": (0x600, "PackCurrent"),
}
LIMIT_SIGNALS = {
    "victron_0x35x": [(0x351, "ChargeCurrentLimit"), (0x351, "DischargeCurrentLimit")],
    "pylon_v12": [(0x351, "ChargeCurrentLimit"), (0x351, "DischargeCurrentLimit")],
    "pylon_hv": [(0x4220, "MaxChargeCurrent"), (0x4220, "MaxDischargeCurrent")],
    "native": [(0x601, "ChargeCurrentLimit"), (0x601, "DischargeCurrentLimit")],
}


def span(profile: str, frame_id: int, name: str) -> tuple[float, float]:
    return signal_range(
        load_dbc(profile).get_message_by_frame_id(frame_id).get_signal_by_name(name)
    )


@pytest.mark.parametrize("profile", get_args(CanProfile))
def test_shared_ranges_match_each_dbc(profile: str) -> None:
    """The configuration's cross-check reads `CAN_PROFILE_RANGES`; they must be the frames'."""
    shared = CAN_PROFILE_RANGES[profile]
    spans = [span(profile, f, s) for f, s in VOLTAGE_SIGNALS[profile]]
    assert shared.pack_voltage_v == pytest.approx(
        (max(0.0, *(lo for lo, _ in spans)), min(hi for _, hi in spans))
    )
    assert shared.current_a == pytest.approx(span(profile, *CURRENT_SIGNAL[profile]))
    limits = [span(profile, f, s) for f, s in LIMIT_SIGNALS[profile]]
    if profile == "pylon_hv":  # the discharge limit may be sent as a negative current
        expected = min(limits[0][1], -limits[1][0])
    else:
        expected = min(hi for _, hi in limits)
    assert shared.current_limit_a == pytest.approx(expected)


def test_every_configurable_profile_is_registered_and_ranged() -> None:
    for name in get_args(CanProfile):
        assert name in CAN_PROFILE_RANGES
        assert load_profile(name).name == name
    assert set(PROFILES) == set(get_args(CanProfile))


@pytest.mark.parametrize(
    ("chemistry", "modules", "cells", "profile", "fits"),
    [
        ("LFP", 1, 16, "victron_0x35x", True),  # 60.8 V
        ("LFP", 5, 16, "pylon_v12", False),  # 80 cells x 3.8 = 304 V: no 48 V inverter
        ("LFP", 6, 16, "pylon_v12", False),  # 364.8 V
        ("NMC", 7, 14, "pylon_hv", True),
        ("NMC", 7, 14, "native", True),
    ],
)
def test_configuration_cross_check(
    chemistry: str, modules: int, cells: int, profile: str, fits: bool
) -> None:
    base = SystemConfig.from_preset(chemistry, modules=modules, cells_per_module=cells)
    data = with_profile(base, profile)
    if fits:
        assert SystemConfig.model_validate(data).interfaces.can.profiles == (profile,)
    else:
        with pytest.raises(ValidationError, match=r"frames end at 327\.67 V|48 V inverters"):
            SystemConfig.model_validate(data)
    data["interfaces"]["can"]["enabled"] = False  # a disabled CAN bus carries nothing
    SystemConfig.model_validate(data)


def test_pylon_hv_offset_zero_narrows_the_current() -> None:
    assert pylon_hv_range(0.0).current_a == (-3276.8, 3276.7)
    assert pylon_hv_range(100.0).current_limit_a == 100.0
    base = SystemConfig.from_preset("NMC", modules=7, cells_per_module=14)
    data = base.model_dump(mode="json")
    data["interfaces"]["can"]["pylon_hv_current_offset_a"] = 100.0  # -100 A at most
    with pytest.raises(ValidationError, match="current up to"):
        SystemConfig.model_validate(data)


def test_the_wizard_refuses_victron_for_a_614_v_pack() -> None:
    """Item 9 as a user saw it: the wizard accepted victron_0x35x for a 614 V pack."""
    from services.config_ui.wizard import apply_form, fields_for_step, new_draft, validate

    draft = new_draft("demo", "LFP", modules=12, cells_per_module=16)
    fields = fields_for_step("interfaces", draft)  # as a browser posts them
    form = {f.path: f.value for f in fields if not (f.kind == "checkbox" and f.value == "")}
    form["interfaces.can.profiles"] = "victron_0x35x"
    result = apply_form("interfaces", draft, form)
    assert result.draft["interfaces"]["can"]["profiles"] == ["victron_0x35x"]
    assert result.draft["interfaces"]["can"]["enabled"]
    _, errors = validate(result.draft)
    assert any("327.67 V" in m for m in errors["interfaces.can.profiles"]), errors
