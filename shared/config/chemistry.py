"""Cell-chemistry presets: voltage and temperature limits plus an OCV(SOC) table per chemistry.

The numbers live in `data/chemistry_presets.json` (with a source per value) and the OCV tables in
the CSV files beside it.
"""

from __future__ import annotations

import csv
import io
import json
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal, Self, get_args

from pydantic import Field, field_validator, model_validator

from shared.config._base import ConfigModel, fmt, raise_problems
from shared.config.limits import (
    CELL_TEMPERATURE_MAX_C,
    CELL_TEMPERATURE_MIN_C,
    CELL_VOLTAGE_MAX_V,
    CELL_VOLTAGE_MIN_V,
    OCV_HYSTERESIS_MAX_V,
    OCV_TABLE_POINTS_MAX,
    OCV_TEMPERATURES_MAX,
)

ChemistryName = Literal["LFP", "NMC", "NCA", "LCO", "LTO", "NA_ION"]
CHEMISTRY_NAMES: tuple[str, ...] = get_args(ChemistryName)

OCV_WINDOW_TOLERANCE_V = 0.10
"""How far the OCV table's end points may lie inside [discharge_cutoff_v, charge_v].

Tables are rested OCV while the charge voltage is reached under CV current, so a small gap at the
top is normal (LibreSolar NMC ends at 4.198 V for a 4.20 V charge); 0.1 V is about twice the ±50 mV
cell-voltage accuracy. A table of another chemistry misses the window by far more (the foxBMS 2
default pairs a 4.12 V NMC curve with 2.8 V LTO limits).
"""

OCV_REFERENCE_TEMPERATURE_C = 25.0
"""The single OCV curve (`ocv_table_v`) is the one at the branch temperature nearest this: the
temperature of the shipped tables and of most datasheets."""
OCV_MID_TOLERANCE_V = 0.001
"""How far the single curve may lie outside the branches at the reference temperature (rounding
of a table written with 3 decimals)."""
_BRANCH_POINTS_MAX = OCV_TABLE_POINTS_MAX * OCV_TEMPERATURES_MAX

# (lower field, upper field, strict) in ascending voltage order.
_VOLTAGE_CHAIN: tuple[tuple[str, str, bool], ...] = (
    ("deep_discharge_v", "uv_limit_v", False),
    ("uv_limit_v", "uv_alarm_v", True),
    ("uv_alarm_v", "uv_warning_v", True),
    ("uv_warning_v", "ov_warning_v", True),
    ("ov_warning_v", "ov_alarm_v", True),
    ("ov_alarm_v", "ov_limit_v", True),
    ("uv_alarm_v", "discharge_cutoff_v", False),
    ("discharge_cutoff_v", "nominal_v", True),
    ("nominal_v", "charge_v", True),
    ("charge_v", "ov_alarm_v", False),
    ("uv_limit_v", "uv_reset_v", True),
    ("ov_reset_v", "ov_limit_v", True),
    ("discharge_cutoff_v", "balance_start_v", False),
    ("balance_start_v", "charge_v", False),
)

_VOLTAGE_FIELDS = (
    "nominal_v",
    "charge_v",
    "discharge_cutoff_v",
    "ov_warning_v",
    "ov_alarm_v",
    "ov_limit_v",
    "ov_reset_v",
    "uv_warning_v",
    "uv_alarm_v",
    "uv_limit_v",
    "uv_reset_v",
    "deep_discharge_v",
    "balance_start_v",
)


class ChemistryPreset(ConfigModel):
    """Per-cell limits of one chemistry.

    Three voltages per side, as LibreSolar stores them: operating (charge_v / discharge_cutoff_v),
    reset (release after a trip) and absolute (ov_limit_v / uv_limit_v, open the contactors),
    plus the warning and alarm levels between them.
    """

    name: str = Field(min_length=1, max_length=32)
    description: str = Field("", max_length=200)
    nominal_v: float
    charge_v: float
    """CV charge voltage (the charge voltage limit sent to the inverter, per cell)."""
    discharge_cutoff_v: float
    """Lowest operating voltage: discharge stops here."""
    ov_warning_v: float
    ov_alarm_v: float
    ov_limit_v: float
    ov_reset_v: float
    uv_warning_v: float
    uv_alarm_v: float
    uv_limit_v: float
    uv_reset_v: float
    deep_discharge_v: float
    """Below this the cell is considered damaged: latched fault until the cell is replaced."""
    charge_temp_min_c: float
    charge_temp_max_c: float
    discharge_temp_min_c: float
    discharge_temp_max_c: float
    balance_start_v: float
    """Balancing only above this cell voltage (the OCV slope is too flat below)."""
    full_charge_interval_days: float | None = Field(None, ge=1.0, le=365.0)
    """The default of `full_charge.interval_days` for this chemistry (`SystemConfig.from_preset`):
    None, no periodic full charge."""
    ocv_table_soc_pct: tuple[float, ...] = Field(max_length=OCV_TABLE_POINTS_MAX)
    ocv_table_v: tuple[float, ...] = Field(max_length=OCV_TABLE_POINTS_MAX)
    ocv_source: str = Field("", max_length=300)
    ocv_charge_v: tuple[float, ...] = Field((), max_length=_BRANCH_POINTS_MAX)
    """Charge branch of the OCV (rested after charging) on the ocv_table_soc_pct points; one block
    of points per entry of ocv_temperatures_c, in that order. Empty: no hysteresis known, the
    single curve ocv_table_v is used both ways."""
    ocv_discharge_v: tuple[float, ...] = Field((), max_length=_BRANCH_POINTS_MAX)
    """Discharge branch of the OCV (rested after discharging), laid out as ocv_charge_v."""
    ocv_temperatures_c: tuple[float, ...] = Field((), max_length=OCV_TEMPERATURES_MAX)
    """Cell temperatures of the branch blocks, rising. Empty: one block, temperature unknown.
    The single curve ocv_table_v lies between the branches of the block nearest 25 degC."""
    capacity_temperature_pct: tuple[float, ...] = Field((), max_length=OCV_TEMPERATURES_MAX)
    """Usable capacity at each of ocv_temperatures_c, in % of the rated capacity (e.g. 90 at
    0 degC); empty when not known (the capacity is then the same at every temperature)."""

    @property
    def ocv_blocks(self) -> int:
        """Blocks of branch points: one per temperature, one without temperatures, 0 without
        branches."""
        if not self.ocv_charge_v:
            return 0
        return max(len(self.ocv_temperatures_c), 1)

    def ocv_branch(self, block: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(charge, discharge) voltages of one block, on ocv_table_soc_pct."""
        n = len(self.ocv_table_soc_pct)
        cut = slice(block * n, (block + 1) * n)
        return self.ocv_charge_v[cut], self.ocv_discharge_v[cut]

    @property
    def ocv_reference_block(self) -> int:
        """The block whose branches the single curve lies between (nearest 25 degC)."""
        temps = self.ocv_temperatures_c
        if not temps:
            return 0
        return min(range(len(temps)), key=lambda i: abs(temps[i] - OCV_REFERENCE_TEMPERATURE_C))

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        raise_problems(self.problems())
        return self

    def problems(self) -> list[str]:
        """Every inconsistency of this preset, in words; empty when the preset is usable."""
        out: list[str] = []
        for name in _VOLTAGE_FIELDS:
            value: float = getattr(self, name)
            if not CELL_VOLTAGE_MIN_V <= value <= CELL_VOLTAGE_MAX_V:
                out.append(
                    f"{name}: {fmt(value, 'V')} is outside the cell-voltage measurement range "
                    f"{fmt(CELL_VOLTAGE_MIN_V, 'V')} to {fmt(CELL_VOLTAGE_MAX_V, 'V')}"
                )
        for low, high, strict in _VOLTAGE_CHAIN:
            lo: float = getattr(self, low)
            hi: float = getattr(self, high)
            if lo > hi or (strict and lo == hi):
                word = "below" if strict else "at most"
                out.append(f"{low}: {fmt(lo, 'V')} must be {word} {high} {fmt(hi, 'V')}")
        out.extend(self._temperature_problems())
        # Bad branches first: a single curve derived from them would only repeat their fault.
        out.extend(self._branch_problems() or self._ocv_problems())
        return out

    def _temperature_problems(self) -> list[str]:
        out: list[str] = []
        windows = (
            ("charge", self.charge_temp_min_c, self.charge_temp_max_c),
            ("discharge", self.discharge_temp_min_c, self.discharge_temp_max_c),
        )
        for kind, t_min, t_max in windows:
            if t_min >= t_max:
                out.append(
                    f"{kind}_temp_min_c: the {kind} temperature window {fmt(t_min, 'degC')} to "
                    f"{fmt(t_max, 'degC')} is empty (minimum must be below maximum)"
                )
            for name, value in ((f"{kind}_temp_min_c", t_min), (f"{kind}_temp_max_c", t_max)):
                if not CELL_TEMPERATURE_MIN_C <= value <= CELL_TEMPERATURE_MAX_C:
                    out.append(
                        f"{name}: {fmt(value, 'degC')} is outside the temperature sensor range "
                        f"{fmt(CELL_TEMPERATURE_MIN_C, 'degC')} to "
                        f"{fmt(CELL_TEMPERATURE_MAX_C, 'degC')}"
                    )
        # Charging is the more restricted operation (lithium plating when cold).
        if (
            self.charge_temp_min_c < self.discharge_temp_min_c
            or self.charge_temp_max_c > self.discharge_temp_max_c
        ):
            charge = (
                f"{fmt(self.charge_temp_min_c, 'degC')} to {fmt(self.charge_temp_max_c, 'degC')}"
            )
            discharge = (
                f"{fmt(self.discharge_temp_min_c, 'degC')} to "
                f"{fmt(self.discharge_temp_max_c, 'degC')}"
            )
            out.append(
                f"charge_temp_min_c: the charge temperature window {charge} must lie inside the "
                f"discharge window {discharge}"
            )
        return out

    def _ocv_problems(self) -> list[str]:
        soc, volts = self.ocv_table_soc_pct, self.ocv_table_v
        if len(soc) != len(volts):
            return [
                f"ocv_table_v: the OCV table has {len(soc)} SOC points but {len(volts)} voltages"
            ]
        if len(soc) < 2:
            return ["ocv_table_soc_pct: the OCV table needs at least two points"]
        out: list[str] = []
        if soc[0] != 0.0 or soc[-1] != 100.0:
            out.append(
                f"ocv_table_soc_pct: the OCV table must run from 0 % to 100 % SOC, "
                f"not {soc[0]:g} % to {soc[-1]:g} %"
            )
        for i in range(1, len(soc)):
            if soc[i] <= soc[i - 1]:
                out.append(
                    f"ocv_table_soc_pct: SOC must strictly increase, but point {i} ({soc[i]:g} %) "
                    f"follows {soc[i - 1]:g} %"
                )
                break
        for i in range(1, len(volts)):
            if volts[i] < volts[i - 1]:
                out.append(
                    f"ocv_table_v: OCV must not decrease with SOC, but {fmt(volts[i], 'V')} at "
                    f"{soc[i]:g} % follows {fmt(volts[i - 1], 'V')} at {soc[i - 1]:g} %"
                )
                break
        lo, hi = min(volts), max(volts)
        if lo < CELL_VOLTAGE_MIN_V or hi > CELL_VOLTAGE_MAX_V:
            out.append(
                f"ocv_table_v: the OCV table ({fmt(lo, 'V')} to {fmt(hi, 'V')}) leaves the "
                f"cell-voltage measurement range {fmt(CELL_VOLTAGE_MIN_V, 'V')} to "
                f"{fmt(CELL_VOLTAGE_MAX_V, 'V')}"
            )
        window = (
            f"the operating window {fmt(self.discharge_cutoff_v, 'V')} to {fmt(self.charge_v, 'V')}"
        )
        if volts[0] > self.discharge_cutoff_v + OCV_WINDOW_TOLERANCE_V:
            out.append(
                f"ocv_table_v: the OCV table starts at {fmt(volts[0], 'V')} (0 % SOC), above "
                f"discharge_cutoff_v {fmt(self.discharge_cutoff_v, 'V')}, so it does not span "
                f"{window}; is it the table of another cell?"
            )
        if volts[-1] < self.charge_v - OCV_WINDOW_TOLERANCE_V:
            out.append(
                f"ocv_table_v: the OCV table ends at {fmt(volts[-1], 'V')} (100 % SOC), below "
                f"charge_v {fmt(self.charge_v, 'V')}, so it does not span {window}; "
                f"is it the table of another cell?"
            )
        return out

    def _branch_problems(self) -> list[str]:
        charge, discharge, temps = self.ocv_charge_v, self.ocv_discharge_v, self.ocv_temperatures_c
        if not charge and not discharge:
            if temps or self.capacity_temperature_pct:
                return [
                    "ocv_temperatures_c: temperatures need the OCV branches "
                    "(ocv_charge_v and ocv_discharge_v)"
                ]
            return []
        if not charge or not discharge:
            have, missing = ("ocv_charge_v", "ocv_discharge_v")[:: 1 if charge else -1]
            return [f"{missing}: {have} is given, so {missing} is needed too (both branches)"]
        out: list[str] = []
        for i in range(1, len(temps)):
            if temps[i] <= temps[i - 1]:
                out.append(
                    f"ocv_temperatures_c: temperatures must strictly rise, but "
                    f"{fmt(temps[i], 'degC')} follows {fmt(temps[i - 1], 'degC')}"
                )
                break
        for t in temps:
            if not CELL_TEMPERATURE_MIN_C <= t <= CELL_TEMPERATURE_MAX_C:
                out.append(
                    f"ocv_temperatures_c: {fmt(t, 'degC')} is outside the temperature sensor "
                    f"range {fmt(CELL_TEMPERATURE_MIN_C, 'degC')} to "
                    f"{fmt(CELL_TEMPERATURE_MAX_C, 'degC')}"
                )
        capacity = self.capacity_temperature_pct
        if capacity and len(capacity) != len(temps):
            out.append(
                f"capacity_temperature_pct: {len(capacity)} values for {len(temps)} "
                f"temperatures (one per entry of ocv_temperatures_c)"
            )
        for c in capacity:
            if not 10.0 <= c <= 150.0:
                out.append(f"capacity_temperature_pct: {c:g} % is outside 10 % to 150 %")
        n = len(self.ocv_table_soc_pct)
        blocks = max(len(temps), 1)
        for name, branch in (("ocv_charge_v", charge), ("ocv_discharge_v", discharge)):
            if len(branch) != n * blocks:
                out.append(
                    f"{name}: {len(branch)} voltages, but {n} SOC points x {blocks} "
                    f"temperature(s) need {n * blocks}"
                )
        if out:
            return out
        for block in range(blocks):
            where = f" at {fmt(temps[block], 'degC')}" if temps else ""
            up, down = self.ocv_branch(block)
            out.extend(self._one_branch_problems("ocv_charge_v", up, where))
            out.extend(self._one_branch_problems("ocv_discharge_v", down, where))
            for s, c, d in zip(self.ocv_table_soc_pct, up, down, strict=True):
                if c < d:
                    out.append(
                        f"ocv_charge_v: the charge branch {fmt(c, 'V')} lies below the discharge "
                        f"branch {fmt(d, 'V')} at {s:g} %{where}; are the columns swapped?"
                    )
                    break
                if c - d > OCV_HYSTERESIS_MAX_V:
                    out.append(
                        f"ocv_charge_v: the branches are {1000.0 * (c - d):.0f} mV apart at "
                        f"{s:g} %{where}, more than {1000.0 * OCV_HYSTERESIS_MAX_V:.0f} mV: "
                        f"rested OCV hysteresis is tens of mV; was a branch taken under load?"
                    )
                    break
        if out or len(self.ocv_table_v) != n:
            return out
        ref = self.ocv_reference_block
        up, down = self.ocv_branch(ref)
        where = f" at {fmt(temps[ref], 'degC')}" if temps else ""
        for s, v, c, d in zip(self.ocv_table_soc_pct, self.ocv_table_v, up, down, strict=True):
            if not d - OCV_MID_TOLERANCE_V <= v <= c + OCV_MID_TOLERANCE_V:
                out.append(
                    f"ocv_table_v: the single curve {fmt(v, 'V')} at {s:g} % lies outside the "
                    f"branches{where} ({fmt(d, 'V')} to {fmt(c, 'V')}); leave ocv_table_v out "
                    f"to take their middle"
                )
                break
        return out

    def _one_branch_problems(self, name: str, volts: tuple[float, ...], where: str) -> list[str]:
        soc = self.ocv_table_soc_pct
        for i in range(1, len(volts)):
            if volts[i] < volts[i - 1]:
                return [
                    f"{name}: OCV must not decrease with SOC, but {fmt(volts[i], 'V')} at "
                    f"{soc[i]:g} % follows {fmt(volts[i - 1], 'V')} at {soc[i - 1]:g} %{where}"
                ]
        lo, hi = min(volts), max(volts)
        if lo < CELL_VOLTAGE_MIN_V or hi > CELL_VOLTAGE_MAX_V:
            return [
                f"{name}: the branch{where} ({fmt(lo, 'V')} to {fmt(hi, 'V')}) leaves the "
                f"cell-voltage measurement range {fmt(CELL_VOLTAGE_MIN_V, 'V')} to "
                f"{fmt(CELL_VOLTAGE_MAX_V, 'V')}"
            ]
        return []

    def ocv_v(self, soc_pct: float) -> float:
        """Open-circuit voltage at `soc_pct` (linear interpolation, clamped to 0-100 %)."""
        soc, volts = self.ocv_table_soc_pct, self.ocv_table_v
        if soc_pct <= soc[0]:
            return volts[0]
        if soc_pct >= soc[-1]:
            return volts[-1]
        i = bisect_right(soc, soc_pct)
        s0, s1, v0, v1 = soc[i - 1], soc[i], volts[i - 1], volts[i]
        return v0 + (v1 - v0) * (soc_pct - s0) / (s1 - s0)

    def soc_from_ocv_pct(self, ocv_v: float) -> float:
        """SOC in % for a rested cell voltage (inverse of `ocv_v`, clamped to the table).

        On a flat stretch of the table the lowest SOC of that stretch is returned.
        """
        soc, volts = self.ocv_table_soc_pct, self.ocv_table_v
        if ocv_v <= volts[0]:
            return soc[0]
        if ocv_v >= volts[-1]:
            return soc[-1]
        i = bisect_left(volts, ocv_v)
        if volts[i] == ocv_v:
            return soc[i]
        s0, s1, v0, v1 = soc[i - 1], soc[i], volts[i - 1], volts[i]
        return s0 + (s1 - s0) * (ocv_v - v0) / (v1 - v0)


class ChemistryOverrides(ConfigModel):
    """Values that replace those of the chosen preset (e.g. from the actual cell datasheet)."""

    nominal_v: float | None = None
    charge_v: float | None = None
    discharge_cutoff_v: float | None = None
    ov_warning_v: float | None = None
    ov_alarm_v: float | None = None
    ov_limit_v: float | None = None
    ov_reset_v: float | None = None
    uv_warning_v: float | None = None
    uv_alarm_v: float | None = None
    uv_limit_v: float | None = None
    uv_reset_v: float | None = None
    deep_discharge_v: float | None = None
    charge_temp_min_c: float | None = None
    charge_temp_max_c: float | None = None
    discharge_temp_min_c: float | None = None
    discharge_temp_max_c: float | None = None
    balance_start_v: float | None = None
    ocv_table_soc_pct: tuple[float, ...] | None = Field(None, max_length=OCV_TABLE_POINTS_MAX)
    ocv_table_v: tuple[float, ...] | None = Field(None, max_length=OCV_TABLE_POINTS_MAX)
    ocv_source: str | None = Field(None, max_length=300)
    ocv_charge_v: tuple[float, ...] | None = Field(None, max_length=_BRANCH_POINTS_MAX)
    ocv_discharge_v: tuple[float, ...] | None = Field(None, max_length=_BRANCH_POINTS_MAX)
    ocv_temperatures_c: tuple[float, ...] | None = Field(None, max_length=OCV_TEMPERATURES_MAX)
    capacity_temperature_pct: tuple[float, ...] | None = Field(
        None, max_length=OCV_TEMPERATURES_MAX
    )

    def is_empty(self) -> bool:
        return not self.model_dump(exclude_none=True)

    def apply(self, preset: ChemistryPreset) -> ChemistryPreset:
        """The preset with these values replaced; raises ValidationError if inconsistent."""
        if self.is_empty():
            return preset
        own = self.model_dump(exclude_none=True)
        if "ocv_table_soc_pct" in own and "ocv_charge_v" not in own:
            # a table of other cells: the preset's branches (on its grid) are not theirs
            for name in ("ocv_charge_v", "ocv_discharge_v", "ocv_temperatures_c"):
                own.setdefault(name, ())
            own.setdefault("capacity_temperature_pct", ())
        merged = {**preset.model_dump(), **own}
        if "ocv_charge_v" in own and "ocv_table_v" not in own:
            merged["ocv_table_v"] = branch_middle(merged)
        return ChemistryPreset.model_validate(merged)

    @property
    def has_own_ocv(self) -> bool:
        """The configuration gives its cells' own OCV (a single curve or branches), not the
        chemistry's generic table."""
        return self.ocv_table_v is not None or bool(self.ocv_charge_v)


def branch_middle(merged: Mapping[str, Any]) -> tuple[float, ...]:
    """The single curve implied by branches (`ocv_table_soc_pct`, `ocv_charge_v`, ... of a
    preset's or the wizard's values): their middle at the block nearest 25 degC, rounded to
    0.1 mV. Inconsistent input is left to the preset's validation (it then names it)."""
    soc = merged.get("ocv_table_soc_pct") or ()
    charge, discharge = merged.get("ocv_charge_v") or (), merged.get("ocv_discharge_v") or ()
    temps = merged.get("ocv_temperatures_c") or ()
    n = len(soc)
    block = 0
    if temps:
        block = min(range(len(temps)), key=lambda i: abs(temps[i] - OCV_REFERENCE_TEMPERATURE_C))
    up, down = charge[block * n : (block + 1) * n], discharge[block * n : (block + 1) * n]
    if n == 0 or len(up) != n or len(down) != n:
        return tuple(up)
    return tuple(round(0.5 * (c + d), 4) for c, d in zip(up, down, strict=True))


def get_preset(name: str) -> ChemistryPreset:
    """The preset called `name` (case-insensitive); ValueError naming the choices otherwise."""
    key = normalise_chemistry_name(name)
    if key not in CHEMISTRY_PRESETS:
        raise ValueError(
            f"unknown chemistry {name!r}; choose one of {', '.join(CHEMISTRY_PRESETS)}"
        )
    return CHEMISTRY_PRESETS[key]


def normalise_chemistry_name(name: str) -> str:
    """'na-ion', 'Na_Ion' -> 'NA_ION'."""
    return name.strip().upper().replace("-", "_")


class _ChemistryFileEntry(ConfigModel):
    description: str
    ocv: dict[str, str | float]
    values: dict[str, float]
    sources: dict[str, str]

    @field_validator("ocv")
    @classmethod
    def _ocv_keys(cls, value: dict[str, str | float]) -> dict[str, str | float]:
        required = {"file", "soc_column", "soc_scale", "column", "source"}
        if not required <= set(value) <= required | {"error_column"}:
            raise ValueError(f"unexpected OCV reference keys {sorted(value)}")
        return value


def _read_text(name: str) -> str:
    return resources.files("shared.config").joinpath("data", name).read_text(encoding="utf-8")


def _csv_columns(name: str) -> dict[str, list[float]]:
    lines = [ln for ln in _read_text(name).splitlines() if ln and not ln.startswith("#")]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header, body = rows[0], rows[1:]
    return {col: [float(row[i]) for row in body] for i, col in enumerate(header)}


def _load_presets() -> tuple[dict[str, ChemistryPreset], dict[str, tuple[float, ...]]]:
    raw: dict[str, Any] = json.loads(_read_text("chemistry_presets.json"))["presets"]
    if tuple(raw) != CHEMISTRY_NAMES:
        raise RuntimeError(f"chemistry_presets.json lists {tuple(raw)}, expected {CHEMISTRY_NAMES}")
    tables: dict[str, dict[str, list[float]]] = {}
    presets: dict[str, ChemistryPreset] = {}
    errors: dict[str, tuple[float, ...]] = {}
    for key, item in raw.items():
        entry = _ChemistryFileEntry.model_validate(item)
        ocv = entry.ocv
        columns = tables.setdefault(str(ocv["file"]), _csv_columns(str(ocv["file"])))
        scale = float(ocv["soc_scale"])
        presets[key] = ChemistryPreset(
            name=key,
            description=entry.description,
            ocv_table_soc_pct=tuple(round(s * scale, 6) for s in columns[str(ocv["soc_column"])]),
            ocv_table_v=tuple(columns[str(ocv["column"])]),
            ocv_source=str(ocv["source"]),
            **entry.values,
        )
        if "error_column" in ocv:
            errors[key] = tuple(columns[str(ocv["error_column"])])
    return presets, errors


_PRESETS, _OCV_ERRORS = _load_presets()
CHEMISTRY_PRESETS: Mapping[str, ChemistryPreset] = MappingProxyType(_PRESETS)
"""The shipped presets by name: LFP, NMC, NCA, LCO, LTO, NA_ION."""
PRESET_OCV_ERROR_V: Mapping[str, tuple[float, ...]] = MappingProxyType(_OCV_ERRORS)
"""1-sigma error (V) of a shipped OCV table on a cell it was not measured on, per table point,
where the data gives it (a generic table: the spread of the cells it is the mean of)."""

GENERIC_OCV_SOC_ERROR_PCT: Mapping[str, float] = MappingProxyType(
    {
        # The generic NMC table carries its error per point (`PRESET_OCV_ERROR_V`: the spread of the
        # cells it is the mean of, 100-230 mV below 50 %, 10-65 mV above).
        "NMC": 0.0,
        # PyBaMM NCA_Kim2011 and Ai2020 LCO, one cell each, no spread known: about NMC's above 50 %.
        "NCA": 5.0,
        "LCO": 5.0,
        # The knees of LFP cells sit at different SOC (LibreSolar's table: 0-5 %, Prada2013:
        # 0-15 %; at 35 degC Prada2013 rests at 3.05 V with 12 % left, which the generic table
        # reads as 4 %), and the plateau is flat: with a generic LFP table no OCV reading is
        # worth a correction.
        "LFP": 12.0,
        # One source each, no second cell to compare with: as uncertain as NMC's spread at least.
        "LTO": 8.0,
        "NA_ION": 8.0,
    }
)
"""1-sigma SOC error of a chemistry's shipped (generic) OCV table on a cell it was not measured
on, for `CoulombParams.table_soc_error_pct` when the configuration has no OCV table of its
own cells (`ChemistryOverrides.has_own_ocv`)."""

OCV_CORRECTION_LIMIT_SOC_PCT = 10.0
"""An OCV reading worth less than +-this SOC (1 sigma) corrects nothing: the master's
`CoulombParams.max_ocv_soc_error_pct` default, so that the wizard can say what the master does."""


def ocv_accuracy_note(
    preset: ChemistryPreset,
    own_ocv: bool,
    correction_limit_pct: float = OCV_CORRECTION_LIMIT_SOC_PCT,
) -> tuple[bool, str]:
    """(OCV corrections at rest possible, what the OCV table means for the SOC's accuracy), for
    the user: the wizard shows it with the cell data, the master keeps it (`ocv_note`)."""
    name = preset.name
    if not own_ocv:
        error = GENERIC_OCV_SOC_ERROR_PCT.get(name, 0.0)
        points = PRESET_OCV_ERROR_V.get(name)
        if points:
            spread = f"±{1000.0 * min(points):.0f}-{1000.0 * max(points):.0f} mV depending on SOC"
        else:
            spread = f"±{error:g} % SOC"
        head = f"generic {name} OCV table ({spread} on other cells, no hysteresis known)"
        if error > correction_limit_pct:
            return False, (
                f"{head}: no OCV corrections; the SOC is counted and set at full charge and at "
                f"empty, so it drifts between full charges. Enter the cells' own OCV table for "
                f"corrections at rest."
            )
        return True, (
            f"{head}: OCV corrections at rest are weighed by that error, so they are small where "
            f"the cells differ most; the SOC relies on full charges and empty. Enter the cells' "
            f"own OCV (both branches from a slow charge and discharge) for full corrections."
        )
    if preset.ocv_blocks == 0:
        return True, (
            "the cells' own OCV table, a single curve: hysteresis is not modelled. On a flat "
            "curve (LFP) the 10-20 mV between the charge and discharge branches is tens of % "
            "SOC; import both branches for corrections there."
        )
    temps = preset.ocv_temperatures_c
    at = f" at {len(temps)} temperatures" if len(temps) > 1 else ""
    return True, (
        f"the cells' own OCV with charge and discharge branches{at}: the branch is picked from "
        f"the charge moved since the last direction change (one-state hysteresis)"
        + (", and OCV and capacity follow the cell temperature." if at else ".")
    )
