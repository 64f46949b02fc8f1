"""The OCV capture saved and restored (`OcvCapture.saved`, `saved_rows`, `restored`): a capture
restored again and again, on clocks of its own, derives what one never restarted derives; a
restart within the gap rule resumes, one beyond it (or after an unknown downtime) aborts with
"gap"; a finished or aborted capture and one awaiting its start anchor outlive any downtime."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from services.master_core.estimation.ocv_capture import CaptureParams, OcvCapture
from tests.master_core.test_ocv_capture import (
    Pack,
    charge_cv,
    full_first_cycle,
    params,
    run_segment,
)


def json_round_trip(capture: OcvCapture, now_s: float) -> tuple[dict[str, Any], list[Any]]:
    """What the store keeps: JSON only, no NaN (unknown is None)."""
    saved = capture.saved(now_s)
    rows = [capture.saved_rows(k, 0, ph["rows"]) for k, ph in enumerate(saved["phases"])]
    return json.loads(json.dumps(saved, allow_nan=False)), json.loads(
        json.dumps(rows, allow_nan=False)
    )


def restart(
    capture: OcvCapture, saved_at_s: float, now_s: float, down_s: float | None, p: CaptureParams
) -> OcvCapture:
    saved, rows = json_round_trip(capture, saved_at_s)
    return OcvCapture.restored(p, saved, rows, now_s=now_s, down_s=down_s)


def test_a_capture_restarted_many_times_derives_what_an_uninterrupted_one_does() -> None:
    p = params()
    pack = Pack(r_ohm=np.array([0.002, 0.0015, 0.0025]), offset_v=np.array([0.0, 0.01, -0.01]))
    capture = OcvCapture(3, p)
    capture.start(0.0)
    # the twin lives on a clock 1000 s ahead of the pack's, restarted every 3000 s with a
    # clock 5000 s further on and a downtime of 0 (the save is the last update before it)
    twin = [OcvCapture(3, p), 1000.0]
    twin[0].start(0.0)  # type: ignore[union-attr]
    restarts = [0]

    def fed(c: OcvCapture, pk: Pack, i_a: float, v: np.ndarray) -> None:
        temp = np.full(len(v), 25.0)
        c.update(pk.t_s, i_a, v, temp)
        t: OcvCapture = twin[0]  # type: ignore[assignment]
        off: float = twin[1]  # type: ignore[assignment]
        t.update(pk.t_s + off, i_a, v, temp)
        if t.running and int(pk.t_s) % 3000 == 0:
            new_off = off + 5000.0
            twin[:] = [restart(t, pk.t_s + off, pk.t_s + new_off, 0.0, p), new_off]
            restarts[0] += 1

    full_first_cycle(capture, pack, dt_s=5.0, fed=fed)
    restored: OcvCapture = twin[0]  # type: ignore[assignment]
    assert capture.state == "done" and capture.result is not None
    assert restored.state == "done" and restored.result is not None, restored.reason
    assert restarts[0] > 20  # in every phase (a C/20 cycle: ~40 h)
    a, b = capture.result, restored.result
    assert b.charge_v == pytest.approx(a.charge_v, abs=1e-9)
    assert b.discharge_v == pytest.approx(a.discharge_v, abs=1e-9)
    np.testing.assert_allclose(b.cell_charge_v, a.cell_charge_v, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.cell_discharge_v, a.cell_discharge_v, rtol=0, atol=1e-9)
    assert b.capacity_ah == pytest.approx(a.capacity_ah, rel=1e-9)
    assert b.resistance_ohm == pytest.approx(a.resistance_ohm, rel=1e-9)
    assert b.csv() == a.csv()


def running_first(max_gap_s: float = 30.0) -> tuple[OcvCapture, Pack, CaptureParams]:
    p = params(max_gap_s=max_gap_s)
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, p)
    capture.start(0.0)
    charge_cv(capture, pack)
    run_segment(capture, pack, -4.8, 5.0, for_s=600.0)
    assert capture.state == "first"
    return capture, pack, p


@pytest.mark.parametrize(
    ("down_s", "state", "abort_reason"),
    [(10.0, "first", None), (24.0, "first", None), (26.0, "aborted", "gap"),
     (3600.0, "aborted", "gap"), (None, "aborted", "gap"), (-5.0, "aborted", "gap")],
)  # fmt: skip
def test_a_running_phase_resumes_only_within_the_gap_rule(
    down_s: float | None, state: str, abort_reason: str | None
) -> None:
    capture, pack, p = running_first()
    # saved 5 s after the last update (a save between two updates), then down for down_s:
    # no update for 5 + down_s (max 30 s)
    before = capture.status(pack.t_s).samples
    now_s = 77.0  # the new clock: any value
    after = restart(capture, pack.t_s + 5.0, now_s, down_s, p)
    assert after.state == state, after.reason
    assert after.abort_reason == abort_reason
    if state == "first":
        assert after.status(now_s).samples == before
        # and it goes on: the next update counts, the discharge is still running
        pack.step(-4.8, 5.0 + (down_s or 0.0))
        after.update(now_s, -4.8, pack.terminal_v(-4.8), np.full(2, 25.0))
        assert after.state == "first"
        assert after.status(now_s).moved_ah == pytest.approx(
            capture.status(pack.t_s).moved_ah + 4.8 * (5.0 + (down_s or 0.0)) / 3600.0, rel=1e-6
        )
    else:
        assert "restarted" in after.reason
        assert after.status(now_s).samples == 0  # the recording is dropped, as at any abort


def test_awaiting_the_start_anchor_outlives_any_downtime_but_not_a_held_anchor() -> None:
    p = params()
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, p)
    capture.start(0.0)
    run_segment(capture, pack, 10.0, 5.0, for_s=60.0)
    assert capture.state == "awaiting_start"
    for down_s in (0.0, 86400.0, None):
        after = restart(capture, pack.t_s, 5.0, down_s, p)
        assert after.state == "awaiting_start" and after.abort_reason is None
        assert after.reason == capture.reason


def test_a_finished_or_aborted_capture_outlives_any_downtime() -> None:
    p = params()
    pack = Pack(r_ohm=np.full(2, 0.002), offset_v=np.zeros(2))
    capture = OcvCapture(2, p)
    capture.start(0.0)
    full_first_cycle(capture, pack)
    assert capture.state == "done" and capture.result is not None
    after = restart(capture, pack.t_s, 3.0, None, p)
    assert after.state == "done"
    assert after.result == capture.result  # exact: JSON floats round-trip
    assert after.status(3.0).progress_pct == 100.0

    capture, pack, p = running_first()
    capture.abort("too_fast", "4 A for more than 60 s")
    after = restart(capture, pack.t_s, 0.0, 99999.0, p)
    assert (after.state, after.abort_reason, after.reason) == (
        "aborted",
        "too_fast",
        capture.reason,
    )


def test_unknown_readings_stay_unknown() -> None:
    capture, pack, p = running_first()
    v = pack.terminal_v(-4.8)
    v[1] = np.nan
    pack.step(-4.8, 5.0)
    capture.update(pack.t_s, None, v, np.array([25.0, np.nan]))
    saved, _ = json_round_trip(capture, pack.t_s)
    assert saved["last"]["v"][1] is None and saved["last"]["temp"][1] is None
    assert saved["unknown_since_s"][0] is None and saved["unknown_since_s"][1] == pack.t_s
    assert saved["no_current_since_s"] == pack.t_s
    after = restart(capture, pack.t_s, pack.t_s, 0.0, p)
    # the cell and the current stay unknown across the restart: 30 s after they went, it aborts
    pack.step(-4.8, 20.0)
    after.update(pack.t_s, None, v, np.full(2, 25.0))
    assert after.state == "first"
    pack.step(-4.8, 15.0)
    after.update(pack.t_s, -4.8, v, np.full(2, 25.0))
    assert after.abort_reason == "cell_unknown"


@pytest.mark.parametrize(
    "spoil",
    [
        lambda s, r: s.update(state="bogus"),
        lambda s, r: s.update(abort_reason="tired"),
        lambda s, r: r[0].update(t_s=r[0]["t_s"][:-1]),
        lambda s, r: s["phases"][0].update(end=10**6),
        lambda s, r: s.update(n_cells=3),
        lambda s, r: r.pop(),
    ],
)
def test_a_saved_state_that_does_not_hold_together_is_refused(spoil: Any) -> None:
    capture, pack, p = running_first()
    saved, rows = json_round_trip(capture, pack.t_s)
    spoil(saved, rows)
    with pytest.raises((ValueError, KeyError, TypeError)):
        OcvCapture.restored(p, saved, rows, now_s=0.0, down_s=0.0)
