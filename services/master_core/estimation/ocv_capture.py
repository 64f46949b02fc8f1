"""OCV branches from a slow (C/20) cycle recorded by the stack at commissioning.

The capture records, per cell, the charge counted since its start (Ah, the string's current:
the cells are in series), the cell voltage, the current and the cell temperature during one
slow cycle, and derives from it the discharge branch and the charge branch of the OCV on the
configuration's SOC grid: per cell, and for the pack as the median over the cells.

The cycle (`CaptureParams.order`):
- "full_first" (the default): a full charge at any rate to the full anchor (the CV end: the
  highest cell at charge_v - full_margin_v while the current is at or below the tail current,
  held for anchor_hold_s), then a discharge at <= C/20 to the empty cut-off (the lowest cell
  at discharge_cutoff_v + empty_margin_v, held, at no more than the slow current), then a
  charge at <= C/20 back to full, which ends at the same CV end (the charger holds charge_v
  until the current falls to the tail): both 100 % are one state.
- "empty_first": a discharge to the empty cut-off, whose end must be slow (the anchor needs
  the slow current: a fast discharge reaches the cut-off early, by its IR drop, and its 0 %
  would not be the slow discharge's), then a charge at <= C/20 to full (CV end), then a
  discharge at <= C/20 to empty.
Rests between the phases are allowed (any length); the slow current is the inverter's to set.

It aborts, with a named reason (`ABORT_REASONS`), when in a slow phase the current exceeds
`max_c_rate` x (1 + c_rate_tolerance) of the rated capacity for longer than over_rate_hold_s
("too_fast"), or flows the other way than the phase for that long ("wrong_direction"); when
no update came for longer than max_gap_s or the current was unknown that long ("gap"); when a
cell's voltage was unknown that long ("cell_unknown"); when an update has another number of
cells ("cells_changed"); or on request ("aborted").

Derivation (`derive`):
- SOC: each slow phase runs from the Ah counted at the anchor before it (the start anchor, or
  the first phase's end anchor) to the Ah at its end anchor; its SOC is that span scaled to
  0..100 % (a discharge from 100 down, a charge from 0 up). What flows after an anchor (a
  charger holding CV, an inverter discharging on to its cut-off) is on the next phase's
  scale. The capacity measured is the slow discharge's span (`capacity_ah`; the charge's is
  reported too: their ratio is the coulombic efficiency). The ends are the string's: the
  first cell at cut-off is 0 %, the first at full 100 %, so every cell's branch is on the
  string's SOC scale; the spread over the cells says how far they differ.
- IR correction: OCV = V - I x R per cell (I positive charging). R per cell is the median of
  the steps of the current at the start and the end of each slow phase: dV / dI between the
  last update before the step and the first after it (both recorded when the current changes
  by more than step_min_c_rate x C between two updates), taken only when the two updates lie
  within step_max_dt_s (a longer interval would count the slower relaxation too) and dV / dI
  is positive. Without any step a cell's R is None and its voltages are not corrected (the
  result says so). At C/20 the drop is small (e.g. 1 mOhm x 5 A = 5 mV on a 100 Ah cell) but
  not zero; what the correction cannot remove is the slower diffusion overpotential, so the
  branches are the cycle's "pseudo-OCV", as in a C/20 cycle without rests.
- Grid: only updates with the phase's current (|I| above rest_c_rate x C) are taken; the
  corrected voltage is interpolated linearly at the grid points. A branch is made
  non-decreasing (a running maximum, from noise on a plateau), and where the charge branch lies
  below the discharge branch both take their mean; how far each moved is reported
  (`monotone_fix_v`, `crossing_fix_v`), never hidden.
- The charge branch starts from the discharge branch: a cell changes branch within a few % of
  SOC after the direction changes (hysteresis.py, gamma), so its first points lie between the
  branches; likewise the discharge branch after a charge (empty_first: the same at 100 %).

Saving (`saved`, `saved_rows`, `OcvCapture.restored`): the state as JSON types (unknown:
None), so that a capture outlives a restart of the master. The kept updates only grow (a phase
appends; nothing kept is changed), so they are saved in row ranges apart from the small rest.
The times are the caller's clock; a restore moves them onto the new clock so that the saved
instant lies `down_s` before now. A running slow phase resumes only when the time without an
update (before the save and while down) is within max_gap_s, as any gap; else it aborts with
"gap". An unknown downtime (None) is a gap too long. Awaiting the start anchor survives any
downtime (no anchor across it, as a gap).

Pure: no clock, no I/O; the time is passed in.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

CaptureOrder = Literal["full_first", "empty_first"]
CaptureState = Literal["idle", "awaiting_start", "first", "second", "done", "aborted"]
RUNNING_STATES: tuple[CaptureState, ...] = ("awaiting_start", "first", "second")
AbortReason = Literal[
    "too_fast", "wrong_direction", "gap", "cell_unknown", "cells_changed", "aborted"
]
ABORT_REASONS: tuple[AbortReason, ...] = (
    "too_fast", "wrong_direction", "gap", "cell_unknown", "cells_changed", "aborted"
)  # fmt: skip
Direction = Literal["charge", "discharge"]

_PHASES: dict[CaptureOrder, tuple[Literal["full", "empty"], Direction, Direction]] = {
    "full_first": ("full", "discharge", "charge"),
    "empty_first": ("empty", "charge", "discharge"),
}
"""Per order: the start anchor, the first slow phase, the second (each ends at the anchor its
direction leads to: a discharge at empty, a charge at full)."""


@dataclass(frozen=True)
class CaptureParams:
    capacity_ah: float
    """The rated cell capacity: the C-rates are shares of it."""
    charge_v: float
    """The CV charge voltage per cell (`ChemistryPreset.charge_v`)."""
    discharge_cutoff_v: float
    """The empty cut-off per cell (`ChemistryPreset.discharge_cutoff_v`)."""
    soc_grid_pct: tuple[float, ...] = tuple(float(s) for s in range(0, 101, 5))
    """The SOC points of the branches (the configuration's `ocv_table_soc_pct`)."""
    order: CaptureOrder = "full_first"
    max_c_rate: float = 0.05
    """C/20: the highest slow current, as a share of the capacity per hour."""
    c_rate_tolerance: float = 0.2
    """How far above max_c_rate the current may be (the inverter's control, the sensor)."""
    over_rate_hold_s: float = 60.0
    """A current too fast (or the wrong way) for longer than this aborts."""
    max_gap_s: float = 30.0
    """Longest time without an update, a current or a cell's voltage."""
    full_margin_v: float = 0.05
    """Full anchor: the highest cell at charge_v - this (as `CoulombParams.full_margin_v`)."""
    full_tail_c_rate: float = 0.01
    """... while the current is at or below this tail: the CV end. Below the slow current (the
    coulomb counter's C/20 would end the slow charge as soon as it reaches the voltage), so that
    the slow charge ends where the first full charge did: both 100 % are the same state."""
    empty_margin_v: float = 0.05
    """Empty anchor: the lowest cell at discharge_cutoff_v + this, discharging."""
    anchor_hold_s: float = 10.0
    rest_c_rate: float = 0.005
    """Below this |current| (x capacity) the pack rests: no phase current, not on the grid."""
    record_period_s: float = 30.0
    """An update is kept at most this often within a phase (a C/20 cycle lasts ~40 h: 4800
    updates per phase), and always around a step of the current (the IR estimate)."""
    step_min_c_rate: float = 0.02
    """A change of the current by more than this (x capacity) between two updates is a step."""
    step_max_dt_s: float = 5.0
    """The two updates of a step must lie within this (telemetry at 1 Hz: a few samples)."""
    end_step_wait_s: float = 300.0
    """After a phase's end anchor, how long the current may take to stop (the end step, for
    the IR estimate) before the next phase is awaited without it."""

    def __post_init__(self) -> None:
        if not self.capacity_ah > 0.0:
            raise ValueError("capacity_ah must be positive")
        if not self.discharge_cutoff_v < self.charge_v:
            raise ValueError("the cut-off must lie below the charge voltage")
        grid = self.soc_grid_pct
        if len(grid) < 2 or grid[0] != 0.0 or grid[-1] != 100.0:
            raise ValueError("the SOC grid must run from 0 % to 100 %")
        if any(b <= a for a, b in itertools.pairwise(grid)):
            raise ValueError("the SOC grid must rise strictly")
        if not 0.0 < self.max_c_rate <= 0.2:
            raise ValueError("max_c_rate must be in (0, 0.2]: a slow cycle")

    @property
    def max_a(self) -> float:
        return self.max_c_rate * (1.0 + self.c_rate_tolerance) * self.capacity_ah

    @property
    def rest_a(self) -> float:
        return self.rest_c_rate * self.capacity_ah


@dataclass(frozen=True)
class CaptureStatus:
    """Progress, for the command's reply (`as_dict`)."""

    state: CaptureState
    phase: Direction | None
    """The slow phase running (or awaited next); None outside them."""
    reason: str
    """Why the state is what it is, in words (an abort's cause)."""
    abort_reason: AbortReason | None
    elapsed_s: float | None
    """Since the start anchor."""
    moved_ah: float | None
    """Charge moved in the running slow phase."""
    progress_pct: float | None
    """Of the whole capture: each slow phase is half, estimated from the rated capacity."""
    samples: int

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "phase": self.phase,
            "reason": self.reason,
            "abort_reason": self.abort_reason,
            "elapsed_s": _round(self.elapsed_s, 1),
            "moved_ah": _round(self.moved_ah, 3),
            "progress_pct": _round(self.progress_pct, 1),
            "samples": self.samples,
        }


@dataclass(frozen=True)
class CaptureResult:
    """The branches derived from a complete capture (see the module docstring)."""

    soc_pct: tuple[float, ...]
    charge_v: tuple[float, ...]
    """The pack's charge branch: the median over the cells per point."""
    discharge_v: tuple[float, ...]
    cell_charge_v: tuple[tuple[float, ...], ...]
    """Per cell (series order), per point."""
    cell_discharge_v: tuple[tuple[float, ...], ...]
    capacity_ah: float
    """Measured: the charge the slow discharge took from full to empty."""
    charge_capacity_ah: float
    """The charge the slow charge put in from empty to full."""
    resistance_ohm: tuple[float | None, ...]
    """Per cell, from the current steps; None: no usable step (not corrected)."""
    temperature_c: float | None
    """Mean cell temperature over the slow phases; None when unknown."""
    spread_charge_v: tuple[float, ...]
    """Max - min over the cells per point."""
    spread_discharge_v: tuple[float, ...]
    monotone_fix_v: float
    """The most a point of a pack branch was raised to keep it non-decreasing."""
    crossing_fix_v: float
    """The most a point of a pack branch moved where the charge lay below the discharge."""
    end_fix_v: float = 0.0
    """The most a branch's 0 % or 100 % point moved from the cells' median to the limiting
    cell's voltage there (the string's ends are its limits)."""
    phase_times_s: tuple[tuple[Direction, float, float], ...] = ()
    """Each slow phase: its direction, the time of the anchor it starts from and of its end
    anchor (its 100 % and 0 %, or 0 % and 100 %)."""

    @property
    def max_spread_v(self) -> float:
        return max(max(self.spread_charge_v), max(self.spread_discharge_v))

    def csv(self, *, with_temperature: bool = True) -> str:
        """The wizard's CSV (`services/config_ui/wizard/ocv_csv.py`): a comment, the header
        soc_pct,ocv_charge_v,ocv_discharge_v[,temperature_c] and one row per point. The
        temperature column is written when known and asked for."""
        temp = self.temperature_c if with_temperature else None
        lines = [
            f"# OCV branches from a C/20 cycle: capacity {self.capacity_ah:.3f} Ah "
            f"(charge {self.charge_capacity_ah:.3f} Ah), cell spread up to "
            f"{1000.0 * self.max_spread_v:.1f} mV",
            "soc_pct,ocv_charge_v,ocv_discharge_v" + (",temperature_c" if temp is not None else ""),
        ]
        for s, up, down in zip(self.soc_pct, self.charge_v, self.discharge_v, strict=True):
            row = f"{s:g},{up:.4f},{down:.4f}"
            lines.append(row + (f",{temp:.1f}" if temp is not None else ""))
        return "\n".join(lines) + "\n"

    def summary(self) -> dict[str, object]:
        """The result's figures without the per-cell tables (for the command's reply)."""
        known = [r for r in self.resistance_ohm if r is not None]
        return {
            "capacity_ah": round(self.capacity_ah, 4),
            "charge_capacity_ah": round(self.charge_capacity_ah, 4),
            "temperature_c": _round(self.temperature_c, 1),
            "max_spread_mv": round(1000.0 * self.max_spread_v, 2),
            "resistance_mohm_median": (
                round(1000.0 * float(np.median(known)), 3) if known else None
            ),
            "cells_without_resistance": len(self.resistance_ohm) - len(known),
            "monotone_fix_mv": round(1000.0 * self.monotone_fix_v, 2),
            "crossing_fix_mv": round(1000.0 * self.crossing_fix_v, 2),
            "end_fix_mv": round(1000.0 * self.end_fix_v, 2),
        }


@dataclass
class _Phase:
    """The updates kept during one slow phase (and the rest or tail before it)."""

    direction: Direction
    t_s: list[float] = field(default_factory=list)
    ah: list[float] = field(default_factory=list)
    current_a: list[float] = field(default_factory=list)
    cell_v: list[FloatArray] = field(default_factory=list)
    temp_c: list[FloatArray] = field(default_factory=list)
    start: int | None = None
    """Index of the first kept update with the phase's current."""
    end: int | None = None
    """Index of the update at the end anchor."""
    steps: list[tuple[int, int]] = field(default_factory=list)
    """Pairs of kept updates around a step of the current."""

    def keep(self, t_s: float, ah: float, i_a: float, v: FloatArray, temp: FloatArray) -> int:
        self.t_s.append(t_s)
        self.ah.append(ah)
        self.current_a.append(i_a)
        self.cell_v.append(v.copy())
        self.temp_c.append(temp.astype(np.float32))
        return len(self.t_s) - 1


@dataclass
class _Update:
    t_s: float
    i_a: float
    v: FloatArray
    temp: FloatArray
    ah: float
    kept: int | None = None
    """Its index in the running phase when it was kept."""


class OcvCapture:
    """The capture's state machine; `update` each cycle with the pack's readings."""

    def __init__(self, n_cells: int, params: CaptureParams) -> None:
        if n_cells < 1:
            raise ValueError("n_cells must be at least 1")
        self.n_cells = n_cells
        self.params = params
        self.state: CaptureState = "idle"
        self.reason = "no capture started"
        self.abort_reason: AbortReason | None = None
        self.result: CaptureResult | None = None
        self._reset()

    def _reset(self) -> None:
        self._phases: list[_Phase] = []
        self._ah = 0.0
        self._last: _Update | None = None
        self._anchor_since_s: float | None = None
        self._started_s: float | None = None
        self._fast_since_s: float | None = None
        self._wrong_since_s: float | None = None
        self._no_current_since_s: float | None = None
        self._unknown_since_s = np.full(self.n_cells, np.nan)
        self._last_kept_s = -math.inf

    # --- commands ---------------------------------------------------------------------------
    def start(self, now_s: float) -> None:
        """Start again (a capture running or done is dropped): wait for the start anchor."""
        del now_s  # the clock starts at the anchor
        self._reset()
        self.result = None
        self.abort_reason = None
        self.state = "awaiting_start"
        anchor = _PHASES[self.params.order][0]
        self.reason = f"waiting for the {anchor} anchor" + (
            " (charge fully, to the CV end)" if anchor == "full" else " (discharge to cut-off)"
        )

    def abort(self, reason: AbortReason = "aborted", text: str = "aborted on request") -> None:
        if self.state in RUNNING_STATES:
            self.state = "aborted"
            self.abort_reason = reason
            self.reason = text
            self._phases = []  # the recording is of no use any more: free it

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    # --- saving -----------------------------------------------------------------------------
    def saved(self, now_s: float) -> dict[str, Any]:
        """Everything but the kept updates (`saved_rows`), as JSON types; `phases` gives each
        phase's count of kept updates."""
        last = self._last
        return {
            "n_cells": self.n_cells,
            "state": self.state,
            "reason": self.reason,
            "abort_reason": self.abort_reason,
            "result": None if self.result is None else dataclasses.asdict(self.result),
            "saved_s": now_s,
            "ah": self._ah,
            "last": None
            if last is None
            else {
                "t_s": last.t_s,
                "i_a": last.i_a,
                "v": _known(last.v),
                "temp": _known(last.temp),
                "ah": last.ah,
                "kept": last.kept,
            },
            "anchor_since_s": self._anchor_since_s,
            "started_s": self._started_s,
            "fast_since_s": self._fast_since_s,
            "wrong_since_s": self._wrong_since_s,
            "no_current_since_s": self._no_current_since_s,
            "unknown_since_s": _known(self._unknown_since_s),
            "last_kept_s": None if math.isinf(self._last_kept_s) else self._last_kept_s,
            "phases": [
                {
                    "direction": ph.direction,
                    "start": ph.start,
                    "end": ph.end,
                    "steps": [list(st) for st in ph.steps],
                    "rows": len(ph.t_s),
                }
                for ph in self._phases
            ],
        }

    def saved_rows(self, phase: int, start: int, stop: int) -> dict[str, list[Any]]:
        """The kept updates [start, stop) of a phase, as JSON types (unknown: None)."""
        ph = self._phases[phase]
        return {
            "t_s": ph.t_s[start:stop],
            "ah": ph.ah[start:stop],
            "current_a": ph.current_a[start:stop],
            "cell_v": [_known(v) for v in ph.cell_v[start:stop]],
            "temp_c": [_known(t) for t in ph.temp_c[start:stop]],
        }

    @classmethod
    def restored(
        cls,
        params: CaptureParams,
        saved: dict[str, Any],
        rows: Sequence[dict[str, list[Any]]],
        *,
        now_s: float,
        down_s: float | None,
    ) -> OcvCapture:
        """The capture `saved` and its phases' `rows` (all of each) stood for, `down_s` after
        the save (None: unknown), on a clock now at `now_s`. Raises ValueError (or KeyError,
        TypeError) on a state that does not hold together."""
        cap = cls(int(saved["n_cells"]), params)
        n = cap.n_cells
        state = saved["state"]
        if state not in ("idle", "awaiting_start", "first", "second", "done", "aborted"):
            raise ValueError(f"unknown state {state!r}")
        reason = saved["abort_reason"]
        if reason is not None and reason not in ABORT_REASONS:
            raise ValueError(f"unknown abort reason {reason!r}")
        cap.state, cap.reason, cap.abort_reason = state, str(saved["reason"]), reason
        cap.result = None if saved["result"] is None else _result_of(saved["result"])
        if cap.state == "done" and cap.result is None:
            raise ValueError("a finished capture without its result")
        # the saved instant lies down_s before now (an unknown downtime: any shift will do,
        # the capture aborts below)
        shift = now_s - (down_s or 0.0) - float(saved["saved_s"])

        def moved(t: float | None) -> float | None:
            return None if t is None else float(t) + shift

        phases = saved["phases"]
        if len(phases) != len(rows) or len(phases) > 2:
            raise ValueError("a phase's rows are missing")
        for ph_saved, ph_rows in zip(phases, rows, strict=True):
            if ph_saved["direction"] not in ("charge", "discharge"):
                raise ValueError(f"unknown direction {ph_saved['direction']!r}")
            ph = _Phase(ph_saved["direction"])
            count = int(ph_saved["rows"])
            ph.t_s = [float(t) + shift for t in ph_rows["t_s"]]
            ph.ah = [float(a) for a in ph_rows["ah"]]
            ph.current_a = [float(i) for i in ph_rows["current_a"]]
            ph.cell_v = [_array(v, n) for v in ph_rows["cell_v"]]
            ph.temp_c = [_array(t, n).astype(np.float32) for t in ph_rows["temp_c"]]
            lengths = {len(ph.t_s), len(ph.ah), len(ph.current_a), len(ph.cell_v), len(ph.temp_c)}
            if lengths != {count}:
                raise ValueError(f"a phase of {count} rows has {sorted(lengths)}")
            ph.start, ph.end = ph_saved["start"], ph_saved["end"]
            ph.steps = [(int(a), int(b)) for a, b in ph_saved["steps"]]
            indices = [i for i in (ph.start, ph.end) if i is not None]
            indices += [i for st in ph.steps for i in st]
            if any(not 0 <= i < count for i in indices):
                raise ValueError("an index beyond the phase's rows")
            cap._phases.append(ph)
        if (
            cap.state in ("first", "second")
            and len(cap._phases) != ("first", "second").index(cap.state) + 1
        ):
            raise ValueError(f"state {cap.state} with {len(cap._phases)} phases")
        cap._ah = float(saved["ah"])
        last = saved["last"]
        if last is not None:
            kept = last["kept"]
            cap._last = _Update(
                float(last["t_s"]) + shift, float(last["i_a"]), _array(last["v"], n),
                _array(last["temp"], n), float(last["ah"]),
                None if kept is None else int(kept),
            )  # fmt: skip
        cap._anchor_since_s = moved(saved["anchor_since_s"])
        cap._started_s = moved(saved["started_s"])
        cap._fast_since_s = moved(saved["fast_since_s"])
        cap._wrong_since_s = moved(saved["wrong_since_s"])
        cap._no_current_since_s = moved(saved["no_current_since_s"])
        cap._unknown_since_s = _array(saved["unknown_since_s"], n) + shift
        last_kept = moved(saved["last_kept_s"])
        cap._last_kept_s = -math.inf if last_kept is None else last_kept
        cap._after_downtime(now_s, down_s)
        return cap

    def _after_downtime(self, now_s: float, down_s: float | None) -> None:
        """A slow phase resumes after a downtime within the gap rule; awaiting the start
        anchor, any downtime only drops an anchor being held."""
        if self.state == "awaiting_start":
            self._anchor_since_s = None
            return
        if self.state not in ("first", "second"):
            return
        p = self.params
        last = self._last
        if down_s is None or down_s < 0.0:
            self.abort("gap", "restarted after an unknown downtime (no update for an unknown time)")
        elif last is not None and now_s - last.t_s > p.max_gap_s:
            self.abort(
                "gap",
                f"restarted after {down_s:.0f} s down: no update for {now_s - last.t_s:.0f} s "
                f"(max {p.max_gap_s:g} s)",
            )

    # --- the cycle --------------------------------------------------------------------------
    def update(
        self, now_s: float, current_a: float | None, cell_v: ArrayLike, temp_c: ArrayLike
    ) -> CaptureState:
        """One cycle's readings: the string's current (positive charging; None unknown), each
        cell's voltage and temperature (NaN unknown). Returns the state after it."""
        if not self.running:
            return self.state
        v = np.asarray(cell_v, dtype=np.float64)
        temp = np.asarray(temp_c, dtype=np.float64)
        if v.shape != (self.n_cells,) or temp.shape != (self.n_cells,):
            self.abort(
                "cells_changed",
                f"an update has {v.size} cells, the capture {self.n_cells}",
            )
            return self.state
        if self._check_gaps(now_s, current_a, v):
            return self.state
        last = self._last
        # an unknown current (for less than max_gap_s: above) counts as the last known one;
        # such an update is not kept on the grid (`_record`)
        i_a = current_a if current_a is not None else (last.i_a if last is not None else 0.0)
        if last is not None and self.state != "awaiting_start":
            # trapezoid: the current between two updates is their mean
            self._ah += 0.5 * (last.i_a + i_a) * (now_s - last.t_s) / 3600.0
        here = _Update(now_s, i_a, v, temp, self._ah)
        if self.state == "awaiting_start":
            self._await_start(here)
        else:
            self._record(here, current_a is not None and bool(np.all(np.isfinite(v))))
        self._last = here
        return self.state

    def _check_gaps(self, now_s: float, current_a: float | None, v: FloatArray) -> bool:
        """Abort on a gap of updates, of the current or of a cell's voltage (True: aborted)."""
        p = self.params
        last = self._last
        if last is not None and now_s - last.t_s > p.max_gap_s:
            if self.state == "awaiting_start":
                self._anchor_since_s = None  # no anchor across a gap; nothing recorded yet
            else:
                self.abort("gap", f"no update for {now_s - last.t_s:.0f} s (max {p.max_gap_s:g} s)")
                return True
        if self.state == "awaiting_start":
            return False
        if current_a is None:
            if self._no_current_since_s is None:
                self._no_current_since_s = now_s
            if now_s - self._no_current_since_s > p.max_gap_s:
                self.abort("gap", f"no current reading for more than {p.max_gap_s:g} s")
                return True
        else:
            self._no_current_since_s = None
        unknown = ~np.isfinite(v)
        self._unknown_since_s = np.where(unknown, np.fmin(self._unknown_since_s, now_s), np.nan)
        late = unknown & (now_s - self._unknown_since_s > p.max_gap_s)
        if late.any():
            cell = int(np.flatnonzero(late)[0])
            self.abort(
                "cell_unknown",
                f"cell {cell} has no voltage for more than {p.max_gap_s:g} s",
            )
            return True
        return False

    def _anchor_reached(self, kind: Literal["full", "empty"], u: _Update) -> bool:
        """The anchor's condition holds for anchor_hold_s (as the coulomb counter's)."""
        p = self.params
        if kind == "full":
            now = bool(
                np.nanmax(u.v, initial=-math.inf) >= p.charge_v - p.full_margin_v
                and -p.rest_a < u.i_a <= p.full_tail_c_rate * p.capacity_ah
            )
        else:
            now = bool(
                np.nanmin(u.v, initial=math.inf) <= p.discharge_cutoff_v + p.empty_margin_v
                and -p.max_a <= u.i_a < p.rest_a
            )
            # A discharge the cut-off ends is at the cut-off for a sample or two, and a channel
            # with a +50 mV offset reads up to twice the margin above it in its last loaded
            # sample: near it while discharging, then the current stops, is empty too (the
            # coulomb counter's "ended" anchor, `CoulombCounter._anchors`).
            last = self._last
            if (
                last is not None
                and last.i_a <= -p.rest_a
                and u.i_a > -p.rest_a
                and np.nanmin(last.v, initial=math.inf)
                <= p.discharge_cutoff_v + 2.0 * p.empty_margin_v
            ):
                return True
        if not now:
            self._anchor_since_s = None
            return False
        if self._anchor_since_s is None:
            self._anchor_since_s = u.t_s
        return u.t_s - self._anchor_since_s >= p.anchor_hold_s

    def _await_start(self, u: _Update) -> None:
        anchor, first, _ = _PHASES[self.params.order]
        if not self._anchor_reached(anchor, u):
            return
        self._anchor_since_s = None
        self._started_s = u.t_s
        self._ah = 0.0
        u.ah = 0.0
        self._phases = [_Phase(first)]
        u.kept = self._phases[0].keep(u.t_s, 0.0, u.i_a, u.v, u.temp)
        self._last_kept_s = u.t_s
        self.state = "first"
        self.reason = (
            f"{anchor} anchor reached: slow {first} at <= C/{1.0 / self.params.max_c_rate:g}"
        )

    def _record(self, u: _Update, complete: bool) -> None:
        p = self.params
        phase = self._phases[-1]
        sign = 1.0 if phase.direction == "charge" else -1.0
        along = sign * u.i_a
        # the pace and the direction; not once the last phase has reached its end anchor (the
        # capture is complete: the pack may go back to work while the end step is awaited)
        finishing = self.state == "second" and phase.end is not None
        if abs(u.i_a) > p.max_a and not finishing:
            self._fast_since_s = u.t_s if self._fast_since_s is None else self._fast_since_s
            if u.t_s - self._fast_since_s > p.over_rate_hold_s:
                self.abort(
                    "too_fast",
                    f"{abs(u.i_a):.2f} A for more than {p.over_rate_hold_s:g} s: a slow "
                    f"{phase.direction} allows {p.max_a:.2f} A",
                )
                return
        else:
            self._fast_since_s = None
        if phase.start is not None and phase.end is None and along < -p.rest_a:
            self._wrong_since_s = u.t_s if self._wrong_since_s is None else self._wrong_since_s
            if u.t_s - self._wrong_since_s > p.over_rate_hold_s:
                self.abort(
                    "wrong_direction",
                    f"{u.i_a:+.2f} A during the slow {phase.direction} for more than "
                    f"{p.over_rate_hold_s:g} s",
                )
                return
        else:
            self._wrong_since_s = None
        if not complete:
            return  # an update with a cell or the current unknown is not kept (gaps: above)
        last = self._last
        step = last is not None and abs(u.i_a - last.i_a) > p.step_min_c_rate * p.capacity_ah
        if step and last is not None and last.kept is None and np.all(np.isfinite(last.v)):
            last.kept = phase.keep(last.t_s, last.ah, last.i_a, last.v, last.temp)
        if phase.start is None and along > p.rest_a:
            u.kept = phase.keep(u.t_s, u.ah, u.i_a, u.v, u.temp)
            phase.start = u.kept
            self.reason = f"slow {phase.direction} running"
        elif step or u.t_s - self._last_kept_s >= p.record_period_s:
            u.kept = phase.keep(u.t_s, u.ah, u.i_a, u.v, u.temp)
        if u.kept is not None:
            self._last_kept_s = u.t_s
        if (
            step
            and last is not None
            and last.kept is not None
            and u.kept is not None
            and u.t_s - last.t_s <= p.step_max_dt_s
        ):
            phase.steps.append((last.kept, u.kept))
        if phase.start is None or phase.end is not None:
            if phase.end is not None and step and u.kept is not None:
                self._next_phase_after_end(u)
            elif phase.end is not None and u.t_s - phase.t_s[phase.end] > p.end_step_wait_s:
                self._next_phase_after_end(None)
            return
        end: Literal["full", "empty"] = "empty" if phase.direction == "discharge" else "full"
        if self._anchor_reached(end, u):
            if u.kept is None:
                u.kept = phase.keep(u.t_s, u.ah, u.i_a, u.v, u.temp)
                self._last_kept_s = u.t_s
            phase.end = u.kept
            self._anchor_since_s = None

    def _next_phase_after_end(self, u: _Update | None) -> None:
        """After a phase's end anchor, its end step (the current stopping) has been seen or
        cannot be any more: the next phase starts, or the capture is done."""
        _, _, second = _PHASES[self.params.order]
        if self.state == "first":
            nxt = _Phase(second)
            if u is not None:  # the update after the end step is the rest before the next
                u.kept = nxt.keep(u.t_s, u.ah, u.i_a, u.v, u.temp)
            self._phases.append(nxt)
            self.state = "second"
            self.reason = f"{self._phases[0].direction} done: waiting for the slow {second}"
            return
        try:
            self.result = derive(self._phases, self.n_cells, self.params)
        except ValueError as exc:
            self.state = "aborted"
            self.abort_reason = None
            self.reason = f"the capture is complete but gives no branches: {exc}"
            return
        self.state = "done"
        self.reason = "complete: branches derived"
        self._phases = []

    def status(self, now_s: float) -> CaptureStatus:
        p = self.params
        phase = self._phases[-1] if self._phases and self.running else None
        moved = None
        progress = None
        if phase is not None and phase.start is not None:
            moved = abs(self._ah - phase.ah[phase.start])
            done_before = 50.0 if self.state == "second" else 0.0
            progress = done_before + min(50.0 * moved / p.capacity_ah, 49.9)
        elif self.state == "second":
            progress = 50.0
        elif self.state == "done":
            progress = 100.0
        if self.state == "awaiting_start":
            direction: Direction | None = _PHASES[p.order][1]
        else:
            direction = phase.direction if phase is not None else None
        return CaptureStatus(
            state=self.state,
            phase=direction,
            reason=self.reason,
            abort_reason=self.abort_reason,
            elapsed_s=None if self._started_s is None else now_s - self._started_s,
            moved_ah=moved,
            progress_pct=progress,
            samples=sum(len(ph.t_s) for ph in self._phases),
        )


# --- derivation -------------------------------------------------------------------------------
def derive(phases: list[_Phase], n_cells: int, params: CaptureParams) -> CaptureResult:
    """The branches of two complete slow phases (see the module docstring)."""
    if len(phases) != 2 or any(ph.start is None or ph.end is None for ph in phases):
        raise ValueError("two complete slow phases are needed")
    r_ohm = _resistance(phases, n_cells)
    r_used = np.array([0.0 if r is None else r for r in r_ohm])
    grid = np.asarray(params.soc_grid_pct, dtype=np.float64)
    tables: dict[Direction, FloatArray] = {}
    times: list[tuple[Direction, float, float]] = []
    spans: dict[Direction, float] = {}
    temps: list[FloatArray] = []
    # each phase runs from the anchor before it (the start anchor, or the first phase's end)
    # to its own end anchor: what the current does after an anchor (a charger holding CV, an
    # inverter discharging on to the cut-off) belongs to the next phase's scale
    first = phases[0]
    assert first.end is not None
    anchors = [(first.t_s[0], first.ah[0]), (first.t_s[first.end], first.ah[first.end])]
    for k, ph in enumerate(phases):
        assert ph.start is not None and ph.end is not None
        sl = slice(ph.start, ph.end + 1)
        ah = np.asarray(ph.ah[sl])
        i_a = np.asarray(ph.current_a[sl])
        v = np.vstack(ph.cell_v[sl])
        sign = 1.0 if ph.direction == "charge" else -1.0
        t0_s, ah0 = anchors[k]
        span = sign * (ah[-1] - ah0)
        if not span > 0.0:
            raise ValueError(f"the slow {ph.direction} moved no charge")
        spans[ph.direction] = span
        times.append((ph.direction, t0_s, ph.t_s[ph.end]))
        moved_pct = 100.0 * sign * (ah - ah0) / span
        soc = moved_pct if ph.direction == "charge" else 100.0 - moved_pct
        # the end anchor's update is on the grid even when its current fell to the tail
        take = sign * i_a > params.rest_a
        take[-1] = True
        ocv = v - i_a[:, None] * r_used[None, :]
        soc, ocv = soc[take], ocv[take]
        order = np.argsort(soc, kind="stable")
        soc, ocv = soc[order], ocv[order]
        # duplicate SOC (updates at one Ah, e.g. a brief rest with the current on the edge)
        uniq, at = np.unique(soc, return_index=True)
        if len(uniq) < 2:
            raise ValueError(f"the slow {ph.direction} has too few updates")
        table = np.empty((n_cells, len(grid)))
        for c in range(n_cells):
            table[c] = np.interp(grid, uniq, ocv[at, c])
        tables[ph.direction] = table
        temps.append(np.vstack(ph.temp_c[sl]).astype(np.float64))
    up_cells = np.maximum.accumulate(tables["charge"], axis=1)
    down_cells = np.maximum.accumulate(tables["discharge"], axis=1)
    up_med = np.median(tables["charge"], axis=0)
    down_med = np.median(tables["discharge"], axis=0)
    # The string's ends are its limits: 0 % is the first cell at the cut-off, 100 % the first
    # at full, so the pack branches end at the cell that reached them (not the median, which
    # would put the cut-off below 0 % and charge_v above 100 %, a table the configuration
    # refuses as not spanning the operating window). Right after a reversal a cell is still on
    # the branch it came from, so both branches share each end.
    low_v = float(np.min(tables["discharge"][:, 0]))
    high_v = float(np.max(tables["charge"][:, -1]))
    ends = np.array([up_med[0], down_med[0], up_med[-1], down_med[-1]])
    end_fix = float(np.max(np.abs(ends - np.array([low_v, low_v, high_v, high_v]))))
    up_med[0] = down_med[0] = low_v
    up_med[-1] = down_med[-1] = high_v
    up = np.maximum.accumulate(up_med)
    down = np.maximum.accumulate(down_med)
    monotone_fix = float(max(np.max(up - up_med), np.max(down - down_med)))
    up, down, crossing_fix = _uncross(up, down)
    up_cells, down_cells, _ = _uncross(up_cells, down_cells)
    all_temps = np.concatenate([t.ravel() for t in temps])
    known = all_temps[np.isfinite(all_temps)]
    return CaptureResult(
        soc_pct=tuple(float(s) for s in grid),
        charge_v=tuple(float(x) for x in up),
        discharge_v=tuple(float(x) for x in down),
        cell_charge_v=tuple(tuple(float(x) for x in row) for row in up_cells),
        cell_discharge_v=tuple(tuple(float(x) for x in row) for row in down_cells),
        capacity_ah=spans["discharge"],
        charge_capacity_ah=spans["charge"],
        resistance_ohm=r_ohm,
        temperature_c=float(np.mean(known)) if known.size else None,
        spread_charge_v=tuple(float(x) for x in np.ptp(up_cells, axis=0)),
        spread_discharge_v=tuple(float(x) for x in np.ptp(down_cells, axis=0)),
        monotone_fix_v=monotone_fix,
        crossing_fix_v=crossing_fix,
        end_fix_v=end_fix,
        phase_times_s=tuple(times),
    )


def _uncross(up: FloatArray, down: FloatArray) -> tuple[FloatArray, FloatArray, float]:
    """Where the charge branch lies below the discharge branch, both take their mean (still
    non-decreasing: the mean and the max of non-decreasing rows are); how far they moved."""
    crossed = up < down
    mid = 0.5 * (up + down)
    moved = float(np.max(np.where(crossed, 0.5 * (down - up), 0.0)))
    return np.where(crossed, mid, up), np.where(crossed, mid, down), moved


def _resistance(phases: list[_Phase], n_cells: int) -> tuple[float | None, ...]:
    """Per cell: the median of dV / dI over the steps at the slow phases' starts and ends."""
    estimates: list[FloatArray] = []
    for ph in phases:
        for a, b in ph.steps:
            d_i = ph.current_a[b] - ph.current_a[a]
            estimates.append((ph.cell_v[b] - ph.cell_v[a]) / d_i)
    if not estimates:
        return (None,) * n_cells
    stack = np.vstack(estimates)
    stack = np.where(np.isfinite(stack) & (stack > 0.0), stack, np.nan)
    out: list[float | None] = []
    for c in range(n_cells):
        col = stack[:, c]
        col = col[np.isfinite(col)]
        out.append(float(np.median(col)) if col.size else None)
    return tuple(out)


def _known(x: FloatArray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in x.tolist()]


def _array(values: Sequence[float | None], n: int) -> FloatArray:
    out = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    if out.shape != (n,):
        raise ValueError(f"{out.size} values for {n} cells")
    return out


def _result_of(d: dict[str, Any]) -> CaptureResult:
    """`dataclasses.asdict(result)` back (JSON made its tuples lists)."""

    def tup(x: Any) -> Any:
        return tuple(tup(y) for y in x) if isinstance(x, list | tuple) else x

    names = {f.name for f in dataclasses.fields(CaptureResult)}
    if set(d) != names:
        raise ValueError(f"result fields {sorted(set(d) ^ names)} differ")
    return CaptureResult(**{k: tup(v) for k, v in d.items()})


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)
