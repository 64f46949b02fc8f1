from __future__ import annotations

from pathlib import Path

import pytest

from services.plant.load_profiles import (
    ChargeDischargeCycle,
    DriveCycle,
    Pulses,
    parse_profile,
)

KW = {"soc_pct": 50.0, "cell_v_min": 3.6, "cell_v_max": 3.7}


def test_pulses_and_constant() -> None:
    p = Pulses(50, -80, period_s=10, duty=0.3)
    assert [p.current_a(t, **KW) for t in (0, 2.9, 3.1, 9.9, 10.0)] == [50, 50, -80, -80, 50]
    assert parse_profile("constant:-12.5").current_a(1e6, **KW) == -12.5


def test_drive_cycle_from_csv_interpolates_and_loops(tmp_path: Path) -> None:
    f = tmp_path / "cycle.csv"
    f.write_text("# a drive cycle\ntime_s,current_a\n0,0\n10,-100\n20,50\n")
    cycle = DriveCycle.from_csv(f)
    assert cycle.current_a(5, **KW) == -50
    assert cycle.current_a(15, **KW) == pytest.approx(-25)
    assert cycle.current_a(25, **KW) == -50  # looped
    assert isinstance(parse_profile(f"csv:{f}"), DriveCycle)


def test_charge_discharge_cycle_turns_at_the_soc_bounds() -> None:
    c = ChargeDischargeCycle(40, 60, soc_low_pct=20, soc_high_pct=80)
    assert c.current_a(0, soc_pct=50, cell_v_min=3.6, cell_v_max=3.7) == 40
    assert c.current_a(0, soc_pct=81, cell_v_min=3.6, cell_v_max=3.7) == -60
    assert c.current_a(0, soc_pct=50, cell_v_min=3.6, cell_v_max=3.7) == -60
    assert c.current_a(0, soc_pct=19, cell_v_min=3.6, cell_v_max=3.7) == 40


@pytest.mark.parametrize("spec", ["wave:1", "pulses:1", "constant:x", "cycle"])
def test_bad_profiles_are_refused_with_the_spec(spec: str) -> None:
    with pytest.raises(ValueError, match="load profile"):
        parse_profile(spec)
