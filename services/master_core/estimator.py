"""The pack's state estimate as the service uses it: SOC per cell and pack, SOH, persistence.

Coulomb counting with OCV correction after rest and full/empty anchors is the primary SOC, as
in the field-proven BMSs; it is initialised from the rested OCV on a first start and from the
stored state after a restart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.master_core.estimation.soc import CoulombCounter
from services.master_core.estimation.soh import SohEstimator, SohParams
from services.master_core.pack import PackSnapshot
from shared.config import SystemConfig

STATE_VERSION = 1


class PackEstimator:
    def __init__(self, config: SystemConfig) -> None:
        self.counter = CoulombCounter.from_config(config)
        self.soh = SohEstimator(
            config.total_cells,
            SohParams(
                nominal_capacity_ah=config.cell_capacity_ah,
                nominal_resistance_ohm=(config.cell_resistance_mohm or 0.0) / 1000.0,
            ),
        )
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    @property
    def pack_soc_pct(self) -> float | None:
        """None until the estimator has started from a complete pack."""
        if not self._started:
            return None
        # the counter may run a little past either end; the published SOC is a percentage
        return float(np.clip(self.counter.pack_soc_pct, 0.0, 100.0))

    @property
    def soh_pct(self) -> float | None:
        """None until the estimator has started (a fresh estimator knows nothing yet)."""
        value = self.soh.pack_soh_pct
        if not self._started or not np.isfinite(value):
            return None
        return float(np.clip(value, 0.0, 100.0))

    @property
    def cell_soc_pct(self) -> NDArray[np.float64] | None:
        return self.counter.soc_pct if self._started else None

    def update(self, snap: PackSnapshot, current_a: float, dt_s: float, now_s: float) -> None:
        if not self._started:
            if not snap.complete:
                return  # wait for every module: a partial start would guess missing cells
            self.counter.start_from_rest(snap.cell_v)
            self._started = True
        cell_v = snap.cell_v if snap.complete else None
        self.counter.update(now_s, current_a, cell_v)
        self.soh.update(now_s, current_a, cell_v)
        # rested OCV points and full/empty anchors are the ends of a capacity measurement
        self.soh.add_reference(self.counter.reference_soc_pct, self.counter.reference_std_pct)

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "counter": self.counter.to_dict(),
            "soh_pct": self.soh_pct,
        }

    def restore(self, data: dict[str, Any]) -> None:
        if data.get("version") != STATE_VERSION or not self.counter.load_state(data["counter"]):
            raise ValueError("stored estimator state does not fit this configuration")
        if "soh" in data:
            soh = SohEstimator.from_dict(data["soh"])
            if soh.n_cells == self.soh.n_cells:
                self.soh = soh
        self._started = True
