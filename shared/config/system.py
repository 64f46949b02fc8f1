"""The system configuration: topology, chemistry, protection, balancing, contactors, interfaces."""

from __future__ import annotations

import math
import re
from typing import Any, Literal, Self, cast

from pydantic import Field, ValidationError, field_validator, model_validator

from shared.config._base import ConfigModel, fmt, raise_problems
from shared.config.can_ranges import CAN_PROFILE_RANGES, pylon_hv_range
from shared.config.chemistry import (
    CHEMISTRY_NAMES,
    ChemistryName,
    ChemistryOverrides,
    ChemistryPreset,
    get_preset,
    normalise_chemistry_name,
)
from shared.config.contactor_io import ContactorIoConfig
from shared.config.devices import (
    ISO165C_ERROR_THRESHOLD_OHM,
    ISO165C_WARNING_THRESHOLD_OHM,
    CurrentSensorDriver,
    DeviceCanConfig,
    InsulationMonitorConfig,
    bit_rate_conflicts,
    check_cycle,
)
from shared.config.errors import explain_errors
from shared.config.interfaces import CanConfig, CanProfile, InterfacesConfig
from shared.config.limits import (
    BALANCING_CURRENT_MAX_MA,
    CELL_TEMPERATURE_MIN_C,
    CELL_VOLTAGE_ACCURACY_V,
    CELLS_IN_SERIES_MAX,
    CELLS_PER_MODULE_MAX,
    CURRENT_ACCURACY_A,
    CURRENT_MAX_A,
    INSULATION_MIN_OHM_PER_V,
    MODULES_MAX,
    PACK_VOLTAGE_ACCURACY_V,
    PACK_VOLTAGE_MAX_V,
    TEMP_SENSORS_PER_MODULE_MAX,
)
from shared.config.protection import ProtectionConfig, pack_plausibility_floor_v

# A system id is one MQTT topic level of the tree (shared.topics uses this rule too).
SYSTEM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

COMM_LOSS_RIDE_THROUGH_MAX_S = 5.0
"""Cells are unsupervised while communication is lost; the ISO 26262 example FTTI is 4 s."""

DEFAULT_BLEED_RESISTOR_OHM = 33.0  # batterydesign.net: 30-40 Ω, ≈ 100 mA at 3.3 V
LOW_VOLTAGE_CAN_MAX_V = 63.0  # SMA Sunny Island CVL range 41-63 V: 0x35x inverters are 48 V
LOW_VOLTAGE_CAN_PROFILES = frozenset({"victron_0x35x", "pylon_v12"})
"""Profiles spoken by 48 V inverters (Victron ESS, SMA Sunny Island, Pylontech US-series LV):
their frames could carry up to 327 V, but no inverter that reads them takes more than 63 V."""
BLEED_CURRENT_TOLERANCE = 0.1
"""Passive balancing: the stated current may differ this much (resistor tolerance, wiring)
from V/R between the nominal and the charge voltage of the cell."""


class Topology(ConfigModel):
    """One string of series cells, split over identical slave modules."""

    modules: int = Field(ge=1)
    cells_per_module: int = Field(ge=1, le=CELLS_PER_MODULE_MAX)
    """Cell channels of one module (the cell count of every module unless listed below)."""
    temp_sensors_per_module: int = Field(2, ge=1, le=TEMP_SENSORS_PER_MODULE_MAX)
    module_cell_counts: tuple[int, ...] | None = Field(None, max_length=MODULES_MAX)
    """Cells of each module, for strings whose modules differ; each at most cells_per_module."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[str] = []
        counts = self.module_cell_counts
        if counts is not None:
            if len(counts) != self.modules:
                problems.append(
                    f"module_cell_counts: lists {len(counts)} modules but modules is {self.modules}"
                )
            bad = [c for c in counts if not 1 <= c <= self.cells_per_module]
            if bad:
                problems.append(
                    f"module_cell_counts: every module needs 1 to {self.cells_per_module} cells "
                    f"(cells_per_module), got {bad}"
                )
        if self.total_cells > CELLS_IN_SERIES_MAX:
            how = (
                f"{self.modules} modules x {self.cells_per_module} cells"
                if counts is None
                else "the modules listed in module_cell_counts"
            )
            problems.append(
                f"modules: {how} make {self.total_cells} cells in series; the hardware supports "
                f"at most {CELLS_IN_SERIES_MAX}"
            )
        raise_problems(problems)
        return self

    @property
    def total_cells(self) -> int:
        if self.module_cell_counts is not None:
            return sum(self.module_cell_counts)
        return self.modules * self.cells_per_module

    def cells_in_module(self, index: int) -> int:
        """Cell count of module `index` (0-based)."""
        if not 0 <= index < self.modules:
            raise IndexError(f"module index {index} outside 0..{self.modules - 1}")
        if self.module_cell_counts is not None:
            return self.module_cell_counts[index]
        return self.cells_per_module

    @property
    def total_temp_sensors(self) -> int:
        return self.modules * self.temp_sensors_per_module


class BalancingConfig(ConfigModel):
    mode: Literal["passive", "active", "off"] = "passive"
    threshold_v: float = Field(0.02, gt=0.0, le=0.5)
    """Balance a cell when it is this much above the lowest cell (LibreSolar/Orion 10-20 mV)."""
    min_cell_voltage_v: float
    """A cell below this is never bled (too little charge to spare, or a voltage too flat to
    compare cells); the others may still balance."""
    max_temperature_c: float
    current_ma: float = 100.0
    """Active mode: the converter's balancing current. Passive mode: the bleed resistor sets
    it (cell voltage / bleed_resistor_ohm); the value must agree with that."""
    bleed_resistor_ohm: float = Field(DEFAULT_BLEED_RESISTOR_OHM, gt=0.0, le=10_000.0)
    """Passive mode: the bleed resistor of one cell."""
    active_efficiency: float = Field(0.85, gt=0.0, le=1.0)
    """Active mode: charge-transfer efficiency of the converter."""

    @field_validator("current_ma")
    @classmethod
    def _current(cls, value: float) -> float:
        if not 0.0 < value < BALANCING_CURRENT_MAX_MA:
            raise ValueError(
                f"balancing current {fmt(value, 'mA')} is not possible: it must be above 0 and "
                f"below the hardware limit of {fmt(BALANCING_CURRENT_MAX_MA, 'mA')}"
            )
        return value


def _bleed_current_problems(b: BalancingConfig, chem: ChemistryPreset) -> list[str]:
    """Passive balancing: the current is the cell voltage over the bleed resistor, so the
    stated `current_ma` must be what flows between the nominal and the charge voltage (with
    `BLEED_CURRENT_TOLERANCE`); a value nothing can make true would mislead whoever reads it."""
    ohm = b.bleed_resistor_ohm
    nominal_ma = 1000.0 * chem.nominal_v / ohm
    charge_ma = 1000.0 * chem.charge_v / ohm
    low_ma = (1.0 - BLEED_CURRENT_TOLERANCE) * min(nominal_ma, charge_ma)
    high_ma = (1.0 + BLEED_CURRENT_TOLERANCE) * max(nominal_ma, charge_ma)
    if low_ma <= b.current_ma <= high_ma:
        return []
    return [
        f"balancing.current_ma, balancing.bleed_resistor_ohm: {fmt(b.current_ma, 'mA')} cannot "
        f"flow through the {fmt(ohm, 'ohm')} bleed resistor: at the nominal "
        f"{fmt(chem.nominal_v, 'V')} it is {fmt(nominal_ma, 'mA')}, at the charge voltage "
        f"{fmt(chem.charge_v, 'V')} {fmt(charge_ma, 'mA')}; in passive mode the resistor sets "
        f"the current: enter {fmt(nominal_ma, 'mA')} or choose the resistor for "
        f"{fmt(b.current_ma, 'mA')} ({fmt(1000.0 * chem.nominal_v / b.current_ma, 'ohm')})"
    ]


def bleed_current_ma(nominal_v: float, resistor_ohm: float) -> float:
    """The passive balancing current stated for a bleed resistor: nominal voltage / R, to
    0.1 mA (what `SystemConfig.from_preset` and the wizard set)."""
    return round(1000.0 * nominal_v / resistor_ohm, 1)


def farads(value_f: float) -> str:
    """A capacitance as people write it: 0.002 -> '2 mF', 4.7e-4 -> '470 µF'."""
    for factor, unit in ((1.0, "F"), (1e-3, "mF"), (1e-6, "µF")):
        if value_f >= factor:
            return f"{value_f / factor:.3g} {unit}"
    return f"{value_f / 1e-9:.3g} nF"


class CurrentSensorConfig(ConfigModel):
    driver: CurrentSensorDriver = "ivt_s"
    """ivt_s: Isabellenhütte IVT-S on CAN (current, U1 battery side, U2 DC link)."""
    can: DeviceCanConfig = DeviceCanConfig()
    """The CAN bus the sensor sits on."""
    cycle_time_ms: int = Field(20, ge=1, le=1000)
    """The sensor is set at start to send current, U1 and U2 cyclically at this period."""
    range_a: float = CURRENT_MAX_A
    """Full-scale of the sensor (symmetric, ±)."""
    offset_a: float = 0.0
    gain: float = 1.0
    """Calibration: current = gain x raw + offset."""
    zero_offset_max_a: float = Field(CURRENT_ACCURACY_A, gt=0.0, le=10.0)
    """The sensor's zero-offset specification: the master learns the zero offset left after
    the calibration while the string is open and at rest, and subtracts it from the current
    the SOC counts while it is within ± this; beyond, it subtracts nothing
    (`services/master_core/sensor_offsets.py`)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[str] = []
        if not 0.0 < self.range_a <= CURRENT_MAX_A:
            problems.append(
                f"range_a: {fmt(self.range_a, 'A')} must be positive and at most the hardware "
                f"range {fmt(CURRENT_MAX_A, 'A')}"
            )
        if abs(self.offset_a) > 0.1 * abs(self.range_a):
            problems.append(
                f"offset_a: {fmt(self.offset_a, 'A')} is more than 10 % of the range "
                f"{fmt(self.range_a, 'A')}; check the calibration"
            )
        if not 0.5 <= self.gain <= 2.0:
            problems.append(f"gain: {self.gain:g} is outside 0.5 to 2.0; check the calibration")
        problems.extend(check_cycle(self.cycle_time_ms, self.can, "current sensor"))
        raise_problems(problems)
        return self


class ContactorConfig(ConfigModel):
    """Main contactors and precharge (foxBMS 2 bms_cfg.h defaults)."""

    precharge_timeout_s: float = Field(2.0, gt=0.0, le=60.0)
    precharge_voltage_diff_v: float = Field(5.0, gt=0.0, le=PACK_VOLTAGE_MAX_V)
    """Precharge is done when |pack voltage - DC-link voltage| is below this."""
    precharge_retries: int = Field(3, ge=0, le=10)
    precharge_retry_wait_s: float = Field(3.0, ge=0.0, le=600.0)
    precharge_resistor_ohm: float = Field(100.0, gt=0.0, le=100_000.0)
    """In series with the precharge contactor; with the DC-link capacitance it sets the
    precharge time constant R x C, which precharge_timeout_s must allow for."""
    dc_link_capacitance_f: float = Field(0.002, gt=0.0, le=1.0)
    """Input capacitance of the inverter's DC link, charged through the precharge resistor
    (datasheet; typically a few hundred µF to a few mF)."""
    feedback_timeout_s: float = Field(0.5, gt=0.0, le=10.0)
    """Time for a contactor's auxiliary contact to confirm a close or open command."""
    io: ContactorIoConfig = ContactorIoConfig()
    """The Modbus relay module that drives the coils and reads the auxiliary contacts."""

    def precharge_time_s(self, pack_voltage_v: float) -> float:
        """Time for the DC link to come within `precharge_voltage_diff_v` of the pack (RC)."""
        tau = self.precharge_resistor_ohm * self.dc_link_capacitance_f
        if pack_voltage_v <= self.precharge_voltage_diff_v:
            return 0.0
        return tau * math.log(pack_voltage_v / self.precharge_voltage_diff_v)


class CommLossPolicy(ConfigModel):
    """What to do when module telemetry is lost (after protection.module_timeout_periods)."""

    action: Literal["open_immediately", "ride_through"] = "open_immediately"
    ride_through_s: float = 0.0
    """ride_through: keep the contactors closed this long, with charge and discharge stopped."""
    recovery: Literal["auto", "latch"] = "auto"
    """auto: once every module is fresh again and no other fault holds, the latch clears and
    the contactors may close by themselves; latch: an operator must reset it."""
    auto_recoveries_per_hour: int = Field(3, ge=1, le=20)
    """auto: at most this many recoveries in any hour; beyond, the loss latches."""
    max_sample_age_s: float = Field(5.0, ge=0.5, le=60.0)
    """A module sample whose time stamp is further than this from the master's clock (either
    way) is refused, as is a replayed one: the module goes stale. Slave and master clocks must
    agree within this (NTP or PTP on every machine of a rack)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[str] = []
        if self.action == "open_immediately" and self.ride_through_s != 0.0:
            problems.append(
                f"ride_through_s: {self.ride_through_s:g} s has no effect with action "
                f"'open_immediately'; set it to 0 or choose action 'ride_through'"
            )
        if self.action == "ride_through" and not (
            0.0 < self.ride_through_s <= COMM_LOSS_RIDE_THROUGH_MAX_S
        ):
            problems.append(
                f"ride_through_s: {self.ride_through_s:g} s must be above 0 and at most "
                f"{COMM_LOSS_RIDE_THROUGH_MAX_S:g} s; the cells are unsupervised meanwhile"
            )
        raise_problems(problems)
        return self


class TimingConfig(ConfigModel):
    sample_period_working_s: float = Field(0.1, ge=0.01, le=1.0)
    """Cell sampling while charging or discharging."""
    sample_period_standby_s: float = Field(2.0, ge=1.0, le=5.0)
    """Cell sampling at rest."""


class FullChargeConfig(ConfigModel):
    """Full charges on request, so that the SOC gets an anchor (`services.master_core.full_charge`).

    A flat OCV curve (LFP's plateau) gives no correction at rest: between full charges the SOC
    is counted, and its error grows. When the SOC has gone `interval_days` without an anchor,
    the master requests a full charge: the CAN profiles' request bits where the protocol has
    them, a Modbus point, the web application. The request ends at the next anchor."""

    interval_days: float | None = Field(None, ge=1.0, le=365.0)
    """Request a full charge when the last anchor (full charge, or empty) is this many days
    old. Empty: never. The chemistry preset gives the default (LFP: 5 days)."""


class SystemConfig(ConfigModel):
    """Everything the services need to run one system (one string of series cells)."""

    system_id: str = Field(json_schema_extra={"maxLength": 32})  # SYSTEM_ID_RE checks it
    """Used as an MQTT topic level: 1-32 of a-z, 0-9, '_' and '-'."""
    name: str = Field("", max_length=100)
    config_version: int = Field(1, ge=0)
    topology: Topology
    chemistry: ChemistryName
    chemistry_overrides: ChemistryOverrides = ChemistryOverrides()
    cell_capacity_ah: float = Field(gt=0.0, le=10_000.0)
    cell_resistance_mohm: float | None = Field(None, gt=0.0, le=1000.0)
    """DC internal resistance of a new cell (datasheet); the reference for resistance growth
    in the state of health. Empty: the first settled estimate becomes the reference."""
    protection: ProtectionConfig
    balancing: BalancingConfig
    current_sensor: CurrentSensorConfig = CurrentSensorConfig()
    contactors: ContactorConfig = ContactorConfig()
    insulation_monitor: InsulationMonitorConfig = InsulationMonitorConfig()
    comm_loss: CommLossPolicy = CommLossPolicy()
    interfaces: InterfacesConfig = InterfacesConfig()
    timing: TimingConfig = TimingConfig()
    full_charge: FullChargeConfig = FullChargeConfig()

    @field_validator("system_id")
    @classmethod
    def _system_id(cls, value: str) -> str:
        if not SYSTEM_ID_RE.match(value):
            raise ValueError(
                f"system id {value!r} is not valid: use 1 to 32 characters of lower-case "
                f"letters, digits, '_' or '-', starting with a letter or digit (it is used as "
                f"an MQTT topic level)"
            )
        return value

    @field_validator("chemistry", mode="before")
    @classmethod
    def _chemistry(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = normalise_chemistry_name(value)
            if key not in CHEMISTRY_NAMES:
                raise ValueError(
                    f"unknown chemistry {value!r}; choose one of {', '.join(CHEMISTRY_NAMES)}"
                )
            return key
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        try:
            chem = self.cell_chemistry
        except ValidationError as exc:
            raise_problems([f"chemistry_overrides.{line}" for line in explain_errors(exc)])
            return self
        raise_problems(
            self._protection_problems(chem)
            + self._pack_problems(chem)
            + self._balancing_problems(chem)
            + self._contactor_problems()
            + self._can_problems(chem)
            + self._device_problems()
        )
        return self

    @property
    def cell_chemistry(self) -> ChemistryPreset:
        """The chemistry preset with `chemistry_overrides` applied."""
        return self.chemistry_overrides.apply(get_preset(self.chemistry))

    @property
    def total_cells(self) -> int:
        return self.topology.total_cells

    @property
    def nominal_pack_voltage_v(self) -> float:
        return self.total_cells * self.cell_chemistry.nominal_v

    @property
    def charge_pack_voltage_v(self) -> float:
        """Pack charge voltage limit: cells x charge_v."""
        return self.total_cells * self.cell_chemistry.charge_v

    @property
    def discharge_pack_voltage_v(self) -> float:
        """Pack discharge voltage limit: cells x discharge_cutoff_v."""
        return self.total_cells * self.cell_chemistry.discharge_cutoff_v

    def _protection_problems(self, chem: ChemistryPreset) -> list[str]:
        p = self.protection
        src = f"the {self.chemistry} cell"
        out: list[str] = []
        ov, uv = p.cell_overvoltage, p.cell_undervoltage
        if ov.fault.threshold > chem.ov_limit_v:
            out.append(
                f"protection.cell_overvoltage: the fault threshold {fmt(ov.fault.threshold, 'V')} "
                f"is above the absolute limit {fmt(chem.ov_limit_v, 'V')} of {src}; raise "
                f"chemistry_overrides.ov_limit_v only if the cell datasheet allows it"
            )
        if uv.fault.threshold < chem.uv_limit_v:
            out.append(
                f"protection.cell_undervoltage: the fault threshold {fmt(uv.fault.threshold, 'V')}"
                f" is below the absolute limit {fmt(chem.uv_limit_v, 'V')} of {src}; lower "
                f"chemistry_overrides.uv_limit_v only if the cell datasheet allows it"
            )
        if chem.charge_v > ov.alarm.threshold:
            out.append(
                f"protection.cell_overvoltage: the alarm threshold {fmt(ov.alarm.threshold, 'V')} "
                f"is below the charge voltage {fmt(chem.charge_v, 'V')}; every full charge "
                f"would stop on an alarm"
            )
        if chem.discharge_cutoff_v < uv.alarm.threshold:
            out.append(
                f"protection.cell_undervoltage: the alarm threshold {fmt(uv.alarm.threshold, 'V')}"
                f" is above the discharge cut-off {fmt(chem.discharge_cutoff_v, 'V')}; every "
                f"full discharge would stop on an alarm"
            )
        if p.deep_discharge_v < chem.deep_discharge_v:
            out.append(
                f"protection.deep_discharge_v: {fmt(p.deep_discharge_v, 'V')} is below the "
                f"deep-discharge level {fmt(chem.deep_discharge_v, 'V')} of {src}; a damaged "
                f"cell would not be locked out"
            )
        temps = (
            (
                "cell_overtemp_charge",
                p.cell_overtemp_charge.fault.threshold,
                chem.charge_temp_max_c,
                "above the maximum charge temperature",
            ),
            (
                "cell_overtemp_discharge",
                p.cell_overtemp_discharge.fault.threshold,
                chem.discharge_temp_max_c,
                "above the maximum discharge temperature",
            ),
            (
                "cell_undertemp_charge",
                p.cell_undertemp_charge.fault.threshold,
                chem.charge_temp_min_c,
                "below the minimum charge temperature",
            ),
            (
                "cell_undertemp_discharge",
                p.cell_undertemp_discharge.fault.threshold,
                chem.discharge_temp_min_c,
                "below the minimum discharge temperature",
            ),
        )
        for name, value, limit, words in temps:
            beyond = value > limit if "overtemp" in name else value < limit
            if beyond:
                out.append(
                    f"protection.{name}: the fault threshold {fmt(value, 'degC')} is {words} "
                    f"{fmt(limit, 'degC')} of {src}"
                )
        sensor = self.current_sensor.range_a
        for name in ("charge_overcurrent", "discharge_overcurrent"):
            level = getattr(p, name)
            if level.fault.threshold > sensor:
                out.append(
                    f"protection.{name}: the fault threshold {fmt(level.fault.threshold, 'A')} "
                    f"is beyond the current sensor range {fmt(sensor, 'A')} "
                    f"(current_sensor.range_a) and could never be measured"
                )
        return out

    def _pack_problems(self, chem: ChemistryPreset) -> list[str]:
        p = self.protection
        n = self.total_cells
        eps = 1e-6 * n
        out: list[str] = []
        ov_fault = p.pack_overvoltage.fault.threshold
        uv_fault = p.pack_undervoltage.fault.threshold
        cell_ov = p.cell_overvoltage.fault.threshold
        cell_uv = p.cell_undervoltage.fault.threshold
        if n * cell_ov > PACK_VOLTAGE_MAX_V + eps:
            out.append(
                f"protection.cell_overvoltage: {n} cells x {fmt(cell_ov, 'V')} = "
                f"{fmt(n * cell_ov, 'V')} exceeds the pack hardware limit "
                f"{fmt(PACK_VOLTAGE_MAX_V, 'V')}"
            )
        if ov_fault > n * cell_ov + eps:
            out.append(
                f"protection.pack_overvoltage: the fault threshold {fmt(ov_fault, 'V')} is above "
                f"{n} cells x the cell fault threshold {fmt(cell_ov, 'V')} = "
                f"{fmt(n * cell_ov, 'V')}, so it could never trip before the cell limit"
            )
        if ov_fault <= self.charge_pack_voltage_v + eps:
            out.append(
                f"protection.pack_overvoltage: the fault threshold {fmt(ov_fault, 'V')} must be "
                f"above the full-charge voltage {n} cells x {fmt(chem.charge_v, 'V')} = "
                f"{fmt(self.charge_pack_voltage_v, 'V')}"
            )
        if uv_fault < n * cell_uv - eps:
            out.append(
                f"protection.pack_undervoltage: the fault threshold {fmt(uv_fault, 'V')} is below "
                f"{n} cells x the cell fault threshold {fmt(cell_uv, 'V')} = "
                f"{fmt(n * cell_uv, 'V')}, so it could never trip before the cell limit"
            )
        if uv_fault >= self.discharge_pack_voltage_v - eps:
            out.append(
                f"protection.pack_undervoltage: the fault threshold {fmt(uv_fault, 'V')} must be "
                f"below the empty voltage {n} cells x {fmt(chem.discharge_cutoff_v, 'V')} = "
                f"{fmt(self.discharge_pack_voltage_v, 'V')}"
            )
        floor_ohm = INSULATION_MIN_OHM_PER_V * ov_fault
        if p.insulation_fault_ohm < floor_ohm:
            out.append(
                f"protection.insulation_fault_ohm: {fmt(p.insulation_fault_ohm, 'ohm')} is below "
                f"{INSULATION_MIN_OHM_PER_V:g} Ω/V x {fmt(ov_fault, 'V')} = {fmt(floor_ohm, 'ohm')}"
            )
        nominal = self.nominal_pack_voltage_v
        # the sensors' own error sets a floor; beyond it, 10 % of the pack is the useful limit
        floor_v = pack_plausibility_floor_v(self.total_cells)
        if p.pack_plausibility_tolerance_v < floor_v - 1e-9:
            out.append(
                f"protection.pack_plausibility_tolerance_v: "
                f"{fmt(p.pack_plausibility_tolerance_v, 'V')} is below the sensors' worst-case "
                f"error {fmt(PACK_VOLTAGE_ACCURACY_V, 'V')} + {self.total_cells} cells x "
                f"{fmt(CELL_VOLTAGE_ACCURACY_V, 'V')} = {fmt(floor_v, 'V')}: healthy sensors "
                f"could trip it"
            )
        if p.pack_plausibility_tolerance_v > max(0.1 * nominal, floor_v):
            out.append(
                f"protection.pack_plausibility_tolerance_v: "
                f"{fmt(p.pack_plausibility_tolerance_v, 'V')} is more than 10 % of the nominal "
                f"pack voltage {fmt(nominal, 'V')}; the plausibility check would be meaningless"
            )
        return out

    def _balancing_problems(self, chem: ChemistryPreset) -> list[str]:
        b = self.balancing
        p = self.protection
        if b.mode == "off":
            return []
        out: list[str] = []
        uv_alarm = p.cell_undervoltage.alarm.threshold
        ov_fault = p.cell_overvoltage.fault.threshold
        if not uv_alarm <= b.min_cell_voltage_v < ov_fault:
            out.append(
                f"balancing.min_cell_voltage_v: {fmt(b.min_cell_voltage_v, 'V')} must lie between "
                f"the cell_undervoltage alarm {fmt(uv_alarm, 'V')} and the cell_overvoltage fault "
                f"{fmt(ov_fault, 'V')}; balancing must not drain a cell into undervoltage"
            )
        warn = p.cell_imbalance.warning.threshold
        if b.threshold_v >= warn:
            out.append(
                f"balancing.threshold_v: {fmt(b.threshold_v, 'V')} must be below the "
                f"cell_imbalance warning threshold {fmt(warn, 'V')}, otherwise balancing only "
                f"starts after the warning"
            )
        ot_fault = p.cell_overtemp_discharge.fault.threshold
        if not CELL_TEMPERATURE_MIN_C < b.max_temperature_c <= ot_fault:
            out.append(
                f"balancing.max_temperature_c: {fmt(b.max_temperature_c, 'degC')} must be above "
                f"{fmt(CELL_TEMPERATURE_MIN_C, 'degC')} and at most the cell_overtemp_discharge "
                f"fault threshold {fmt(ot_fault, 'degC')}"
            )
        if b.mode == "passive":
            bleed_ma = 1000.0 * chem.ov_limit_v / b.bleed_resistor_ohm
            if bleed_ma >= BALANCING_CURRENT_MAX_MA:
                out.append(
                    f"balancing.bleed_resistor_ohm: {fmt(b.bleed_resistor_ohm, 'ohm')} draws "
                    f"{fmt(bleed_ma, 'mA')} at {fmt(chem.ov_limit_v, 'V')}; the hardware "
                    f"balancing current must stay below {fmt(BALANCING_CURRENT_MAX_MA, 'mA')}"
                )
            out.extend(_bleed_current_problems(b, chem))
        return out

    def _contactor_problems(self) -> list[str]:
        c = self.contactors
        out: list[str] = []
        nominal = self.nominal_pack_voltage_v
        if c.precharge_voltage_diff_v > 0.1 * nominal:
            out.append(
                f"contactors.precharge_voltage_diff_v: {fmt(c.precharge_voltage_diff_v, 'V')} is "
                f"more than 10 % of the nominal pack voltage {fmt(nominal, 'V')}; closing the "
                f"main contactor at that difference causes a large inrush current"
            )
        needed = c.precharge_time_s(self.charge_pack_voltage_v)
        if needed > c.precharge_timeout_s:
            tau_s = c.precharge_resistor_ohm * c.dc_link_capacitance_f
            # one problem of three settings: shown at each of them
            out.append(
                "contactors.precharge_timeout_s, contactors.precharge_resistor_ohm, "
                f"contactors.dc_link_capacitance_f: the precharge timeout "
                f"{c.precharge_timeout_s:g} s is too short: through the "
                f"{fmt(c.precharge_resistor_ohm, 'ohm')} precharge resistor, the "
                f"{farads(c.dc_link_capacitance_f)} DC link (R x C = {tau_s:.3g} s) needs "
                f"{needed:.2f} s to come within {fmt(c.precharge_voltage_diff_v, 'V')} of the "
                f"full pack {fmt(self.charge_pack_voltage_v, 'V')}; raise the timeout or lower "
                f"the resistor"
            )
        return out

    def _device_problems(self) -> list[str]:
        """The master's CAN devices on one channel must agree on its bit rate. The inverter's
        bus (interfaces.can) is left out: the CAN gateway may run on another host, where the
        same channel name is another bus."""
        sections = {"current_sensor.can": self.current_sensor.can}
        if self.insulation_monitor.driver != "none":
            sections["insulation_monitor.can"] = self.insulation_monitor.can
        out = bit_rate_conflicts(
            {name: (c.interface, c.channel, c.bitrate) for name, c in sections.items()}
        )
        if self.insulation_monitor.driver == "iso165c":
            p = self.protection
            for name, value, (low, high) in (
                ("insulation_fault_ohm", p.insulation_fault_ohm, ISO165C_ERROR_THRESHOLD_OHM),
                ("insulation_warning_ohm", p.insulation_warning_ohm, ISO165C_WARNING_THRESHOLD_OHM),
            ):
                if not low <= value <= high:
                    out.append(
                        f"protection.{name}: {fmt(value, 'ohm')} is outside the iso165C's range "
                        f"{fmt(low, 'ohm')} to {fmt(high, 'ohm')}; the master sets the "
                        f"monitor's own threshold to it"
                    )
        return out

    def _can_problems(self, chem: ChemistryPreset) -> list[str]:
        """Every CAN profile must carry the pack's whole voltage and current range: a frame
        cannot hold a value beyond its range, and a clamped safety value would be a lie."""
        can = self.interfaces.can
        if not can.enabled:
            return []
        voltage_v = self.total_cells * chem.ov_limit_v
        current_a = self.current_sensor.range_a
        out: list[str] = []
        for profile in can.profiles:
            if profile in LOW_VOLTAGE_CAN_PROFILES and voltage_v > LOW_VOLTAGE_CAN_MAX_V:
                out.append(
                    f"interfaces.can.profiles: CAN profile {profile} is for 48 V inverters, "
                    f"which take at most {LOW_VOLTAGE_CAN_MAX_V:g} V; this pack reaches "
                    f"{fmt(voltage_v, 'V')} ({self.total_cells} cells x "
                    f"{fmt(chem.ov_limit_v, 'V')}); choose pylon_hv or native"
                )
            span = (
                pylon_hv_range(can.pylon_hv_current_offset_a)
                if profile == "pylon_hv"
                else CAN_PROFILE_RANGES[profile]
            )
            for problem in span.problems(profile, voltage_v, current_a):
                out.append(
                    f"interfaces.can.profiles: {problem} ({self.total_cells} cells x "
                    f"{fmt(chem.ov_limit_v, 'V')}, current_sensor.range_a "
                    f"{fmt(current_a, 'A')}); choose a profile that can"
                )
        return out

    @classmethod
    def from_preset(
        cls,
        chemistry: str,
        *,
        system_id: str = "demo",
        name: str | None = None,
        modules: int,
        cells_per_module: int,
        temp_sensors_per_module: int = 2,
        cell_capacity_ah: float = 100.0,
        max_current_a: float | None = None,
        config_version: int = 1,
        overrides: ChemistryOverrides | None = None,
    ) -> SystemConfig:
        """A complete configuration with every threshold derived from the chemistry preset.

        `max_current_a` is the over-current fault level (default 1C, at most 200 A).
        `overrides` (datasheet values of the actual cell) replace preset values before anything
        is derived; ValidationError if they are inconsistent with the preset.
        """
        overrides = overrides if overrides is not None else ChemistryOverrides()
        preset = overrides.apply(get_preset(chemistry))
        topology = Topology(
            modules=modules,
            cells_per_module=cells_per_module,
            temp_sensors_per_module=temp_sensors_per_module,
        )
        n = topology.total_cells
        nominal_v = n * preset.nominal_v
        profile: CanProfile = (
            "victron_0x35x" if n * preset.ov_limit_v <= LOW_VOLTAGE_CAN_MAX_V else "pylon_hv"
        )
        return cls(
            system_id=system_id,
            name=name if name is not None else f"{preset.name} {n}s {modules}x{cells_per_module}",
            config_version=config_version,
            topology=topology,
            chemistry=cast(ChemistryName, preset.name),
            chemistry_overrides=overrides,
            cell_capacity_ah=cell_capacity_ah,
            protection=ProtectionConfig.from_chemistry(
                preset,
                cells_in_series=n,
                cell_capacity_ah=cell_capacity_ah,
                max_current_a=max_current_a,
            ),
            balancing=BalancingConfig(
                mode="passive",
                min_cell_voltage_v=preset.balance_start_v,
                max_temperature_c=preset.discharge_temp_max_c - 10.0,
                current_ma=bleed_current_ma(preset.nominal_v, DEFAULT_BLEED_RESISTOR_OHM),
                bleed_resistor_ohm=DEFAULT_BLEED_RESISTOR_OHM,
            ),
            # 2 % of the pack (foxBMS 2: 1 V), so the RC time does not grow with the pack voltage.
            contactors=ContactorConfig(
                precharge_voltage_diff_v=round(max(0.02 * nominal_v, 0.05), 2)
            ),
            interfaces=InterfacesConfig(can=CanConfig(profiles=(profile,))),
            full_charge=FullChargeConfig(interval_days=preset.full_charge_interval_days),
        )


DEMO_CHEMISTRY = "NMC"
DEMO_MODULES = 7
DEMO_CELLS_PER_MODULE = 14
DEMO_CELL_CAPACITY_AH = 100.0


def demo_config(system_id: str = "demo") -> SystemConfig:
    """The demo system: NMC, 7 modules x 14 cells = 98 cells in series, 100 Ah.

    313.6 V empty (3.20 V/cell), 355.7 V nominal, 411.6 V full (4.20 V/cell): a typical
    high-voltage storage battery, well inside the 980 V / 196-cell hardware limits.
    """
    return SystemConfig.from_preset(
        DEMO_CHEMISTRY,
        system_id=system_id,
        name=f"Demo {DEMO_CHEMISTRY} {DEMO_MODULES * DEMO_CELLS_PER_MODULE}s",
        modules=DEMO_MODULES,
        cells_per_module=DEMO_CELLS_PER_MODULE,
        temp_sensors_per_module=2,
        cell_capacity_ah=DEMO_CELL_CAPACITY_AH,
    )


PLANT_MODBUS_BASE_PORT = 5220
"""`plant_demo_config(index=i)`: the plant's relay module listens on Modbus TCP 5220 + i
(502 needs root; 5020 + i is the Modbus gateway's, 5120 + i the plant's slave boards')."""
PLANT_CAN_GROUP = "239.74.{subnet}.{bus}"
"""`plant_demo_config(index=i)`: python-can udp_multicast groups, one /24 per system
(subnet 10 + i): bus 1 is the inverter bus (interfaces.can), bus 2 the IVT-S's, bus 3 the
iso165C's. The two devices could share one bus (their identifiers differ), but each of the
master's drivers counts and logs every frame it does not know."""
PLANT_SYSTEMS_MAX = 200


def plant_demo_config(system_id: str = "demo", index: int = 0) -> SystemConfig:
    """The demo system wired to the simulated plant (`python -m services.plant`, software in
    the loop): every device address the plant serves, for system `index` of `make run`.

    CAN on python-can `udp_multicast` groups (`PLANT_CAN_GROUP`), the relay module on Modbus
    TCP 127.0.0.1:`PLANT_MODBUS_BASE_PORT + index`, a Bender iso165C as insulation monitor.
    Distinct indices never share a group or a port.
    """
    if not 0 <= index < PLANT_SYSTEMS_MAX:
        raise ValueError(f"plant system index {index} is outside 0..{PLANT_SYSTEMS_MAX - 1}")
    data = demo_config(system_id).model_dump(mode="json")
    subnet = 10 + index
    inverter_bus = PLANT_CAN_GROUP.format(subnet=subnet, bus=1)
    data["name"] = f"{data['name']} (plant)"
    data["interfaces"]["can"].update(interface="udp_multicast", channel=inverter_bus)
    data["current_sensor"]["can"].update(
        interface="udp_multicast", channel=PLANT_CAN_GROUP.format(subnet=subnet, bus=2)
    )
    data["insulation_monitor"]["driver"] = "iso165c"
    data["insulation_monitor"]["can"].update(
        interface="udp_multicast", channel=PLANT_CAN_GROUP.format(subnet=subnet, bus=3)
    )
    data["contactors"]["io"].update(
        transport="tcp", host="127.0.0.1", tcp_port=PLANT_MODBUS_BASE_PORT + index
    )
    return SystemConfig.model_validate(data)


DEMO_SYSTEM = demo_config()
