"""The IVT-S decoder/state core: values round-trip through the DBC, counter gaps are counted,
error bits make a value unknown with a named condition, and nothing outlives its timeout."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.master_core.drivers.ivt_s import (
    STATE_BITS,
    IvtSCore,
    Quantity,
    RejectReason,
    TriggerMode,
    ivt_s_dbc,
    set_mode_frame,
    set_result_config_frame,
)
from services.plant.devices.ivt_s import SimulatedIvtS

INT32 = (-(2**31), 2**31 - 1)


def _scale(quantity: Quantity) -> float:
    return float(
        ivt_s_dbc().get_message_by_name(quantity.dbc_name).get_signal_by_name("Value").scale
    )


def _feed_all(core: IvtSCore, sim: SimulatedIvtS, now_s: float) -> None:
    for frame_id, data in sim.round():
        assert core.feed(frame_id, data, now_s) is None


def test_frame_layout_matches_foxbms_and_the_datasheet() -> None:
    """-1.234 A with a channel error, counter 5: mux 0, byte 1 = 0x25, value big endian in mA."""
    sim = SimulatedIvtS()
    sim.values[Quantity.CURRENT_A] = -1.234
    sim.counters[Quantity.CURRENT_A] = 5
    sim.state_bits[Quantity.CURRENT_A] = {"ChannelError"}
    assert sim.frame(Quantity.CURRENT_A) == (0x521, bytes.fromhex("0025fffffb2e"))
    sim.values[Quantity.TEMPERATURE_C] = 25.3
    assert sim.frame(Quantity.TEMPERATURE_C) == (0x525, bytes.fromhex("0400000000fd"))


@given(
    quantity=st.sampled_from(list(Quantity)),
    raw=st.integers(*INT32),
    now_s=st.floats(0, 1e6),
)
def test_a_value_round_trips_within_its_resolution(
    quantity: Quantity, raw: int, now_s: float
) -> None:
    scale = _scale(quantity)
    sim = SimulatedIvtS()
    sim.values[quantity] = raw * scale
    core = IvtSCore(stale_after_s=1.0)
    assert core.feed(*sim.frame(quantity), now_s) is None
    value = core.value(quantity, now_s)
    assert value is not None
    assert abs(value - raw * scale) <= scale / 2


@given(counts=st.lists(st.integers(0, 15), min_size=1, max_size=40))
def test_every_counter_gap_is_counted(counts: list[int]) -> None:
    sim = SimulatedIvtS()
    core = IvtSCore(stale_after_s=1.0)
    for count in counts:
        sim.counters[Quantity.U1_V] = count
        core.feed(*sim.frame(Quantity.U1_V), 0.0)
    expected = sum(1 for a, b in itertools.pairwise(counts) if b != (a + 1) % 16)
    assert core.counter_gaps[Quantity.U1_V] == expected
    assert sum(core.counter_gaps.values()) == expected


def test_a_continuous_counter_wrapping_at_16_is_no_gap() -> None:
    sim, core = SimulatedIvtS(), IvtSCore(stale_after_s=1.0)
    for _ in range(40):
        _feed_all(core, sim, 0.0)
    assert sum(core.counter_gaps.values()) == 0


@given(
    quantity=st.sampled_from(list(Quantity)),
    bits=st.sets(st.sampled_from(sorted(STATE_BITS)), min_size=1),
)
def test_error_bits_make_the_value_unknown_and_are_named(
    quantity: Quantity, bits: set[str]
) -> None:
    sim, core = SimulatedIvtS(), IvtSCore(stale_after_s=1.0, expected=())
    sim.values[quantity] = 12.0
    sim.state_bits[quantity] = bits
    core.feed(*sim.frame(quantity), 0.0)
    invalid = any(STATE_BITS[b][1] for b in bits)
    assert (core.value(quantity, 0.0) is None) == invalid
    names = {f"{quantity.name.lower()}:{STATE_BITS[b][0]}" for b in bits}
    assert set(core.errors(0.0)) == names


def test_over_current_detection_keeps_the_current_but_says_so() -> None:
    sim, core = SimulatedIvtS(), IvtSCore(stale_after_s=1.0)
    sim.values[Quantity.CURRENT_A] = 480.0
    sim.state_bits[Quantity.CURRENT_A] = {"OverCurrentDetected"}
    _feed_all(core, sim, 0.0)
    reading = core.reading(0.0)
    assert reading.current_a == pytest.approx(480.0)
    assert reading.errors == ("current_a:over_current_detected",)
    assert not reading.stale


def test_a_cleared_error_gives_the_value_back() -> None:
    sim, core = SimulatedIvtS(), IvtSCore(stale_after_s=1.0)
    sim.values[Quantity.U2_V] = 400.0
    sim.state_bits[Quantity.U2_V] = {"MeasurementError"}
    _feed_all(core, sim, 0.0)
    assert core.reading(0.0).u2_v is None
    sim.state_bits.clear()
    _feed_all(core, sim, 0.1)
    assert core.reading(0.1).u2_v == pytest.approx(400.0)


@given(stale_after_s=st.floats(0.01, 10), age_s=st.floats(0, 20))
def test_nothing_outlives_its_timeout(stale_after_s: float, age_s: float) -> None:
    sim, core = SimulatedIvtS(), IvtSCore(stale_after_s=stale_after_s)
    sim.values = {q: 1.5 for q in Quantity}
    _feed_all(core, sim, 100.0)
    reading = core.reading(100.0 + age_s)
    fresh = (100.0 + age_s) - 100.0 <= stale_after_s  # the age as the core sees it
    values = (reading.current_a, reading.u1_v, reading.u2_v, reading.u3_v, reading.temperature_c)
    assert all((v is not None) == fresh for v in values)
    assert reading.stale is not fresh
    assert ("current_a:stale" in reading.errors) is not fresh


def test_a_sensor_never_heard_is_stale_and_unknown() -> None:
    reading = IvtSCore(stale_after_s=1.0).reading(0.0)
    assert reading.stale and reading.current_a is None and reading.u1_v is None
    assert "current_a:missing" in reading.errors


def test_only_the_silent_quantity_goes_stale() -> None:
    sim, core = SimulatedIvtS(), IvtSCore(stale_after_s=0.5)
    _feed_all(core, sim, 0.0)
    sim.trigger[Quantity.U3_V] = TriggerMode.DISABLED
    _feed_all(core, sim, 0.4)
    reading = core.reading(0.8)
    assert reading.u3_v is None and reading.u1_v is not None
    assert reading.stale and "u3_v:stale" in reading.errors


@pytest.mark.parametrize(
    ("frame_id", "data", "reason"),
    [
        (0x530, bytes(6), RejectReason.UNKNOWN_ID),
        (0x521, bytes(5), RejectReason.WRONG_LENGTH),
        (0x521, bytes(8), RejectReason.WRONG_LENGTH),
        (0x521, bytes.fromhex("010000000001"), RejectReason.MUX_MISMATCH),
        (0x511, bytes(3), RejectReason.WRONG_LENGTH),
    ],
)
def test_bad_frames_are_counted_and_change_nothing(
    frame_id: int, data: bytes, reason: RejectReason
) -> None:
    core = IvtSCore(stale_after_s=1.0)
    assert core.feed(frame_id, data, 0.0) is reason
    assert core.rejected == {reason: 1}
    assert core.value(Quantity.CURRENT_A, 0.0) is None


def test_commands_follow_the_datasheet_bytes() -> None:
    assert set_mode_frame(False) == (0x411, bytes.fromhex("3400010000000000"))
    assert set_mode_frame(True) == (0x411, bytes.fromhex("3401010000000000"))
    frame = set_result_config_frame(Quantity.CURRENT_A, TriggerMode.CYCLIC, 10)
    assert frame == (0x411, bytes.fromhex("2002000a00000000"))
    frame = set_result_config_frame(Quantity.ENERGY_WH, TriggerMode.DISABLED, 0)
    assert frame == (0x411, bytes.fromhex("2700000000000000"))


def test_a_cycle_time_out_of_range_is_refused_not_clamped() -> None:
    with pytest.raises(Exception, match="CycleTime_I"):
        set_result_config_frame(Quantity.CURRENT_A, TriggerMode.CYCLIC, 70000)


def test_the_simulator_answers_commands_and_the_core_counts_responses() -> None:
    sim, core = SimulatedIvtS(), IvtSCore(stale_after_s=1.0)
    assert sim.command(set_result_config_frame(Quantity.U1_V, TriggerMode.DISABLED, 0)[1]) is None
    for frame in (
        set_mode_frame(False),
        set_result_config_frame(Quantity.U1_V, TriggerMode.DISABLED, 0),
        set_mode_frame(True),
    ):
        response = sim.command(frame[1])
        assert response is not None
        assert core.feed(*response, 0.0) is None
    assert core.acknowledged(0x34) == 2 and core.acknowledged(0x21) == 1
    assert Quantity.U1_V.frame_id not in {fid for fid, _ in sim.round()}
