"""`bench/fault_matrix.py --quick` end to end: a real stack on the plant in a network namespace
of its own; three rows (a cell over-voltage while charging, a charge over-current, a board that
falls silent) each raise their code, open the coils and end in the safe state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.broker import find_mosquitto
from shared.fault_matrix import MatrixResults

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]
EXIT_SKIP = 77


@pytest.mark.timeout(600)
def test_quick_matrix_rows_reach_their_safe_state(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    out = tmp_path / "matrix.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fault_matrix.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode == EXIT_SKIP:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = MatrixResults.model_validate_json(out.read_text())
    assert {r.id for r in results.rows} == {
        "cell_ov/charging",
        "chg_oc/charging",
        "board_dropout/closed_idle",
    }
    for row in results.rows:
        assert row.status == "ok", row
        assert set(row.expected) & set(row.detected), row
        assert row.safe_state.coils_off and row.safe_state.contactors == "fault", row
        assert row.safe_state.charge_limit_a == row.safe_state.discharge_limit_a == 0.0
        # the coils opened after the onset, and no sooner than the configured delay allows
        # (a silent board's delay runs from its last sample, up to a period before the injection)
        assert row.reaction.n == 1 and row.reaction.p50_s is not None
        earliest_s = (row.configured_delay_s or 0.0) - row.early_by_s - 0.05
        assert row.reaction.p50_s >= earliest_s, row
        assert row.reaction.p50_s < 5.0, row
