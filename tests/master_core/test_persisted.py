"""The master's persisted records on a real SQLite file: model -> store -> model is the identity,
and a record that does not fit is refused with its reason, never read into defaults."""

from __future__ import annotations

import json
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.persisted import (
    CellOffsetsRecord,
    CyclesRecord,
    LatchedFault,
    LatchesRecord,
    PersistedRecord,
    SocRecord,
    SohRecord,
    ThroughputRecord,
    load,
    save,
)
from services.master_core.protection import LATCHED_STATE_VERSION, Protection
from services.master_core.stores import Store
from shared.config import SystemConfig

CAPACITIES_AH = (50.0, 100.0, 280.0)
finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(0.0, 1e12)
percent = st.floats(0.0, 100.0)
counts = st.integers(0, 10**12)


@cache
def config_for(n_cells: int, capacity_ah: float = 100.0) -> SystemConfig:
    return SystemConfig.from_preset(
        "NMC", modules=1, cells_per_module=n_cells, cell_capacity_ah=capacity_ah
    )


@st.composite
def soc_records(draw: st.DrawFn) -> SocRecord:
    n = draw(st.integers(1, 24))
    cells = st.lists(percent, min_size=n, max_size=n)
    return SocRecord(soc_pct=draw(cells), soc_std_pct=draw(cells))


@st.composite
def soh_records(draw: st.DrawFn) -> SohRecord:
    n = draw(st.integers(1, 24))

    def per_cell(elements: st.SearchStrategy[Any]) -> Any:
        return draw(st.lists(elements, min_size=n, max_size=n))

    return SohRecord(
        nominal_capacity_ah=draw(st.sampled_from(CAPACITIES_AH)),
        capacity_num=per_cell(non_negative),
        capacity_den=per_cell(non_negative),
        capacity_samples=per_cell(counts),
        resistance_ohm=per_cell(st.none() | finite),
        resistance_ref_ohm=per_cell(st.none() | finite),
        resistance_samples=per_cell(counts),
    )


@st.composite
def cell_offsets_records(draw: st.DrawFn) -> CellOffsetsRecord:
    n = draw(st.integers(1, 24))
    return CellOffsetsRecord(
        offset_v=draw(st.lists(finite, min_size=n, max_size=n)),
        anchors=draw(st.lists(st.integers(0, 100), min_size=n, max_size=n)),
        modules=1,
        cells_per_module=n,
        chemistry="NMC",
    )


throughput_records = st.builds(
    ThroughputRecord,
    charge_in_ah=non_negative,
    charge_out_ah=non_negative,
    energy_in_wh=non_negative,
    energy_out_wh=non_negative,
)
cycles_records = st.builds(CyclesRecord, equivalent_cycles=non_negative)
latches_records = st.builds(
    LatchesRecord,
    faults=st.dictionaries(
        st.sampled_from(sorted(Protection.from_system(config_for(4)).codes)),
        st.builds(LatchedFault, value=st.none() | finite),
    ),
)


def fitting_config(record: PersistedRecord) -> SystemConfig:
    if isinstance(record, SocRecord):
        return config_for(len(record.soc_pct))
    if isinstance(record, CellOffsetsRecord):
        return config_for(len(record.offset_v))
    if isinstance(record, SohRecord):
        return config_for(len(record.capacity_num), record.nominal_capacity_ah)
    return config_for(4)


@settings(max_examples=200, deadline=None)
@given(
    record=st.one_of(
        soc_records(),
        soh_records(),
        throughput_records,
        cycles_records,
        latches_records,
        cell_offsets_records(),
    )
)
def test_a_record_comes_back_from_the_sqlite_file_unchanged(record: PersistedRecord) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "m.sqlite")
        save(store, record, ts=1.0)
        store.close()
        again = Store(Path(tmp) / "m.sqlite")
        loaded = load(again, type(record), fitting_config(record))
        again.close()
    assert loaded.refusal is None
    # the SOC record comes back with its save time (the downtime at a restart), else unchanged
    stamp = {"saved_wall_s": 1.0} if isinstance(record, SocRecord) else {}
    assert loaded.record == record.model_copy(update=stamp)


def test_the_latch_record_is_what_protection_writes_and_reads(tmp_path: Path) -> None:
    protection = Protection.from_system(config_for(4))
    protection.restore({"version": LATCHED_STATE_VERSION, "faults": {"deep_discharge": {}}})
    store = Store(tmp_path / "m.sqlite")
    save(store, LatchesRecord.model_validate(protection.latched_state()), ts=1.0)
    loaded = load(store, LatchesRecord, config_for(4))
    assert loaded.record is not None
    again = Protection.from_system(config_for(4))
    assert again.restore(loaded.record.model_dump()) == ("deep_discharge",)
    assert again.latched_state() == protection.latched_state()


SOC_8 = {"version": 1, "soc_pct": [50.0] * 8, "soc_std_pct": [2.0] * 8}
SOH_8 = {
    "version": 1, "nominal_capacity_ah": 100.0, "capacity_num": [1.0] * 8,
    "capacity_den": [0.01] * 8, "capacity_samples": [1] * 8, "resistance_ohm": [None] * 8,
    "resistance_ref_ohm": [None] * 8, "resistance_samples": [0] * 8,
}  # fmt: skip
CELL_OFFSETS = {
    "version": 1, "offset_v": [0.01] * 8, "anchors": [2] * 8, "modules": 1,
    "cells_per_module": 8, "chemistry": "NMC",
}  # fmt: skip
THROUGHPUT = {
    "version": 1, "charge_in_ah": 1.0, "charge_out_ah": 2.0, "energy_in_wh": 30.0,
    "energy_out_wh": 60.0,
}  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "stored", "config", "reason"),
    [
        (SocRecord, SOC_8, config_for(12), "SOC of 8 cells, the configuration has 12"),
        (SocRecord, SOC_8 | {"version": 2}, config_for(8), "version: Input should be 1"),
        (SocRecord, SOC_8 | {"soc_pct": [50.0] * 7}, config_for(8), "different lengths"),
        (SocRecord, SOC_8 | {"soc_pct": [101.0] * 8}, config_for(8), "soc_pct.0"),
        (SohRecord, SOH_8, config_for(12), "SOH of 8 cells, the configuration has 12"),
        (SohRecord, SOH_8, config_for(8, 280.0), "SOH of 100 Ah cells, the configuration has 280"),
        (SohRecord, SOH_8 | {"version": 0}, config_for(8), "version: Input should be 1"),
        (ThroughputRecord, THROUGHPUT | {"energy_in_wh": -1.0}, config_for(8), "energy_in_wh"),
        (ThroughputRecord, THROUGHPUT | {"energy_in_wh": float("nan")}, config_for(8), "finite"),
        (ThroughputRecord, THROUGHPUT | {"cycles": 3}, config_for(8), "cycles"),
        (CyclesRecord, {"version": 2, "equivalent_cycles": 3.0}, config_for(8), "version"),
        (CellOffsetsRecord, CELL_OFFSETS, config_for(4), "1 x 8 NMC cells"),
        (CellOffsetsRecord, CELL_OFFSETS | {"anchors": [1] * 7}, config_for(8), "lengths"),
        (LatchesRecord, {"version": 2, "faults": {}}, config_for(8), "version"),
        (LatchesRecord, {"version": 1, "faults": []}, config_for(8), "faults"),
        (LatchesRecord, ["deep_discharge"], config_for(8), "LatchesRecord"),
    ],
)
def test_a_record_that_does_not_fit_is_refused_with_its_reason(
    tmp_path: Path, cls: type[PersistedRecord], stored: Any, config: SystemConfig, reason: str
) -> None:
    store = Store(tmp_path / "m.sqlite")
    store.put(cls.KEY, stored, ts=1.0)
    loaded = load(store, cls, config)
    assert loaded.record is None
    assert loaded.refusal is not None and reason in loaded.refusal, loaded.refusal
    assert json.dumps(store.get(cls.KEY)) == json.dumps(stored)  # refused, but still stored


def test_system_counters_fit_any_cell_count(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.sqlite")
    store.put(ThroughputRecord.KEY, THROUGHPUT, ts=1.0)
    assert load(store, ThroughputRecord, config_for(12)).record == ThroughputRecord(**THROUGHPUT)


def test_nothing_stored_is_neither_a_record_nor_a_refusal(tmp_path: Path) -> None:
    loaded = load(Store(tmp_path / "m.sqlite"), SohRecord, config_for(8))
    assert loaded.record is None and loaded.refusal is None


def test_the_soc_an_older_master_stored_is_taken_over(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.sqlite")
    legacy = {
        "version": 1,
        "counter": {"kind": "coulomb_counter", "version": 1, "soc_pct": [61.5] * 8,
                    "soc_std_pct": [3.0] * 8, "capacity_ah": [100.0] * 8},
        "soh_pct": None,
    }  # fmt: skip
    store.put("estimator", legacy, ts=1.0)
    loaded = load(store, SocRecord, config_for(8))
    assert loaded.record == SocRecord(soc_pct=[61.5] * 8, soc_std_pct=[3.0] * 8)
    assert load(store, SocRecord, config_for(12)).refusal == (
        "SOC of 8 cells, the configuration has 12"
    )
    store.put("estimator", legacy | {"version": 2}, ts=2.0)
    assert "version" in (load(store, SocRecord, config_for(8)).refusal or "")
    save(store, SocRecord(soc_pct=[40.0] * 8, soc_std_pct=[1.0] * 8), ts=3.0)
    assert load(store, SocRecord, config_for(8)).record == SocRecord(
        soc_pct=[40.0] * 8, soc_std_pct=[1.0] * 8, saved_wall_s=3.0
    )  # the current record wins


def test_the_architecture_page_lists_every_record() -> None:
    page = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    keys = [cls.KEY for cls in PersistedRecord.__subclasses__()]
    assert len(keys) == 10
    for key in keys:
        assert f"| `{key}` |" in page, key
