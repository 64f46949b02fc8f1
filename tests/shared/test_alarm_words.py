"""Active codes in words: title, place (from 1), reading against its threshold, what clears it."""

from __future__ import annotations

from typing import Any

import pytest

from shared.alarm_words import active_words, describe, place_of
from shared.messages import CellLocation, Event, Limits, PackState
from shared.protection_codes import CODE_TABLE


def pack(**fields: Any) -> PackState:
    base: dict[str, Any] = dict(
        soc=55.0, soh=98.0, voltage=52.3, current=-10.0, contactors="fault", mode="working",
        cell_v_min=3.26, cell_v_max=3.81, cell_v_avg=3.28,
        cell_v_min_at=CellLocation(module=0, index=2),
        cell_v_max_at=CellLocation(module=3, index=8),
        temp_min_c=15.0, temp_max_c=61.0, temp_avg_c=18.0,
        temp_min_at=CellLocation(module=1, index=0), temp_max_at=CellLocation(module=2, index=1),
        limits=Limits(charge_voltage_v=55.2, discharge_voltage_v=48.0, charge_current_a=0.0,
                      discharge_current_a=0.0),
    )  # fmt: skip
    return PackState(**(base | fields))


def raised(code: str, level: str, **values: Any) -> Event:
    return Event(level=level, kind="raise", code=code, values=values, ts=1_700_000_000.5)  # type: ignore[arg-type]


def test_over_voltage_fault_in_words_with_its_cell_reading_and_reset() -> None:
    event = raised("cell_overvoltage", "fault", value=3.812, threshold=3.8, release=3.75, unit="V",
                   module=3, index=8)  # fmt: skip
    # the live maximum has moved elsewhere since (the runaway cell left its range): the place
    # is where the extreme was when the level was raised
    now = pack(cell_v_max_at=CellLocation(module=0, index=4))
    words = describe("cell_overvoltage", "fault", now, event, cells_per_module=[14] * 4)
    assert words.title == "Cell over-voltage (fault)"
    assert words.place == "M4 · C9"
    assert words.place_detail == "module 4, cell 9 (cell 51 in series)"
    assert words.reading == "3.812 V against its 3.800 V threshold"
    assert words.since_ts == 1_700_000_000.5
    assert words.clears == "Latched: an operator reset clears it once the value is below 3.750 V."


def test_a_lower_bound_warning_clears_above_its_release_by_itself() -> None:
    event = raised("cell_undertemp_discharge", "warning", value=-9.0, threshold=-8.0,
                   release=-5.0, unit="°C", module=1, index=0)  # fmt: skip
    words = describe("cell_undertemp_discharge", "warning", pack(), event)
    assert words.place == "M2 · T1" and words.place_detail == "module 2, sensor 1"
    assert words.reading == "-9.0 °C against its -8.0 °C threshold"
    assert words.clears == "Clears by itself above -5.0 °C."


def test_deep_discharge_needs_a_service_reset() -> None:
    event = raised("deep_discharge", "fault", value=1.9, threshold=2.0, unit="V", module=0, index=2)
    words = describe("deep_discharge", "fault", pack(faults=["deep_discharge"]), event)
    assert words.place == "M1 · C3"
    assert "service reset" in words.clears


@pytest.mark.parametrize("where", [{"module": -1, "index": 0}, {"module": "1", "index": 2},
                                   {"module": 1}, {"module": True, "index": 0}])  # fmt: skip
def test_a_malformed_place_in_the_event_is_no_place(where: dict[str, Any]) -> None:
    event = raised("cell_overvoltage", "fault", value=3.9, threshold=3.8, unit="V", **where)
    assert describe("cell_overvoltage", "fault", pack(), event).place is None


def test_unknown_stays_unknown_never_guessed() -> None:
    """Raised before the reader started: no place, no reading, no start (the live extreme is
    not taken for the place: it may have moved)."""
    words = describe("cell_overvoltage", "alarm", pack())
    assert words.reading is None and words.since_ts is None and words.place is None
    assert words.clears == "Clears by itself past its release value."
    unknown_value = raised("cell_overvoltage", "alarm", value=None, threshold=3.7, unit="V",
                           module=3, index=8)  # fmt: skip
    words = describe("cell_overvoltage", "alarm", pack(), unknown_value)
    assert words.reading == "unknown, against its 3.700 V threshold"
    # no configuration: the series number is left out rather than guessed
    assert words.place_detail == "module 4, cell 9"


def test_a_code_from_a_newer_master_is_still_shown() -> None:
    words = describe("brand_new_code", "alarm", pack())
    assert words.title == "Brand new code (alarm)" and words.place is None


@pytest.mark.parametrize("spec", CODE_TABLE, ids=lambda s: s.code.value)
def test_every_code_reads_as_words(spec: Any) -> None:
    for level in spec.levels:
        words = describe(spec.code.value, level, pack())
        assert words.title.startswith(spec.title) and spec.title[0].isupper()
        assert words.explanation == spec.description


def test_the_list_puts_faults_first() -> None:
    state = pack(faults=["open_wire"], alarms=["cell_overvoltage"], warnings=["insulation_low"])
    assert [(w.code, w.level) for w in active_words(state, {})] == [
        ("open_wire", "fault"), ("cell_overvoltage", "alarm"), ("insulation_low", "warning")
    ]  # fmt: skip


def test_place_of_a_temperature_sensor_has_no_series_number() -> None:
    label, detail = place_of(CellLocation(module=0, index=0), sensor=True, cells_per_module=[4])
    assert (label, detail) == ("M1 · T1", "module 1, sensor 1")
