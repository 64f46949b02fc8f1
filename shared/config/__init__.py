"""The system configuration model: hardware limits, chemistry presets, protection, system.

Every model is frozen, rejects unknown keys and round-trips through `model_dump(mode="json")`.
Validation errors name the field and the values; `explain_errors` turns them into one line each.
"""

from shared.config.chemistry import (
    CHEMISTRY_NAMES,
    CHEMISTRY_PRESETS,
    OCV_WINDOW_TOLERANCE_V,
    ChemistryName,
    ChemistryOverrides,
    ChemistryPreset,
    get_preset,
)
from shared.config.contactor_io import ContactorIoConfig
from shared.config.devices import DeviceCanConfig, InsulationMonitorConfig
from shared.config.errors import explain_errors
from shared.config.interfaces import CanConfig, CanProfile, InterfacesConfig, ModbusConfig
from shared.config.protection import Direction, LevelThreshold, ProtectionConfig, ThreeLevel
from shared.config.site import SiteConfig, SiteString
from shared.config.system import (
    DEMO_SYSTEM,
    SYSTEM_ID_RE,
    BalancingConfig,
    CommLossPolicy,
    ContactorConfig,
    CurrentSensorConfig,
    FullChargeConfig,
    SystemConfig,
    TimingConfig,
    Topology,
    demo_config,
    plant_demo_config,
)

__all__ = [
    "CHEMISTRY_NAMES",
    "CHEMISTRY_PRESETS",
    "DEMO_SYSTEM",
    "OCV_WINDOW_TOLERANCE_V",
    "SYSTEM_ID_RE",
    "BalancingConfig",
    "CanConfig",
    "CanProfile",
    "ChemistryName",
    "ChemistryOverrides",
    "ChemistryPreset",
    "CommLossPolicy",
    "ContactorConfig",
    "ContactorIoConfig",
    "CurrentSensorConfig",
    "DeviceCanConfig",
    "Direction",
    "FullChargeConfig",
    "InsulationMonitorConfig",
    "InterfacesConfig",
    "LevelThreshold",
    "ModbusConfig",
    "ProtectionConfig",
    "SiteConfig",
    "SiteString",
    "SystemConfig",
    "ThreeLevel",
    "TimingConfig",
    "Topology",
    "demo_config",
    "explain_errors",
    "get_preset",
    "plant_demo_config",
]
