"""The OCV capture's core on synthetic slow cycles: a known OCV with hysteresis and known
resistances; the branches derived must match, and the capture must abort on what spoils one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from services.config_ui.wizard.ocv_csv import parse_ocv_csv
from services.master_core.estimation.hysteresis import hysteresis_step
from services.master_core.estimation.ocv_capture import CaptureParams, OcvCapture
from shared.config.chemistry import OCV_WINDOW_TOLERANCE_V

CAPACITY_AH = 100.0
HALF_GAP_V = 0.015
CHARGE_V = 4.2
CUTOFF_V = 3.0
GRID = tuple(float(s) for s in range(0, 101, 5))


def mid_v(soc_pct: np.ndarray | float) -> np.ndarray:
    """A made-up NMC-like OCV: steep at both ends, as real cells."""
    s = np.asarray(soc_pct, dtype=np.float64)
    out: np.ndarray = (
        3.3 + 0.8 * s / 100.0 - 0.4 * np.exp(-s / 4.0) + 0.15 * np.exp(-(100.0 - s) / 4.0)
    )
    return out


@dataclass
class Pack:
    """Cells in series with one SOC (same capacity), an OCV offset and a resistance each."""

    r_ohm: np.ndarray
    offset_v: np.ndarray
    soc_pct: float = 60.0
    h: float = 0.0
    gamma: float = 50.0
    t_s: float = 0.0
    log_t: list[float] = field(default_factory=list)
    log_soc: list[float] = field(default_factory=list)

    def terminal_v(self, i_a: float) -> np.ndarray:
        ocv = mid_v(self.soc_pct) + self.h * HALF_GAP_V + self.offset_v
        out: np.ndarray = ocv + i_a * self.r_ohm
        return out

    def step(self, i_a: float, dt_s: float) -> None:
        moved = 100.0 * i_a * dt_s / 3600.0 / CAPACITY_AH
        self.soc_pct += moved
        self.h = float(hysteresis_step(self.h, moved, self.gamma))
        self.t_s += dt_s
        self.log_t.append(self.t_s)
        self.log_soc.append(self.soc_pct)

    def soc_at(self, t_s: float) -> float:
        return float(np.interp(t_s, self.log_t, self.log_soc))


Feed = Callable[[OcvCapture, Pack, float, np.ndarray], None]


def feed(capture: OcvCapture, pack: Pack, i_a: float, v: np.ndarray) -> None:
    capture.update(pack.t_s, i_a, v, np.full(len(v), 25.0))


def run_segment(
    capture: OcvCapture,
    pack: Pack,
    i_a: float,
    dt_s: float,
    *,
    until: Callable[[np.ndarray], bool] | None = None,
    for_s: float | None = None,
    fed: Feed = feed,
) -> None:
    """Drive at `i_a` until the terminal voltages meet `until` or for `for_s`."""
    start = pack.t_s
    while capture.running:
        pack.step(i_a, dt_s)
        v = pack.terminal_v(i_a)
        fed(capture, pack, i_a, v)
        if until is not None and until(v):
            return
        if for_s is not None and pack.t_s - start >= for_s:
            return


def charge_cv(
    capture: OcvCapture,
    pack: Pack,
    cc_a: float = 0.3 * CAPACITY_AH,
    dt_s: float = 5.0,
    fed: Feed = feed,
) -> None:
    """`cc_a` to charge_v, then constant voltage (the highest cell at charge_v) down to a
    0.008C tail, held for two minutes more: the CV end, the full anchor."""
    run_segment(capture, pack, cc_a, dt_s, until=lambda v: v.max() >= CHARGE_V, fed=fed)
    tail_s = 0.0
    while capture.running and tail_s < 120.0:
        ocv = pack.terminal_v(0.0)
        i_a = min(float(np.min((CHARGE_V - ocv) / pack.r_ohm)), cc_a)
        i_a = max(i_a, 0.0)
        pack.step(i_a, dt_s)
        fed(capture, pack, i_a, pack.terminal_v(i_a))
        if i_a <= 0.008 * CAPACITY_AH:
            tail_s += dt_s


def full_first_cycle(
    capture: OcvCapture, pack: Pack, slow_c: float = 0.048, dt_s: float = 5.0, fed: Feed = feed
) -> None:
    """As an inverter would: charge at 0.3C to charge_v, tail, rest, slow discharge to the
    cut-off, rest, slow charge to charge_v, rest."""
    charge_cv(capture, pack, dt_s=dt_s, fed=fed)
    run_segment(capture, pack, 0.0, dt_s, for_s=120.0, fed=fed)
    run_segment(
        capture, pack, -slow_c * CAPACITY_AH, dt_s, until=lambda v: v.min() <= CUTOFF_V, fed=fed
    )
    run_segment(capture, pack, 0.0, dt_s, for_s=600.0, fed=fed)
    charge_cv(capture, pack, slow_c * CAPACITY_AH, dt_s, fed)
    run_segment(capture, pack, 0.0, dt_s, for_s=600.0, fed=fed)


def params(**kw: object) -> CaptureParams:
    return CaptureParams(
        capacity_ah=CAPACITY_AH, charge_v=CHARGE_V, discharge_cutoff_v=CUTOFF_V,
        soc_grid_pct=GRID, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def expected_branch(pack: Pack, start_s: float, end_s: float, up: bool) -> np.ndarray:
    """The true branch on the derived SOC scale: point s lies at the true SOC between the
    phase's start and end, the same share of the way."""
    s0, s1 = pack.soc_at(start_s), pack.soc_at(end_s)
    lo, hi = (s0, s1) if up else (s1, s0)
    true_soc = lo + np.asarray(GRID) / 100.0 * (hi - lo)
    out: np.ndarray = mid_v(true_soc) + (HALF_GAP_V if up else -HALF_GAP_V)
    return out


def check_branches(capture: OcvCapture, pack: Pack, tol_v: float) -> None:
    result = capture.result
    assert capture.state == "done", capture.reason
    assert result is not None
    times = {d: (a, b) for d, a, b in result.phase_times_s}
    up = expected_branch(pack, *times["charge"], up=True)
    down = expected_branch(pack, *times["discharge"], up=False)
    # after a reversal a cell changes branch within a few % (gamma 50: 92 % of the way at
    # 5 % SOC): the charge branch from 0 %, the discharge branch from 100 %
    err_up = np.abs(np.asarray(result.charge_v) - up)[2:]
    err_down = np.abs(np.asarray(result.discharge_v) - down)[:-2]
    assert err_up.max() < tol_v, err_up
    assert err_down.max() < tol_v, err_down
    true_span = pack.soc_at(times["discharge"][0]) - pack.soc_at(times["discharge"][1])
    assert result.capacity_ah == pytest.approx(true_span / 100.0 * CAPACITY_AH, rel=2e-3)


def test_branches_match_a_known_ocv_and_resistance() -> None:
    pack = Pack(r_ohm=np.array([0.001, 0.002, 0.003, 0.0025]), offset_v=np.zeros(4))
    capture = OcvCapture(4, params())
    capture.start(0.0)
    full_first_cycle(capture, pack)
    check_branches(capture, pack, tol_v=0.002)
    assert capture.result is not None
    r = capture.result.resistance_ohm
    assert all(x is not None for x in r)
    # within 0.1 mOhm: the SOC and the hysteresis state move a little during the 5 s of a step
    assert np.allclose([x for x in r if x is not None], pack.r_ohm, rtol=0.0, atol=1e-4)


def test_without_ir_correction_the_branches_are_off() -> None:
    """The test can fail: the same cycle with a large R and no steps to estimate it from
    (step_max_dt_s below the update period) leaves the IR drop in the branches."""
    pack = Pack(r_ohm=np.full(2, 0.01), offset_v=np.zeros(2))
    capture = OcvCapture(2, params(step_max_dt_s=1.0))
    capture.start(0.0)
    full_first_cycle(capture, pack)
    assert capture.result is not None
    assert capture.result.resistance_ohm == (None, None)
    with pytest.raises(AssertionError):
        check_branches(capture, pack, tol_v=0.02)


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(
    r_mohm=st.lists(st.floats(0.3, 5.0), min_size=1, max_size=5),
    offsets_mv=st.lists(st.floats(-3.0, 3.0), min_size=5, max_size=5),
    slow_c=st.floats(0.025, 0.055),
)
def test_median_branches_match_for_any_cells(
    r_mohm: list[float], offsets_mv: list[float], slow_c: float
) -> None:
    n = len(r_mohm)
    off = np.asarray(offsets_mv[:n]) / 1000.0
    pack = Pack(r_ohm=np.asarray(r_mohm) / 1000.0, offset_v=off)
    # updates every 10 s: a step's two updates are 10 s apart
    capture = OcvCapture(n, params(record_period_s=60.0, step_max_dt_s=15.0))
    capture.start(0.0)
    full_first_cycle(capture, pack, slow_c=slow_c, dt_s=10.0)
    result = capture.result
    assert result is not None, capture.reason
    # the median cell's offset moves the pack branch; per cell the spread is the offsets'
    median_off = float(np.median(off))
    times = {d: (a, b) for d, a, b in result.phase_times_s}
    up = expected_branch(pack, *times["charge"], up=True) + median_off
    # 100 % is the highest cell's (the string's end is its limit), not the median's
    assert np.abs(np.asarray(result.charge_v) - up)[2:-1].max() < 0.003
    assert result.charge_v[-1] == pytest.approx(up[-1] - median_off + off.max(), abs=0.003)
    spread = float(np.ptp(off))
    assert max(result.spread_discharge_v[:-2]) == pytest.approx(spread, abs=0.003)


def test_the_csv_is_what_the_wizard_imports() -> None:
    pack = Pack(r_ohm=np.full(3, 0.002), offset_v=np.array([0.0, 0.001, -0.001]))
    capture = OcvCapture(3, params(record_period_s=60.0))
    capture.start(0.0)
    full_first_cycle(capture, pack, dt_s=10.0)
    assert capture.result is not None
    text = capture.result.csv()
    parsed = parse_ocv_csv(text, "C/20 cycle")
    assert parsed.errors == []
    assert parsed.branches and parsed.points == len(GRID)
    values = parsed.values
    assert values["chemistry_overrides.ocv_table_soc_pct"] == list(GRID)
    assert values["chemistry_overrides.ocv_temperatures_c"] == [25.0]
    up = values["chemistry_overrides.ocv_charge_v"]
    assert up == pytest.approx(capture.result.charge_v, abs=6e-5)
    assert "capacity_ah" in capture.result.summary()


def test_empty_first_order() -> None:
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2), soc_pct=40.0)
    capture = OcvCapture(2, params(order="empty_first"))
    capture.start(0.0)
    run_segment(capture, pack, -0.3 * CAPACITY_AH, 5.0, until=lambda v: v.min() <= CUTOFF_V)
    assert capture.state == "awaiting_start"  # a fast discharge is no empty anchor
    run_segment(capture, pack, -4.8, 5.0, until=lambda v: v.min() <= CUTOFF_V)
    run_segment(capture, pack, 0.0, 5.0, for_s=120.0)
    charge_cv(capture, pack, 4.8)
    run_segment(capture, pack, 0.0, 5.0, for_s=600.0)
    run_segment(capture, pack, -4.8, 5.0, until=lambda v: v.min() <= CUTOFF_V)
    run_segment(capture, pack, 0.0, 5.0, for_s=600.0)
    assert capture.state == "done", capture.reason
    assert capture.result is not None
    times = {d: (a, b) for d, a, b in capture.result.phase_times_s}
    down = expected_branch(pack, *times["discharge"], up=False)
    assert np.abs(np.asarray(capture.result.discharge_v) - down)[:-2].max() < 0.002


def test_a_too_fast_discharge_aborts() -> None:
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, params())
    capture.start(0.0)
    charge_cv(capture, pack)
    assert capture.state == "first"
    run_segment(capture, pack, -10.0, 5.0, for_s=3600.0)  # C/10
    assert capture.state == "aborted"
    assert capture.abort_reason == "too_fast"
    assert "10.00 A" in capture.reason


def test_a_brief_fast_current_is_tolerated() -> None:
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, params(over_rate_hold_s=60.0))
    capture.start(0.0)
    charge_cv(capture, pack)
    run_segment(capture, pack, -20.0, 5.0, for_s=30.0)
    run_segment(capture, pack, -4.8, 5.0, for_s=600.0)
    assert capture.state == "first", capture.reason


def test_a_gap_aborts() -> None:
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, params(max_gap_s=30.0))
    capture.start(0.0)
    charge_cv(capture, pack)
    run_segment(capture, pack, -4.8, 5.0, for_s=600.0)
    assert capture.state == "first"
    pack.step(-4.8, 40.0)  # no update for 40 s
    feed(capture, pack, -4.8, pack.terminal_v(-4.8))
    assert capture.state == "aborted" and capture.abort_reason == "gap"


def test_a_cell_without_voltage_aborts_and_shorter_holes_do_not() -> None:
    pack = Pack(r_ohm=np.full(3, 0.002), offset_v=np.zeros(3))
    capture = OcvCapture(3, params(max_gap_s=30.0))
    capture.start(0.0)
    charge_cv(capture, pack)

    def hole(c: OcvCapture, p: Pack, i_a: float, v: np.ndarray) -> None:
        v = v.copy()
        v[1] = np.nan
        feed(c, p, i_a, v)

    run_segment(capture, pack, -4.8, 5.0, for_s=25.0, fed=hole)
    run_segment(capture, pack, -4.8, 5.0, for_s=60.0)
    assert capture.state == "first"
    run_segment(capture, pack, -4.8, 5.0, for_s=60.0, fed=hole)
    assert capture.state == "aborted" and capture.abort_reason == "cell_unknown"
    assert "cell 1" in capture.reason


def test_another_cell_count_and_a_request_abort() -> None:
    capture = OcvCapture(2, params())
    capture.start(0.0)
    capture.update(1.0, 0.0, [3.5, 3.5, 3.5], [25.0, 25.0, 25.0])
    assert capture.abort_reason == "cells_changed"
    capture.start(2.0)
    assert capture.state == "awaiting_start"
    capture.abort()
    assert capture.state == "aborted" and capture.abort_reason == "aborted"
    assert capture.status(3.0).as_dict()["state"] == "aborted"


def test_the_wrong_direction_aborts() -> None:
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, params())
    capture.start(0.0)
    charge_cv(capture, pack)
    run_segment(capture, pack, -4.8, 5.0, for_s=600.0)
    run_segment(capture, pack, 4.8, 5.0, for_s=600.0)
    assert capture.abort_reason == "wrong_direction"


def test_progress_is_reported() -> None:
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, params())
    capture.start(0.0)
    assert capture.status(0.0).state == "awaiting_start"
    charge_cv(capture, pack)
    run_segment(capture, pack, -5.0, 5.0, for_s=3600.0)
    status = capture.status(pack.t_s)
    assert status.phase == "discharge"
    assert status.moved_ah == pytest.approx(5.0, abs=0.05)
    assert status.progress_pct == pytest.approx(2.5, abs=0.05)


def test_the_pack_may_go_back_to_work_right_after_the_last_anchor() -> None:
    """Once the slow charge has reached full, a fast discharge ramped up at once (no rest, so
    no end step within the wait) does not abort: the capture is complete."""
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, params(record_period_s=60.0))
    capture.start(0.0)
    charge_cv(capture, pack, dt_s=10.0)
    run_segment(capture, pack, -4.8, 10.0, until=lambda v: v.min() <= CUTOFF_V)
    run_segment(capture, pack, 0.0, 10.0, for_s=600.0)
    charge_cv(capture, pack, 4.8, dt_s=10.0)
    assert capture.state == "second"
    for k in range(120):  # -1 A per update: no step (< 0.02C); past C/20 + 20 % after 70 s
        run_segment(capture, pack, -1.0 * min(k, 30), 10.0, for_s=10.0)
    assert capture.state == "done", capture.reason


def test_a_current_unknown_for_too_long_aborts() -> None:
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, params(max_gap_s=30.0))
    capture.start(0.0)
    charge_cv(capture, pack)
    run_segment(capture, pack, -4.8, 5.0, for_s=600.0)

    def no_current(c: OcvCapture, p: Pack, i_a: float, v: np.ndarray) -> None:
        c.update(p.t_s, None, v, np.full(len(v), 25.0))

    run_segment(capture, pack, -4.8, 5.0, for_s=25.0, fed=no_current)
    assert capture.state == "first"  # a short hole is bridged
    run_segment(capture, pack, -4.8, 5.0, for_s=60.0)
    run_segment(capture, pack, -4.8, 5.0, for_s=60.0, fed=no_current)
    assert capture.state == "aborted" and capture.abort_reason == "gap"
    assert "no current reading" in capture.reason


def test_the_pack_branches_end_at_the_limiting_cells_so_the_configuration_takes_them() -> None:
    """0 % is the first cell at the cut-off, 100 % the first at full. Two of three cells sit
    150 mV above the third: the median cell is 150 mV above the cut-off at the string's 0 %, a
    table the configuration refuses (it must span the operating window within
    OCV_WINDOW_TOLERANCE_V). The pack branches end at the limiting cells instead."""
    pack = Pack(r_ohm=np.full(3, 0.002), offset_v=np.array([0.0, 0.15, 0.15]))
    capture = OcvCapture(3, params(record_period_s=60.0))
    capture.start(0.0)
    full_first_cycle(capture, pack, dt_s=10.0)
    result = capture.result
    assert result is not None, capture.reason
    mid = 0.5 * (np.asarray(result.charge_v) + np.asarray(result.discharge_v))
    # the empty anchor takes the lowest cell within empty_margin_v of the cut-off
    low = CUTOFF_V + capture.params.empty_margin_v + 0.01
    assert CUTOFF_V <= result.discharge_v[0] == result.charge_v[0] <= low
    assert mid[0] <= CUTOFF_V + OCV_WINDOW_TOLERANCE_V
    assert mid[-1] >= CHARGE_V - OCV_WINDOW_TOLERANCE_V
    assert result.end_fix_v > OCV_WINDOW_TOLERANCE_V  # what the median would have left
    assert result.summary()["end_fix_mv"] == pytest.approx(1000.0 * result.end_fix_v, abs=0.01)


def test_a_channel_reading_high_still_ends_the_slow_discharge_at_the_cut_off() -> None:
    """The discharge stops where the cell truly reaches the cut-off; every channel reads 80 mV
    high, so no sample is within empty_margin_v of it. Near it (twice the margin) while
    discharging, then the current stops: the empty anchor, as the coulomb counter takes it."""
    pack = Pack(r_ohm=np.full(3, 0.002), offset_v=np.zeros(3))

    def high(capture: OcvCapture, pack: Pack, i_a: float, v: np.ndarray) -> None:
        capture.update(pack.t_s, i_a, v + 0.08, np.full(len(v), 25.0))

    capture = OcvCapture(3, params(record_period_s=60.0))
    capture.start(0.0)
    full_first_cycle(capture, pack, dt_s=10.0, fed=high)
    assert capture.state == "done", capture.reason
