"""The plant's physics in one pure object: cells, string current, contactors, DC link, sensors.

`PlantCore.step(now_s)` advances everything to `now_s` (the clock is passed in, nothing here
reads time or does I/O). The device adapters (`services/plant/devices`) put what arrives on the
wire into the core (`set_coils`, `set_balancing`) and serve `state()` back on the wire.

Physics per step (a zero-order hold over the interval):

* the string current is what the inverter asks for, and flows only while the main positive and
  main negative contacts are closed; with main negative and the precharge relay closed (main
  positive open) the precharge current (U1 - U2) / R_pre flows out of the pack instead;
* the cells (the slave agent's simulation, `services/slave_agent/sim`) integrate that current
  every `cell_period_s` with its mean over the interval (charge is conserved exactly); each
  board's bleed resistors follow the balancing coils written to it;
* the contactors and the DC link follow `services/plant/contactors.py` with the string voltage
  (the sum of the true cell terminal voltages) as the source;
* the current sensor reads the true current plus an offset and uniform noise, or nothing while
  it drops out; the insulation resistance is a plain setting.

Where the current comes from: `demand` is the inverter (an object with `current_a(t_s, *,
soc_pct, cell_v_min, cell_v_max)` that keeps within the BMS limits it decoded itself); `profile`
is its load profile, used unclipped when the `inverter_ignores_limits` fault is set, and used
alone while no inverter is given (then no limits are known to the plant at all).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

import numpy as np

from services.master_core.contactors import CONTACTORS, ContactorFeedback, ContactorName
from services.master_core.current_calibration import CurrentCalibration
from services.plant.contactors import SimulatedContactors
from services.plant.load_profiles import LoadProfile
from services.slave_agent.sim import Reading, Truth
from services.slave_agent.sim_driver import SimulatedDriver
from shared.config import SystemConfig
from shared.messages import PlantControl, SimControl
from shared.messages.sim import PLANT_CELL_FAULTS, FaultKind
from shared.numbering import number_of

__all__ = [
    "HEALTHY_INSULATION_OHM",
    "CoilState",
    "PlantCore",
    "PlantParams",
    "PlantState",
]

HEALTHY_INSULATION_OHM: Final = 10e6
"""A dry, intact installation (IEC 61557-8 monitors read several MOhm)."""
DEFAULT_INSULATION_FAULT_OHM: Final = 50e3
"""`insulation_fault` without a value: well below any sensible trip threshold (100 ohm/V)."""
_TIME_EPS_S: Final = 1e-9  # float jitter of a clock on a grid must not skip a cell step
CURRENT_RANGE_A: Final = 2500.0
"""What the simulated inverter can physically draw (clip of a wild profile)."""


@dataclass(frozen=True)
class PlantParams:
    """Settings of the physics (the service fills them from its settings)."""

    seed: int = 0
    initial_soc_pct: float = 50.0
    ambient_c: float = 25.0
    cell_period_s: float = 0.1
    """How often the cells integrate the string current (its mean over the interval)."""
    current_offset_a: float = 0.0
    """Zero error of the current sensor (added to the true current)."""
    current_noise_a: float = 0.05
    """Half-width of the uniform noise of the current sensor."""
    insulation_ohm: float = HEALTHY_INSULATION_OHM
    u3_v: float = 0.0
    """What the IVT-S's third voltage input sees (unwired: 0 V)."""
    sensor_temperature_c: float = 25.0
    """Temperature of the IVT-S shunt."""
    close_time_s: float = 0.03
    open_time_s: float = 0.02

    def __post_init__(self) -> None:
        if self.cell_period_s <= 0.0:
            raise ValueError(f"cell_period_s must be positive, got {self.cell_period_s:g}")
        if self.current_noise_a < 0.0:
            raise ValueError(f"current_noise_a must not be negative, got {self.current_noise_a:g}")
        if self.insulation_ohm <= 0.0:
            raise ValueError(f"insulation_ohm must be positive, got {self.insulation_ohm:g}")


@dataclass(frozen=True)
class CoilState:
    """Coil outputs as written to the relay module (a `CoilCommands`)."""

    main_positive: bool = False
    main_negative: bool = False
    precharge: bool = False

    def commanded(self, name: ContactorName) -> bool:
        value: bool = getattr(self, name)
        return value


@dataclass(frozen=True)
class PlantState:
    """What the devices serve: the truth and what each sensor reads."""

    time_s: float
    current_a: float
    """True string current, positive while charging."""
    sensed_current_a: float | None
    """What the current sensor reads (raw, before the master's calibration); None: silent."""
    string_voltage_v: float
    """Sum of the true cell terminal voltages."""
    sensed_string_voltage_v: float
    """What the IVT-S reads as U1 (the string voltage, plus an injected offset)."""
    link_voltage_v: float
    """DC-link side of the contactors (IVT-S U2)."""
    u3_v: float
    sensor_temperature_c: float
    insulation_ohm: float
    contacts: ContactorFeedback
    """The true contact positions."""
    feedback: Mapping[ContactorName, bool]
    """What the auxiliary contacts report (a stuck contact differs from the truth)."""
    silent_boards: frozenset[int]
    insulation_monitor_silent: bool = False


@dataclass
class _Faults:
    """The plant's own faults (the cell faults live in each module's `FaultSet`)."""

    current_offset_a: float = 0.0
    current_dropout: bool = False
    feedback_stuck: dict[ContactorName, bool] = field(default_factory=dict)
    insulation_ohm: float | None = None
    ignore_limits: bool = False
    voltage_offset_v: float = 0.0
    insulation_monitor_silent: bool = False
    silent_boards: set[int] = field(default_factory=set)
    """Empty set with `all_boards_silent` False: every board answers."""
    all_boards_silent: bool = False


class PlantCore:
    """One system's physics; see the module docstring."""

    def __init__(
        self,
        config: SystemConfig,
        params: PlantParams,
        profile: LoadProfile,
        *,
        demand: LoadProfile | None = None,
        start_s: float = 0.0,
    ) -> None:
        self.params = params
        self.profile = profile
        self.demand = demand
        self.config = config
        self.cells = self._make_cells(config)
        self.contactors = SimulatedContactors(
            config.contactors, close_time_s=params.close_time_s, open_time_s=params.open_time_s
        )
        self.calibration = CurrentCalibration.from_config(config.current_sensor)
        self.faults = _Faults()
        self.coils = CoilState()
        self._rng = random.Random(params.seed)
        self._start_s = start_s
        self._now_s = start_s
        self._current_a = 0.0
        self._cell_due_s = start_s + params.cell_period_s
        self._charge_as = 0.0  # integral of the current since the cells last moved
        self._charge_dt_s = 0.0
        self._truths: dict[int, Truth] = {}
        self._string_v = 0.0
        self._refresh_cells()

    # --- configuration --------------------------------------------------------------------

    def _make_cells(self, config: SystemConfig) -> SimulatedDriver:
        p = self.params
        return SimulatedDriver(
            config,
            list(range(config.topology.modules)),
            seed=p.seed,
            initial_soc_pct=p.initial_soc_pct,
            ambient_c=p.ambient_c,
        )

    def configure(self, config: SystemConfig) -> bool:
        """A new configuration; the contacts stay where they are. The cells start again only
        when their physics changed (topology, chemistry, capacity, balancing): True then."""
        cell_keys = ("topology", "chemistry", "chemistry_overrides", "cell_capacity_ah",
                     "balancing")  # fmt: skip
        restart = any(getattr(config, k) != getattr(self.config, k) for k in cell_keys)
        self.config = config
        self.contactors.reconfigure(config.contactors)
        self.calibration = CurrentCalibration.from_config(config.current_sensor)
        if restart:
            self.cells = self._make_cells(config)
            self._refresh_cells()
        return restart

    # --- inputs from the devices ----------------------------------------------------------

    def set_coils(self, coils: CoilState) -> None:
        """The relay module's coil outputs; they act from the next step on."""
        self.coils = coils

    def set_balancing(self, module: int, discharge: Sequence[bool]) -> None:
        """The board's bleed switches (ValueError for a wrong count or an unknown module)."""
        sim = self.cells.modules.get(module)
        if sim is None:
            raise ValueError(f"module {module} is not in this plant")
        if len(discharge) != sim.n_cells:
            raise ValueError(
                f"module {module}: {len(discharge)} balancing switches, it has {sim.n_cells} cells"
            )
        self.cells.set_balancing(module, list(discharge), [False] * sim.n_cells)

    # --- physics ---------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        return self._now_s

    @property
    def start_s(self) -> float:
        """When the core started: `demand` and `profile` get `now_s - start_s`."""
        return self._start_s

    def step(self, now_s: float) -> None:
        """Advance to `now_s` (a time before the last one advances nothing)."""
        dt_s = now_s - self._now_s
        if not dt_s > 0.0:
            return
        current_a = self._string_current_a(now_s)
        self._current_a = current_a
        self.contactors.step(dt_s, self.coils, self._string_v)
        self._now_s = now_s
        self._charge_as += current_a * dt_s
        self._charge_dt_s += dt_s
        if now_s >= self._cell_due_s - _TIME_EPS_S:
            mean_a = self._charge_as / self._charge_dt_s
            self.cells.advance(self._charge_dt_s, mean_a)
            self._charge_as = self._charge_dt_s = 0.0
            self._cell_due_s = now_s + self.params.cell_period_s
            self._refresh_cells()

    def _string_current_a(self, now_s: float) -> float:
        contacts = self.contactors.feedback
        if not contacts.main_negative:
            return 0.0
        if contacts.main_positive:
            return self._inverter_current_a(now_s)
        if contacts.precharge:
            # Out of the pack into the DC link (or a short across it) through the resistor.
            r_pre = self.config.contactors.precharge_resistor_ohm
            return -(self._string_v - self.contactors.bus_voltage_v) / r_pre
        return 0.0

    def _inverter_current_a(self, now_s: float) -> float:
        t_s = now_s - self._start_s
        soc = self._mean_soc_pct()
        v_min, v_max = self._cell_v_range()
        source = self.profile if self.demand is None or self.faults.ignore_limits else self.demand
        want = source.current_a(t_s, soc_pct=soc, cell_v_min=v_min, cell_v_max=v_max)
        if not math.isfinite(want):
            return 0.0
        return max(-CURRENT_RANGE_A, min(CURRENT_RANGE_A, want))

    def _refresh_cells(self) -> None:
        self._truths = {m: self.cells.truth(m) for m in self.cells.modules}
        self._string_v = float(sum(float(t.cell_v.sum()) for t in self._truths.values()))

    def _mean_soc_pct(self) -> float | None:
        if not self._truths:
            return None
        return float(np.mean(np.concatenate([t.soc_pct for t in self._truths.values()])))

    def _cell_v_range(self) -> tuple[float, float]:
        v = np.concatenate([t.cell_v for t in self._truths.values()])
        return float(v.min()), float(v.max())

    # --- outputs ---------------------------------------------------------------------------

    def truth(self, module: int) -> Truth:
        """True state of one module as of the last cell update."""
        return self._truths[module]

    def read_board(self, module: int) -> Reading:
        """What board `module`'s front end measures now (fresh noise, cell faults applied)."""
        return self.cells.modules[module].read()

    @property
    def modules(self) -> list[int]:
        return list(self.cells.modules)

    def feedback(self) -> dict[ContactorName, bool]:
        contacts = self.contactors.feedback
        shown = {name: bool(getattr(contacts, name)) for name in CONTACTORS}
        return shown | self.faults.feedback_stuck

    def state(self) -> PlantState:
        f = self.faults
        sensed: float | None = None
        if not f.current_dropout:
            noise = self._rng.uniform(-1.0, 1.0) * self.params.current_noise_a
            sensed_true = self._current_a + self.params.current_offset_a + f.current_offset_a
            # The sensor reads raw for the configured calibration: a calibrated master sees
            # the true current (plus the sensor's own errors).
            sensed = self.calibration.raw_a(sensed_true + noise)
        silent = frozenset(self.modules) if f.all_boards_silent else frozenset(f.silent_boards)
        return PlantState(
            time_s=self._now_s,
            current_a=self._current_a,
            sensed_current_a=sensed,
            string_voltage_v=self._string_v,
            sensed_string_voltage_v=self._string_v + f.voltage_offset_v,
            link_voltage_v=self.contactors.bus_voltage_v,
            u3_v=self.params.u3_v,
            sensor_temperature_c=self.params.sensor_temperature_c,
            insulation_ohm=f.insulation_ohm
            if f.insulation_ohm is not None
            else self.params.insulation_ohm,
            contacts=self.contactors.feedback,
            feedback=self.feedback(),
            silent_boards=silent,
            insulation_monitor_silent=f.insulation_monitor_silent,
        )

    # --- fault injection -------------------------------------------------------------------

    def inject(self, control: PlantControl) -> str:
        """Apply one fault (ValueError when it does not fit); a line saying what was done."""
        handler = _FAULT_HANDLERS.get(control.fault)
        if handler is None:
            raise ValueError(
                f"{control.fault} is a fault of the slave agent's loop, not of the plant"
            )
        if control.duration_s is not None and control.fault not in PLANT_CELL_FAULTS:
            raise ValueError(f"{control.fault} takes no duration: it lasts until clear")
        return handler(self, control)

    def _inject_cells(self, control: PlantControl) -> str:
        if control.contactor is not None:
            raise ValueError(f"{control.fault} takes no contactor")
        if control.module is not None and control.module not in self.cells.modules:
            raise ValueError(f"module {number_of(control.module)} is not in this plant")
        sim = SimControl(
            fault=cast(FaultKind, control.fault),
            module=control.module,
            channel=control.channel,
            target=control.target,
            value=control.value,
            duration_s=control.duration_s,
        )
        hit = self.cells.inject(sim)
        return f"{control.fault} on modules {[number_of(m) for m in hit]} (numbered from 1)"

    def _clear(self, control: PlantControl) -> str:
        self.faults = _Faults()
        self.contactors.clear_faults()
        self.cells.inject(SimControl(fault="clear"))
        return "every fault cleared"

    def _board_dropout(self, control: PlantControl) -> str:
        if control.module is None:
            self.faults.all_boards_silent = True
            return "every board silent"
        if control.module not in self.cells.modules:
            raise ValueError(f"module {number_of(control.module)} is not in this plant")
        self.faults.silent_boards.add(control.module)
        return f"board of module {number_of(control.module)} silent"

    def _current_offset(self, control: PlantControl) -> str:
        if control.value is None:
            raise ValueError("current_offset needs a value (A)")
        self.faults.current_offset_a = control.value
        return f"current sensor offset {control.value:g} A"

    def _current_dropout(self, control: PlantControl) -> str:
        self.faults.current_dropout = True
        return "current sensor silent"

    def _contactor_weld(self, control: PlantControl) -> str:
        name = _contactor(control)
        self.contactors.weld(name)
        return f"{name} welded"

    def _feedback_stuck(self, control: PlantControl) -> str:
        name = _contactor(control)
        if control.value not in (None, 0.0, 1.0):
            raise ValueError(f"feedback_stuck: value 1 (closed) or 0 (open), got {control.value}")
        closed = control.value == 1.0
        self.faults.feedback_stuck[name] = closed
        return f"{name} auxiliary contact stuck {'closed' if closed else 'open'}"

    def _insulation_fault(self, control: PlantControl) -> str:
        ohm = DEFAULT_INSULATION_FAULT_OHM if control.value is None else control.value
        if not ohm > 0.0:
            raise ValueError(f"insulation_fault: resistance must be positive, got {ohm:g}")
        self.faults.insulation_ohm = ohm
        return f"insulation {ohm:g} ohm"

    def _precharge_short(self, control: PlantControl) -> str:
        self.contactors.precharge_short()
        return "DC link shorted"

    def _ignore_limits(self, control: PlantControl) -> str:
        self.faults.ignore_limits = True
        return "inverter ignores the BMS limits"

    def _voltage_offset(self, control: PlantControl) -> str:
        if control.value is None:
            raise ValueError("voltage_offset needs a value (V)")
        self.faults.voltage_offset_v = control.value
        return f"current sensor U1 off by {control.value:g} V"

    def _insulation_monitor_silent(self, control: PlantControl) -> str:
        self.faults.insulation_monitor_silent = True
        return "insulation monitor silent"


def _contactor(control: PlantControl) -> ContactorName:
    if control.contactor is None:
        raise ValueError(f"{control.fault} needs a contactor ({', '.join(CONTACTORS)})")
    return control.contactor


_FAULT_HANDLERS: Final[dict[str, Callable[[PlantCore, PlantControl], str]]] = {
    **{kind: PlantCore._inject_cells for kind in PLANT_CELL_FAULTS},
    "clear": PlantCore._clear,
    "board_dropout": PlantCore._board_dropout,
    "current_offset": PlantCore._current_offset,
    "current_dropout": PlantCore._current_dropout,
    "contactor_weld": PlantCore._contactor_weld,
    "feedback_stuck": PlantCore._feedback_stuck,
    "insulation_fault": PlantCore._insulation_fault,
    "precharge_short": PlantCore._precharge_short,
    "inverter_ignores_limits": PlantCore._ignore_limits,
    "voltage_offset": PlantCore._voltage_offset,
    "insulation_monitor_silent": PlantCore._insulation_monitor_silent,
}
"""Fault -> handler: a table, so each fault has one obvious place."""
