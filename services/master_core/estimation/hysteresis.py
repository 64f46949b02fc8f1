"""One-state OCV hysteresis per cell: the enhanced self-correcting cell model's hysteresis state
(Plett, Battery Management Systems Vol. 1, 2015, ch. 2; used for SOC estimation in Vol. 2).

The state h in [-1, 1] says which OCV branch a cell is on: +1 after a long charge (the charge
branch), -1 after a long discharge. It moves toward sign(i) at a rate proportional to the charge
moved:

    dh/dt = -|eta i gamma / Q| (h - sign(i))

(i positive charging, Q the capacity in A s). Over a step that moves the SOC by dSOC (in % of
Q, efficiency included) at one sign, the exact solution is

    h' = sign + (h - sign) exp(-gamma |dSOC| / 100)

so h stays within [-1, 1] and, at rest, keeps its value (the branch a cell rests on is the one
it was last driven to). 1 - exp(-gamma x) of the way is done after a share x of the capacity.
Pure numpy, no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.master_core.estimation.ocv import CellOcv, OcvBranches

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class HysteresisParams:
    gamma: float = 50.0
    """Plett's rate constant per share of capacity: 95 % of the way to the other branch after
    3 / gamma of the capacity, 6 % SOC at 50. LFP cells change branch within 5-10 % SOC after a
    direction change (Roscher and Sauer, J. Power Sources 196, 331-336, 2011)."""


def hysteresis_step(h: ArrayLike, moved_pct: ArrayLike, gamma: float) -> FloatArray:
    """h after moving `moved_pct` SOC (signed, per cell; positive charging) at one sign."""
    hh = np.asarray(h, dtype=np.float64)
    moved = np.asarray(moved_pct, dtype=np.float64)
    decay = np.exp(-gamma * np.abs(moved) / 100.0)
    target = np.sign(moved)
    # moved == 0: decay 1, h unchanged whatever the target
    out: FloatArray = np.clip(target + (hh - target) * decay, -1.0, 1.0)
    return out


class HysteresisOcv:
    """The hysteresis state of every cell and the OCV curves it selects.

    `count` takes the SOC each step moved (what the coulomb counter adds), `temperature_c` is
    set by the caller (NaN: unknown, the reference table), `curves` gives the per-cell OCV the
    corrections read against.
    """

    def __init__(
        self, branches: OcvBranches, n_cells: int, params: HysteresisParams | None = None
    ) -> None:
        if n_cells < 1:
            raise ValueError("n_cells must be at least 1")
        self.branches = branches
        self.params = params or HysteresisParams()
        if not self.params.gamma > 0.0:
            raise ValueError("gamma must be positive")
        self.h: FloatArray = np.zeros(n_cells)
        """0 at start: which branch a cell rests on is not known, so the middle, with the half
        gap as its error (`OcvBranches.curves`)."""
        self.temperature_c: FloatArray = np.full(n_cells, np.nan)

    def count(self, moved_pct: ArrayLike) -> None:
        self.h = hysteresis_step(self.h, moved_pct, self.params.gamma)

    def curves(self) -> CellOcv:
        return self.branches.curves(self.temperature_c, self.h)
