"""The `simulated` driver: the hosted modules as vectorised racks, built from the system config.

Modules with the same cell count share one `SimulatedRack` (usually the whole rack does), so
one `advance` steps every cell in one numpy pass and a `read` is a row of the rack's sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.slave_agent.driver import DriverError, ModuleReading
from services.slave_agent.sim import (
    ActiveBalancer,
    CellBankParams,
    MeasurementParams,
    Truth,
)
from services.slave_agent.sim.rack import RackModule, SimulatedRack
from shared.config import SystemConfig
from shared.messages import SimControl

# Handled by the agent loop, not by the cell physics.
LOOP_FAULTS = frozenset({"dropout", "slow_samples", "late_samples", "crash"})


def _reading(
    cell_mv: list[int], cell_flags: list[int], temp_c: list[float], temp_flags: list[int]
) -> ModuleReading:
    return ModuleReading(cell_mv, cell_flags, [round(t, 1) for t in temp_c], temp_flags)


def cells_of_module(config: SystemConfig, module: int) -> int:
    topo = config.topology
    if topo.module_cell_counts is not None:
        return topo.module_cell_counts[module]
    return topo.cells_per_module


class SimulatedDriver:
    def __init__(
        self,
        config: SystemConfig,
        modules: Sequence[int],
        *,
        seed: int = 0,
        initial_soc_pct: float = 50.0,
        ambient_c: float = 25.0,
    ) -> None:
        chem = config.cell_chemistry
        balancing = config.balancing
        active = (
            ActiveBalancer(
                current_a=balancing.current_ma / 1000.0, efficiency=balancing.active_efficiency
            )
            if balancing.mode == "active"
            else None
        )
        by_size: dict[int, list[int]] = {}
        for m in modules:
            by_size.setdefault(cells_of_module(config, m), []).append(m)
        self.racks: list[SimulatedRack] = []
        self.modules: dict[int, RackModule] = {}
        for n_cells, group in by_size.items():
            rack = SimulatedRack(
                [
                    CellBankParams(
                        n_cells=n_cells,
                        capacity_ah=config.cell_capacity_ah,
                        initial_soc_pct=initial_soc_pct,
                        ambient_c=ambient_c,
                        bleed_resistance_ohm=balancing.bleed_resistor_ohm,
                        ocv_soc_pct=chem.ocv_table_soc_pct,
                        ocv_v=chem.ocv_table_v,
                        seed=seed * 1000 + m,
                    )
                    for m in group
                ],
                n_temp_sensors=config.topology.temp_sensors_per_module,
                measurement=[MeasurementParams(seed=seed * 1000 + 500 + m) for m in group],
                active_balancer=active,
            )
            self.racks.append(rack)
            for row, m in enumerate(group):
                self.modules[m] = RackModule(rack, row)
        # Balancing switches as the racks take them: (modules, cells) per rack.
        self._discharge = [np.zeros((r.n_modules, r.n_cells), dtype=np.bool_) for r in self.racks]
        self._charge = [np.zeros((r.n_modules, r.n_cells), dtype=np.bool_) for r in self.racks]
        self._rack_of = {m: self.racks.index(sim.rack) for m, sim in self.modules.items()}
        self._modules_of = [[m for m in self.modules if self._rack_of[m] == k]
                            for k in range(len(self.racks))]  # fmt: skip
        """Each rack's modules by row."""
        self._read_since_step = [False] * len(self.racks)
        self._fresh: dict[int, ModuleReading] = {}
        """Readings sampled with their rack and not yet read."""

    def _module(self, module: int) -> RackModule:
        sim = self.modules.get(module)
        if sim is None:
            raise DriverError(f"module {module} is not simulated here")
        return sim

    def read(self, module: int) -> ModuleReading:
        reading = self._fresh.pop(module, None)
        if reading is not None:
            return reading
        sim = self._module(module)
        k = self._rack_of[module]
        if not self._read_since_step[k]:
            # the first read of a rack after a step samples all its modules in one pass;
            # the others' readings wait here for their own read
            self._read_since_step[k] = True
            mv, flags, temp, temp_flags = (a.tolist() for a in sim.rack.read_all())
            for row, m in enumerate(self._modules_of[k]):
                self._fresh[m] = _reading(mv[row], flags[row], temp[row], temp_flags[row])
            return self._fresh.pop(module)
        r = sim.read()  # read again before the next step: a fresh sample of its own
        return _reading(r.cell_mv.tolist(), r.cell_flags.tolist(), r.temp_c.tolist(),
                        r.temp_flags.tolist())  # fmt: skip

    def set_balancing(self, module: int, discharge: Sequence[bool], charge: Sequence[bool]) -> None:
        sim = self._module(module)
        if len(discharge) != sim.n_cells or len(charge) != sim.n_cells:
            raise DriverError(
                f"module {module}: {len(discharge)} discharge and {len(charge)} charge "
                f"balancing switches given, the module has {sim.n_cells} cells"
            )
        rack = self._rack_of[module]
        self._discharge[rack][sim.row] = discharge
        self._charge[rack][sim.row] = charge

    def advance(self, dt_s: float, current_a: float) -> None:
        self._fresh.clear()  # a sample prepared and not read is dropped, as in the rack
        for k, rack in enumerate(self.racks):
            rack.advance(dt_s, current_a, self._discharge[k], self._charge[k])
            self._read_since_step[k] = False

    def truth(self, module: int) -> Truth:
        return self._module(module).truth()

    def inject(self, control: SimControl) -> list[int]:
        """Apply a cell-level fault to the targeted modules; returns the modules hit."""
        targets = list(self.modules) if control.module is None else [control.module]
        hit = [m for m in targets if m in self.modules]
        for m in hit:
            faults = self.modules[m].faults
            if control.fault == "clear":
                faults.clear()
            else:
                faults.activate(
                    control.fault, channel=control.channel, value=control.value,
                    duration_s=control.duration_s, target=control.target,
                )  # fmt: skip
        return hit

    def close(self) -> None:
        pass
