"""Balancing strategy: safety gates, thresholds with hysteresis, active SOC transfer, reasons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from services.master_core.balancing_strategy import (
    COMMAND_TTL_S,
    BalancingDecision,
    BalancingSettings,
    BalancingStrategy,
    balance_commands,
)
from shared.config import SystemConfig, Topology

CHEMISTRIES = ("LFP", "NMC", "NCA", "LCO", "LTO", "NA_ION")
MODULES, CELLS = 3, 4
N = MODULES * CELLS
PASSIVE = {
    chem: SystemConfig.from_preset(chem, modules=MODULES, cells_per_module=CELLS)
    for chem in CHEMISTRIES
}


def with_mode(config: SystemConfig, mode: str) -> SystemConfig:
    return config.model_copy(
        update={"balancing": config.balancing.model_copy(update={"mode": mode})}
    )


ACTIVE = {chem: with_mode(config, "active") for chem, config in PASSIVE.items()}
NMC = PASSIVE["NMC"]
FAST = BalancingSettings(settle_s=0.0)


def flat(masks: tuple[tuple[bool, ...], ...]) -> list[bool]:
    return [b for module in masks for b in module]


def cells(*volts: float) -> list[float]:
    """N cells: the given voltages first, the rest at the first value."""
    out = list(volts) + [volts[0]] * (N - len(volts))
    return out[:N]


# --- hypothesis: passive --------------------------------------------------------------------


@st.composite
def passive_steps(draw: st.DrawFn) -> tuple[str, list[tuple[list[float], list[float], float]]]:
    chem = draw(st.sampled_from(CHEMISTRIES))
    p = PASSIVE[chem].cell_chemistry
    # Around the balance start voltage, so that every gate is reached.
    volts = st.floats(p.balance_start_v - 0.15, min(p.charge_v + 0.05, p.ov_limit_v))
    step = st.tuples(
        st.lists(volts, min_size=N, max_size=N),
        st.lists(st.floats(-20.0, 80.0), min_size=1, max_size=6),
        st.floats(-30.0, 30.0) | st.sampled_from([0.0, -0.4, -0.6, 5.0]),
    )
    return chem, draw(st.lists(step, min_size=1, max_size=8))


@settings(max_examples=150, deadline=None)
@given(passive_steps())
def test_passive_safety(case: tuple[str, list[tuple[list[float], list[float], float]]]) -> None:
    chem, steps = case
    config = PASSIVE[chem]
    b = config.balancing
    strategy = BalancingStrategy(config, FAST)
    for i, (v, temps, current) in enumerate(steps):
        d = strategy.decide(v, temps, current, None, now_s=float(i))
        bleed = flat(d.discharge)
        assert not any(flat(d.charge))  # passive never charges a cell
        v_min = min(v)
        for cell, on in zip(v, bleed, strict=True):
            if on:
                assert cell >= b.min_cell_voltage_v  # never a cell below the minimum
                assert cell > v_min + b.threshold_v / 2  # hysteresis floor
                if i == 0:
                    assert cell > v_min + b.threshold_v  # fresh: above min + threshold
        if max(temps) > b.max_temperature_c:
            assert not d.running and d.code == "too_hot"
        if current < -strategy.settings.rest_current_a:
            assert not d.running and d.code in ("discharging", "too_hot")
        if d.running:
            assert d.code == "balancing"
            assert max(v) >= config.cell_chemistry.balance_start_v - b.threshold_v / 2


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CHEMISTRIES), st.data())
def test_passive_fresh_bleeds_exactly_the_high_cells(chem: str, data: st.DataObject) -> None:
    config = PASSIVE[chem]
    p, b = config.cell_chemistry, config.balancing
    v = data.draw(st.lists(st.floats(b.min_cell_voltage_v, p.charge_v), min_size=N, max_size=N))
    d = BalancingStrategy(config).decide(v, [25.0], 1.0, None, now_s=0.0)
    if max(v) < p.balance_start_v:
        assert d.code == "below_start_voltage" and not d.running
    else:
        expected = [x > min(v) + b.threshold_v for x in v]
        assert flat(d.discharge) == expected
        assert d.code == ("balancing" if any(expected) else "balanced")


# --- hypothesis: active ---------------------------------------------------------------------


@st.composite
def active_steps(draw: st.DrawFn) -> tuple[str, list[tuple[list[float], list[float], float]]]:
    chem = draw(st.sampled_from(CHEMISTRIES))
    p = ACTIVE[chem].cell_chemistry
    volts = st.floats(p.discharge_cutoff_v, p.charge_v + 0.02)
    step = st.tuples(
        st.lists(volts, min_size=N, max_size=N),
        st.lists(st.floats(0.0, 100.0), min_size=N, max_size=N),
        st.floats(-100.0, 100.0),
    )
    return chem, draw(st.lists(step, min_size=1, max_size=8))


@settings(max_examples=150, deadline=None)
@given(active_steps())
def test_active_moves_charge_from_high_to_low_soc(
    case: tuple[str, list[tuple[list[float], list[float], float]]],
) -> None:
    chem, steps = case
    config = ACTIVE[chem]
    strategy = BalancingStrategy(config)
    thr = strategy.threshold_pct
    for i, (v, soc, current) in enumerate(steps):
        d = strategy.decide(v, [25.0], current, soc, now_s=float(i))
        donors, receivers = flat(d.discharge), flat(d.charge)
        mean = sum(soc) / N
        assert not any(a and c for a, c in zip(donors, receivers, strict=True))
        donor_soc = [s for s, on in zip(soc, donors, strict=True) if on]
        receiver_soc = [s for s, on in zip(soc, receivers, strict=True) if on]
        assert all(s > mean + thr / 2 for s in donor_soc)
        assert all(s < mean - thr / 2 for s in receiver_soc)
        if donor_soc and receiver_soc:
            assert min(donor_soc) > max(receiver_soc)
        for cell, on in zip(v, donors, strict=True):
            if on:
                assert cell >= config.balancing.min_cell_voltage_v
        if i == 0:
            assert all(s > mean + thr for s in donor_soc)
            assert all(s < mean - thr for s in receiver_soc)
            eligible = [
                s > mean + thr and x >= config.balancing.min_cell_voltage_v
                for s, x in zip(soc, v, strict=True)
            ]
            assert donors == eligible  # in charge, discharge and rest alike


def test_active_runs_during_discharge_and_needs_soc() -> None:
    config = ACTIVE["LFP"]
    strategy = BalancingStrategy(config)
    v = [3.32] * N
    soc = [50.0] * N
    soc[0], soc[5] = 70.0, 30.0
    d = strategy.decide(v, [25.0], -80.0, soc, now_s=0.0)
    assert d.code == "balancing"
    assert d.discharge_cells() == (0,) and d.charge_cells() == (5,)
    assert d.reason.endswith("1 donor, 1 receiver")
    none = BalancingStrategy(config).decide(v, [25.0], 0.0, None, now_s=0.0)
    assert none.code == "no_soc" and not none.running
    nan = BalancingStrategy(config).decide(v, [25.0], 0.0, [float("nan")] * N, now_s=0.0)
    assert nan.code == "stale_data" and not nan.running
    even = BalancingStrategy(config).decide(v, [25.0], 0.0, [50.0] * N, now_s=0.0)
    assert even.code == "balanced" and even.reason.startswith("balanced")


def test_active_threshold_follows_the_voltage_window() -> None:
    nmc = BalancingStrategy(ACTIVE["NMC"])
    assert nmc.threshold_pct == pytest.approx(2.0)  # 20 mV of a 1.0 V window
    own = BalancingStrategy(ACTIVE["NMC"], BalancingSettings(active_threshold_pct=5.0))
    assert own.threshold_pct == 5.0


# --- reasons and gates ----------------------------------------------------------------------


def test_reasons() -> None:
    s = BalancingStrategy(NMC, FAST)
    d = s.decide(cells(3.95, 3.985, 3.95), [25.0], 2.0, None, 0.0)
    assert d.code == "balancing"
    assert d.reason == "imbalance 35 mV above threshold 20 mV: bleeding 1 cell"
    assert d.discharge_cells() == (1,)
    assert d.spread_v == pytest.approx(0.035)

    d = s.decide(cells(3.95, 3.985), [25.0], -5.0, None, 1.0)
    assert (d.code, d.reason) == ("discharging", "discharging (5.0 A)")

    low = BalancingStrategy(NMC).decide(cells(3.70, 3.75), [25.0], 0.0, None, 0.0)
    assert low.code == "below_start_voltage"
    assert low.reason.startswith("below balance start voltage 3.80 V")

    hot = BalancingStrategy(NMC).decide(cells(3.95, 3.985), [25.0, 51.0], 0.0, None, 0.0)
    assert hot.code == "too_hot" and hot.reason.startswith("too hot")

    even = BalancingStrategy(NMC).decide(cells(3.95, 3.96), [25.0], 0.0, None, 0.0)
    assert even.code == "balanced" and even.reason.startswith("balanced")

    off = BalancingStrategy(with_mode(NMC, "off")).decide(cells(3.9, 4.1), [25.0], 0.0, None, 0)
    assert (off.code, off.reason) == ("mode_off", "mode off")

    stale = BalancingStrategy(NMC).decide(cells(3.95, 3.985), [25.0], 0.0, None, 0.0, stale=True)
    assert (stale.code, stale.reason) == ("stale_data", "stale data")
    for decision in (low, hot, even, off, stale):
        assert not decision.running


def test_unknown_values_are_stale() -> None:
    s = BalancingStrategy(NMC)
    v = cells(3.95, 3.985)
    v[3] = float("nan")
    assert s.decide(v, [25.0], 0.0, None, 0.0).code == "stale_data"
    ok = cells(3.95, 3.985)
    assert s.decide(ok, [], 0.0, None, 0.0).code == "stale_data"
    assert s.decide(ok, None, 0.0, None, 0.0).code == "stale_data"
    assert s.decide(ok, [float("nan")], 0.0, None, 0.0).code == "stale_data"
    assert s.decide(ok, [25.0], float("nan"), None, 0.0).code == "stale_data"
    # One failed sensor among good ones does not stop balancing.
    assert s.decide(ok, [float("nan"), 25.0], 0.0, None, 0.0).code == "balancing"


def test_high_cells_below_the_minimum_voltage_are_not_bled() -> None:
    lfp = PASSIVE["LFP"]  # min_cell_voltage_v = balance_start_v = 3.30 V
    v = cells(3.20, 3.28, 3.35)
    d = BalancingStrategy(lfp).decide(v, [25.0], 1.0, None, 0.0)
    assert d.discharge_cells() == (2,)  # 3.28 V is above min + threshold but below 3.30 V
    only_low = BalancingStrategy(lfp).decide(cells(3.20, 3.25, 3.30), [25.0], 1.0, None, 0.0)
    assert only_low.discharge_cells() == (2,)
    none = BalancingStrategy(lfp).decide(cells(3.20, 3.26, 3.30, 3.299), [25.0], 1.0, None, 0.0)
    assert none.discharge_cells() == (2,)


def test_cell_hysteresis() -> None:
    s = BalancingStrategy(NMC)
    assert s.decide(cells(3.95, 3.975), [25.0], 1.0, None, 0.0).discharge_cells() == (1,)
    # 15 mV: below the threshold but not yet within threshold / 2, keeps bleeding.
    d = s.decide(cells(3.95, 3.965), [25.0], 1.0, None, 1.0)
    assert d.discharge_cells() == (1,) and "finishing to 10 mV" in d.reason
    assert s.decide(cells(3.95, 3.959), [25.0], 1.0, None, 2.0).code == "balanced"
    # Stopped: 15 mV is not enough to start again.
    assert not s.decide(cells(3.95, 3.965), [25.0], 1.0, None, 3.0).running


def test_temperature_hysteresis() -> None:
    s = BalancingStrategy(NMC)  # max 50 °C, resumes below 45 °C
    v = cells(3.95, 3.985)
    assert s.decide(v, [50.5], 0.0, None, 0.0).code == "too_hot"
    warm = s.decide(v, [48.0], 0.0, None, 1.0)
    assert warm.code == "too_hot" and "resumes below 45.0" in warm.reason
    assert s.decide(v, [44.0], 0.0, None, 2.0).code == "balancing"
    assert s.decide(v, [48.0], 0.0, None, 3.0).code == "balancing"


def test_settling_after_discharge_and_rest_band() -> None:
    s = BalancingStrategy(NMC, BalancingSettings(settle_s=30.0, rest_current_a=0.5))
    v = cells(3.95, 3.985)
    assert s.decide(v, [25.0], 0.3, None, 0.0).code == "balancing"  # rest
    assert s.decide(v, [25.0], -0.4, None, 1.0).code == "balancing"  # within the rest band
    assert s.decide(v, [25.0], -20.0, None, 2.0).code == "discharging"
    settling = s.decide(v, [25.0], 0.0, None, 12.0)
    assert settling.code == "settling" and "10 s of 30 s" in settling.reason
    assert s.decide(v, [25.0], 10.0, None, 33.0).code == "balancing"  # charging


def test_start_voltage_hysteresis() -> None:
    # A minimum below the start voltage, so that the start gate alone decides.
    low_min = NMC.balancing.model_copy(update={"min_cell_voltage_v": 3.7})
    s = BalancingStrategy(NMC.model_copy(update={"balancing": low_min}))
    assert s.decide(cells(3.77, 3.805), [25.0], 1.0, None, 0.0).running
    # Highest cell dips 5 mV under 3.80 V: within threshold / 2, balancing goes on.
    assert s.decide(cells(3.77, 3.795), [25.0], 1.0, None, 1.0).running
    assert s.decide(cells(3.77, 3.785), [25.0], 1.0, None, 2.0).code == "below_start_voltage"


# --- inputs and outputs ---------------------------------------------------------------------


def test_nested_flat_and_array_inputs_agree() -> None:
    v = cells(3.95, 3.99, 3.95, 3.95, 3.95, 3.975)
    nested = [v[m * CELLS : (m + 1) * CELLS] for m in range(MODULES)]
    results = [
        BalancingStrategy(NMC).decide(form, temps, 0.0, None, 0.0)
        for form, temps in (
            (v, [25.0, 26.0]),
            (nested, [[25.0], [26.0], []]),
            (np.array(v), np.array([25.0, 26.0])),
            (np.array(nested), np.array([[25.0, 26.0]])),
        )
    ]
    assert all(r.discharge == results[0].discharge for r in results)
    assert results[0].discharge[1] == (False, True, False, False)
    assert results[0].discharge_cells() == (1, 5)
    with pytest.raises(ValueError):
        BalancingStrategy(NMC).decide(v[:-1], [25.0], 0.0, None, 0.0)
    with pytest.raises(ValueError):
        BalancingStrategy(NMC).decide([v[:5], v[5:8], v[8:]], [25.0], 0.0, None, 0.0)


def test_uneven_modules() -> None:
    topo = Topology(modules=2, cells_per_module=4, module_cell_counts=(4, 3))
    config = NMC.model_copy(update={"topology": topo})
    d = BalancingStrategy(config).decide(
        [[3.95, 3.95, 3.95, 3.95], [3.95, 3.95, 3.99]], [25.0], 0.0, None, 0.0
    )
    assert d.discharge == ((False,) * 4, (False, False, True))
    cmds = d.commands(now_wall_s=1000.0)
    assert [len(c.discharge) for c in cmds] == [4, 3]


def test_commands_per_module() -> None:
    d = BalancingStrategy(NMC).decide(cells(3.95, 3.99), [25.0], 0.0, None, 0.0)
    cmds = balance_commands(d, now_wall_s=1_700_000_000.0, ttl_s=2.5)
    assert [c.module for c in cmds] == list(range(MODULES))
    assert all(c.expires_at == 1_700_000_002.5 for c in cmds)
    assert cmds[0].discharge == [False, True, False, False]
    assert all(not any(c.discharge) for c in cmds[1:])  # all-off commands stop at once
    assert all(c.charge == [] for c in cmds)  # passive slaves refuse charge requests
    assert all(c.reason == d.reason for c in cmds)
    assert d.commands(now_wall_s=10.0)[0].expires_at == 10.0 + COMMAND_TTL_S
    with pytest.raises(ValueError):
        balance_commands(d, now_wall_s=10.0, ttl_s=0.0)

    soc = [50.0] * N
    soc[2], soc[9] = 60.0, 40.0
    active = BalancingStrategy(ACTIVE["NMC"]).decide([3.9] * N, [25.0], 0.0, soc, 0.0)
    acmds = active.commands(now_wall_s=5.0)
    assert acmds[0].discharge == [False, False, True, False]
    assert acmds[2].charge == [False, True, False, False]
    assert all(len(c.charge) == CELLS for c in acmds)


def test_long_reason_is_cut_to_the_message_limit() -> None:
    d = BalancingDecision(
        code="balanced",
        reason="x" * 500,
        mode="passive",
        discharge=((False,),),
        charge=((False,),),
    )
    assert len(d.commands(now_wall_s=0.0)[0].reason) == 200


@dataclass(frozen=True)
class _Snapshot:
    cell_v: NDArray[np.float64]
    temp_c: NDArray[np.float64]


def test_decide_pack() -> None:
    snap = _Snapshot(np.array(cells(3.95, 3.99)), np.array([25.0, np.nan]))
    d = BalancingStrategy(NMC).decide_pack(snap, 0.0, None, 0.0)
    assert d.discharge_cells() == (1,)
    stale_module = _Snapshot(np.array([np.nan] * CELLS + cells(3.95)[CELLS:]), snap.temp_c)
    assert BalancingStrategy(NMC).decide_pack(stale_module, 0.0, None, 0.0).code == "stale_data"


@pytest.mark.parametrize("chem", CHEMISTRIES)
def test_every_preset_balances_near_the_top(chem: str) -> None:
    config = PASSIVE[chem]
    p = config.cell_chemistry
    top = p.charge_v - 0.01
    v = [top - 0.05] * N
    v[4] = top
    d = BalancingStrategy(config).decide(v, [25.0], 1.0, None, 0.0)
    assert d.code == "balancing" and d.discharge_cells() == (4,)
    below = [p.balance_start_v - 0.05] * N
    below[4] = p.balance_start_v - 0.01
    decision = BalancingStrategy(config).decide(below, [25.0], 1.0, None, 0.0)
    assert decision.code == "below_start_voltage"
