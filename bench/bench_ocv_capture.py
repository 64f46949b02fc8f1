"""The OCV capture (services/master_core/estimation/ocv_capture.py) on a PyBaMM C/20 cycle.

One cell, Chen2020 (LG M50, NMC811/Gr-Si, 5 Ah), SPMe at 25 degC, sampled every 10 s:

    charge 0.5C to 4.2 V, hold until C/200 | rest 5 min | discharge C/20 to 2.5 V |
    rest 10 min | charge C/20 to 4.2 V, hold until C/200 | rest 10 min

The capture reads the samples as the master would (time, current, terminal voltage, 25 degC)
and derives both branches on a 21-point grid. The truth is the set's OCV, U_p(y) - U_n(x)
(`soc_pybamm_traces.ocv_table`), at the true SOC of each derived point (the capture's anchors
located in the solution by their times). The set models no hysteresis: the two derived
branches straddle the OCV by what a C/20 current leaves after the IR correction (solid
diffusion and electrolyte polarisation), which is what a real C/20 capture measures too.

Needs PyBaMM (`validation` group). Usage: python bench/bench_ocv_capture.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import pybamm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from soc_pybamm_traces import capacity_and_stoichiometry, ocv_table

from services.master_core.estimation.ocv_capture import CaptureParams, OcvCapture

GRID = tuple(float(s) for s in range(0, 101, 5))


def main() -> None:
    pv = pybamm.ParameterValues("Chen2020")
    q_ah, sto = capacity_and_stoichiometry(pv)
    v_max = float(pv["Upper voltage cut-off [V]"])
    v_min = float(pv["Lower voltage cut-off [V]"])
    steps = [
        f"Charge at 0.5C until {v_max} V",
        f"Hold at {v_max} V until C/200",
        "Rest for 5 minutes",
        f"Discharge at C/20 until {v_min} V",
        "Rest for 10 minutes",
        f"Charge at C/20 until {v_max} V",
        f"Hold at {v_max} V until C/200",
        "Rest for 10 minutes",
    ]
    wall = time.perf_counter()
    sol = pybamm.Simulation(
        pybamm.lithium_ion.SPMe(),
        parameter_values=pv,
        experiment=pybamm.Experiment(steps, period="10 seconds"),
    ).solve(initial_soc=0.5)
    sim_s = time.perf_counter() - wall
    t_s = sol["Time [s]"].entries
    i_a = -sol["Current [A]"].entries  # PyBaMM: positive discharging
    v = sol["Terminal voltage [V]"].entries
    soc_pct = (0.5 - sol["Discharge capacity [A.h]"].entries / q_ah) * 100.0
    keep = np.append(np.diff(t_s) > 1e-6, True)
    t_s, i_a, v, soc_pct = t_s[keep], i_a[keep], v[keep], soc_pct[keep]

    capture = OcvCapture(
        1,
        CaptureParams(
            capacity_ah=q_ah, charge_v=v_max, discharge_cutoff_v=v_min, soc_grid_pct=GRID,
            step_max_dt_s=15.0, record_period_s=60.0,
        ),
    )  # fmt: skip
    capture.start(0.0)
    for k in range(len(t_s)):
        capture.update(float(t_s[k]), float(i_a[k]), [float(v[k])], [25.0])
    # the last rest has ended: updates at rest until the end step's wait is over
    last = float(t_s[-1])
    for extra in range(1, 40):
        capture.update(last + 10.0 * extra, 0.0, [float(v[-1])], [25.0])
    result = capture.result
    print(f"PyBaMM Chen2020 SPMe C/20 cycle: {len(t_s)} samples, solved in {sim_s:.1f} s")
    print(f"capture: {capture.state} ({capture.reason})")
    if result is None:
        return
    ocv_soc, ocv_v = ocv_table(pv, sto)
    print(f"capacity: measured {result.capacity_ah:.4f} Ah (charge {result.charge_capacity_ah:.4f})"
          f", the set's {q_ah:.4f} Ah")  # fmt: skip
    r = result.resistance_ohm[0]
    print(f"resistance from the steps: {'none' if r is None else f'{1000 * r:.2f} mOhm'}")
    times = {d: (a, b) for d, a, b in result.phase_times_s}
    print(" soc   charge  true(c)  err_mV | discharge true(d)  err_mV")
    truth: dict[str, list[float]] = {}
    for direction, (a, b) in times.items():
        s0, s1 = np.interp([a, b], t_s, soc_pct)
        lo, hi = (s0, s1) if direction == "charge" else (s1, s0)
        true_soc = lo + np.asarray(GRID) / 100.0 * (hi - lo)
        truth[direction] = [float(x) for x in np.interp(true_soc, ocv_soc, ocv_v)]
    errs: dict[str, list[float]] = {"charge": [], "discharge": []}
    for k, s in enumerate(GRID):
        up, down = result.charge_v[k], result.discharge_v[k]
        tu, td = truth["charge"][k], truth["discharge"][k]
        errs["charge"].append(1000 * (up - tu))
        errs["discharge"].append(1000 * (down - td))
        print(f"{s:5.0f}  {up:.4f}  {tu:.4f}  {1000 * (up - tu):+6.1f} | {down:.4f}  {td:.4f}"
              f"  {1000 * (down - td):+6.1f}")  # fmt: skip
    # 0-5 % and 95-100 %: the steep ends, where a tenth of a % of SOC is millivolts, and the
    # first points after a reversal
    for d, e in errs.items():
        inner = np.abs(np.asarray(e[2:-2]))
        print(f"{d}: |err| 10-90 % max {inner.max():.1f} mV, mean {inner.mean():.1f} mV")


if __name__ == "__main__":
    main()
