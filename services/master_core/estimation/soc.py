"""Per-cell state of charge: coulomb counting with OCV and anchor corrections.

Conventions: SOC in % (0-100) on the OCV table's scale, pack current in A (positive =
charging, the same current flows through every series cell), cell voltages in V as a numpy array
in series order (NaN = not measured this time), time in s passed in by the caller. Everything is
vectorised over cells; no Python loop per cell.

Why voltage corrections are guarded: the cell-voltage accuracy is ±50 mV. A voltage error maps
to a SOC error of error / (dOCV/dSOC): about 5 % on NMC (9 mV/%) but 20-250 % on the LFP plateau
(0.2-2.4 mV/%). The counter therefore looks at the OCV slope before trusting a voltage. A
chemistry's shipped table is not the cell's own either: NMC cells differ by 30-230 mV
(`GENERIC_OCV_SOC_ERROR_PCT`, `OcvCurve.table_error_v`), which weighs every reading too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Self, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.master_core.estimation.hysteresis import HysteresisOcv
from services.master_core.estimation.ocv import CellOcv
from shared.config.chemistry import (  # defined with the presets: the wizard shows it too
    GENERIC_OCV_SOC_ERROR_PCT as GENERIC_OCV_SOC_ERROR_PCT,
)
from shared.config.chemistry import ChemistryPreset
from shared.config.system import SystemConfig

FloatArray = NDArray[np.float64]

STATE_VERSION = 1
_P = TypeVar("_P")

# Added per index to the OCV table for the inverse lookup: np.interp needs strictly increasing
# x, and a table may hold the same voltage twice on a plateau. 1 nV is far below any sensor.
_FLAT_RAMP_V = 1e-9


class OcvCurve:
    """OCV(SOC) table: vectorised lookup, inverse and slope (linear interpolation, clamped)."""

    def __init__(
        self,
        soc_pct: Sequence[float],
        ocv_v: Sequence[float],
        table_error_v: Sequence[float] | None = None,
    ) -> None:
        soc = np.asarray(soc_pct, dtype=np.float64)
        volts = np.asarray(ocv_v, dtype=np.float64)
        if soc.ndim != 1 or soc.shape != volts.shape or len(soc) < 2:
            raise ValueError("the OCV table needs two equally long lists of at least 2 points")
        if soc[0] != 0.0 or soc[-1] != 100.0 or np.any(np.diff(soc) <= 0.0):
            raise ValueError("OCV table SOC must rise strictly from 0 % to 100 %")
        if np.any(np.diff(volts) < 0.0) or not np.all(np.isfinite(volts)):
            raise ValueError("OCV table voltages must be finite and must not fall with SOC")
        self.soc_pct: FloatArray = soc
        self.ocv_v: FloatArray = volts
        error = np.zeros_like(soc) if table_error_v is None else np.asarray(table_error_v, float)
        if error.shape != soc.shape or not np.all(np.isfinite(error)) or np.any(error < 0.0):
            raise ValueError("the OCV table error needs one finite, non-negative value per point")
        self.table_error_v: FloatArray = error
        """1-sigma error of the table itself per point (a generic table on another cell)."""
        self._v_inverse: FloatArray = volts + _FLAT_RAMP_V * np.arange(len(volts))
        segment = np.diff(volts) / np.diff(soc)
        # Slope at the table points = mean of the two segments: continuous in SOC, so a filter
        # gain does not jump when the estimate crosses a table point.
        knots = np.empty_like(soc)
        knots[0], knots[-1] = segment[0], segment[-1]
        knots[1:-1] = 0.5 * (segment[:-1] + segment[1:])
        self._slope_v_per_pct: FloatArray = knots

    @classmethod
    def from_preset(cls, preset: ChemistryPreset) -> Self:
        return cls(preset.ocv_table_soc_pct, preset.ocv_table_v)

    def voltage(self, soc_pct: ArrayLike) -> FloatArray:
        return np.interp(np.asarray(soc_pct, dtype=np.float64), self.soc_pct, self.ocv_v)

    def slope_v_per_pct(self, soc_pct: ArrayLike) -> FloatArray:
        """dOCV/dSOC in V per % SOC."""
        s = np.asarray(soc_pct, dtype=np.float64)
        return np.interp(s, self.soc_pct, self._slope_v_per_pct)

    def soc(self, ocv_v: ArrayLike) -> FloatArray:
        """SOC in % of a rested voltage (inverse lookup, clamped to 0-100 %)."""
        return np.interp(np.asarray(ocv_v, dtype=np.float64), self._v_inverse, self.soc_pct)

    def soc_spread_pct(self, ocv_v: ArrayLike, error_v: float) -> FloatArray:
        """Half the SOC span that a voltage reading ± `error_v` is compatible with, the table's
        own error at that reading added (root sum of squares)."""
        v = np.asarray(ocv_v, dtype=np.float64)
        table = np.interp(self.soc(v), self.soc_pct, self.table_error_v)
        error = np.sqrt(error_v**2 + table**2)
        return 0.5 * (self.soc(v + error) - self.soc(v - error))

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "soc_pct": self.soc_pct.tolist(),
            "ocv_v": self.ocv_v.tolist(),
            "table_error_v": self.table_error_v.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["soc_pct"], data["ocv_v"], data.get("table_error_v"))


def pack_soc_pct(cell_soc_pct: ArrayLike, cell_std_pct: ArrayLike | None = None) -> float:
    """SOC of a series string from its cell SOCs (NaN cells ignored; NaN if none is known).

    A series string is empty when its lowest cell is empty and full when its highest cell is
    full, so 0 % must mean "the first cell reached empty" and 100 % "the first cell reached
    full": the limit rule SOC = min / (min + (100 - max)) x 100, the share of the string's
    usable charge (min x C still to deliver, (100 - max) x C still to take) that it can deliver.
    It equals the mean in the middle of a narrow spread, follows the weakest cell near empty and
    the strongest near full. With one cell empty and another full the string can do neither; the
    result is then 0 % (discharge is the side that must stop first).

    With `cell_std_pct` (1-sigma per cell) a spread that the cells' own uncertainty explains is
    noise, not imbalance: the minimum and maximum of noisy estimates sit below and above the
    truth. The result is then the cells' mean, blending into the limit rule as the spread grows
    from 2 to 4 x the RMS sigma. A cell at 0 % or 100 % still gives 0 % or 100 %.
    """
    soc = np.asarray(cell_soc_pct, dtype=np.float64)
    finite = np.isfinite(soc)
    # every cell known (the usual case): the cells themselves, without a masked copy
    every = bool(finite.all())
    known = soc if every else soc[finite]
    if known.size == 0:
        return math.nan
    # min/max on floats: np.clip on a scalar costs more than the rest (issue 19)
    low = min(max(float(known.min()), 0.0), 100.0)
    high = min(max(float(known.max()), 0.0), 100.0)
    # Exactly 0 % and 100 % at the limits (100 x low / low need not be 100.0 in floats).
    if low <= 0.0:
        return 0.0
    if high >= 100.0:
        return 100.0
    limits = 100.0 * low / (low + (100.0 - high))
    if cell_std_pct is None:
        return limits
    std = np.asarray(cell_std_pct, dtype=np.float64)
    if std.shape != soc.shape:
        std = np.broadcast_to(std, soc.shape)
    if not every:
        std = std[finite]
    sigma = float(np.sqrt(np.square(std).mean())) if np.isfinite(std).all() else 0.0
    if sigma <= 0.0:
        return limits
    blend = min(max((high - low - 2.0 * sigma) / (2.0 * sigma), 0.0), 1.0)
    mean = min(max(float(known.mean()), 0.0), 100.0)
    return (1.0 - blend) * mean + blend * limits


def _clip_pct(x: FloatArray) -> FloatArray:
    # Two ufuncs: np.clip's Python wrapper costs more than the work on 196 cells.
    out: FloatArray = np.minimum(np.maximum(x, 0.0), 100.0)
    return out


def _average(mean: FloatArray, v: FloatArray, dt: float, tau_s: float) -> FloatArray:
    """First-order average per cell; starts at the first finite sample, NaN samples skipped."""
    alpha = dt / (tau_s + dt) if dt > 0.0 else 1.0
    out: FloatArray = np.where(
        np.isnan(mean), v, np.where(np.isfinite(v), mean + alpha * (v - mean), mean)
    )
    return out


def _cells(value: ArrayLike, n_cells: int, name: str) -> FloatArray:
    out = np.broadcast_to(np.asarray(value, dtype=np.float64), (n_cells,)).copy()
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: every cell needs a finite value")
    return out


def _voltages(cell_v: ArrayLike | None, n_cells: int) -> FloatArray | None:
    if cell_v is None:
        return None
    v = np.asarray(cell_v, dtype=np.float64)
    if v.shape != (n_cells,):
        raise ValueError(f"expected {n_cells} cell voltages, got shape {v.shape}")
    return v


def _params_from_dict(cls: type[_P], data: Mapping[str, Any]) -> _P:
    # Unknown keys are dropped so a state written by a newer version still loads.
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: float(v) for k, v in data.items() if k in names})


@dataclass(frozen=True)
class CoulombParams:
    """Settings of the coulomb counter; the defaults suit the ±50 mV / ±0.1 A hardware."""

    charge_efficiency: float = 0.999
    """Coulombic efficiency applied to charge current (Li-ion > 99.9 % when new)."""
    rest_c_rate: float = 0.02
    """|I| below this (x capacity) counts as rest: 2 A on 100 Ah, twenty times the 0.1 A
    accuracy (robust to a 1 %-of-C offset); the IR drop at C/50 is a few mV."""
    rest_time_s: float = 300.0
    """Shortest rest before the OCV is trusted; the voltage must also have settled
    (rest_settled_v_per_s), so a warm NMC cell is read after 5 min and a cold or diffusing one
    later. 5 tau of the 1RC fits of PyBaMM cells (tau 25-60 s)."""
    rest_settled_v_per_s: float = 2e-3 / 60.0
    """The rested voltage has settled when no cell moves faster than this (2 mV/min). PyBaMM
    cells get there after 5-10 min (Chen2020 NMC at 25 degC: 20 mV left after 5 min, 1 mV after
    15); a cell relaxing with tau 10 min then has about 20 mV left, 2-3 % SOC on NMC's steep
    parts, and the corrections come within a 20-min rest (SOC benchmarks: 3.7 % instead of
    5.7 % RMSE with a fixed 15-min timer; 1 mV/min: 5.1 %)."""
    rest_slope_window_s: float = 180.0
    """The settling slope is the change of a slow voltage average (time constant a fifth of
    this) over this window: 10 mV sample noise at 1 s gives 0.4 mV/min of slope noise."""
    rest_max_s: float = 7200.0
    """After this long a voltage that still moves is read anyway (the 3-sigma gate and the OCV
    uncertainty weigh it); a rest of hours is rarely repeated soon."""
    ocv_average_s: float = 10.0
    """Time constant of the voltage average taken during rest (removes sample noise)."""
    voltage_error_v: float = 0.05
    """Cell-voltage accuracy (offset + noise). Sets how much an OCV reading is worth."""
    max_ocv_soc_error_pct: float = 10.0
    """No OCV correction where the reading ± voltage_error_v spans more than ± this SOC, i.e.
    where the mean OCV slope over that span is below voltage_error_v / this: 5 mV/% at ±50 mV
    (`min_ocv_slope_mv_per_pct`). The table's own error counts too (`OcvCurve.table_error_v`,
    table_soc_error_pct): at ±50 mV the shipped (generic) presets are corrected at NMC 0-12.5 %
    and 57.5-100 %, LFP nowhere; with the cells' own LFP table at 0-7.5 % and 100 % (the
    plateau, 0.2-2.4 mV/%, never).
    A flatter curve is skipped rather than weighted down: a weight treats the error as random,
    but a channel offset is the same at every rest; on the LFP plateau a +50 mV offset points
    30-40 % too high (bms-practice §2.3: +41.8 % after an OCV reset). Hysteresis is modelled
    where the configuration gives both OCV branches (`CoulombCounter.hysteresis`); with a single
    curve, include it in voltage_error_v."""

    table_soc_error_pct: float = 0.0
    """1-sigma SOC error of the OCV table itself, added to the reading's: 0 for the cell's own
    table, GENERIC_OCV_SOC_ERROR_PCT for a chemistry's generic one. When it alone exceeds
    max_ocv_soc_error_pct, no OCV correction is made: the anchors carry the SOC."""
    gate_sigma: float = 3.0
    """An OCV correction must agree with the counted SOC within this many sigma of both; a
    disagreeing one is refused and counted (`ocv_refused`), and the counted SOC's sigma is
    widened to the disagreement / gate_sigma, so that a second rest that confirms it is taken.
    A restored SOC (`load_state`, its sigma widened by the downtime) that the first usable rested
    reading contradicts beyond this is re-initialised to the reading (`reinitialised`)."""
    current_error_a: float = 0.1
    """Current offset + noise: the SOC uncertainty grows by this x time / capacity."""
    current_gain_error: float = 0.03
    """Relative error of the counted charge: the sensor's gain (1 %) and the capacity counted in,
    the rated one until a capacity is measured (cells are sold within a few %; the field NMC
    pack's cells lie 0.97-1.03 of rated). With 1 % a count over a full discharge claimed 1 %
    where it was 3 % off, and the empty anchor and rested readings were weighed too little."""
    full_margin_v: float = 0.05
    """Full anchor: cell voltage >= charge_v - this while the current has fallen to the tail
    current within full_window_s of charging (end of the CV phase). The voltage accuracy: a cell
    held at charge_v reads at least charge_v - 50 mV."""
    full_tail_c_rate: float = 0.05
    """Tail current (x capacity) of the CV phase below which a cell at charge_v is full (C/20)."""
    full_window_s: float = 60.0
    """The full anchor needs charge current within this time. A cell resting for long near
    charge_v is left to the OCV correction: at rest 4.15 V is only ~96 % on NMC."""
    empty_margin_v: float = 0.05
    """Empty anchor: cell voltage <= discharge_cutoff_v + this, while discharging gently. As
    full_margin_v: the voltage accuracy, and a discharge the cut-off ends is sampled a little
    above it (the knee falls 20-30 mV per 10 s at C/5)."""
    empty_max_c_rate: float = 0.25
    """Empty anchor only below this discharge rate: at high current the IR drop reaches the
    cut-off long before the cell is empty (NMC 1RC: ~0.2 V at 1C). A C/5 discharge passes with
    the current sensor's gain error (PyBaMM Mohtat2020 at 10 degC, C/5: 2.8 % left at the
    cut-off)."""
    full_below_max_pct: float = 6.0
    """A full anchor puts a cell at most this far below 100 % for its distance below the
    highest cell (`CoulombCounter.full_anchor_pct`): twice the anchor's sigma. Further is more
    likely a channel offset, or a table with a flat top, than a cell that much emptier."""
    anchor_hold_s: float = 10.0
    """An anchor condition must hold this long (filters single noisy samples)."""
    anchor_std_pct: float = 3.0
    """SOC uncertainty right after an anchor. A full anchor takes every cell within
    full_margin_v of charge_v: the one at the limit, and others up to margin / slope below it
    (NMC's top, 16 mV/%: 3 %); and the CV end at a C/20 tail is not the table's 100 % in the cold
    (PyBaMM Mohtat2020 at 10 degC: 97.9 %). With 2 % the rested reading after a full charge,
    as good as 2.5-4 % there on NMC, barely counted (field bench, nmc ideal: 3.50 % RMSE after
    the first anchor, 3.09 % with 3 %)."""
    max_gap_s: float = 5.0
    """Longer gaps between samples are not integrated (the current in between is unknown);
    the SOC uncertainty grows by the charge the larger of both currents could have moved."""

    @property
    def min_ocv_slope_mv_per_pct(self) -> float:
        return 1000.0 * self.voltage_error_v / self.max_ocv_soc_error_pct


class CoulombCounter:
    """Per-cell coulomb counting with OCV correction after rest and full/empty anchors.

    Each cell has a SOC and a standard deviation (%) that grows with the counting error and
    shrinks at corrections. An OCV correction after rest is a weighted blend, w = var_cc /
    (var_cc + var_ocv) with sd_ocv = the SOC spread of the ±voltage_error_v reading, and is
    skipped where that spread exceeds max_ocv_soc_error_pct. One correction per rest:
    the voltage offset of a channel is the same in every sample, so repeating it would count the
    same error again.
    """

    def __init__(
        self,
        *,
        n_cells: int,
        capacity_ah: ArrayLike,
        ocv: OcvCurve,
        charge_v: float,
        discharge_cutoff_v: float,
        params: CoulombParams | None = None,
        initial_soc_pct: ArrayLike = 50.0,
        initial_std_pct: ArrayLike = 30.0,
    ) -> None:
        if n_cells < 1:
            raise ValueError("n_cells must be at least 1")
        self.n_cells = n_cells
        self.ocv = ocv
        self.charge_v = float(charge_v)
        self.discharge_cutoff_v = float(discharge_cutoff_v)
        self.params = params or CoulombParams()
        self.capacity_ah = _cells(capacity_ah, n_cells, "capacity_ah")
        if np.any(self.capacity_ah <= 0.0):
            raise ValueError("capacity_ah must be positive")
        self.soc_pct = np.clip(_cells(initial_soc_pct, n_cells, "initial_soc_pct"), 0.0, 100.0)
        self.soc_std_pct = np.abs(_cells(initial_std_pct, n_cells, "initial_std_pct"))
        self._last_s: float | None = None
        self._last_current_a = 0.0
        self.rest_s = 0.0
        self._in_rest = False
        self._ocv_done = False
        self._rest_v = np.full(n_cells, np.nan)
        self._slow_v = np.full(n_cells, np.nan)
        self._slope_ref_v = np.full(n_cells, np.nan)
        self._slope_ref_s = 0.0
        self.rest_settled = False
        """The cells rest (small current) and their voltages have stopped moving."""
        self._full_s = np.zeros(n_cells)
        self._since_charge_s = math.inf
        self._empty_s = np.zeros(n_cells)
        self._discharging = False
        self._near_cutoff = np.zeros(n_cells, dtype=np.bool_)
        self.ocv_corrections = 0
        self.ocv_refused = 0
        self.reinitialised = 0
        """Restored cells that a rested reading contradicted beyond gate_sigma (`load_state`)."""
        self._unconfirmed = np.zeros(n_cells, dtype=np.bool_)
        """Cells whose SOC is a restored record not yet confirmed by a reading or an anchor."""
        """OCV corrections refused by the gate (cell x rest)."""
        self.anchors = 0
        self.full_anchored = np.zeros(n_cells, dtype=np.bool_)
        """The cells the last full anchor took (`voltage_offsets` learns at its rest)."""
        self.last_anchor_s: float | None = None
        """Time (the caller's clock) of the last full or empty anchor; None before one."""
        self.reference_soc_pct = np.full(n_cells, np.nan)
        """SOC known independently of counting in the last update (OCV after rest or anchor),
        NaN elsewhere: the points a capacity estimate needs (`SohEstimator.add_reference`)."""
        self.reference_std_pct = np.full(n_cells, np.nan)
        self._has_reference = False
        self.hysteresis: HysteresisOcv | None = None
        """OCV branches and hysteresis state (`hysteresis.py`) where the configuration gives
        branches; None: the single curve `ocv` both ways (no hysteresis known)."""

    def _correction_ocv(self) -> OcvCurve | CellOcv:
        """The OCV the rested readings are read against: the branch each cell's hysteresis
        state and temperature select, else the single curve."""
        return self.ocv if self.hysteresis is None else self.hysteresis.curves()

    @classmethod
    def from_config(
        cls,
        config: SystemConfig,
        params: CoulombParams | None = None,
        initial_soc_pct: ArrayLike = 50.0,
        initial_std_pct: ArrayLike = 30.0,
        ocv: OcvCurve | None = None,
    ) -> Self:
        chem = config.cell_chemistry
        return cls(
            n_cells=config.total_cells,
            capacity_ah=config.cell_capacity_ah,
            ocv=ocv if ocv is not None else OcvCurve.from_preset(chem),
            charge_v=chem.charge_v,
            discharge_cutoff_v=chem.discharge_cutoff_v,
            params=params,
            initial_soc_pct=initial_soc_pct,
            initial_std_pct=initial_std_pct,
        )

    def start_from_rest(self, cell_v: ArrayLike) -> FloatArray:
        """Initial SOC from rested voltages (first start, no stored state).

        The OCV guess is used everywhere, also on flat curves (there is nothing better), but its
        uncertainty is the SOC spread of the ±voltage_error_v reading, so later corrections
        weigh it accordingly. NaN voltages keep their SOC.
        """
        v = _voltages(cell_v, self.n_cells)
        if v is None:
            raise ValueError("start_from_rest needs cell voltages")
        p = self.params
        ok = np.isfinite(v)
        v0 = np.where(ok, v, 0.0)
        ocv = self._correction_ocv()
        spread = ocv.soc_spread_pct(v0, p.voltage_error_v)
        std = np.sqrt(np.maximum(spread, 0.5) ** 2 + p.table_soc_error_pct**2)
        guess = ocv.soc(v0)
        # A reading worth less than max_ocv_soc_error_pct (a plateau, a generic table) says
        # more about the pack than about its cell: the channel offsets differ from cell to cell,
        # so the median of all readings is the better guess for each such cell.
        vague = ok & (std > p.max_ocv_soc_error_pct)
        if np.any(vague):
            guess = np.where(vague, float(np.median(guess[ok])), guess)
        self.soc_pct = np.where(ok, guess, self.soc_pct)
        self.soc_std_pct = np.where(ok, std, self.soc_std_pct)
        return self.soc_pct

    def update(self, now_s: float, current_a: float, cell_v: ArrayLike | None = None) -> FloatArray:
        """Take one sample; returns the cell SOCs (%). `cell_v` None: counting only."""
        p = self.params
        v = _voltages(cell_v, self.n_cells)
        if self._has_reference:
            self.reference_soc_pct = np.full(self.n_cells, np.nan)
            self.reference_std_pct = np.full(self.n_cells, np.nan)
            self._has_reference = False
        current = float(current_a) if math.isfinite(current_a) else 0.0
        dt = 0.0 if self._last_s is None else now_s - self._last_s
        if dt < 0.0:
            dt = 0.0  # clock stepped back: take the sample, count nothing
        if 0.0 < dt <= p.max_gap_s:
            mean_a = 0.5 * (self._last_current_a + current)
            eff = p.charge_efficiency if mean_a > 0.0 else 1.0
            moved = 100.0 * eff * mean_a * dt / (3600.0 * self.capacity_ah)
            counted = self.soc_pct + moved
            if self.hysteresis is not None:
                self.hysteresis.count(moved)
            self.soc_pct = _clip_pct(counted)
            # A count that runs past full or empty without the anchor was wrong by at least the
            # part cut off: its uncertainty grows by that, so the next reading is believed.
            self.soc_std_pct = (
                self.soc_std_pct
                + np.abs(counted - self.soc_pct)
                + 100.0
                * dt
                * (p.current_error_a + p.current_gain_error * abs(mean_a))
                / (3600.0 * self.capacity_ah)
            )
        elif dt > p.max_gap_s:
            worst = max(abs(self._last_current_a), abs(current)) + p.current_error_a
            self.soc_std_pct = self.soc_std_pct + 100.0 * worst * dt / (3600.0 * self.capacity_ah)
        self._last_s = now_s
        self._last_current_a = current
        # A sigma beyond 100 % says nothing more than "unknown".
        self.soc_std_pct = _clip_pct(self.soc_std_pct)
        self._track_rest(dt, current, v)
        if v is not None:
            self._anchors(dt, current, v)
        return self.soc_pct

    @property
    def pack_soc_pct(self) -> float:
        return pack_soc_pct(self.soc_pct, self.soc_std_pct)

    def widen(self, uncounted_s: float) -> None:
        """Time without counting (the master was down): each cell's sigma grows by the charge
        current_error_a moves in that time (0.1 A on 100 Ah: 0.1 %/h, 2.4 %/day), as for a
        gap between samples with no current; a sigma stays within 100 %."""
        if not uncounted_s > 0.0:
            return
        p = self.params
        grown = self.soc_std_pct + 100.0 * p.current_error_a * uncounted_s / (
            3600.0 * self.capacity_ah
        )
        self.soc_std_pct = _clip_pct(grown)

    def rested_reading(self) -> tuple[FloatArray, OcvCurve | CellOcv]:
        """The current rest's averaged voltages (NaN outside a rest) and the OCV curves its
        reading is taken against: what a voltage offset learner reads (`voltage_offsets`)."""
        return self._rest_v.copy(), self._correction_ocv()

    def empty_anchor_pct(self) -> tuple[float, float]:
        """SOC (%) and its 1-sigma at the empty anchor: the table's SOC at the cut-off voltage,
        with the table's own error there and the anchor's (`anchor_std_pct`)."""
        p = self.params
        cutoff = np.asarray([self.discharge_cutoff_v])
        soc = float(self.ocv.soc(cutoff)[0])
        table = float(self.ocv.soc_spread_pct(cutoff, 0.0)[0])
        std = math.sqrt(p.anchor_std_pct**2 + table**2 + p.table_soc_error_pct**2)
        return soc, std

    def full_anchor_pct(self, cell_v: FloatArray, full: NDArray[np.bool_]) -> FloatArray:
        """SOC (%) of each `full` cell at the end of the CV phase, from its voltage: the highest
        is the one at the limit, 100 % (so the pack reads 100 % when the charge limit is
        reached); one below it is below full by what that distance is on the table's top (the
        tail current flows through every cell alike, so the distance is theirs). At C/20 the
        cells a full anchor takes lie within full_margin_v, up to 3 % on NMC's top (16 mV/%)."""
        known = full & np.isfinite(cell_v)
        if not np.any(known):
            return np.full(self.n_cells, 100.0)
        highest_v = float(cell_v[known].max())
        below_v = np.where(known, np.maximum(highest_v - cell_v, 0.0), 0.0)
        # the highest exactly 100 %: an inverse lookup on a flat top would land on its start
        lowest = 100.0 - self.params.full_below_max_pct
        below = np.maximum(self.ocv.soc(float(self.ocv.ocv_v[-1]) - below_v), lowest)
        out: FloatArray = np.where(below_v > 0.0, below, 100.0)
        return out

    def below_full_cap_pct(self, cell_v: FloatArray, full: NDArray[np.bool_]) -> FloatArray:
        """The highest SOC (%) a cell that a full anchor did not take can hold: what the anchor
        gives a cell at its distance below the highest taken one (`full_anchor_pct`), less
        full_margin_v (the voltage accuracy: its channel may read that much low). A cell
        further than full_margin_v below the charge limit at the CV end is not full, whatever its
        count says (a count restored too high, or counted past full, stays at 100 % otherwise);
        100 % where the voltage is unknown or no cell was taken."""
        known = full & np.isfinite(cell_v)
        if not np.any(known):
            return np.full(self.n_cells, 100.0)
        highest_v = float(cell_v[known].max())
        margin_v = self.params.full_margin_v
        below_v = np.where(np.isfinite(cell_v), np.maximum(highest_v - cell_v - margin_v, 0.0), 0.0)
        lowest = 100.0 - self.params.full_below_max_pct
        below = np.maximum(self.ocv.soc(float(self.ocv.ocv_v[-1]) - below_v), lowest)
        out: FloatArray = np.where(full | (below_v <= 0.0), 100.0, below)
        return out

    def _track_rest(self, dt: float, current: float, v: FloatArray | None) -> None:
        p = self.params
        resting = abs(current) < p.rest_c_rate * float(self.capacity_ah.min())
        if not resting:
            if self._in_rest:
                self._in_rest = False
                self.rest_s = 0.0
                self._ocv_done = False
                self.rest_settled = False
                self._rest_v = np.full(self.n_cells, np.nan)
                self._slow_v = np.full(self.n_cells, np.nan)
                self._slope_ref_v = np.full(self.n_cells, np.nan)
                self._slope_ref_s = 0.0
            return
        self._in_rest = True
        self.rest_s += dt
        if v is None:
            return
        self._rest_v = _average(self._rest_v, v, dt, p.ocv_average_s)
        window = min(p.rest_slope_window_s, p.rest_time_s)
        self._slow_v = _average(self._slow_v, v, dt, window / 5.0)
        if self.rest_s - self._slope_ref_s >= window:
            moved = np.abs(self._slow_v - self._slope_ref_v)
            known = np.isfinite(moved)
            slope = (
                float(moved[known].max()) / (self.rest_s - self._slope_ref_s)
                if known.any()
                else math.inf
            )
            self.rest_settled = slope <= p.rest_settled_v_per_s
            self._slope_ref_v = self._slow_v.copy()
            self._slope_ref_s = self.rest_s
        elif np.all(np.isnan(self._slope_ref_v)):
            self._slope_ref_v = self._slow_v.copy()
            self._slope_ref_s = self.rest_s
        ready = self.rest_settled or self.rest_s >= p.rest_max_s
        if self.rest_s >= p.rest_time_s and ready and not self._ocv_done:
            self._ocv_done = True
            self._ocv_correct(self._rest_v)

    def _ocv_correct(self, v: FloatArray) -> None:
        p = self.params
        ok = np.isfinite(v)
        v0 = np.where(ok, v, 0.0)
        # The SOC span the reading ± error allows: the curve's slope at the sensor's resolution,
        # and the table's own error (a generic table is not this cell's).
        ocv = self._correction_ocv()
        spread = ocv.soc_spread_pct(v0, p.voltage_error_v)
        # Steepness at the estimate too: an offset reading can sit on a knee while the cell
        # sits on the plateau (a +50 mV channel on LFP's plateau reads on the top knee). The
        # curve is judged where the estimate allows the cell to be nearest to the reading
        # (within its 1-sigma), and the reading is worth what the flatter place allows.
        near_soc = np.clip(
            ocv.soc(v0), self.soc_pct - self.soc_std_pct, self.soc_pct + self.soc_std_pct
        )
        at_estimate = ocv.soc_spread_pct(ocv.voltage(near_soc), p.voltage_error_v)
        spread = np.maximum(spread, at_estimate)
        ocv_std = np.sqrt(np.maximum(spread, 1e-3) ** 2 + p.table_soc_error_pct**2)
        use = ok & (ocv_std <= p.max_ocv_soc_error_pct)
        if not np.any(use):
            return
        var_cc = self.soc_std_pct**2
        target = ocv.soc(v0)
        disagree = np.abs(target - self.soc_pct)
        refused = use & (disagree > p.gate_sigma * np.sqrt(var_cc + ocv_std**2))
        # A restored record that the first rested reading contradicts is wrong (stale, or the
        # pack was charged while the master was down): the reading re-initialises the cell. A
        # running count that disagrees is refused instead (the reading may carry an offset).
        reinit = refused & self._unconfirmed
        self._unconfirmed &= ~use
        if np.any(reinit):
            self.reinitialised += int(np.count_nonzero(reinit))
            self.soc_pct = np.where(reinit, target, self.soc_pct)
            self.soc_std_pct = np.where(reinit, ocv_std, self.soc_std_pct)
            self.reference_soc_pct = np.where(reinit, target, self.reference_soc_pct)
            self.reference_std_pct = np.where(reinit, ocv_std, self.reference_std_pct)
            self._has_reference = True
            use &= ~reinit
            refused &= ~reinit
        if np.any(refused):
            self.ocv_refused += int(np.count_nonzero(refused))
            self.soc_std_pct = np.where(
                refused, np.maximum(self.soc_std_pct, disagree / p.gate_sigma), self.soc_std_pct
            )
            use &= ~refused
        weight = var_cc / (var_cc + ocv_std**2)
        self.soc_pct = np.where(use, self.soc_pct + weight * (target - self.soc_pct), self.soc_pct)
        self.soc_std_pct = np.where(use, np.sqrt((1.0 - weight) * var_cc), self.soc_std_pct)
        self.ocv_corrections += int(np.count_nonzero(use))
        if np.any(use):
            self.reference_soc_pct = np.where(use, target, self.reference_soc_pct)
            self.reference_std_pct = np.where(use, ocv_std, self.reference_std_pct)
            self._has_reference = True

    def _anchors(self, dt: float, current: float, v: FloatArray) -> None:
        p = self.params
        c_min = float(self.capacity_ah.min())
        # The rest band on the other side tolerates current-sensor noise around zero.
        rest_a = p.rest_c_rate * c_min
        self._since_charge_s = 0.0 if current >= rest_a else self._since_charge_s + dt
        tail = -rest_a < current <= p.full_tail_c_rate * c_min
        tail = tail and self._since_charge_s <= p.full_window_s
        gentle = -p.empty_max_c_rate * c_min <= current < rest_a
        if not (tail or gentle):
            self._discharging = current <= -rest_a
            self._near_cutoff = np.zeros(self.n_cells, dtype=np.bool_)
            if self._full_s.any() or self._empty_s.any():
                self._full_s = np.zeros(self.n_cells)
                self._empty_s = np.zeros(self.n_cells)
            return
        with np.errstate(invalid="ignore"):
            at_full = tail & (v >= self.charge_v - p.full_margin_v)
            at_empty = gentle & (v <= self.discharge_cutoff_v + p.empty_margin_v)
        # A discharge that the cut-off ends stays there for a sample or two, not anchor_hold_s:
        # a cell at the cut-off while discharging, followed by the current stopping, is empty
        # too (the stop confirms what one noisy sample could not).
        # Sampled a little late and read with a channel offset, such a cell may show up to
        # twice empty_margin_v above the cut-off in its last loaded sample.
        stopped = self._discharging and current > -rest_a
        ended = stopped & self._near_cutoff & ~at_empty
        self._discharging = current <= -rest_a
        with np.errstate(invalid="ignore"):
            near = v <= self.discharge_cutoff_v + 2.0 * p.empty_margin_v
        self._near_cutoff = near & self._discharging
        self._full_s = np.where(at_full, self._full_s + dt, 0.0)
        self._empty_s = np.where(at_empty, self._empty_s + dt, 0.0)
        full = self._full_s >= p.anchor_hold_s
        empty = (self._empty_s >= p.anchor_hold_s) | ended
        hit = full | empty
        if np.any(hit):
            held = np.maximum(self._full_s, self._empty_s)
            first = hit & ((held - dt < p.anchor_hold_s) | ended)
            # Empty is where the table puts the cut-off (0 % on a table of these cells), as
            # uncertain as the table is there: a generic table's cut-off is not this cell's
            # (PyBaMM Prada2013 LFP at 35 degC still holds 9 % at 2.8 V under C/5). So the
            # count and the anchor are blended once per event, not overwritten.
            cut_soc, cut_std = self.empty_anchor_pct()
            var_cc = self.soc_std_pct**2
            weight = var_cc / (var_cc + cut_std**2)
            blended = self.soc_pct + weight * (cut_soc - self.soc_pct)
            new_empty = empty & first
            full_soc = self.full_anchor_pct(v, full)
            if np.any(full):
                # the cells it did not take are below full: a count above that was wrong by at
                # least the excess, its uncertainty grows by it (as for a count run past full)
                cap = self.below_full_cap_pct(v, full)
                excess = np.where(full | new_empty, 0.0, np.maximum(self.soc_pct - cap, 0.0))
                self.soc_pct = self.soc_pct - excess
                self.soc_std_pct = _clip_pct(self.soc_std_pct + excess)
            self.soc_pct = np.where(full, full_soc, np.where(new_empty, blended, self.soc_pct))
            self.soc_std_pct = np.where(
                full,
                p.anchor_std_pct,
                np.where(new_empty, np.sqrt((1.0 - weight) * var_cc), self.soc_std_pct),
            )
            self.reference_soc_pct = np.where(
                full, full_soc, np.where(new_empty, cut_soc, self.reference_soc_pct)
            )
            self.reference_std_pct = np.where(
                full, p.anchor_std_pct, np.where(new_empty, cut_std, self.reference_std_pct)
            )
            self._has_reference = bool(np.any(full | new_empty))
            if np.any(full):
                self.full_anchored = full.copy()
            self._unconfirmed &= ~(full | new_empty)
            self.anchors += int(np.count_nonzero(first))
            self.last_anchor_s = self._last_s

    def load_state(self, data: Mapping[str, Any]) -> bool:
        """Take the SOC of a stored `to_dict()`; False (state unchanged) if the cell count differs.

        Only SOC and its uncertainty are taken: rest timers start again after a restart, and
        capacity and settings come from the current configuration.
        """
        soc = np.asarray(data.get("soc_pct", ()), dtype=np.float64)
        std = np.asarray(data.get("soc_std_pct", ()), dtype=np.float64)
        if soc.shape != (self.n_cells,) or std.shape != (self.n_cells,):
            return False
        if not (np.all(np.isfinite(soc)) and np.all(np.isfinite(std))):
            return False
        self.soc_pct = np.clip(soc, 0.0, 100.0)
        self.soc_std_pct = np.clip(np.abs(std), 0.0, 100.0)
        self._unconfirmed = np.ones(self.n_cells, dtype=np.bool_)
        return True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state (lists and floats), for the SQLite state store."""
        return {
            "kind": "coulomb_counter",
            "version": STATE_VERSION,
            "soc_pct": self.soc_pct.tolist(),
            "soc_std_pct": self.soc_std_pct.tolist(),
            "capacity_ah": self.capacity_ah.tolist(),
            "charge_v": self.charge_v,
            "discharge_cutoff_v": self.discharge_cutoff_v,
            "ocv": self.ocv.to_dict(),
            "params": asdict(self.params),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        if data.get("kind") != "coulomb_counter" or data.get("version") != STATE_VERSION:
            raise ValueError("not a coulomb counter state of this version")
        soc = list(data["soc_pct"])
        return cls(
            n_cells=len(soc),
            capacity_ah=data["capacity_ah"],
            ocv=OcvCurve.from_dict(data["ocv"]),
            charge_v=float(data["charge_v"]),
            discharge_cutoff_v=float(data["discharge_cutoff_v"]),
            params=_params_from_dict(CoulombParams, data["params"]),
            initial_soc_pct=soc,
            initial_std_pct=data["soc_std_pct"],
        )
