"""Field accuracy of the SOC and SOH the master publishes, on cells the project never tuned on.

Runs exactly the service's path: `PackEstimator` built from a `SystemConfig` made with
`SystemConfig.from_preset` for the chemistry (the shipped preset and its OCV table, nothing from
the cell), fed with a complete snapshot and the pack current as `MasterService` does, through
the PyBaMM field scenarios of bench/soc_pybamm_traces.py (three days of PV charge, evening load
and night rest, a cloudy day, one full cycle at the end; four cells of 0.97-1.03 capacity, the
LFP pack with one cell 8 % aged by lithium-inventory loss; NMC Mohtat2020 at 10 degC, LFP
Prada2013 at 35 degC).

The PyBaMM cell is scaled to a 100 Ah cell (a parallel group: current x n, SOC and voltages
unchanged). The trace is stored every 10 s; the estimator is fed every SERVICE_PERIOD_S = 5 s
(the service runs it at about 2-50 Hz). 5 s is the counter's max_gap_s, so nothing goes
uncounted, and the trace's current is linear between its samples (PyBaMM interpolates it
linearly), so the trapezoid sum is exact at 5 s as at 0.1 s.

Cases per chemistry:
  sensors  ideal  1 mV voltage noise, no current offset
           spec   per-channel voltage bias +50 / -30 / +20 / -50 mV, 2 mV noise, current offset
                  -0.1 A (a discharge reads larger), the specification limits
           spec+  the same with the current offset +0.1 A (a charge reads larger)
  start    rested    first start from the rested OCV (7 h night rest before the first load)
           restored  a stored SOC record 20 % above the truth on every cell (sigma 3 %)

Truth: per-cell SOC on the PyBaMM set's stoichiometry scale; pack SOC = the share of the
string's usable charge (charge to the first empty cell / (that + charge to the first full cell)),
so 0 % and 100 % are where the first cell reaches a limit; pack SOH = the smallest cell's
capacity / the configured capacity.

Columns: RMSE and max |error| of the published pack SOC (all samples, and after the first
full/empty anchor), hours until the error stays within 5 % for good ("-" = never), hours reading
<= 5 % while the truth is > 15 %, SOH error at the end (after the full cycle), and the SOH change
across a restart (records() -> restore() into a new estimator), and the share of samples whose
error lies within twice the published 1-sigma (PackState.soc_std).

Side by side (`| EKF` columns): the same run with the 1RC EKF of bench/soc_ekf.py in the
counter's place (`EkfPackEstimator`: the same start, restored records, anchors, SOH and pack
rule; only the cells' SOC differs): RMSE, RMSE and max after the first anchor, low hours, and
the in-2-sigma share. The better of the two is what the service publishes (the choice and its
figures: services/master_core/estimator.py).

LFP hysteresis (`python bench/bench_soc_field.py hysteresis`): PyBaMM sets have no OCV
hysteresis, so the LFP field trace gets one added: each cell's voltage + M h(t), with h of
Plett's one-state model (Battery Management Systems Vol. 1, 2015, ch. 2) integrated from the
true current and capacity, dh/dt = -|i gamma / Q| (h - sign i), M = HYST_HALF_GAP_V = 10 mV (the
branches 20 mV apart: the 10-20 mV cited for LFP, Dreyer et al., Nature Materials 9, 2010),
gamma = HYST_GAMMA_TRUE = 40 (the estimator's default is 50: the model is not told the truth),
h = -1 at the start (last moved by a discharge). The estimator gets the cell's own OCV
(Prada2013, pybamm_lfp.json) either as a single mid curve or as branches mid +- M, and the
shipped generic preset for reference; the EKF beside it reads the same branches through the
counter's hysteresis state (bench/soc_ekf.py). Sensors: ideal and spec as above, and fine (1 mV
noise, and the estimator told voltage_error_v = 10 mV: a calibrated front end, where the OCV
reads on LFP's slopes are worth a correction and the branch matters most).

Known offsets (`--known-offsets relative|exact`): the spec rows with the per-channel voltage
offsets already learned from the start (`estimation.voltage_offsets`, loaded as a restart
would): the bias less its median over the cells (what that learner can learn) or all of it.
The upper bound of what learning the offsets can give these rows; on the field traces
themselves the learner takes nothing (one full anchor, its cells' SOC not known well enough).

After commissioning (`python bench/bench_soc_field.py commissioned`): the same rows with the OCV
branches the stack derives itself, as a user would commission it: the C/20 capture of the same
pack (bench/soc_pybamm_traces.py commissioning: CC/CV full charge, C/20 discharge to the cut-off,
C/20 charge to the CV end, 10 s samples, the same sensors as the row) fed to
`estimation/ocv_capture.py` as the master feeds it, its CSV imported through the wizard's parser
(`config_ui/wizard/ocv_csv.py`). Nothing is taken from the cell's data set. Its SOC scale is the
string's C/20 window; the truth's is the data set's stoichiometry (LFP Prada2013 at 35 degC: the
C/20 window holds 84 of the aged cell's 92 Ah, so there the derived table reads short).

Usage: python bench/bench_soc_field.py [--scenario nmc] [--sensors spec] [--start rested]
[--no-ekf] [--known-offsets relative] (each option but the last two repeatable; all rows by
default) | hysteresis | commissioned
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.soc_ekf import EkfPackEstimator
from services.config_ui.wizard.ocv_csv import parse_ocv_csv
from services.master_core.estimation.ocv_capture import CaptureParams, OcvCapture
from services.master_core.estimator import EstimatorRecords, PackEstimator
from services.master_core.pack import PackSnapshot
from services.master_core.persisted import SocRecord
from shared.config import SystemConfig
from shared.config.chemistry import ChemistryOverrides

FloatArray = NDArray[np.float64]

DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "master_core" / "data"
SYSTEM_CELL_AH = 100.0
SERVICE_PERIOD_S = 5.0
SCENARIOS = ("nmc", "lfp")
SENSORS = ("ideal", "spec", "spec+")
STARTS = ("rested", "restored")
SEED = 11
SPEC_BIAS_V = (0.05, -0.03, 0.02, -0.05)
SPEC_CURRENT_OFFSET_A = -0.1
RESTORED_ERROR_PCT = 20.0
RESTORED_STD_PCT = 3.0
HYST_HALF_GAP_V = 0.010
HYST_GAMMA_TRUE = 40.0
HYST_H0 = -1.0
FINE_VOLTAGE_ERROR_V = 0.010
COMMISSIONING_STEP_DT_S = 10.0


@dataclass(frozen=True)
class FieldTrace:
    name: str
    chemistry: str
    time_s: FloatArray
    current_a: FloatArray
    """Scaled to the system cell, positive = charging."""
    cell_v: FloatArray
    """[samples, cells]."""
    cell_soc_pct: FloatArray
    """True SOC per cell [samples, cells]."""
    capacity_ah: FloatArray
    """Per cell, scaled to the system cell."""
    nominal_ah: float
    meta: dict[str, Any]

    @property
    def pack_soc_pct(self) -> FloatArray:
        return usable_soc_pct(self.cell_soc_pct, self.capacity_ah)

    @property
    def soh_pct(self) -> float:
        return float(100.0 * self.capacity_ah.min() / self.nominal_ah)


def usable_soc_pct(cell_soc_pct: FloatArray, capacity_ah: FloatArray) -> FloatArray:
    """The share of a series string's usable charge still to deliver, in %."""
    out_ah = np.min(cell_soc_pct * capacity_ah, axis=-1)
    in_ah = np.min((100.0 - cell_soc_pct) * capacity_ah, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(out_ah + in_ah > 0.0, 100.0 * out_ah / (out_ah + in_ah), 0.0)
    return cast(FloatArray, np.clip(share, 0.0, 100.0))


def load_field(name: str, prefix: str = "field") -> FieldTrace:
    meta = json.loads((DATA_DIR / f"{prefix}_{name}.json").read_text(encoding="utf-8"))
    with gzip.open(DATA_DIR / f"{prefix}_{name}.csv.gz", "rt") as fh:
        data = np.loadtxt(fh, delimiter=",", skiprows=1)
    t, i, v = data[:, 0], data[:, 1], data[:, 2:]
    cap = np.asarray(meta["capacity_ah"], dtype=np.float64)
    moved_ah = np.concatenate([[0.0], np.cumsum(0.5 * (i[1:] + i[:-1]) * np.diff(t))]) / 3600.0
    soc = float(meta["initial_soc_pct"]) + 100.0 * moved_ah[:, None] / cap[None, :]
    scale = SYSTEM_CELL_AH / float(meta["nominal_capacity_ah"])
    return FieldTrace(
        name=name,
        chemistry=str(meta["chemistry"]),
        time_s=t,
        current_a=i * scale,
        cell_v=v,
        cell_soc_pct=soc,
        capacity_ah=cap * scale,
        nominal_ah=SYSTEM_CELL_AH,
        meta=meta,
    )


def field_config(chemistry: str, n_cells: int) -> SystemConfig:
    """The configuration a user gets from the wizard: the shipped preset, rated capacity."""
    return SystemConfig.from_preset(
        chemistry,
        system_id="bench",
        modules=1,
        cells_per_module=n_cells,
        temp_sensors_per_module=1,
        cell_capacity_ah=SYSTEM_CELL_AH,
    )


@dataclass
class _Snap:
    """What `PackEstimator.update` reads of a `PackSnapshot` (no temperature sensor works: the
    OCV model takes its reference table)."""

    cell_v: FloatArray
    complete: bool = True
    temp_avg_c: float | None = None

    @property
    def temp_c(self) -> FloatArray:
        return np.full(1, np.nan)

    @property
    def module_of_cell(self) -> NDArray[np.int64]:
        return np.zeros(len(self.cell_v), dtype=np.int64)


@dataclass(frozen=True)
class FieldResult:
    rmse: float
    max_abs: float
    rmse_anchored: float
    max_anchored: float
    hours_to_5: float
    hours_low: float
    soh_error: float
    soh_restart: float
    within_2sigma: float
    """Share of samples (%) whose error is within twice the published 1-sigma (`soc_std`):
    about 95 % if the uncertainty is honest and the errors are roughly normal."""
    published: FloatArray
    truth: FloatArray

    def row(self) -> str:
        to5 = "-" if not np.isfinite(self.hours_to_5) else f"{self.hours_to_5:.1f}"
        return (
            f"{self.rmse:6.2f} {self.max_abs:6.2f} {self.rmse_anchored:7.2f} "
            f"{self.max_anchored:7.2f} {to5:>6} {self.hours_low:6.2f} {self.soh_error:+7.2f} "
            f"{self.soh_restart:+7.2f} {self.within_2sigma:6.1f}"
        )

    def short_row(self) -> str:
        """The SOC columns only, for the side-by-side comparison."""
        return (
            f"{self.rmse:6.2f} {self.rmse_anchored:7.2f} {self.max_anchored:7.2f} "
            f"{self.hours_low:6.2f} {self.within_2sigma:6.1f}"
        )


HEADER = (
    f"{'scenario':<24}{'RMSE':>6} {'max':>6} {'RMSE@a':>7} {'max@a':>7} {'to5%h':>6} "
    f"{'low h':>6} {'SOH err':>7} {'restart':>7} {'in 2s%':>6}"
)
EKF_HEADER = f" | EKF {'RMSE':>6} {'RMSE@a':>7} {'max@a':>7} {'low h':>6} {'in 2s%':>6}"
ESTIMATORS: dict[str, type[PackEstimator]] = {
    "counter": PackEstimator,
    "ekf": EkfPackEstimator,
}


def run_field(
    trace: FieldTrace,
    sensors: str,
    start: str,
    seed: int = SEED,
    estimator: str = "counter",
    config: SystemConfig | None = None,
    known_offsets: str = "none",
) -> FieldResult:
    rng = np.random.default_rng(seed)
    n_cells = trace.cell_v.shape[1]
    if config is None:
        config = field_config(trace.chemistry, n_cells)
    est = ESTIMATORS[estimator](config)
    if sensors in ("spec", "spec+") and known_offsets != "none":
        bias = np.asarray(SPEC_BIAS_V)[:n_cells]
        learned = bias - float(np.median(bias)) if known_offsets == "relative" else bias
        averaged = est.cell_offsets.params.anchors_averaged
        est.cell_offsets.load_state(learned, [averaged] * n_cells)
    if sensors == "fine":
        est.counter.params = replace(est.counter.params, voltage_error_v=FINE_VOLTAGE_ERROR_V)
        if isinstance(est, EkfPackEstimator):
            est.ekf.params = replace(est.ekf.params, voltage_error_v=FINE_VOLTAGE_ERROR_V)
    step = SERVICE_PERIOD_S
    t = np.arange(trace.time_s[0], trace.time_s[-1], step)
    current = np.interp(t, trace.time_s, trace.current_a)
    volts = np.column_stack(
        [np.interp(t, trace.time_s, trace.cell_v[:, k]) for k in range(n_cells)]
    )
    truth = np.interp(t, trace.time_s, trace.pack_soc_pct)
    volts, current = _with_sensors(volts, current, sensors, rng)
    if start == "restored":
        cells0 = np.clip(trace.cell_soc_pct[0] + RESTORED_ERROR_PCT, 0.0, 100.0)
        est.restore(
            EstimatorRecords(
                soc=SocRecord(soc_pct=cells0.tolist(), soc_std_pct=[RESTORED_STD_PCT] * n_cells)
            )
        )
    published = np.full(len(t), np.nan)
    sigma = np.full(len(t), np.nan)
    anchored_at = len(t)
    last = t[0]
    for k in range(len(t)):
        snap = cast(PackSnapshot, _Snap(volts[k]))
        est.update(snap, float(current[k]), float(t[k] - last), float(t[k]))
        last = t[k]
        soc = est.pack_soc_pct
        published[k] = np.nan if soc is None else soc
        std = est.pack_soc_std_pct
        sigma[k] = np.nan if std is None else std
        if anchored_at == len(t) and est.counter.anchors > 0:
            anchored_at = k
    err = published - truth
    ok = np.isfinite(err)
    rmse = float(np.sqrt(np.mean(err[ok] ** 2)))
    after = err[anchored_at:]
    after = after[np.isfinite(after)]
    outside = np.flatnonzero(~(np.abs(err) <= 5.0))
    hours_to_5 = (
        0.0
        if outside.size == 0
        else (math.inf if outside[-1] == len(t) - 1 else (t[outside[-1] + 1] - t[0]) / 3600.0)
    )
    low = (published <= 5.0) & (truth > 15.0)
    soh_before = est.soh_pct
    records = est.records()
    again = type(est)(config)
    if records is not None:
        again.restore(records)
    soh_after = again.soh_pct
    return FieldResult(
        rmse=rmse,
        max_abs=float(np.nanmax(np.abs(err))),
        rmse_anchored=float(np.sqrt(np.mean(after**2))) if after.size else math.nan,
        max_anchored=float(np.max(np.abs(after))) if after.size else math.nan,
        hours_to_5=hours_to_5,
        hours_low=float(np.count_nonzero(low) * step / 3600.0),
        soh_error=(soh_before or math.nan) - trace.soh_pct,
        soh_restart=(soh_after or math.nan) - (soh_before or math.nan),
        within_2sigma=float(100.0 * np.mean(np.abs(err[ok]) <= 2.0 * sigma[ok])),
        published=published,
        truth=truth,
    )


def _with_sensors(
    volts: FloatArray, current: FloatArray, sensors: str, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """What the sensors read (see the module docstring's sensor cases)."""
    if sensors in ("spec", "spec+"):
        volts = volts + np.asarray(SPEC_BIAS_V)[None, : volts.shape[1]]
        volts = volts + rng.normal(0.0, 0.002, size=volts.shape)
        current = current + SPEC_CURRENT_OFFSET_A * (-1.0 if sensors == "spec+" else 1.0)
    else:
        volts = volts + rng.normal(0.0, 0.001, size=volts.shape)
    return volts, current


def _sensed(
    trace: FieldTrace, sensors: str, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    return _with_sensors(trace.cell_v, trace.current_a, sensors, rng)


def with_hysteresis(trace: FieldTrace) -> FieldTrace:
    """The trace with each cell's voltage + HYST_HALF_GAP_V x h, h integrated from the true
    current per cell (exact per sample for the mean current of the interval)."""
    h = np.full(trace.cell_v.shape[1], HYST_H0)
    term = np.empty_like(trace.cell_v)
    term[0] = h
    for k in range(1, len(trace.time_s)):
        dt = trace.time_s[k] - trace.time_s[k - 1]
        i = 0.5 * (trace.current_a[k] + trace.current_a[k - 1])
        rate = abs(i) * HYST_GAMMA_TRUE * dt / (3600.0 * trace.capacity_ah)
        h = np.sign(i) + (h - np.sign(i)) * np.exp(-rate)
        term[k] = h
    return replace(trace, name=f"{trace.name}-hyst", cell_v=trace.cell_v + HYST_HALF_GAP_V * term)


def hysteresis_configs(n_cells: int) -> dict[str, SystemConfig]:
    """The cell's own OCV as one mid curve and as branches mid +- HYST_HALF_GAP_V, and the
    shipped preset."""
    meta = json.loads((DATA_DIR / "pybamm_lfp.json").read_text(encoding="utf-8"))
    soc, mid = meta["ocv_table_soc_pct"], meta["ocv_table_v"]
    base = field_config("LFP", n_cells)
    single = ChemistryOverrides(ocv_table_soc_pct=soc, ocv_table_v=mid)
    branches = ChemistryOverrides(
        ocv_table_soc_pct=soc,
        ocv_table_v=mid,
        ocv_charge_v=[round(v + HYST_HALF_GAP_V, 5) for v in mid],
        ocv_discharge_v=[round(v - HYST_HALF_GAP_V, 5) for v in mid],
    )
    return {
        "preset": base,
        "own mid": base.model_copy(update={"chemistry_overrides": single}),
        "own branches": base.model_copy(update={"chemistry_overrides": branches}),
    }


def main_hysteresis() -> None:
    print(__doc__.split("\n\n")[0])
    print(
        f"LFP hysteresis: +-{1000 * HYST_HALF_GAP_V:g} mV (gamma {HYST_GAMMA_TRUE:g}, h0 "
        f"{HYST_H0:g}); service period {SERVICE_PERIOD_S:g} s\n"
    )
    print(HEADER + EKF_HEADER)
    trace = with_hysteresis(load_field("lfp"))
    configs = hysteresis_configs(trace.cell_v.shape[1])
    for sensors in ("ideal", "fine", "spec"):
        for label, config in configs.items():
            result = run_field(trace, sensors, "rested", config=config)
            ekf = run_field(trace, sensors, "rested", estimator="ekf", config=config)
            print(f"{f'{sensors} {label}':<24}{result.row()} |     {ekf.short_row()}", flush=True)
    print(
        f"  ({trace.meta['source']}, {trace.meta['temperature_c']:g} degC, "
        f"{trace.meta['duration_s'] / 3600:.0f} h; true pack SOH {trace.soh_pct:.1f} %)"
    )


def load_commissioning(name: str) -> FieldTrace:
    """The C/20 capture of the same pack (bench/soc_pybamm_traces.py commissioning), scaled
    as `load_field`; its true SOC is not needed."""
    return load_field(name, prefix="c20")


def commissioned_config(trace: FieldTrace, sensors: str, seed: int = SEED) -> SystemConfig:
    """The configuration after commissioning: the shipped preset with the OCV branches the
    stack derives from its own C/20 capture (`estimation/ocv_capture.py`, fed as the master
    feeds it, with the same sensors as the field run) and imports through the wizard's CSV
    (`config_ui/wizard/ocv_csv.py`): the user's path, nothing taken from the cell's data set."""
    n_cells = trace.cell_v.shape[1]
    base = field_config(trace.chemistry, n_cells)
    chem = base.cell_chemistry
    capture = OcvCapture(
        n_cells,
        CaptureParams(
            capacity_ah=base.cell_capacity_ah,
            charge_v=chem.charge_v,
            discharge_cutoff_v=chem.discharge_cutoff_v,
            soc_grid_pct=tuple(float(x) for x in chem.ocv_table_soc_pct),
            # the trace's 10 s samples: the master's are 0.1 s apart
            step_max_dt_s=COMMISSIONING_STEP_DT_S,
        ),
    )
    volts, current = _sensed(trace, sensors, np.random.default_rng(seed))
    capture.start(float(trace.time_s[0]))
    temp = np.full(n_cells, float(trace.meta["temperature_c"]))
    for k in range(len(trace.time_s)):
        capture.update(float(trace.time_s[k]), float(current[k]), volts[k], temp)
    if capture.result is None:
        raise RuntimeError(f"the C/20 capture of {trace.name} did not complete: {capture.reason}")
    parsed = parse_ocv_csv(capture.result.csv(), source="C/20 capture")
    if parsed.errors:
        raise RuntimeError(f"the wizard refuses the capture's CSV: {parsed.errors}")
    prefix = "chemistry_overrides."
    overrides = ChemistryOverrides.model_validate(
        {k.removeprefix(prefix): v for k, v in parsed.values.items()}
    )
    return base.model_copy(update={"chemistry_overrides": overrides})


def main_commissioned() -> None:
    print(__doc__.split("\n\n")[0])
    print(
        "After commissioning: OCV branches from the stack's own C/20 capture (same sensors), "
        f"service period {SERVICE_PERIOD_S:g} s\n"
    )
    print(HEADER)
    for name in SCENARIOS:
        trace = load_field(name)
        capture = load_commissioning(name)
        for sensors in ("ideal", "spec"):
            config = commissioned_config(capture, sensors)
            for start in STARTS:
                result = run_field(trace, sensors, start, config=config)
                print(f"{f'{name} {sensors} {start}':<24}{result.row()}", flush=True)


def main() -> None:
    if sys.argv[1:] == ["hysteresis"]:
        main_hysteresis()
        return
    if sys.argv[1:] == ["commissioned"]:
        main_commissioned()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    parser.add_argument("--sensors", action="append", choices=SENSORS)
    parser.add_argument("--start", action="append", choices=STARTS)
    parser.add_argument("--no-ekf", action="store_true", help="the published estimator only")
    parser.add_argument("--known-offsets", choices=("none", "relative", "exact"), default="none")
    args = parser.parse_args()
    print(__doc__.split("\n\n")[0])
    print(
        f"service period {SERVICE_PERIOD_S:g} s; spec bias {SPEC_BIAS_V} V, "
        f"current offset {SPEC_CURRENT_OFFSET_A} A\n"
    )
    print(HEADER + ("" if args.no_ekf else EKF_HEADER))
    for name in args.scenario or SCENARIOS:
        trace = load_field(name)
        for sensors in args.sensors or SENSORS:
            for start in args.start or STARTS:
                result = run_field(trace, sensors, start, known_offsets=args.known_offsets)
                label = f"{name} {sensors} {start}"
                line = f"{label:<24}{result.row()}"
                if not args.no_ekf:
                    ekf = run_field(trace, sensors, start, estimator="ekf")
                    line += f" |     {ekf.short_row()}"
                print(line, flush=True)
        print(
            f"  ({trace.meta['source']}, {trace.meta['temperature_c']:g} degC, "
            f"{trace.meta['duration_s'] / 3600:.0f} h; true pack SOH {trace.soh_pct:.1f} %)"
        )


if __name__ == "__main__":
    main()
