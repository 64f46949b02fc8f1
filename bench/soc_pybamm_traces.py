"""Ground-truth SOC traces from PyBaMM for the SOC estimator benchmark and regression test.

Simulates one NMC cell (Chen2020, LG M50, SPMe with lumped thermal model) and one LFP cell
(Prada2013, A123 26650, SPMe isothermal: the set lacks the current-collector data the thermal
model needs) through the same ~3 h profile, sampled at 1 s:

    drive 30 min | rest 20 min | drive 25 min | rest 20 min | charge 0.5C 15 min |
    drive 10 min | charge 0.5C to the upper cut-off, hold until C/20 | rest 10 min

"drive" = random current steps of 10-60 s between -1.1C and +0.4C (mean about -0.35C), from a
fixed seed. Start SOC 75 %. True SOC = SOC0 + charge in / capacity, with the capacity taken from
the set's stoichiometry limits (the same 0-100 % scale as PyBaMM's `initial_soc`).

Writes tests/master_core/data/pybamm_<chem>.csv.gz (time_s, current_a positive = charging,
terminal_v, true_soc_pct) and pybamm_<chem>.json (capacity, 41-point OCV table from the same set,
1RC parameters fitted to a PyBaMM 1C/30 s pulse at 50 % SOC, provenance).

Needs PyBaMM, the `validation` dependency group: `uv sync --frozen --all-extras --group validation`.
Usage: python bench/soc_pybamm_traces.py
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

# PyBaMM may ask for telemetry consent on import; never in a batch job.
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import pybamm
from scipy.optimize import least_squares

OUT_DIR = Path(__file__).resolve().parents[1] / "tests" / "master_core" / "data"
SEED = 20_240_611
INITIAL_SOC = 0.75
OCV_POINTS = 41
PERIOD_S = 1.0

CELLS: dict[str, dict[str, Any]] = {
    "nmc": {"set": "Chen2020", "options": {"thermal": "lumped"}, "cell": "LG M50 (NMC811/Gr-Si)"},
    "lfp": {"set": "Prada2013", "options": {}, "cell": "A123 ANR26650 (LFP/Gr)"},
}

FloatArray = NDArray[np.float64]


def capacity_and_stoichiometry(pv: pybamm.ParameterValues) -> tuple[float, tuple[float, ...]]:
    x0, x100, y100, y0 = pybamm.lithium_ion.get_min_max_stoichiometries(pv)
    q_n = float(pv.evaluate(pybamm.LithiumIonParameters().n.prim.Q_init))
    return q_n * (x100 - x0), (x0, x100, y100, y0)


def ocv_table(pv: pybamm.ParameterValues, sto: tuple[float, ...]) -> tuple[FloatArray, FloatArray]:
    """OCV = U_p(y) - U_n(x) at the reference temperature, 0-100 % in OCV_POINTS steps."""
    x0, x100, y100, y0 = sto
    soc = np.linspace(0.0, 1.0, OCV_POINTS)
    u_p = pv["Positive electrode OCP [V]"]
    u_n = pv["Negative electrode OCP [V]"]
    volts = []
    for s in soc:
        x = x0 + s * (x100 - x0)
        y = y0 - s * (y0 - y100)
        volts.append(
            float(u_p(pybamm.Scalar(y)).evaluate()) - float(u_n(pybamm.Scalar(x)).evaluate())
        )
    return soc * 100.0, np.array(volts)


def drive(rng: np.random.Generator, seconds: int) -> list[float]:
    """Random current steps in C (positive = charging)."""
    out: list[float] = []
    while len(out) < seconds:
        out += [rng.uniform(-1.0, 0.5) - 0.1] * int(rng.integers(10, 61))
    return out[:seconds]


def profile_c_rate() -> FloatArray:
    rng = np.random.default_rng(SEED)
    parts = [
        drive(rng, 30 * 60),
        [0.0] * (20 * 60),
        drive(rng, 25 * 60),
        [0.0] * (20 * 60),
        [0.5] * (15 * 60),
        drive(rng, 10 * 60),
    ]
    return np.array([c for part in parts for c in part], dtype=np.float64)


def simulate(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    pv = pybamm.ParameterValues(spec["set"])
    q_ah, sto = capacity_and_stoichiometry(pv)
    v_max = float(pv["Upper voltage cut-off [V]"])
    v_min = float(pv["Lower voltage cut-off [V]"])
    c_rate = profile_c_rate()
    t = np.arange(len(c_rate), dtype=np.float64) * PERIOD_S
    # PyBaMM: positive current = discharge.
    cycle = np.column_stack([t, -c_rate * q_ah])
    steps = [
        pybamm.step.current(cycle, termination=f"< {v_min} V"),
        f"Charge at 0.5C until {v_max} V",
        f"Hold at {v_max} V until C/20",
        "Rest for 10 minutes",
    ]
    model = pybamm.lithium_ion.SPMe(spec["options"])
    exp = pybamm.Experiment(steps, period=f"{PERIOD_S:g} second")
    wall = time.perf_counter()
    sol = pybamm.Simulation(model, parameter_values=pv, experiment=exp).solve(
        initial_soc=INITIAL_SOC
    )
    wall = time.perf_counter() - wall
    time_s = sol["Time [s]"].entries
    current = -sol["Current [A]"].entries
    volts = sol["Terminal voltage [V]"].entries
    q_dis = sol["Discharge capacity [A.h]"].entries
    # Step boundaries repeat a time stamp; keep the last sample of each.
    keep = np.append(np.diff(time_s) > 1e-6, True)
    time_s, current, volts, q_dis = time_s[keep], current[keep], volts[keep], q_dis[keep]
    soc_pct = (INITIAL_SOC - q_dis / q_ah) * 100.0
    ocv_soc, ocv_v = ocv_table(pv, sto)
    ecm = fit_1rc(spec, q_ah, ocv_soc, ocv_v)
    rest_check = rest_residual(time_s, current, volts, soc_pct, ocv_soc, ocv_v)
    return {
        "time_s": time_s,
        "current_a": current,
        "terminal_v": volts,
        "true_soc_pct": soc_pct,
        "meta": {
            "source": f"PyBaMM {pybamm.__version__} SPMe, parameter set {spec['set']}",
            "cell": spec["cell"],
            "model_options": spec["options"],
            "chemistry": name.upper(),
            "capacity_ah": round(q_ah, 5),
            "initial_soc_pct": INITIAL_SOC * 100.0,
            "charge_v": v_max,
            "discharge_cutoff_v": v_min,
            "sample_period_s": PERIOD_S,
            "duration_s": float(time_s[-1]),
            "samples": len(time_s),
            "sim_wall_s": round(wall, 2),
            "profile": (
                "drive 30 min, rest 20 min, drive 25 min, rest 20 min, charge 0.5C 15 min, "
                "drive 10 min, charge 0.5C to the upper cut-off, hold until C/20, rest 10 min; "
                f"drive = random 10-60 s steps in -1.1C..+0.4C, seed {SEED}"
            ),
            "true_soc": "initial_soc - discharge capacity / capacity_ah (stoichiometry limits)",
            "ocv_table_soc_pct": [round(float(s), 3) for s in ocv_soc],
            "ocv_table_v": [round(float(v), 5) for v in ocv_v],
            "ocv_table_source": "U_p(y) - U_n(x) of the parameter set at its reference T",
            "ecm_1rc": ecm,
            "rest_residual_mv": rest_check,
        },
    }


def fit_1rc(
    spec: dict[str, Any], q_ah: float, ocv_soc: FloatArray, ocv_v: FloatArray
) -> dict[str, float]:
    """R0, R1, tau of a 1RC model fitted to a 1C/30 s discharge pulse + 5 min rest at 50 % SOC."""
    pv = pybamm.ParameterValues(spec["set"])
    model = pybamm.lithium_ion.SPMe(spec["options"])
    exp = pybamm.Experiment(
        ["Rest for 10 seconds", "Discharge at 1C for 30 seconds", "Rest for 300 seconds"],
        period="0.1 second",
    )
    sol = pybamm.Simulation(model, parameter_values=pv, experiment=exp).solve(initial_soc=0.5)
    t = sol["Time [s]"].entries
    i = -sol["Current [A]"].entries
    v = sol["Terminal voltage [V]"].entries
    q = sol["Discharge capacity [A.h]"].entries
    keep = np.append(np.diff(t) > 1e-6, True)
    t, i, v, q = t[keep], i[keep], v[keep], q[keep]
    ocv = np.interp((0.5 - q / q_ah) * 100.0, ocv_soc, ocv_v)
    dt = np.diff(t, prepend=t[0])

    def model_v(p: FloatArray) -> FloatArray:
        r0, r1, tau = p
        a = np.exp(-dt / tau)
        v_rc = np.zeros_like(t)
        for k in range(1, len(t)):
            v_rc[k] = a[k] * v_rc[k - 1] + r1 * (1.0 - a[k]) * i[k]
        return ocv + r0 * i + v_rc

    res = least_squares(
        lambda p: model_v(p) - v,
        x0=np.array([0.02, 0.01, 30.0]),
        bounds=([1e-5, 1e-5, 1.0], [1.0, 1.0, 3600.0]),
    )
    r0, r1, tau = (float(x) for x in res.x)
    rms = float(np.sqrt(np.mean(res.fun**2)))
    return {
        "r0_ohm": round(r0, 6),
        "r1_ohm": round(r1, 6),
        "tau_s": round(tau, 2),
        "c1_f": round(tau / r1, 1),
        "fit_rms_mv": round(rms * 1000.0, 2),
        "fit": "1C/30 s discharge pulse + 300 s rest at 50 % SOC, 0.1 s samples",
    }


def rest_residual(
    t: FloatArray, i: FloatArray, v: FloatArray, soc: FloatArray, ocv_soc: FloatArray,
    ocv_v: FloatArray,
) -> list[dict[str, float]]:  # fmt: skip
    """Terminal voltage minus OCV(true SOC) after 5, 10 and 15 min of each rest, in mV."""
    out: list[dict[str, float]] = []
    at_rest = np.abs(i) < 1e-9
    starts = np.flatnonzero(at_rest & ~np.roll(at_rest, 1))
    for k0 in starts:
        entry = {"rest_start_s": round(float(t[k0]), 1)}
        for minutes in (5, 10, 15):
            k = int(np.searchsorted(t, t[k0] + 60.0 * minutes))
            if k < len(t) and bool(np.all(at_rest[k0 : k + 1])):
                err = v[k] - np.interp(soc[k], ocv_soc, ocv_v)
                entry[f"after_{minutes}_min"] = round(float(err) * 1000.0, 2)
        out.append(entry)
    return out


def write(name: str, result: dict[str, Any]) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    csv_path = OUT_DIR / f"pybamm_{name}.csv.gz"
    lines = ["time_s,current_a,terminal_v,true_soc_pct"]
    for t, i, v, s in zip(
        result["time_s"], result["current_a"], result["terminal_v"], result["true_soc_pct"],
        strict=True,
    ):  # fmt: skip
        lines.append(f"{t:.1f},{i:.5f},{v:.5f},{s:.4f}")
    # mtime=0: the same trace gives the same bytes.
    with gzip.GzipFile(csv_path, "wb", mtime=0) as fh:
        fh.write(("\n".join(lines) + "\n").encode())
    meta_path = OUT_DIR / f"pybamm_{name}.json"
    meta_path.write_text(json.dumps(result["meta"], indent=1) + "\n", encoding="utf-8")
    size = csv_path.stat().st_size
    print(f"{name}: {result['meta']['samples']} samples, {size / 1024:.0f} KB -> {csv_path.name}")


def main() -> None:
    names = sys.argv[1:] or list(CELLS)
    for name in names:
        result = simulate(name, CELLS[name])
        meta = result["meta"]
        print(
            f"{name}: {meta['source']}, {meta['capacity_ah']} Ah, "
            f"{meta['duration_s'] / 3600:.2f} h simulated in {meta['sim_wall_s']} s, "
            f"1RC fit {meta['ecm_1rc']}"
        )
        print(f"  rest residual (mV): {meta['rest_residual_mv']}")
        write(name, result)


if __name__ == "__main__":
    main()
