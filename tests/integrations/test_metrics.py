"""Metrics as a scraper reads them (OpenMetrics text, parsed by prometheus-client's parser)."""

from __future__ import annotations

from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from services.integrations.metrics import METRIC_NAMES, PACK_GAUGES, SITE_GAUGES
from shared.messages import Event
from shared.metrics import BUS_COUNTERS
from shared.topics import EVENTS, PACK_CELLS, PACK_STATE, SITE_STATE
from tests.factories import pack_state, site_state

from .test_bridge import Rig, snapshot


def scrape(rig: Rig) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = generate_latest(rig.bridge.registry).decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_pack_and_cell_values_and_bus_counters_are_exported() -> None:
    rig = Rig()
    rig.master.publish(PACK_STATE, pack_state(soc=42.5, voltage=51.2, current=-3.0))
    rig.master.publish(PACK_CELLS, snapshot())
    rig.master.publish(EVENTS, Event(level="info", kind="info", code="x"))
    rig.pump()
    got = scrape(rig)
    s1 = (("system", "s1"),)
    assert got["bms_pack_soc_percent"][s1] == 42.5
    assert got["bms_pack_power_watts"][s1] == 51.2 * -3.0
    assert got["bms_pack_contactors_closed"][s1] == 1.0
    cells = got["bms_cell_voltage_volts"]  # labels from 1, as people count
    assert cells[(("cell", "4"), ("module", "2"), ("system", "s1"))] == 3.303
    assert cells[(("cell", "1"), ("module", "1"), ("system", "s1"))] == 3.3
    assert {(dict(k)["module"], dict(k)["cell"]) for k in cells} == {
        (str(m), str(c)) for m in (1, 2) for c in (1, 2, 3, 4)
    }
    temps = got["bms_cell_temperature_celsius"]
    # the flagged (unknown) second sensor of each module has no sample
    assert set(temps) == {(("module", m), ("sensor", "1"), ("system", "s1")) for m in ("1", "2")}
    assert got["bms_service_up"][(("service", "master_core"), ("system", "s1"))] == 1.0
    me = (("kind", "integrations"), ("service", "integrations"))
    assert got["bms_bus_received_total"][me] == rig.bus.counters["received"] >= 4
    assert got["bms_bus_published_total"][me] == rig.bus.counters["published"] > 0
    assert sum(got["bms_integrations_handle_seconds_count"].values()) >= 4
    names = {n.removesuffix("_total") for n in got}
    assert set(BUS_COUNTERS) <= names


def test_unknown_and_stale_values_have_no_sample_never_zero() -> None:
    rig = Rig()
    rig.master.publish(PACK_STATE, pack_state(soc=None, current=None))
    rig.pump()
    got = scrape(rig)
    assert "bms_pack_soc_percent" not in got and "bms_pack_power_watts" not in got
    assert got["bms_pack_voltage_volts"][(("system", "s1"),)] == 30.0
    rig.clock.now += 11.0  # the master went quiet
    got = scrape(rig)
    assert not any(n.startswith("bms_pack_") for n in got)


def test_metric_names_follow_the_conventions() -> None:
    units = ("_percent", "_volts", "_amperes", "_watts", "_celsius", "_watthours", "_seconds")
    for name, _help, _f in PACK_GAUGES:
        assert name.startswith("bms_pack_")
    for name, _help, _f in SITE_GAUGES:
        assert name.startswith("bms_site_")
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    assert sum(n.endswith(units) for n in METRIC_NAMES) > 15


def test_the_anchor_and_offset_gauges_have_a_sample_only_while_known() -> None:
    rig = Rig()
    rig.master.publish(PACK_STATE, pack_state(soc_std=2.5, since_anchor_s=3600.0,
                                              full_charge_requested=False,
                                              current_zero_offset_a=-0.12))  # fmt: skip
    rig.pump()
    got = scrape(rig)
    s1 = (("system", "s1"),)
    assert got["bms_pack_soc_std_percent"][s1] == 2.5
    assert got["bms_pack_since_anchor_seconds"][s1] == 3600.0
    assert got["bms_pack_full_charge_requested"][s1] == 0.0  # known: not requested
    assert got["bms_pack_current_zero_offset_amperes"][s1] == -0.12
    rig.master.publish(PACK_STATE, pack_state(full_charge_requested=True))
    rig.pump()
    got = scrape(rig)
    assert got["bms_pack_full_charge_requested"][s1] == 1.0
    for name in ("bms_pack_soc_std_percent", "bms_pack_since_anchor_seconds",
                 "bms_pack_current_zero_offset_amperes"):  # fmt: skip
        assert name not in got, name  # unknown: no sample, never 0
    rig.master.publish(PACK_STATE, pack_state())
    rig.pump()
    assert "bms_pack_full_charge_requested" not in scrape(rig)


def test_the_site_values_are_gauges_labelled_by_site() -> None:
    rig = Rig(site="site1")
    assert rig.site is not None
    rig.site.publish(
        SITE_STATE, site_state(alarms=["cell_ov", "temp_high"], operation="disconnect")
    )
    rig.clock.now += 2.0
    rig.pump()
    rig.clock.now += 0.5
    got = scrape(rig)
    s = (("site", "site1"),)
    expected = {
        "bms_site_soc_percent": 41.5, "bms_site_soh_percent": 99.0,
        "bms_site_voltage_volts": 26.2, "bms_site_current_amperes": -23.0,
        "bms_site_power_watts": -602.6, "bms_site_charge_current_limit_amperes": 75.5,
        "bms_site_discharge_current_limit_amperes": 111.5,
        "bms_site_charge_voltage_limit_volts": 29.0,
        "bms_site_discharge_voltage_limit_volts": 24.0,
        "bms_site_energy_charged_watthours": 1200.0,
        "bms_site_energy_discharged_watthours": 900.0, "bms_site_strings_joined": 2.0,
        "bms_site_strings_total": 3.0, "bms_site_soc_std_percent": 2.5,
        "bms_site_since_anchor_seconds": 3600.0, "bms_site_full_charge_requested": 0.0,
        "bms_site_disconnected": 1.0, "bms_site_faults_active": 0.0,
        "bms_site_alarms_active": 2.0, "bms_site_warnings_active": 0.0,
        "bms_site_state_age_seconds": 0.5,
    }  # fmt: skip
    assert {n: got[n][s] for n in expected} == expected
    assert set(expected) == {n for n in got if n.startswith("bms_site_")}
    assert got["bms_service_up"][(("service", "site_controller"), ("system", "site1"))] == 1.0
    assert not any(n.startswith("bms_pack_") for n in got)  # the site is no system


def test_unknown_and_stale_site_values_have_no_sample_never_zero() -> None:
    rig = Rig(site="site1")
    assert rig.site is not None
    rig.site.publish(SITE_STATE, site_state(soc=None, current_a=None, power_w=None,
                                            full_charge_requested=None, strings_joined=0,
                                            limits={"charge_voltage_v": None,
                                                    "charge_current_a": 0.0}))  # fmt: skip
    rig.pump()
    got = scrape(rig)
    for name in (
        "bms_site_soc_percent",
        "bms_site_current_amperes",
        "bms_site_power_watts",
        "bms_site_full_charge_requested",
        "bms_site_charge_voltage_limit_volts",
    ):
        assert name not in got, name
    s = (("site", "site1"),)
    assert got["bms_site_strings_joined"][s] == 0.0  # a real 0: no string joined
    assert got["bms_site_charge_current_limit_amperes"][s] == 0.0
    rig.clock.now += 10.0  # still within the stale limit
    assert "bms_site_soh_percent" in scrape(rig)
    rig.clock.now += 1.0  # the site controller went quiet
    assert not any(n.startswith("bms_site_") for n in scrape(rig))
