"""Plausibility checks: the values of the plausibility protection codes, from raw facts.

Pure: no I/O, no clock; the caller passes the monotonic time `now_s` and this cycle's facts.
Each check turns measurements that are individually in range into one value per code; the
levels, delays and latches are `Protection`'s (thresholds in `ProtectionConfig`). A value of
None means "not evaluated" (the check does not apply now, or an input it needs is unknown):
`Protection` then holds the code's levels without counting it as unknown
(`protection_inputs.PLAUSIBILITY`).

| Check | ProtectionInputs field | Code |
|---|---|---|
| pack - sum of cells: `ProtectionInputs.pack_v`, `sum_of_cells_v` | - | pack_voltage_plausibility |
| `open_string_current_a` | open_string_current_a | current_on_open_string |
| `CurrentOffsetEstimator` | current_offset_a | current_offset_high |
| `WeldCheck` | contactor_welded | contactor_welded |
| `PrechargeCheck` | precharge_failed | precharge_failure |
| `DriverWatch` (insulation monitor) | insulation_monitor_age_s | insulation_monitor_failure |
| `DriverWatch` (relay module) | contactor_io_age_s | contactor_io_failure |
| `module_temperature_spread_c` | module_temp_spread_c | temperature_spread |
| `StuckChannels` (cells / temperatures) | stuck_*_channels | stuck_*_channel |

`PlausibilityChecks` bundles them for the supervisor: construct it from the configuration,
call `update` once per cycle, splat `PlausibilityValues.inputs()` into `ProtectionInputs`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from services.master_core.level_monitor import TIME_TOLERANCE_S
from services.master_core.protection_inputs import ChannelPosition
from shared.config.limits import PACK_VOLTAGE_ACCURACY_V
from shared.config.protection import ProtectionConfig
from shared.config.system import ContactorConfig, SystemConfig

Reading = float | None
"""A sample; None or NaN is unknown."""

PRECHARGE_MARGIN_V = 2 * PACK_VOLTAGE_ACCURACY_V
"""Pack and DC-link voltage are two measurements, each off by up to its accuracy."""
PRECHARGE_LATENCY_S = 0.1
"""A reading may be this much older than the cycle that judges it: one current-sensor cycle
(20 ms), one relay-module poll (50 ms) and a control cycle's jitter."""


def _known(value: Reading) -> float | None:
    return None if value is None or math.isnan(value) else value


# --- current on an open string ----------------------------------------------------------------


def open_string_current_a(current_a: Reading, all_open: bool | None) -> float | None:
    """|current| while every contactor reads open, None while any reads closed or unknown.

    With every contact open no current can flow through the sensor: a reading above the
    sensor's noise is a path bypassing the contactors (a welded main contact whose auxiliary
    contact reads open) or a wrong sensor.
    """
    current = _known(current_a)
    if all_open is not True or current is None:
        return None
    return abs(current)


# --- zero offset --------------------------------------------------------------------------------


class CurrentOffsetEstimator:
    """The current sensor's zero offset: the mean current over the last `window_s` of an
    uninterrupted stretch with the string open (no current can flow then).

    The estimate is kept after the string closes (it is the last measured offset); it is None
    until the first full window. An unknown current sample or a closed contact restarts the
    stretch.
    """

    def __init__(self, window_s: float) -> None:
        if not window_s > 0.0:
            raise ValueError(f"window {window_s!r} s must be positive")
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()
        self._sum_a = 0.0
        self._since_s: float | None = None
        self.offset_a: float | None = None
        """The last estimate (signed, positive = reads charge at rest)."""

    def update(self, now_s: float, current_a: Reading, *, all_open: bool | None) -> float | None:
        current = _known(current_a)
        if all_open is not True or current is None:
            self._samples.clear()
            self._sum_a = 0.0
            self._since_s = None
            return self.offset_a
        if self._since_s is None:
            self._since_s = now_s
        self._samples.append((now_s, current))
        self._sum_a += current
        while self._samples and self._samples[0][0] < now_s - self.window_s:
            self._sum_a -= self._samples.popleft()[1]
        if now_s - self._since_s >= self.window_s - TIME_TOLERANCE_S and self._samples:
            # Summing again avoids drift of the running sum over days of rest.
            self._sum_a = math.fsum(a for _, a in self._samples)
            self.offset_a = self._sum_a / len(self._samples)
        return self.offset_a


# --- welded contactor ---------------------------------------------------------------------------


class WeldCheck:
    """After a completed open command the string must no longer conduct.

    The open is completed `feedback_timeout_s` after every coil was commanded off (the time the
    auxiliary contacts have to confirm it). From then on the string is welded while
    |current| > `current_a` (current can only flow through closed contacts); and, if the DC
    link has a discharge path (`discharge_s` not None), while the link is still within
    `voltage_v` of the pack `discharge_s` after the open command: it should have fallen.

    Value: True (welded), False (checked, open), None while any coil is commanded on, before
    the open has completed, or while an input it needs is unknown. Evaluated continuously while
    open, so a latched weld can only be reset when the string is seen open.
    """

    def __init__(
        self,
        *,
        feedback_timeout_s: float,
        current_a: float,
        voltage_v: float,
        discharge_s: float | None,
    ) -> None:
        self.feedback_timeout_s = feedback_timeout_s
        self.current_a = current_a
        self.voltage_v = voltage_v
        self.discharge_s = discharge_s
        self._open_since_s: float | None = None

    def update(
        self,
        now_s: float,
        *,
        commanded_open: bool,
        current_a: Reading,
        pack_v: Reading,
        link_v: Reading,
    ) -> bool | None:
        if not commanded_open:
            self._open_since_s = None
            return None
        if self._open_since_s is None:
            self._open_since_s = now_s
        elapsed_s = now_s - self._open_since_s
        if elapsed_s < self.feedback_timeout_s:
            return None
        current = _known(current_a)
        if current is not None and abs(current) > self.current_a:
            return True
        verdicts = [None if current is None else False]
        if self.discharge_s is not None and elapsed_s >= self.discharge_s:
            pack, link = _known(pack_v), _known(link_v)
            if pack is not None and link is not None:
                if abs(pack - link) <= self.voltage_v:
                    return True
                verdicts.append(False)
            else:
                verdicts.append(None)
        return None if None in verdicts else False


# --- precharge ----------------------------------------------------------------------------------


class PrechargeCheck:
    """The DC link during precharge against its RC curve, and the state machine's give-up.

    Through the precharge resistor the link follows V(t) = Vp - (Vp - V0) exp(-t / tau),
    tau = R_pre x C_link (`ContactorConfig`). An attempt fails when the link is

    - above the curve of tau / `tau_tolerance` plus `margin_v`: it rises too fast (the
      resistor is bypassed, e.g. a welded main positive, or the link has no capacitance).
      This curve starts at the last sample before the precharge coils were first seen
      commanded, with that sample's link voltage: the contacts cannot close earlier, so a
      late closing only makes the real rise slower. It needs a sample period below about
      tau to see anything;
    - below the curve of tau x `tau_tolerance` minus `margin_v`: it does not rise (a short
      across the link, an open precharge resistor, a far larger load than configured). This
      curve starts at the first sample whose feedback shows the precharge path closed (main
      negative and precharge relay closed, main positive open), with that sample's voltage.

    A link still charged above the pack (held since the contactors opened under a charge,
    while the pack relaxed) falls along the same curve: the bounds are mirrored, below the
    fast curve it falls too fast, above the slow one it does not fall.

    A close sequence the state machine gave up on (every try timed out:
    `ContactorStateMachine.precharge_failures` grew) is a failure too.

    Value: True from a failed check until the attempt ends (coils off and path open), and on
    the sample where the failure count grew; False otherwise; None while the attempt runs and
    a voltage is unknown.
    """

    def __init__(
        self,
        *,
        tau_s: float,
        tau_tolerance: float,
        margin_v: float = PRECHARGE_MARGIN_V,
        latency_s: float = PRECHARGE_LATENCY_S,
    ) -> None:
        if not (tau_s > 0.0 and tau_tolerance > 1.0 and margin_v >= 0.0 and latency_s >= 0.0):
            raise ValueError(
                "tau_s > 0, tau_tolerance > 1, margin_v >= 0 and latency_s >= 0 are required"
            )
        self.latency_s = latency_s
        """How much older than its sample time a voltage or contact reading may be: the
        bounds are widened by it (a late reading must never look like a failure)."""
        self.tau_s = tau_s
        self.tau_tolerance = tau_tolerance
        self.margin_v = margin_v
        self._previous: tuple[float, float | None] | None = None
        """(time, link voltage) of the last sample."""
        self._fast_from: tuple[float, float | None] | None = None
        self._slow_from: tuple[float, float] | None = None
        self._failed = False
        self._failures: int | None = None
        self.reason: str | None = None
        """Why the last failure was raised (for the event text)."""

    def fast_bound_v(self, elapsed_s: float, pack_v: float, start_v: float) -> float:
        """The link voltage furthest toward `pack_v` that is plausible `elapsed_s` after the
        precharge command (an upper bound for a link below the pack, a lower one above it)."""
        elapsed_s += self.latency_s
        decay = math.exp(-max(elapsed_s, 0.0) * self.tau_tolerance / self.tau_s)
        return pack_v - (pack_v - start_v) * decay + _toward(pack_v, start_v) * self.margin_v

    def slow_bound_v(self, elapsed_s: float, pack_v: float, start_v: float) -> float:
        """The link voltage least far toward `pack_v` that is plausible `elapsed_s` after the
        path was seen closed (a lower bound for a link below the pack, an upper one above)."""
        elapsed_s -= self.latency_s
        decay = math.exp(-max(elapsed_s, 0.0) / (self.tau_s * self.tau_tolerance))
        return pack_v - (pack_v - start_v) * decay - _toward(pack_v, start_v) * self.margin_v

    def update(
        self,
        now_s: float,
        *,
        commanded: bool,
        path_closed: bool,
        pack_v: Reading,
        link_v: Reading,
        failures: int = 0,
    ) -> bool | None:
        """`commanded`: main negative and precharge coils on, as written after the previous
        sample; `path_closed`: their feedback reads closed and main positive open."""
        pack, link = _known(pack_v), _known(link_v)
        previous, self._previous = self._previous, (now_s, link)
        gave_up = self._failures is not None and failures > self._failures
        self._failures = failures
        if gave_up:
            self.reason = "every precharge try timed out"
        if not (commanded or path_closed):
            self._fast_from = self._slow_from = None
            self._failed = False
            return gave_up
        if self._fast_from is None:
            self._fast_from = previous if previous is not None else (now_s, link)
        if self._failed or gave_up:
            self._failed = True
            return True
        if pack is None or link is None:
            return None
        if path_closed and self._slow_from is None:
            self._slow_from = (now_s, link)
        fast_s, fast_v = self._fast_from
        if fast_v is not None:
            bound = self.fast_bound_v(now_s - fast_s, pack, fast_v)
            toward = _toward(pack, fast_v)
            if toward * (link - bound) > 0.0:
                self._failed = True
                self.reason = (
                    f"DC link {link:.1f} V {now_s - fast_s:.2f} s after the precharge command is "
                    f"{'above' if toward > 0 else 'below'} {bound:.1f} V: it "
                    f"{'rises' if toward > 0 else 'falls'} faster than R x C allows (resistor "
                    f"bypassed or no capacitance)"
                )
        if self._slow_from is not None and not self._failed:
            slow_s, slow_v = self._slow_from
            bound = self.slow_bound_v(now_s - slow_s, pack, slow_v)
            toward = _toward(pack, slow_v)
            if toward * (link - bound) < 0.0:
                self._failed = True
                self.reason = (
                    f"DC link {link:.1f} V {now_s - slow_s:.2f} s after the precharge path "
                    f"closed is {'below' if toward > 0 else 'above'} {bound:.1f} V: it does not "
                    f"{'rise' if toward > 0 else 'fall'} (short, open resistor or too large a "
                    f"load)"
                )
        return self._failed


def _toward(pack_v: float, start_v: float) -> float:
    """+1 for a link charging up to the pack, -1 for one still charged above it (held from a
    charge: the pack has relaxed since the contactors opened), which falls through the
    resistor to the pack voltage."""
    return 1.0 if pack_v >= start_v else -1.0


# --- driver health ------------------------------------------------------------------------------


DEVICE_START_GRACE_S = 10.0
"""How long a device not heard from since its check began (the master's start, a new
configuration) may take to answer before its age counts: a relay module or an insulation
monitor powered up with the master boots for seconds, and a container may start before it.
Without it such a start latched contactor_io_failure (1 s timeout) for an operator to reset.
Meanwhile nothing closes without the relay module: the contactor sequence needs its feedback.
The current sensor has the same grace (`supervisor.CURRENT_SENSOR_START_GRACE_S`)."""


class DriverWatch:
    """Seconds since a driver's last good reading (fresh and without errors).

    Before the first good reading the device may still be booting: None (not evaluated) for
    `start_grace_s` from the first update, then the time since that first update, so
    `Protection` trips the driver's failure code at once. Once heard from, the age is the
    time since the last good reading, and one bad read never trips.
    """

    def __init__(self, start_grace_s: float = DEVICE_START_GRACE_S) -> None:
        self.start_grace_s = start_grace_s
        self._last_good_s: float | None = None
        self._first_s: float | None = None

    def update(self, now_s: float, good: bool | None) -> float | None:
        """`good`: this cycle's reading is fresh and error-free; False or None: it is not."""
        if self._first_s is None:
            self._first_s = now_s
        if good is True:
            self._last_good_s = now_s
        if self._last_good_s is None:
            waited_s = max(now_s - self._first_s, 0.0)
            return None if waited_s < self.start_grace_s else waited_s
        return max(now_s - self._last_good_s, 0.0)


# --- temperatures within a module ---------------------------------------------------------------


def module_temperature_spread_c(temps_by_module: Sequence[Sequence[Reading]]) -> float | None:
    """The largest warmest-minus-coldest spread within one module; modules with fewer than two
    known sensors do not count; None when no module has two."""
    if isinstance(temps_by_module, ModuleVectors) and temps_by_module.even:
        rows = temps_by_module.values.reshape(len(temps_by_module.counts), -1)
        two = np.count_nonzero(~np.isnan(rows), axis=1) >= 2
        if not two.any():
            return None
        # fmax/fmin skip NaN (unknown) without a warning
        spread = np.fmax.reduce(rows[two], axis=1) - np.fmin.reduce(rows[two], axis=1)
        return float(spread.max())
    spreads = []
    for sensors in temps_by_module:
        known = [t for t in (_known(v) for v in sensors) if t is not None]
        if len(known) >= 2:
            spreads.append(max(known) - min(known))
    return max(spreads) if spreads else None


# --- stuck channels -----------------------------------------------------------------------------


class StuckChannels:
    """Channels that repeat the same reading while the pack is under load.

    Fed the per-module sample vectors, every cycle or on new telemetry. A sample counts
    against a channel when it equals the channel's previous reading exactly, |current| is
    above `current_a`, and another channel of the same module changed in the same sample (that
    module's acquisition is live: a module whose telemetry has not refreshed, or a noise-free
    plateau where every channel holds, counts nothing). A channel is stuck after `samples`
    such samples; any change of its reading, an unknown reading or a new layout restarts its
    count. Samples at low or unknown current neither count nor restart. A whole module frozen
    at once is not a stuck channel but stale telemetry (communication supervision).

    Counted on arrays, every channel at once (`ModuleVectors`; lists are turned into one):
    a Python loop over 196 cells at every sample cost more than the rest of the check.
    """

    def __init__(self, *, samples: int, current_a: float) -> None:
        if samples < 1:
            raise ValueError(f"samples {samples!r} must be at least 1")
        self.samples = samples
        self.current_a = current_a
        self._counts: tuple[int, ...] = ()
        self._last: NDArray[np.float64] = np.zeros(0)
        self._runs: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._module: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        """Each channel's module."""
        self._first: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        """Each channel's module's first channel (its index within the module follows)."""
        self._stuck: frozenset[ChannelPosition] = frozenset()
        """`stuck` as of the last update: it is read every cycle, fed only on new samples."""

    def update(
        self, by_module: Sequence[Sequence[Reading]], current_a: Reading
    ) -> frozenset[ChannelPosition]:
        vectors = by_module if isinstance(by_module, ModuleVectors) else ModuleVectors.of(by_module)
        values = vectors.values
        if vectors.counts != self._counts:
            self._counts = vectors.counts
            self._last = values
            self._runs = np.zeros(values.size, dtype=np.int64)
            self._module = np.repeat(np.arange(len(vectors.counts)), vectors.counts)
            counts = np.array(vectors.counts, dtype=np.intp)
            self._first = np.repeat(np.cumsum(counts) - counts, counts)
            self._stuck = frozenset()
            return self._stuck
        current = _known(current_a)
        loaded = current is not None and abs(current) > self.current_a
        both = ~np.isnan(values) & ~np.isnan(self._last)
        changed = both & (values != self._last)
        restart = ~both | changed
        if loaded:
            live = np.bincount(self._module, weights=changed, minlength=len(self._counts)) > 0
            self._runs = np.where(restart, 0, self._runs + live[self._module])
        else:
            self._runs = np.where(restart, 0, self._runs)
        self._last = values
        at = np.flatnonzero(self._runs >= self.samples)
        self._stuck = frozenset(
            (module, index)
            for module, index in zip(
                self._module[at].tolist(), (at - self._first[at]).tolist(), strict=True
            )
        )
        return self._stuck

    @property
    def stuck(self) -> frozenset[ChannelPosition]:
        return self._stuck


class ModuleVectors(Sequence[list[float]]):
    """Per-module sample vectors held as one array, module by module (NaN: unknown), with the
    channels per module: what `StuckChannels` and `module_temperature_spread_c` count on
    without a Python loop over the channels. Reads as the list of per-module lists too."""

    def __init__(self, values: NDArray[np.float64], counts: tuple[int, ...]) -> None:
        if values.size != sum(counts):
            raise ValueError(f"{values.size} values do not fill modules of {counts}")
        self.values = values
        self.counts = counts
        self.even = len(set(counts)) == 1
        """Every module has as many channels (a reshape gives one row per module)."""

    @classmethod
    def of(cls, by_module: Sequence[Sequence[Reading]]) -> ModuleVectors:
        """From per-module lists; None is NaN."""
        flat = [math.nan if v is None else v for m in by_module for v in m]
        return cls(np.array(flat, dtype=np.float64), tuple(len(m) for m in by_module))

    @classmethod
    def of_pack(cls, values: NDArray[np.float64], module_of: NDArray[np.int64]) -> ModuleVectors:
        """A pack-order vector split by module (`module_of[i]` = module of value i, as
        `PackSnapshot.module_of_cell`), as `by_module` splits it; a copy."""
        if values.size != module_of.size:
            raise ValueError(f"{values.size} values, {module_of.size} modules")
        counts = np.bincount(module_of) if module_of.size else np.zeros(0, dtype=np.int64)
        order = np.argsort(module_of, kind="stable")
        return cls(values.astype(np.float64)[order], tuple(counts.tolist()))

    @classmethod
    def of_even(cls, values: NDArray[np.float64], per_module: int) -> ModuleVectors:
        """A module-by-module vector with `per_module` values each (`PackSnapshot.temp_c`), as
        `split_even` splits it; a copy."""
        if per_module < 1 or len(values) % per_module:
            raise ValueError(f"{len(values)} values do not split into modules of {per_module}")
        return cls(values.astype(np.float64), (per_module,) * (len(values) // per_module))

    def __len__(self) -> int:
        return len(self.counts)

    def __iter__(self) -> Iterator[list[float]]:
        return iter(self._lists())

    def _lists(self) -> list[list[float]]:
        rows = np.split(self.values, np.cumsum(self.counts)[:-1]) if self.counts else []
        return [row.tolist() for row in rows]

    @overload
    def __getitem__(self, index: int) -> list[float]: ...
    @overload
    def __getitem__(self, index: slice) -> list[list[float]]: ...
    def __getitem__(self, index: int | slice) -> list[float] | list[list[float]]:
        return self._lists()[index]


def by_module(values: Sequence[float], module_of: Sequence[int]) -> list[list[float]]:
    """Split a pack-order vector into per-module vectors (`module_of[i]` = module of value i,
    as `PackSnapshot.module_of_cell`)."""
    out: list[list[float]] = [[] for _ in range(max(module_of, default=-1) + 1)]
    for value, module in zip(values, module_of, strict=True):
        out[module].append(float(value))
    return out


def split_even(values: Sequence[float], per_module: int) -> list[list[float]]:
    """Split a module-by-module vector with `per_module` values each (`PackSnapshot.temp_c`)."""
    if per_module < 1 or len(values) % per_module:
        raise ValueError(f"{len(values)} values do not split into modules of {per_module}")
    return [
        [float(v) for v in values[i : i + per_module]] for i in range(0, len(values), per_module)
    ]


# --- all checks, for the supervisor -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PlausibilityFacts:
    """One cycle's raw facts. Unknown values are None (or NaN)."""

    current_a: Reading
    """Calibrated pack current, positive = charge."""
    pack_v: Reading
    """Measured pack voltage (the master's sensor)."""
    link_v: Reading
    """Measured DC-link (bus) voltage behind the contactors."""
    feedback_all_open: bool | None
    """Every auxiliary contact reads open; None while the feedback is unknown."""
    commanded_open: bool
    """Every coil is commanded off (`ContactorOutputs.all_off`)."""
    precharge_commanded: bool
    """Main negative and precharge coils on, as written after the previous sample
    (`ContactorOutputs` before this cycle's `step`)."""
    precharge_path_closed: bool
    """Main negative and precharge relay read closed, main positive open."""
    precharge_failures: int = 0
    """`ContactorStateMachine.precharge_failures`."""
    cells_by_module: Sequence[Sequence[Reading]] | None = None
    """A fresh cell sample vector per module, or None when no new telemetry came this cycle."""
    temps_by_module: Sequence[Sequence[Reading]] | None = None
    insulation_good: bool | None = None
    """The insulation monitor's reading is fresh and error-free (None: not read this cycle)."""
    contactor_io_good: bool | None = None
    """The relay module's read is fresh and error-free (None: not read this cycle)."""


@dataclass(frozen=True)
class PlausibilityValues:
    open_string_current_a: float | None
    current_offset_a: float | None
    contactor_welded: bool | None
    precharge_failed: bool | None
    insulation_monitor_age_s: float | None
    contactor_io_age_s: float | None
    module_temp_spread_c: float | None
    stuck_cell_voltage_channels: frozenset[ChannelPosition] | None
    """None until the first cell sample vector."""
    stuck_temperature_channels: frozenset[ChannelPosition] | None
    precharge_reason: str | None = field(default=None)

    def inputs(self) -> dict[str, Any]:
        """The `ProtectionInputs` fields: `ProtectionInputs(**values.inputs(), ...)`."""
        return {
            "open_string_current_a": self.open_string_current_a,
            "current_offset_a": self.current_offset_a,
            "contactor_welded": self.contactor_welded,
            "precharge_failed": self.precharge_failed,
            "insulation_monitor_age_s": self.insulation_monitor_age_s,
            "contactor_io_age_s": self.contactor_io_age_s,
            "module_temp_spread_c": self.module_temp_spread_c,
            "stuck_cell_voltage_channels": self.stuck_cell_voltage_channels,
            "stuck_temperature_channels": self.stuck_temperature_channels,
        }


class PlausibilityChecks:
    """Every plausibility check of one string, fed once per cycle."""

    def __init__(
        self,
        protection: ProtectionConfig,
        contactors: ContactorConfig,
        *,
        insulation_monitor: bool = False,
        contactor_io: bool = False,
    ) -> None:
        """`insulation_monitor` / `contactor_io`: the hardware exists; without it its age is
        None (not evaluated)."""
        p = protection
        self.offset = CurrentOffsetEstimator(p.current_offset_window_s)
        self.weld = WeldCheck(
            feedback_timeout_s=contactors.feedback_timeout_s,
            current_a=p.open_string_current_a,
            voltage_v=p.contactor_weld_voltage_v,
            discharge_s=p.contactor_weld_discharge_s,
        )
        self.precharge = PrechargeCheck(
            tau_s=contactors.precharge_resistor_ohm * contactors.dc_link_capacitance_f,
            tau_tolerance=p.precharge_tau_tolerance,
        )
        self.insulation = DriverWatch() if insulation_monitor else None
        self.contactor_io = DriverWatch() if contactor_io else None
        self.stuck_cells = StuckChannels(
            samples=p.stuck_cell_voltage_samples, current_a=p.stuck_channel_current_a
        )
        self.stuck_temps = StuckChannels(
            samples=p.stuck_temperature_samples, current_a=p.stuck_channel_current_a
        )
        self._temp_spread_c: float | None = None
        self._cells_seen = self._temps_seen = False

    @classmethod
    def from_system(
        cls, system: SystemConfig, *, insulation_monitor: bool = False, contactor_io: bool = False
    ) -> PlausibilityChecks:
        return cls(
            system.protection,
            system.contactors,
            insulation_monitor=insulation_monitor,
            contactor_io=contactor_io,
        )

    def update(self, now_s: float, facts: PlausibilityFacts) -> PlausibilityValues:
        f = facts
        if f.cells_by_module is not None:
            self.stuck_cells.update(f.cells_by_module, f.current_a)
            self._cells_seen = True
        if f.temps_by_module is not None:
            self.stuck_temps.update(f.temps_by_module, f.current_a)
            self._temps_seen = True
            self._temp_spread_c = module_temperature_spread_c(f.temps_by_module)
        return PlausibilityValues(
            open_string_current_a=open_string_current_a(f.current_a, f.feedback_all_open),
            current_offset_a=self.offset.update(now_s, f.current_a, all_open=f.feedback_all_open),
            contactor_welded=self.weld.update(
                now_s,
                commanded_open=f.commanded_open,
                current_a=f.current_a,
                pack_v=f.pack_v,
                link_v=f.link_v,
            ),
            precharge_failed=self.precharge.update(
                now_s,
                commanded=f.precharge_commanded,
                path_closed=f.precharge_path_closed,
                pack_v=f.pack_v,
                link_v=f.link_v,
                failures=f.precharge_failures,
            ),
            insulation_monitor_age_s=(
                None
                if self.insulation is None
                else self.insulation.update(now_s, f.insulation_good)
            ),
            contactor_io_age_s=(
                None
                if self.contactor_io is None
                else self.contactor_io.update(now_s, f.contactor_io_good)
            ),
            module_temp_spread_c=self._temp_spread_c,
            stuck_cell_voltage_channels=self.stuck_cells.stuck if self._cells_seen else None,
            stuck_temperature_channels=self.stuck_temps.stuck if self._temps_seen else None,
            precharge_reason=self.precharge.reason,
        )
