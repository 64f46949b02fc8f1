"""Properties every profile keeps, for any pack state (any field unknown, any value, stale or
not): no unknown goes out as a number, no value is clamped, the limits are fail-safe unless
the pack is fresh and known. Frames are read back with cantools from each DBC."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.can_gateway.codec import load_dbc
from services.can_gateway.profile import PackView
from services.can_gateway.pylon_hv import answer
from services.can_gateway.registry import load_profile
from shared.config.system import SystemConfig
from shared.messages.pack import Limits, PackState

CONFIG = SystemConfig.from_preset("LFP", system_id="prop", modules=1, cells_per_module=16)


def maybe(values: st.SearchStrategy[float]) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), values)


packs = st.builds(
    PackState,
    soc=maybe(st.floats(0.0, 100.0)),
    soh=maybe(st.floats(0.0, 100.0)),
    voltage=maybe(st.floats(0.0, 1200.0)),  # beyond what 0x35x can carry, too
    current=maybe(st.floats(-1000.0, 1000.0)),
    contactors=st.sampled_from(["standby", "precharge", "closed", "opening", "fault"]),
    mode=st.sampled_from(["standby", "working"]),
    cell_v_min=maybe(st.floats(0.0, 6.0)),
    cell_v_max=maybe(st.floats(0.0, 6.0)),
    cell_v_avg=maybe(st.floats(0.0, 6.0)),
    temp_min_c=maybe(st.floats(-60.0, 200.0)),
    temp_max_c=maybe(st.floats(-60.0, 200.0)),
    energy_in_wh=maybe(st.floats(0.0, 1e9)),
    energy_out_wh=maybe(st.floats(0.0, 1e9)),
    equivalent_cycles=maybe(st.floats(0.0, 1e4)),
    limits=st.builds(
        Limits,
        charge_voltage_v=st.floats(40.0, 63.0),
        discharge_voltage_v=st.floats(40.0, 63.0),
        charge_current_a=st.floats(0.0, 1000.0),
        discharge_current_a=st.floats(0.0, 1000.0),
    ),
)

# frame -> signal -> the pack field it carries (scale of one raw step)
CARRIES: dict[str, dict[int, dict[str, tuple[str, float]]]] = {
    "victron_0x35x": {
        0x355: {"StateOfChargeHiRes": ("soc", 0.01), "StateOfHealth": ("soh", 1.0)},
        0x356: {"BatteryVoltage": ("voltage", 0.01), "BatteryCurrent": ("current", 0.1)},
        0x373: {"MinCellVoltage": ("cell_v_min", 0.001), "MaxCellVoltage": ("cell_v_max", 0.001)},
    },
    "pylon_v12": {
        0x355: {"StateOfCharge": ("soc", 1.0), "StateOfHealth": ("soh", 1.0)},
        0x356: {"BatteryVoltage": ("voltage", 0.01), "BatteryCurrent": ("current", 0.1)},
    },
    "native": {
        0x600: {"PackVoltage": ("voltage", 0.1), "PackCurrent": ("current", 0.1),
                "StateOfCharge": ("soc", 0.1), "StateOfHealth": ("soh", 0.1)},
    },
    "pylon_hv": {
        0x4210: {"PileVoltage": ("voltage", 0.1), "PileCurrent": ("current", 0.1),
                 "StateOfCharge": ("soc", 1.0), "StateOfHealth": ("soh", 1.0)},
        0x4230: {"MaxCellVoltage": ("cell_v_max", 0.001), "MinCellVoltage": ("cell_v_min", 0.001)},
    },
}  # fmt: skip
LIMITS = {"pylon_hv": (0x4220, "MaxChargeCurrent", "MaxDischargeCurrent")}


def frames_of(profile: str, view: PackView) -> list[tuple[int, bytes]]:
    if profile == "pylon_hv":
        return answer(bytes(8), view).frames
    return load_profile(profile).cyclic(view).frames


@settings(max_examples=300, deadline=None)
@given(profile=st.sampled_from(sorted(CARRIES)), pack=packs, stale=st.booleans())
def test_no_invented_and_no_clamped_value(profile: str, pack: PackState, stale: bool) -> None:
    view = PackView(CONFIG, pack, stale)
    db = load_dbc(profile)
    sent: dict[int, dict[str, Any]] = {}
    raw: dict[int, dict[str, Any]] = {}
    for frame_id, data in frames_of(profile, view):
        values = db.decode_message(frame_id, data, decode_choices=False)
        plain = db.decode_message(frame_id, data, decode_choices=False, scaling=False)
        assert isinstance(values, dict) and isinstance(plain, dict)
        sent[frame_id], raw[frame_id] = values, plain
    for frame_id, signals in CARRIES[profile].items():
        if frame_id not in sent:
            continue  # withheld: unknown, stale or beyond the frame's range
        message = db.get_message_by_frame_id(frame_id)
        for name, (field, step) in signals.items():
            value = getattr(pack, field)
            na = message.get_signal_by_name(name).dbc
            not_available = na is not None and "NotAvailableRaw" in na.attributes
            if stale or value is None:
                # only the DBC's not-available value may stand for it
                assert not_available, (hex(frame_id), name, value, stale)
                expected_raw = na.attributes["NotAvailableRaw"].value  # type: ignore[union-attr]
                assert raw[frame_id][name] == expected_raw
            else:  # the value itself, to one raw step: never clamped
                assert math.isclose(sent[frame_id][name], value, abs_tol=step / 2 + 1e-6), (
                    hex(frame_id), name, sent[frame_id][name], value,
                )  # fmt: skip
    known = not stale and None not in (pack.voltage, pack.current, pack.cell_v_min, pack.cell_v_max)
    limits_id, ccl, dcl = LIMITS.get(
        profile, (0x601 if profile == "native" else 0x351, "ChargeCurrentLimit",
                  "DischargeCurrentLimit")
    )  # fmt: skip
    if limits_id in sent and not known:
        assert sent[limits_id][ccl] == 0 and sent[limits_id][dcl] == 0
    if profile != "pylon_hv":
        assert limits_id in sent  # fail-safe limits never stop (their range holds every value)
