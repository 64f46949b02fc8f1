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

Field scenarios (`python bench/soc_pybamm_traces.py field`, bench/bench_soc_field.py): packs of
four series cells from parameter sets the tests do not tune on, over three days of stationary
storage, sampled every 10 s (`field_simulate`):

    nmc_field  Mohtat2020 (NMC532/graphite, 5 Ah), SPMe lumped thermal, ambient 10 degC; cell
               capacities 0.97 / 1.00 / 1.03 / 0.99 of the set's cell (electrode width scaled)
    lfp_field  Prada2013 (LFP/graphite) at 35 degC, another profile than the tests'; one cell
               aged 8 % by lithium-inventory loss (less lithium in the negative electrode), the
               others fresh at 0.97 / 1.00 / 1.03; Prada2013 models no hysteresis (no shipped
               PyBaMM 26.10 LFP set does), so none is in the trace

    day 1 sunny   night rest, morning load, PV charge (sine, 60 s cloud flicker), evening load
    day 2 cloudy  the same with a quarter of the sun and strong flicker: ends near 12 %
    day 3 sunny   PV charge until the first cell reaches the shipped preset's charge_v, CV hold
                  until C/20, rest 1 h, evening discharge at C/5 until the first cell reaches the
                  preset's discharge_cutoff_v (one full cycle), night rest

The smallest cell is simulated with the experiment (its limits end the CV and the discharge, as a
BMS would stop there); the others replay its current. Stored per scenario:
tests/master_core/data/field_<name>.csv.gz (time_s, current_a, v1..v4 on a uniform 10 s grid)
and field_<name>.json (capacities, initial SOCs; the true SOC is the initial SOC plus the
trapezoid integral of the current, exact for PyBaMM's linearly interpolated current).

Needs PyBaMM, the `validation` dependency group: `uv sync --frozen --all-extras --group validation`.
Commissioning (`python bench/soc_pybamm_traces.py commissioning`): the same packs through a
C/20 capture of the OCV branches (`commissioning_profile`), sampled every 10 s, stored as
tests/master_core/data/c20_<name>.csv.gz and .json: what the stack records at commissioning
before the field days (bench/bench_soc_field.py `commissioned` rows).

Usage: python bench/soc_pybamm_traces.py [nmc] [lfp] | field [nmc_field] [lfp_field]
       | commissioning [nmc_field] [lfp_field]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared.config.chemistry import get_preset

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


FIELD_PERIOD_S = 10.0
FIELD_SEED = 20_261_207
FIELD_INITIAL_SOC = 0.45
FIELD: dict[str, dict[str, Any]] = {
    "nmc_field": {
        "set": "Mohtat2020",
        "chemistry": "NMC",
        "options": {"thermal": "lumped"},
        "temperature_c": 10.0,
        "cell": "Mohtat2020 (NMC532/graphite pouch, 5 Ah)",
        # width factors; the first is the smallest cell, simulated with the experiment
        "width": (0.97, 1.00, 1.03, 0.99),
        "lli_capacity": None,
    },
    "lfp_field": {
        "set": "Prada2013",
        "chemistry": "LFP",
        "options": {},
        "temperature_c": 35.0,
        "cell": "Prada2013 (A123 ANR26650 LFP/graphite, 2.3 Ah)",
        "width": (1.00, 0.97, 1.00, 1.03),
        "lli_capacity": 0.92,
    },
}


def _field_pv(spec: dict[str, Any], width: float, lli: float | None) -> pybamm.ParameterValues:
    pv = pybamm.ParameterValues(spec["set"])
    kelvin = 273.15 + float(spec["temperature_c"])
    pv.update({"Ambient temperature [K]": kelvin, "Initial temperature [K]": kelvin})
    pv["Electrode width [m]"] = pv["Electrode width [m]"] * width
    if lli is not None:
        fresh, _ = capacity_and_stoichiometry(pv)
        key = "Initial concentration in negative electrode [mol.m-3]"
        c0 = float(pv[key])
        lo, hi = 0.5, 1.0
        for _ in range(40):  # bisect the lithium left in the negative electrode
            mid = 0.5 * (lo + hi)
            pv[key] = c0 * mid
            q, _ = capacity_and_stoichiometry(pv)
            lo, hi = (mid, hi) if q < lli * fresh else (lo, mid)
        pv[key] = c0 * hi
    return pv


def _day_c_rate(rng: np.random.Generator, sun: float) -> dict[str, FloatArray]:
    """Shapes (C, positive = charging, one value per 10 s) of one day, before scaling."""
    n = int(3600 / FIELD_PERIOD_S)

    def flicker(k: int, depth: float) -> FloatArray:
        steps = np.repeat(rng.uniform(1.0 - depth, 1.0, size=k // 6 + 1), 6)[:k]
        return steps

    morning = -flicker(2 * n, 0.6)
    pv_t = np.linspace(0.0, np.pi, 7 * n)
    solar = np.sin(pv_t) * flicker(7 * n, 0.2 if sun > 0.5 else 0.9)
    evening = -np.repeat(rng.uniform(0.3, 1.7, size=5 * n // 12 + 1), 12)[: 5 * n]
    return {"morning": morning, "solar": solar, "evening": evening}


def _scaled(shape: FloatArray, d_soc: float) -> FloatArray:
    """`shape` scaled so that it moves SOC by d_soc (fraction of the capacity)."""
    charge = float(np.sum(shape)) * FIELD_PERIOD_S / 3600.0
    return shape * (d_soc / charge)


def field_profile(q_ah: float, v_min: float, v_max: float) -> list[Any]:
    """Experiment steps of the three days for the smallest cell (capacity q_ah)."""
    rng = np.random.default_rng(FIELD_SEED)
    n = int(3600 / FIELD_PERIOD_S)
    steps: list[Any] = []

    def array_step(c_rate: FloatArray) -> Any:
        t = np.arange(len(c_rate) + 1) * FIELD_PERIOD_S
        amps = np.append(c_rate, c_rate[-1]) * q_ah
        return pybamm.step.current(
            np.column_stack([t, -amps]),
            termination=[f"< {v_min} V", f"> {v_max} V"],
        )

    # SOC targets: (after the morning load, after the PV charge, after the evening load)
    days = ((0.40, 0.80, 0.25, 1.0), (0.20, 0.32, 0.12, 0.25))
    soc = FIELD_INITIAL_SOC
    rest = np.zeros(1)
    for morning_soc, pv_soc, evening_soc, sun in days:
        shapes = _day_c_rate(rng, sun)
        day = np.concatenate(
            [
                np.zeros(7 * n),
                _scaled(shapes["morning"], morning_soc - soc),
                _scaled(shapes["solar"], pv_soc - morning_soc),
                np.zeros(n),
                _scaled(shapes["evening"], evening_soc - pv_soc),
                np.zeros(2 * n) if sun > 0.5 else rest,
            ]
        )
        soc = evening_soc
        steps.append(array_step(day))
    # day 2 ends with 2 h of rest too; day 3: the full cycle
    steps.append(array_step(np.zeros(2 * n)))
    shapes = _day_c_rate(rng, 1.0)
    steps.append(array_step(np.concatenate([np.zeros(7 * n), _scaled(shapes["morning"], -0.03)])))
    steps += [
        f"Charge at C/4 until {v_max} V",
        f"Hold at {v_max} V until C/20",
        "Rest for 1 hour",
        f"Discharge at C/5 until {v_min} V",
        "Rest for 4 hours",
    ]
    return steps


COMMISSIONING_PERIOD_S = 10.0
"""The field traces' period: the capture's IR estimate needs the current steps' first seconds."""


def commissioning_profile(q_ah: float, v_min: float, v_max: float) -> list[Any]:
    """A commissioning capture of the OCV branches (`estimation/ocv_capture.py`, full first): a
    full charge (CC C/4, CV to the capture's C/100 tail), 1 h rest, a C/20 discharge to the
    cut-off, 1 h rest, a C/20 charge to charge_v and its CV end, 1 h rest. `q_ah` is unused:
    the steps are in C."""
    del q_ah
    return [
        f"Charge at C/4 until {v_max} V",
        f"Hold at {v_max} V until C/100",
        "Rest for 1 hour",
        f"Discharge at C/20 until {v_min} V",
        "Rest for 1 hour",
        f"Charge at C/20 until {v_max} V",
        f"Hold at {v_max} V until C/100",
        "Rest for 1 hour",
    ]


def field_simulate(
    name: str,
    spec: dict[str, Any],
    profile: Any = None,
    period_s: float = FIELD_PERIOD_S,
) -> dict[str, Any]:
    """The pack of `spec` through `profile` (default: the five field days), sampled every
    `period_s`."""
    profile = profile or field_profile
    widths = spec["width"]
    lli = spec["lli_capacity"]
    base_pv = _field_pv(spec, widths[0], lli)
    q_base, _ = capacity_and_stoichiometry(base_pv)
    # The system's limits (the shipped preset), not the set's: the BMS stops charge and
    # discharge there. The true SOC stays on the set's stoichiometry scale.
    preset = get_preset(spec["chemistry"])
    v_max, v_min = preset.charge_v, preset.discharge_cutoff_v
    nominal_ah, _ = capacity_and_stoichiometry(_field_pv(spec, 1.0, None))
    wall = time.perf_counter()

    def solve(pv: pybamm.ParameterValues, steps: list[Any]) -> pybamm.Solution:
        model = pybamm.lithium_ion.SPMe(spec["options"])
        exp = pybamm.Experiment(steps, period=f"{period_s:g} seconds")
        sim = pybamm.Simulation(model, parameter_values=pv, experiment=exp)
        return sim.solve(initial_soc=FIELD_INITIAL_SOC)

    sol = solve(base_pv, profile(q_base, v_min, v_max))
    t = sol["Time [s]"].entries
    keep = np.append(np.diff(t) > 1e-6, True)
    t = t[keep]
    grid = np.arange(0.0, t[-1], period_s)
    current = np.interp(grid, t, -sol["Current [A]"].entries[keep])
    volts = [np.interp(grid, t, sol["Terminal voltage [V]"].entries[keep])]
    capacities = [q_base]
    # The other cells replay the smallest cell's current (PyBaMM: positive = discharge).
    replay = [pybamm.step.current(np.column_stack([grid, -current]))]
    for width in widths[1:]:
        pv = _field_pv(spec, width, None)
        s = solve(pv, replay)
        tk = s["Time [s]"].entries
        k = np.append(np.diff(tk) > 1e-6, True)
        volts.append(np.interp(grid, tk[k], s["Terminal voltage [V]"].entries[k]))
        capacities.append(capacity_and_stoichiometry(pv)[0])
    wall = time.perf_counter() - wall
    return {
        "time_s": grid,
        "current_a": current,
        "cell_v": np.column_stack(volts),
        "meta": {
            "source": f"PyBaMM {pybamm.__version__} SPMe, parameter set {spec['set']}",
            "cell": spec["cell"],
            "chemistry": spec["chemistry"],
            "model_options": spec["options"],
            "temperature_c": spec["temperature_c"],
            "nominal_capacity_ah": round(nominal_ah, 5),
            "capacity_ah": [round(q, 5) for q in capacities],
            "lithium_inventory_loss_cell": 0 if lli is not None else None,
            "initial_soc_pct": FIELD_INITIAL_SOC * 100.0,
            "charge_v": v_max,
            "discharge_cutoff_v": v_min,
            "sample_period_s": period_s,
            "duration_s": float(grid[-1]),
            "samples": len(grid),
            "sim_wall_s": round(wall, 1),
            "seed": FIELD_SEED,
            "true_soc": "initial_soc_pct + 100 x trapezoid integral of current_a / capacity_ah",
        },
    }


def field_write(name: str, result: dict[str, Any], prefix: str = "field") -> None:
    csv_path = OUT_DIR / f"{prefix}_{name.removesuffix('_field')}.csv.gz"
    cells = result["cell_v"].shape[1]
    lines = ["time_s,current_a," + ",".join(f"v{k + 1}" for k in range(cells))]
    for t, i, v in zip(result["time_s"], result["current_a"], result["cell_v"], strict=True):
        lines.append(f"{t:.0f},{i:.4f}," + ",".join(f"{x:.4f}" for x in v))
    with gzip.GzipFile(csv_path, "wb", mtime=0) as fh:
        fh.write(("\n".join(lines) + "\n").encode())
    meta_path = csv_path.with_name(csv_path.name.removesuffix(".csv.gz") + ".json")
    meta_path.write_text(json.dumps(result["meta"], indent=1) + "\n", encoding="utf-8")
    size = csv_path.stat().st_size
    print(f"{name}: {result['meta']['samples']} samples, {size / 1024:.0f} KB -> {csv_path.name}")


def main() -> None:
    if sys.argv[1:2] == ["commissioning"]:
        for name in sys.argv[2:] or list(FIELD):
            result = field_simulate(
                name, FIELD[name], commissioning_profile, COMMISSIONING_PERIOD_S
            )
            print(f"{name}: C/20 capture, {result['meta']['sim_wall_s']} s")
            field_write(name, result, prefix="c20")
        return
    if sys.argv[1:2] == ["field"]:
        for name in sys.argv[2:] or list(FIELD):
            result = field_simulate(name, FIELD[name])
            meta = result["meta"]
            print(
                f"{name}: {meta['source']}, {meta['capacity_ah']} Ah, "
                f"{meta['duration_s'] / 3600:.1f} h simulated in {meta['sim_wall_s']} s"
            )
            field_write(name, result)
        return
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
