"""Plausibility checks: each pure check, and its code's levels through `Protection`.

Properties per check: no trip within the sensors' tolerance, a trip beyond it, never a trip on
unknown inputs, release only past hysteresis (through `Protection`, with the level rules of
`level_spec`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.contactors import ContactorFeedback, ContactorStateMachine
from services.master_core.level_monitor import Level
from services.master_core.plausibility import (
    DEVICE_START_GRACE_S,
    PRECHARGE_MARGIN_V,
    CurrentOffsetEstimator,
    DriverWatch,
    ModuleVectors,
    PlausibilityChecks,
    PlausibilityFacts,
    PrechargeCheck,
    StuckChannels,
    WeldCheck,
    by_module,
    module_temperature_spread_c,
    open_string_current_a,
    split_even,
)
from services.master_core.protection import Protection, ProtectionResult
from services.master_core.protection_inputs import PLAUSIBILITY
from services.plant.contactors import SimulatedContactors
from shared.config import SystemConfig, demo_config
from shared.config.limits import (
    CELL_VOLTAGE_ACCURACY_V,
    CURRENT_ACCURACY_A,
    PACK_VOLTAGE_ACCURACY_V,
)
from shared.config.protection import (
    TEMPERATURE_DELAYS_S,
    TEMPERATURE_SPREAD_HYSTERESIS_C,
    pack_plausibility_floor_v,
)
from tests.master_core.level_spec import ZONES, LevelSpec, zone_value
from tests.master_core.stuck_reference import ReferenceStuckChannels
from tests.master_core.test_protection import PLURAL, nominal, run

DEMO = demo_config()
P = DEMO.protection
PERIOD_S = 0.1
finite = st.floats(-1e3, 1e3, allow_nan=False)


# --- levels through Protection ------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    specs: Callable[[], dict[Level, LevelSpec]]
    inject: Callable[[float | None], dict[str, Any]]
    """Zone value -> ProtectionInputs fields."""
    seen: Callable[[float], float] = lambda v: v
    """Zone value -> the value the levels see (abs for signed inputs, 0/1 for flags)."""


def _high(threshold: float, release: float, delay_s: float, latching: bool) -> LevelSpec:
    return LevelSpec("high", threshold, release, delay_s, latching)


def _flag_spec() -> dict[Level, LevelSpec]:
    return {"fault": _high(0.5, 0.5, 0.0, True)}


def _as_flag(field: str) -> Callable[[float | None], dict[str, Any]]:
    return lambda v: {field: None if v is None or math.isnan(v) else v > 0.5}


def _as_channels(field: str) -> Callable[[float | None], dict[str, Any]]:
    def inject(v: float | None) -> dict[str, Any]:
        if v is None or math.isnan(v):
            return {field: None}
        return {field: frozenset({(0, 1), (2, 0)}) if v > 0.5 else frozenset()}

    return inject


def _flag_seen(v: float) -> float:
    return float(v > 0.5)


def _flag_count(v: float) -> float:
    return 2.0 if v > 0.5 else 0.0


CASES: dict[str, Case] = {
    "current_on_open_string": Case(
        lambda: {
            "fault": _high(
                P.open_string_current_a,
                0.8 * P.open_string_current_a,
                P.open_string_delay_s,
                True,
            )
        },
        lambda v: {"open_string_current_a": v},
        abs,
    ),
    "current_offset_high": Case(
        lambda: {
            "warning": _high(P.current_offset_warning_a, 0.8 * P.current_offset_warning_a, 0, False)
        },
        lambda v: {"current_offset_a": None if v is None else -v},  # the sign does not matter
        abs,
    ),
    "contactor_welded": Case(_flag_spec, _as_flag("contactor_welded"), _flag_seen),
    "precharge_failure": Case(_flag_spec, _as_flag("precharge_failed"), _flag_seen),
    "insulation_monitor_failure": Case(
        lambda: {
            "fault": _high(
                P.insulation_monitor_timeout_s, 0.5 * P.insulation_monitor_timeout_s, 0.0, True
            )
        },
        lambda v: {"insulation_monitor_age_s": v},
    ),
    "contactor_io_failure": Case(
        lambda: {
            "fault": _high(P.contactor_io_timeout_s, 0.5 * P.contactor_io_timeout_s, 0.0, True)
        },
        lambda v: {"contactor_io_age_s": v},
    ),
    "temperature_spread": Case(
        lambda: {
            "warning": _high(
                P.temperature_spread_warning_c,
                P.temperature_spread_warning_c - TEMPERATURE_SPREAD_HYSTERESIS_C,
                TEMPERATURE_DELAYS_S[0],
                False,
            ),
            "alarm": _high(
                P.temperature_spread_alarm_c,
                P.temperature_spread_alarm_c - TEMPERATURE_SPREAD_HYSTERESIS_C,
                TEMPERATURE_DELAYS_S[1],
                False,
            ),
        },
        lambda v: {"module_temp_spread_c": v},
    ),
    "stuck_cell_voltage_channel": Case(
        _flag_spec, _as_channels("stuck_cell_voltage_channels"), _flag_count
    ),
    "stuck_temperature_channel": Case(
        _flag_spec, _as_channels("stuck_temperature_channels"), _flag_count
    ),
}


def test_every_plausibility_code_has_a_case() -> None:
    assert set(CASES) == PLAUSIBILITY


@settings(max_examples=60, deadline=None)
@given(st.data())
@pytest.mark.parametrize("code", sorted(CASES))
def test_plausibility_levels_follow_the_rules(code: str, data: st.DataObject) -> None:
    """No missed trip, no early trip, release only past hysteresis, latch until reset; an
    unknown (None/NaN) value neither trips nor clears, and is never listed as unknown."""
    case = CASES[code]
    specs = case.specs()
    p = Protection(P, insulation_monitor=True)
    t0 = data.draw(st.floats(0.0, 1e5), label="t0")
    k = 0
    for _ in range(data.draw(st.integers(1, 8), label="runs")):
        level = data.draw(st.sampled_from(sorted(specs)), label="level")
        value = zone_value(data.draw, specs[level], data.draw(st.sampled_from(ZONES)))
        samples = data.draw(st.integers(1, 80))
        reset_at = data.draw(st.integers(0, 2 * samples))
        for i in range(samples):
            now = t0 + k * PERIOD_S
            k += 1
            result = p.evaluate(nominal(DEMO, **case.inject(value)), now)
            assert code not in result.unknown
            seen = None if value is None or math.isnan(value) else case.seen(value)
            for lv, spec in specs.items():
                spec.step(seen, now, code in getattr(result, PLURAL[lv]))
            if i == reset_at and "fault" in specs:
                reset = p.reset(now, service_override=True)
                specs["fault"].reset(code in {t.code for t in reset.cleared})


def test_not_evaluated_plausibility_stops_nothing() -> None:
    p = Protection(P, insulation_monitor=True)
    not_evaluated = {k: None for code in CASES for k in CASES[code].inject(None)}
    _, result, seen = run(p, nominal(DEMO, **not_evaluated), 0.0, 30.0)
    assert seen == [] and result.unknown == ()
    assert not result.actions.stop_charge and not result.actions.stop_discharge


def test_a_welded_contactor_needs_a_service_reset_and_a_seen_open_string() -> None:
    p = Protection(P)
    t, result, _ = run(p, nominal(DEMO, contactor_welded=True), 0.0, 0.0)
    assert result.faults == ("contactor_welded",)
    assert result.actions.open_contactors == ("contactor_welded",)
    t, _, _ = run(p, nominal(DEMO, contactor_welded=None), t, 1.0)  # not evaluated: held
    assert "value unknown" in p.reset(t, service_override=True).still_latched["contactor_welded"]
    t, _, _ = run(p, nominal(DEMO, contactor_welded=False), t, 0.0)
    assert "service" in p.reset(t).still_latched["contactor_welded"]
    assert p.reset(t, service_override=True).ok


def test_a_warning_only_code_is_not_latched_and_not_persisted() -> None:
    p = Protection(P)
    _, result, _ = run(p, nominal(DEMO, current_offset_a=2.0), 0.0, 0.0)
    assert result.warnings == ("current_offset_high",)
    assert result.actions == type(result.actions)()  # flag only: no derating
    assert p.latched_state()["faults"] == {}
    with pytest.raises(ValueError, match="unknown fault codes"):
        p.restore({"version": 1, "faults": {"current_offset_high": {"value": 2.0}}})


def test_temperature_spread_derates_then_stops_both_directions() -> None:
    p = Protection(P)
    t, result, _ = run(p, nominal(DEMO, module_temp_spread_c=12.0), 0.0, TEMPERATURE_DELAYS_S[0])
    assert result.warnings == ("temperature_spread",)
    assert (
        result.actions.derate_charge == result.actions.derate_discharge == ("temperature_spread",)
    )
    t, result, _ = run(p, nominal(DEMO, module_temp_spread_c=16.0), t, TEMPERATURE_DELAYS_S[1])
    assert result.alarms == ("temperature_spread",) and not result.faults
    assert result.actions.stop_charge == result.actions.stop_discharge == ("temperature_spread",)


def test_without_an_insulation_monitor_its_failure_is_not_supervised() -> None:
    assert "insulation_monitor_failure" not in Protection(P).codes
    checks = PlausibilityChecks.from_system(DEMO)
    assert checks.update(0.0, _facts()).insulation_monitor_age_s is None


# --- 1. pack voltage against the sum of cells ---------------------------------------------------


modules = st.integers(1, 12)
cells_per_module = st.integers(4, 16)
aligned = st.floats(-1.0, 1.0)
"""A common error fraction for every cell channel: the worst case is all off the same way."""


@settings(max_examples=40, deadline=None)
@given(
    modules=modules,
    per_module=cells_per_module,
    cell_v=st.floats(2.8, 3.5),
    errors=st.lists(st.tuples(aligned, aligned), min_size=1, max_size=15),
)
def test_pack_plausibility_never_trips_within_the_sensor_accuracies(
    modules: int, per_module: int, cell_v: float, errors: list[tuple[float, float]]
) -> None:
    config = SystemConfig.from_preset("LFP", modules=modules, cells_per_module=per_module)
    cells = config.total_cells
    tolerance = config.protection.pack_plausibility_tolerance_v
    assert tolerance == pytest.approx(PACK_VOLTAGE_ACCURACY_V + cells * CELL_VOLTAGE_ACCURACY_V)
    p = Protection(config.protection)
    for k, (cell_error, pack_error) in enumerate(errors * 3):
        measured = cells * (cell_v + cell_error * CELL_VOLTAGE_ACCURACY_V)
        pack = cells * cell_v + pack_error * PACK_VOLTAGE_ACCURACY_V
        result = p.evaluate(nominal(config, pack_v=pack, sum_of_cells_v=measured), k * PERIOD_S)
        assert "pack_voltage_plausibility" not in result.faults


@settings(max_examples=40, deadline=None)
@given(
    modules=modules,
    per_module=cells_per_module,
    excess=st.floats(0.01, 50.0),
    sign=st.sampled_from((-1, 1)),
)
def test_pack_plausibility_trips_beyond_the_accuracies(
    modules: int, per_module: int, excess: float, sign: int
) -> None:
    config = SystemConfig.from_preset("LFP", modules=modules, cells_per_module=per_module)
    p = Protection(config.protection)
    total = 3.3 * config.total_cells
    pack = total + sign * (config.protection.pack_plausibility_tolerance_v + excess)
    delay = config.protection.pack_plausibility_delay_s
    _, result, _ = run(p, nominal(config, pack_v=pack, sum_of_cells_v=total), 0.0, delay)
    assert "pack_voltage_plausibility" in result.faults


def test_a_tolerance_below_the_sensor_accuracies_is_refused() -> None:
    floor = pack_plausibility_floor_v(DEMO.total_cells)
    assert floor == pytest.approx(PACK_VOLTAGE_ACCURACY_V + 98 * CELL_VOLTAGE_ACCURACY_V)
    data = DEMO.model_dump(mode="json")
    data["protection"]["pack_plausibility_tolerance_v"] = floor - 0.1
    with pytest.raises(ValueError, match="worst-case error"):
        SystemConfig.model_validate(data)


# --- 2. current on an open string ---------------------------------------------------------------


@given(finite, st.sampled_from((False, None)))
def test_open_string_current_is_not_evaluated_unless_every_contact_reads_open(
    current: float, all_open: bool | None
) -> None:
    assert open_string_current_a(current, all_open) is None
    assert open_string_current_a(None, True) is None
    assert open_string_current_a(math.nan, True) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-CURRENT_ACCURACY_A, CURRENT_ACCURACY_A), min_size=1, max_size=60))
def test_sensor_noise_on_an_open_string_never_trips(noise: list[float]) -> None:
    p = Protection(P)
    for k, current in enumerate(noise):
        value = open_string_current_a(current, True)
        assert value == abs(current)
        result = p.evaluate(nominal(DEMO, open_string_current_a=value), k * PERIOD_S)
        assert "current_on_open_string" not in result.faults


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 200.0), st.sampled_from((-1.0, 1.0)))
def test_current_on_an_open_string_trips_after_its_delay(excess: float, sign: float) -> None:
    p = Protection(P)
    value = open_string_current_a(sign * (P.open_string_current_a + excess), True)
    _, result, seen = run(p, nominal(DEMO, open_string_current_a=value), 0.0, 1.0)
    raised = [at for at, tr in seen if tr.code == "current_on_open_string"]
    assert raised and raised[0] == pytest.approx(P.open_string_delay_s)
    assert result.actions.open_contactors == ("current_on_open_string",)


def test_the_open_string_bound_is_above_the_sensor_noise() -> None:
    assert P.open_string_current_a > CURRENT_ACCURACY_A
    assert P.current_offset_warning_a > CURRENT_ACCURACY_A


# --- 3. zero offset -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    offset=st.floats(-2.0, 2.0),
    noise=st.lists(st.floats(-CURRENT_ACCURACY_A, CURRENT_ACCURACY_A), min_size=1, max_size=50),
    window_s=st.sampled_from((1.0, 3.0, 10.0)),
)
def test_offset_estimate_is_the_mean_at_rest(
    offset: float, noise: list[float], window_s: float
) -> None:
    est = CurrentOffsetEstimator(window_s)
    n = round(window_s / PERIOD_S)
    estimates = []
    for k in range(2 * n + 1):
        current = offset + noise[k % len(noise)]
        estimates.append(est.update(k * PERIOD_S, current, all_open=True))
    assert all(e is None for e in estimates[:n])  # not before a full window
    assert all(e is not None for e in estimates[n:])
    last = estimates[-1]
    assert last is not None and abs(last - offset) <= CURRENT_ACCURACY_A + 1e-9
    # kept once the string closes; a new stretch starts from scratch
    assert est.update(99.0, 150.0, all_open=False) == last
    assert est.update(100.0, 5.0, all_open=True) == last


def test_an_unknown_sample_restarts_the_offset_window() -> None:
    est = CurrentOffsetEstimator(1.0)
    for k in range(8):
        assert est.update(k * PERIOD_S, 0.3, all_open=True) is None
    assert est.update(0.8, None, all_open=True) is None
    for k in range(9, 19):
        assert est.update(k * PERIOD_S, 0.3, all_open=True) is None
    assert est.update(1.9, 0.3, all_open=True) == pytest.approx(0.3)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 5.0), st.sampled_from((-1.0, 1.0)))
def test_offset_warning_follows_the_estimate(offset: float, sign: float) -> None:
    est = CurrentOffsetEstimator(P.current_offset_window_s)
    p = Protection(P)
    result: ProtectionResult | None = None
    for k in range(round(P.current_offset_window_s / PERIOD_S) + 1):
        value = est.update(k * PERIOD_S, sign * offset, all_open=True)
        result = p.evaluate(nominal(DEMO, current_offset_a=value), k * PERIOD_S)
    assert result is not None
    assert ("current_offset_high" in result.warnings) == (offset > P.current_offset_warning_a)


# --- 4. welded contactor ------------------------------------------------------------------------

WELD = dict(feedback_timeout_s=0.5, current_a=1.0, voltage_v=5.0)


@given(finite, finite, finite, st.floats(0.0, 100.0))
def test_weld_is_not_evaluated_while_closed_or_before_the_open_completes(
    current: float, pack: float, link: float, t: float
) -> None:
    check = WeldCheck(**WELD, discharge_s=2.0)
    assert (
        check.update(t, commanded_open=False, current_a=current, pack_v=pack, link_v=link) is None
    )
    dt = WELD["feedback_timeout_s"] * 0.99
    assert check.update(t, commanded_open=True, current_a=current, pack_v=pack, link_v=link) is None
    assert (
        check.update(t + dt, commanded_open=True, current_a=current, pack_v=pack, link_v=link)
        is None
    )


@given(current=st.floats(-1.0, 1.0), elapsed=st.floats(0.5, 1e4), pack=st.floats(0.0, 980.0))
def test_an_open_string_without_current_is_not_welded(
    current: float, elapsed: float, pack: float
) -> None:
    # without a discharge path the link may hold the pack voltage: only current counts
    check = WeldCheck(**WELD, discharge_s=None)
    check.update(0.0, commanded_open=True, current_a=current, pack_v=pack, link_v=pack)
    got = check.update(elapsed, commanded_open=True, current_a=current, pack_v=pack, link_v=pack)
    assert got is False


@given(current=st.floats(1.0, 200.0).filter(lambda a: a > 1.0), sign=st.sampled_from((-1, 1)))
def test_current_after_a_completed_open_is_a_weld(current: float, sign: int) -> None:
    check = WeldCheck(**WELD, discharge_s=None)
    check.update(0.0, commanded_open=True, current_a=0.0, pack_v=None, link_v=None)
    assert check.update(
        0.5, commanded_open=True, current_a=sign * current, pack_v=None, link_v=None
    )


@given(gap=st.floats(0.0, 980.0), elapsed=st.floats(0.5, 100.0))
def test_a_link_that_follows_the_pack_after_its_discharge_time_is_a_weld(
    gap: float, elapsed: float
) -> None:
    check = WeldCheck(**WELD, discharge_s=2.0)
    check.update(0.0, commanded_open=True, current_a=0.0, pack_v=400.0, link_v=400.0)
    got = check.update(elapsed, commanded_open=True, current_a=0.0, pack_v=400.0, link_v=400 - gap)
    if elapsed < 2.0:
        assert got is False  # the link may still be discharging
    else:
        assert got is (gap <= 5.0)
    # unknown inputs the verdict needs: not evaluated, never a trip
    got = check.update(elapsed, commanded_open=True, current_a=None, pack_v=None, link_v=1.0)
    assert got is None


# --- 5. precharge -------------------------------------------------------------------------------

TAU_S = DEMO.contactors.precharge_resistor_ohm * DEMO.contactors.dc_link_capacitance_f


@settings(max_examples=80, deadline=None)
@given(
    pack=st.floats(40.0, 980.0),
    # above 1: a link still charged above the pack (opened under a charge) falls to it
    start_fraction=st.floats(0.0, 1.05),
    tau_factor=st.floats(0.5, 2.0),
    period=st.sampled_from((0.01, 0.05, 0.1)),
    noise=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=20),
)
def test_a_healthy_precharge_never_fails(
    pack: float, start_fraction: float, tau_factor: float, period: float, noise: list[float]
) -> None:
    """A link charging (or discharging, from above the pack) with a time constant within a
    factor 2 of R x C, read with both sensors' error, stays inside the tolerance-3 envelope."""
    check = PrechargeCheck(tau_s=TAU_S, tau_tolerance=P.precharge_tau_tolerance)
    assert check.margin_v == PRECHARGE_MARGIN_V == 2 * PACK_VOLTAGE_ACCURACY_V
    v0 = start_fraction * pack
    # just inside each sensor's accuracy (the envelope is exact at the accuracy itself)
    accuracy = 0.999 * PACK_VOLTAGE_ACCURACY_V
    for k in range(round(10 * TAU_S / period)):
        t = k * period
        link = pack - (pack - v0) * math.exp(-t / (TAU_S * tau_factor))
        e_link = noise[k % len(noise)] * accuracy
        e_pack = noise[(k + 7) % len(noise)] * accuracy
        got = check.update(
            t, commanded=True, path_closed=True, pack_v=pack + e_pack, link_v=link + e_link
        )
        assert got is False


@settings(max_examples=60, deadline=None)
@given(pack=st.floats(40.0, 980.0), stuck_at=st.floats(0.0, 0.2))
def test_a_link_that_does_not_rise_fails_within_a_few_time_constants(
    pack: float, stuck_at: float
) -> None:
    check = PrechargeCheck(tau_s=TAU_S, tau_tolerance=P.precharge_tau_tolerance)
    tol = P.precharge_tau_tolerance
    verdicts = [
        check.update(
            k * 0.01, commanded=True, path_closed=True, pack_v=pack, link_v=stuck_at * pack
        )
        for k in range(round(3 * tol * TAU_S / 0.01))
    ]
    assert verdicts[-1] is True
    assert "does not rise" in (check.reason or "")
    # it stays failed until the path opens, then it is clear again
    assert check.update(5.0, commanded=False, path_closed=False, pack_v=pack, link_v=0.0) is False


@settings(max_examples=60, deadline=None)
@given(pack=st.floats(40.0, 980.0), above_v=st.floats(20.0, 60.0))
def test_a_link_above_the_pack_that_does_not_fall_or_drops_at_once_fails(
    pack: float, above_v: float
) -> None:
    """The mirrored bounds of a link held above the pack: one that stays there does not fall;
    one that reaches the pack at once bypassed the resistor."""
    tol = P.precharge_tau_tolerance
    held = PrechargeCheck(tau_s=TAU_S, tau_tolerance=tol)
    verdicts = [
        held.update(k * 0.01, commanded=True, path_closed=True, pack_v=pack, link_v=pack + above_v)
        for k in range(round(3 * tol * TAU_S / 0.01))
    ]
    assert verdicts[0] is False and verdicts[-1] is True
    assert "does not fall" in (held.reason or "")
    dropped = PrechargeCheck(tau_s=TAU_S, tau_tolerance=tol)
    start = pack + above_v
    assert dropped.update(0.0, commanded=True, path_closed=True, pack_v=pack, link_v=start) is False
    assert dropped.update(0.01, commanded=True, path_closed=True, pack_v=pack, link_v=pack) is True
    assert "falls faster" in (dropped.reason or "")


@given(pack=st.floats(40.0, 980.0))
def test_a_link_that_jumps_to_the_pack_fails_as_too_fast(pack: float) -> None:
    check = PrechargeCheck(tau_s=TAU_S, tau_tolerance=P.precharge_tau_tolerance)
    assert check.update(0.0, commanded=True, path_closed=True, pack_v=pack, link_v=0.0) is False
    assert check.update(0.01, commanded=True, path_closed=True, pack_v=pack, link_v=pack) is True
    assert "faster" in (check.reason or "")


@given(st.one_of(st.none(), st.just(math.nan)), st.floats(0.0, 10.0))
def test_precharge_with_unknown_voltages_is_not_evaluated(unknown: float | None, t: float) -> None:
    check = PrechargeCheck(tau_s=TAU_S, tau_tolerance=3.0)
    assert check.update(t, commanded=True, path_closed=True, pack_v=unknown, link_v=10.0) is None
    assert check.update(t, commanded=True, path_closed=True, pack_v=100.0, link_v=unknown) is None


def test_a_state_machine_give_up_raises_precharge_failure_once() -> None:
    check = PrechargeCheck(tau_s=TAU_S, tau_tolerance=3.0)
    assert (
        check.update(0.0, commanded=False, path_closed=False, pack_v=1, link_v=0, failures=2)
        is False
    )
    assert (
        check.update(0.1, commanded=False, path_closed=False, pack_v=1, link_v=0, failures=3)
        is True
    )
    assert (
        check.update(0.2, commanded=False, path_closed=False, pack_v=1, link_v=0, failures=3)
        is False
    )


class Loop:
    """State machine, simulated contactors and the plausibility checks, 0.1 s per cycle."""

    def __init__(self, config: SystemConfig = DEMO, **plant: Any) -> None:
        """`plant`: ContactorConfig fields where the real circuit differs from the
        configuration."""
        self.config = config
        self.sm = ContactorStateMachine(config.contactors)
        self.sim = SimulatedContactors(config.contactors.model_copy(update=plant))
        self.checks = PlausibilityChecks.from_system(config)
        self.protection = Protection(config.protection)
        self.pack_v = config.nominal_pack_voltage_v
        self.now = 0.0
        self.feedback = self.sim.feedback
        self.result = self.protection.status()

    def tick(self) -> None:
        fb = self.feedback
        out = self.sm.outputs
        values = self.checks.update(
            self.now,
            _facts(
                current_a=0.0,
                pack_v=self.pack_v,
                link_v=self.sim.bus_voltage_v,
                feedback_all_open=fb.all_open,
                commanded_open=out.all_off,
                precharge_commanded=out.main_negative and out.precharge,
                precharge_path_closed=_path_closed(fb),
                precharge_failures=self.sm.precharge_failures,
            ),
        )
        self.result = self.protection.evaluate(
            nominal(self.config, **values.inputs(), current_a=0.0), self.now
        )
        if self.result.actions.open_contactors and self.sm.state not in ("fault", "standby"):
            self.sm.trip(self.now, ", ".join(self.result.actions.open_contactors))
        out = self.sm.step(
            self.now,
            pack_voltage_v=self.pack_v,
            bus_voltage_v=self.sim.bus_voltage_v,
            feedback=fb,
            fault_latched=bool(self.result.faults),
        )
        self.feedback = self.sim.step(PERIOD_S, out, self.pack_v)
        self.now += PERIOD_S

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / PERIOD_S)):
            self.tick()


def _path_closed(fb: ContactorFeedback) -> bool:
    return fb.main_negative and fb.precharge and not fb.main_positive


def _facts(**kw: Any) -> PlausibilityFacts:
    base: dict[str, Any] = dict(
        current_a=0.0, pack_v=None, link_v=None, feedback_all_open=True, commanded_open=True,
        precharge_commanded=False, precharge_path_closed=False,
    )  # fmt: skip
    return PlausibilityFacts(**(base | kw))


def test_the_simulated_precharge_passes_and_a_cycle_trips_nothing() -> None:
    loop = Loop()
    loop.run(1.0)
    assert loop.sm.request_close(loop.now) is None
    loop.run(3.0)
    assert loop.sm.state == "closed"
    loop.sm.request_open(loop.now)
    loop.run(3.0)
    assert loop.sm.state == "standby"
    assert loop.result.faults == () and loop.result.warnings == ()


def test_a_short_across_the_link_trips_precharge_failure_before_the_timeout() -> None:
    loop = Loop()
    loop.sim.precharge_short()
    loop.run(1.0)
    assert loop.sm.request_close(loop.now) is None
    start = loop.now
    loop.run(DEMO.contactors.precharge_timeout_s)
    assert loop.result.faults == ("precharge_failure",)
    assert loop.sm.state == "fault" and loop.sm.precharge_attempt == 1  # no retry into a short
    assert loop.checks.precharge.reason and "does not rise" in loop.checks.precharge.reason
    assert loop.now - start < DEMO.contactors.precharge_timeout_s + PERIOD_S


def test_a_link_without_its_capacitance_trips_as_too_fast() -> None:
    # e.g. the inverter is not connected: the link jumps to the pack, no precharge happened
    loop = Loop(dc_link_capacitance_f=DEMO.contactors.dc_link_capacitance_f / 1000)
    loop.run(1.0)
    assert loop.sm.request_close(loop.now) is None
    loop.run(1.0)
    assert loop.result.faults == ("precharge_failure",)
    assert loop.checks.precharge.reason and "faster" in loop.checks.precharge.reason


def test_the_state_machine_counts_a_close_sequence_that_ran_out_of_tries() -> None:
    config = DEMO.contactors
    sm = ContactorStateMachine(config)
    feedback = ContactorFeedback()
    t = 0.0
    sm.step(t, pack_voltage_v=400.0, bus_voltage_v=0.0, feedback=feedback, fault_latched=False)
    assert sm.request_close(t) is None
    while sm.state != "fault" and t < 60.0:
        t += PERIOD_S
        out = sm.step(
            t, pack_voltage_v=400.0, bus_voltage_v=0.0, feedback=feedback, fault_latched=False
        )
        # the contacts follow their coils; the link never rises
        feedback = ContactorFeedback(out.main_positive, out.main_negative, out.precharge)
    assert sm.state == "fault" and sm.precharge_failures == 1
    assert sm.precharge_attempt == config.precharge_retries + 1


# --- 6./9. driver health ------------------------------------------------------------------------


@given(
    st.lists(st.sampled_from((True, False, None)), min_size=1, max_size=300),
    st.sampled_from((0.1, 0.25, 1.0)),
)
def test_driver_age_is_the_time_since_the_last_good_reading(
    reads: list[bool | None], period_s: float
) -> None:
    """Once a device has answered, its age is the time since its last good reading. Before,
    it may still be booting: not evaluated for DEVICE_START_GRACE_S from the first update,
    then counted from that first update."""
    watch = DriverWatch()
    first, last_good = 5.0, None
    for k, good in enumerate(reads):
        now = first + k * period_s
        if good is True:
            last_good = now
        age = watch.update(now, good)
        if last_good is None and now - first < DEVICE_START_GRACE_S:
            assert age is None, k
        else:
            assert age == pytest.approx(now - (first if last_good is None else last_good))


def devices_raised(answering: Callable[[float], bool], cycles: int) -> dict[str, float]:
    """Cycles 0.25 s apart (exact in binary) with a relay module and an insulation monitor
    that answer while `answering(now)`: code -> when it was first raised."""
    checks = PlausibilityChecks.from_system(DEMO, contactor_io=True, insulation_monitor=True)
    p = Protection(P, insulation_monitor=True)
    raised: dict[str, float] = {}
    for k in range(cycles):
        now = k * 0.25
        up = answering(now)
        values = checks.update(now, _facts(contactor_io_good=up, insulation_good=up))
        result = p.evaluate(nominal(DEMO, **values.inputs()), now)
        for tr in result.transitions:
            raised.setdefault(tr.code, now)
    return raised


@pytest.mark.parametrize("answers_at_s", [3.0, 9.5, None])
def test_a_relay_module_booting_after_the_master_latches_nothing(
    answers_at_s: float | None,
) -> None:
    """Power-up order, or a master started first: a relay module (or an insulation monitor)
    that answers within the start-up grace raises nothing; one that never answers latches its
    failure when the grace ends; once heard from, its own timeout counts."""
    period = 0.25
    raised = devices_raised(
        lambda now: answers_at_s is not None and answers_at_s <= now < answers_at_s + 5.0,
        cycles=120,
    )
    # each trips at the first cycle whose age is past its timeout (1 s and 10 s)
    assert (P.contactor_io_timeout_s, P.insulation_monitor_timeout_s) == (1.0, 10.0)
    if answers_at_s is None:  # the grace's end: the age is 10 s from the start
        assert DEVICE_START_GRACE_S == 10.0
        assert raised == {"contactor_io_failure": 10.0, "insulation_monitor_failure": 10.25}
    else:  # gone again after 5 s
        last_good = answers_at_s + 5.0 - period
        assert raised == {
            "contactor_io_failure": last_good + 1.0 + period,
            "insulation_monitor_failure": last_good + 10.0 + period,
        }


def test_a_stale_relay_module_trips_contactor_io_failure_after_its_timeout() -> None:
    # the relay module and the monitor last answer at 0.75 s
    raised = devices_raised(lambda now: now < 1.0, cycles=40)
    # the relay module after its 1 s timeout; the monitor's 10 s have not passed
    assert P.contactor_io_timeout_s == 1.0 and P.insulation_monitor_timeout_s == 10.0
    assert raised == {"contactor_io_failure": 2.0}


# --- 7. temperature spread ----------------------------------------------------------------------

temps = st.one_of(st.none(), st.just(math.nan), st.floats(-40.0, 125.0))


@given(st.lists(st.lists(temps, max_size=6), max_size=6))
def test_temperature_spread_is_the_widest_module(modules: list[list[float | None]]) -> None:
    spreads = []
    for m in modules:
        known = [t for t in m if t is not None and not math.isnan(t)]
        if len(known) >= 2:
            spreads.append(max(known) - min(known))
    assert module_temperature_spread_c(modules) == (max(spreads) if spreads else None)


@given(
    modules=st.integers(0, 5),
    per_module=st.integers(1, 5),
    data=st.data(),
)
def test_temperature_spread_on_arrays_is_the_spread_on_lists(
    modules: int, per_module: int, data: st.DataObject
) -> None:
    """The supervisor passes the snapshot's temperatures as one array (`ModuleVectors`)."""
    flat = data.draw(st.lists(temps, min_size=modules * per_module, max_size=modules * per_module))
    lists = split_even([math.nan if t is None else t for t in flat], per_module)
    array = ModuleVectors.of_even(np.array(flat, dtype=np.float64), per_module)
    assert module_temperature_spread_c(array) == module_temperature_spread_c(lists)


@given(st.lists(st.floats(20.0, 20.0 + P.temperature_spread_warning_c), min_size=2))
def test_temperature_spread_within_its_bound_never_warns(module: list[float]) -> None:
    p = Protection(P)
    spread = module_temperature_spread_c([module])
    _, result, _ = run(p, nominal(DEMO, module_temp_spread_c=spread), 0.0, 10.0)
    assert result.warnings == () and result.alarms == ()


# --- 8. stuck channels --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    modules=st.integers(1, 4),
    per_module=st.integers(2, 6),
    samples=st.integers(1, 30),
    data=st.data(),
)
def test_a_frozen_channel_under_load_is_stuck_after_exactly_n_samples(
    modules: int, per_module: int, samples: int, data: st.DataObject
) -> None:
    frozen = (data.draw(st.integers(0, modules - 1)), data.draw(st.integers(0, per_module - 1)))
    current = data.draw(st.floats(5.01, 200.0)) * data.draw(st.sampled_from((-1, 1)))
    tracker = StuckChannels(samples=samples, current_a=5.0)
    for k in range(samples + 2):
        vectors = [
            [3.3 if (m, i) == frozen else 3.3 + 0.001 * k for i in range(per_module)]
            for m in range(modules)
        ]
        stuck = tracker.update(vectors, current)
        # k samples after the first one repeated the frozen channel's reading
        assert stuck == (frozenset({frozen}) if k >= samples else frozenset())
    # a change of the channel clears it
    moved = [[3.4 + 0.01 * i for i in range(per_module)] for _ in range(modules)]
    assert tracker.update(moved, current) == frozenset()


@settings(max_examples=60, deadline=None)
@given(
    current=st.one_of(st.none(), st.just(math.nan), st.floats(-5.0, 5.0)),
    steps=st.integers(1, 60),
)
def test_no_channel_is_stuck_without_load(current: float | None, steps: int) -> None:
    tracker = StuckChannels(samples=3, current_a=5.0)
    for k in range(steps):
        assert tracker.update([[3.3, 3.3 + 0.001 * k]], current) == frozenset()


@given(steps=st.integers(1, 60), unknown_at=st.integers(0, 59))
def test_a_plateau_where_every_channel_holds_is_not_stuck(steps: int, unknown_at: int) -> None:
    tracker = StuckChannels(samples=3, current_a=5.0)
    for k in range(steps):
        value = None if k == unknown_at else 3.3
        assert tracker.update([[3.3, value], [3.3, 3.3]], 50.0) == frozenset()


@given(steps=st.integers(1, 80), pattern=st.lists(st.booleans(), min_size=1, max_size=10))
def test_modules_that_refresh_at_different_times_are_not_stuck(
    steps: int, pattern: list[bool]
) -> None:
    """Fed every cycle, a module whose telemetry did not refresh repeats its readings while
    another module moves: that is not a stuck channel."""
    tracker = StuckChannels(samples=2, current_a=5.0)
    fresh = [[3.30, 3.31], [3.28, 3.29]]
    for k in range(steps):
        if pattern[k % len(pattern)]:
            fresh[k % 2] = [v + 0.001 for v in fresh[k % 2]]
        assert tracker.update([list(m) for m in fresh], 80.0) == frozenset()


def test_an_unknown_reading_restarts_the_count() -> None:
    tracker = StuckChannels(samples=3, current_a=5.0)
    seq = [3.30, 3.30, 3.30, None, 3.30, 3.30, 3.30, 3.30]
    got = [tracker.update([[v, 3.0 + 0.01 * k]], 50.0) for k, v in enumerate(seq)]
    assert [bool(g) for g in got] == [False, False, False, False, False, False, False, True]


readings = st.one_of(
    st.none(), st.just(math.nan), st.sampled_from([3.30, 3.31]), st.floats(3.0, 3.5)
)
"""Few distinct values, so that channels repeat and runs grow."""


@settings(max_examples=150, deadline=None)
@given(
    samples=st.integers(1, 4),
    layouts=st.lists(st.lists(st.integers(0, 4), min_size=0, max_size=4), min_size=1, max_size=3),
    data=st.data(),
)
def test_stuck_channels_on_arrays_count_as_the_loop_over_channels_did(
    samples: int, layouts: list[list[int]], data: st.DataObject
) -> None:
    """Any run of samples, layout changes, unknown readings and currents: the array version
    (fed lists, or the snapshot's pack-order vector with its modules) finds what the Python
    loop over every channel found (tests/master_core/stuck_reference.py)."""
    reference = ReferenceStuckChannels(samples=samples, current_a=5.0)
    reference_pack = ReferenceStuckChannels(samples=samples, current_a=5.0)
    fed_lists = StuckChannels(samples=samples, current_a=5.0)
    fed_arrays = StuckChannels(samples=samples, current_a=5.0)
    for _ in range(data.draw(st.integers(1, 25))):
        counts = data.draw(st.sampled_from(layouts))
        vectors = [data.draw(st.lists(readings, min_size=n, max_size=n)) for n in counts]
        current = data.draw(st.one_of(st.none(), st.just(math.nan), st.sampled_from([0.0, 50.0])))
        assert fed_lists.update(vectors, current) == reference.update(vectors, current)
        # the snapshot's pack order, as the supervisor passes it: a module's cells need not
        # be adjacent, unknown is NaN
        flat = [math.nan if v is None else v for m in vectors for v in m]
        modules = [m for m, n in enumerate(counts) for _ in range(n)]
        order = data.draw(st.permutations(range(len(flat))))
        pack = [flat[k] for k in order]
        module_of = [modules[k] for k in order]
        arrays = ModuleVectors.of_pack(np.array(pack), np.array(module_of, dtype=np.int64))
        expected = reference_pack.update(by_module(pack, module_of), current)
        assert fed_arrays.update(arrays, current) == expected


def test_module_vectors_read_as_the_lists_they_hold() -> None:
    vectors = ModuleVectors.of_pack(np.array([1.0, 3.0, 2.0]), np.array([0, 1, 0]))
    assert list(vectors) == by_module([1.0, 3.0, 2.0], [0, 1, 0]) == [[1.0, 2.0], [3.0]]
    assert list(ModuleVectors.of_even(np.array([1.0, 2.0, 3.0, 4.0]), 2)) == [
        [1.0, 2.0],
        [3.0, 4.0],
    ]
    with pytest.raises(ValueError):
        ModuleVectors.of_even(np.array([1.0, 2.0, 3.0]), 2)


def test_module_vectors_from_a_snapshot() -> None:
    assert by_module([1.0, 2.0, 3.0], [0, 0, 1]) == [[1.0, 2.0], [3.0]]
    assert split_even([1.0, 2.0, 3.0, 4.0], 2) == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError):
        split_even([1.0, 2.0, 3.0], 2)


def test_checks_report_stuck_channels_with_their_position() -> None:
    config = DEMO.protection.model_copy(update={"stuck_cell_voltage_samples": 3})
    checks = PlausibilityChecks(config, DEMO.contactors)
    assert checks.update(0.0, _facts()).stuck_cell_voltage_channels is None  # nothing fed yet
    values = None
    for k in range(5):
        cells = [[3.3 + 0.001 * k, 3.3 + 0.001 * k], [3.3 + 0.001 * k, 3.25]]
        values = checks.update(k * PERIOD_S, _facts(current_a=-40.0, cells_by_module=cells))
    assert values is not None and values.stuck_cell_voltage_channels == frozenset({(1, 1)})
    assert values.stuck_temperature_channels is None


def test_unknown_facts_never_trip_anything() -> None:
    checks = PlausibilityChecks.from_system(DEMO, insulation_monitor=True, contactor_io=True)
    p = Protection(P, insulation_monitor=True)
    for k in range(100):
        now = k * PERIOD_S
        facts = PlausibilityFacts(
            current_a=None, pack_v=None, link_v=None, feedback_all_open=None,
            commanded_open=k > 50, precharge_commanded=20 < k < 40,
            precharge_path_closed=20 < k < 40,
            cells_by_module=[[None, math.nan]], temps_by_module=[[None, None]],
            insulation_good=True, contactor_io_good=True,
        )  # fmt: skip
        values = checks.update(now, facts)
        result = p.evaluate(nominal(DEMO, **values.inputs()), now)
        assert result.faults == () and result.warnings == () and result.alarms == ()
