"""The full-charge request: its decision table, its events, and properties over any inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.master_core.full_charge import (
    CODE,
    DAY_S,
    FullChargeInputs,
    FullChargeRequest,
)
from shared.config import SystemConfig
from shared.event_codes import BY_CODE

INTERVAL_S = 5 * DAY_S


def inputs(
    since_anchor_s: float | None = 0.0,
    *,
    estimating: bool = True,
    fault: bool = False,
    charge_limit_a: float = 50.0,
) -> FullChargeInputs:
    return FullChargeInputs(
        estimating=estimating,
        since_anchor_s=since_anchor_s,
        fault_active=fault,
        charge_limit_a=charge_limit_a,
    )


def test_interval_comes_from_the_preset() -> None:
    lfp = SystemConfig.from_preset("LFP", modules=1, cells_per_module=16)
    nmc = SystemConfig.from_preset("NMC", modules=1, cells_per_module=14)
    assert FullChargeRequest.interval_of(lfp) == 5 * DAY_S
    assert FullChargeRequest.interval_of(nmc) is None


def test_requested_when_the_anchor_is_older_than_the_interval_and_ended_by_the_anchor() -> None:
    req = FullChargeRequest(INTERVAL_S)
    young = req.step(inputs(INTERVAL_S - 1.0), 0.0)
    assert young.requested is False and young.events == ()
    old = req.step(inputs(INTERVAL_S), 1.0)
    assert old.requested is True
    (start,) = old.events
    assert (start.kind, start.code, start.level) == ("raise", CODE, "info")
    assert start.values["since_anchor_s"] == INTERVAL_S
    assert "5.0 d old" in start.text
    # still requested while the charge goes on: no second event
    assert req.step(inputs(INTERVAL_S + 3600.0), 3601.0).events == ()
    # the anchor: its age starts again
    done = req.step(inputs(0.0), 3602.0)
    assert done.requested is False
    (end,) = done.events
    assert (end.kind, end.code) == ("clear", CODE)
    assert "within the interval" in end.text


def test_unknown_before_the_soc_is_estimated() -> None:
    req = FullChargeRequest(INTERVAL_S)
    assert req.step(inputs(None, estimating=False), 0.0).requested is None
    # even with an anchor age, a SOC not estimated asks for nothing
    assert req.step(inputs(10 * DAY_S, estimating=False), 1.0).requested is None


def test_off_without_an_interval() -> None:
    req = FullChargeRequest(None)
    assert req.step(inputs(365 * DAY_S), 0.0).requested is False
    assert req.step(inputs(None), 1.0).requested is False


def test_never_while_a_fault_is_active_or_the_charge_limit_is_zero() -> None:
    req = FullChargeRequest(INTERVAL_S)
    assert req.step(inputs(6 * DAY_S), 0.0).requested is True
    faulted = req.step(inputs(6 * DAY_S, fault=True), 1.0)
    assert faulted.requested is False
    assert [e.kind for e in faulted.events] == ["clear"]
    assert "fault" in faulted.events[0].text
    limited = req.step(inputs(6 * DAY_S, charge_limit_a=0.0), 2.0)
    assert limited.requested is False and limited.events == ()
    assert "0 A" in limited.reason
    again = req.step(inputs(6 * DAY_S), 3.0)
    assert again.requested is True and [e.kind for e in again.events] == ["raise"]


def test_no_anchor_known_counts_the_time_run_without_one() -> None:
    """Commissioning (or a restart with an unknown downtime): the age is unknown, but at least
    the time estimated since; requested once that reaches the interval."""
    req = FullChargeRequest(INTERVAL_S)
    t0 = 1000.0
    first = req.step(inputs(None), t0)
    assert first.requested is None and first.events == ()
    assert req.step(inputs(None), t0 + INTERVAL_S - 1.0).requested is None
    late = req.step(inputs(None), t0 + INTERVAL_S)
    assert late.requested is True
    assert "at least 5.0 d" in late.events[0].text
    # the first anchor ends it
    assert req.step(inputs(0.0), t0 + INTERVAL_S + 1.0).requested is False
    # and a later unknown age counts from that moment on, not from t0
    assert req.step(inputs(None), t0 + INTERVAL_S + 2.0).requested is None


def test_a_new_configuration_keeps_the_request_state() -> None:
    req = FullChargeRequest(INTERVAL_S)
    assert req.step(inputs(6 * DAY_S), 0.0).requested is True
    lfp = SystemConfig.from_preset("LFP", modules=1, cells_per_module=16)
    req.configure(lfp)
    assert req.step(inputs(6 * DAY_S), 1.0).events == ()  # same interval: no new start


def test_the_event_code_is_catalogued() -> None:
    entry = BY_CODE[CODE]
    assert set(entry.kinds) == {"raise", "clear"}


STEP = st.builds(
    FullChargeInputs,
    estimating=st.booleans(),
    since_anchor_s=st.none() | st.floats(0.0, 30 * DAY_S),
    fault_active=st.booleans(),
    charge_limit_a=st.floats(0.0, 500.0),
)
INTERVAL = st.none() | st.floats(1 * DAY_S, 365 * DAY_S)


@given(INTERVAL, st.lists(st.tuples(STEP, st.floats(0.0, 10 * DAY_S)), max_size=30))
def test_properties_over_any_sequence(
    interval_s: float | None, steps: list[tuple[FullChargeInputs, float]]
) -> None:
    req = FullChargeRequest(interval_s)
    now = 0.0
    previous: bool | None = None
    for step_inputs, dt in steps:
        now += dt
        out = req.step(step_inputs, now)
        assert out.requested is req.requested
        # never requested while the pack cannot take the charge, or the feature is off
        if step_inputs.fault_active or step_inputs.charge_limit_a <= 0.0 or interval_s is None:
            assert out.requested is not True
        # unknown only where something is unknown
        if out.requested is None:
            assert not step_inputs.estimating or step_inputs.since_anchor_s is None
        if step_inputs.estimating and step_inputs.since_anchor_s is not None:
            assert out.requested is not None
        if not step_inputs.estimating:
            assert out.requested is None
        # a known age alone decides when nothing holds the request back
        if (
            interval_s is not None
            and step_inputs.estimating
            and step_inputs.since_anchor_s is not None
            and not step_inputs.fault_active
            and step_inputs.charge_limit_a > 0.0
        ):
            assert out.requested is (step_inputs.since_anchor_s >= interval_s)
        # one event per start and per end, nothing else
        kinds = [e.kind for e in out.events]
        started = out.requested is True and previous is not True
        ended = previous is True and out.requested is not True
        assert kinds == (["raise"] if started else ["clear"] if ended else [])
        assert all(e.code == CODE for e in out.events)
        previous = out.requested


@given(st.floats(1 * DAY_S, 365 * DAY_S), st.floats(0.0, 400 * DAY_S), st.floats(0.0, 400 * DAY_S))
def test_monotonic_in_the_anchor_age(interval_s: float, a_s: float, b_s: float) -> None:
    """An older anchor never asks for less."""
    young, old = sorted((a_s, b_s))
    first = FullChargeRequest(interval_s).step(inputs(young), 0.0).requested
    second = FullChargeRequest(interval_s).step(inputs(old), 0.0).requested
    assert not (first is True and second is not True)
