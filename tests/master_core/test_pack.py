from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from services.master_core.pack import PackAggregator
from shared.config import Topology
from shared.messages import CellLocation, CellTelemetry

NOW = 1.0
TOPO = Topology(modules=3, cells_per_module=4, temp_sensors_per_module=2)


def tele(
    module: int,
    mv: list[int],
    seq: int,
    flags: list[int] | None = None,
    temps: list[float] | None = None,
) -> CellTelemetry:
    return CellTelemetry(
        module=module, mode="working", sample_ts=1.0, cell_mv=mv, cell_flags=flags or [0] * len(mv),
        balancing=[False] * len(mv), temp_c=temps or [25.0, 26.0], temp_flags=[0, 0], seq=seq,
    )  # fmt: skip


def full(agg: PackAggregator, seq: int = 0) -> None:
    agg.on_telemetry(tele(0, [3700, 3710, 3690, 3705], seq), NOW)
    agg.on_telemetry(tele(1, [3720, 3650, 3700, 3700], seq, temps=[24.0, 31.5]), NOW)
    agg.on_telemetry(tele(2, [3700, 3700, 3700, 3760], seq), NOW)


def test_extremes_with_locations_and_sum() -> None:
    agg = PackAggregator(TOPO)
    full(agg)
    s = agg.snapshot(stale_modules=())
    assert s.complete and s.stale_modules == ()
    assert s.cell_v_min == 3.65 and s.cell_v_min_at == CellLocation(module=1, index=1)
    assert s.cell_v_max == 3.76 and s.cell_v_max_at == CellLocation(module=2, index=3)
    assert math.isclose(s.spread_v or 0, 0.11)
    assert math.isclose(
        s.sum_of_cells_v or 0,
        sum([3700, 3710, 3690, 3705, 3720, 3650, 3700, 3700, 3700, 3700, 3700, 3760]) / 1000,
    )
    assert s.temp_max_c == 31.5 and s.temp_max_at == CellLocation(module=1, index=1)
    assert s.temp_min_c == 24.0


def test_a_stale_module_leaves_the_picture_and_the_sum() -> None:
    agg = PackAggregator(TOPO)
    full(agg)
    assert agg.snapshot(()).stale_modules == ()
    s = agg.snapshot((1,))  # as the communication supervision decided
    assert s.stale_modules == (1,)
    assert s.sum_of_cells_v is None and not s.complete
    assert math.isnan(s.cell_v[5]) and not math.isnan(s.cell_v[3])
    assert agg.cell_snapshot(s).modules[1].cell_v == [None] * 4
    assert s.cell_v_min == 3.69  # module 1's 3.65 V no longer counts


def test_missing_module_is_stale_from_the_start() -> None:
    agg = PackAggregator(TOPO)
    agg.on_telemetry(tele(0, [3700] * 4, 0), NOW)
    assert agg.snapshot(()).stale_modules == (1, 2)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=50))
def test_sequence_gaps_are_counted(steps: list[int]) -> None:
    agg = PackAggregator(TOPO)
    seq = 0
    agg.on_telemetry(tele(0, [3700] * 4, seq), NOW)
    for s in steps:
        seq += s
        agg.on_telemetry(tele(0, [3700] * 4, seq), NOW)
    assert agg.gaps == sum(s - 1 for s in steps)


def test_flags_and_refusals() -> None:
    agg = PackAggregator(TOPO)
    full(agg)
    agg.on_telemetry(tele(2, [3700, 0, 3700, 3700], 1, flags=[0, 1, 0, 0]), NOW)
    s = agg.snapshot(())
    assert s.open_wire and not s.out_of_range
    assert agg.on_telemetry(tele(5, [3700] * 4, 0), NOW) is not None
    assert "3 cells" in (agg.on_telemetry(tele(0, [3700] * 3, 0), NOW) or "")


def test_an_open_wire_reading_is_one_cause_and_leaves_the_statistics() -> None:
    """The slave flags a 0 V open-wire channel as open wire and out of range: protection sees
    open_wire alone, and the 0 V never enters the minimum (no deep discharge, no out-of-range
    fault); a separate out-of-range channel still raises its own flag."""
    agg = PackAggregator(TOPO)
    full(agg)
    both = 1 | 2  # OPEN_WIRE | OUT_OF_RANGE, as the slave reports an open sense wire
    agg.on_telemetry(tele(2, [3700, 0, 3700, 3700], 1, flags=[0, both, 0, 0]), NOW)
    s = agg.snapshot(())
    assert s.open_wire and not s.out_of_range
    assert s.cell_v_min == 3.65 and math.isnan(s.cell_v[9]) and s.sum_of_cells_v is None
    agg.on_telemetry(tele(1, [3720, 5100, 3700, 3700], 1, flags=[0, 2, 0, 0]), NOW)
    assert agg.snapshot(()).out_of_range


def test_a_sample_missing_a_temperature_sensor_is_refused() -> None:
    """A sensor absent from the sample would stay unknown without a flag, unsupervised."""
    agg = PackAggregator(TOPO)
    short = CellTelemetry(
        module=0, mode="working", sample_ts=1.0, cell_mv=[3700] * 4, cell_flags=[0] * 4,
        balancing=[False] * 4, temp_c=[25.0], temp_flags=[0], seq=0,
    )  # fmt: skip
    reason = agg.on_telemetry(short, NOW)
    assert reason is not None and "1 temperature sensors, the configuration has 2" in reason
