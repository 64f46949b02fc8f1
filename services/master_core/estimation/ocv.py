"""OCV with charge and discharge branches, per temperature: per-cell curves for the corrections.

The configuration may give the OCV measured rested after charging (the charge branch) and after
discharging (the discharge branch), on one SOC grid, optionally at several temperatures
(`ChemistryPreset.ocv_charge_v`). The OCV of a cell then depends on its hysteresis state
h in [-1, 1] (`hysteresis.py`) and its temperature:

    OCV(SOC, h, T) = mid(SOC, T) + h x half_gap(SOC, T)
    mid = (charge + discharge) / 2,  half_gap = (charge - discharge) / 2

the one-state hysteresis model of Plett (Battery Management Systems Vol. 1, 2015, ch. 2, and
Vol. 2: OCV = OCV0 + M h) with M the half gap of the measured branches, i.e. an interpolation
between the branches. Between two table temperatures the branches are interpolated linearly;
outside the range the nearest table is used (no extrapolation); an unknown temperature (NaN)
takes the block the single curve belongs to (nearest 25 degC).

Each cell then has its own curve (h and T differ per cell): `CellOcv` holds them as an
(n_cells, n_points) array on the shared SOC grid. Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shared.config.chemistry import ChemistryPreset

FloatArray = NDArray[np.float64]

# As soc.py: np.interp-style inverse lookups need strictly rising voltages on a plateau.
_FLAT_RAMP_V = 1e-9


class OcvBranches:
    """Charge and discharge OCV branches on one SOC grid, one block per temperature."""

    def __init__(
        self,
        soc_pct: Sequence[float],
        charge_v: Sequence[Sequence[float]],
        discharge_v: Sequence[Sequence[float]],
        temperatures_c: Sequence[float] = (),
        capacity_pct: Sequence[float] = (),
        reference_block: int = 0,
        table_error_v: Sequence[float] | None = None,
    ) -> None:
        soc = np.asarray(soc_pct, dtype=np.float64)
        up = np.atleast_2d(np.asarray(charge_v, dtype=np.float64))
        down = np.atleast_2d(np.asarray(discharge_v, dtype=np.float64))
        if soc.ndim != 1 or len(soc) < 2 or soc[0] != 0.0 or soc[-1] != 100.0:
            raise ValueError("the OCV branches need a SOC grid from 0 % to 100 %")
        if np.any(np.diff(soc) <= 0.0):
            raise ValueError("the OCV branches' SOC must rise strictly")
        if up.shape != down.shape or up.shape[1] != len(soc):
            raise ValueError("each branch block needs one voltage per SOC point")
        if not (np.all(np.isfinite(up)) and np.all(np.isfinite(down))):
            raise ValueError("OCV branch voltages must be finite")
        if np.any(np.diff(up, axis=1) < 0.0) or np.any(np.diff(down, axis=1) < 0.0):
            raise ValueError("OCV branches must not fall with SOC")
        if np.any(up < down):
            raise ValueError("the charge branch must not lie below the discharge branch")
        temps = np.asarray(temperatures_c, dtype=np.float64)
        blocks = up.shape[0]
        if len(temps) not in (0, blocks) or (len(temps) == 0 and blocks != 1):
            raise ValueError("one temperature per branch block (or one block without)")
        if np.any(np.diff(temps) <= 0.0):
            raise ValueError("branch temperatures must rise strictly")
        cap = np.asarray(capacity_pct, dtype=np.float64)
        if len(cap) not in (0, len(temps)) or np.any(cap <= 0.0):
            raise ValueError("one positive capacity per branch temperature (or none)")
        if not 0 <= reference_block < blocks:
            raise ValueError("the reference block must be one of the blocks")
        error = np.zeros_like(soc) if table_error_v is None else np.asarray(table_error_v, float)
        if error.shape != soc.shape or not np.all(np.isfinite(error)) or np.any(error < 0.0):
            raise ValueError("the OCV table error needs one finite, non-negative value per point")
        self.soc_pct: FloatArray = soc
        self.charge_v: FloatArray = up
        self.discharge_v: FloatArray = down
        self.temperatures_c: FloatArray = temps
        self.capacity_pct: FloatArray = cap
        self.reference_block = reference_block
        self.table_error_v: FloatArray = error

    @classmethod
    def from_preset(
        cls, preset: ChemistryPreset, table_error_v: Sequence[float] | None = None
    ) -> Self | None:
        """The preset's branches (ocv_charge_v, ocv_discharge_v, per ocv_temperatures_c, with
        capacity_temperature_pct); None when it has a single curve only (no hysteresis known)."""
        blocks = preset.ocv_blocks
        if blocks == 0:
            return None
        n = len(preset.ocv_table_soc_pct)
        up = np.reshape(preset.ocv_charge_v, (blocks, n))
        down = np.reshape(preset.ocv_discharge_v, (blocks, n))
        return cls(
            preset.ocv_table_soc_pct,
            up.tolist(),
            down.tolist(),
            preset.ocv_temperatures_c,
            preset.capacity_temperature_pct,
            preset.ocv_reference_block,
            table_error_v,
        )

    def _position(self, temp_c: FloatArray) -> tuple[NDArray[np.int64], FloatArray]:
        """Lower block index and weight of the next block per cell (clamped, NaN: reference)."""
        n = len(temp_c)
        if len(self.temperatures_c) < 2:
            return np.full(n, self.reference_block, dtype=np.int64), np.zeros(n)
        index = np.arange(len(self.temperatures_c), dtype=np.float64)
        known = np.isfinite(temp_c)
        pos = np.where(
            known,
            np.interp(np.where(known, temp_c, 0.0), self.temperatures_c, index),
            float(self.reference_block),
        )
        low = np.minimum(np.floor(pos).astype(np.int64), len(index) - 2)
        return low, pos - low

    def branches_at(self, temp_c: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """(charge, discharge) per cell at its temperature, each (n_cells, n_points)."""
        t = np.atleast_1d(np.asarray(temp_c, dtype=np.float64))
        low, w = self._position(t)
        if len(self.temperatures_c) < 2:
            return self.charge_v[low], self.discharge_v[low]
        high = low + 1
        w2 = w[:, None]
        up = (1.0 - w2) * self.charge_v[low] + w2 * self.charge_v[high]
        down = (1.0 - w2) * self.discharge_v[low] + w2 * self.discharge_v[high]
        return up, down

    def curves(self, temp_c: ArrayLike, h: ArrayLike) -> CellOcv:
        """Each cell's OCV curve at its temperature and hysteresis state h (clipped to +-1)."""
        hh = np.clip(np.atleast_1d(np.asarray(h, dtype=np.float64)), -1.0, 1.0)
        up, down = self.branches_at(np.broadcast_to(temp_c, hh.shape))
        mid = 0.5 * (up + down)
        half = 0.5 * (up - down)
        volts = mid + hh[:, None] * half
        # Where h is between the branches the model knows the OCV less well: the distance to
        # the farther branch (0 on a saturated branch, the half gap at h = 0) counts as 1 sigma.
        unsure = (1.0 - np.abs(hh))[:, None] * half
        return CellOcv(self.soc_pct, volts, np.sqrt(unsure**2 + self.table_error_v**2))

    def capacity_factor(self, temp_c: ArrayLike) -> FloatArray:
        """Usable capacity per cell as a share of the rated one at its temperature (1 where the
        table gives none; an unknown temperature takes the reference block's)."""
        t = np.atleast_1d(np.asarray(temp_c, dtype=np.float64))
        if len(self.capacity_pct) == 0:
            return np.ones_like(t)
        low, w = self._position(t)
        cap = self.capacity_pct
        if len(cap) < 2:
            return np.full_like(t, cap[0] / 100.0)
        out: FloatArray = ((1.0 - w) * cap[low] + w * cap[low + 1]) / 100.0
        return out


class CellOcv:
    """One OCV curve per cell on a shared SOC grid: lookup, inverse and SOC spread, vectorised
    over cells. The same contract as `soc.OcvCurve`, with one curve per row."""

    def __init__(self, soc_pct: FloatArray, ocv_v: FloatArray, error_v: FloatArray) -> None:
        self.soc_pct = soc_pct
        self.ocv_v = ocv_v
        """(n_cells, n_points), non-decreasing along each row."""
        self.error_v = np.broadcast_to(error_v, ocv_v.shape)
        """1-sigma error of each row's curve per point (table error and hysteresis state)."""
        self._v_inverse = ocv_v + _FLAT_RAMP_V * np.arange(ocv_v.shape[1])

    def voltage(self, soc_pct: ArrayLike) -> FloatArray:
        """Each cell's OCV at its SOC."""
        return _on_grid(np.asarray(soc_pct, dtype=np.float64), self.soc_pct, self.ocv_v)

    def soc(self, ocv_v: ArrayLike) -> FloatArray:
        """Each cell's SOC in % for its rested voltage (inverse, clamped to 0-100 %)."""
        v = np.asarray(ocv_v, dtype=np.float64)
        table = self._v_inverse
        m = table.shape[1]
        # segment per row: the last point at or below v, kept inside [0, m - 2]
        seg = np.clip(np.count_nonzero(table <= v[:, None], axis=1) - 1, 0, m - 2)
        rows = np.arange(table.shape[0])
        v0, v1 = table[rows, seg], table[rows, seg + 1]
        s0, s1 = self.soc_pct[seg], self.soc_pct[seg + 1]
        frac = np.clip((v - v0) / (v1 - v0), 0.0, 1.0)
        out: FloatArray = s0 + frac * (s1 - s0)
        return out

    def soc_spread_pct(self, ocv_v: ArrayLike, error_v: float) -> FloatArray:
        """Half the SOC span a reading +- `error_v` is compatible with, the curve's own error at
        that reading added (root sum of squares); as `OcvCurve.soc_spread_pct`."""
        v = np.asarray(ocv_v, dtype=np.float64)
        own = _on_grid(self.soc(v), self.soc_pct, self.error_v)
        error = np.sqrt(error_v**2 + own**2)
        return 0.5 * (self.soc(v + error) - self.soc(v - error))


def _on_grid(x: FloatArray, grid: FloatArray, rows: FloatArray) -> FloatArray:
    """Row i of `rows` interpolated at x[i] on the shared, rising `grid` (clamped)."""
    m = len(grid)
    xc = np.clip(x, grid[0], grid[-1])
    seg = np.clip(np.searchsorted(grid, xc, side="right") - 1, 0, m - 2)
    r = np.arange(rows.shape[0])
    g0, g1 = grid[seg], grid[seg + 1]
    frac = (xc - g0) / (g1 - g0)
    out: FloatArray = rows[r, seg] + frac * (rows[r, seg + 1] - rows[r, seg])
    return out
