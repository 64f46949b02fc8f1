"""What each CAN profile's frames can carry: pack voltage and current ranges (data only).

The gateway refuses a value outside its frame at encode time; the configuration refuses a
profile whose frames cannot carry the pack's voltage and current (`SystemConfig`). Both read
the same numbers, which `tests/can_gateway/test_ranges.py` checks against each DBC, so these
ranges cannot drift from the frames. `shared` must not import the gateway, hence a copy here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PYLON_HV_DEFAULT_CURRENT_OFFSET_A = 3000.0
"""Pylontech HV: raw current = (I + offset) x 10; the DBC's signals use this offset."""


@dataclass(frozen=True)
class CanValueRange:
    """The span every frame of a profile can carry (the intersection over its signals)."""

    pack_voltage_v: tuple[float, float]
    """Pack voltage and the voltage limits (CVL, DVL)."""
    current_a: tuple[float, float]
    """Measured pack current, positive while charging."""
    current_limit_a: float
    """Largest charge or discharge current limit (CCL, DCL as positive magnitudes)."""

    def problems(self, profile: str, voltage_v: float, current_a: float) -> list[str]:
        """Why frames of `profile` cannot carry 0..`voltage_v` and +-`current_a` (empty: fit)."""
        out: list[str] = []
        v_hi = self.pack_voltage_v[1]
        if voltage_v > v_hi:
            out.append(f"pack voltage up to {voltage_v:.1f} V, but its frames end at {v_hi:g} V")
        i_lo, i_hi = self.current_a
        if current_a > min(-i_lo, i_hi) or current_a > self.current_limit_a:
            span = min(-i_lo, i_hi, self.current_limit_a)
            out.append(f"current up to +-{current_a:g} A, but its frames carry +-{span:g} A")
        return [f"CAN profile {profile} cannot carry the {p}" for p in out]


CAN_PROFILE_RANGES: Mapping[str, CanValueRange] = {
    # 0x356 BatteryVoltage S16 0.01 V; 0x356 current S16 0.1 A; 0x351 CCL/DCL S16 0.1 A
    "victron_0x35x": CanValueRange((0.0, 327.67), (-3276.8, 3276.7), 3276.7),
    "pylon_v12": CanValueRange((0.0, 327.67), (-3276.8, 3276.7), 3276.7),
    # 0x4210 PileVoltage U16 0.1 V; current U16 0.1 A offset -3000 A; 0x4220 limits same
    # (the discharge limit may be sent negative: down to -3000 A)
    "pylon_hv": CanValueRange((0.0, 6553.5), (-3000.0, 3553.5), 3000.0),
    # 0x600 PackVoltage [0|1200] V, PackCurrent [-1000|1000] A; 0x601 limits [0|1000] A
    "native": CanValueRange((0.0, 1200.0), (-1000.0, 1000.0), 1000.0),
}


def pylon_hv_range(current_offset_a: float) -> CanValueRange:
    """Pylontech HV with another current offset: raw (I + offset) x 10 in 16 bits, or signed
    16 bits with offset 0."""
    base = CAN_PROFILE_RANGES["pylon_hv"]
    if current_offset_a == 0:
        lo, hi = -3276.8, 3276.7
    else:
        lo, hi = -current_offset_a, 6553.5 - current_offset_a
    return CanValueRange(base.pack_voltage_v, (lo, hi), min(-lo, hi))
