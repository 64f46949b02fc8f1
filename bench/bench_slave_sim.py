"""Cost of the simulated slave hardware per module: per-module objects vs one vectorised rack.

For racks of 1, 8 and 14 modules of 14 cells (4 temperature sensors each), runs `steps` steps
of 0.1 s (advance, then read every module) with `SimulatedModule` objects (one Python pass per
module: the simulator before issue 19) and with one `SimulatedRack`, and prints the CPU time
per module and step of each, and the ratio. Both draw the same numbers (see
tests/slave_agent/test_sim_rack.py), so they do the same work.
Usage: python bench/bench_slave_sim.py [steps]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.slave_agent.sim import (
    ActiveBalancer,
    CellBankParams,
    FaultSet,
    MeasurementParams,
    SimulatedModule,
)
from services.slave_agent.sim.rack import SimulatedRack

DT_S = 0.1
WARMUP_STEPS = 50
CELLS = 14
SENSORS = 4


def params(n_modules: int) -> tuple[list[CellBankParams], list[MeasurementParams]]:
    cells = [CellBankParams(n_cells=CELLS, seed=m) for m in range(n_modules)]
    return cells, [MeasurementParams(seed=500 + m) for m in range(n_modules)]


def add_faults(faults: FaultSet) -> None:
    faults.activate("noisy_channel", channel=1, value=0.02)
    faults.activate("stuck_sensor", channel=2)
    faults.activate("cell_drift", channel=3, value=1e-4)


def masks(n_modules: int, active: bool) -> tuple[np.ndarray, np.ndarray]:
    discharge = np.tile(np.arange(CELLS) % 3 == 0, (n_modules, 1))
    charge = np.tile(np.arange(CELLS) % 3 == 1, (n_modules, 1)) & active
    return discharge, charge


def per_module_step(n_modules: int, *, active: bool, faults: bool) -> Callable[[float], None]:
    cells, meas = params(n_modules)
    modules = [
        SimulatedModule(c, n_temp_sensors=SENSORS, measurement=p,
                        active_balancer=ActiveBalancer() if active else None)
        for c, p in zip(cells, meas, strict=True)
    ]  # fmt: skip
    if faults:
        for module in modules:
            add_faults(module.faults)
    discharge, charge = masks(n_modules, active)

    def step(current_a: float) -> None:
        for k, module in enumerate(modules):
            module.advance(DT_S, current_a, discharge[k], charge[k])
        for module in modules:
            module.read()

    return step


def rack_step(n_modules: int, *, active: bool, faults: bool) -> Callable[[float], None]:
    cells, meas = params(n_modules)
    rack = SimulatedRack(cells, n_temp_sensors=SENSORS, measurement=meas,
                         active_balancer=ActiveBalancer() if active else None)  # fmt: skip
    if faults:
        for f in rack.faults:
            add_faults(f)
    discharge, charge = masks(n_modules, active)

    def step(current_a: float) -> None:
        rack.advance(DT_S, current_a, discharge, charge)
        for k in range(n_modules):
            rack.read(k)

    return step


def cpu_per_step(step: Callable[[float], None], steps: int) -> float:
    current = 40.0 * np.sin(np.linspace(0.0, 6.0 * np.pi, steps + WARMUP_STEPS))
    for k in range(WARMUP_STEPS):
        step(float(current[k]))
    cpu0 = time.process_time()
    for k in range(WARMUP_STEPS, WARMUP_STEPS + steps):
        step(float(current[k]))
    return (time.process_time() - cpu0) / steps


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    print(
        f"simulated slave hardware, {CELLS} cells and {SENSORS} sensors per module, "
        f"{steps} steps of {DT_S} s, numpy {np.__version__}; CPU us per module and step"
    )
    print(f"{'layout':<34} {'per module':>10} {'rack':>8} {'ratio':>6}  rack CPU at 10 Hz")
    for active, faults, label in (
        (False, False, "passive"),
        (True, False, "active"),
        (False, True, "passive, 3 faults/module"),
    ):
        for n in (1, 8, 14):
            before = cpu_per_step(per_module_step(n, active=active, faults=faults), steps) / n
            after = cpu_per_step(rack_step(n, active=active, faults=faults), steps) / n
            print(
                f"{n:>2} x {CELLS} cells, {label:<25} {before * 1e6:8.1f}   {after * 1e6:7.1f}"
                f" {before / after:5.1f}x  {after * n / DT_S * 100:5.2f} % of a core"
            )


if __name__ == "__main__":
    main()
