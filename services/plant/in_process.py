"""The plant in the master's process: a `PackIo` for unit tests, scale benchmarks and the demo.

It plays the devices a real installation wires to the master (current sensor, pack and DC-link
voltage, insulation monitor, relay module with auxiliary contacts) and the inverter behind
them. Like a real inverter it learns the BMS limits from what the master publishes (pack
state), never from the master's internals; the string voltage comes from the slaves' own
telemetry, the cells being what the slave simulation moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.master_core.contactors import CONTACTORS, ContactorName
from services.master_core.current_calibration import CurrentCalibration
from services.master_core.hardware import (
    CURRENT_SENSOR,
    CoilCommands,
    HardwareReading,
    PackIo,
)
from services.plant.contactors import SimulatedContactors
from services.plant.load_profiles import parse_profile
from services.plant.sensors import InverterState, SimulatedPackSensors
from shared.bus import BusCore
from shared.config import SystemConfig
from shared.messages import CellTelemetry, PackState
from shared.messages.slave import ChannelFlag
from shared.module_samples import subscribe_module_samples
from shared.topics import PACK_STATE

_UNMEASURABLE = int(ChannelFlag.OPEN_WIRE | ChannelFlag.OUT_OF_RANGE | ChannelFlag.SENSOR_FAULT)
"""A plain int: `int & IntFlag` is a Python call per channel, at every module's sample."""


@dataclass(frozen=True)
class _Coils:
    on: dict[ContactorName, bool]

    def commanded(self, name: ContactorName) -> bool:
        return self.on[name]


@dataclass
class _ModuleVoltage:
    measured_v: float
    measured_cells: int
    cells: int


class InProcessPlant:
    """Simulated devices of one system; see the module docstring."""

    def __init__(
        self,
        bus: BusCore,
        config: SystemConfig,
        *,
        load_profile: str = "constant:0",
        seed: int = 0,
    ) -> None:
        self.config = config
        self.sensors = SimulatedPackSensors(parse_profile(load_profile), seed=seed)
        self.contactors = SimulatedContactors(config.contactors)
        self.insulation_monitor = True
        self._modules: dict[int, _ModuleVoltage] = {}
        self._state: PackState | None = None
        self._last_s: float | None = None
        self._coils = _Coils(dict.fromkeys(CONTACTORS, False))
        self.configure(config)
        # the master on the same bus counts and logs a refused sample
        subscribe_module_samples(bus, self._on_sample, lambda _kind, _why: None)
        # what the master publishes, handed over in process (`BusCore.observe_own`)
        bus.observe_own(PACK_STATE, self._on_state)

    def configure(self, config: SystemConfig) -> None:
        """The physics stays (the contacts do not move for a new configuration); the sensor
        reads raw for the configured calibration, so the master's calibrated value is true."""
        self.config = config
        self.sensors.calibration = CurrentCalibration.from_config(config.current_sensor)
        self.contactors.reconfigure(config.contactors)
        wanted = set(range(config.topology.modules))
        for m in set(self._modules) - wanted:
            del self._modules[m]

    # --- what the inverter and the string voltage come from -----------------------------------
    def _on_sample(self, t: CellTelemetry) -> None:
        if any(t.cell_flags):
            valid = [
                mv for mv, f in zip(t.cell_mv, t.cell_flags, strict=True) if not f & _UNMEASURABLE
            ]
        else:  # the usual case: every channel measured
            valid = t.cell_mv
        self._modules[t.module] = _ModuleVoltage(sum(valid) / 1000.0, len(valid), len(t.cell_mv))

    def _on_state(self, state: PackState) -> None:
        self._state = state

    def string_voltage_v(self) -> float | None:
        """The whole string: a cell nobody can measure counts at its module's mean."""
        if len(self._modules) < self.config.topology.modules:
            return None
        total = 0.0
        for m in self._modules.values():
            if m.measured_cells == 0:
                return None
            total += m.measured_v * m.cells / m.measured_cells
        return total

    # --- PackIo -------------------------------------------------------------------------------
    @property
    def has_insulation_monitor(self) -> bool:
        return self.insulation_monitor

    def _advance(self, now_s: float) -> None:
        """The physics up to `now_s` under the coils last written: a reading is of now."""
        dt = 0.0 if self._last_s is None else max(now_s - self._last_s, 0.0)
        self._last_s = now_s
        self.contactors.step(dt, self._coils, self.string_voltage_v() or 0.0)

    def read(self, now_s: float) -> HardwareReading:
        self._advance(now_s)
        string_v = self.string_voltage_v()
        state = self._state
        limits = state.limits if state is not None else None
        feedback = self.contactors.feedback
        self.sensors.update(
            InverterState(
                contactors_closed=feedback.main_positive and feedback.main_negative,
                charge_limit_a=limits.charge_current_a if limits else 0.0,
                discharge_limit_a=limits.discharge_current_a if limits else 0.0,
                soc_pct=state.soc if state is not None else None,
                cell_v_min=(state.cell_v_min or 0.0) if state is not None else 0.0,
                cell_v_max=(state.cell_v_max or 0.0) if state is not None else 0.0,
                sum_of_cells_v=string_v,
                bus_voltage_v=self.contactors.bus_voltage_v,
            )
        )
        meas = self.sensors.measure(now_s)
        return HardwareReading(
            current_a=meas.current_a,
            pack_voltage_v=meas.pack_voltage_v,
            link_voltage_v=self.contactors.bus_voltage_v,
            feedback=feedback,
            insulation_ohm=meas.insulation_ohm if self.insulation_monitor else None,
            insulation_monitor=self.insulation_monitor,
            device_errors={CURRENT_SENSOR: ("sensor failed",)}
            if self.sensors.sensor_failed
            else {},
        )

    def write_coils(self, coils: CoilCommands, now_s: float) -> None:
        self._advance(now_s)
        self._coils = _Coils({name: coils.commanded(name) for name in CONTACTORS})

    def close(self) -> None:
        pass


def in_process_factory(
    bus: BusCore, *, load_profile: str, seed: int = 0
) -> Callable[[SystemConfig, PackIo | None], PackIo]:
    """A `PackIoFactory` keeping one plant across configurations."""

    def make(config: SystemConfig, previous: PackIo | None) -> PackIo:
        if isinstance(previous, InProcessPlant):
            previous.configure(config)
            return previous
        return InProcessPlant(bus, config, load_profile=load_profile, seed=seed)

    return make
