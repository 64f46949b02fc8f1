"""Balancing physics: passive bleed resistors and an active DC/DC converter.

Both keep every cell's balancing current strictly below `MAX_BALANCING_CURRENT_A`:
a bleed resistor too small for the cell voltage is clamped to `BALANCING_CURRENT_LIMIT_A`
(it behaves like a current-limited sink), and an `ActiveBalancer` refuses a set-point at or
above the limit. The currents feed `CellBank.step` (`bleed=` mask, `transfer_a=` currents).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

MAX_BALANCING_CURRENT_A: Final = 0.5
"""Hardware limit per cell, exclusive (shared/config/limits.py BALANCING_CURRENT_MAX_MA)."""
BALANCING_CURRENT_LIMIT_A: Final = 0.499
"""The largest balancing current the simulated hardware ever draws from or feeds to a cell."""


def bleed_current_a(
    cell_v: FloatArray, mask: BoolArray, bleed_resistance_ohm: float | FloatArray
) -> FloatArray:
    """Current (A, >= 0) drawn by each cell's bleed resistor; 0 where `mask` is False.

    V/R, clamped to BALANCING_CURRENT_LIMIT_A; a cell at or below 0 V drives nothing.
    """
    current = np.minimum(np.maximum(cell_v, 0.0) / bleed_resistance_ohm, BALANCING_CURRENT_LIMIT_A)
    return np.where(mask, current, 0.0)


def bleed_heat_w(cell_v: FloatArray, current_a: FloatArray) -> FloatArray:
    """Power dissipated beside each cell by its bleed path (V*I, W)."""
    return np.maximum(cell_v, 0.0) * current_a


@dataclass(frozen=True)
class ActiveTransfer:
    """Per-cell currents of one active-balancing operating point."""

    taken_a: FloatArray
    """Current drawn out of each cell (A, >= 0)."""
    delivered_a: FloatArray
    """Current fed into each cell (A, >= 0)."""
    loss_w: float
    """Converter loss, dissipated on the module board rather than in the cells."""

    @property
    def current_a(self) -> FloatArray:
        """Net balancing current of each cell (A, positive into the cell)."""
        return self.delivered_a - self.taken_a


@dataclass(frozen=True)
class ActiveBalancer:
    """DC/DC balancer: moves charge from donor cells to receiver cells.

    Efficiency is by charge, as balancing strategies count Ah: sum(delivered) equals
    `efficiency` * sum(taken). Donors only (no receivers) feed the whole module stack
    (cell-to-module); receivers only draw from the whole stack (module-to-cell). The side with
    fewer cells runs at `current_a`, the other side at the current that the charge balance
    gives, which is never larger. The loss is booked as (1 - efficiency) of the donor power.
    """

    current_a: float = 0.4
    efficiency: float = 0.9

    def __post_init__(self) -> None:
        if not (math.isfinite(self.current_a) and 0.0 < self.current_a < MAX_BALANCING_CURRENT_A):
            raise ValueError(
                f"current_a must lie in (0, {MAX_BALANCING_CURRENT_A}) A, got {self.current_a!r}"
            )
        if not (math.isfinite(self.efficiency) and 0.0 < self.efficiency <= 1.0):
            raise ValueError(f"efficiency must lie in (0, 1], got {self.efficiency!r}")

    def transfer(
        self, cell_v: FloatArray, discharge: BoolArray, charge: BoolArray
    ) -> ActiveTransfer:
        """Currents for the given donor (`discharge`) and receiver (`charge`) masks."""
        n = cell_v.shape[0]
        if discharge.shape != (n,) or charge.shape != (n,):
            raise ValueError(f"discharge and charge must have one entry per cell ({n})")
        if np.any(discharge & charge):
            raise ValueError("a cell cannot be charged and discharged at once")
        donors, receivers = discharge, charge
        has_donors, has_receivers = bool(donors.any()), bool(receivers.any())
        if not (has_donors or has_receivers):
            zero = np.zeros(n)
            return ActiveTransfer(zero, zero.copy(), 0.0)
        if not has_receivers:
            receivers = np.ones(n, dtype=np.bool_)
        elif not has_donors:
            donors = np.ones(n, dtype=np.bool_)
        n_donors, n_receivers = int(donors.sum()), int(receivers.sum())
        eta = self.efficiency
        # Charge balance: n_donors * i_take * eta == n_receivers * i_feed.
        i_take, i_feed = self.current_a, eta * n_donors * self.current_a / n_receivers
        if i_feed > self.current_a:
            i_take, i_feed = n_receivers * self.current_a / (eta * n_donors), self.current_a
        taken = np.where(donors, i_take, 0.0)
        delivered = np.where(receivers, i_feed, 0.0)
        loss_w = (1.0 - eta) * float(np.dot(np.maximum(cell_v, 0.0), taken))
        return ActiveTransfer(taken, delivered, loss_w)
