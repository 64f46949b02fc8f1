"""A rack of simulated slave modules stepped as one: every state is an (modules, cells) array.

`SimulatedRack` computes what `SimulatedModule` computes for each of its modules (same cell
physics, balancing, measurement chain and faults, same random streams per module), but in one
numpy pass for the whole rack instead of one Python pass per module: issue 19 measured the
per-module simulator at 49 % of a slave agent's CPU. `SimulatedModule` stays the reference;
tests/slave_agent/test_sim_rack.py checks that a rack reads as N independent modules.

How it maps the per-module model onto arrays:

* Cell physics (`CellBank.step`): one string current for the rack (series modules); bleed and
  active-balancing currents are (M, n) arrays, zero where a switch is off, so a module without
  balancing adds exact zeros and gives the same floats.
* Measurement noise: each module keeps the generator of its own `MeasurementChain`. A read
  draws, in this order, voltage noise (n), `noisy_channel` noise on cells (n, only with such a
  fault), temperature noise (m) and `noisy_channel` noise on sensors (m). Generator.normal(0,
  s) is s * standard_normal, and consecutive draws concatenate, so the rack draws standard
  normals per module in blocks and consumes them at the same offsets: the same numbers.
* Faults: each module keeps its `FaultSet`; the masks derived from it (open wire, stuck,
  extra noise) are cached as array rows and rebuilt when `FaultSet.version` changes. Drift
  offsets and temperature faults (which change every step) are recomputed per step for the
  modules that have them only.
* Readings: the first `read` after `advance` samples every module at once; a module's `read`
  is then a row of the precomputed arrays. A module read twice before the next `advance`
  gets a fresh sample of its own.

Differences from `SimulatedModule`, on purpose: a sample prepared for a module that is not read
before the next `advance` is dropped (its noise numbers are used up), and the thermal decay
factor is computed with numpy rather than `math.exp` (last-bit differences).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from services.slave_agent.sim.balancing import (
    BALANCING_CURRENT_LIMIT_A,
    ActiveBalancer,
)
from services.slave_agent.sim.cells import SECONDS_PER_HOUR, CellBank, CellBankParams
from services.slave_agent.sim.faults import (
    FaultSet,
    cell_voltage_offset_v,
    drive_temperatures,
    extra_noise_sigma,
    open_wire_readings,
    stuck_mask,
)
from services.slave_agent.sim.measurement import (
    ADC_FULL_SCALE_MV,
    CELL_VOLTAGE_MAX_MV,
    CELL_VOLTAGE_MIN_MV,
    TEMP_READING_MAX_C,
    TEMP_READING_MIN_C,
    MeasurementChain,
    MeasurementParams,
)
from services.slave_agent.sim.module import TRUE_VOLTAGE_MAX_V, Reading, Truth
from shared.config.limits import CELL_TEMPERATURE_MAX_C, CELL_TEMPERATURE_MIN_C
from shared.messages.slave import ChannelFlag

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
U8Array = NDArray[np.uint8]
_S = TypeVar("_S", bound=np.generic)

_NOISE_BLOCK_READS: Final = 64
"""Reads' worth of standard normals drawn per module at once (one generator call)."""
_OUT_OF_RANGE: Final = np.uint8(ChannelFlag.OUT_OF_RANGE)
_OPEN_WIRE: Final = np.uint8(ChannelFlag.OPEN_WIRE)


def _column(values: Sequence[float]) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


@dataclass
class _FaultRows:
    """What the rack last derived from one module's `FaultSet` (rebuilt on a version change)."""

    version: int
    drift: bool


class SimulatedRack:
    """M modules of n cells and m temperature sensors each, stepped and sampled as one.

    `cells[k]` and `measurement[k]` are the parameters of module row k; they must share the
    cell count and the OCV table (other parameters may differ per module). With
    `active_balancer` every module balances actively, as in `SimulatedModule`.
    """

    def __init__(
        self,
        cells: Sequence[CellBankParams],
        *,
        n_temp_sensors: int = 4,
        measurement: Sequence[MeasurementParams | None] | None = None,
        active_balancer: ActiveBalancer | None = None,
    ) -> None:
        if not cells:
            raise ValueError("a rack needs at least one module")
        meas = list(measurement) if measurement is not None else [None] * len(cells)
        if len(meas) != len(cells):
            raise ValueError("give one MeasurementParams (or None) per module")
        n = cells[0].n_cells
        table = (cells[0].ocv_soc_pct, cells[0].ocv_v)
        for p in cells:
            if p.n_cells != n or (p.ocv_soc_pct, p.ocv_v) != table:
                raise ValueError("the modules of a rack share their cell count and OCV table")
        self.n_modules = m_count = len(cells)
        self.n_cells = n
        self.n_temp_sensors = s = n_temp_sensors
        self.active_balancer = active_balancer
        # The per-module objects draw the parameters exactly as a `SimulatedModule` would;
        # the rack keeps their arrays (and the chains' generators) and drops the rest.
        banks = [CellBank(p) for p in cells]
        chains = [MeasurementChain(n, s, mp) for mp in meas]
        self.cell_params = tuple(cells)
        self.measurement_params = tuple(c.params for c in chains)
        self.faults = [FaultSet(n_cells=n, n_temp_sensors=s) for _ in cells]
        self._sensor_of_cell = chains[0].sensor_of_cell

        def stack(name: str) -> FloatArray:
            return np.stack([np.asarray(getattr(b, name), dtype=np.float64) for b in banks])

        self._capacity_ah = stack("_capacity_ah")
        self._r0 = stack("_r0")
        self._r1 = stack("_r1")
        self._tau_s = stack("_tau_s")
        self._sd_current_a = stack("_sd_current_a")
        self._q_ah = stack("_q_ah")
        self._temp_c = stack("_temp_c")
        self._ambient_c = stack("_ambient_c")
        self._heat_capacity = _column([p.heat_capacity_j_per_k for p in cells])
        self._h = _column([p.heat_transfer_w_per_k for p in cells])
        self._bleed_r = _column([p.bleed_resistance_ohm for p in cells])
        self._ocv_soc = np.asarray(table[0], dtype=np.float64)
        self._ocv_table_v = np.asarray(table[1], dtype=np.float64)
        shape = (m_count, n)
        self._v_rc = np.zeros(shape)
        self._i_cell = np.zeros(shape)
        self._bled_ah = np.zeros(shape)
        self._transfer_ah = np.zeros(shape)
        self._self_discharged_ah = np.zeros(shape)
        self._heat_j = np.zeros(shape)
        self._bleed_heat_j = np.zeros(shape)
        self._string_current_a = 0.0
        self._elapsed_s = 0.0
        self._balancing = np.zeros(shape, dtype=np.bool_)
        self._converter_heat_j = np.zeros(m_count)
        self._update_voltages()

        # Measurement chain, one row per module.
        mp = self.measurement_params
        self._v_offset = np.stack([c.voltage_offset_v for c in chains])
        self._t_offset = np.stack([c.temp_offset_c for c in chains]).reshape(m_count, s)
        self._v_sigma = _column([p.voltage_noise_sigma_v for p in mp])
        self._v_clip = _column([p.voltage_noise_clip_v for p in mp])
        self._t_sigma = _column([p.temp_noise_sigma_c for p in mp])
        self._t_clip = _column([p.temp_noise_clip_c for p in mp])
        self._t_step = _column([p.temp_resolution_c for p in mp])
        # `_clipped_normal` draws nothing when sigma or the clip is 0.
        self._draws_v = np.array([p.voltage_noise_sigma_v != 0 and p.voltage_noise_clip_v != 0
                                  for p in mp])  # fmt: skip
        self._draws_t = np.array([p.temp_noise_sigma_c != 0 and p.temp_noise_clip_c != 0
                                  for p in mp])  # fmt: skip
        # Each chain's generator continues here, after the offsets it drew.
        self._rngs = [c._rng for c in chains]
        self._all_draw_v = bool(self._draws_v.all())
        self._all_draw_t = bool(self._draws_t.all())
        self._noise_width = 2 * (n + s)
        self._noise_len = _NOISE_BLOCK_READS * self._noise_width
        self._noise = np.zeros((m_count, self._noise_len))
        self._noise_at = np.full(m_count, self._noise_len, dtype=np.int64)  # all used: refill
        groups = self._sensor_of_cell
        self._sensor_bins = (np.arange(m_count)[:, None] * s + groups[None, :]).ravel()
        self._cells_per_sensor = np.bincount(groups[groups >= 0], minlength=s).astype(np.float64)

        # Fault rows (see `_refresh_faults`).
        self._fault_rows = [_FaultRows(-1, False) for _ in cells]
        self._drift_v = np.zeros(shape)
        self._has_drift = np.zeros(m_count, dtype=np.bool_)
        self._cell_extra = np.zeros(shape)
        self._has_cell_extra = np.zeros(m_count, dtype=np.bool_)
        self._temp_extra = np.zeros((m_count, s))
        self._has_temp_extra = np.zeros(m_count, dtype=np.bool_)
        self._stuck_cell = np.zeros(shape, dtype=np.bool_)
        self._stuck_temp = np.zeros((m_count, s), dtype=np.bool_)
        self._open_cell = np.zeros(shape, dtype=np.bool_)
        self._open_mv = np.zeros(shape, dtype=np.int64)
        self._open_temp = np.zeros((m_count, s), dtype=np.bool_)
        self._open_t = np.zeros((m_count, s))
        self._any_open = False
        self._any_stuck = False

        # Readings: the prepared samples, and what each module last reported (stuck sensors).
        self._mv = np.zeros(shape, dtype=np.int64)
        self._cell_flags = np.zeros(shape, dtype=np.uint8)
        self._temp = np.zeros((m_count, s))
        self._temp_flags = np.zeros((m_count, s), dtype=np.uint8)
        self._prepared = np.zeros(m_count, dtype=np.bool_)
        self._sampled = False  # since the last step
        self._last_mv = np.zeros(shape, dtype=np.int64)
        self._last_temp = np.zeros((m_count, s))
        self._has_last = np.zeros(m_count, dtype=np.bool_)
        self._frozen_mv = np.zeros(shape, dtype=np.int64)
        self._frozen_mv_set = np.zeros(shape, dtype=np.bool_)
        self._frozen_temp = np.zeros((m_count, s))
        self._frozen_temp_set = np.zeros((m_count, s), dtype=np.bool_)

    # -- state (row k is module k of the rack) -------------------------------------------

    @property
    def capacity_ah(self) -> FloatArray:
        return self._capacity_ah.copy()

    @property
    def soc_pct(self) -> FloatArray:
        return _clip(100.0 * self._q_ah / self._capacity_ah, 0.0, 100.0)

    @property
    def terminal_v(self) -> FloatArray:
        return self._v_term.copy()

    @property
    def cell_current_a(self) -> FloatArray:
        return self._i_cell.copy()

    @property
    def temp_c(self) -> FloatArray:
        return self._temp_c.copy()

    @property
    def ambient_c(self) -> FloatArray:
        return self._ambient_c.copy()

    @property
    def transfer_ah(self) -> FloatArray:
        return self._transfer_ah.copy()

    @property
    def bled_ah(self) -> FloatArray:
        return self._bled_ah.copy()

    @property
    def heat_j(self) -> FloatArray:
        return self._heat_j.copy()

    @property
    def balancing(self) -> BoolArray:
        """Cells with balancing switched on during the last step."""
        return self._balancing.copy()

    @property
    def converter_heat_j(self) -> FloatArray:
        """Heat lost in each module's active balancer so far (J)."""
        return self._converter_heat_j.copy()

    @property
    def current_a(self) -> float:
        return self._string_current_a

    @property
    def elapsed_s(self) -> float:
        return self._elapsed_s

    def thermal_tau_s(self, row: int) -> float:
        return float(self._heat_capacity[row, 0] / self._h[row, 0])

    def set_ambient_c(self, row: int, value: float | FloatArray) -> None:
        """Ambient temperature of module `row`, for every cell (scalar) or per cell."""
        out = np.broadcast_to(np.asarray(value, dtype=np.float64), (self.n_cells,)).copy()
        if not np.all(np.isfinite(out)):
            raise ValueError("ambient_c must be finite")
        self._ambient_c[row] = out

    # -- dynamics ------------------------------------------------------------------------

    def advance(
        self,
        dt_s: float,
        current_a: float,
        balance_discharge: BoolArray | None = None,
        balance_charge: BoolArray | None = None,
    ) -> None:
        """Let `dt_s` pass with string current `current_a` (A, charging positive).

        The masks are (modules, cells): as `SimulatedModule.advance`, per row.
        """
        dt = float(dt_s)
        i_string = float(current_a)
        if not (math.isfinite(dt) and dt >= 0.0):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        if not math.isfinite(i_string):
            raise ValueError(f"current_a must be finite, got {current_a!r}")
        shape = self._v_term.shape
        discharge = self._mask("balance_discharge", balance_discharge)
        charge = self._mask("balance_charge", balance_charge)
        if np.any(discharge & charge):
            raise ValueError("a cell cannot be charged and discharged at once")
        i_cell: FloatArray = np.full(shape, i_string)
        i_bleed: FloatArray | None = None
        p_bleed: FloatArray | None = None
        transfer: FloatArray | None = None
        if self.active_balancer is None:
            # `bleed_current_a` and `bleed_heat_w` for every row at once.
            v = np.maximum(self._v_term, 0.0)
            current = np.minimum(v / self._bleed_r, BALANCING_CURRENT_LIMIT_A)
            i_bleed = np.where(discharge, current, 0.0)
            p_bleed = v * i_bleed
            i_cell -= i_bleed
            self._balancing = discharge
        else:
            transfer, loss_w = self._active_transfer(discharge, charge)
            i_cell += transfer
            self._converter_heat_j += loss_w * dt
            self._balancing = discharge | charge
        self._i_cell = i_cell
        self._string_current_a = i_string
        if dt > 0.0:
            self._advance(dt, i_cell, i_bleed, p_bleed, transfer)
        self._prepared[:] = False
        self._sampled = False
        self._fault_step(dt)
        self._update_voltages()

    def _mask(self, name: str, value: BoolArray | None) -> BoolArray:
        shape = self._v_term.shape
        if value is None:
            return np.zeros(shape, dtype=np.bool_)
        mask = np.array(value, dtype=np.bool_)
        if mask.shape != shape:
            raise ValueError(f"{name} must be a {shape} (modules, cells) mask")
        return mask

    def _active_transfer(
        self, discharge: BoolArray, charge: BoolArray
    ) -> tuple[FloatArray, FloatArray]:
        """`ActiveBalancer.transfer` for every row: net cell currents and converter losses."""
        bal = self.active_balancer
        assert bal is not None
        i_set, eta = bal.current_a, bal.efficiency
        has_donors: BoolArray = np.any(discharge, axis=1)
        has_receivers: BoolArray = np.any(charge, axis=1)
        idle = ~(has_donors | has_receivers)
        donors = discharge | ~has_donors[:, None]  # receivers only: the whole stack feeds
        receivers = charge | ~has_receivers[:, None]  # donors only: the whole stack receives
        n_donors = donors.sum(axis=1).astype(np.float64)
        n_receivers = receivers.sum(axis=1).astype(np.float64)
        i_feed = eta * n_donors * i_set / n_receivers
        over = i_feed > i_set
        i_take = np.where(over, n_receivers * i_set / (eta * n_donors), i_set)
        i_feed = np.where(over, i_set, i_feed)
        taken = np.where(donors & ~idle[:, None], i_take[:, None], 0.0)
        delivered = np.where(receivers & ~idle[:, None], i_feed[:, None], 0.0)
        loss_w = (1.0 - eta) * np.einsum("ij,ij->i", np.maximum(self._v_term, 0.0), taken)
        return delivered - taken, loss_w

    def _advance(
        self,
        dt: float,
        i_cell: FloatArray,
        i_bleed: FloatArray | None,
        p_bleed: FloatArray | None,
        transfer: FloatArray | None,
    ) -> None:
        # CellBank._advance, term for term, on (modules, cells) arrays.
        tau = self._tau_s
        one_minus_a = -np.expm1(-dt / tau)
        a = 1.0 - one_minus_a
        v_ss = i_cell * self._r1
        d0 = self._v_rc - v_ss
        self._v_rc = v_ss + d0 * a
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
        self._q_ah = _clip(self._q_ah + i_cell * to_ah - sd_ah, 0.0, self._capacity_ah)
        t_inf = self._ambient_c + heat_j / (dt * self._h)
        decay = np.exp(-dt * self._h / self._heat_capacity)
        self._temp_c = t_inf + (self._temp_c - t_inf) * decay
        self._elapsed_s += dt

    def _update_voltages(self) -> None:
        self._ocv = np.interp(self.soc_pct, self._ocv_soc, self._ocv_table_v)
        self._v_term = self._ocv + self._i_cell * self._r0 + self._v_rc

    # -- faults --------------------------------------------------------------------------

    def _fault_step(self, dt: float) -> None:
        """Temperature faults and fault ageing, for the modules that have faults."""
        for row, faults in enumerate(self.faults):
            if not faults:
                continue
            temps = drive_temperatures(self._temp_c[row], faults, self._sensor_of_cell, dt)
            if temps is not None:
                if not np.all(np.isfinite(temps)):
                    raise ValueError("temp_c must be finite")
                self._temp_c[row] = temps
            faults.tick(dt)

    def _refresh_faults(self) -> None:
        """Rebuild the mask rows of modules whose faults changed; drift offsets every time."""
        changed = False
        for row, faults in enumerate(self.faults):
            cached = self._fault_rows[row]
            if cached.version != faults.version:
                changed = True
                drift = faults.is_active("cell_drift")
                self._fault_rows[row] = cached = _FaultRows(faults.version, drift)
                self._fault_row(row, faults)
                self._has_drift[row] = drift
                if not drift:
                    self._drift_v[row] = 0.0
            if cached.drift:
                self._drift_v[row] = cell_voltage_offset_v(faults, self.n_cells)
        if changed:
            self._any_open = bool(self._open_cell.any() or self._open_temp.any())
            self._any_stuck = bool(self._stuck_cell.any() or self._stuck_temp.any())

    def _fault_row(self, row: int, faults: FaultSet) -> None:
        n, s = self.n_cells, self.n_temp_sensors
        cell_extra = extra_noise_sigma(faults, "cell", n)
        temp_extra = extra_noise_sigma(faults, "temp", s)
        self._has_cell_extra[row] = cell_extra is not None
        self._cell_extra[row] = 0.0 if cell_extra is None else cell_extra
        self._has_temp_extra[row] = temp_extra is not None
        self._temp_extra[row] = 0.0 if temp_extra is None else temp_extra
        self._stuck_cell[row] = stuck_mask(faults, "cell", n)
        self._stuck_temp[row] = stuck_mask(faults, "temp", s)
        open_cells, open_v = open_wire_readings(faults, "cell", n)
        open_temps, open_t = open_wire_readings(faults, "temp", s)
        self._open_cell[row] = open_cells
        self._open_mv[row] = np.clip(np.rint(open_v * 1000.0), 0, ADC_FULL_SCALE_MV)
        self._open_temp[row] = open_temps
        self._open_t[row] = np.clip(open_t, TEMP_READING_MIN_C, TEMP_READING_MAX_C)

    # -- outputs -------------------------------------------------------------------------

    def _true_cell_v(self) -> FloatArray:
        """Terminal voltages with the `cell_drift` offsets (clipped as `SimulatedModule`)."""
        self._refresh_faults()
        v = self._v_term
        if self._has_drift.any():
            drifted = np.clip(v + self._drift_v, 0.0, TRUE_VOLTAGE_MAX_V)
            v = np.where(self._has_drift[:, None], drifted, v)
        return v

    def sensor_temp_c(self) -> FloatArray:
        """True temperature at each sensor: the mean of its group of cells, (modules, m)."""
        m_count, s = self.n_modules, self.n_temp_sensors
        if s == 0:
            return np.zeros((m_count, 0))
        sums = np.bincount(self._sensor_bins, weights=self._temp_c.ravel(), minlength=m_count * s)
        return sums.reshape(m_count, s) / self._cells_per_sensor

    def truth(self, row: int) -> Truth:
        """The true state of module `row` (as `SimulatedModule.truth`)."""
        self._refresh_faults()
        cell_v = self._v_term[row]
        if self._has_drift[row]:
            cell_v = np.clip(cell_v + self._drift_v[row], 0.0, TRUE_VOLTAGE_MAX_V)
        temp = self._temp_c[row].copy()
        if self.n_temp_sensors == 0:
            sensor_t = np.zeros(0)
        else:
            sums = np.bincount(self._sensor_of_cell, weights=temp, minlength=self.n_temp_sensors)
            sensor_t = sums / self._cells_per_sensor
        return Truth(
            soc_pct=np.clip(100.0 * self._q_ah[row] / self._capacity_ah[row], 0.0, 100.0),
            cell_v=cell_v.copy(),
            ocv_v=self._ocv[row].copy(),
            temp_c=temp,
            sensor_temp_c=sensor_t,
            current_a=self._string_current_a,
        )

    def read(self, row: int) -> Reading:
        """Sample module `row` once (fresh noise): a row of the rack's prepared samples."""
        if not self._prepared[row]:
            # The first read after a step samples every module; a module read again before
            # the next step is sampled alone, so the others' noise streams stay in step.
            rows = np.arange(self.n_modules) if not self._sampled else np.array([row])
            self._sample(rows)
            self._sampled = True
        self._prepared[row] = False
        mv = self._mv[row].copy()
        temp = self._temp[row].copy()
        self._last_mv[row] = mv
        self._last_temp[row] = temp
        self._has_last[row] = True
        return Reading(
            cell_mv=mv,
            cell_flags=self._cell_flags[row].copy(),
            temp_c=temp,
            temp_flags=self._temp_flags[row].copy(),
            balancing=self._balancing[row].copy(),
        )

    def read_all(self) -> tuple[IntArray, U8Array, FloatArray, U8Array]:
        """Every module sampled once, as `read(row)` for each row in turn would sample them:
        (cell_mv, cell_flags, temp_c, temp_flags), each (modules, channels), the agent's
        per-tick read without a Python pass per module. Reading a row again before the next
        `advance` samples it afresh, as after a `read`."""
        if not self._sampled:
            self._sample(np.arange(self.n_modules))
            self._sampled = True
        else:
            # rows not read since the step are each sampled alone, in order, as `read` would
            for row in np.flatnonzero(~self._prepared):
                self._sample(np.array([row]))
        self._prepared[:] = False
        self._last_mv[:] = self._mv
        self._last_temp[:] = self._temp
        self._has_last[:] = True
        return self._mv.copy(), self._cell_flags.copy(), self._temp.copy(), self._temp_flags.copy()

    def _standard_normals(self, rows: NDArray[np.intp]) -> tuple[FloatArray, NDArray[np.int64]]:
        """The noise buffer and where each row's numbers for this sample start."""
        at = self._noise_at
        for row in rows[at[rows] + self._noise_width > self._noise_len]:
            rest = self._noise[row, at[row] :]
            fresh = self._rngs[row].standard_normal(self._noise_len - rest.size)
            self._noise[row] = np.concatenate([rest, fresh])
            at[row] = 0
        return self._noise, at[rows]

    def _sample(self, rows: NDArray[np.intp]) -> None:
        n, s = self.n_cells, self.n_temp_sensors
        # Every row (the usual case): slices are views, no fancy-index copies.
        sel: NDArray[np.intp] | slice = slice(None) if rows.size == self.n_modules else rows
        true_v = self._true_cell_v()[sel]
        sensor_t = self.sensor_temp_c()[sel]
        noise, start = self._standard_normals(rows)
        # Offsets of this sample's segments in each row's stream (see the module docstring).
        draws_v, extra_v = self._draws_v[sel], self._has_cell_extra[sel]
        draws_t, extra_t = self._draws_t[sel], self._has_temp_extra[sel]
        at_extra_v = start + n * draws_v
        at_t = at_extra_v + n * extra_v
        at_extra_t = at_t + s * draws_t
        used = at_extra_t + s * extra_t
        base = rows[:, None] * self._noise_len
        flat = noise.reshape(-1)

        def take(at: NDArray[np.int64], width: int) -> FloatArray:
            out: FloatArray = flat[base + at[:, None] + np.arange(width)]
            return out

        v_clip = self._v_clip[sel]
        noise_v = _clip(self._v_sigma[sel] * take(start, n), -v_clip, v_clip)
        if not self._all_draw_v:
            noise_v = np.where(draws_v[:, None], noise_v, 0.0)
        measured = true_v + self._v_offset[sel] + noise_v
        if extra_v.any():
            measured += take(at_extra_v, n) * self._cell_extra[sel]
        cell_mv = _clip(np.rint(measured * 1000.0), 0.0, ADC_FULL_SCALE_MV).astype(np.int64)

        t_clip = self._t_clip[sel]
        noise_t = _clip(self._t_sigma[sel] * take(at_t, s), -t_clip, t_clip)
        if not self._all_draw_t:
            noise_t = np.where(draws_t[:, None], noise_t, 0.0)
        measured_t = sensor_t + self._t_offset[sel] + noise_t
        if extra_t.any():
            measured_t += take(at_extra_t, s) * self._temp_extra[sel]
        step = self._t_step[sel]
        temp_c = _clip(
            np.round(np.rint(measured_t / step) * step, 6), TEMP_READING_MIN_C, TEMP_READING_MAX_C
        )
        self._noise_at[rows] = used

        if self._any_stuck:
            cell_mv = self._freeze(rows, cell_mv, self._stuck_cell, self._last_mv,
                                   self._frozen_mv, self._frozen_mv_set)  # fmt: skip
            temp_c = self._freeze(rows, temp_c, self._stuck_temp, self._last_temp,
                                  self._frozen_temp, self._frozen_temp_set)  # fmt: skip
        else:
            self._frozen_mv_set[sel] = False
            self._frozen_temp_set[sel] = False
        if self._any_open:
            open_cells, open_temps = self._open_cell[sel], self._open_temp[sel]
            cell_mv = np.where(open_cells, self._open_mv[sel], cell_mv)
            temp_c = np.where(open_temps, self._open_t[sel], temp_c)
            self._cell_flags[sel] = _cell_range(cell_mv) | open_cells.astype(np.uint8) * _OPEN_WIRE
            self._temp_flags[sel] = _temp_range(temp_c) | open_temps.astype(np.uint8) * _OPEN_WIRE
        else:
            self._cell_flags[sel] = _cell_range(cell_mv)
            self._temp_flags[sel] = _temp_range(temp_c)
        self._mv[sel] = cell_mv
        self._temp[sel] = temp_c
        self._prepared[rows] = True

    def _freeze(
        self,
        rows: NDArray[np.intp],
        fresh: NDArray[_S],
        stuck_all: BoolArray,
        last_all: NDArray[_S],
        frozen_all: NDArray[_S],
        frozen_set_all: BoolArray,
    ) -> NDArray[_S]:
        # A channel freezes at the last value its module reported (this sample's if none yet).
        stuck = stuck_all[rows]
        newly = stuck & ~frozen_set_all[rows]
        source = np.where(self._has_last[rows][:, None], last_all[rows], fresh)
        frozen = np.where(newly, source, frozen_all[rows])
        frozen_all[rows] = frozen
        frozen_set_all[rows] = stuck
        out: NDArray[_S] = np.where(stuck, frozen, fresh)
        return out


def _clip(x: FloatArray, lo: float | FloatArray, hi: float | FloatArray) -> FloatArray:
    # np.clip's Python wrapper costs more than the two ufuncs on these small arrays.
    out: FloatArray = np.minimum(np.maximum(x, lo), hi)
    return out


def _cell_range(cell_mv: IntArray) -> U8Array:
    """`measurement.cell_range_flags` on a (modules, cells) array."""
    out = (cell_mv < CELL_VOLTAGE_MIN_MV) | (cell_mv > CELL_VOLTAGE_MAX_MV)
    return out.astype(np.uint8) * _OUT_OF_RANGE


def _temp_range(temp_c: FloatArray) -> U8Array:
    out = (temp_c < CELL_TEMPERATURE_MIN_C) | (temp_c > CELL_TEMPERATURE_MAX_C)
    return out.astype(np.uint8) * _OUT_OF_RANGE


def _row(a: NDArray[_S], row: int) -> NDArray[_S]:
    out: NDArray[_S] = a[row].copy()
    return out


class RackBankView:
    """Read-only `CellBank`-like view of one module's cells in a rack."""

    def __init__(self, rack: SimulatedRack, row: int) -> None:
        self._rack, self._row = rack, row

    @property
    def capacity_ah(self) -> FloatArray:
        return _row(self._rack._capacity_ah, self._row)

    @property
    def soc_pct(self) -> FloatArray:
        soc: FloatArray = self._rack.soc_pct[self._row]
        return soc

    @property
    def terminal_v(self) -> FloatArray:
        return _row(self._rack._v_term, self._row)

    @property
    def cell_current_a(self) -> FloatArray:
        return _row(self._rack._i_cell, self._row)

    @property
    def temp_c(self) -> FloatArray:
        return _row(self._rack._temp_c, self._row)

    @property
    def transfer_ah(self) -> FloatArray:
        return _row(self._rack._transfer_ah, self._row)

    @property
    def bled_ah(self) -> FloatArray:
        return _row(self._rack._bled_ah, self._row)

    @property
    def heat_j(self) -> FloatArray:
        return _row(self._rack._heat_j, self._row)

    @property
    def thermal_tau_s(self) -> float:
        return self._rack.thermal_tau_s(self._row)

    @property
    def current_a(self) -> float:
        return self._rack.current_a


class RackModule:
    """One module of a `SimulatedRack` with the parts of the `SimulatedModule` interface that
    the driver, the plant and the fault tools use (the rack advances all modules at once)."""

    def __init__(self, rack: SimulatedRack, row: int) -> None:
        self.rack = rack
        self.row = row
        self.n_cells = rack.n_cells
        self.n_temp_sensors = rack.n_temp_sensors
        self.active_balancer = rack.active_balancer
        self.faults = rack.faults[row]
        self.bank = RackBankView(rack, row)

    @property
    def balancing(self) -> BoolArray:
        """Cells with balancing switched on during the last step."""
        return _row(self.rack._balancing, self.row)

    @property
    def ambient_c(self) -> FloatArray:
        return _row(self.rack._ambient_c, self.row)

    def set_ambient_c(self, value: float | FloatArray) -> None:
        self.rack.set_ambient_c(self.row, value)

    @property
    def converter_heat_j(self) -> float:
        return float(self.rack._converter_heat_j[self.row])

    def read(self) -> Reading:
        return self.rack.read(self.row)

    def truth(self) -> Truth:
        return self.rack.truth(self.row)
