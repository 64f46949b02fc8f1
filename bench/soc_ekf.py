"""The 1RC extended Kalman filter that the service does not publish, kept as the comparison.

`EkfSoc` was the project's second SOC estimator. On the field scenarios (bench/bench_soc_field.py,
the shipped presets, sensors at the specification limit) the guarded coulomb counter of
services/master_core/estimation/soc.py beats it on every row, so the service publishes the counter
(the figures are in services/master_core/estimator.py) and the filter lives here, for
bench/bench_soc_accuracy.py and the field benchmark's side-by-side column.

`EkfPackEstimator` runs it on the service's path: the `PackEstimator` it extends supplies the
start from rest, the restored records, the full and empty anchors (which the filter takes, having
no end-of-charge model) and the SOH; the published pack SOC is `pack_soc_pct` of the filter's
cells with their sigmas, as for the counter. Where the configuration gives OCV branches, the
filter reads each cell against the branch its hysteresis state selects (Plett's one-state model,
`estimation/hysteresis.py`, driven by the counted current): `python bench/bench_soc_field.py
hysteresis` compares both on LFP with hysteresis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike

from services.master_core.estimation.ocv import CellOcv, _on_grid
from services.master_core.estimation.soc import (
    STATE_VERSION,
    FloatArray,
    OcvCurve,
    _cells,
    _clip_pct,
    _params_from_dict,
    _voltages,
    pack_soc_pct,
)
from services.master_core.estimator import EstimatorRecords, PackEstimator
from services.master_core.pack import PackSnapshot
from shared.config.system import SystemConfig

GENERIC_ECM: Mapping[str, tuple[float, float, float]] = {
    # (R0 ohm, R1 ohm, tau s) of a 100 Ah cell: the 1RC fits of the PyBaMM cells the accuracy
    # benchmark runs on (tests/master_core/data/pybamm_<chem>.json, Chen2020 5.15 Ah and
    # Prada2013 2.30 Ah at 25 degC), scaled as parallel groups. Other cells than the field
    # scenarios' (Mohtat2020 at 10 degC, Prada2013 at 35 degC): a preset's model, not these cells'.
    "NMC": (0.02491 * 5.1532 / 100.0, 0.02058 * 5.1532 / 100.0, 56.86),
    "LFP": (0.030073 * 2.30345 / 100.0, 0.002722 * 2.30345 / 100.0, 24.46),
}


@dataclass(frozen=True)
class EkfParams:
    """1RC cell model and noise settings of `EkfSoc` (defaults: ±50 mV, ±0.1 A hardware)."""

    r0_ohm: float
    r1_ohm: float
    c1_f: float
    charge_efficiency: float = 0.999
    voltage_error_v: float = 0.05
    """Measurement noise (1 sigma) of a cell voltage: sensor error plus 1RC model error."""
    current_noise_a: float = 0.1
    soc_walk_pct_per_sqrt_h: float = 0.5
    """Process noise of SOC beyond the current noise (current offset, capacity error)."""
    v_rc_walk_v_per_sqrt_s: float = 0.002
    """Process noise of V_rc: the 1RC model misses diffusion and temperature effects."""
    max_soc_error_pct: float = 10.0
    """No voltage update where the OCV slope at the estimate is below voltage_error_v / this
    (5 mV/% at ±50 mV, `min_ocv_slope_mv_per_pct`), unless the cell rests at a voltage whose
    ± voltage_error_v span is within ± this SOC (a reading on a knee still corrects an estimate
    stuck on a plateau). Without the cut the gain is small but not small enough: one update
    moves SOC by slope^2 x p11 / S of the way the reading points (8 % on the LFP plateau from a
    30 % uncertain start, tested), but 10 updates a second compound that, and a channel offset
    is the same in every sample: the estimate converges to offset / slope. Here that is at most
    10 % SOC; on the LFP plateau (0.2-2.4 mV/%) it would be 20-250 %."""
    rest_c_rate: float = 0.02
    """|I| below this (x capacity) is rest for the reading-side slope check. Under load the
    1RC model misses tens of mV of LFP overpotential, which would fake a knee."""
    max_gap_s: float = 5.0

    @property
    def min_ocv_slope_mv_per_pct(self) -> float:
        return 1000.0 * self.voltage_error_v / self.max_soc_error_pct


class EkfSoc:
    """Extended Kalman filter on a 1RC model, one independent 2-state filter per cell.

    State [SOC %, V_rc V]; terminal voltage = OCV(SOC) + V_rc + R0 x I (I positive charging),
    H = [dOCV/dSOC, 1]. The 2 x 2 covariance of every cell is kept as three arrays (p11, p12,
    p22), so one update is a few numpy operations for all cells. Cells on a flat part of the OCV
    curve (or with a NaN voltage) only count coulombs; `updated` and `gain_soc` show which cells
    used their voltage and with which gain.
    """

    def __init__(
        self,
        *,
        n_cells: int,
        capacity_ah: ArrayLike,
        ocv: OcvCurve,
        params: EkfParams,
        initial_soc_pct: ArrayLike = 50.0,
        initial_std_pct: ArrayLike = 30.0,
    ) -> None:
        if n_cells < 1:
            raise ValueError("n_cells must be at least 1")
        if min(params.r0_ohm, params.r1_ohm, params.c1_f) <= 0.0:
            raise ValueError("R0, R1 and C1 must be positive")
        self.n_cells = n_cells
        self.ocv = ocv
        self.params = params
        self.capacity_ah = _cells(capacity_ah, n_cells, "capacity_ah")
        if np.any(self.capacity_ah <= 0.0):
            raise ValueError("capacity_ah must be positive")
        self.soc_pct = np.clip(_cells(initial_soc_pct, n_cells, "initial_soc_pct"), 0.0, 100.0)
        self.curves: Callable[[], CellOcv] | None = None
        """Per-cell OCV curves of the hysteresis state (`HysteresisOcv.curves`: the branch each
        cell is on, at its temperature), read at every correction; None: the single `ocv`."""
        self.v_rc = np.zeros(n_cells)
        std = np.abs(_cells(initial_std_pct, n_cells, "initial_std_pct"))
        self.p11 = std**2
        self.p12 = np.zeros(n_cells)
        # V_rc is unknown at start: R1 x a 0.5C current as its sigma.
        self.p22 = np.full(n_cells, (params.r1_ohm * 0.5 * float(self.capacity_ah.min())) ** 2)
        self._last_s: float | None = None
        self._last_current_a = 0.0
        self.updated = np.zeros(n_cells, dtype=np.bool_)
        """Cells whose voltage was used in the last update (False on flat OCV or NaN)."""
        self.gain_soc = np.zeros(n_cells)
        """Kalman gain of SOC (% per V) in the last update; 0 where no update was made."""

    @classmethod
    def from_config(
        cls,
        config: SystemConfig,
        params: EkfParams,
        initial_soc_pct: ArrayLike = 50.0,
        initial_std_pct: ArrayLike = 30.0,
    ) -> Self:
        return cls(
            n_cells=config.total_cells,
            capacity_ah=config.cell_capacity_ah,
            ocv=OcvCurve.from_preset(config.cell_chemistry),
            params=params,
            initial_soc_pct=initial_soc_pct,
            initial_std_pct=initial_std_pct,
        )

    @property
    def soc_std_pct(self) -> FloatArray:
        """The filter's SOC sigma. It treats the voltage error as white noise, so a channel
        offset adds up to offset / slope that this does not show."""
        out: FloatArray = np.sqrt(np.maximum(self.p11, 0.0))
        return out

    @property
    def pack_soc_pct(self) -> float:
        return pack_soc_pct(self.soc_pct)

    def update(self, now_s: float, current_a: float, cell_v: ArrayLike | None) -> FloatArray:
        """Predict to `now_s` with the current, then correct with the cell voltages."""
        current = float(current_a) if math.isfinite(current_a) else 0.0
        dt = 0.0 if self._last_s is None else max(now_s - self._last_s, 0.0)
        self._predict(dt, current)
        self._last_s = now_s
        self._last_current_a = current
        v = _voltages(cell_v, self.n_cells)
        if v is None:
            self.updated = np.zeros(self.n_cells, dtype=np.bool_)
            self.gain_soc = np.zeros(self.n_cells)
        else:
            self._correct(current, v)
        return self.soc_pct

    def _predict(self, dt: float, current: float) -> None:
        p = self.params
        if dt <= 0.0:
            return
        a = math.exp(-dt / (p.r1_ohm * p.c1_f))
        as_pct = 100.0 / (3600.0 * self.capacity_ah)
        if dt <= p.max_gap_s:
            mean_a = 0.5 * (self._last_current_a + current)
            eff = p.charge_efficiency if mean_a > 0.0 else 1.0
            self.soc_pct = _clip_pct(self.soc_pct + eff * mean_a * dt * as_pct)
            self.v_rc = a * self.v_rc + p.r1_ohm * (1.0 - a) * mean_a
            q_soc = (p.current_noise_a * dt * as_pct) ** 2
            q_rc = (p.r1_ohm * (1.0 - a) * p.current_noise_a) ** 2
        else:
            # The current during the gap is unknown: count nothing, widen by what it could do.
            worst = max(abs(self._last_current_a), abs(current)) + p.current_noise_a
            self.v_rc = a * self.v_rc
            q_soc = (worst * dt * as_pct) ** 2
            q_rc = (p.r1_ohm * (1.0 - a) * worst) ** 2
        q_soc = q_soc + p.soc_walk_pct_per_sqrt_h**2 * dt / 3600.0
        q_rc = q_rc + p.v_rc_walk_v_per_sqrt_s**2 * dt
        # P = F P F' + Q with F = diag(1, a).
        # Capped at (100 %)^2: beyond that SOC is simply unknown (months without a voltage).
        self.p11 = np.minimum(self.p11 + q_soc, 1e4)
        self.p12 = a * self.p12
        self.p22 = a * a * self.p22 + q_rc

    def _model(self) -> tuple[OcvCurve | CellOcv, FloatArray, FloatArray, FloatArray]:
        """The OCV curve(s) now, and at the estimate: OCV, slope (V/%) and the curve's own
        1-sigma error (a generic table's, and where h lies between the branches, the distance
        to the farther one)."""
        soc = self.soc_pct
        if self.curves is None:
            ocv = self.ocv
            error = np.interp(soc, ocv.soc_pct, ocv.table_error_v)
            return ocv, ocv.voltage(soc), ocv.slope_v_per_pct(soc), error
        cells = self.curves()
        # slope over +-1 % (clamped at the ends): the table's segments are 2.5-5 % wide
        up, down = np.minimum(soc + 1.0, 100.0), np.maximum(soc - 1.0, 0.0)
        slope = (cells.voltage(up) - cells.voltage(down)) / np.maximum(up - down, 1e-9)
        return cells, cells.voltage(soc), slope, _on_grid(soc, cells.soc_pct, cells.error_v)

    def _correct(self, current: float, v: FloatArray) -> None:
        p = self.params
        ocv, ocv_v, slope, table_v = self._model()
        # A generic table's own error at the estimate adds to the sensor's (the counter's
        # `OcvCurve.soc_spread_pct` does the same): both are offsets, not white noise.
        r = p.voltage_error_v**2 + table_v**2
        finite = np.isfinite(v)
        ok = finite & (np.sqrt(r) <= p.max_soc_error_pct * np.abs(slope))
        if abs(current) < p.rest_c_rate * float(self.capacity_ah.min()):
            measured_ocv = np.where(finite, v, 0.0) - p.r0_ohm * current - self.v_rc
            spread = ocv.soc_spread_pct(measured_ocv, p.voltage_error_v)
            ok |= finite & (spread <= p.max_soc_error_pct)
        self.updated = ok
        if not np.any(ok):
            self.gain_soc = np.zeros(self.n_cells)
            return
        innovation = v - (ocv_v + self.v_rc + p.r0_ohm * current)
        # H = [slope, 1]: m = P H', S = H P H' + R, K = m / S, P -= K m'.
        m1 = slope * self.p11 + self.p12
        m2 = slope * self.p12 + self.p22
        s = slope * m1 + m2 + r
        k1 = m1 / s
        k2 = m2 / s
        if not ok.all():
            innovation = np.where(ok, innovation, 0.0)
            k1 = np.where(ok, k1, 0.0)
            k2 = np.where(ok, k2, 0.0)
        self.soc_pct = _clip_pct(self.soc_pct + k1 * innovation)
        self.v_rc = self.v_rc + k2 * innovation
        self.p11 = np.maximum(self.p11 - k1 * m1, 1e-6)
        self.p12 = self.p12 - k1 * m2
        self.p22 = np.maximum(self.p22 - k2 * m2, 1e-12)
        self.gain_soc = k1

    def anchor(self, soc_pct: ArrayLike, std_pct: ArrayLike, cells: ArrayLike) -> None:
        """Set `cells` (bool mask) to an independently known SOC with its 1-sigma (a full or
        empty anchor of `CoulombCounter`): the filter has no end-of-charge model of its own."""
        mask = np.asarray(cells, dtype=np.bool_)
        self.soc_pct = np.where(mask, np.asarray(soc_pct, dtype=np.float64), self.soc_pct)
        var = np.square(np.asarray(std_pct, dtype=np.float64))
        self.p11 = np.where(mask, np.maximum(var, 1e-6), self.p11)
        self.p12 = np.where(mask, 0.0, self.p12)

    def load_state(self, data: Mapping[str, Any]) -> bool:
        """Take the filter state of a stored `to_dict()`; False if the cell count differs.

        V_rc is taken too: it has decayed during a restart of seconds, and its variance covers
        the rest. Parameters and capacity come from the current configuration.
        """
        keys = ("soc_pct", "v_rc", "p11", "p12", "p22")
        arrays = {k: np.asarray(data.get(k, ()), dtype=np.float64) for k in keys}
        if any(a.shape != (self.n_cells,) or not np.all(np.isfinite(a)) for a in arrays.values()):
            return False
        self.soc_pct = np.clip(arrays["soc_pct"], 0.0, 100.0)
        self.v_rc = arrays["v_rc"]
        self.p11 = np.maximum(arrays["p11"], 1e-6)
        self.p12 = arrays["p12"]
        self.p22 = np.maximum(arrays["p22"], 1e-12)
        return True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state (lists and floats), for the SQLite state store."""
        return {
            "kind": "ekf_soc",
            "version": STATE_VERSION,
            "soc_pct": self.soc_pct.tolist(),
            "v_rc": self.v_rc.tolist(),
            "p11": self.p11.tolist(),
            "p12": self.p12.tolist(),
            "p22": self.p22.tolist(),
            "capacity_ah": self.capacity_ah.tolist(),
            "ocv": self.ocv.to_dict(),
            "params": asdict(self.params),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        if data.get("kind") != "ekf_soc" or data.get("version") != STATE_VERSION:
            raise ValueError("not an EKF SOC state of this version")
        ekf = cls(
            n_cells=len(data["soc_pct"]),
            capacity_ah=data["capacity_ah"],
            ocv=OcvCurve.from_dict(data["ocv"]),
            params=_params_from_dict(EkfParams, data["params"]),
        )
        if not ekf.load_state(data):
            raise ValueError("EKF state arrays are inconsistent")
        return ekf


class EkfPackEstimator(PackEstimator):
    """`PackEstimator` with `EkfSoc` cells instead of the counter's (`GENERIC_ECM`, scaled to
    the configured capacity; the counter runs alongside for the anchors and the SOH)."""

    def __init__(self, config: SystemConfig) -> None:
        super().__init__(config)
        r0, r1, tau_s = GENERIC_ECM[config.chemistry]
        scale = 100.0 / config.cell_capacity_ah
        self.ekf = EkfSoc(
            n_cells=config.total_cells,
            capacity_ah=config.cell_capacity_ah,
            ocv=self.counter.ocv,
            params=EkfParams(r0_ohm=r0 * scale, r1_ohm=r1 * scale, c1_f=tau_s / (r1 * scale)),
        )
        hysteresis = self.counter.hysteresis
        if hysteresis is not None:
            # Plett's one-state hysteresis, driven by the same counted current as the counter's
            # (`CoulombCounter.update`): an input of the filter, its unsureness between the
            # branches in the measurement noise (`OcvBranches.curves`)
            self.ekf.curves = hysteresis.curves
        self._ekf_started = False
        self._anchors_seen = 0

    @property
    def pack_soc_pct(self) -> float | None:
        if not self.started:
            return None
        value = pack_soc_pct(self.ekf.soc_pct, self.ekf.soc_std_pct)
        return value if math.isnan(value) else min(max(value, 0.0), 100.0)

    @property
    def pack_soc_std_pct(self) -> float | None:
        if not self.started:
            return None
        return float(np.clip(np.sqrt(np.mean(self.ekf.p11)), 0.0, 100.0))

    def update(
        self,
        snap: PackSnapshot,
        current_a: float | None,
        dt_s: float,
        now_s: float,
        *,
        string_open: bool = False,
    ) -> None:
        super().update(snap, current_a, dt_s, now_s, string_open=string_open)
        # the current the counter counted: less the learned zero offset, 0 with the string open
        counted_a = 0.0 if string_open or current_a is None else self.zero.corrected_a(current_a)
        if not self.started:
            return
        if not self._ekf_started:
            # the counter's start (rested OCV, or the restored record) is the filter's too
            self.ekf.soc_pct = self.counter.soc_pct.copy()
            self.ekf.p11 = np.maximum(np.square(self.counter.soc_std_pct), 1e-6)
            self._ekf_started = True
        self.ekf.update(now_s, counted_a, snap.cell_v if snap.complete else None)
        if self.counter.anchors != self._anchors_seen:
            self._anchors_seen = self.counter.anchors
            # the cells the counter anchored in this update carry its reference SOC
            hit = np.isfinite(self.counter.reference_soc_pct)
            self.ekf.anchor(self.counter.soc_pct, self.counter.soc_std_pct, hit)

    def restore(self, records: EstimatorRecords, wall_s: float | None = None) -> None:
        super().restore(records, wall_s)
        self._ekf_started = False
