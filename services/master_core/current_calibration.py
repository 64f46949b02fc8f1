"""Current sensor calibration: what the master makes of a raw current reading.

`measured_a(raw) = gain x raw + offset_a` (the `current_sensor` section of the configuration);
a failed reading (None) stays None. `raw_a` is the inverse, for a simulated sensor that must
read what an uncalibrated sensor would: calibrating its raw reading gives the true current.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config.system import CurrentSensorConfig


@dataclass(frozen=True)
class CurrentCalibration:
    gain: float = 1.0
    offset_a: float = 0.0

    @classmethod
    def from_config(cls, sensor: CurrentSensorConfig) -> CurrentCalibration:
        # the configuration validates 0.5 <= gain <= 2.0, so the inverse exists
        return cls(gain=sensor.gain, offset_a=sensor.offset_a)

    def measured_a(self, raw_a: float | None) -> float | None:
        """The calibrated current of a raw reading; None (a failed sensor) stays None."""
        return None if raw_a is None else self.gain * raw_a + self.offset_a

    def raw_a(self, true_a: float) -> float:
        """The raw reading a sensor with this calibration gives for `true_a`."""
        return (true_a - self.offset_a) / self.gain
