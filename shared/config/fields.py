"""Who reads each configuration field, and whether a change applies live or needs a restart.

`FIELD_USES` covers every leaf field of `SystemConfig` (a test checks it is complete, that each
declared reader really reads the field, and that no field is left without a reader except the
ones listed in `UNREAD`). Paths are dotted; a `*` segment matches one segment
(`protection.*.warning.threshold`).

- live: the reading service applies a new value as soon as it accepts the configuration.
- restart: the service keeps the old value until it is restarted; its acknowledgement lists
  the field under `restart_required`.

`changed_fields(old, new)` lists the leaves that differ, with the services that read them and
how each applies the change.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel

from shared.config.site import SiteConfig
from shared.config.system import SystemConfig

Apply = Literal["live", "restart"]

MASTER = "master_core"
SLAVE = "slave_agent"
MODBUS = "modbus_gateway"
CAN = "can_gateway"
VALIDATION = "validation"
"""Every service validates each configuration: a field that only bounds other fields."""
CONFIG_UI = "config_ui"
"""The web application: its wizard derives other fields from the field, or shows it."""
SITE = "site_controller"


@dataclass(frozen=True)
class Reader:
    service: str
    module: str
    """Repository path of the module that reads the field."""
    apply: Apply = "live"
    tokens: tuple[str, ...] = ()
    """Attribute names the module reads for the field (default: the field's own name)."""


@dataclass(frozen=True)
class FieldUse:
    pattern: str
    readers: tuple[Reader, ...]
    note: str = ""

    @property
    def apply(self) -> Apply:
        """restart when any reader needs a restart for it."""
        return "restart" if any(r.apply == "restart" for r in self.readers) else "live"

    def matches(self, path: str) -> bool:
        parts, pattern = path.split("."), self.pattern.split(".")
        return len(parts) == len(pattern) and all(
            fnmatchcase(p, q) for p, q in zip(parts, pattern, strict=True)
        )


def _r(service: str, module: str, apply: Apply = "live", *tokens: str) -> Reader:
    return Reader(service, module, apply, tuple(tokens))


_MC = "services/master_core/"
_SA = "services/slave_agent/"
_MB = "services/modbus_gateway/"
_CG = "services/can_gateway/"
_SYS = "shared/config/system.py"
_PROT = _MC + "protection.py"
_DEV = _MC + "devices.py"
_PLAUS = _MC + "plausibility.py"
_CU = "services/config_ui/"
# The wizard derives the cell and pack voltage levels in `protection` from the overridden
# chemistry (SystemConfig.from_preset applies the overrides, then ProtectionConfig.from_chemistry).
_LEVELS_FROM_OVERRIDE = (
    _r(CONFIG_UI, _CU + "wizard/derivation.py", "live", "from_preset"),
    _r(CONFIG_UI, _SYS, "live", "apply", "from_chemistry"),
    _r(CONFIG_UI, "shared/config/protection.py"),
)
_SETS_LEVELS = "the wizard sets the protection levels from it; the master reads those levels"
# The Modbus gateway rebuilds its register map for a new topology (GatewayData.replace_config).
_LAYOUT = _r(MODBUS, _MB + "register_map.py", "live", "total_cells")
# It restarts only the server whose parameters changed, in the same process (service.py).
_MODBUS_IFACE = _r(MODBUS, _MB + "service.py")


FIELD_USES: tuple[FieldUse, ...] = (
    FieldUse("system_id", (
        _r(MASTER, _MC + "service.py", "restart"), _r(MODBUS, _MB + "service.py", "restart"),
    ), "the topic namespace: a configuration for another system is refused"),
    FieldUse("name", (_r(CAN, _CG + "profile.py"),)),
    FieldUse("config_version", (_r(MASTER, _MC + "service.py"), _r(SLAVE, _SA + "service.py"))),
    FieldUse("topology.modules", (
        _r(MASTER, _MC + "pack.py"), _r(SLAVE, _SA + "service.py"), _LAYOUT,
        _r(CAN, _CG + "pylon_hv.py"),
    )),
    FieldUse("topology.cells_per_module", (
        _r(MASTER, _MC + "pack.py"), _r(SLAVE, _SA + "sim_driver.py"), _LAYOUT,
    )),
    FieldUse("topology.temp_sensors_per_module", (
        _r(MASTER, _MC + "pack.py"), _r(SLAVE, _SA + "sim_driver.py"),
        _r(MODBUS, _MB + "register_map.py", "live", "temp_sensors_per_module"),
    )),
    FieldUse("topology.module_cell_counts", (
        _r(MASTER, _MC + "pack.py"), _r(SLAVE, _SA + "sim_driver.py"), _LAYOUT,
    )),
    FieldUse("chemistry", (
        _r(MASTER, _MC + "limits.py", "live", "cell_chemistry"), _r(SLAVE, _SA + "service.py"),
        _r(MODBUS, _MB + "register_map.py", "live", "cell_chemistry"),
    )),
    # Overrides act through SystemConfig.cell_chemistry: readers read the preset's attribute.
    FieldUse("chemistry_overrides.nominal_v", (
        _r(MASTER, _MC + "derating_tables.py"), _r(MODBUS, _MB + "register_map.py"),
    )),
    FieldUse("chemistry_overrides.charge_v", (_r(MASTER, _MC + "limits.py"),)),
    FieldUse("chemistry_overrides.discharge_cutoff_v", (
        _r(MASTER, _MC + "balancing_strategy.py"),
    )),
    FieldUse("chemistry_overrides.ov_limit_v", (
        _r(MASTER, _MC + "derating_tables.py"), _r(MODBUS, _MB + "register_map.py"),
    )),
    FieldUse("chemistry_overrides.uv_limit_v", (_r(VALIDATION, _SYS),)),
    FieldUse("chemistry_overrides.deep_discharge_v", (_r(VALIDATION, _SYS),)),
    *(
        FieldUse(f"chemistry_overrides.{name}", (_r(MASTER, _MC + "derating_tables.py"),))
        for name in (
            "charge_temp_min_c", "charge_temp_max_c", "discharge_temp_min_c",
            "discharge_temp_max_c",
        )
    ),
    FieldUse("chemistry_overrides.balance_start_v", (_r(MASTER, _MC + "balancing_strategy.py"),)),
    FieldUse("chemistry_overrides.ocv_table_*", (
        _r(MASTER, _MC + "estimation/soc.py"), _r(SLAVE, _SA + "sim_driver.py"),
    )),
    *(
        FieldUse(f"chemistry_overrides.{name}", (_r(MASTER, _MC + "estimation/ocv.py"),))
        for name in (
            "ocv_charge_v", "ocv_discharge_v", "ocv_temperatures_c", "capacity_temperature_pct",
        )
    ),
    *(
        FieldUse(f"chemistry_overrides.{name}", _LEVELS_FROM_OVERRIDE, _SETS_LEVELS)
        for name in (
            "ov_warning_v", "ov_alarm_v", "ov_reset_v", "uv_warning_v", "uv_alarm_v",
            "uv_reset_v",
        )
    ),
    FieldUse("chemistry_overrides.ocv_source", (_r(CONFIG_UI, _CU + "wizard/draft_access.py"),),
             "a citation for the OCV table, shown with the cell data"),
    FieldUse("cell_capacity_ah", (
        _r(MASTER, _MC + "estimator.py"), _r(CAN, _CG + "profile.py"),
        _r(MODBUS, _MB + "register_map.py"),
    )),
    FieldUse("cell_resistance_mohm", (_r(MASTER, _MC + "estimator.py"),)),
    FieldUse("protection.*.direction", (_r(MASTER, _PROT, "live", "quantities", "direction"),)),
    FieldUse("protection.*.unit", (_r(MASTER, _PROT, "live", "quantities", "unit"),)),
    FieldUse("protection.*.*.threshold", (_r(MASTER, _PROT, "live", "quantities", "threshold"),)),
    FieldUse("protection.*.*.release", (_r(MASTER, _PROT, "live", "quantities", "release"),)),
    FieldUse("protection.*.*.delay_s", (_r(MASTER, _PROT, "live", "quantities", "delay_s"),)),
    FieldUse("protection.deep_discharge_v", (_r(MASTER, _PROT),)),
    FieldUse("protection.pack_plausibility_*", (
        _r(MASTER, _PROT, "live", "pack_plausibility_tolerance_v", "pack_plausibility_delay_s"),
    )),
    FieldUse("protection.module_timeout_periods", (_r(MASTER, _MC + "comm_supervision.py"),)),
    FieldUse("protection.insulation_*_ohm", (
        _r(MASTER, _PROT, "live", "insulation_warning_ohm", "insulation_fault_ohm"),
    )),
    # Plausibility: levels in protection.py, windows and counts in plausibility.py (built by
    # the supervisor from the configuration).
    FieldUse("protection.open_string_current_a", (
        _r(MASTER, _PROT), _r(MASTER, _PLAUS),
    )),
    *(
        FieldUse(f"protection.{name}", (_r(MASTER, _PROT),))
        for name in (
            "open_string_delay_s", "current_offset_warning_a", "insulation_monitor_timeout_s",
            "contactor_io_timeout_s", "temperature_spread_warning_c",
            "temperature_spread_alarm_c",
        )
    ),
    *(
        FieldUse(f"protection.{name}", (_r(MASTER, _PLAUS),))
        for name in (
            "current_offset_window_s", "contactor_weld_voltage_v", "contactor_weld_discharge_s",
            "precharge_tau_tolerance", "stuck_channel_current_a", "stuck_cell_voltage_samples",
            "stuck_temperature_samples",
        )
    ),
    FieldUse("balancing.mode", (
        _r(MASTER, _MC + "balancing_strategy.py"), _r(SLAVE, _SA + "service.py"),
    )),
    FieldUse("balancing.threshold_v", (_r(MASTER, _MC + "balancing_strategy.py"),)),
    *(
        FieldUse(f"balancing.{name}", (
            _r(MASTER, _MC + "balancing_strategy.py"), _r(SLAVE, _SA + "service.py"),
        ))
        for name in ("min_cell_voltage_v", "max_temperature_c")
    ),
    FieldUse("balancing.current_ma", (
        _r(SLAVE, _SA + "sim_driver.py"), _r(VALIDATION, _SYS),
    ), "active: the converter's current; passive: must be what flows through the bleed "
       "resistor (cell voltage / bleed_resistor_ohm)"),
    FieldUse("balancing.bleed_resistor_ohm", (_r(SLAVE, _SA + "sim_driver.py"),)),
    FieldUse("balancing.active_efficiency", (_r(SLAVE, _SA + "sim_driver.py"),)),
    FieldUse("current_sensor.range_a", (
        _r(MASTER, _MC + "limits.py"), _r(MODBUS, _MB + "register_map.py"),
    )),
    # The device factory (devices.py) reopens only the device whose section changed.
    FieldUse("current_sensor.driver", (_r(MASTER, _DEV),),
             "hardware=devices: the current sensor's driver"),
    FieldUse("current_sensor.can.*", (_r(MASTER, _DEV),),
             "hardware=devices: a new value reopens the sensor's CAN bus"),
    FieldUse("current_sensor.cycle_time_ms", (_r(MASTER, _DEV),),
             "hardware=devices: sent to the sensor at start"),
    FieldUse("current_sensor.offset_a", (_r(MASTER, _MC + "current_calibration.py"),)),
    FieldUse("current_sensor.gain", (_r(MASTER, _MC + "current_calibration.py"),)),
    FieldUse("current_sensor.zero_offset_max_a", (_r(MASTER, _MC + "estimator.py"),)),
    FieldUse("contactors.precharge_resistor_ohm", (
        _r(MASTER, "services/plant/contactors.py"), _r(MASTER, _PLAUS),
    )),
    FieldUse("contactors.dc_link_capacitance_f", (
        _r(MASTER, "services/plant/contactors.py"), _r(MASTER, _PLAUS),
    )),
    FieldUse("contactors.precharge_*", (_r(MASTER, _MC + "contactors.py"),)),
    FieldUse("contactors.feedback_timeout_s", (
        _r(MASTER, _MC + "contactors.py"), _r(MASTER, _PLAUS),
    )),
    FieldUse("contactors.io.*", (_r(MASTER, _MC + "drivers/contactor_io.py"),),
             "hardware=devices: the relay module's transport and addresses; a new value "
             "reopens the module and writes the commanded coils again"),
    FieldUse("insulation_monitor.driver", (_r(MASTER, _DEV),),
             "hardware=devices: none = no monitor installed"),
    FieldUse("insulation_monitor.can.*", (_r(MASTER, _DEV),),
             "hardware=devices: a new value reopens the monitor's CAN bus"),
    FieldUse("comm_loss.recovery", (_r(MASTER, _MC + "supervisor.py"),)),
    FieldUse("comm_loss.auto_recoveries_per_hour", (_r(MASTER, _MC + "supervisor.py"),)),
    FieldUse("comm_loss.max_sample_age_s", (_r(MASTER, _MC + "service.py"),),
             "applies to the next sample"),
    FieldUse("comm_loss.*", (_r(MASTER, _PROT, "live", "comm_loss", "ride_through_s"),)),
    FieldUse("interfaces.modbus.*", (_MODBUS_IFACE,),
             "a BMS_* setting of the same name on the gateway's host overrides it"),
    FieldUse("interfaces.can.enabled", (_r(CAN, _CG + "service.py"),)),
    FieldUse("interfaces.can.profiles", (_r(CAN, _CG + "service.py"),)),
    # A new interface, channel or bit rate reopens the bus in the running gateway.
    FieldUse("interfaces.can.interface", (_r(CAN, _CG + "channel.py"),)),
    FieldUse("interfaces.can.channel", (_r(CAN, _CG + "channel.py"),)),
    FieldUse("interfaces.can.bitrate", (_r(CAN, _CG + "channel.py"),)),
    FieldUse("interfaces.can.pylon_hv_*", (_r(CAN, _CG + "pylon_hv.py"),)),
    FieldUse("full_charge.interval_days", (
        _r(MASTER, _MC + "full_charge.py"),
        _r(CONFIG_UI, _CU + "wizard/derivation.py", "live", "from_preset"),
    ), "the wizard sets it from the chemistry preset (full_charge_interval_days)"),
    FieldUse("timing.*", (
        _r(MASTER, _MC + "comm_supervision.py"), _r(SLAVE, _SA + "service.py"),
    )),
)  # fmt: skip


_SC = "services/site_controller/"
SITE_FIELD_USES: tuple[FieldUse, ...] = (
    FieldUse("site", (_r(SITE, _SC + "service.py"),),
             "the site controller's BMS_SYSTEM: a configuration for another site is refused"),
    FieldUse("name", (_r(CONFIG_UI, _CU + "site_live.py"),)),
    FieldUse("config_version", (_r(SITE, _SC + "service.py"),)),
    FieldUse("strings.*.system", (_r(SITE, _SC + "core.py"),)),
    FieldUse("strings.*.resistance_mohm", (_r(SITE, _SC + "core.py", "live", "resistance_ohm"),),
             "read as `SiteConfig.resistance_ohm` (Ω)"),
    FieldUse("strings.*.in_service", (_r(SITE, _SC + "core.py"),)),
    FieldUse("join_window_v", (_r(SITE, _SC + "core.py"),)),
    FieldUse("current_sharing_factor", (_r(SITE, _SC + "core.py"),)),
    FieldUse("stale_after_s", (_r(SITE, _SC + "core.py"),)),
)  # fmt: skip
"""Who reads each field of the site configuration (`shared.config.site.SiteConfig`): the site
controller applies a new one at once (strings kept where they stay)."""


def _sequence_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a `tuple[Model, ...]` field (the site's strings), else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _nested_model(args[0])
    return None


def site_leaf_paths(model: type[BaseModel] = SiteConfig, prefix: str = "") -> Iterator[str]:
    """Every leaf of the site configuration; a sequence of models is one `*` segment
    (`strings.*.system`)."""
    for name, info in model.model_fields.items():
        nested, each = _nested_model(info.annotation), _sequence_model(info.annotation)
        if each is not None:
            yield from site_leaf_paths(each, f"{prefix}{name}.*.")
        elif nested is not None:
            yield from site_leaf_paths(nested, f"{prefix}{name}.")
        else:
            yield prefix + name


def site_field_description(path: str) -> tuple[str, str]:
    """The field's docstring (the model's own words) on one line, and its default ("" when it
    has none)."""
    model: type[BaseModel] = SiteConfig
    *parents, leaf = path.split(".")
    for part in parents:
        if part == "*":
            continue
        annotation = model.model_fields[part].annotation
        found = _sequence_model(annotation) or _nested_model(annotation)
        assert found is not None
        model = found
    info = model.model_fields[leaf]
    default = "" if info.is_required() else repr(info.default)
    return " ".join((info.description or "").split()), default


def site_use_of(path: str) -> FieldUse:
    """The entry of `SITE_FIELD_USES` matching `path` (KeyError when none does)."""
    for use in SITE_FIELD_USES:
        if use.matches(path):
            return use
    raise KeyError(f"site configuration field {path} has no entry in SITE_FIELD_USES")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def leaf_paths(model: type[BaseModel] = SystemConfig, prefix: str = "") -> Iterator[str]:
    """Every leaf field of `model`, as a dotted path, in declaration order."""
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is None:
            yield prefix + name
        else:
            yield from leaf_paths(nested, f"{prefix}{name}.")


def use_of(path: str) -> FieldUse:
    """The first entry of `FIELD_USES` matching `path` (KeyError when none does)."""
    for use in FIELD_USES:
        if use.matches(path):
            return use
    raise KeyError(f"configuration field {path} has no entry in FIELD_USES")


UNREAD: tuple[str, ...] = tuple(p for p in leaf_paths() if not use_of(p).readers)
"""Fields no service reads today (the wizard may still edit them)."""


def _value(config: BaseModel, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if node is None:
            return None
        node = getattr(node, part)
    return node


@dataclass(frozen=True)
class ChangedField:
    path: str
    old: Any
    new: Any
    use: FieldUse

    def needs_restart(self, service: str) -> bool:
        return any(r.service == service and r.apply == "restart" for r in self.use.readers)


def changed_fields(old: SystemConfig | None, new: SystemConfig) -> list[ChangedField]:
    """The leaves whose value differs (every leaf when there is no old configuration)."""
    out: list[ChangedField] = []
    for path in leaf_paths():
        before = None if old is None else _value(old, path)
        after = _value(new, path)
        if old is None or before != after:
            out.append(ChangedField(path, before, after, use_of(path)))
    return out


def restart_required(service: str, old: SystemConfig | None, new: SystemConfig) -> list[str]:
    """The changed fields that `service` applies only after a restart (none on a first config:
    the service starts with it)."""
    if old is None:
        return []
    return [c.path for c in changed_fields(old, new) if c.needs_restart(service)]
