"""From active levels to actions: derate, stop charge or discharge, open the contactors.

Escalation: a quantity with any active level derates the directions it concerns, an alarm or
fault stops them, and a fault opens the contactors and stops both directions. An unknown
quantity stops the directions it concerns. Each action lists the codes causing it (sorted),
so an empty tuple means "no action" and the codes are the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from services.master_core.level_monitor import Level

Flow = Literal["charge", "discharge"]
CHARGE: frozenset[Flow] = frozenset({"charge"})
DISCHARGE: frozenset[Flow] = frozenset({"discharge"})
BOTH: frozenset[Flow] = frozenset({"charge", "discharge"})

CONCERNS: dict[str, frozenset[Flow]] = {
    "cell_overvoltage": CHARGE,
    "cell_undervoltage": DISCHARGE,
    "pack_overvoltage": CHARGE,
    "pack_undervoltage": DISCHARGE,
    # The charge window only restricts charging; the discharge window bounds any current.
    "cell_overtemp_charge": CHARGE,
    "cell_overtemp_discharge": BOTH,
    "cell_undertemp_charge": CHARGE,
    "cell_undertemp_discharge": BOTH,
    "charge_overcurrent": CHARGE,
    "discharge_overcurrent": DISCHARGE,
    # Charging an imbalanced string drives its highest cell into over-voltage.
    "cell_imbalance": CHARGE,
    "deep_discharge": BOTH,
    "open_wire": BOTH,
    "measurement_out_of_range": BOTH,
    "sensor_fault": BOTH,
    "pack_voltage_plausibility": BOTH,
    "communication_loss": BOTH,
    "current_sensor_failure": BOTH,
    "contactor_feedback_mismatch": BOTH,
}
"""Code -> the current directions its warning and alarm levels act on."""


@dataclass(frozen=True)
class Actions:
    derate_charge: tuple[str, ...] = ()
    derate_discharge: tuple[str, ...] = ()
    stop_charge: tuple[str, ...] = ()
    stop_discharge: tuple[str, ...] = ()
    open_contactors: tuple[str, ...] = ()

    @property
    def derate(self) -> bool:
        return bool(self.derate_charge or self.derate_discharge)


def derive_actions(top: Mapping[str, Level], unknown: Iterable[str] = ()) -> Actions:
    """`top`: code -> its highest active level; `unknown`: codes whose value is unknown."""
    derate: dict[Flow, set[str]] = {"charge": set(), "discharge": set()}
    stop: dict[Flow, set[str]] = {"charge": set(), "discharge": set()}
    opened: set[str] = set()
    for code, level in top.items():
        flows = BOTH if level == "fault" else CONCERNS[code]
        for flow in flows:
            derate[flow].add(code)
            if level != "warning":
                stop[flow].add(code)
        if level == "fault":
            opened.add(code)
    for code in unknown:
        for flow in CONCERNS[code]:
            stop[flow].add(code)
    return Actions(
        derate_charge=tuple(sorted(derate["charge"])),
        derate_discharge=tuple(sorted(derate["discharge"])),
        stop_charge=tuple(sorted(stop["charge"])),
        stop_discharge=tuple(sorted(stop["discharge"])),
        open_contactors=tuple(sorted(opened)),
    )
