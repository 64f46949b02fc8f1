"""OCV branches from a CSV file, for the wizard's Cell data step; and what the OCV table means
for the SOC's accuracy.

The file has one row per SOC point (and temperature), with a header:

    soc_pct,ocv_charge_v,ocv_discharge_v[,temperature_c][,capacity_pct]

or `soc_pct,ocv_v[,temperature_c]` for a single curve (no hysteresis known). `ocv_charge_v` is
the voltage rested after charging to that SOC, `ocv_discharge_v` after discharging (a slow C/20
cycle with rests, or the cell maker's data); `capacity_pct` is the usable capacity at that row's
temperature in % of the rated one (the same on every row of a temperature). Lines starting with
`#` and blank lines are skipped; rows may come in any order. Every temperature must run from
0 % to 100 % SOC; temperatures whose SOC points differ are interpolated onto the union of the
points. Pure: text in, draft values or one message per bad row out.
"""

from __future__ import annotations

import csv
import itertools
import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.config_ui.wizard.draft_access import MISSING, chemistry_name, get_path
from shared.config.chemistry import (
    ChemistryOverrides,
    ChemistryPreset,
    branch_middle,
    get_preset,
    ocv_accuracy_note,
)
from shared.config.limits import (
    CELL_TEMPERATURE_MAX_C,
    CELL_TEMPERATURE_MIN_C,
    CELL_VOLTAGE_MAX_V,
    CELL_VOLTAGE_MIN_V,
    OCV_HYSTERESIS_MAX_V,
    OCV_TABLE_POINTS_MAX,
    OCV_TEMPERATURES_MAX,
)

OCV_CSV_MAX_BYTES = 64 * 1024
"""101 points x 8 temperatures of 5 columns is about 30 kB."""
_BRANCHES = ("ocv_charge_v", "ocv_discharge_v")
_COLUMNS = ("soc_pct", *_BRANCHES, "ocv_v", "temperature_c", "capacity_pct")
OCV_PATHS = tuple(
    f"chemistry_overrides.{name}"
    for name in (
        "ocv_table_soc_pct", "ocv_table_v", "ocv_charge_v", "ocv_discharge_v",
        "ocv_temperatures_c", "capacity_temperature_pct", "ocv_source",
    )
)  # fmt: skip
"""The draft fields an import sets (all of them, so that nothing of an older table stays)."""


@dataclass
class _Row:
    line: int
    soc: float
    up: float
    down: float
    temp: float | None
    capacity: float | None


@dataclass
class OcvImport:
    """The draft values of an import (`chemistry_overrides.*`), or the problems of the file."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    temperatures: int = 0
    points: int = 0
    branches: bool = False


def parse_ocv_csv(text: str, source: str = "") -> OcvImport:
    """The OCV table of a CSV file as chemistry_overrides values; errors name the line."""
    out = OcvImport()
    lines = [
        (n, ln) for n, ln in enumerate(text.splitlines(), start=1)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]  # fmt: skip
    if not lines:
        out.errors.append("the file has no header and no rows")
        return out
    header_line, header = lines[0]
    names = [h.strip().lower() for h in next(csv.reader([header]))]
    unknown = [h for h in names if h not in _COLUMNS]
    if unknown:
        out.errors.append(
            f"line {header_line}: unknown column(s) {', '.join(unknown)}; the columns are "
            f"{', '.join(_COLUMNS)}"
        )
    branches = all(b in names for b in _BRANCHES)
    single = "ocv_v" in names
    if (
        "soc_pct" not in names
        or branches == single
        or (not branches and any(b in names for b in _BRANCHES))
    ):
        out.errors.append(
            f"line {header_line}: the header needs soc_pct and either both ocv_charge_v and "
            f"ocv_discharge_v, or ocv_v (a single curve); it has {', '.join(names)}"
        )
    if "capacity_pct" in names and "temperature_c" not in names:
        out.errors.append(f"line {header_line}: capacity_pct needs a temperature_c column")
    if out.errors:
        return out
    rows = _rows(lines[1:], names, branches, out.errors)
    if out.errors:
        return out
    if not rows:
        out.errors.append("the file has a header but no rows")
        return out
    _tables(rows, names, branches, out)
    if not out.errors:
        out.values["chemistry_overrides.ocv_source"] = source
        out.branches = branches
    return out


def _rows(
    lines: list[tuple[int, str]], names: list[str], branches: bool, errors: list[str]
) -> list[_Row]:
    rows: list[_Row] = []
    for n, text in lines:
        cells = next(csv.reader([text]))
        if len(cells) != len(names):
            errors.append(f"line {n}: {len(cells)} values for {len(names)} columns")
            continue
        got: dict[str, float] = {}
        bad = False
        for name, cell in zip(names, cells, strict=True):
            try:
                value = float(cell)
            except ValueError:
                errors.append(f"line {n}: {name} {cell.strip()!r} is not a number")
                bad = True
                continue
            if not math.isfinite(value):
                errors.append(f"line {n}: {name} {cell.strip()!r} is not a finite number")
                bad = True
                continue
            got[name] = value
        if bad:
            continue
        problems = _row_problems(got, branches)
        errors.extend(f"line {n}: {p}" for p in problems)
        if problems:
            continue
        up = got["ocv_charge_v"] if branches else got["ocv_v"]
        down = got["ocv_discharge_v"] if branches else got["ocv_v"]
        rows.append(
            _Row(n, got["soc_pct"], up, down, got.get("temperature_c"), got.get("capacity_pct"))
        )
    return rows


def _row_problems(got: Mapping[str, float], branches: bool) -> list[str]:
    out: list[str] = []
    soc = got["soc_pct"]
    if not 0.0 <= soc <= 100.0:
        out.append(f"soc_pct {soc:g} is outside 0 to 100 %")
    for name in (*_BRANCHES, "ocv_v"):
        if name in got and not CELL_VOLTAGE_MIN_V <= got[name] <= CELL_VOLTAGE_MAX_V:
            out.append(
                f"{name} {got[name]:g} V is outside the cell-voltage range "
                f"{CELL_VOLTAGE_MIN_V:g} to {CELL_VOLTAGE_MAX_V:g} V"
            )
    if branches and not out:
        gap = got["ocv_charge_v"] - got["ocv_discharge_v"]
        if gap < 0.0:
            out.append(
                f"ocv_charge_v {got['ocv_charge_v']:g} V is below ocv_discharge_v "
                f"{got['ocv_discharge_v']:g} V; are the columns swapped?"
            )
        elif gap > OCV_HYSTERESIS_MAX_V:
            out.append(
                f"the branches are {1000.0 * gap:.0f} mV apart, more than "
                f"{1000.0 * OCV_HYSTERESIS_MAX_V:.0f} mV: rested hysteresis is tens of mV; "
                f"was a branch taken under load?"
            )
    temp = got.get("temperature_c")
    if temp is not None and not CELL_TEMPERATURE_MIN_C <= temp <= CELL_TEMPERATURE_MAX_C:
        out.append(
            f"temperature_c {temp:g} is outside the sensor range {CELL_TEMPERATURE_MIN_C:g} to "
            f"{CELL_TEMPERATURE_MAX_C:g} °C"
        )
    cap = got.get("capacity_pct")
    if cap is not None and not 10.0 <= cap <= 150.0:
        out.append(f"capacity_pct {cap:g} is outside 10 to 150 %")
    return out


def _tables(rows: list[_Row], names: list[str], branches: bool, out: OcvImport) -> None:
    groups: dict[float | None, list[_Row]] = {}
    for r in rows:
        groups.setdefault(r.temp, []).append(r)
    if len(groups) > OCV_TEMPERATURES_MAX:
        out.errors.append(f"{len(groups)} temperatures; at most {OCV_TEMPERATURES_MAX} are kept")
        return
    temps = sorted(groups, key=lambda t: -math.inf if t is None else t)
    for t in temps:
        group = sorted(groups[t], key=lambda r: r.soc)
        groups[t] = group
        at = "" if t is None else f" at {t:g} °C"
        for a, b in itertools.pairwise(group):
            if a.soc == b.soc:
                out.errors.append(
                    f"line {b.line}: soc_pct {b.soc:g}{at} is already on line {a.line}"
                )
            elif b.up < a.up or b.down < a.down:
                out.errors.append(
                    f"line {b.line}: the OCV{at} falls from {a.soc:g} % (line {a.line}) to "
                    f"{b.soc:g} %; OCV must not decrease with SOC"
                )
        if group[0].soc != 0.0 or group[-1].soc != 100.0:
            out.errors.append(
                f"the rows{at} run from {group[0].soc:g} % to {group[-1].soc:g} % SOC; the "
                f"table needs 0 % and 100 %"
            )
        caps = {r.capacity for r in group}
        if len(caps) > 1:
            first = group[0]
            other = next(r for r in group if r.capacity != first.capacity)
            out.errors.append(
                f"line {other.line}: capacity_pct {other.capacity:g}{at} differs from "
                f"{first.capacity:g} on line {first.line} (one capacity per temperature)"
            )
    if out.errors:
        return
    grid = sorted({r.soc for r in rows})
    if len(grid) > OCV_TABLE_POINTS_MAX:
        out.errors.append(
            f"{len(grid)} SOC points (over all temperatures); at most {OCV_TABLE_POINTS_MAX}"
        )
        return
    up: list[float] = []
    down: list[float] = []
    for t in temps:
        group = groups[t]
        x = [r.soc for r in group]
        up.extend(round(_interp(s, x, [r.up for r in group]), 5) for s in grid)
        down.extend(round(_interp(s, x, [r.down for r in group]), 5) for s in grid)
    with_temps = "temperature_c" in names
    known = [t for t in temps if t is not None]
    values: dict[str, Any] = {
        "ocv_table_soc_pct": grid,
        "ocv_charge_v": up if branches or with_temps else [],
        "ocv_discharge_v": down if branches or with_temps else [],
        "ocv_temperatures_c": known if with_temps else [],
        "capacity_temperature_pct": (
            [groups[t][0].capacity for t in known] if "capacity_pct" in names else []
        ),
    }
    values["ocv_table_v"] = branch_middle(values) if values["ocv_charge_v"] else list(up)
    out.values = {f"chemistry_overrides.{k}": v for k, v in values.items()}
    out.temperatures = len(known)
    out.points = len(grid)


def _interp(x: float, xp: list[float], fp: list[float]) -> float:
    """Linear interpolation on a strictly rising xp that spans x (pure Python: the web
    application's image has no numpy)."""
    i = min(max(bisect_right(xp, x), 1), len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return f0 + (f1 - f0) * (x - x0) / (x1 - x0)


def form_text(values: Mapping[str, Any]) -> dict[str, str]:
    """The values as the wizard's form sends them (a list as comma-separated numbers)."""
    out: dict[str, str] = {}
    for path, value in values.items():
        if isinstance(value, list | tuple):
            out[path] = ", ".join(repr(float(v)) for v in value)
        else:
            out[path] = str(value)
    return out


def ocv_note(draft: Mapping[str, Any]) -> str:
    """What the draft's OCV table means for the SOC's accuracy ('' while the draft's chemistry
    or table is invalid): `ocv_accuracy_note` of the configuration the draft would make."""
    chem = chemistry_name(draft)
    if chem is None:
        return ""
    raw = get_path(draft, "chemistry_overrides")
    try:
        overrides = ChemistryOverrides.model_validate({} if raw is MISSING or raw is None else raw)
        preset: ChemistryPreset = overrides.apply(get_preset(chem))
    except ValueError:
        return ""
    _, note = ocv_accuracy_note(preset, overrides.has_own_ocv)
    return note[:1].upper() + note[1:]
