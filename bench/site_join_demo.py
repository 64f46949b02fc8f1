"""Two strings at different SOC joining one DC bus: the site controller's join sequence.

A pure simulation around the site controller's core (`services.site_controller.core`): two
112-cell NMC strings of 100 Ah, string A at 40 % SOC (80 mΩ), string B at 60 % (100 mΩ).
Each string is its open-circuit voltage (the NMC preset's OCV table x cells) behind its
resistance. Closed strings share one bus: V_bus = (I + sum OCV_k/R_k) / sum 1/R_k, each
carrying I_k = (V_bus - OCV_k) / R_k (Kirchhoff, one node). The masters obey at once and
precharge for 1 s; the inverter charges at up to 50 A, within the site's charge limit.

A closes first and defines the bus; B, 9 V higher, waits ("9.0 V above the bus, waits for
the bus to rise") while A charges, and joins once the bus (A's OCV plus its IR rise) is within
the join window (2 V): the current that flows between them at that moment is ΔV / (R_A + R_B).
Then both carry the inverter's current, B at first giving some of its charge to A (the higher
OCV discharges into the lower); the site's CCL follows the share A measurably carries, so A
stays within its own 100 A.

Usage: python bench/site_join_demo.py [minutes]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.site_controller.core import SiteCore, StringCommand
from shared.config import SiteConfig, get_preset
from shared.messages import Limits, PackState

DT_S = 0.1
CELLS = 112
CAPACITY_AH = 100.0
STRING_LIMIT_A = 100.0
INVERTER_A = 50.0
PRECHARGE_S = 1.0
PRESET = get_preset("NMC")


def ocv_v(soc_pct: float) -> float:
    cell = np.interp(soc_pct, PRESET.ocv_table_soc_pct, PRESET.ocv_table_v)
    return float(cell) * CELLS


@dataclass
class SimString:
    system: str
    soc_pct: float
    r_ohm: float
    mode: str = "standby"
    contactors: str = "standby"
    precharge_until_s: float = 0.0
    current_a: float = 0.0

    def obey(self, c: StringCommand, now_s: float) -> None:
        if c.command == "set_mode":
            self.mode = c.arg
            if c.arg == "standby":
                self.contactors = "standby"
        elif self.mode == "working" and self.contactors == "standby":
            self.contactors, self.precharge_until_s = "precharge", now_s + PRECHARGE_S

    def voltage_v(self, bus_v: float | None) -> float:
        return bus_v if self.contactors == "closed" and bus_v is not None else ocv_v(self.soc_pct)

    def state(self, bus_v: float | None) -> PackState:
        taper = max(0.0, min(1.0, (95.0 - self.soc_pct) / 10.0))  # a CCL tapering near full
        return PackState.model_validate({
            "soc": self.soc_pct, "soh": 100.0, "voltage": self.voltage_v(bus_v),
            "current": self.current_a, "contactors": self.contactors, "mode": self.mode,
            "cell_v_min": None, "cell_v_max": None, "cell_v_avg": None,
            "limits": Limits(charge_voltage_v=CELLS * PRESET.charge_v,
                             discharge_voltage_v=CELLS * PRESET.discharge_cutoff_v,
                             charge_current_a=STRING_LIMIT_A * taper,
                             discharge_current_a=STRING_LIMIT_A),
        })  # fmt: skip


def share_bus(closed: list[SimString], total_a: float) -> float | None:
    if not closed:
        return None
    g = sum(1.0 / s.r_ohm for s in closed)
    bus_v = (total_a + sum(ocv_v(s.soc_pct) / s.r_ohm for s in closed)) / g
    for s in closed:
        s.current_a = (bus_v - ocv_v(s.soc_pct)) / s.r_ohm
    return bus_v


def main(minutes: float = 15.0) -> int:
    strings = [SimString("string-a", 40.0, 0.080), SimString("string-b", 60.0, 0.100)]
    config = SiteConfig.model_validate({
        "site": "site", "strings": [
            {"system": s.system, "resistance_mohm": s.r_ohm * 1000} for s in strings
        ],
    })  # fmt: skip
    core = SiteCore(config)
    core.capacity("string-a", CAPACITY_AH)
    core.capacity("string-b", CAPACITY_AH)
    print(f"string-a {ocv_v(40.0):.1f} V at 40 %, string-b {ocv_v(60.0):.1f} V at 60 %, "
          f"join window {config.join_window_v:g} V")  # fmt: skip
    now, bus_v, site_ccl, last_print = 0.0, None, 0.0, -60.0
    while now < minutes * 60.0:
        for s in strings:
            if s.contactors == "precharge" and now >= s.precharge_until_s:
                s.contactors = "closed"
                if bus_v is not None:  # the current that flows at the close
                    other = next(o for o in strings if o is not s)
                    dv = ocv_v(s.soc_pct) - bus_v
                    print(f"{now:7.1f} s  {s.system} closes {dv:+.2f} V from the bus: "
                          f"{abs(dv) / (s.r_ohm + other.r_ohm):.1f} A between the strings "
                          "for a moment")  # fmt: skip
            if s.contactors != "closed":
                s.current_a = 0.0
        closed = [s for s in strings if s.contactors == "closed"]
        bus_v = share_bus(closed, min(INVERTER_A, site_ccl))
        for s in strings:
            core.pack_state(s.system, s.state(bus_v), now)
            s.soc_pct += 100.0 * s.current_a * DT_S / 3600.0 / CAPACITY_AH
        step = core.step(now)
        site_ccl = step.state.limits.charge_current_a
        for e in step.events:
            print(f"{now:7.1f} s  {e.code:20s} {e.text}")
        for c in step.commands:
            print(f"{now:7.1f} s  -> {c.system}: {c.command} {c.arg}")
            next(s for s in strings if s.system == c.system).obey(c, now)
        if now - last_print >= 60.0 or step.changed:
            last_print = now
            st = step.state
            parts = ", ".join(
                f"{x.system} {x.membership} {x.soc:.1f} % {x.current_a:+.1f} A" for x in st.strings
                if x.soc is not None and x.current_a is not None
            )  # fmt: skip
            volts = "-" if st.voltage_v is None else f"{st.voltage_v:.1f} V"
            soc = "-" if st.soc is None else f"{st.soc:.1f} %"
            print(f"{now:7.1f} s  site {volts}, SOC {soc}, CCL {st.limits.charge_current_a:.1f} A "
                  f"({st.limits.charge_reason}); {parts}")  # fmt: skip
        now += DT_S
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 15.0))
