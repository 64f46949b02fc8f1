"""Load profiles for the simulated inverter: the current it asks for over time (pure).

Current is positive when charging. The simulated inverter honours the BMS limits, so the
requested current is clipped to [-DCL, CCL] by the caller.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class LoadProfile(Protocol):
    def current_a(
        self, t_s: float, *, soc_pct: float | None, cell_v_min: float, cell_v_max: float
    ) -> float: ...


@dataclass(frozen=True)
class Constant:
    amps: float

    def current_a(
        self, t_s: float, *, soc_pct: float | None, cell_v_min: float, cell_v_max: float
    ) -> float:
        return self.amps


@dataclass(frozen=True)
class Pulses:
    """`high_a` for `duty` of each period, `low_a` for the rest."""

    high_a: float
    low_a: float
    period_s: float
    duty: float = 0.5

    def current_a(
        self, t_s: float, *, soc_pct: float | None, cell_v_min: float, cell_v_max: float
    ) -> float:
        phase = math.fmod(t_s, self.period_s) / self.period_s
        return self.high_a if phase < self.duty else self.low_a


@dataclass(frozen=True)
class DriveCycle:
    """A (time_s, current_a) table from CSV, played in a loop with linear interpolation."""

    times_s: tuple[float, ...]
    amps: tuple[float, ...]

    @classmethod
    def from_csv(cls, path: Path) -> DriveCycle:
        times: list[float] = []
        amps: list[float] = []
        with path.open(newline="") as fh:
            for row in csv.reader(line for line in fh if not line.startswith("#")):
                if not row or not row[0].strip().replace(".", "", 1).lstrip("-").isdigit():
                    continue  # header
                times.append(float(row[0]))
                amps.append(float(row[1]))
        if len(times) < 2 or any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"{path}: needs at least two rows with increasing time_s")
        return cls(tuple(times), tuple(amps))

    def current_a(
        self, t_s: float, *, soc_pct: float | None, cell_v_min: float, cell_v_max: float
    ) -> float:
        span = self.times_s[-1] - self.times_s[0]
        t = self.times_s[0] + math.fmod(t_s, span)
        for i in range(1, len(self.times_s)):
            if t <= self.times_s[i]:
                t0, t1 = self.times_s[i - 1], self.times_s[i]
                a0, a1 = self.amps[i - 1], self.amps[i]
                return a0 + (a1 - a0) * (t - t0) / (t1 - t0)
        return self.amps[-1]


@dataclass
class ChargeDischargeCycle:
    """Charge at `charge_a` up to `soc_high_pct`, discharge at `discharge_a` down to
    `soc_low_pct`, repeat; the BMS limits end each half earlier when cells reach their
    voltage limits."""

    charge_a: float
    discharge_a: float
    soc_low_pct: float = 10.0
    soc_high_pct: float = 90.0
    charging: bool = True

    def current_a(
        self, t_s: float, *, soc_pct: float | None, cell_v_min: float, cell_v_max: float
    ) -> float:
        if soc_pct is None:  # an inverter that sees no SOC keeps its direction
            pass
        elif self.charging and soc_pct >= self.soc_high_pct:
            self.charging = False
        elif not self.charging and soc_pct <= self.soc_low_pct:
            self.charging = True
        return abs(self.charge_a) if self.charging else -abs(self.discharge_a)


def parse_profile(spec: str) -> LoadProfile:
    """'constant:-20', 'pulses:50:-80:60[:0.5]', 'cycle:50:80[:10:90]', 'csv:/path/file.csv'."""
    kind, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    try:
        if kind == "constant":
            return Constant(float(args[0]) if args else 0.0)
        if kind == "pulses":
            return Pulses(float(args[0]), float(args[1]), float(args[2]),
                          float(args[3]) if len(args) > 3 else 0.5)  # fmt: skip
        if kind == "cycle":
            low, high = (float(args[2]), float(args[3])) if len(args) > 3 else (10.0, 90.0)
            return ChargeDischargeCycle(float(args[0]), float(args[1]), low, high)
        if kind == "csv":
            return DriveCycle.from_csv(Path(rest))
    except (IndexError, ValueError) as exc:
        raise ValueError(f"load profile {spec!r}: {exc}") from exc
    raise ValueError(f"load profile {spec!r}: kind must be constant, pulses, cycle or csv")
