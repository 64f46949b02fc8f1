"""Charge/discharge limits: minimum over the derating tables, stop and stale, ramp, no flapping."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.derating_tables import (
    LFP_CHARGE_FRACTION,
    LFP_CHARGE_V,
    LFP_DISCHARGE_FRACTION,
    LFP_DISCHARGE_V,
    DeratingTable,
    derating_tables,
)
from services.master_core.limits import (
    REASON_ALARM,
    REASON_CELL_HEADROOM,
    REASON_CELL_VOLTAGE,
    REASON_FULL_CHARGE_VOLTAGE,
    REASON_INPUT_UNKNOWN,
    REASON_MAX_CURRENT,
    REASON_RAMP,
    REASON_SOC,
    REASON_STALE,
    REASON_TEMPERATURE_HIGH,
    REASON_TEMPERATURE_LOW,
    REASON_WARNING,
    REASONS,
    WARNING_DERATE_FRACTION,
    LimitCalculator,
    LimitInputs,
    LimitSettings,
)
from shared.config import SystemConfig
from shared.config.limits import CURRENT_MAX_A
from shared.limit_reasons import words as limit_words
from shared.messages import Limits

CHEMISTRIES = ("LFP", "NMC", "NCA", "LCO", "LTO", "NA_ION")
CONFIGS = {
    chem: SystemConfig.from_preset(chem, modules=4, cells_per_module=12) for chem in CHEMISTRIES
}
TOL = 1e-9


def nominal_inputs(config: SystemConfig, **changes: object) -> LimitInputs:
    """Every quantity in the middle of its window: nothing derates."""
    chem = config.cell_chemistry
    v = chem.nominal_v
    base = LimitInputs(
        cell_v_max=v,
        cell_v_min=v,
        temp_min_c=22.0,
        temp_max_c=25.0,
        soc_pct=50.0,
        sum_of_cells_v=v * config.total_cells,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def table_values(calc: LimitCalculator, inputs: LimitInputs, *, charge: bool) -> dict[str, float]:
    """Every table evaluated independently of the calculator's own bookkeeping."""
    t = calc.tables
    assert inputs.cell_v_max is not None and inputs.cell_v_min is not None
    assert inputs.temp_min_c is not None and inputs.temp_max_c is not None
    temp = t.charge_temperature if charge else t.discharge_temperature
    out = {
        REASON_WARNING: inputs.charge_derate if charge else inputs.discharge_derate,
        REASON_CELL_VOLTAGE: (t.charge_voltage if charge else t.discharge_voltage)(
            inputs.cell_v_max if charge else inputs.cell_v_min
        ),
        REASON_TEMPERATURE_LOW: temp(inputs.temp_min_c),
        REASON_TEMPERATURE_HIGH: temp(inputs.temp_max_c),
    }
    if inputs.soc_pct is not None:
        out[REASON_SOC] = (t.charge_soc if charge else t.discharge_soc)(inputs.soc_pct)
    return out


@st.composite
def inputs_for(draw: st.DrawFn, config: SystemConfig) -> LimitInputs:
    chem = config.cell_chemistry
    volts = st.floats(chem.uv_limit_v - 0.2, chem.ov_limit_v + 0.2)
    v1, v2 = draw(volts), draw(volts)
    t1, t2 = draw(st.floats(-40.0, 80.0)), draw(st.floats(-40.0, 80.0))
    return LimitInputs(
        cell_v_max=max(v1, v2),
        cell_v_min=min(v1, v2),
        temp_min_c=min(t1, t2),
        temp_max_c=max(t1, t2),
        soc_pct=draw(st.none() | st.floats(0.0, 100.0)),
        sum_of_cells_v=None,
        charge_derate=draw(st.sampled_from([1.0, 0.5]) | st.floats(0.0, 1.0)),
        discharge_derate=draw(st.sampled_from([1.0, 0.5]) | st.floats(0.0, 1.0)),
    )


@st.composite
def config_and_inputs(draw: st.DrawFn) -> tuple[SystemConfig, LimitInputs]:
    config = CONFIGS[draw(st.sampled_from(CHEMISTRIES))]
    return config, draw(inputs_for(config))


# --- tables ---------------------------------------------------------------------------------


def test_lfp_voltage_tables_are_the_reference_curve() -> None:
    t = derating_tables(CONFIGS["LFP"].cell_chemistry)
    assert t.charge_voltage.x == pytest.approx(LFP_CHARGE_V)
    assert t.charge_voltage.fraction == LFP_CHARGE_FRACTION
    assert t.discharge_voltage.x == pytest.approx(LFP_DISCHARGE_V)
    assert t.discharge_voltage.fraction == LFP_DISCHARGE_FRACTION


@pytest.mark.parametrize("chem", CHEMISTRIES)
def test_tables_fit_the_chemistry_window(chem: str) -> None:
    p = CONFIGS[chem].cell_chemistry
    t = derating_tables(p)
    # Full current at nominal, nearly nothing at charge_v, zero by the absolute limit.
    assert t.charge_voltage(p.nominal_v) == 1.0
    assert t.charge_voltage(p.charge_v) == pytest.approx(0.005)
    assert t.charge_voltage(p.ov_limit_v) == 0.0
    assert t.discharge_voltage(p.nominal_v) == 1.0
    assert t.discharge_voltage(p.discharge_cutoff_v) == 0.0
    for table, lo, hi in (
        (t.charge_temperature, p.charge_temp_min_c, p.charge_temp_max_c),
        (t.discharge_temperature, p.discharge_temp_min_c, p.discharge_temp_max_c),
    ):
        assert table(lo) == 0.0 and table(hi) == 0.0
        assert table(lo - 10.0) == 0.0 and table(hi + 10.0) == 0.0
        assert table(0.5 * (lo + hi)) == 1.0
    grid = np.linspace(p.uv_limit_v - 0.1, p.ov_limit_v + 0.1, 400)
    charge = [t.charge_voltage(float(v)) for v in grid]
    discharge = [t.discharge_voltage(float(v)) for v in grid]
    assert all(b <= a for a, b in itertools.pairwise(charge))
    assert all(b >= a for a, b in itertools.pairwise(discharge))


def test_soc_tables() -> None:
    t = derating_tables(CONFIGS["NMC"].cell_chemistry)
    assert [t.charge_soc(s) for s in (50, 85, 90, 95, 98, 100)] == [1.0, 1.0, 0.5, 0.2, 0.1, 0.1]
    assert [t.discharge_soc(s) for s in (50, 20, 15, 10, 5, 0)] == [1.0, 1.0, 0.5, 0.2, 0.1, 0.1]
    assert t.charge_soc(87.5) == pytest.approx(0.75)


def test_narrow_temperature_window_still_gives_a_valid_table() -> None:
    chem = CONFIGS["NMC"].cell_chemistry.model_copy(
        update={"charge_temp_min_c": 10.0, "charge_temp_max_c": 20.0}
    )
    table = derating_tables(chem).charge_temperature
    assert table(10.0) == 0.0 and table(20.0) == 0.0 and table(14.0) == 1.0


def test_table_rejects_bad_points() -> None:
    with pytest.raises(ValueError):
        DeratingTable((1.0, 1.0), (0.0, 1.0))
    with pytest.raises(ValueError):
        DeratingTable((1.0, 2.0), (0.0, 1.5))


# --- one evaluation -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(config_and_inputs())
def test_limit_is_the_minimum_over_all_tables(case: tuple[SystemConfig, LimitInputs]) -> None:
    config, inputs = case
    calc = LimitCalculator(config)
    limits = calc.update(inputs, now_s=0.0)
    for charge, max_a, current, reason in (
        (True, calc.max_charge_current_a, limits.charge_current_a, limits.charge_reason),
        (False, calc.max_discharge_current_a, limits.discharge_current_a, limits.discharge_reason),
    ):
        values = table_values(calc, inputs, charge=charge)
        for value in values.values():
            assert current <= max_a * value + TOL  # never above any single table
        smallest = min(values.values())
        assert current <= max_a <= CURRENT_MAX_A
        assert current == pytest.approx(math.floor(max_a * min(smallest, 1.0) * 10) / 10, abs=0.1)
        if reason == REASON_MAX_CURRENT:
            assert smallest >= 1.0
        else:
            assert reason in values
            assert values[reason] == pytest.approx(smallest)  # the binding table is named


@settings(max_examples=200, deadline=None)
@given(config_and_inputs(), st.booleans(), st.booleans())
def test_stop_flags_give_zero(
    case: tuple[SystemConfig, LimitInputs], stop_charge: bool, stop_discharge: bool
) -> None:
    config, inputs = case
    calc = LimitCalculator(config)
    limits = calc.update(
        replace(inputs, stop_charge=stop_charge, stop_discharge=stop_discharge), now_s=0.0
    )
    if stop_charge:
        assert limits.charge_current_a == 0.0 and limits.charge_reason == REASON_ALARM
    if stop_discharge:
        assert limits.discharge_current_a == 0.0 and limits.discharge_reason == REASON_ALARM


@settings(max_examples=100, deadline=None)
@given(config_and_inputs(), st.booleans(), st.booleans())
def test_stale_gives_zero_on_both_sides(
    case: tuple[SystemConfig, LimitInputs], stop_charge: bool, stop_discharge: bool
) -> None:
    config, inputs = case
    calc = LimitCalculator(config)
    limits = calc.update(
        replace(inputs, stale=True, stop_charge=stop_charge, stop_discharge=stop_discharge), 0.0
    )
    assert limits.charge_current_a == 0.0 and limits.discharge_current_a == 0.0
    assert limits.charge_reason == REASON_STALE == limits.discharge_reason


@pytest.mark.parametrize("field", ["cell_v_max", "cell_v_min", "temp_min_c", "temp_max_c"])
@pytest.mark.parametrize("missing", [None, math.nan])
def test_unknown_cell_quantity_is_stale(field: str, missing: float | None) -> None:
    config = CONFIGS["NMC"]
    limits = LimitCalculator(config).update(nominal_inputs(config, **{field: missing}), 0.0)
    assert limits.charge_current_a == 0.0 and limits.discharge_current_a == 0.0
    assert limits.charge_reason == REASON_STALE


@pytest.mark.parametrize("chem", CHEMISTRIES)
def test_preset_limits_at_nominal_and_at_the_ends(chem: str) -> None:
    config = CONFIGS[chem]
    p = config.cell_chemistry
    n = config.total_cells
    calc = LimitCalculator(config)
    limits = calc.update(nominal_inputs(config), 0.0)
    assert limits.charge_current_a == calc.max_charge_current_a
    assert limits.discharge_current_a == calc.max_discharge_current_a
    assert limits.charge_reason == REASON_MAX_CURRENT == limits.discharge_reason
    assert limits.charge_voltage_v == pytest.approx(n * p.charge_v, abs=0.1)
    assert limits.discharge_voltage_v == pytest.approx(n * p.discharge_cutoff_v, abs=0.1)
    # Default maximum: the over-current warning level, so the limit never raises a warning.
    assert calc.max_charge_current_a == config.protection.charge_overcurrent.warning.threshold

    full = LimitCalculator(config).update(nominal_inputs(config, cell_v_max=p.charge_v), 0.0)
    assert full.charge_current_a <= 0.005 * calc.max_charge_current_a
    assert full.charge_reason == REASON_CELL_VOLTAGE
    empty = LimitCalculator(config).update(
        nominal_inputs(config, cell_v_min=p.discharge_cutoff_v), 0.0
    )
    assert empty.discharge_current_a == 0.0 and empty.discharge_reason == REASON_CELL_VOLTAGE

    cold = LimitCalculator(config).update(nominal_inputs(config, temp_min_c=p.charge_temp_min_c), 0)
    assert cold.charge_current_a == 0.0 and cold.charge_reason == REASON_TEMPERATURE_LOW
    hot_t = p.discharge_temp_max_c - 5.0
    hot = LimitCalculator(config).update(nominal_inputs(config, temp_max_c=hot_t), 0.0)
    assert hot.discharge_reason == REASON_TEMPERATURE_HIGH
    assert hot.discharge_current_a == pytest.approx(0.25 * calc.max_discharge_current_a, abs=0.1)
    assert hot.charge_current_a == 0.0 and hot.charge_reason == REASON_TEMPERATURE_HIGH

    high_soc = LimitCalculator(config).update(nominal_inputs(config, soc_pct=95.0), 0.0)
    assert high_soc.charge_reason == REASON_SOC
    assert high_soc.charge_current_a == pytest.approx(0.2 * calc.max_charge_current_a, abs=0.1)


def test_soc_tables_can_be_disabled_and_unknown_soc_skips_them() -> None:
    config = CONFIGS["NMC"]
    off = LimitCalculator(config, LimitSettings(use_soc_tables=False))
    assert off.update(nominal_inputs(config, soc_pct=99.0), 0.0).charge_reason == REASON_MAX_CURRENT
    unknown = LimitCalculator(config).update(nominal_inputs(config, soc_pct=None), 0.0)
    assert unknown.charge_reason == REASON_MAX_CURRENT


def test_warning_derate() -> None:
    config = CONFIGS["LFP"]
    calc = LimitCalculator(config)
    limits = calc.update(nominal_inputs(config, discharge_derate=0.5), 0.0)
    assert limits.discharge_reason == REASON_WARNING
    assert limits.discharge_current_a == pytest.approx(0.5 * calc.max_discharge_current_a)
    assert limits.charge_reason == REASON_MAX_CURRENT


def test_maximum_current_is_capped_by_the_hardware() -> None:
    config = SystemConfig.from_preset("LFP", modules=2, cells_per_module=8, cell_capacity_ah=400)
    calc = LimitCalculator(config)
    # 1C = 400 A is capped to the 200 A sensor range; the warning level is 80 % of that.
    assert calc.max_charge_current_a == pytest.approx(160.0)
    big = LimitCalculator(config, LimitSettings(max_charge_current_a=500.0))
    assert big.max_charge_current_a == CURRENT_MAX_A
    assert big.update(nominal_inputs(config), 0.0).charge_current_a == CURRENT_MAX_A
    small = LimitCalculator(config, LimitSettings(max_discharge_current_a=42.0))
    assert small.update(nominal_inputs(config), 0.0).discharge_current_a == 42.0
    with pytest.raises(ValueError):
        LimitSettings(max_charge_current_a=0.0)


# --- charge voltage limit -------------------------------------------------------------------


def test_cvl_is_lowered_by_the_imbalance_near_the_top() -> None:
    config = CONFIGS["NMC"]
    n = config.total_cells
    full = n * config.cell_chemistry.charge_v
    balanced = nominal_inputs(config, cell_v_max=4.10, cell_v_min=4.10, sum_of_cells_v=4.10 * n)
    limits = LimitCalculator(config).update(balanced, 0.0)
    assert limits.charge_voltage_v == pytest.approx(full)
    assert limits.charge_voltage_reason == REASON_FULL_CHARGE_VOLTAGE
    # One cell 60 mV above the others: charging must end when that cell reaches 4.20 V.
    total = 4.10 * (n - 1) + 4.16
    skewed = nominal_inputs(config, cell_v_max=4.16, cell_v_min=4.10, sum_of_cells_v=total)
    calc = LimitCalculator(config)
    limits = calc.update(skewed, 0.0)
    cvl = limits.charge_voltage_v
    assert cvl == pytest.approx(total + n * (4.20 - 4.16), abs=0.1)
    assert cvl < full and limits.charge_voltage_reason == REASON_CELL_HEADROOM
    # balanced again: the CVL holds, then rises back at its ramp, and says so
    reasons = [calc.update(balanced, 0.1 * i).charge_voltage_reason for i in range(1, 600)]
    assert REASON_RAMP in reasons and reasons[-1] == REASON_FULL_CHARGE_VOLTAGE
    over = nominal_inputs(config, cell_v_max=4.22, cell_v_min=4.10, sum_of_cells_v=total + 0.06)
    assert LimitCalculator(config).update(over, 0.0).charge_voltage_v < total + 0.06
    plain = LimitCalculator(config, LimitSettings(cvl_headroom=False))
    assert plain.update(skewed, 0.0).charge_voltage_v == pytest.approx(full)


# --- behaviour over time --------------------------------------------------------------------


def test_drop_is_immediate_and_rise_waits_then_ramps() -> None:
    config = CONFIGS["NMC"]
    s = LimitSettings(hold_s=10.0, ramp_fraction_per_s=0.05)
    calc = LimitCalculator(config, s)
    max_a = calc.max_charge_current_a
    ok = nominal_inputs(config)
    assert calc.update(ok, 0.0).charge_current_a == max_a
    stopped = calc.update(replace(ok, stop_charge=True), 0.1)
    assert stopped.charge_current_a == 0.0 and stopped.charge_reason == REASON_ALARM
    t = 0.1
    seen: list[Limits] = []
    while t < 60.0:
        t = round(t + 0.1, 1)
        seen.append(calc.update(ok, t))
    currents = [lim.charge_current_a for lim in seen]
    times = [0.2 + 0.1 * i for i in range(len(seen))]
    # Held at 0 (still "protection_alarm") for the hold time.
    held = [lim for lim, at in zip(seen, times, strict=True) if at < 0.2 + s.hold_s - 0.05]
    assert all(lim.charge_current_a == 0.0 and lim.charge_reason == REASON_ALARM for lim in held)
    # Then at most ramp x dt per step (+ the 0.1 A rounding).
    step_max = s.ramp_fraction_per_s * max_a * 0.1
    assert all(b - a <= step_max + 0.1 + TOL for a, b in itertools.pairwise(currents))
    assert REASON_RAMP in {lim.charge_reason for lim in seen}
    # 0 -> full takes 1 / 0.05 = 20 s after the hold.
    first_full = next(
        at for lim, at in zip(seen, times, strict=True) if lim.charge_current_a == max_a
    )
    assert first_full == pytest.approx(0.2 + s.hold_s + 20.0, abs=0.3)
    assert seen[-1].charge_reason == REASON_MAX_CURRENT


@st.composite
def input_sequences(draw: st.DrawFn) -> tuple[SystemConfig, list[tuple[float, LimitInputs]]]:
    config = CONFIGS[draw(st.sampled_from(CHEMISTRIES))]
    steps = draw(
        st.lists(st.tuples(st.floats(0.0, 5.0), inputs_for(config)), min_size=2, max_size=25)
    )
    t = 0.0
    out: list[tuple[float, LimitInputs]] = []
    for dt, inputs in steps:
        t += dt
        flags = draw(
            st.sampled_from([(False, False, False), (True, False, False), (False, True, True)])
        )
        out.append(
            (t, replace(inputs, stop_charge=flags[0], stop_discharge=flags[1], stale=flags[2]))
        )
    return config, out


@settings(max_examples=150, deadline=None)
@given(input_sequences())
def test_over_time_never_above_the_computed_limit_and_rises_slowly(
    case: tuple[SystemConfig, list[tuple[float, LimitInputs]]],
) -> None:
    config, steps = case
    s = LimitSettings(hold_s=2.0)
    calc = LimitCalculator(config, s)
    prev: Limits | None = None
    prev_t = 0.0
    for t, inputs in steps:
        limits = calc.update(inputs, t)
        last = calc.last
        assert last is not None
        for side, current, max_a in (
            (last.charge, limits.charge_current_a, calc.max_charge_current_a),
            (last.discharge, limits.discharge_current_a, calc.max_discharge_current_a),
        ):
            assert current <= side.target_a + TOL  # drops are passed on at once
            assert current <= max_a
        if inputs.stale:
            assert limits.charge_current_a == 0.0 == limits.discharge_current_a
        if prev is not None:
            dt = t - prev_t
            for before, now, max_a in (
                (prev.charge_current_a, limits.charge_current_a, calc.max_charge_current_a),
                (
                    prev.discharge_current_a,
                    limits.discharge_current_a,
                    calc.max_discharge_current_a,
                ),
            ):
                assert now - before <= s.ramp_fraction_per_s * max_a * dt + 0.1 + TOL
        prev, prev_t = limits, t


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("chem", ["LFP", "NMC"])
def test_no_flapping_with_noise_around_a_knee(chem: str, seed: int) -> None:
    config = CONFIGS[chem]
    calc = LimitCalculator(config)
    knee = calc.tables.charge_voltage.x[1]  # the 25 % point
    rng = np.random.default_rng(seed)
    noise_v = 0.005
    outputs: list[float] = []
    targets: list[float] = []
    for i in range(6000):  # 10 min at 10 Hz
        v = knee + float(rng.uniform(-noise_v, noise_v))
        limits = calc.update(nominal_inputs(config, cell_v_max=v), 0.1 * i)
        assert calc.last is not None
        outputs.append(limits.charge_current_a)
        targets.append(calc.last.charge.target_a)

    def changes(values: list[float]) -> int:
        return sum(1 for a, b in itertools.pairwise(values) if a != b)

    assert changes(targets) > 3000
    assert changes(outputs) <= 20
    # The limit settles at the low side of the noise band: never above the noisy value.
    assert outputs[-1] <= min(targets[-100:]) + TOL


def test_slow_recovery_follows_the_input() -> None:
    config = CONFIGS["NMC"]
    calc = LimitCalculator(config, LimitSettings(hold_s=5.0))
    knee = calc.tables.charge_voltage.x[1]
    calc.update(nominal_inputs(config, cell_v_max=knee), 0.0)
    low = calc.update(nominal_inputs(config, cell_v_max=knee), 1.0).charge_current_a
    later = 0.0
    for i in range(20, 1200):
        later = calc.update(nominal_inputs(config, cell_v_max=4.0), 0.1 * i).charge_current_a
    assert low < later == calc.max_charge_current_a


# --- glue -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    cell_v_max: float | None
    cell_v_min: float | None
    temp_min_c: float | None
    temp_max_c: float | None
    sum_of_cells_v: float | None


@dataclass(frozen=True)
class _Actions:
    derate_charge: tuple[str, ...] = ()
    derate_discharge: tuple[str, ...] = ()
    stop_charge: tuple[str, ...] = ()
    stop_discharge: tuple[str, ...] = ()


def test_inputs_from_pack_and_protection_actions() -> None:
    snap = _Snapshot(3.3, 3.2, 20.0, 25.0, 3.25 * 16)
    inputs = LimitInputs.from_pack(
        snap,
        soc_pct=55.0,
        actions=_Actions(derate_charge=("cell_imbalance",), stop_discharge=("cell_undervoltage",)),
        stale=False,
    )
    assert inputs.charge_derate == WARNING_DERATE_FRACTION and inputs.discharge_derate == 1.0
    assert not inputs.stop_charge and inputs.stop_discharge
    assert inputs.cell_v_max == 3.3 and inputs.sum_of_cells_v == 3.25 * 16
    quiet = LimitInputs.from_pack(snap, soc_pct=None, actions=_Actions(), stale=True)
    assert quiet.charge_derate == 1.0 and quiet.stale


def test_a_stop_for_an_unknown_value_says_so_and_an_alarm_beside_it_wins() -> None:
    """No alarm is active before the current sensor reports: the limit must not say one is."""
    snap = _Snapshot(3.3, 3.2, 20.0, 25.0, 3.25 * 16)
    config = CONFIGS["LFP"]
    blind = _Actions(stop_charge=("charge_overcurrent",),
                     stop_discharge=("cell_undervoltage", "discharge_overcurrent"))  # fmt: skip
    inputs = LimitInputs.from_pack(
        snap, soc_pct=55.0, actions=blind, stale=False,
        unknown=("charge_overcurrent", "discharge_overcurrent"),
    )  # fmt: skip
    limits = LimitCalculator(config).update(inputs, 0.0)
    assert limits.charge_current_a == 0.0 and limits.charge_reason == REASON_INPUT_UNKNOWN
    assert limits.discharge_current_a == 0.0 and limits.discharge_reason == REASON_ALARM


def test_reasons_fit_the_message() -> None:
    for reason in REASONS:
        Limits(
            charge_voltage_v=1.0,
            discharge_voltage_v=1.0,
            charge_current_a=0.0,
            discharge_current_a=0.0,
            charge_reason=reason,
        )


def test_every_reason_the_master_sets_has_words() -> None:
    every = (*REASONS, REASON_FULL_CHARGE_VOLTAGE, REASON_CELL_HEADROOM)
    assert all(limit_words(r) not in (None, r) for r in every)
    assert limit_words("") is None
