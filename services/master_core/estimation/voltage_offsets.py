"""Per-channel cell-voltage offsets learned at full anchors: subtracted from the voltages the
coulomb counter reads (OCV corrections after rest, full/empty anchors), never from protection.

Pure: no I/O, no clock. Here and not beside `sensor_offsets.ZeroOffsetLearner` because it reads
the counter's state (the SOC a full anchor set, its sigma, the OCV branch the hysteresis state
selects) and serves only the counter: an estimation concern, next to what it corrects.

## What is learned

At a full anchor (the end of the CV phase at the tail current, `CoulombCounter._anchors`) the
counter sets each cell it took to 100 %. When the pack then rests with little charge moved and
its voltages settle (`CoulombCounter.rest_settled`), each such cell's rested reading minus the
OCV at its counted SOC (the branch its hysteresis state selects) is

    residual_i = offset_i + table error + OCV(true SOC_i) - OCV(counted SOC_i)

The table's error is common to all cells (one chemistry, one table), and so is the part of the
SOC error all cells share (the CV end at a C/20 tail is below the table's 100 % for all). What a
channel's bias makes is its residual less the median over the cells taken: that per-channel part
is what is learned. The part of the SOC error a cell does not share with the others (capacities
that differ by a few %, so the cells stop 1-3 % apart) is indistinguishable from an offset in
one reading, and it persists across anchors. So a cell is taken only where that part is small
against the bound: its counted SOC's 1-sigma moves its OCV by at most `max_soc_spread_v`
(half the span of OCV(SOC +- sigma); `soc_spread_v`). On the shipped presets' tops (NMC,
LFP) with the anchor's 3 % sigma that is 23-24 mV: nothing is taken there; on a table whose
top is flatter, or with a tighter anchor, it is.

Field traces (bench/bench_soc_field.py, one full anchor per run, 60 h in): the NMC cells
anchored at 100 % (Mohtat2020, 10 degC) were truly at 94.8-97.9 %; fed regardless (no spread
gate) the learner takes up to 22 mV of "offset" on ideal sensors, and on the spec row
(+50/-30/+20/-50 mV) only the two positive channels (the others read too low to be anchored),
with +-34 mV against their true +-15 mV relative parts. On LFP the anchor takes one cell of
four (the aged one): no median. So with the default gate nothing is learned on these traces
and their figures are unchanged.
Nor would learning help these rows: with each channel's relative bias subtracted exactly from
the start (an oracle) the spec rows after the first anchor read NMC 2.43 / 2.53 % (rested /
restored; 1.52 / 1.76 % with the bias) and LFP 3.71 / 2.23 % (1.42 / 1.42 %); with the whole
bias subtracted they read as the ideal rows (NMC 3.16 %, LFP 2.02 / 2.38 %). The spec rows'
better figures are the bias cancelling the anchor's and the table's errors (the -30/-50 mV
channels stay out of the NMC full anchor, `estimator` docstring).

## Estimate

Per channel, the mean of the relative residuals of the anchors it was taken at, until
`anchors_averaged` of them; then an exponential average with weight 1 / `anchors_averaged`
(slow: one wrong rest moves it by a fraction). A channel's offset is `learned_v` once it has
been taken at `min_anchors` anchors (NaN before). What is subtracted (`correction_v`) is the
learned offset in steps of `resolution_v` (the AFE's 1 mV), clipped to +- `bound_v` (the
channel accuracy, `CoulombParams.voltage_error_v`); beyond `margin_factor` x the bound the
channel is out of its specification (or the learner was fed wrong): nothing is subtracted and
`beyond_bound` flags it, as for the zero offset.

It is stored (`persisted.CellOffsetsRecord`) and discarded when the layout or the chemistry
(its OCV table) changes: the channels would be other channels, or the residuals another
table's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

RESOLUTION_V = 0.001
"""The slaves report cell voltages in mV (`CellTelemetry.cell_mv`)."""


class _Ocv(Protocol):
    def voltage(self, soc_pct: ArrayLike) -> FloatArray: ...


def soc_spread_v(ocv: _Ocv, soc_pct: ArrayLike, std_pct: ArrayLike) -> FloatArray:
    """Half the OCV span of each cell's SOC +- its 1-sigma (clamped to 0-100 %): how far the
    counted SOC's uncertainty moves the OCV a residual is taken against."""
    soc = np.asarray(soc_pct, dtype=np.float64)
    std = np.abs(np.asarray(std_pct, dtype=np.float64))
    high = ocv.voltage(np.minimum(soc + std, 100.0))
    low = ocv.voltage(np.maximum(soc - std, 0.0))
    out: FloatArray = 0.5 * (high - low)
    return out


@dataclass(frozen=True)
class VoltageOffsetParams:
    bound_v: float = 0.05
    """Largest |offset| subtracted: the channel accuracy (±50 mV)."""
    margin_factor: float = 1.5
    """An estimate beyond this x bound_v is out of specification: nothing is subtracted."""
    max_soc_spread_v: float = 0.010
    """A cell is taken only where its counted SOC's sigma moves its OCV by at most this
    (`soc_spread_v`): the SOC error a cell does not share with the others would be learned
    as an offset."""
    max_moved_pct: float = 2.0
    """The anchor's SOC holds for the rest only if little charge moved in between (% SOC)."""
    min_cells: int = 3
    """Cells taken at one anchor for a median to mean anything."""
    min_anchors: int = 2
    """Anchors a channel must have been taken at before its offset is learned."""
    anchors_averaged: int = 4
    """The estimate is the mean over this many anchors, then an exponential average."""
    resolution_v: float = RESOLUTION_V

    def __post_init__(self) -> None:
        for name in ("bound_v", "margin_factor", "max_soc_spread_v", "resolution_v"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} {value!r} must be positive")
        if not (math.isfinite(self.max_moved_pct) and self.max_moved_pct >= 0.0):
            raise ValueError(f"max_moved_pct {self.max_moved_pct!r} must not be negative")
        if self.margin_factor < 1.0:
            raise ValueError(f"margin_factor {self.margin_factor!r} must be at least 1")
        if self.min_cells < 2:
            raise ValueError(f"min_cells {self.min_cells!r} must be at least 2")
        if not 1 <= self.min_anchors <= self.anchors_averaged:
            raise ValueError(f"min_anchors {self.min_anchors!r} must be within 1..anchors_averaged")


class VoltageOffsetLearner:
    """Per-channel voltage offsets (module docstring); positive = the channel reads high.

    The caller says when a full anchor took cells (`full_anchor`), how much SOC each cell moved
    since (`count`), and, at a settled rest, what the cells read and what the OCV at their
    counted SOC is (`settled_rest`)."""

    def __init__(self, n_cells: int, params: VoltageOffsetParams | None = None) -> None:
        if n_cells < 1:
            raise ValueError("n_cells must be at least 1")
        self.n_cells = n_cells
        self.params = params or VoltageOffsetParams()
        self._mean_v: FloatArray = np.zeros(n_cells)
        self.anchors: NDArray[np.int64] = np.zeros(n_cells, dtype=np.int64)
        """Anchors each channel was taken at (capped at anchors_averaged)."""
        self._armed: BoolArray = np.zeros(n_cells, dtype=np.bool_)
        """Cells the last full anchor took, whose rest has not been read yet."""
        self._moved_pct: FloatArray = np.zeros(n_cells)
        self.taken = 0
        """Rests after a full anchor the learner took (for counters and tests)."""
        self._correction_v: FloatArray = self._make_correction()
        """`correction_v`, recomputed when the estimate changes: the service reads it on every
        sample (at up to 50 Hz), the estimate changes at most once per full charge."""

    def full_anchor(self, cells: ArrayLike) -> None:
        """A full anchor holds for `cells` (a mask): their SOC is the anchor's from here."""
        mask = np.asarray(cells, dtype=np.bool_)
        if mask.shape != (self.n_cells,):
            raise ValueError(f"expected {self.n_cells} cells, got shape {mask.shape}")
        self._armed = self._armed | mask
        self._moved_pct = np.where(mask, 0.0, self._moved_pct)

    def count(self, moved_pct: ArrayLike) -> None:
        """SOC each cell moved (signed, %): a cell that moved too far since its anchor no
        longer knows its SOC from it."""
        if not self._armed.any():
            return
        moved = np.abs(np.asarray(moved_pct, dtype=np.float64))
        self._moved_pct = self._moved_pct + np.where(np.isfinite(moved), moved, math.inf)
        self._armed &= self._moved_pct <= self.params.max_moved_pct

    def settled_rest(self, rested_v: ArrayLike, expected_v: ArrayLike, spread_v: ArrayLike) -> bool:
        """One settled rest: the raw rested readings (the applied correction added back), the
        OCV at each cell's counted SOC and its spread (`soc_spread_v`). Takes the armed cells
        whose spread is small enough if there are `min_cells`; the anchor is used up either
        way. True when taken."""
        p = self.params
        armed = self._armed
        self._armed = np.zeros(self.n_cells, dtype=np.bool_)
        if not armed.any():
            return False
        residual = np.asarray(rested_v, dtype=np.float64) - np.asarray(expected_v, float)
        spread = np.asarray(spread_v, dtype=np.float64)
        if residual.shape != (self.n_cells,) or spread.shape != (self.n_cells,):
            raise ValueError(f"expected {self.n_cells} cells")
        with np.errstate(invalid="ignore"):
            use = armed & np.isfinite(residual) & (spread <= p.max_soc_spread_v)
        if np.count_nonzero(use) < p.min_cells:
            return False
        relative = residual - float(np.median(residual[use]))
        self.anchors = np.where(use, np.minimum(self.anchors + 1, p.anchors_averaged), self.anchors)
        weight = np.where(use, 1.0 / np.maximum(self.anchors, 1), 0.0)
        self._mean_v = self._mean_v + weight * (np.where(use, relative, 0.0) - self._mean_v)
        self.taken += 1
        self._correction_v = self._make_correction()
        return True

    @property
    def armed(self) -> bool:
        """A full anchor's rest is awaited."""
        return bool(self._armed.any())

    @property
    def learned_v(self) -> FloatArray:
        """Each channel's learned offset; NaN until taken at `min_anchors` anchors."""
        out: FloatArray = np.where(self.anchors >= self.params.min_anchors, self._mean_v, np.nan)
        return out

    @property
    def beyond_bound(self) -> BoolArray:
        with np.errstate(invalid="ignore"):
            out: BoolArray = (
                np.abs(self.learned_v) > self.params.margin_factor * self.params.bound_v
            )
        return out

    @property
    def correction_v(self) -> FloatArray:
        """What to subtract from each channel's reading: the learned offset in steps of the
        resolution, clipped to the bound; 0 until learned and while beyond the margin. A
        read-only view: it is not to be changed in place."""
        return self._correction_v

    def _make_correction(self) -> FloatArray:
        p = self.params
        learned = self.learned_v
        known = np.isfinite(learned) & ~self.beyond_bound
        steps = np.round(np.where(known, learned, 0.0) / p.resolution_v) * p.resolution_v
        out: FloatArray = np.clip(steps, -p.bound_v, p.bound_v)
        out.flags.writeable = False
        return out

    @property
    def learned_count(self) -> int:
        return int(np.count_nonzero(np.isfinite(self.learned_v)))

    @property
    def max_abs_correction_v(self) -> float | None:
        """The largest |correction|; None until a channel is learned."""
        if self.learned_count == 0:
            return None
        return float(np.max(np.abs(self.correction_v)))

    def state(self) -> dict[str, Any]:
        return {"offset_v": self._mean_v.tolist(), "anchors": self.anchors.tolist()}

    def load_state(self, offset_v: ArrayLike, anchors: ArrayLike) -> None:
        """A stored estimate (`persisted.CellOffsetsRecord`); refuses what this learner could
        not have made."""
        mean = np.asarray(offset_v, dtype=np.float64)
        count = np.asarray(anchors, dtype=np.float64)
        if mean.shape != (self.n_cells,) or count.shape != (self.n_cells,):
            raise ValueError(f"cell offsets of {mean.shape} / {count.shape}, not {self.n_cells}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(count)) and np.all(count >= 0)):
            raise ValueError("cell offsets must be finite, their anchor counts non-negative")
        if np.any(count != np.round(count)):
            raise ValueError("anchor counts must be whole numbers")
        self.anchors = np.minimum(count.astype(np.int64), self.params.anchors_averaged)
        self._mean_v = np.where(self.anchors > 0, mean, 0.0)
        self._correction_v = self._make_correction()
