from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.master_core.pack import PackAggregator, PackSnapshot, _known, _rounded
from shared.config import Topology
from shared.messages import CellLocation, CellTelemetry
from tests.master_core.pack_reference import reference_snapshot

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


# --- incremental against from scratch (issue 19) ---------------------------------------------
UNEVEN = Topology(modules=3, cells_per_module=4, temp_sensors_per_module=2,
                  module_cell_counts=(3, 1, 4))  # fmt: skip

flag = st.sampled_from([0, 0, 0, 0, 1, 2, 3, 4])


@st.composite
def sample(draw: st.DrawFn, topo: Topology) -> tuple[int, list[int], list[int], list[bool],
                                                     list[float], list[int]]:  # fmt: skip
    m = draw(st.integers(0, topo.modules - 1))
    n = (topo.module_cell_counts or (topo.cells_per_module,) * topo.modules)[m]
    per = topo.temp_sensors_per_module
    # few distinct values, so equal extremes (the first one's place counts) happen often
    mv = draw(
        st.lists(st.sampled_from([0, 3000, 3650, 3700, 3701, 4300, 4950, 5100, 5600]),
                 min_size=n, max_size=n)
    )  # fmt: skip
    flags = draw(st.lists(flag, min_size=n, max_size=n))
    bal = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    temps = draw(st.lists(st.sampled_from([-20.0, 25.0, 25.5, 60.0]), min_size=per, max_size=per))
    tflags = draw(st.lists(flag, min_size=per, max_size=per))
    return m, mv, flags, bal, temps, tflags


def steps(topo: Topology) -> st.SearchStrategy[list[object]]:
    stale = st.lists(st.integers(0, topo.modules - 1), max_size=topo.modules).map(
        lambda ms: tuple(sorted(set(ms)))
    )
    return st.lists(st.one_of(sample(topo), stale.map(lambda s: ("stale", s))), max_size=30)


def same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    return a == b


@given(st.sampled_from([TOPO, UNEVEN]).flatmap(lambda t: st.tuples(st.just(t), steps(t))))
def test_the_incremental_snapshot_equals_one_from_scratch(
    case: tuple[Topology, list[object]],
) -> None:
    """After any sequence of samples (flagged channels, balancing) and stale-set changes, with
    a snapshot after every step as the loop takes them, the snapshot is the one computed from
    the latest samples alone: every field, every channel in its place."""
    topo, sequence = case
    agg = PackAggregator(topo)
    latest: dict[int, CellTelemetry] = {}
    stale: tuple[int, ...] = ()
    for seq, step in enumerate(sequence):
        if isinstance(step, tuple) and step[0] == "stale":
            stale = step[1]
        else:
            m, mv, flags, bal, temps, tflags = step  # type: ignore[misc]
            msg = CellTelemetry(
                module=m, mode="working", sample_ts=NOW, cell_mv=mv, cell_flags=flags,
                balancing=bal, temp_c=temps, temp_flags=tflags, seq=seq,
            )  # fmt: skip
            assert agg.on_telemetry(msg, NOW) is None
            latest[m] = msg
        got, want = agg.snapshot(stale), reference_snapshot(topo, latest, stale)
        for f in dataclasses.fields(PackSnapshot):
            assert same(getattr(got, f.name), getattr(want, f.name)), f.name
        assert agg.cell_snapshot(got) == agg.cell_snapshot(want)


def test_a_snapshot_is_computed_again_only_when_something_changed() -> None:
    agg = PackAggregator(TOPO)
    full(agg)
    first = agg.snapshot(())
    assert agg.snapshot(()) is first  # nothing arrived, nothing went stale: the same picture
    computed = agg.snapshots_computed
    assert agg.snapshot((2,)) is not first and agg.snapshots_computed == computed + 1
    agg.on_telemetry(tele(0, [3600, 3710, 3690, 3705], 1), NOW)
    again = agg.snapshot((2,))
    assert again.cell_v_min == 3.6 and agg.snapshots_computed == computed + 2


def test_a_snapshot_handed_out_never_changes() -> None:
    """The arrays are the snapshot's own and read only: the next sample, written in place into
    the aggregator, leaves an earlier picture (kept by protection, balancing) as it was."""
    agg = PackAggregator(TOPO)
    full(agg)
    s = agg.snapshot(())
    before = s.cell_v.copy()
    agg.on_telemetry(tele(0, [3000] * 4, 1), NOW)
    assert agg.snapshot(()).cell_v_min == 3.0
    assert np.array_equal(s.cell_v, before) and s.cell_v_min == 3.65
    with pytest.raises(ValueError):
        s.cell_v[0] = 0.0


@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-10_000, 10_000).map(lambda mv: mv / 1000),  # on the grid: the usual
            st.integers(-10_000, 10_000).map(lambda mv: (mv + 0.5) / 1000),  # half-way
            st.integers(-1000, 1000).map(lambda dc: dc / 10),
        ),
        max_size=30,
    ),
    st.sampled_from([1, 3]),
)
def test_published_values_round_as_python_rounds(values: list[float], digits: int) -> None:
    """The cell snapshot's rounding skips Python's `round` for values on the decimal grid:
    the same floats (sign of zero included), None for NaN."""
    got = _rounded(np.array(values, dtype=np.float64), digits)
    want = [_known(v, digits) for v in values]
    assert [None if g is None else (g, math.copysign(1.0, g)) for g in got] == [
        None if w is None else (w, math.copysign(1.0, w)) for w in want
    ]
