"""Pack and cell values of every bridged system, and the site's values (BMS_SITE), as
Prometheus gauges (read at scrape time).

A value that is unknown (None in the pack state), or older than the bridge's stale limit, has
no sample at all: a graph shows a gap, never a 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.messages import CellSnapshot, PackState
from shared.messages.site import SiteState
from shared.numbering import number_of


class Values(Protocol):
    """What the collector reads from the bridge: the fresh state and cells of each system."""

    def fresh_states(self) -> dict[str, tuple[PackState, float]]: ...

    def fresh_cells(self) -> dict[str, CellSnapshot]: ...

    def presence(self) -> dict[tuple[str, str], bool]: ...

    def fresh_sites(self) -> dict[str, tuple[SiteState, float]]: ...


def _spread(s: PackState) -> float | None:
    if s.cell_v_max is None or s.cell_v_min is None:
        return None
    return s.cell_v_max - s.cell_v_min


PACK_GAUGES: tuple[tuple[str, str, Callable[[PackState], float | None]], ...] = (
    ("bms_pack_soc_percent", "State of charge.", lambda s: s.soc),
    ("bms_pack_soh_percent", "State of health.", lambda s: s.soh),
    ("bms_pack_voltage_volts", "Measured pack voltage.", lambda s: s.voltage),
    ("bms_pack_current_amperes", "Pack current, positive charging.", lambda s: s.current),
    ("bms_pack_power_watts", "Voltage x current, positive charging.", lambda s: s.power_w),
    ("bms_pack_cell_voltage_min_volts", "Lowest valid cell voltage.", lambda s: s.cell_v_min),
    ("bms_pack_cell_voltage_max_volts", "Highest valid cell voltage.", lambda s: s.cell_v_max),
    ("bms_pack_cell_voltage_avg_volts", "Mean valid cell voltage.", lambda s: s.cell_v_avg),
    ("bms_pack_cell_voltage_spread_volts", "Highest minus lowest cell voltage.", _spread),
    ("bms_pack_temperature_min_celsius", "Lowest temperature.", lambda s: s.temp_min_c),
    ("bms_pack_temperature_max_celsius", "Highest temperature.", lambda s: s.temp_max_c),
    ("bms_pack_temperature_avg_celsius", "Mean temperature.", lambda s: s.temp_avg_c),
    ("bms_pack_charge_current_limit_amperes", "Charge current limit for the inverter.",
     lambda s: s.limits.charge_current_a),
    ("bms_pack_discharge_current_limit_amperes", "Discharge current limit for the inverter.",
     lambda s: s.limits.discharge_current_a),
    ("bms_pack_charge_voltage_limit_volts", "Charge voltage limit.",
     lambda s: s.limits.charge_voltage_v),
    ("bms_pack_discharge_voltage_limit_volts", "Discharge voltage limit.",
     lambda s: s.limits.discharge_voltage_v),
    ("bms_pack_energy_charged_watthours", "Energy charged since commissioning.",
     lambda s: s.energy_in_wh),
    ("bms_pack_energy_discharged_watthours", "Energy discharged since commissioning.",
     lambda s: s.energy_out_wh),
    ("bms_pack_equivalent_cycles", "Charge throughput over twice the capacity.",
     lambda s: s.equivalent_cycles),
    ("bms_pack_contactors_closed", "1 while the contactors are closed.",
     lambda s: 1.0 if s.contactors == "closed" else 0.0),
    ("bms_pack_faults_active", "Active fault codes.", lambda s: float(len(s.faults))),
    ("bms_pack_alarms_active", "Active alarm codes.", lambda s: float(len(s.alarms))),
    ("bms_pack_warnings_active", "Active warning codes.", lambda s: float(len(s.warnings))),
    ("bms_pack_stale_modules", "Modules without fresh telemetry.",
     lambda s: float(len(s.stale_modules))),
    ("bms_pack_soc_std_percent", "1-sigma uncertainty of the state of charge.",
     lambda s: s.soc_std),
    ("bms_pack_since_anchor_seconds", "Seconds since the SOC was last set at full or empty.",
     lambda s: s.since_anchor_s),
    ("bms_pack_full_charge_requested", "1 while the master asks for a full charge, else 0.",
     lambda s: None if s.full_charge_requested is None else float(s.full_charge_requested)),
    ("bms_pack_current_zero_offset_amperes", "The current sensor's learned zero offset.",
     lambda s: s.current_zero_offset_a),
)  # fmt: skip
"""Name, help, value (None: no sample)."""
SITE_GAUGES: tuple[tuple[str, str, Callable[[SiteState], float | None]], ...] = (
    ("bms_site_soc_percent", "State of charge of the site (joined strings).", lambda s: s.soc),
    ("bms_site_soh_percent", "State of health of the site (joined strings).", lambda s: s.soh),
    ("bms_site_voltage_volts", "DC bus voltage.", lambda s: s.voltage_v),
    ("bms_site_current_amperes", "Site current, positive charging.", lambda s: s.current_a),
    ("bms_site_power_watts", "Site power, positive charging.", lambda s: s.power_w),
    ("bms_site_charge_current_limit_amperes", "The site's charge current limit.",
     lambda s: s.limits.charge_current_a),
    ("bms_site_discharge_current_limit_amperes", "The site's discharge current limit.",
     lambda s: s.limits.discharge_current_a),
    ("bms_site_charge_voltage_limit_volts", "The site's charge voltage limit.",
     lambda s: s.limits.charge_voltage_v),
    ("bms_site_discharge_voltage_limit_volts", "The site's discharge voltage limit.",
     lambda s: s.limits.discharge_voltage_v),
    ("bms_site_energy_charged_watthours", "Energy charged, every string of the site.",
     lambda s: s.energy_in_wh),
    ("bms_site_energy_discharged_watthours", "Energy discharged, every string of the site.",
     lambda s: s.energy_out_wh),
    ("bms_site_strings_joined", "Strings on the DC bus.", lambda s: float(s.strings_joined)),
    ("bms_site_strings_total", "Strings of the site.", lambda s: float(s.strings_total)),
    ("bms_site_soc_std_percent", "1-sigma uncertainty of the site's state of charge.",
     lambda s: s.soc_std),
    ("bms_site_since_anchor_seconds", "Seconds since the oldest joined string's SOC anchor.",
     lambda s: s.since_anchor_s),
    ("bms_site_full_charge_requested", "1 while a joined string asks for a full charge, else 0.",
     lambda s: None if s.full_charge_requested is None else float(s.full_charge_requested)),
    ("bms_site_disconnected", "1 while the site is held disconnected (operation), else 0.",
     lambda s: 1.0 if s.operation == "disconnect" else 0.0),
    ("bms_site_faults_active", "Fault codes active in the site.", lambda s: float(len(s.faults))),
    ("bms_site_alarms_active", "Alarm codes active in the site.", lambda s: float(len(s.alarms))),
    ("bms_site_warnings_active", "Warning codes active in the site.",
     lambda s: float(len(s.warnings))),
)  # fmt: skip
"""Name, help, value (None: no sample), labelled by site."""
CELL_GAUGES = ("bms_cell_voltage_volts", "bms_cell_temperature_celsius")
AGE_GAUGE = "bms_pack_state_age_seconds"
SITE_AGE_GAUGE = "bms_site_state_age_seconds"
UP_GAUGE = "bms_service_up"
METRIC_NAMES = (
    *(n for n, _h, _f in PACK_GAUGES), *CELL_GAUGES, AGE_GAUGE,
    *(n for n, _h, _f in SITE_GAUGES), SITE_AGE_GAUGE, UP_GAUGE,
)  # fmt: skip


class PackCollector(Collector):
    def __init__(self, values: Values, clock: Callable[[], float]) -> None:
        self.values = values
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        states = self.values.fresh_states()
        now = self.clock()
        for name, text, value_of in PACK_GAUGES:
            family = GaugeMetricFamily(name, text, labels=["system"])
            for system, (state, _ts) in sorted(states.items()):
                value = value_of(state)
                if value is not None:
                    family.add_metric([system], value)
            yield family
        age = GaugeMetricFamily(AGE_GAUGE, "Seconds since the last pack state.", labels=["system"])
        for system, (_state, ts) in sorted(states.items()):
            age.add_metric([system], max(0.0, now - ts))
        yield age
        # labels number modules, cells and sensors from 1, as the web application and the
        # Sparkplug folders do: a dashboard's legend reads as people count
        volts = GaugeMetricFamily(
            CELL_GAUGES[0], "Cell voltage (module and cell from 1).",
            labels=["system", "module", "cell"],
        )  # fmt: skip
        temps = GaugeMetricFamily(
            CELL_GAUGES[1], "Temperature sensor (module and sensor from 1).",
            labels=["system", "module", "sensor"],
        )  # fmt: skip
        for system, snapshot in sorted(self.values.fresh_cells().items()):
            for c in snapshot.cells():
                if c.voltage_v is not None:
                    place = [str(number_of(c.module)), str(number_of(c.index))]
                    volts.add_metric([system, *place], c.voltage_v)
            for t in snapshot.temperatures():
                if t.temp_c is not None:
                    place = [str(number_of(t.module)), str(number_of(t.index))]
                    temps.add_metric([system, *place], t.temp_c)
        yield volts
        yield temps
        yield from self._sites(now)
        up = GaugeMetricFamily(
            UP_GAUGE, "1 while the service's presence is online.", labels=["system", "service"]
        )
        for (system, service), online in sorted(self.values.presence().items()):
            up.add_metric([system, service], 1.0 if online else 0.0)
        yield up

    def _sites(self, now: float) -> Iterable[Metric]:
        sites = self.values.fresh_sites()
        for name, text, value_of in SITE_GAUGES:
            family = GaugeMetricFamily(name, text, labels=["site"])
            for site, (state, _ts) in sorted(sites.items()):
                value = value_of(state)
                if value is not None:
                    family.add_metric([site], value)
            yield family
        age = GaugeMetricFamily(
            SITE_AGE_GAUGE, "Seconds since the last site state.", labels=["site"]
        )
        for site, (_state, ts) in sorted(sites.items()):
            age.add_metric([site], max(0.0, now - ts))
        yield age
