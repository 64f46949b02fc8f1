"""Why each inverter limit has its present value: the codes the master publishes in `Limits`
(`charge_reason`, `discharge_reason`, `charge_voltage_reason`) and their words for people.

One table: the master sets the codes (`services/master_core/limits.py`), the web application
and the docs read the words here. A code not in the table (a newer master) is shown as itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# Current limits (CCL, DCL)
MAX_CURRENT: Final = "max_current"
STALE: Final = "stale_data"
ALARM: Final = "protection_alarm"
WARNING: Final = "protection_warning"
INPUT_UNKNOWN: Final = "protection_input_unknown"
CELL_VOLTAGE: Final = "cell_voltage"
TEMPERATURE_LOW: Final = "temperature_low"
TEMPERATURE_HIGH: Final = "temperature_high"
SOC: Final = "soc"
RAMP: Final = "ramp"
CONTACTORS_FAULT: Final = "contactors_fault"
# Charge voltage limit (CVL)
FULL_CHARGE_VOLTAGE: Final = "full_charge_voltage"
CELL_HEADROOM: Final = "cell_headroom"

WORDS: Mapping[str, str] = MappingProxyType({
    MAX_CURRENT: "Full current: nothing derates",
    STALE: "Stopped: cell data missing or stale",
    ALARM: "Stopped: a protection alarm concerns this direction",
    WARNING: "Reduced: a protection warning concerns this direction",
    INPUT_UNKNOWN: "Stopped: a value protection needs is unknown (not measured yet or lost)",
    CELL_VOLTAGE: "Reduced near the cell voltage limit",
    TEMPERATURE_LOW: "Reduced: cells cold",
    TEMPERATURE_HIGH: "Reduced: cells hot",
    SOC: "Reduced by the state of charge",
    RAMP: "Rising back at the ramp rate",
    CONTACTORS_FAULT: "Stopped: the contactors are in fault",
    FULL_CHARGE_VOLTAGE: "Full charge voltage: cells x charge voltage",
    CELL_HEADROOM: "Lowered: the highest cell is near or above its charge voltage",
})  # fmt: skip


def words(code: str) -> str | None:
    """The reason in words; None for an empty code (no limit computed yet)."""
    if not code:
        return None
    return WORDS.get(code, code)
