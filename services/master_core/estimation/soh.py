"""State of health per cell: capacity, internal resistance, energy throughput, cycles.

Pure: time is passed in, nothing is read or written here. Conventions as in `soc`: current in A
positive = charging, cell voltages in V as a numpy array in series order (NaN = not measured).

Capacity: the charge counted between two SOC points that are known without counting (a rested
OCV on a steep part of the curve, or a full/empty anchor; `CoulombCounter.reference_soc_pct`)
divided by their SOC difference. Only spans of at least min_delta_soc_pct are used, each sample
weighted by its variance (SOC point uncertainty and current-sensor drift over the span).
Resistance: dV/dI per cell between consecutive samples when the current steps by more than
step_min_c_rate x capacity; within 0.1-1 s the OCV and RC voltages barely move, so this is R0.
A voltage offset cancels in dV, which makes the ±50 mV accuracy harmless here; the noise is
averaged over many steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.master_core.persisted import SohRecord

FloatArray = NDArray[np.float64]

STATE_VERSION = 1
_MAX_RESISTANCE_OHM = 1.0
"""A step giving more is a wiring or sensor fault (cells here have 0.5-50 mOhm)."""


@dataclass(frozen=True)
class SohParams:
    nominal_capacity_ah: float
    nominal_resistance_ohm: float = 0.0
    """R0 of a new cell; 0 = the first settled estimate becomes the reference."""
    charge_efficiency: float = 0.999
    """As in `CoulombParams`, so capacity and SOC count charge the same way."""
    min_delta_soc_pct: float = 30.0
    """Shortest SOC span for a capacity sample: with ±2-5 % SOC points a 30 % span gives
    7-25 % capacity error per sample (before weighting)."""
    max_sample_error_pct: float = 20.0
    """Capacity samples with a larger 1-sigma relative error are dropped."""
    current_error_a: float = 0.1
    """Current offset: adds current_error_a x time to the counted charge's uncertainty."""
    capacity_memory: float = 10.0
    """Capacity samples are averaged with a forgetting factor 1 - 1/memory (ageing is slow,
    but a replaced cell must show up within a few cycles)."""
    prior_std_pct: float = 0.0
    """1-sigma of the rated capacity as a prior; 0 = no prior. With it a capacity estimate is
    the weighted mean of the rated capacity and the samples. For SOC points of a generic OCV
    table (`GENERIC_SOH_PRIOR_STD_PCT`): their error is the table's, the same at every cycle,
    so it does not average out, and one sample must not carry SOH all the way."""
    step_min_c_rate: float = 0.2
    """Current step (x capacity) for a resistance sample: 20 A on 100 Ah, so 10 mV of voltage
    noise gives 0.5 mOhm per sample, averaged below."""
    step_max_dt_s: float = 1.0
    """Both samples of a step within this time: later, RC relaxation adds to dV."""
    resistance_samples: float = 50.0
    """Resistance is averaged over this many steps (plain mean first, then moving)."""
    max_gap_s: float = 5.0
    """Longer gaps between samples are not integrated (energy and charge unknown)."""


GENERIC_SOH_PRIOR_STD_PCT = 10.0
"""`SohParams.prior_std_pct` with a generic OCV table: cells are sold within a few % of their
rated capacity, so 10 % is a loose prior. The price: a pack whose cells truly lost 10 % reads
up to about 6 % high after one cycle on a generic table (rested OCV points 78 % apart, tested:
96 %), and converges as samples add up (capacity_memory)."""


class SohEstimator:
    """Capacity, R0, energy and cycle count per cell (energy and cycles for the string)."""

    def __init__(self, n_cells: int, params: SohParams) -> None:
        if n_cells < 1:
            raise ValueError("n_cells must be at least 1")
        if params.nominal_capacity_ah <= 0.0:
            raise ValueError("nominal_capacity_ah must be positive")
        self.n_cells = n_cells
        self.params = params
        # Weighted capacity average: sum(w x C) and sum(w), w = 1 / var.
        self._cap_num = np.zeros(n_cells)
        self._cap_den = np.zeros(n_cells)
        self._pack_soh_cache: tuple[tuple[FloatArray, FloatArray, SohParams], float] | None = None
        self.capacity_samples = np.zeros(n_cells, dtype=np.int64)
        self._r_mean = np.full(n_cells, np.nan)
        self.resistance_samples = np.zeros(n_cells, dtype=np.int64)
        self._r_ref = np.full(
            n_cells, params.nominal_resistance_ohm if params.nominal_resistance_ohm > 0 else np.nan
        )
        self.charge_in_ah = 0.0
        self.charge_out_ah = 0.0
        self.energy_in_wh = 0.0
        self.energy_out_wh = 0.0
        self.equivalent_cycles = 0.0
        """Charge throughput / (2 x nominal capacity): one full charge plus discharge = 1. Counted
        as it goes, so that cycles already made keep the nominal capacity of their time."""
        self._counted_ah = 0.0
        """Net charge (with charge efficiency) since start: references are differences of it."""
        self._elapsed_s = 0.0
        self._ref_soc = np.full(n_cells, np.nan)
        self._ref_std = np.full(n_cells, np.nan)
        self._ref_ah = np.zeros(n_cells)
        self._ref_s = np.zeros(n_cells)
        self._last_s: float | None = None
        self._last_current_a = 0.0
        self._last_pack_v = math.nan
        self._last_cell_v: FloatArray | None = None

    # --- inputs -----------------------------------------------------------------------------

    def update(
        self,
        now_s: float,
        current_a: float,
        cell_v: ArrayLike | None = None,
        pack_v: float | None = None,
    ) -> None:
        """One sample. `pack_v` None: the sum of the cell voltages is used for energy."""
        p = self.params
        current = float(current_a) if math.isfinite(current_a) else 0.0
        v = None if cell_v is None else np.asarray(cell_v, dtype=np.float64)
        if v is not None and v.shape != (self.n_cells,):
            raise ValueError(f"expected {self.n_cells} cell voltages, got shape {v.shape}")
        if pack_v is None and v is not None and np.all(np.isfinite(v)):
            pack_v = float(np.sum(v))
        pack = math.nan if pack_v is None else float(pack_v)
        dt = 0.0 if self._last_s is None else now_s - self._last_s
        if 0.0 < dt <= p.max_gap_s:
            self._integrate(dt, current, pack)
            if v is not None and self._last_cell_v is not None and dt <= p.step_max_dt_s:
                self._resistance_step(current, v)
        if dt > 0.0:
            self._elapsed_s += dt
        self._last_s = now_s
        self._last_current_a = current
        self._last_pack_v = pack
        self._last_cell_v = v

    def add_reference(self, soc_pct: ArrayLike, std_pct: ArrayLike) -> int:
        """SOC points known without counting, at the time of the last `update` (NaN = none):
        call it after `update` of the same sample, e.g. with `CoulombCounter.reference_soc_pct`.

        Pairs each point with the previous one of that cell; returns the number of capacity
        samples taken. The point then replaces the previous one: the charge counted since an
        old point carries more current-offset drift.
        """
        p = self.params
        soc, std = _per_cell(soc_pct, self.n_cells), _per_cell(std_pct, self.n_cells)
        new = np.isfinite(soc) & np.isfinite(std)
        if not new.any():
            return 0
        d_soc = soc - self._ref_soc
        d_ah = self._counted_ah - self._ref_ah
        span_s = self._elapsed_s - self._ref_s
        with np.errstate(invalid="ignore", divide="ignore"):
            paired = new & np.isfinite(self._ref_soc) & (np.abs(d_soc) >= p.min_delta_soc_pct)
            # Same sign: the charge must have moved the way the SOC did.
            paired &= np.sign(d_soc) == np.sign(d_ah)
            capacity = d_ah / (d_soc / 100.0)
            rel_var = (std**2 + self._ref_std**2) / d_soc**2 + (
                p.current_error_a * span_s / 3600.0 / d_ah
            ) ** 2
            rel_err = np.sqrt(rel_var)
            ok = paired & (rel_err * 100.0 <= p.max_sample_error_pct)
            # Zeros where not ok: NaN x 0 would warn and nothing of it is kept.
            capacity = np.where(ok, capacity, 0.0)
            weight = np.where(ok, 1.0 / (rel_var * capacity**2), 0.0)
        taken = int(np.count_nonzero(ok))
        if taken:
            keep = 1.0 - 1.0 / p.capacity_memory
            self._cap_num = np.where(ok, keep * self._cap_num + weight * capacity, self._cap_num)
            self._cap_den = np.where(ok, keep * self._cap_den + weight, self._cap_den)
            self.capacity_samples = self.capacity_samples + ok
        self._ref_soc = np.where(new, soc, self._ref_soc)
        self._ref_std = np.where(new, std, self._ref_std)
        self._ref_ah = np.where(new, self._counted_ah, self._ref_ah)
        self._ref_s = np.where(new, self._elapsed_s, self._ref_s)
        return taken

    def _integrate(self, dt: float, current: float, pack_v: float) -> None:
        mean_a = 0.5 * (self._last_current_a + current)
        ah = mean_a * dt / 3600.0
        self.equivalent_cycles += abs(ah) / (2.0 * self.params.nominal_capacity_ah)
        if ah > 0.0:
            self.charge_in_ah += ah
            self._counted_ah += self.params.charge_efficiency * ah
        else:
            self.charge_out_ah -= ah
            self._counted_ah += ah
        volts = 0.5 * (self._last_pack_v + pack_v)
        if math.isfinite(volts):
            wh = volts * ah
            if wh > 0.0:
                self.energy_in_wh += wh
            else:
                self.energy_out_wh -= wh

    def _resistance_step(self, current: float, v: FloatArray) -> None:
        p = self.params
        assert self._last_cell_v is not None
        d_i = current - self._last_current_a
        if abs(d_i) < p.step_min_c_rate * p.nominal_capacity_ah:
            return
        r = (v - self._last_cell_v) / d_i
        # Negative samples are noise and stay in: dropping them would bias the mean upwards.
        ok = np.isfinite(r) & (np.abs(r) < _MAX_RESISTANCE_OHM)
        n = self.resistance_samples + ok
        # Plain mean for the first samples, then a moving average over resistance_samples.
        alpha = np.where(ok, 1.0 / np.minimum(np.maximum(n, 1), p.resistance_samples), 0.0)
        mean = np.where(np.isnan(self._r_mean), r, self._r_mean)
        self._r_mean = np.where(ok, mean + alpha * (r - mean), self._r_mean)
        self.resistance_samples = n
        settled = (n >= p.resistance_samples) & np.isnan(self._r_ref)
        self._r_ref = np.where(settled, self._r_mean, self._r_ref)

    # --- outputs ----------------------------------------------------------------------------

    @property
    def _prior_weight(self) -> float:
        sigma_ah = self.params.prior_std_pct / 100.0 * self.params.nominal_capacity_ah
        return 1.0 / sigma_ah**2 if sigma_ah > 0.0 else 0.0

    @property
    def capacity_ah(self) -> FloatArray:
        """Estimated capacity per cell (samples and the rated capacity as prior, weighted by
        their variance); NaN until a sample was taken."""
        w0 = self._prior_weight
        num = self._cap_num + w0 * self.params.nominal_capacity_ah
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._cap_den > 0.0, num / (self._cap_den + w0), np.nan)

    @property
    def capacity_std_ah(self) -> FloatArray:
        """1-sigma of the capacity estimate (from the weights); NaN when unknown."""
        with np.errstate(divide="ignore"):
            return np.where(
                self._cap_den > 0.0, 1.0 / np.sqrt(self._cap_den + self._prior_weight), np.nan
            )

    @property
    def soh_pct(self) -> FloatArray:
        """Capacity / nominal x 100 per cell; NaN until measured."""
        return 100.0 * self.capacity_ah / self.params.nominal_capacity_ah

    @property
    def pack_soh_pct(self) -> float:
        """The weakest measured cell, robustly: a series string holds no more than its smallest
        cell, but the smallest of several noisy estimates is lower than the truth.

        `robust_pack_soh_pct` of the measured cells and their uncertainties; NaN until a cell is
        measured."""
        # the capacities change only where their sums are replaced (a capacity sample, a
        # restore): the value is kept for the arrays and parameters it was worked out from
        key = (self._cap_num, self._cap_den, self.params)
        cached = self._pack_soh_cache
        if cached is not None and all(a is b for a, b in zip(cached[0], key, strict=True)):
            return cached[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            std = 100.0 * self.capacity_std_ah / self.params.nominal_capacity_ah
        value = robust_pack_soh_pct(self.soh_pct, std)
        self._pack_soh_cache = (key, value)
        return value

    @property
    def resistance_ohm(self) -> FloatArray:
        """R0 per cell from current steps; NaN until a step was seen."""
        return self._r_mean.copy()

    @property
    def resistance_growth_pct(self) -> FloatArray:
        """R0 increase over the reference (nominal, or the first settled estimate), in %."""
        growth: FloatArray = 100.0 * (self._r_mean / self._r_ref - 1.0)
        return growth

    # --- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state. SOC reference points are not stored: the charge moved while
        the service was down is unknown, so a restart starts a new capacity span."""
        return {
            "kind": "soh",
            "version": STATE_VERSION,
            "params": asdict(self.params),
            "capacity_num": self._cap_num.tolist(),
            "capacity_den": self._cap_den.tolist(),
            "capacity_samples": self.capacity_samples.tolist(),
            "resistance_ohm": _nan_to_none(self._r_mean),
            "resistance_ref_ohm": _nan_to_none(self._r_ref),
            "resistance_samples": self.resistance_samples.tolist(),
            "charge_in_ah": self.charge_in_ah,
            "charge_out_ah": self.charge_out_ah,
            "energy_in_wh": self.energy_in_wh,
            "energy_out_wh": self.energy_out_wh,
            "equivalent_cycles": self.equivalent_cycles,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        if data.get("kind") != "soh" or data.get("version") != STATE_VERSION:
            raise ValueError("not a SOH state of this version")
        names = {f.name for f in fields(SohParams)}
        params = SohParams(**{k: float(v) for k, v in data["params"].items() if k in names})
        n = len(data["capacity_num"])
        soh = cls(n, params)
        soh._cap_num = _array(data["capacity_num"], n)
        soh._cap_den = _array(data["capacity_den"], n)
        soh.capacity_samples = np.asarray(data["capacity_samples"], dtype=np.int64)
        soh._r_mean = _array(data["resistance_ohm"], n)
        soh._r_ref = _array(data["resistance_ref_ohm"], n)
        soh.resistance_samples = np.asarray(data["resistance_samples"], dtype=np.int64)
        soh.charge_in_ah = float(data["charge_in_ah"])
        soh.charge_out_ah = float(data["charge_out_ah"])
        soh.energy_in_wh = float(data["energy_in_wh"])
        soh.energy_out_wh = float(data["energy_out_wh"])
        soh.equivalent_cycles = float(data["equivalent_cycles"])
        return soh

    def health_record(self) -> SohRecord:
        """The capacity and resistance estimates, for the master's state store."""
        return SohRecord(
            nominal_capacity_ah=self.params.nominal_capacity_ah,
            capacity_num=self._cap_num.tolist(),
            capacity_den=self._cap_den.tolist(),
            capacity_samples=self.capacity_samples.tolist(),
            resistance_ohm=_nan_to_none(self._r_mean),
            resistance_ref_ohm=_nan_to_none(self._r_ref),
            resistance_samples=self.resistance_samples.tolist(),
        )

    def load_health(self, record: SohRecord) -> None:
        """Take stored estimates (a record that fits: same cells). A datasheet resistance in
        the settings stays the reference; otherwise the stored settled estimate is."""
        n = self.n_cells
        self._cap_num = _array(record.capacity_num, n)
        self._cap_den = _array(record.capacity_den, n)
        self.capacity_samples = np.asarray(record.capacity_samples, dtype=np.int64)
        self._r_mean = _array(record.resistance_ohm, n)
        if not self.params.nominal_resistance_ohm > 0:
            self._r_ref = _array(record.resistance_ref_ohm, n)
        self.resistance_samples = np.asarray(record.resistance_samples, dtype=np.int64)


def _per_cell(values: ArrayLike, n_cells: int) -> FloatArray:
    """`values` as one float per cell (a scalar is broadcast, read-only)."""
    out = np.asarray(values, dtype=np.float64)
    if out.shape != (n_cells,):
        out = np.broadcast_to(out, (n_cells,))
    return out


def robust_pack_soh_pct(cell_soh_pct: ArrayLike, cell_std_pct: ArrayLike) -> float:
    """The smallest cell SOH after shrinking each estimate toward the median of all measured
    cells by its own uncertainty (empirical Bayes): x_i' = m + (x_i - m) t2 / (t2 + s_i2), with m
    the median and t2 the spread of the cells beyond their noise (variance of the estimates
    minus their mean noise variance, at least 0). A cell measured well keeps its value; a noisy
    outlier moves toward the pack. The result lies between the raw minimum and the median.
    NaN cells (not measured) are left out; NaN if none is measured."""
    soh = np.asarray(cell_soh_pct, dtype=np.float64)
    std = np.broadcast_to(np.asarray(cell_std_pct, dtype=np.float64), soh.shape)
    known = np.isfinite(soh)
    x = soh[known]
    if x.size == 0:
        return math.nan
    if x.size == 1:
        return float(x[0])
    s2 = np.where(np.isfinite(std[known]), std[known], 0.0) ** 2
    median = float(np.median(x))
    t2 = max(float(np.var(x)) - float(np.mean(s2)), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = np.where(s2 > 0.0, t2 / (t2 + s2), 1.0)
    return float(np.min(median + (x - median) * keep))


def _nan_to_none(values: FloatArray) -> list[float | None]:
    # JSON has no NaN; None round-trips through json and SQLite.
    return [None if math.isnan(x) else float(x) for x in values.tolist()]


def _array(values: Any, n: int) -> FloatArray:
    out = np.array([math.nan if x is None else float(x) for x in values], dtype=np.float64)
    if out.shape != (n,):
        raise ValueError(f"expected {n} values per cell, got {out.shape[0]}")
    return out
