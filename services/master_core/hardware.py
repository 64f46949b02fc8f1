"""The master's own hardware, behind one small Protocol: what it reads and what it drives.

A `PackIo` reads the current sensor, the pack and DC-link voltages, the insulation monitor and
the contactors' auxiliary contacts, and drives the contactor coils. `__main__` chooses the
implementation from the configuration and injects it (the way the slave agent injects its
driver): the device drivers of a real installation, or a simulated plant. The master holds no
simulation code; it only calls this interface.

Truth: every value is None while its device is stale, erroring or absent. A device that fails
says so in `device_errors` (device name -> what went wrong), which protection turns into the
device's own fault code; the master never acts on a last value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from services.master_core.contactors import ContactorFeedback, ContactorName
from shared.config import SystemConfig

CURRENT_SENSOR = "current_sensor"
CONTACTOR_IO = "contactor_io"
INSULATION_MONITOR = "insulation_monitor"
DEVICES = (CURRENT_SENSOR, CONTACTOR_IO, INSULATION_MONITOR)


@dataclass(frozen=True)
class HardwareReading:
    """One read of the master's devices."""

    current_a: float | None
    """Raw pack current, positive while charging (the master applies the calibration);
    None while the sensor is stale or reports an error."""
    pack_voltage_v: float | None
    """Battery side of the contactors (IVT-S U1)."""
    link_voltage_v: float | None
    """DC-link side of the contactors (IVT-S U2): precharge and weld detection."""
    feedback: ContactorFeedback | None
    """The auxiliary contacts; None while any of them is unknown."""
    insulation_ohm: float | None = None
    """Insulation resistance between the pack and earth; None without a monitor or a reading."""
    insulation_monitor: bool = False
    """An insulation monitor is installed (so its silence is a fault, not an absence)."""
    device_errors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Device (`DEVICES`) -> its errors now; absent or empty when it is healthy."""

    def device_ok(self, device: str) -> bool:
        return not self.device_errors.get(device)


class CoilCommands(Protocol):
    """Anything that says which coils are on (`ContactorOutputs` is one)."""

    def commanded(self, name: ContactorName) -> bool: ...


class PackIo(Protocol):
    """The master's hardware. `read` and `write_coils` are called once per control cycle."""

    @property
    def has_insulation_monitor(self) -> bool:
        """An insulation monitor is installed: insulation_low is supervised, and the
        monitor's silence is a fault."""
        ...

    def read(self, now_s: float) -> HardwareReading: ...

    def write_coils(self, coils: CoilCommands, now_s: float) -> None: ...

    def close(self) -> None: ...


PackIoFactory = Callable[[SystemConfig, "PackIo | None"], PackIo]
"""Builds the hardware for a configuration; given the previous one, it keeps it when the
configuration does not touch the hardware (so a threshold change never drops a coil)."""
