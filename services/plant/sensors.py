"""The plant's pack sensors and inverter: current, pack voltage and insulation (pure physics).

They stand for the current sensor, the voltage divider, the insulation monitor and the inverter:
the inverter draws what its load profile asks for, within the BMS limits, and only while
the contactors are closed. It also stands for an insulation monitor (10 MOhm, healthy).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.master_core.current_calibration import CurrentCalibration
from services.plant.load_profiles import LoadProfile

CURRENT_ACCURACY_A = 0.1
PACK_VOLTAGE_ACCURACY_V = 1.0
CURRENT_RANGE_A = 200.0
HEALTHY_INSULATION_OHM = 10e6
"""A dry, intact installation (IEC 61557-8 monitors read several MOhm)."""
INSULATION_ACCURACY = 0.05


@dataclass(frozen=True)
class PackMeasurement:
    current_a: float | None
    """Positive while charging; None when the sensor failed."""
    pack_voltage_v: float | None
    bus_voltage_v: float | None
    """DC-link side of the contactors (for precharge)."""
    insulation_ohm: float | None = None
    """Insulation resistance between the pack and earth; None without a monitor."""


@dataclass
class InverterState:
    """What the simulated inverter needs from the BMS each cycle."""

    contactors_closed: bool
    charge_limit_a: float
    discharge_limit_a: float
    soc_pct: float | None
    cell_v_min: float
    cell_v_max: float
    sum_of_cells_v: float | None
    bus_voltage_v: float


class SimulatedPackSensors:
    """The simulated plant; `measure` reports the RAW current of a sensor with `calibration`
    (so that the master's calibrated current is the plant's true current, within accuracy)."""

    def __init__(
        self,
        profile: LoadProfile,
        *,
        seed: int = 0,
        calibration: CurrentCalibration | None = None,
    ) -> None:
        self.profile = profile
        self.calibration = calibration or CurrentCalibration()
        self.state: InverterState | None = None
        self.current_offset_a = 0.0
        self.voltage_offset_v = 0.0
        self.sensor_failed = False
        self.insulation_ohm = HEALTHY_INSULATION_OHM
        """The simulated insulation; lower it to inject an insulation fault."""
        self._rng = random.Random(seed)
        self._t0: float | None = None

    def update(self, state: InverterState) -> None:
        self.state = state

    def true_current_a(self, now_s: float) -> float:
        s = self.state
        if s is None or not s.contactors_closed:
            return 0.0
        if self._t0 is None:
            self._t0 = now_s
        want = self.profile.current_a(now_s - self._t0, soc_pct=s.soc_pct,
                                      cell_v_min=s.cell_v_min, cell_v_max=s.cell_v_max)  # fmt: skip
        want = max(-s.discharge_limit_a, min(s.charge_limit_a, want))
        return max(-CURRENT_RANGE_A, min(CURRENT_RANGE_A, want))

    def measure(self, now_s: float) -> PackMeasurement:
        s = self.state
        current = self.true_current_a(now_s)
        noise_a = self._rng.uniform(-0.5, 0.5) * CURRENT_ACCURACY_A
        pack_v = None
        if s is not None and s.sum_of_cells_v is not None:
            pack_v = s.sum_of_cells_v + self.voltage_offset_v + self._rng.uniform(-0.5, 0.5)
        sensed_a = current + self.current_offset_a + noise_a  # with the injected offset error
        return PackMeasurement(
            current_a=None if self.sensor_failed else round(self.calibration.raw_a(sensed_a), 2),
            pack_voltage_v=pack_v,
            bus_voltage_v=s.bus_voltage_v if s is not None else 0.0,
            insulation_ohm=self.insulation_ohm
            * (1.0 + self._rng.uniform(-1.0, 1.0) * INSULATION_ACCURACY),
        )
