"""Which cells to balance, and why balancing runs or not (pure: time is passed in).

Passive (bleed resistors, bms-practice §5.1: LibreSolar, Orion, JBD):
* only while charging or at rest (current above -rest_current_a; positive = charge), and not
  during the settle time after a discharge, while the cell voltages recover from the load;
* only when the highest cell is above the chemistry's balance_start_v: lower on the curve the
  OCV is too flat for voltages to tell the SOC apart;
* bleed the cells above the lowest cell + threshold_v, and keep bleeding a cell until it is
  within threshold_v / 2 of the lowest (hysteresis, so cells do not toggle on noise);
* never bleed a cell below min_cell_voltage_v.

Active (DC/DC charge transfer, §5.1: SOC-based, Xu et al. 2013): in charge, discharge and rest,
take charge from the cells above mean SOC + threshold and give it to those below mean -
threshold, with the same half-threshold hysteresis. The SOC threshold is threshold_v as a share
of the chemistry's voltage window (charge_v - discharge_cutoff_v), e.g. 20 mV on NMC's 1.0 V
window = 2 %. A cell below min_cell_voltage_v never gives charge; a cell at charge_v never
receives.

Both modes stop while any temperature is above max_temperature_c (resuming 5 °C below, as the
protection temperature levels do), on stale data, and with mode "off". Any blocked gate clears
the hysteresis, so a restart needs the full threshold again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from shared.config import SystemConfig
from shared.config.protection import TEMPERATURE_HYSTERESIS_C
from shared.messages import BalanceCommand

CellValues = Sequence[Sequence[float]] | Sequence[float] | NDArray[np.float64]
"""Per-module lists, or one flat series-order array (split by the configured topology)."""

BalancingCode = Literal[
    "balancing",
    "balanced",
    "mode_off",
    "stale_data",
    "too_hot",
    "discharging",
    "settling",
    "below_start_voltage",
    "cells_below_min",
    "no_soc",
]

COMMAND_TTL_S: Final = 3.0
"""Commands go out at 1 Hz: three periods ride over two lost messages, and balancing stops
within 3 s of the master going silent."""
REASON_MAX_CHARS: Final = 200  # BalanceCommand.reason


@dataclass(frozen=True)
class BalancingSettings:
    rest_current_a: float = 0.5
    """|I| below this counts as rest (foxBMS 0.2 A, LibreSolar 0.1 A; 0.5 A leaves room for
    the offset of a 200 A sensor). Passive balancing is refused below -rest_current_a."""
    settle_s: float = 30.0
    """Passive: wait this long after a discharge before comparing voltages."""
    temperature_hysteresis_c: float = TEMPERATURE_HYSTERESIS_C
    active_threshold_pct: float | None = None
    """Active: SOC threshold; None derives it from threshold_v (module docstring)."""

    def __post_init__(self) -> None:
        if not self.rest_current_a >= 0.0 or not self.settle_s >= 0.0:
            raise ValueError("rest_current_a and settle_s must not be negative")
        if not self.temperature_hysteresis_c >= 0.0:
            raise ValueError("temperature_hysteresis_c must not be negative")
        if self.active_threshold_pct is not None and not self.active_threshold_pct > 0.0:
            raise ValueError("active_threshold_pct must be positive")


class CellArrays(Protocol):
    """What `decide_pack` needs from the pack snapshot (NaN where unknown)."""

    @property
    def cell_v(self) -> NDArray[np.float64]: ...
    @property
    def temp_c(self) -> NDArray[np.float64]: ...


@dataclass(frozen=True)
class BalancingDecision:
    code: BalancingCode
    reason: str
    """In words, e.g. "imbalance 35 mV above threshold 20 mV: bleeding 3 cells"."""
    mode: Literal["passive", "active", "off"]
    discharge: tuple[tuple[bool, ...], ...]
    """Per module: bleed (passive) or take charge from (active) these cells."""
    charge: tuple[tuple[bool, ...], ...]
    """Per module: feed these cells (active only)."""
    spread_v: float | None = None
    soc_spread_pct: float | None = None
    decided_at_s: float = 0.0

    @property
    def running(self) -> bool:
        return any(any(m) for m in self.discharge) or any(any(m) for m in self.charge)

    def discharge_cells(self) -> tuple[int, ...]:
        """Series indices of the cells in `discharge`."""
        return _indices(self.discharge)

    def charge_cells(self) -> tuple[int, ...]:
        return _indices(self.charge)

    def commands(self, *, now_wall_s: float, ttl_s: float = COMMAND_TTL_S) -> list[BalanceCommand]:
        return balance_commands(self, now_wall_s=now_wall_s, ttl_s=ttl_s)


def balance_commands(
    decision: BalancingDecision, *, now_wall_s: float, ttl_s: float = COMMAND_TTL_S
) -> list[BalanceCommand]:
    """One command per module, all-off ones included so that balancing stops at once.

    `charge` is sent only in active mode; a passive slave refuses any charge request.
    """
    if not ttl_s > 0.0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    expires_at = now_wall_s + ttl_s
    reason = decision.reason[:REASON_MAX_CHARS]
    active = decision.mode == "active"
    return [
        BalanceCommand(
            module=module,
            expires_at=expires_at,
            discharge=list(discharge),
            charge=list(charge) if active else [],
            reason=reason,
        )
        for module, (discharge, charge) in enumerate(
            zip(decision.discharge, decision.charge, strict=True)
        )
    ]


def _indices(masks: tuple[tuple[bool, ...], ...]) -> tuple[int, ...]:
    flat = [b for module in masks for b in module]
    return tuple(i for i, b in enumerate(flat) if b)


def _count(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def _mv(volts: float) -> str:
    return f"{volts * 1000.0:.0f}"


def _flatten(values: CellValues, counts: Sequence[int], what: str) -> NDArray[np.float64]:
    total = sum(counts)
    if isinstance(values, np.ndarray):
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 2 and (
            arr.shape[0] != len(counts) or any(c != arr.shape[1] for c in counts)
        ):
            raise ValueError(f"{what}: shape {arr.shape} does not match modules {list(counts)}")
        arr = arr.reshape(-1)
    else:
        items = list(values)
        if items and all(isinstance(m, Sequence | np.ndarray) for m in items):
            modules = [np.asarray(m, dtype=np.float64).reshape(-1) for m in items]
            lengths = [len(m) for m in modules]
            if lengths != list(counts):
                raise ValueError(f"{what}: module sizes {lengths} differ from {list(counts)}")
            arr = np.concatenate(modules)
        else:
            arr = np.asarray(items, dtype=np.float64)
    if arr.shape != (total,):
        raise ValueError(f"{what}: {arr.size} values for {total} cells")
    return arr


def _all_values(values: CellValues | None) -> NDArray[np.float64]:
    if values is None:
        return np.zeros(0)
    if isinstance(values, np.ndarray):
        return np.asarray(values, dtype=np.float64).reshape(-1)
    items = list(values)
    if items and all(isinstance(m, Sequence | np.ndarray) for m in items):
        parts = [np.asarray(m, dtype=np.float64).reshape(-1) for m in items]
        return np.concatenate(parts) if parts else np.zeros(0)
    return np.asarray(items, dtype=np.float64)


class BalancingStrategy:
    """Balancing decisions for one system; keeps the hysteresis state between calls."""

    def __init__(self, config: SystemConfig, settings: BalancingSettings | None = None) -> None:
        self.config = config
        self.settings = settings if settings is not None else BalancingSettings()
        topo = config.topology
        self.counts = tuple(topo.cells_in_module(m) for m in range(topo.modules))
        self._offsets = np.cumsum((0, *self.counts))
        chem = config.cell_chemistry
        b = config.balancing
        self.mode = b.mode
        self.threshold_v = b.threshold_v
        self.min_cell_voltage_v = b.min_cell_voltage_v
        self.max_temperature_c = b.max_temperature_c
        self.start_v = chem.balance_start_v
        self.charge_v = chem.charge_v
        window_v = chem.charge_v - chem.discharge_cutoff_v
        self.threshold_pct = (
            self.settings.active_threshold_pct
            if self.settings.active_threshold_pct is not None
            else 100.0 * b.threshold_v / window_v
        )
        n = sum(self.counts)
        self._discharge = np.zeros(n, dtype=np.bool_)
        self._charge = np.zeros(n, dtype=np.bool_)
        self._hot = False
        self._last_discharge_s: float | None = None

    def decide_pack(
        self,
        snapshot: CellArrays,
        current_a: float,
        soc_pct: CellValues | None,
        now_s: float,
        *,
        stale: bool = False,
    ) -> BalancingDecision:
        """`decide` on a pack snapshot (flat cell voltages and temperatures)."""
        return self.decide(snapshot.cell_v, snapshot.temp_c, current_a, soc_pct, now_s, stale=stale)

    def decide(
        self,
        cell_v: CellValues,
        temps_c: CellValues | None,
        current_a: float,
        soc_pct: CellValues | None,
        now_s: float,
        *,
        stale: bool = False,
    ) -> BalancingDecision:
        """Masks per module and the reason. Current is positive while charging.

        NaN in a cell voltage (a stale module) means stale data; NaN temperatures are skipped,
        but at least one must be known. `soc_pct` (per cell) is used in active mode only.
        """
        v = _flatten(cell_v, self.counts, "cell_v")
        if self.mode == "off":
            return self._off("mode_off", "mode off", now_s)
        if stale or not np.all(np.isfinite(v)) or not math.isfinite(current_a):
            return self._off("stale_data", "stale data", now_s)
        temps = _all_values(temps_c)
        temps = temps[np.isfinite(temps)]
        if temps.size == 0:
            return self._off("stale_data", "stale data: no temperature reading", now_s)
        hot = self._too_hot(float(temps.max()))
        if hot is not None:
            return self._off("too_hot", hot, now_s)
        if self.mode == "active":
            return self._active(v, soc_pct, now_s)
        return self._passive(v, current_a, now_s)

    def _too_hot(self, t_max: float) -> str | None:
        limit = self.max_temperature_c
        resume = limit - self.settings.temperature_hysteresis_c
        if t_max > limit:
            self._hot = True
            return f"too hot: {t_max:.1f} °C above {limit:.1f} °C"
        if self._hot and t_max > resume:
            return f"too hot: {t_max:.1f} °C, resumes below {resume:.1f} °C"
        self._hot = False
        return None

    def _passive(self, v: NDArray[np.float64], current_a: float, now_s: float) -> BalancingDecision:
        s = self.settings
        if current_a < -s.rest_current_a:
            self._last_discharge_s = now_s
            return self._off("discharging", f"discharging ({-current_a:.1f} A)", now_s)
        if self._last_discharge_s is not None:
            waited = now_s - self._last_discharge_s
            if 0.0 <= waited < s.settle_s:
                text = f"settling after discharge ({waited:.0f} s of {s.settle_s:.0f} s)"
                return self._off("settling", text, now_s)
        v_min, v_max = float(v.min()), float(v.max())
        spread = v_max - v_min
        thr = self.threshold_v
        # Hysteresis on the start voltage too, so running balancing does not toggle at the knee.
        start = self.start_v - (thr / 2.0 if self._discharge.any() else 0.0)
        if v_max < start:
            text = f"below balance start voltage {start:.2f} V (highest cell {v_max:.3f} V)"
            return self._off("below_start_voltage", text, now_s, spread_v=spread)
        wanted = (v > v_min + thr) | (self._discharge & (v > v_min + thr / 2.0))
        bleed = wanted & (v >= self.min_cell_voltage_v)
        self._discharge = bleed
        self._charge[:] = False
        if bleed.any():
            bleeding = _count(int(bleed.sum()), "cell")
            if spread > thr:
                text = f"imbalance {_mv(spread)} mV above threshold {_mv(thr)} mV"
            else:
                text = f"imbalance {_mv(spread)} mV, finishing to {_mv(thr / 2.0)} mV"
            return self._decision(
                "balancing", f"{text}: bleeding {bleeding}", now_s, spread_v=spread
            )
        if wanted.any():
            text = (
                f"imbalance {_mv(spread)} mV, but the high cells are below the minimum "
                f"balancing voltage {self.min_cell_voltage_v:.2f} V"
            )
            return self._decision("cells_below_min", text, now_s, spread_v=spread)
        text = f"balanced: spread {_mv(spread)} mV within threshold {_mv(thr)} mV"
        return self._decision("balanced", text, now_s, spread_v=spread)

    def _active(
        self, v: NDArray[np.float64], soc_pct: CellValues | None, now_s: float
    ) -> BalancingDecision:
        if soc_pct is None:
            return self._off("no_soc", "no SOC estimate per cell", now_s)
        soc = _flatten(soc_pct, self.counts, "soc_pct")
        if not np.all(np.isfinite(soc)):
            return self._off("stale_data", "stale data: SOC estimate missing", now_s)
        mean = float(soc.mean())
        spread = float(soc.max() - soc.min())
        thr = self.threshold_pct
        donors = (soc > mean + thr) | (self._discharge & (soc > mean + thr / 2.0))
        receivers = (soc < mean - thr) | (self._charge & (soc < mean - thr / 2.0))
        donors &= v >= self.min_cell_voltage_v
        receivers &= v < self.charge_v
        self._discharge, self._charge = donors, receivers
        if donors.any() or receivers.any():
            text = (
                f"SOC spread {spread:.1f} % (mean {mean:.1f} %, threshold {thr:.1f} %): "
                f"{_count(int(donors.sum()), 'donor')}, {_count(int(receivers.sum()), 'receiver')}"
            )
            return self._decision("balancing", text, now_s, soc_spread_pct=spread)
        text = f"balanced: SOC within {thr:.1f} % of mean {mean:.1f} %"
        return self._decision("balanced", text, now_s, soc_spread_pct=spread)

    def _split(self, mask: NDArray[np.bool_]) -> tuple[tuple[bool, ...], ...]:
        o = self._offsets
        return tuple(tuple(bool(b) for b in mask[o[m] : o[m + 1]]) for m in range(len(self.counts)))

    def _decision(
        self,
        code: BalancingCode,
        reason: str,
        now_s: float,
        *,
        spread_v: float | None = None,
        soc_spread_pct: float | None = None,
    ) -> BalancingDecision:
        return BalancingDecision(
            code=code,
            reason=reason,
            mode=self.mode,
            discharge=self._split(self._discharge),
            charge=self._split(self._charge),
            spread_v=spread_v,
            soc_spread_pct=soc_spread_pct,
            decided_at_s=now_s,
        )

    def _off(
        self, code: BalancingCode, reason: str, now_s: float, *, spread_v: float | None = None
    ) -> BalancingDecision:
        self._discharge = np.zeros_like(self._discharge)
        self._charge = np.zeros_like(self._charge)
        return self._decision(code, reason, now_s, spread_v=spread_v)
