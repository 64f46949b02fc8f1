"""SOC and SOH estimation per cell: pure, vectorised over cells, time passed in."""

from services.master_core.estimation.soc import (
    CoulombCounter,
    CoulombParams,
    OcvCurve,
    pack_soc_pct,
)
from services.master_core.estimation.soh import SohEstimator, SohParams

__all__ = [
    "CoulombCounter",
    "CoulombParams",
    "OcvCurve",
    "SohEstimator",
    "SohParams",
    "pack_soc_pct",
]
