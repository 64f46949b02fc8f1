"""The pack estimator's state across a restart: every field it publishes comes back."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_soc_field import _Snap
from services.master_core.estimation.soc import OcvCurve
from services.master_core.estimator import EstimatorRecords, PackEstimator
from services.master_core.pack import PackAggregator, PackSnapshot
from services.master_core.persisted import (
    CyclesRecord,
    OffsetsRecord,
    SocRecord,
    SohRecord,
    ThroughputRecord,
    load,
    save,
)
from services.master_core.stores import Store
from shared.config import SystemConfig
from shared.config.chemistry import ChemistryOverrides
from shared.messages import CellTelemetry

TRUE_CAPACITY_SHARE = 0.9
"""The simulated cells hold 90 % of their nominal capacity: the estimate must find it."""
STEP_S = 1.0
CELL_R_OHM = 0.002


def run_cycle(est: PackEstimator, config: SystemConfig) -> None:
    """Charge a little, rest, discharge deep, rest: throughput and two OCV references 80 %
    apart, so the SOH estimate is measured, not nominal. Cell voltages are the OCV of the
    true SOC plus the IR drop (the true capacity is TRUE_CAPACITY_SHARE of nominal)."""
    ocv = OcvCurve.from_preset(config.cell_chemistry)
    agg = PackAggregator(config.topology)
    capacity_ah = config.cell_capacity_ah * TRUE_CAPACITY_SHARE
    soc = 88.0
    t = 0.0
    seq = 0
    phases = [(0.2, 600.0), (0.0, 1000.0), (-0.5, None), (0.0, 1000.0)]
    for c_rate, duration_s in phases:
        current = c_rate * config.cell_capacity_ah
        end = t + duration_s if duration_s is not None else None
        while (end is not None and t < end) or (end is None and soc > 10.0):
            t += STEP_S
            soc += 100.0 * current * STEP_S / 3600.0 / capacity_ah
            mv = round((float(ocv.voltage(soc)) + current * CELL_R_OHM) * 1000.0)
            per = config.topology.cells_per_module
            temps = config.topology.temp_sensors_per_module
            for m in range(config.topology.modules):
                msg = CellTelemetry(
                    module=m, mode="working", sample_ts=t, cell_mv=[mv] * per,
                    cell_flags=[0] * per, balancing=[False] * per, temp_c=[25.0] * temps,
                    temp_flags=[0] * temps,
                    seq=seq,
                )  # fmt: skip
                assert agg.on_telemetry(msg, t) is None
            seq += 1
            est.update(agg.snapshot(()), current, STEP_S, t)


def restore_all(store: Store, config: SystemConfig) -> EstimatorRecords:
    kinds = (SocRecord, SohRecord, ThroughputRecord, CyclesRecord, OffsetsRecord)
    loaded = [load(store, cls, config) for cls in kinds]
    assert all(x.refusal is None and x.record is not None for x in loaded)
    soc, soh, throughput, cycles, offsets = (x.record for x in loaded)
    return EstimatorRecords(
        soc=soc,  # type: ignore[arg-type]
        soh=soh,  # type: ignore[arg-type]
        throughput=throughput,  # type: ignore[arg-type]
        cycles=cycles,  # type: ignore[arg-type]
        offsets=offsets,  # type: ignore[arg-type]
    )


@pytest.fixture
def config() -> SystemConfig:
    # The cells' own OCV table (the one run_cycle's voltages come from): a generic table's
    # error would leave one cycle's capacity sample near the rated prior.
    base = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
    chem = base.cell_chemistry
    own = ChemistryOverrides(ocv_table_soc_pct=chem.ocv_table_soc_pct, ocv_table_v=chem.ocv_table_v)
    return base.model_copy(update={"chemistry_overrides": own})


def test_a_restored_estimator_publishes_what_the_saved_one_did(
    config: SystemConfig, tmp_path: Path
) -> None:
    est = PackEstimator(config)
    run_cycle(est, config)
    assert est.soh_pct is not None and est.soh_pct == pytest.approx(90.0, abs=3.0)
    assert est.soh.energy_in_wh > 0 and est.soh.energy_out_wh > 0
    assert est.soh.resistance_samples.sum() > 0  # the charge/rest steps measured R0
    store = Store(tmp_path / "m.sqlite")
    records = est.records()
    assert records is not None
    for record in records.all():
        save(store, record, ts=1.0)
    store.close()

    again = PackEstimator(config)
    again.restore(restore_all(Store(tmp_path / "m.sqlite"), config))
    assert again.started
    assert again.pack_soc_pct == est.pack_soc_pct
    assert np.array_equal(again.counter.soc_pct, est.counter.soc_pct)
    assert np.array_equal(again.counter.soc_std_pct, est.counter.soc_std_pct)
    assert again.soh_pct == est.soh_pct
    assert np.array_equal(again.soh.capacity_ah, est.soh.capacity_ah)
    assert np.array_equal(again.soh.capacity_std_ah, est.soh.capacity_std_ah)
    assert np.array_equal(again.soh.capacity_samples, est.soh.capacity_samples)
    assert np.array_equal(again.soh.resistance_ohm, est.soh.resistance_ohm, equal_nan=True)
    assert np.array_equal(again.soh.resistance_samples, est.soh.resistance_samples)
    assert again.soh.charge_in_ah == est.soh.charge_in_ah
    assert again.soh.charge_out_ah == est.soh.charge_out_ah
    assert again.soh.energy_in_wh == est.soh.energy_in_wh
    assert again.soh.energy_out_wh == est.soh.energy_out_wh
    assert again.soh.equivalent_cycles == est.soh.equivalent_cycles
    assert again.zero.state() == est.zero.state() and est.zero.evidence_s > 0.0
    assert again.records() == records


def test_soh_is_the_commissioning_prior_until_measured_and_unknown_before_start() -> None:
    """A new pack reads the configured capacity as 100 % once the estimator runs; before it
    runs nothing is known."""
    from services.master_core.estimator import SOH_PRIOR_PCT, PackEstimator
    from shared.config import SystemConfig

    estimator = PackEstimator(SystemConfig.from_preset("NMC", system_id="s", modules=1,
                                                       cells_per_module=4))  # fmt: skip
    assert estimator.soh_pct is None
    estimator._started = True  # as after a complete pack
    assert estimator.soh_pct == SOH_PRIOR_PCT


@settings(max_examples=80, deadline=None)
@given(
    std=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=8),
    first_s=st.floats(0.0, 1e8),
    more_s=st.floats(0.0, 1e8),
)
def test_downtime_widens_the_soc_sigma_monotonically_and_within_100(
    std: list[float], first_s: float, more_s: float
) -> None:
    config = SystemConfig.from_preset("NMC", system_id="s", modules=1, cells_per_module=len(std))
    record = SocRecord(soc_pct=[50.0] * len(std), soc_std_pct=std, saved_wall_s=1000.0)
    short, long = PackEstimator(config), PackEstimator(config)
    short.restore(EstimatorRecords(soc=record), wall_s=1000.0 + first_s)
    long.restore(EstimatorRecords(soc=record), wall_s=1000.0 + first_s + more_s)
    before = np.asarray(std)
    assert np.all(short.counter.soc_std_pct >= before - 1e-12)
    assert np.all(long.counter.soc_std_pct >= short.counter.soc_std_pct - 1e-12)
    assert np.all(long.counter.soc_std_pct <= 100.0)
    assert np.array_equal(short.counter.soc_pct, long.counter.soc_pct)


def test_a_day_down_adds_the_current_error_of_a_day_and_a_clock_going_back_adds_nothing(
    tmp_path: Path,
) -> None:
    config = SystemConfig.from_preset("NMC", system_id="s", modules=1, cells_per_module=2)
    store = Store(tmp_path / "m.sqlite")
    save(store, SocRecord(soc_pct=[40.0, 41.0], soc_std_pct=[2.0, 3.0]), ts=5000.0)
    loaded = load(store, SocRecord, config).record
    store.close()
    assert loaded is not None and loaded.saved_wall_s == 5000.0
    est = PackEstimator(config)
    est.restore(EstimatorRecords(soc=loaded), wall_s=5000.0 + 86400.0)
    # 0.1 A for 24 h on the preset's cells
    grown = 100.0 * 0.1 * 24.0 / config.cell_capacity_ah
    assert est.counter.soc_std_pct == pytest.approx([2.0 + grown, 3.0 + grown])
    back = PackEstimator(config)
    back.restore(EstimatorRecords(soc=loaded), wall_s=4000.0)
    assert back.counter.soc_std_pct.tolist() == [2.0, 3.0]
    # a record of an older master (no save time) restores as before
    old = SocRecord.model_validate({"soc_pct": [40.0, 41.0], "soc_std_pct": [2.0, 3.0]})
    assert old.saved_wall_s is None


def test_the_anchor_age_survives_a_restart_with_the_downtime() -> None:
    config = SystemConfig.from_preset("NMC", system_id="s", modules=1, cells_per_module=2)
    record = SocRecord(
        soc_pct=[40.0, 41.0], soc_std_pct=[2.0, 3.0], since_anchor_s=600.0, saved_wall_s=1e6
    )
    est = PackEstimator(config)
    est.restore(EstimatorRecords(soc=record), wall_s=1e6 + 3600.0)
    snap = cast(PackSnapshot, _Snap(np.full(2, 3.7)))
    est.update(snap, 0.0, 0.0, 50.0)
    assert est.since_anchor_s == pytest.approx(4200.0)
    est.update(snap, 0.0, 1.0, 51.0)
    assert est.since_anchor_s == pytest.approx(4201.0)
    records = est.records()
    assert records is not None and records.soc is not None
    assert records.soc.since_anchor_s == pytest.approx(4201.0)
    # no save time (an older master): the age is unknown
    unknown = PackEstimator(config)
    unknown.restore(
        EstimatorRecords(soc=record.model_copy(update={"saved_wall_s": None})), wall_s=2e6
    )
    unknown.update(snap, 0.0, 0.0, 50.0)
    assert unknown.since_anchor_s is None
