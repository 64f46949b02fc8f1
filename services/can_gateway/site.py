"""A site (BMS_SITE) as the inverter profiles see it: one battery. Pure: no bus I/O or clocks.

The inverter profiles (`registry.SITE_PROFILES`) read a `PackState`; for a site they read
the one `site_pack` builds from the site state (`shared.messages.site.SiteState`)
and the pack states of its joined strings:

* SOC, SOH, voltage (the DC bus), current (summed), energy, codes: the site state's;
* limits: the site's limits (CVL the lowest of the joined strings, CCL/DCL summed and derated
  by the site controller); CCL/DCL go out only while a string is joined (`contactors` reads
  "closed" then), and a CVL or DVL the site does not know (no string joined) is the fail-safe
  of each profile;
* cell voltage and temperature extremes: over the joined strings' fresh pack states, None
  while one of them is missing (the profile then sends its fail-safe: no limits, alarms);
* the full-charge request: the site state's (the site controller asks when a joined string
  asks: the strings in parallel charge together, and one string's anchor needs the whole site
  full);
* Victron 0x372 counts strings as modules: online = joined, offline = the others;
* Pylontech HV: no cell or module locations (0 = unknown), no module voltages (no cell
  snapshot of a site), the site's capacity in 0x7320; the inverter's sleep, wake and relay
  commands are refused (the site controller joins the strings, not the inverter).

The site's values are validated by their own bounds (a site's current reaches 16 strings'
worth), not by those of one pack: the site pack is built without re-validation, and a value
beyond a frame's range withholds that frame (`codec`), never clamped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.messages.pack import Limits, PackState
from shared.messages.site import SiteState

JOINED = "joined"


@dataclass(frozen=True)
class SiteFacts:
    """What the profiles count for a site instead of the system's configuration."""

    name: str
    strings: int
    """Victron 0x372 modules: the strings of the site."""
    capacity_ah: float | None
    """The strings' nominal capacities summed; None while one is unknown."""


def _extreme(values: list[float | None], pick: Callable[[Iterable[float]], float]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return pick(v for v in values if v is not None)


def site_pack(site: SiteState, packs: Mapping[str, PackState]) -> PackState:
    """The site as one pack. `packs`: the fresh pack state of each string, by system id."""
    joined = [s.system for s in site.strings if s.membership == JOINED]
    mine = [packs.get(system) for system in joined]
    known = [p for p in mine if p is not None]
    complete = bool(joined) and len(known) == len(joined)
    temps_avg = [p.temp_avg_c for p in known]
    lim = site.limits
    # CVL/DVL None (no string joined) reach the profiles, which send their fail-safe then.
    limits: dict[str, Any] = lim.model_dump()
    return PackState.model_construct(
        soc=site.soc,
        soh=site.soh,
        voltage=site.voltage_v,
        current=site.current_a,
        contactors="closed" if joined else "standby",
        mode="working" if joined else "standby",
        cell_v_min=_extreme([p.cell_v_min for p in known], min) if complete else None,
        cell_v_max=_extreme([p.cell_v_max for p in known], max) if complete else None,
        cell_v_avg=None,
        temp_min_c=_extreme([p.temp_min_c for p in known], min) if complete else None,
        temp_max_c=_extreme([p.temp_max_c for p in known], max) if complete else None,
        temp_avg_c=(
            sum(t for t in temps_avg if t is not None) / len(temps_avg)
            if complete and None not in temps_avg
            else None
        ),
        limits=Limits.model_construct(**limits),
        faults=list(site.faults),
        alarms=list(site.alarms),
        warnings=list(site.warnings),
        # 0x372 counts strings as modules: the strings not joined are "offline"
        stale_modules=[i for i, s in enumerate(site.strings) if s.membership != JOINED],
        energy_in_wh=site.energy_in_wh,
        energy_out_wh=site.energy_out_wh,
        full_charge_requested=site.full_charge_requested,
        ts=site.ts,
    )


def site_facts(site: SiteState | None, name: str, strings: int) -> SiteFacts:
    capacities = [] if site is None else [s.capacity_ah for s in site.strings]
    known = bool(capacities) and None not in capacities
    total = sum(c for c in capacities if c is not None) if known else None
    return SiteFacts(name=name, strings=strings, capacity_ah=total)
