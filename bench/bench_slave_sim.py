"""Cost of the simulated slave hardware: 196 cells stepped and sampled at 10 Hz.

Runs each layout for 600 steps of 0.1 s (advance + read per module) and prints the time per
step for all 196 cells and the share of one CPU core that 10 Hz real time needs.
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
    MeasurementParams,
    SimulatedModule,
)

DT_S = 0.1
WARMUP_STEPS = 50


def build(
    n_modules: int, cells: int, sensors: int, *, active: bool, faults: bool
) -> list[SimulatedModule]:
    modules = [
        SimulatedModule(
            CellBankParams(n_cells=cells, seed=m),
            n_temp_sensors=sensors,
            measurement=MeasurementParams(seed=m),
            active_balancer=ActiveBalancer() if active else None,
        )
        for m in range(n_modules)
    ]
    if faults:
        for module in modules:
            module.faults.activate("noisy_channel", channel=1, value=0.02)
            module.faults.activate("stuck_sensor", channel=2)
            module.faults.activate("cell_drift", channel=3, value=1e-4)
    return modules


def timed(modules: list[SimulatedModule], steps: int, part: str) -> tuple[float, float]:
    """Wall and CPU seconds per step for `part` in {"both", "advance", "read"}."""
    n = modules[0].n_cells
    discharge = np.arange(n) % 3 == 0
    charge = np.arange(n) % 3 == 1 if modules[0].active_balancer else None
    current = 40.0 * np.sin(np.linspace(0.0, 6.0 * np.pi, steps + WARMUP_STEPS))

    def step(k: int) -> None:
        for module in modules:
            if part != "read":
                module.advance(DT_S, float(current[k]), discharge, charge)
            if part != "advance":
                module.read()

    for k in range(WARMUP_STEPS):
        step(k)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for k in range(WARMUP_STEPS, WARMUP_STEPS + steps):
        step(k)
    return (time.perf_counter() - wall0) / steps, (time.process_time() - cpu0) / steps


def report(name: str, make: Callable[[], list[SimulatedModule]], steps: int) -> None:
    wall, cpu = timed(make(), steps, "both")
    adv, _ = timed(make(), steps, "advance")
    rd, _ = timed(make(), steps, "read")
    print(
        f"{name:<46} {wall * 1e6:8.0f} us/step  (advance {adv * 1e6:5.0f}, read {rd * 1e6:5.0f})"
        f"  CPU {cpu / DT_S * 100:5.2f} % of a core at 10 Hz"
    )


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    print(f"simulated slave hardware, 196 cells, {steps} steps of {DT_S} s, numpy {np.__version__}")
    layouts: list[tuple[str, Callable[[], list[SimulatedModule]]]] = [
        (
            "14 modules x 14 cells, passive",
            lambda: build(14, 14, 4, active=False, faults=False),
        ),
        (
            "14 modules x 14 cells, active",
            lambda: build(14, 14, 4, active=True, faults=False),
        ),
        (
            "14 modules x 14 cells, passive, 3 faults each",
            lambda: build(14, 14, 4, active=False, faults=True),
        ),
        ("1 module x 196 cells, passive", lambda: build(1, 196, 16, active=False, faults=False)),
        ("1 module x 196 cells, active", lambda: build(1, 196, 16, active=True, faults=False)),
    ]
    for name, make in layouts:
        report(name, make, steps)


if __name__ == "__main__":
    main()
