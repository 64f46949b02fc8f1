"""Series cells as a first-order equivalent circuit with a lumped thermal model per cell.

Per cell: OCV(SOC) from a table (linear interpolation), series resistance R0 and one RC pair
(R1, C1). Terminal voltage = OCV + I*R0 + V_RC with I positive when charging. Within a step
the cell current and the heat are held constant, and both the RC pair and the temperature are
advanced with their exact solution (exp(-dt/tau)), so any dt is stable and a long step equals
many short ones.

Limits of the model, on purpose:
* SOC is clamped to [0, 100] %: charge pushed past either end is discarded and the OCV stays at
  the table's end value. The protection has to act long before that; nothing becomes NaN.
* Self-discharge is a constant leak current per cell (its rate in % of capacity per month).
* Resistances do not depend on temperature or SOC, and cells exchange no heat with each other,
  only with their ambient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

import numpy as np
from numpy.typing import NDArray

from services.slave_agent.sim.balancing import (
    MAX_BALANCING_CURRENT_A,
    bleed_current_a,
    bleed_heat_w,
)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

SECONDS_PER_HOUR: Final = 3600.0
MONTH_S: Final = 365.25 * 86400.0 / 12.0
"""The month of `self_discharge_pct_per_month`: a twelfth of a Julian year."""

# LibreSolar bms-firmware app/src/bms_common.c (ocv_nmc / ocv_lfp vs soc_default), as shipped in
# shared/config/data/ocv_libresolar_bms_firmware.csv.
LIBRESOLAR_OCV_SOC_PCT: Final = tuple(float(s) for s in range(0, 101, 5))
NMC_OCV_V: Final = (
    2.800, 3.588, 3.684, 3.702, 3.726, 3.745, 3.764, 3.787, 3.803, 3.819, 3.838,
    3.858, 3.883, 3.924, 3.962, 3.993, 4.026, 4.056, 4.089, 4.135, 4.198,
)  # fmt: skip
LFP_OCV_V: Final = (
    2.833, 3.132, 3.177, 3.190, 3.213, 3.226, 3.240, 3.252, 3.262, 3.264, 3.265,
    3.268, 3.271, 3.275, 3.283, 3.296, 3.304, 3.308, 3.309, 3.314, 3.392,
)  # fmt: skip

_SPREAD_CLIP_SIGMA: Final = 3.0  # truncated normal draws: no negative capacity or resistance
_MAX_RELATIVE_SPREAD_PCT: Final = 100.0 / _SPREAD_CLIP_SIGMA / 1.01
_RNG_STREAM: Final = 0x63656C6C  # keeps this generator apart from the measurement's one


@dataclass(frozen=True)
class CellBankParams:
    """Parameters of a bank of series cells; the defaults suit a ~100 Ah NMC prismatic cell.

    Spreads are one standard deviation of a normal distribution truncated at 3 sigma, drawn
    once per cell from `seed`: relative (% of the value) for capacity and resistance (R0 and R1
    share one draw), absolute (% points) for initial SOC and self-discharge rate.
    """

    n_cells: int = 14
    capacity_ah: float = 100.0
    capacity_spread_pct: float = 1.5
    r0_ohm: float = 0.0008
    r1_ohm: float = 0.0004
    c1_f: float = 75_000.0
    resistance_spread_pct: float = 7.0
    initial_soc_pct: float = 50.0
    initial_soc_spread_pct: float = 1.5
    self_discharge_pct_per_month: float = 2.0
    self_discharge_spread_pct_per_month: float = 0.5
    heat_capacity_j_per_k: float = 2000.0
    heat_transfer_w_per_k: float = 0.5
    ambient_c: float = 25.0
    initial_temp_c: float | None = None
    """None starts every cell at `ambient_c`."""
    bleed_resistance_ohm: float = 33.0
    """Passive balancing resistor of each cell (33 ohm: 0.11-0.13 A at 3.6-4.2 V)."""
    ocv_soc_pct: Sequence[float] = LIBRESOLAR_OCV_SOC_PCT
    ocv_v: Sequence[float] = NMC_OCV_V
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ocv_soc_pct", tuple(float(s) for s in self.ocv_soc_pct))
        object.__setattr__(self, "ocv_v", tuple(float(v) for v in self.ocv_v))
        if self.n_cells < 1:
            raise ValueError(f"n_cells must be >= 1, got {self.n_cells}")
        positive = (
            "capacity_ah",
            "r1_ohm",
            "c1_f",
            "heat_capacity_j_per_k",
            "heat_transfer_w_per_k",
            "bleed_resistance_ohm",
        )
        for name in positive:
            _check(name, getattr(self, name), lo=0.0, lo_open=True)
        _check("r0_ohm", self.r0_ohm, lo=0.0)
        _check("capacity_spread_pct", self.capacity_spread_pct, lo=0.0, hi=_MAX_RELATIVE_SPREAD_PCT)
        _check(
            "resistance_spread_pct", self.resistance_spread_pct, lo=0.0, hi=_MAX_RELATIVE_SPREAD_PCT
        )
        _check("initial_soc_pct", self.initial_soc_pct, lo=0.0, hi=100.0)
        for name in (
            "initial_soc_spread_pct",
            "self_discharge_pct_per_month",
            "self_discharge_spread_pct_per_month",
        ):
            _check(name, getattr(self, name), lo=0.0)
        _check("ambient_c", self.ambient_c)
        if self.initial_temp_c is not None:
            _check("initial_temp_c", self.initial_temp_c)
        self._check_ocv_table()

    def _check_ocv_table(self) -> None:
        soc, volts = self.ocv_soc_pct, self.ocv_v
        if len(soc) != len(volts) or len(soc) < 2:
            raise ValueError("the OCV table needs at least two points and one voltage per SOC")
        if not all(math.isfinite(x) for x in (*soc, *volts)):
            raise ValueError("the OCV table must be finite")
        if soc[0] != 0.0 or soc[-1] != 100.0:
            raise ValueError(f"the OCV table must run from 0 to 100 % SOC, got {soc[0]}-{soc[-1]}")
        if any(b <= a for a, b in pairwise(soc)):
            raise ValueError("the OCV table's SOC must strictly increase")
        if any(b < a for a, b in pairwise(volts)):
            raise ValueError("the OCV table's voltage must not decrease with SOC")


def _check(
    name: str,
    value: float,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> None:
    ok = math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        bounds = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"{name} must be finite and in {bounds}, got {value!r}")


def _as_cell_array(name: str, value: float | FloatArray, n: int) -> FloatArray:
    out = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} must be finite")
    return out


class CellBank:
    """N cells in series sharing one string current, stepped by the caller's `dt_s`."""

    def __init__(self, params: CellBankParams | None = None) -> None:
        p = params if params is not None else CellBankParams()
        self.params = p
        n = p.n_cells
        self.n_cells = n
        rng = np.random.default_rng([_RNG_STREAM, p.seed])
        z = np.clip(rng.standard_normal((4, n)), -_SPREAD_CLIP_SIGMA, _SPREAD_CLIP_SIGMA)
        self._capacity_ah: FloatArray = p.capacity_ah * (1.0 + p.capacity_spread_pct / 100.0 * z[0])
        r_factor: FloatArray = 1.0 + p.resistance_spread_pct / 100.0 * z[1]
        self._r0: FloatArray = p.r0_ohm * r_factor
        self._r1: FloatArray = p.r1_ohm * r_factor
        self._c1 = np.full(n, p.c1_f)
        self._tau_s: FloatArray = self._r1 * self._c1
        soc0: FloatArray = np.clip(p.initial_soc_pct + p.initial_soc_spread_pct * z[2], 0.0, 100.0)
        sd_rate: FloatArray = np.maximum(
            p.self_discharge_pct_per_month + p.self_discharge_spread_pct_per_month * z[3], 0.0
        )
        self._sd_rate_pct_per_month: FloatArray = sd_rate
        self._sd_current_a: FloatArray = (
            self._capacity_ah * sd_rate / 100.0 / (MONTH_S / SECONDS_PER_HOUR)
        )
        self._ocv_soc = np.asarray(p.ocv_soc_pct, dtype=np.float64)
        self._ocv_table_v = np.asarray(p.ocv_v, dtype=np.float64)
        self._heat_capacity = p.heat_capacity_j_per_k
        self._h = p.heat_transfer_w_per_k

        self._q_ah: FloatArray = self._capacity_ah * soc0 / 100.0
        self._v_rc = np.zeros(n)
        self._i_cell = np.zeros(n)
        self._string_current_a = 0.0
        self._ambient_c = np.full(n, p.ambient_c)
        t0 = p.ambient_c if p.initial_temp_c is None else p.initial_temp_c
        self._temp_c = np.full(n, t0)
        self._bled_ah = np.zeros(n)
        self._transfer_ah = np.zeros(n)
        self._self_discharged_ah = np.zeros(n)
        self._heat_j = np.zeros(n)
        self._bleed_heat_j = np.zeros(n)
        self._elapsed_s = 0.0
        self._update_voltages()

    # -- per-cell parameters -------------------------------------------------------------

    @property
    def capacity_ah(self) -> FloatArray:
        return self._capacity_ah.copy()

    @property
    def r0_ohm(self) -> FloatArray:
        return self._r0.copy()

    @property
    def r1_ohm(self) -> FloatArray:
        return self._r1.copy()

    @property
    def c1_f(self) -> FloatArray:
        return self._c1.copy()

    @property
    def tau_s(self) -> FloatArray:
        """Time constant R1*C1 of each cell's RC pair."""
        return self._tau_s.copy()

    @property
    def thermal_tau_s(self) -> float:
        """Thermal time constant C/h of every cell."""
        return self._heat_capacity / self._h

    @property
    def self_discharge_pct_per_month(self) -> FloatArray:
        return self._sd_rate_pct_per_month.copy()

    # -- state ---------------------------------------------------------------------------

    @property
    def soc_pct(self) -> FloatArray:
        return np.clip(100.0 * self._q_ah / self._capacity_ah, 0.0, 100.0)

    @property
    def ocv_v(self) -> FloatArray:
        return self._ocv.copy()

    @property
    def terminal_v(self) -> FloatArray:
        """OCV + I*R0 + V_RC at the cell current of the last step (charging positive)."""
        return self._v_term.copy()

    @property
    def v_rc_v(self) -> FloatArray:
        """Voltage across each cell's RC pair."""
        return self._v_rc.copy()

    @property
    def cell_current_a(self) -> FloatArray:
        """Current through each cell in the last step: string plus balancing (charging +)."""
        return self._i_cell.copy()

    @property
    def current_a(self) -> float:
        """String current of the last step (charging positive)."""
        return self._string_current_a

    @property
    def temp_c(self) -> FloatArray:
        return self._temp_c.copy()

    @property
    def ambient_c(self) -> FloatArray:
        return self._ambient_c.copy()

    @property
    def elapsed_s(self) -> float:
        return self._elapsed_s

    # -- counters (cumulative since construction) -----------------------------------------

    @property
    def bled_ah(self) -> FloatArray:
        """Charge removed from each cell by its bleed resistor."""
        return self._bled_ah.copy()

    @property
    def transfer_ah(self) -> FloatArray:
        """Net charge fed into each cell by active balancing (negative: taken out)."""
        return self._transfer_ah.copy()

    @property
    def self_discharged_ah(self) -> FloatArray:
        return self._self_discharged_ah.copy()

    @property
    def heat_j(self) -> FloatArray:
        """Heat dissipated in each cell's thermal mass: I^2*R0, R1 losses and bleed heat."""
        return self._heat_j.copy()

    @property
    def bleed_heat_j(self) -> FloatArray:
        """The part of `heat_j` that the bleed resistor dissipated."""
        return self._bleed_heat_j.copy()

    # -- run-time changes ----------------------------------------------------------------

    def set_ambient_c(self, value: float | FloatArray) -> None:
        """Ambient temperature, for every cell (scalar) or per cell."""
        self._ambient_c = _as_cell_array("ambient_c", value, self.n_cells)

    def set_temp_c(self, value: float | FloatArray) -> None:
        """Force the cell temperatures (scenario set-up, fault injection)."""
        self._temp_c = _as_cell_array("temp_c", value, self.n_cells)

    def set_soc_pct(self, value: float | FloatArray) -> None:
        """Force the states of charge (clamped to 0-100 %); the RC pairs keep their voltage."""
        soc = np.clip(_as_cell_array("soc_pct", value, self.n_cells), 0.0, 100.0)
        self._q_ah = self._capacity_ah * soc / 100.0
        self._update_voltages()

    # -- dynamics ------------------------------------------------------------------------

    def step(
        self,
        dt_s: float,
        current_a: float,
        *,
        bleed: BoolArray | None = None,
        transfer_a: FloatArray | None = None,
    ) -> None:
        """Advance by `dt_s` with string current `current_a` (A, charging positive).

        `bleed` switches on the bleed resistor of the marked cells; its current is V/R at the
        terminal voltage at the start of the step (see `balancing.bleed_current_a`).
        `transfer_a` adds a per-cell balancing current (A, positive into the cell), e.g.
        `ActiveBalancer.transfer(...).current_a`; any magnitude at or above
        MAX_BALANCING_CURRENT_A is refused.
        """
        dt = float(dt_s)
        i_string = float(current_a)
        if not (math.isfinite(dt) and dt >= 0.0):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        if not math.isfinite(i_string):
            raise ValueError(f"current_a must be finite, got {current_a!r}")
        n = self.n_cells
        i_cell = np.full(n, i_string)
        i_bleed: FloatArray | None = None
        p_bleed: FloatArray | None = None
        if bleed is not None:
            mask = np.asarray(bleed, dtype=np.bool_)
            if mask.shape != (n,):
                raise ValueError(f"bleed must have one entry per cell ({n})")
            if mask.any():
                i_bleed = bleed_current_a(self._v_term, mask, self.params.bleed_resistance_ohm)
                p_bleed = bleed_heat_w(self._v_term, i_bleed)
                i_cell -= i_bleed
        transfer: FloatArray | None = None
        if transfer_a is not None:
            transfer = np.asarray(transfer_a, dtype=np.float64)
            if transfer.shape != (n,) or not np.all(np.isfinite(transfer)):
                raise ValueError(f"transfer_a must be {n} finite currents")
            if np.any(np.abs(transfer) >= MAX_BALANCING_CURRENT_A):
                raise ValueError(
                    f"transfer_a reaches the {MAX_BALANCING_CURRENT_A} A balancing limit"
                )
            i_cell += transfer
        self._i_cell = i_cell
        self._string_current_a = i_string
        if dt > 0.0:
            self._advance(dt, i_cell, i_bleed, p_bleed, transfer)
        self._update_voltages()

    def _advance(
        self,
        dt: float,
        i_cell: FloatArray,
        i_bleed: FloatArray | None,
        p_bleed: FloatArray | None,
        transfer: FloatArray | None,
    ) -> None:
        tau = self._tau_s
        one_minus_a = -np.expm1(-dt / tau)
        a = 1.0 - one_minus_a
        v_ss = i_cell * self._r1
        d0 = self._v_rc - v_ss
        self._v_rc = v_ss + d0 * a
        # Exact energy in R1 over the step: integral of v_rc(t)^2 / R1.
        e_r1 = (
            v_ss * v_ss * dt
            + 2.0 * v_ss * d0 * tau * one_minus_a
            + d0 * d0 * (0.5 * tau) * one_minus_a * (1.0 + a)
        ) / self._r1
        heat_j = i_cell * i_cell * self._r0 * dt + e_r1
        if p_bleed is not None:
            bleed_j = p_bleed * dt
            heat_j += bleed_j
            self._bleed_heat_j += bleed_j
        self._heat_j += heat_j

        to_ah = dt / SECONDS_PER_HOUR
        sd_ah = self._sd_current_a * to_ah
        self._self_discharged_ah += sd_ah
        if i_bleed is not None:
            self._bled_ah += i_bleed * to_ah
        if transfer is not None:
            self._transfer_ah += transfer * to_ah
        self._q_ah = np.clip(self._q_ah + i_cell * to_ah - sd_ah, 0.0, self._capacity_ah)

        t_inf = self._ambient_c + heat_j / (dt * self._h)
        decay = math.exp(-dt * self._h / self._heat_capacity)
        self._temp_c = t_inf + (self._temp_c - t_inf) * decay
        self._elapsed_s += dt

    def _update_voltages(self) -> None:
        self._ocv = np.interp(self.soc_pct, self._ocv_soc, self._ocv_table_v)
        self._v_term = self._ocv + self._i_cell * self._r0 + self._v_rc
