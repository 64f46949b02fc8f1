"""`bench/chaos.py --quick` end to end: a real stack in a network namespace of its own, broken
by every scenario with reduced counts; each must-be-zero figure is zero and the others hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.broker import find_mosquitto
from shared.chaos import SOC_ERROR_LIMIT_PCT, ChaosResults

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]
EXIT_SKIP = 77
BOUND_S = 900


@pytest.mark.timeout(BOUND_S + 60)
def test_quick_chaos_breaks_nothing(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=BOUND_S,
    )  # fmt: skip
    if done.returncode == EXIT_SKIP:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results = ChaosResults.model_validate_json(out.read_text())
    by_name = {r.name: r for r in results.scenarios}
    assert set(by_name) == {
        "broker_kill", "slave_kill", "master_kill", "net_cuts", "command_replay", "mqtt_fuzz",
        "modbus_fuzz", "can_junk",
    }  # fmt: skip
    for r in results.scenarios:
        assert r.crashes == 0, r
        assert r.done >= r.planned, r
        assert r.failures() == [], r
    assert by_name["broker_kill"].events_lost == 0
    assert by_name["command_replay"].duplicate_commands_executed == 0
    assert by_name["modbus_fuzz"].modbus_out_of_spec == 0
    soc = by_name["master_kill"].soc_error_max_pct
    assert soc is not None and soc <= SOC_ERROR_LIMIT_PCT
    fuzz = by_name["mqtt_fuzz"]
    assert fuzz.max_pack_state_gap_s is not None and fuzz.comm_loss_timeout_s is not None
    assert fuzz.max_pack_state_gap_s < fuzz.comm_loss_timeout_s
    # the fuzz reached the guards it is meant to hit
    assert fuzz.counters.get("payload_oversize", 0) > 0, fuzz.counters
    assert fuzz.counters.get("telemetry_replayed", 0) > 0, fuzz.counters
    assert done.returncode == 0, done.stdout[-3000:]
