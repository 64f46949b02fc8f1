"""From active levels to actions: derate, stop charge or discharge, open the contactors.

Escalation: a quantity with any active level derates the directions it concerns, an alarm or
fault stops them, and a fault opens the contactors and stops both directions. An unknown
quantity stops the directions it concerns. Each action lists the codes causing it (sorted),
so an empty tuple means "no action" and the codes are the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.master_core.level_monitor import Level
from shared.protection_codes import BOTH, CODE_TABLE, Flow

CONCERNS: Mapping[str, frozenset[Flow]] = {s.code: s.concerns for s in CODE_TABLE}
"""Code -> the current directions its warning and alarm levels act on (`CODE_TABLE`)."""


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
