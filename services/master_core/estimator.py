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
from services.master_core.pack import PackSnapshot
from shared.config import SystemConfig

STATE_VERSION = 1


class PackEstimator:
    def __init__(self, config: SystemConfig) -> None:
        self.counter = CoulombCounter.from_config(config)
        self._started = False
        self.soh_pct = 100.0

    @property
    def started(self) -> bool:
        return self._started

    @property
    def pack_soc_pct(self) -> float:
        return float(np.clip(self.counter.pack_soc_pct, 0.0, 100.0)) if self._started else 0.0

    @property
    def cell_soc_pct(self) -> NDArray[np.float64] | None:
        return self.counter.soc_pct if self._started else None

    def update(self, snap: PackSnapshot, current_a: float, dt_s: float, now_s: float) -> None:
        if not self._started:
            if not snap.complete:
                return  # wait for every module: a partial start would guess missing cells
            self.counter.start_from_rest(snap.cell_v)
            self._started = True
        self.counter.update(now_s, current_a, snap.cell_v if snap.complete else None)

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "counter": self.counter.to_dict(),
            "soh_pct": self.soh_pct,
        }

    def restore(self, data: dict[str, Any]) -> None:
        if data.get("version") != STATE_VERSION or not self.counter.load_state(data["counter"]):
            raise ValueError("stored estimator state does not fit this configuration")
        self.soh_pct = float(data.get("soh_pct", 100.0))
        self._started = True
