"""The composed protection: every quantity wired to its value, levels, actions, latches, reset."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.level_monitor import LEVEL_ORDER, TIME_TOLERANCE_S, Level
from services.master_core.protection import Protection, ProtectionResult, Transition
from services.master_core.protection_actions import CONCERNS, Actions, derive_actions
from services.master_core.protection_inputs import (
    PLAUSIBILITY,
    SAMPLED,
    VALUE_OF,
    ProtectionInputs,
)
from shared.config.chemistry import CHEMISTRY_NAMES, get_preset
from shared.config.protection import INSULATION_DELAYS_S, INSULATION_RELEASE_FACTOR, ThreeLevel
from shared.config.system import CommLossPolicy, SystemConfig, demo_config
from shared.protection_codes import SPECS, ProtectionCode, codes_where
from tests.master_core.level_spec import ZONES, LevelSpec, zone_value

PERIOD_S = 0.1
DEMO = demo_config()
CONFIGS = [DEMO] + [
    SystemConfig.from_preset(name, modules=4, cells_per_module=12) for name in CHEMISTRY_NAMES
]
THREE_LEVEL = tuple(code for code, _ in DEMO.protection.quantities())
FAULT_ONLY = tuple(c.value for c in codes_where(lambda s: s.levels == ("fault",)))
PLURAL: dict[Level, str] = {"warning": "warnings", "alarm": "alarms", "fault": "faults"}


def nominal(config: SystemConfig, **override: Any) -> ProtectionInputs:
    """A healthy pack charging at 10 A: nominal cells, about 25 °C, every check passing."""
    cell = get_preset(config.chemistry).nominal_v
    pack = cell * config.total_cells
    values: dict[str, Any] = dict(
        max_cell_v=cell + 0.01, min_cell_v=cell - 0.01, pack_v=pack, sum_of_cells_v=pack,
        max_temp_c=26.0, min_temp_c=24.0, current_a=10.0, cell_spread_v=0.02, open_wire=False,
        out_of_range=False, sensor_fault=False, stale_modules=frozenset(),
        current_sensor_ok=True, contactor_mismatch=False, insulation_ohm=10e6,
        open_string_current_a=0.0, current_offset_a=0.02, contactor_welded=False,
        precharge_failed=False, insulation_monitor_age_s=0.1, contactor_io_age_s=0.1,
        module_temp_spread_c=2.0, stuck_cell_voltage_channels=frozenset(),
        stuck_temperature_channels=frozenset(),
    )  # fmt: skip
    values.update(override)
    return ProtectionInputs(**values)


def _current(sign: float) -> Callable[[float | None], dict[str, Any]]:
    return lambda v: {"current_a": None if v is None else sign * v}


INJECT: dict[str, Callable[[float | None], dict[str, Any]]] = {
    "cell_overvoltage": lambda v: {"max_cell_v": v},
    "cell_undervoltage": lambda v: {"min_cell_v": v},
    "pack_overvoltage": lambda v: {"pack_v": v, "sum_of_cells_v": v},
    "pack_undervoltage": lambda v: {"pack_v": v, "sum_of_cells_v": v},
    "cell_overtemp_charge": lambda v: {"max_temp_c": v},
    "cell_overtemp_discharge": lambda v: {"max_temp_c": v},
    "cell_undertemp_charge": lambda v: {"min_temp_c": v},
    "cell_undertemp_discharge": lambda v: {"min_temp_c": v},
    "charge_overcurrent": _current(1.0),
    "discharge_overcurrent": _current(-1.0),
    # An unknown spread is derived from max - min, so unknown needs an unknown max as well.
    "cell_imbalance": lambda v: {
        "cell_spread_v": v,
        **({} if v is not None else {"max_cell_v": None}),
    },
}
"""Code -> the input fields that carry its value."""


def inputs_for(
    config: SystemConfig, code: str, value: float | None, **extra: Any
) -> ProtectionInputs:
    return nominal(config, **{**extra, **INJECT[code](value)})


def level_specs(item: ThreeLevel) -> dict[Level, LevelSpec]:
    levels = (item.warning, item.alarm, item.fault)
    return {
        level: LevelSpec(item.direction, lv.threshold, lv.release, lv.delay_s, level == "fault")
        for level, lv in zip(LEVEL_ORDER, levels, strict=True)
    }


def active_set(result: ProtectionResult) -> set[tuple[Level, str]]:
    return {(level, code) for level in LEVEL_ORDER for code in getattr(result, PLURAL[level])}


def run(
    p: Protection, inputs: ProtectionInputs, start_s: float, duration_s: float
) -> tuple[float, ProtectionResult, list[tuple[float, Transition]]]:
    """Evaluate every sample period for `duration_s`; returns end time, last result, transitions."""
    seen: list[tuple[float, Transition]] = []
    k = 0
    result = p.status()
    while k * PERIOD_S <= duration_s + 1e-9:
        now = start_s + k * PERIOD_S
        result = p.evaluate(inputs, now)
        seen.extend((now, t) for t in result.transitions)
        k += 1
    return start_s + k * PERIOD_S, result, seen


# --- wiring ---------------------------------------------------------------------------------


def test_every_code_has_a_value_and_a_concern() -> None:
    p = Protection(DEMO.protection, insulation_monitor=True)
    others = {"insulation_low", "current_offset_high", "temperature_spread"}
    assert set(p.codes) == set(THREE_LEVEL) | set(FAULT_ONLY) | others
    assert set(p.codes) == set(VALUE_OF) == set(CONCERNS) == set(ProtectionCode)
    for code in FAULT_ONLY:
        assert list(p.monitors(code)) == ["fault"]
    for code in THREE_LEVEL:
        assert list(p.monitors(code)) == list(LEVEL_ORDER)
    for code in p.codes:
        assert tuple(p.monitors(code)) == SPECS[ProtectionCode(code)].levels


def test_without_an_insulation_monitor_insulation_is_not_supervised() -> None:
    p = Protection(DEMO.protection)
    assert set(p.codes) == set(ProtectionCode) - {
        ProtectionCode.INSULATION_LOW,
        ProtectionCode.INSULATION_MONITOR_FAILURE,
    }
    result = p.evaluate(nominal(DEMO), 0.0)
    assert "insulation_low" not in result.unknown
    assert not result.actions.stop_charge and not result.actions.stop_discharge


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.chemistry)
def test_nominal_pack_raises_nothing(config: SystemConfig) -> None:
    p = Protection.from_system(config)
    _, result, seen = run(p, nominal(config), 0.0, 60.0)
    assert seen == []
    assert active_set(result) == set() and result.unknown == ()
    assert result.actions == Actions()


# --- the level rules through the composed protection ------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_composed_levels_follow_the_rules(data: st.DataObject) -> None:
    """Runs of one value each (the monitor tests vary values sample by sample), at irregular
    sample times, each judged some time after it was taken and again by periodic cycles: the
    telemetry codes follow the rules in sample time, whenever they are judged; the others in
    the caller's time."""
    config = data.draw(st.sampled_from(CONFIGS), label="config")
    code = data.draw(st.sampled_from(THREE_LEVEL), label="code")
    period = data.draw(st.sampled_from((0.1, 0.1, 0.5, 2.0)), label="period")
    irregular = data.draw(st.booleans(), label="irregular")
    t0 = data.draw(st.floats(0.0, 1e5), label="t0")
    specs = level_specs(getattr(config.protection, code))
    p = Protection(config.protection)
    before = active_set(p.status())
    sample_s = now = t0
    for _ in range(data.draw(st.integers(1, 12), label="runs")):
        level = data.draw(st.sampled_from(LEVEL_ORDER))
        value = zone_value(data.draw, specs[level], data.draw(st.sampled_from(ZONES)))
        if value is not None and code.endswith("overcurrent"):
            value = max(value, 0.0)  # a magnitude: the other direction reads as 0 A
        charging = data.draw(st.booleans())
        extra = {} if code.endswith("overcurrent") else {"current_a": 10.0 if charging else -10.0}
        armed = charging or not code.endswith("_charge")
        samples = data.draw(st.integers(1, 60))
        reset_at = data.draw(st.integers(0, 2 * samples))
        for i in range(samples):
            gap = data.draw(st.floats(0.0, 3 * period)) if irregular else period
            sample_s += gap
            # judged after a lag (up to two periods), then by 0-2 periodic cycles
            now = max(now, sample_s + data.draw(st.floats(0.0, 2 * period)))
            for j in range(data.draw(st.integers(1, 3))):
                now += data.draw(st.floats(0.0, period)) if j else 0.0
                inputs = inputs_for(config, code, value, sample_time_s=sample_s, **extra)
                result = p.evaluate(inputs, now)
                at = sample_s if code in SAMPLED else now
                for lv, spec in specs.items():
                    spec.step(value, at, code in getattr(result, PLURAL[lv]), armed=armed)
                after = active_set(result)
                changes = {(t.kind, t.level, t.code, t.at_s) for t in result.transitions}
                assert changes == {("raise", lv, c, at) for lv, c in after - before} | {
                    ("clear", lv, c, at) for lv, c in before - after
                }
                before = after
            if i == reset_at:
                reset = p.reset(now)
                specs["fault"].reset(code in {t.code for t in reset.cleared})
                before = active_set(p.status())


BEYOND_RANGE = {"cell_overvoltage": ("cell_v_above_range", 5.2), "cell_undervoltage":
                ("cell_v_below_range", 0.4)}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_reading_beyond_the_measurement_range_counts_as_beyond_every_voltage_level(
    data: st.DataObject,
) -> None:
    """One cell's readings, sample by sample: a measured value in any zone of any level, or a
    reading beyond the measurement range (flagged out of range: the measured extreme of the
    other cells is nominal). Over- and under-voltage follow the level rules on the reading,
    however the samples alternate: no delay restarted by a cell leaving the range, no trip
    the reading does not justify, release only on a measured value past the hysteresis."""
    config = data.draw(st.sampled_from(CONFIGS), label="config")
    code = data.draw(st.sampled_from(sorted(BEYOND_RANGE)), label="code")
    field, reading = BEYOND_RANGE[code]
    specs = level_specs(getattr(config.protection, code))
    p = Protection(config.protection)
    sample_s = data.draw(st.floats(0.0, 1e5), label="t0")
    for _ in range(data.draw(st.integers(1, 80), label="samples")):
        sample_s += data.draw(st.sampled_from((0.0, 0.05, 0.1, 0.1, 0.3)))
        if data.draw(st.booleans(), label="beyond the range"):
            value: float | None = reading
            inputs = nominal(config, sample_time_s=sample_s, out_of_range=True, **{field: reading})
        else:
            level = data.draw(st.sampled_from(LEVEL_ORDER))
            value = zone_value(data.draw, specs[level], data.draw(st.sampled_from(ZONES)))
            inputs = inputs_for(config, code, value, sample_time_s=sample_s)
        result = p.evaluate(inputs, sample_s + 0.01)
        for lv, spec in specs.items():
            spec.step(value, sample_s, code in getattr(result, PLURAL[lv]), armed=True)


def test_telemetry_codes_count_in_sample_time_and_the_others_in_the_callers() -> None:
    """A cell 0.1 V over its fault threshold in samples 0.1 s apart, each judged 0.3 s late
    and by a periodic cycle 0.05 s later, while the current is over its fault threshold from
    the first judgement: cell_overvoltage raises at the sample 0.5 s after the first (whenever
    it is judged), discharge_overcurrent 0.5 s after the first judgement of the caller."""
    p = Protection(DEMO.protection)
    ov = DEMO.protection.cell_overvoltage.fault
    oc = DEMO.protection.discharge_overcurrent.fault
    raised: dict[str, tuple[float, float]] = {}
    for k in range(20):
        sample_s = 100.0 + 0.1 * k
        for now in (sample_s + 0.3, sample_s + 0.35):
            bad = nominal(
                DEMO, max_cell_v=ov.threshold + 0.1, current_a=-(oc.threshold + 1.0),
                sample_time_s=sample_s,
            )  # fmt: skip
            for t in p.evaluate(bad, now).transitions:
                if t.kind == "raise" and t.level == "fault":
                    raised.setdefault(t.code, (sample_s, now))
    assert raised["cell_overvoltage"] == pytest.approx((100.0 + ov.delay_s, 100.3 + ov.delay_s))
    first_now = 100.3
    _, oc_now = raised["discharge_overcurrent"]
    assert first_now + oc.delay_s - TIME_TOLERANCE_S <= oc_now < first_now + oc.delay_s + 0.1


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(THREE_LEVEL), st.sampled_from(LEVEL_ORDER), st.integers(0, 20))
def test_demo_trips_each_level_after_its_delay(code: str, level: Level, extra: int) -> None:
    """Beyond one level's threshold for its delay plus a sample: that level is active."""
    item: ThreeLevel = getattr(DEMO.protection, code)
    lv = getattr(item, level)
    sign = 1.0 if item.direction == "high" else -1.0
    value = lv.threshold + sign * 0.1 * abs(lv.threshold - lv.release)
    p = Protection(DEMO.protection)
    run(p, nominal(DEMO), 0.0, 1.0)
    _, result, _ = run(p, inputs_for(DEMO, code, value), 10.0, lv.delay_s + extra * PERIOD_S)
    assert code in getattr(result, PLURAL[level])


# --- actions ----------------------------------------------------------------------------------


def _level_value(item: ThreeLevel, level: Level) -> float:
    """A value past `level` but not past the next level."""
    lv = getattr(item, level)
    nxt = {"warning": item.alarm, "alarm": item.fault}.get(level)
    if nxt is not None:
        return float((lv.threshold + nxt.threshold) / 2)
    sign = 1.0 if item.direction == "high" else -1.0
    return float(lv.threshold + sign * 0.1 * abs(lv.threshold - lv.release))


@pytest.mark.parametrize("level", LEVEL_ORDER)
@pytest.mark.parametrize("code", THREE_LEVEL)
def test_actions_follow_the_highest_level(code: str, level: Level) -> None:
    item: ThreeLevel = getattr(DEMO.protection, code)
    # Discharging keeps the charge windows out of the way of the discharge-window quantities.
    extra = {"current_a": 10.0 if code.endswith("_charge") else -10.0}
    if code.endswith("overcurrent"):
        extra = {}
    p = Protection(DEMO.protection)
    _, result, _ = run(p, inputs_for(DEMO, code, _level_value(item, level), **extra), 0.0, 40.0)
    flows = CONCERNS[code] if level != "fault" else {"charge", "discharge"}
    mine = (code,)
    assert result.actions == Actions(
        derate_charge=mine if "charge" in flows else (),
        derate_discharge=mine if "discharge" in flows else (),
        stop_charge=mine if level != "warning" and "charge" in flows else (),
        stop_discharge=mine if level != "warning" and "discharge" in flows else (),
        open_contactors=mine if level == "fault" else (),
    )
    assert result.actions.derate


def test_action_mapping_examples() -> None:
    a = derive_actions({"cell_overvoltage": "alarm", "cell_undervoltage": "warning"})
    assert a.stop_charge == ("cell_overvoltage",) and a.stop_discharge == ()
    assert a.derate_discharge == ("cell_undervoltage",) and not a.open_contactors
    a = derive_actions({"cell_undervoltage": "alarm", "cell_imbalance": "alarm"})
    assert a.stop_discharge == ("cell_undervoltage",) and a.stop_charge == ("cell_imbalance",)
    a = derive_actions({"cell_overtemp_discharge": "alarm"})
    assert a.stop_charge == a.stop_discharge == ("cell_overtemp_discharge",)
    a = derive_actions({"charge_overcurrent": "fault"})
    assert a.open_contactors == a.stop_charge == a.stop_discharge == ("charge_overcurrent",)
    a = derive_actions({}, unknown=["cell_overvoltage"])
    assert a.stop_charge == ("cell_overvoltage",) and not a.derate and not a.open_contactors


# --- single-level faults --------------------------------------------------------------------

DEMO_PACK_V = nominal(DEMO).sum_of_cells_v or 0.0
FAULT_CASES: list[tuple[str, dict[str, Any], float]] = [
    ("deep_discharge", {"min_cell_v": 2.4}, 0.5),
    ("open_wire", {"open_wire": True}, 0.5),
    ("measurement_out_of_range", {"out_of_range": True}, 0.5),
    ("sensor_fault", {"sensor_fault": True}, 0.5),
    (
        "pack_voltage_plausibility",
        {"pack_v": DEMO_PACK_V + DEMO.protection.pack_plausibility_tolerance_v + 1.0},
        1.0,
    ),
    ("communication_loss", {"stale_modules": frozenset({3})}, 0.0),
    ("current_sensor_failure", {"current_sensor_ok": False}, 0.2),
    ("contactor_feedback_mismatch", {"contactor_mismatch": True}, 0.2),
]


@pytest.mark.parametrize(("code", "bad", "delay"), FAULT_CASES, ids=[c[0] for c in FAULT_CASES])
def test_single_level_fault_trips_after_its_delay_and_latches(
    code: str, bad: dict[str, Any], delay: float
) -> None:
    p = Protection(DEMO.protection)
    t, _, _ = run(p, nominal(DEMO), 0.0, 1.0)
    t, result, seen = run(p, nominal(DEMO, **bad), t, delay + 1.0)
    raised = [at for at, tr in seen if tr.code == code and tr.kind == "raise"]
    assert raised, f"{code} never raised"
    assert 1.1 + delay - TIME_TOLERANCE_S <= raised[0] < 1.1 + delay + PERIOD_S
    assert code in result.faults and code in result.actions.open_contactors
    assert p.reset(t).still_latched.get(code)  # condition still present
    t, result, _ = run(p, nominal(DEMO), t, 1.0)
    assert code in result.faults  # latched after the condition went away
    reset = p.reset(t, service_override=code == "deep_discharge")
    assert reset.ok and code in {tr.code for tr in reset.cleared}
    assert code not in p.status().faults


@pytest.mark.parametrize("flag", ["out_of_range", "open_wire", "sensor_fault"])
def test_a_fault_whose_cell_went_unmeasured_refuses_the_reset_until_the_flag_goes(
    flag: str,
) -> None:
    """A cell drifts over the fault threshold, then out of the board's range: the maximum over
    the cells still measured looks released, but the cell is not. Before the flag's own fault
    has tripped (within its delay), a reset must not clear cell_overvoltage."""
    p = Protection(DEMO.protection)
    fault = DEMO.protection.cell_overvoltage.fault
    t, _, _ = run(p, nominal(DEMO), 0.0, 1.0)
    t, result, _ = run(p, nominal(DEMO, max_cell_v=fault.threshold + 0.2), t, fault.delay_s + 0.2)
    assert "cell_overvoltage" in result.faults
    released_v = fault.release - 0.1
    flagged = nominal(DEMO, max_cell_v=released_v, **{flag: True})
    result = p.evaluate(flagged, t)  # the first flagged sample: the flag's delay runs
    assert "cell_overvoltage" in result.faults
    reset = p.reset(t)
    assert "cell_overvoltage" in reset.still_latched, reset
    assert "not every channel is measured" in reset.still_latched["cell_overvoltage"]
    # the channel is measured again, below the release: the reset clears it
    t, _, _ = run(p, nominal(DEMO, max_cell_v=released_v), t + PERIOD_S, 0.2)
    reset = p.reset(t)
    assert "cell_overvoltage" in {tr.code for tr in reset.cleared}, reset


def test_communication_loss_waits_the_ride_through() -> None:
    policy = CommLossPolicy(action="ride_through", ride_through_s=2.0)
    p = Protection.from_system(DEMO.model_copy(update={"comm_loss": policy}))
    _, _, seen = run(p, nominal(DEMO, stale_modules=frozenset({0, 1})), 0.0, 3.0)
    assert [tr.code for _, tr in seen] == ["communication_loss"]
    assert seen[0][0] == pytest.approx(2.0)


# --- insulation ------------------------------------------------------------------------------


def insulation_specs(config: SystemConfig) -> dict[Level, LevelSpec]:
    c = config.protection
    warning_delay_s, fault_delay_s = INSULATION_DELAYS_S
    f = INSULATION_RELEASE_FACTOR
    return {
        "warning": LevelSpec(
            "low", c.insulation_warning_ohm, c.insulation_warning_ohm * f, warning_delay_s, False
        ),
        "fault": LevelSpec(
            "low", c.insulation_fault_ohm, c.insulation_fault_ohm * f, fault_delay_s, True
        ),
    }


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_insulation_levels_follow_the_rules(data: st.DataObject) -> None:
    """No missed trip, no early trip, release only past hysteresis, the fault latches."""
    config = data.draw(st.sampled_from(CONFIGS), label="config")
    period = data.draw(st.sampled_from((0.1, 0.5, 2.0)), label="period")
    t0 = data.draw(st.floats(0.0, 1e5), label="t0")
    specs = insulation_specs(config)
    p = Protection(config.protection, insulation_monitor=True)
    k = 0
    for _ in range(data.draw(st.integers(1, 12), label="runs")):
        level = data.draw(st.sampled_from(("warning", "fault")))
        zone = data.draw(st.sampled_from(ZONES))
        value = zone_value(data.draw, specs[level], zone)
        if value is not None and zone in ("beyond", "released"):
            # resistances move in kilo-ohms, not ohms
            scale = data.draw(st.floats(0.0, 5e5))
            value = value - scale if zone == "beyond" else value + scale
            value = max(value, 0.0)
        samples = data.draw(st.integers(1, 80))
        reset_at = data.draw(st.integers(0, 2 * samples))
        for i in range(samples):
            now = t0 + k * period
            k += 1
            result = p.evaluate(nominal(config, insulation_ohm=value), now)
            assert "insulation_low" not in result.alarms
            for lv, spec in specs.items():
                spec.step(value, now, "insulation_low" in getattr(result, PLURAL[lv]))
            if i == reset_at:
                reset = p.reset(now)
                specs["fault"].reset("insulation_low" in {t.code for t in reset.cleared})


def test_insulation_drop_warns_then_faults_and_latches() -> None:
    c = DEMO.protection
    p = Protection.from_system(DEMO, insulation_monitor=True)
    t, result, seen = run(p, nominal(DEMO), 0.0, 20.0)
    assert seen == [] and result.unknown == ()
    between = (c.insulation_warning_ohm + c.insulation_fault_ohm) / 2
    t, result, _ = run(p, nominal(DEMO, insulation_ohm=between), t, INSULATION_DELAYS_S[0])
    assert result.warnings == ("insulation_low",) and not result.faults
    assert result.actions.derate_charge == result.actions.derate_discharge == ("insulation_low",)
    assert not result.actions.stop_charge
    t, result, _ = run(p, nominal(DEMO, insulation_ohm=100e3), t, INSULATION_DELAYS_S[1])
    assert result.faults == ("insulation_low",)
    assert result.actions.open_contactors == ("insulation_low",)
    # back above the warning level: the warning clears, the fault stays until a reset
    t, result, _ = run(p, nominal(DEMO, insulation_ohm=c.insulation_warning_ohm * 1.1), t, 1.0)
    assert result.faults == ("insulation_low",)
    assert p.reset(t).still_latched == {}
    assert p.status().faults == ()


def test_unknown_insulation_stops_current_when_a_monitor_exists() -> None:
    p = Protection(DEMO.protection, insulation_monitor=True)
    _, result, _ = run(p, nominal(DEMO, insulation_ohm=None), 0.0, 1.0)
    assert result.unknown == ("insulation_low",)
    assert result.actions.stop_charge == result.actions.stop_discharge == ("insulation_low",)


# --- charge and discharge temperature windows -------------------------------------------------


def test_charge_window_applies_only_while_charging_and_holds_until_release() -> None:
    p = Protection(DEMO.protection)
    t, result, _ = run(p, nominal(DEMO, max_temp_c=42.0, current_a=-20.0), 0.0, 10.0)
    assert "cell_overtemp_charge" not in result.alarms + result.warnings
    t, result, _ = run(p, nominal(DEMO, max_temp_c=42.0, current_a=0.4), t, 10.0)
    assert "cell_overtemp_charge" not in result.alarms  # below the charging threshold
    t, result, _ = run(p, nominal(DEMO, max_temp_c=42.0, current_a=20.0), t, 5.0)
    assert "cell_overtemp_charge" in result.alarms
    assert result.actions.stop_charge == ("cell_overtemp_charge",)
    assert result.actions.stop_discharge == ()
    # Charging stops: the alarm stays until the temperature is past release (35 °C).
    t, result, _ = run(p, nominal(DEMO, max_temp_c=36.0, current_a=0.0), t, 10.0)
    assert "cell_overtemp_charge" in result.alarms
    t, result, _ = run(p, nominal(DEMO, max_temp_c=34.0, current_a=0.0), t, 0.0)
    assert "cell_overtemp_charge" not in result.alarms


def test_discharge_window_applies_always() -> None:
    p = Protection(DEMO.protection)
    _, result, _ = run(p, nominal(DEMO, max_temp_c=57.0, current_a=-20.0), 0.0, 5.0)
    assert "cell_overtemp_discharge" in result.alarms
    assert (
        result.actions.stop_charge == result.actions.stop_discharge == ("cell_overtemp_discharge",)
    )
    p = Protection(DEMO.protection)
    _, result, _ = run(p, nominal(DEMO, min_temp_c=-21.0, current_a=0.0), 0.0, 2.0)
    assert "cell_undertemp_discharge" in result.faults


# --- unknown inputs ---------------------------------------------------------------------------


def test_before_any_measurement_everything_is_unknown_and_current_is_stopped() -> None:
    p = Protection(DEMO.protection)
    status = p.status()
    # plausibility checks are "not evaluated" until fed, never unknown
    assert set(status.unknown) == set(p.codes) - PLAUSIBILITY
    assert status.actions.stop_charge and status.actions.stop_discharge
    assert not status.actions.open_contactors


def test_all_unknown_inputs_never_raise_and_never_count_as_safe() -> None:
    p = Protection(DEMO.protection)
    _, result, seen = run(p, ProtectionInputs(), 0.0, 30.0)
    assert seen == [] and active_set(result) == set()
    assert set(result.unknown) == set(p.codes) - {"communication_loss"} - PLAUSIBILITY
    assert "cell_overvoltage" in result.actions.stop_charge
    assert "cell_undervoltage" in result.actions.stop_discharge
    assert not result.actions.open_contactors


@pytest.mark.parametrize("unknown", [None, math.nan])
def test_unknown_keeps_levels_and_blocks_reset(unknown: float | None) -> None:
    p = Protection(DEMO.protection)
    t, result, _ = run(p, nominal(DEMO, max_cell_v=4.3), 0.0, 3.0)
    assert {"cell_overvoltage"} <= set(result.warnings) & set(result.alarms) & set(result.faults)
    t, result, seen = run(p, nominal(DEMO, max_cell_v=unknown), t, 10.0)
    assert seen == [] and "cell_overvoltage" in result.unknown
    assert "cell_overvoltage" in result.warnings and "cell_overvoltage" in result.alarms
    reset = p.reset(t)
    assert "unknown" in reset.still_latched["cell_overvoltage"]


def test_unknown_pack_voltage_falls_back_to_sum_of_cells() -> None:
    p = Protection(DEMO.protection)
    _, result, _ = run(p, nominal(DEMO, pack_v=None, sum_of_cells_v=420.0), 0.0, 1.0)
    assert "pack_overvoltage" in result.faults
    assert result.unknown == ("pack_voltage_plausibility",)


def test_unknown_spread_is_derived_from_max_and_min() -> None:
    p = Protection(DEMO.protection)
    bad = nominal(DEMO, max_cell_v=4.0, min_cell_v=3.6, cell_spread_v=None)
    _, result, _ = run(p, bad, 0.0, 6.0)
    assert "cell_imbalance" in result.faults


def test_unknown_current_keeps_the_charge_window() -> None:
    p = Protection(DEMO.protection)
    _, result, _ = run(p, nominal(DEMO, max_temp_c=42.0, current_a=None), 0.0, 4.0)
    assert "cell_overtemp_charge" in result.alarms
    assert {"charge_overcurrent", "discharge_overcurrent"} <= set(result.unknown)


# --- deep discharge and persistence -----------------------------------------------------------


def test_deep_discharge_survives_restart_and_normal_reset() -> None:
    p = Protection(DEMO.protection)
    t, result, _ = run(p, nominal(DEMO, min_cell_v=2.4, cell_spread_v=0.02), 0.0, 1.0)
    assert {"deep_discharge", "cell_undervoltage"} <= set(result.faults)
    stored = json.loads(json.dumps(p.latched_state()))
    assert stored["faults"]["deep_discharge"] == {"value": 2.4}

    q = Protection(DEMO.protection)  # a restart
    assert q.restore(stored) == tuple(sorted(stored["faults"]))
    status = q.status()
    assert "deep_discharge" in status.faults and status.actions.open_contactors
    first = q.reset(0.0, service_override=True)
    assert "unknown" in first.still_latched["deep_discharge"]  # nothing measured yet

    t, result, _ = run(q, nominal(DEMO), 0.0, 1.0)
    normal = q.reset(t)
    assert "cell_undervoltage" in {tr.code for tr in normal.cleared}
    assert "service" in normal.still_latched["deep_discharge"]
    assert q.latched_state()["faults"] == {"deep_discharge": {"value": 2.4}}
    override = q.reset(t, service_override=True)
    assert override.ok and [tr.code for tr in override.cleared] == ["deep_discharge"]
    assert q.status().faults == () and q.latched_state()["faults"] == {}


def test_service_override_does_not_clear_a_persisting_deep_discharge() -> None:
    p = Protection(DEMO.protection)
    t, _, _ = run(p, nominal(DEMO, min_cell_v=2.52), 0.0, 1.0)
    assert "deep_discharge" not in p.status().faults  # 2.52 V is above 2.5 V
    t, _, _ = run(p, nominal(DEMO, min_cell_v=2.49), t, 1.0)
    t, _, _ = run(p, nominal(DEMO, min_cell_v=2.52), t, 1.0)
    reset = p.reset(t, service_override=True)
    assert reset.still_latched["deep_discharge"] == "2.52 V is not above the release 2.55 V"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(2.0, 4.0), st.integers(1, 20), st.sampled_from(("", "reset", "restart"))
        ),
        min_size=1,
        max_size=12,
    )
)
def test_deep_discharge_latch_only_clears_by_service(
    steps: list[tuple[float, int, str]],
) -> None:
    p = Protection(DEMO.protection)
    t = 0.0
    latched = False
    for min_cell, samples, op in steps:
        for _ in range(samples):
            result = p.evaluate(nominal(DEMO, min_cell_v=min_cell), t)
            t += PERIOD_S
            latched = latched or "deep_discharge" in result.faults
        if op == "reset":
            assert "deep_discharge" in p.reset(t).still_latched or not latched
        elif op == "restart":
            state = json.loads(json.dumps(p.latched_state()))
            p = Protection(DEMO.protection)
            p.restore(state)
        assert ("deep_discharge" in p.status().faults) == latched


@pytest.mark.parametrize(
    "state",
    [
        {"version": 2, "faults": {}},
        {"version": 1},
        {"version": 1, "faults": ["deep_discharge"]},
        {"version": 1, "faults": {"no_such_fault": {"value": 1.0}}},
    ],
)
def test_restore_refuses_what_it_does_not_understand(state: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Protection(DEMO.protection).restore(state)


def test_restore_keeps_an_unknown_trip_value() -> None:
    p = Protection(DEMO.protection)
    assert p.restore({"version": 1, "faults": {"open_wire": {}}}) == ("open_wire",)
    assert p.latched_state() == {"version": 1, "faults": {"open_wire": {"value": None}}}


# --- end to end with the demo thresholds ------------------------------------------------------


def test_demo_overvoltage_trace() -> None:
    ov = DEMO.protection.cell_overvoltage
    p = Protection.from_system(DEMO)
    t, _, _ = run(p, nominal(DEMO), 0.0, 5.0)
    start = t
    t, result, seen = run(p, nominal(DEMO, max_cell_v=4.30), start, 3.0)
    raised = {tr.level: (at, tr) for at, tr in seen if tr.kind == "raise"}
    assert set(raised) == {"warning", "alarm", "fault"}
    for level in LEVEL_ORDER:
        at, tr = raised[level]
        lv = getattr(ov, level)
        assert abs(at - (start + lv.delay_s)) <= PERIOD_S + 1e-9
        assert (tr.code, tr.value, tr.threshold, tr.release, tr.unit) == (
            "cell_overvoltage", 4.30, lv.threshold, lv.release, "V",
        )  # fmt: skip
    assert result.actions.open_contactors == ("cell_overvoltage",)
    assert result.actions.stop_charge == result.actions.stop_discharge == ("cell_overvoltage",)

    # Back inside every threshold but not past release: everything stays.
    t, result, seen = run(p, nominal(DEMO, max_cell_v=4.10), t, 5.0)
    assert seen == [] and result.faults == result.alarms == result.warnings == ("cell_overvoltage",)
    refused = p.reset(t)
    assert refused.still_latched == {"cell_overvoltage": "4.1 V is not below the release 4.05 V"}

    # Past release: warning and alarm clear by themselves, the fault waits for the reset.
    t, result, seen = run(p, nominal(DEMO, max_cell_v=4.00), t, 0.0)
    assert sorted((tr.kind, tr.level) for _, tr in seen) == [
        ("clear", "alarm"),
        ("clear", "warning"),
    ]
    assert result.faults == ("cell_overvoltage",) and not result.alarms and not result.warnings
    reset = p.reset(t)
    assert reset.ok and [(tr.kind, tr.level, tr.code, tr.at_s) for tr in reset.cleared] == [
        ("clear", "fault", "cell_overvoltage", t)
    ]
    assert p.status().actions == Actions()


def test_evaluation_is_cheap() -> None:
    p = Protection(DEMO.protection)
    inputs = nominal(DEMO)
    n = 2000
    start = time.perf_counter()
    for k in range(n):
        p.evaluate(inputs, k * PERIOD_S)
    per_eval = (time.perf_counter() - start) / n
    assert per_eval < 1e-3  # a 0.1 s cycle has far more room; this catches accidental O(cells)


def test_the_contract_lists_every_code_protection_can_raise() -> None:
    codes = Protection.from_system(DEMO, insulation_monitor=True).codes
    assert set(codes) == set(ProtectionCode)


def _levels(p: Protection) -> tuple[tuple[str, ...], ...]:
    s = p.status()
    return (s.warnings, s.alarms, s.faults, s.unknown)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_judging_samples_alone_reaches_the_levels_of_whole_evaluations(
    data: st.DataObject,
) -> None:
    """The master's per-sample path (`judge_sample`, the telemetry codes alone) with a whole
    `evaluate` of the same sample now and then (the periodic grid) raises and clears exactly
    what a whole evaluation of every sample does, at the same sample times: the grid's
    second look at a sample adds no transition, and nothing is missed or early."""
    config = data.draw(st.sampled_from(CONFIGS))
    p = config.protection
    whole = Protection.from_system(config)
    judged = Protection.from_system(config)
    cell_v = st.sampled_from(
        [p.cell_overvoltage.warning.threshold + d for d in (-0.06, 0.01, 0.06, 0.12)]
        + [p.cell_undervoltage.fault.threshold - 0.05, None]
    )
    temp_c = st.sampled_from([25.0, p.cell_overtemp_discharge.fault.threshold + 1.0, None])
    flag = st.sampled_from([False, False, False, True, None])
    sample_s = 100.0
    for p_ in (whole, judged):  # the master steps once before it judges a sample
        p_.evaluate(nominal(config, sample_time_s=sample_s), sample_s)
    for _ in range(data.draw(st.integers(1, 60))):
        sample_s += data.draw(st.sampled_from([0.1, 0.1, 0.1, 0.0995, 0.3]))
        high = data.draw(cell_v)
        inputs = nominal(
            config, max_cell_v=high, min_cell_v=None if high is None else min(high, 3.0),
            cell_spread_v=None, max_temp_c=data.draw(temp_c), open_wire=data.draw(flag),
            current_a=data.draw(st.sampled_from([10.0, -10.0])), sample_time_s=sample_s,
        )  # fmt: skip
        now_s = sample_s + data.draw(st.sampled_from([0.0, 0.02, 0.3]))
        expected = whole.evaluate(inputs, now_s).transitions
        assert judged.judge_sample(inputs).transitions == expected
        if data.draw(st.booleans()):  # a grid slot before the next sample
            assert judged.evaluate(inputs, now_s + 0.01).transitions == ()
        assert _levels(judged) == _levels(whole)


def test_a_sample_is_judged_at_its_sample_time() -> None:
    with pytest.raises(ValueError, match="sample_time_s"):
        Protection.from_system(DEMO).judge_sample(nominal(DEMO))


@pytest.mark.parametrize("seed", range(6))
def test_each_result_is_the_one_its_levels_give(seed: int) -> None:
    """An evaluation without a transition may give the last result again: after every step
    of a random run (trips, clears, unknown values, resets, a restore) the result is the one
    worked out afresh from the levels (`status`), transitions aside."""
    rng = random.Random(seed)
    p = Protection(DEMO.protection)
    bad = {
        "cell_overvoltage": [None, 4.3, 4.5],
        "cell_undervoltage": [None, 2.9, 2.4],
        "charge_overcurrent": [None, 150.0, 400.0],
        "cell_imbalance": [None, 0.3],
    }

    # a latch stored by another run, restored into this one in use (a restart's restore)
    stored = Protection(DEMO.protection)
    for k in range(100):
        stored.evaluate(inputs_for(DEMO, "cell_undervoltage", 2.4), k * PERIOD_S)
    assert stored.latched_state()

    def same_levels(result: ProtectionResult) -> None:
        fresh = p.status()
        for name in ("warnings", "alarms", "faults", "unknown", "actions"):
            assert getattr(result, name) == getattr(fresh, name), name

    t = 0.0
    for _ in range(300):
        t += PERIOD_S
        step = rng.random()
        if step < 0.05:
            p.reset(t, service_override=rng.random() < 0.5)
            continue
        if step < 0.07:
            p.restore(stored.latched_state())
            continue
        code = rng.choice(sorted(bad))
        if rng.random() < 0.4:
            inputs = inputs_for(DEMO, code, rng.choice(bad[code]))  # None: unknown
        else:
            inputs = nominal(DEMO)
        if rng.random() < 0.5:
            same_levels(p.evaluate(inputs, t))
        else:
            same_levels(p.judge_sample(dataclasses.replace(inputs, sample_time_s=t)))
