"""Contactor state machine, simulated contactors and the comm-loss gate."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.contactors import (
    CONTACTORS,
    ContactorFeedback,
    ContactorName,
    ContactorOutputs,
    ContactorStateMachine,
)
from services.plant.contactors import SimulatedContactors
from shared.config import ContactorConfig, demo_config
from shared.messages.pack import ContactorState

DEMO = demo_config()
CFG = DEMO.contactors
PACK_V = DEMO.nominal_pack_voltage_v
TAU_S = CFG.precharge_resistor_ohm * CFG.dc_link_capacitance_f
DT = 0.01
EPS = 1e-9
STATES: tuple[ContactorState, ...] = get_args(ContactorState)


class Rig:
    """State machine in closed loop with the simulator, one control cycle per `tick`."""

    def __init__(
        self,
        config: ContactorConfig = CFG,
        *,
        pack_v: float = PACK_V,
        dt: float = DT,
        **sim_kwargs: Any,
    ) -> None:
        self.config = config
        self.sm = ContactorStateMachine(config)
        self.sim = SimulatedContactors(config, **sim_kwargs)
        self.pack_v = pack_v
        self.dt = dt
        self.base = 0.0
        self.k = 0
        self.fault_latched = False
        self.feedback = self.sim.feedback
        self.history: list[tuple[float, ContactorOutputs]] = []

    @property
    def now(self) -> float:
        return self.base + self.k * self.dt

    def set_dt(self, dt: float) -> None:
        self.base, self.k, self.dt = self.now, 0, dt

    def tick(self) -> ContactorOutputs:
        out = self.sm.step(
            self.now,
            pack_voltage_v=self.pack_v,
            bus_voltage_v=self.sim.bus_voltage_v,
            feedback=self.feedback,
            fault_latched=self.fault_latched,
        )
        self.history.append((self.now, out))
        self.feedback = self.sim.step(self.dt, out, self.pack_v)
        self.k += 1
        return out

    def run(self, seconds: float) -> ContactorOutputs:
        out = self.tick()
        for _ in range(round(seconds / self.dt) - 1):
            out = self.tick()
        return out

    def run_until(
        self, done: Callable[[ContactorOutputs], bool], max_s: float = 30.0
    ) -> ContactorOutputs:
        for _ in range(round(max_s / self.dt)):
            out = self.tick()
            if done(out):
                return out
        raise AssertionError(f"not reached within {max_s} s; last: {self.sm.outputs}")

    def close(self) -> ContactorOutputs:
        if not self.history:
            self.tick()
        assert self.sm.request_close(self.now) is None
        return self.run_until(lambda o: o.state == "closed")

    def first_time(self, pred: Callable[[ContactorOutputs], bool], after: float = -1.0) -> float:
        return next(t for t, o in self.history if t > after and pred(o))


def coils(out: ContactorOutputs) -> tuple[bool, bool, bool]:
    return (out.main_positive, out.main_negative, out.precharge)


def states_visited(history: list[tuple[float, ContactorOutputs]]) -> list[ContactorState]:
    seen: list[ContactorState] = []
    for _, out in history:
        if not seen or seen[-1] != out.state:
            seen.append(out.state)
    return seen


def rising_edges(rig: Rig, name: ContactorName) -> list[float]:
    times, before = [], False
    for t, out in rig.history:
        now = out.commanded(name)
        if now and not before:
            times.append(t)
        before = now
    return times


# -- the normal sequence -----------------------------------------------------------------------


def test_full_sequence_standby_precharge_closed_opening_standby() -> None:
    rig = Rig()
    assert rig.tick().state == "standby"
    assert rig.sm.request_close(rig.now) is None
    closed = rig.run_until(lambda o: o.state == "closed")
    assert coils(closed) == (True, True, False)
    assert closed.reason.startswith("precharge done")
    assert not closed.feedback_mismatch
    assert rig.feedback == ContactorFeedback(main_positive=True, main_negative=True)
    assert rig.sim.bus_voltage_v == pytest.approx(PACK_V)

    # Coil order: negative + precharge, then positive joins, then precharge drops.
    patterns: list[tuple[bool, bool, bool]] = []
    for _, out in rig.history:
        if not patterns or patterns[-1] != coils(out):
            patterns.append(coils(out))
    assert patterns == [
        (False, False, False),
        (False, True, True),
        (True, True, True),
        (True, True, False),
    ]

    rig.run(1.0)
    assert rig.sm.state == "closed"
    opening = rig.sm.request_open(rig.now)
    assert opening.state == "opening" and opening.all_off
    out = rig.run_until(lambda o: o.state == "standby")
    assert out.all_off and rig.feedback.all_open and out.reason == "contactors confirmed open"
    assert states_visited(rig.history) == ["standby", "precharge", "closed", "opening", "standby"]
    assert not any(o.feedback_mismatch for _, o in rig.history)

    # And again from standby.
    assert rig.close().state == "closed"


def test_open_during_precharge_aborts_to_standby() -> None:
    rig = Rig()
    rig.tick()
    assert rig.sm.request_close(rig.now) is None
    rig.run(0.2)
    assert rig.sm.state == "precharge"
    assert rig.sm.request_open(rig.now).all_off
    assert rig.run_until(lambda o: o.state == "standby").all_off
    assert rig.sm.request_open(rig.now).state == "standby"  # no-op


def test_precharged_link_closes_as_soon_as_feedback_confirms() -> None:
    rig = Rig()
    rig.sim.bus_voltage_v = PACK_V - 1.0  # held up from the inverter side
    rig.close()
    start = rig.first_time(lambda o: o.precharge)
    positive = rig.first_time(lambda o: o.main_positive)
    # The contacts take 30 ms; the step after that sees them closed.
    assert positive - start == pytest.approx(0.03 + DT, abs=DT + EPS)


# -- precharge physics -------------------------------------------------------------------------


@pytest.mark.parametrize("pack_v", [50.0, PACK_V, DEMO.charge_pack_voltage_v, 900.0])
def test_precharge_time_matches_rc(pack_v: float) -> None:
    rig = Rig(pack_v=pack_v)
    rig.close()
    start = rig.first_time(lambda o: o.precharge)
    positive = rig.first_time(lambda o: o.main_positive)
    diff = CFG.precharge_voltage_diff_v
    expected = 0.03 + (-TAU_S * math.log(diff / pack_v))  # contacts close after 30 ms
    assert CFG.precharge_time_s(pack_v) == pytest.approx(expected - 0.03)
    assert expected - EPS <= positive - start < expected + DT + EPS


def test_precharge_time_matches_rc_with_a_load() -> None:
    load = 50_000.0  # light enough for the divided link to reach pack - diff
    rig = Rig(load_ohm=load, close_time_s=0.0)
    rig.close()
    r_pre, diff = CFG.precharge_resistor_ohm, CFG.precharge_voltage_diff_v
    v_final = PACK_V * load / (r_pre + load)
    tau = (r_pre * load / (r_pre + load)) * CFG.dc_link_capacitance_f
    expected = -tau * math.log(1.0 - (PACK_V - diff) / v_final)
    elapsed = rig.first_time(lambda o: o.main_positive) - rig.first_time(lambda o: o.precharge)
    assert expected - EPS <= elapsed < expected + DT + EPS


def test_precharge_with_a_too_heavy_load_retries_then_faults() -> None:
    # The load divides the link below pack - diff: precharge can never finish.
    cfg = CFG.model_copy(update={"precharge_retries": 1, "precharge_retry_wait_s": 0.5})
    rig = Rig(cfg, load_ohm=1_000.0)
    rig.tick()
    assert rig.sm.request_close(rig.now) is None
    out = rig.run_until(lambda o: o.state == "fault")
    assert out.reason == "precharge failed after 2 tries" and out.all_off
    assert not rig.sm.outputs.main_positive
    assert not any(o.main_positive for _, o in rig.history)


def test_invalid_voltage_reading_never_closes() -> None:
    sm = ContactorStateMachine(CFG.model_copy(update={"precharge_retries": 0}))
    now, out = 0.0, sm.outputs
    for i in range(300):
        if i == 1:
            assert sm.request_close(now) is None
        out = sm.step(
            now, pack_voltage_v=math.nan, bus_voltage_v=PACK_V,
            feedback=ContactorFeedback(*coils(out)), fault_latched=False,
        )  # fmt: skip
        assert not out.main_positive
        now += 0.01
    assert out.state == "fault" and out.reason == "precharge failed after 1 tries"


# -- retries -----------------------------------------------------------------------------------


def test_retries_then_fault_with_timing() -> None:
    rig = Rig()
    rig.sim.precharge_short()
    rig.tick()
    assert rig.sm.request_close(rig.now) is None
    out = rig.run_until(lambda o: o.state == "fault")
    tries = CFG.precharge_retries + 1
    assert out.reason == f"precharge failed after {tries} tries"
    assert out.all_off and not out.feedback_mismatch
    assert rig.sm.precharge_attempt == tries
    starts = rising_edges(rig, "precharge")
    assert len(starts) == tries
    assert not any(o.main_positive for _, o in rig.history)
    for a, b in itertools.pairwise(starts):
        # One timed-out try, then the wait.
        cycle = CFG.precharge_timeout_s + CFG.precharge_retry_wait_s
        assert cycle - EPS <= b - a < cycle + 2 * DT + EPS
    fault_at = rig.first_time(lambda o: o.state == "fault")
    assert fault_at - starts[-1] == pytest.approx(CFG.precharge_timeout_s, abs=DT + EPS)
    # Retrying messages are reported while the sequence is still in precharge.
    assert any("retrying" in o.reason and o.state == "precharge" for _, o in rig.history)


def test_no_retries_means_one_try() -> None:
    rig = Rig(CFG.model_copy(update={"precharge_retries": 0}))
    rig.sim.precharge_short()
    rig.tick()
    rig.sm.request_close(rig.now)
    assert rig.run_until(lambda o: o.state == "fault").reason == "precharge failed after 1 tries"
    assert len(rising_edges(rig, "precharge")) == 1


def test_a_later_try_can_succeed() -> None:
    rig = Rig()
    rig.sim.precharge_short()
    rig.tick()
    rig.sm.request_close(rig.now)
    rig.run_until(lambda o: "retrying" in o.reason)
    rig.sim.clear_faults()
    out = rig.run_until(lambda o: o.state == "closed")
    assert rig.sm.precharge_attempt == 2 and out.reason.startswith("precharge done")


# -- refusals, trips, latched faults --------------------------------------------------------


def test_close_refused_before_measurements_and_outside_standby() -> None:
    rig = Rig()
    assert rig.sm.request_close(0.0) == "no measurements yet: call step() first"
    rig.close()
    reason = rig.sm.request_close(rig.now)
    assert reason is not None and "'closed'" in reason
    rig.sm.request_open(rig.now)
    reason = rig.sm.request_close(rig.now)
    assert reason is not None and "'opening'" in reason


def test_close_refused_while_fault_latched() -> None:
    rig = Rig()
    rig.fault_latched = True
    out = rig.tick()
    assert out.state == "fault" and out.all_off and out.reason == "protection fault latched"
    assert rig.sm.request_close(rig.now) == "a protection fault is latched"
    rig.run(1.0)
    assert not any(o.main_negative or o.main_positive for _, o in rig.history)


def test_trip_commands_all_off_in_the_same_call() -> None:
    rig = Rig()
    rig.close()
    out = rig.sm.trip(rig.now, "cell overvoltage")
    assert out.all_off and out.state == "fault" and out.reason == "cell overvoltage"
    out = rig.tick()
    assert out.all_off and out.state == "fault" and out.reason == "cell overvoltage"
    rig.run(0.5)
    assert rig.feedback.all_open
    # A second trip does not overwrite the first reason.
    assert rig.sm.trip(rig.now, "later").reason == "cell overvoltage"


def test_latched_fault_opens_in_the_same_step() -> None:
    rig = Rig()
    rig.close()
    rig.fault_latched = True
    out = rig.tick()
    assert out.all_off and out.state == "fault"


def test_latched_fault_during_precharge_stops_it() -> None:
    rig = Rig()
    rig.tick()
    rig.sm.request_close(rig.now)
    rig.run(0.1)
    rig.fault_latched = True
    assert rig.tick().all_off


def test_close_accepted_then_fault_latches_before_the_next_step() -> None:
    rig = Rig()
    rig.tick()
    assert rig.sm.request_close(rig.now) is None
    rig.fault_latched = True
    out = rig.tick()
    assert out.all_off and out.state == "fault"


# -- feedback supervision ----------------------------------------------------------------------


def test_welded_contactor_is_a_mismatch_then_fault() -> None:
    rig = Rig()
    rig.close()
    rig.sim.weld("main_positive")
    rig.run(0.3)
    assert rig.sm.state == "closed"  # welded but commanded closed: nothing to see yet
    rig.sm.request_open(rig.now)
    opened_at = rig.now
    out = rig.run_until(lambda o: o.feedback_mismatch)
    assert out.state == "fault" and out.all_off
    welded = "main_positive commanded open but reads closed (welded?)"
    assert out.reason == f"feedback mismatch: {welded}"
    # Detected one step after the feedback timeout ran out.
    detected = rig.history[-1][0] - opened_at
    assert CFG.feedback_timeout_s < detected <= CFG.feedback_timeout_s + DT + EPS
    # The mismatch stays visible while the contact stays welded.
    assert rig.tick().feedback_mismatch
    assert rig.sm.reset(rig.now) == "feedback shows main_positive closed"
    rig.sim.clear_faults()
    rig.run(0.1)
    assert not rig.sm.outputs.feedback_mismatch
    assert rig.sm.reset(rig.now) is None
    assert rig.sm.outputs.state == "standby"
    assert rig.close().state == "closed"


def test_weld_at_rest_is_seen_at_once() -> None:
    rig = Rig()
    rig.run(1.0)
    rig.sim.weld("main_negative")
    rig.tick()  # feedback from before the weld
    out = rig.tick()
    assert out.feedback_mismatch and out.state == "fault"
    assert "main_negative commanded open but reads closed" in out.reason


def test_contact_that_does_not_close_is_a_mismatch() -> None:
    rig = Rig()
    rig.sim.stuck_open("main_negative")
    rig.tick()
    rig.sm.request_close(rig.now)
    start = rig.now
    out = rig.run_until(lambda o: o.state == "fault")
    assert out.feedback_mismatch and out.all_off
    assert out.reason == "feedback mismatch: main_negative commanded closed but reads open"
    assert CFG.feedback_timeout_s < rig.history[-1][0] - start <= CFG.feedback_timeout_s + DT + EPS
    # Commanded off now, the stuck-open contact agrees: no mismatch, and reset is allowed.
    assert not rig.tick().feedback_mismatch
    rig.run(0.1)  # the precharge relay drops out
    assert rig.sm.reset(rig.now) is None


def test_main_positive_dropping_out_while_closed() -> None:
    rig = Rig()
    rig.close()
    rig.run(1.0)
    rig.sim.stuck_open("main_positive")
    rig.tick()
    out = rig.tick()
    assert out.state == "fault" and out.all_off
    assert "main_positive commanded closed but reads open" in out.reason


def test_positive_that_does_not_close_after_precharge() -> None:
    rig = Rig()
    rig.sim.stuck_open("main_positive")
    rig.tick()
    rig.sm.request_close(rig.now)
    out = rig.run_until(lambda o: o.state == "fault")
    assert "main_positive commanded closed but reads open" in out.reason


def test_startup_grace_then_mismatch_for_a_contact_closed_at_power_up() -> None:
    sm = ContactorStateMachine(CFG)
    welded = ContactorFeedback(main_positive=True)

    def step(now: float) -> ContactorOutputs:
        return sm.step(
            now, pack_voltage_v=PACK_V, bus_voltage_v=0.0, feedback=welded, fault_latched=False
        )

    assert step(10.0).state == "standby"
    assert step(10.0 + CFG.feedback_timeout_s).state == "standby"
    out = step(10.01 + CFG.feedback_timeout_s)
    assert out.state == "fault" and out.feedback_mismatch


# -- reset -------------------------------------------------------------------------------------


def test_reset_rules() -> None:
    rig = Rig()
    assert rig.sm.reset(0.0) == "contactors are in state 'standby', not in fault"
    rig.close()
    rig.fault_latched = True
    rig.tick()
    assert rig.sm.state == "fault"
    assert rig.sm.reset(rig.now) == "a protection fault is still latched"
    rig.run(0.5)
    rig.fault_latched = False
    # Fault cleared but no reset yet: stays in fault, coils off.
    out = rig.run(0.5)
    assert out.state == "fault" and out.all_off
    assert rig.sm.request_close(rig.now) is not None
    assert rig.sm.reset(rig.now) is None
    assert rig.sm.outputs.state == "standby" and rig.sm.reason == "reset"
    assert rig.close().state == "closed"


def test_reset_needs_feedback_open_even_after_a_trip_between_steps() -> None:
    rig = Rig()
    rig.close()
    rig.sm.trip(rig.now, "insulation fault")
    # Nothing has read the contacts since the coils dropped.
    assert "not been read since the coils dropped" in (rig.sm.reset(rig.now) or "")
    rig.tick()  # the feedback read in that step was taken before the coils dropped
    assert rig.sm.reset(rig.now) == "feedback shows main_positive, main_negative closed"
    rig.run(0.2)
    assert rig.sm.reset(rig.now) is None


def test_reset_right_after_a_trip_is_refused_while_a_contact_is_still_closing() -> None:
    """Found by the closed-loop property: close, one step (the contacts pull in), trip, reset:
    the last feedback the machine saw was from before the close, all open."""
    rig = Rig()
    rig.tick()
    assert rig.sm.request_close(rig.now) is None
    rig.set_dt(0.1)  # longer than the pull-in time
    rig.tick()
    assert not rig.feedback.all_open
    rig.sm.trip(rig.now, "trip")
    assert rig.sm.reset(rig.now) is not None


def test_trip_before_any_step() -> None:
    sm = ContactorStateMachine(CFG)
    assert sm.trip(0.0, "boot check").all_off
    assert sm.reset(0.0) == "no measurements yet: call step() first"


# -- properties --------------------------------------------------------------------------------


# Mostly healthy inputs, so that the sequence gets far; faults and odd feedback now and then.
def rarely(strategy: st.SearchStrategy[Any], one_in: int) -> st.SearchStrategy[Any]:
    """`strategy` once in `one_in` draws, else None."""
    return st.integers(1, one_in).flatmap(lambda i: strategy if i == 1 else st.none())


step_action = st.tuples(
    st.just("step"),
    st.floats(0.0, 0.6),
    rarely(st.tuples(st.booleans(), st.booleans(), st.booleans()), 10),
    rarely(st.just(True), 10).map(bool),
    st.floats(0.0, 980.0),
    rarely(st.floats(0.0, 980.0), 3),
)
request_action = st.tuples(st.sampled_from(["close", "close", "open", "trip", "reset", "reset"]))
actions = st.lists(st.one_of(step_action, step_action, request_action), max_size=60)


def check_outputs(out: ContactorOutputs, *, fault_latched: bool) -> None:
    assert out.state in STATES
    if fault_latched:
        assert out.all_off, "coil on while a fault is latched"
    if out.state in ("standby", "opening", "fault"):
        assert out.all_off
    if out.main_positive:
        assert out.main_negative, "main positive without main negative"


def healthy_close(sm: ContactorStateMachine, pack_v: float) -> tuple[float, ContactorOutputs]:
    """Drive `sm` to closed with ideal feedback and a precharged link; returns (now, outputs)."""
    now, out = 0.0, sm.outputs
    for i in range(6):
        if i == 1:
            assert sm.request_close(now) is None
        feedback = ContactorFeedback(*coils(out))
        out = sm.step(
            now, pack_voltage_v=pack_v, bus_voltage_v=pack_v, feedback=feedback,
            fault_latched=False,
        )  # fmt: skip
        now += 0.05
    assert out.state == "closed"
    return now, out


@settings(max_examples=300, deadline=None)
@given(st.booleans(), actions)
def test_property_never_closed_while_fault_latched(
    start_closed: bool, seq: list[tuple[Any, ...]]
) -> None:
    """Arbitrary requests, trips, resets, feedback and voltages: the safety rules always hold."""
    sm = ContactorStateMachine(CFG)
    now, prev = healthy_close(sm, PACK_V) if start_closed else (0.0, sm.outputs)
    for action in seq:
        kind = action[0]
        if kind == "close":
            sm.request_close(now)
        elif kind == "open":
            assert sm.request_open(now).all_off
        elif kind == "trip":
            out = sm.trip(now, "trip")
            assert out.all_off and out.state == "fault"
            assert sm.outputs.all_off
        elif kind == "reset":
            sm.reset(now)
        else:
            _, dt, fb, latched, pack_v, bus_v = action
            now += dt
            # None: the contacts follow the previous commands (a healthy plant).
            feedback = ContactorFeedback(*fb) if fb is not None else ContactorFeedback(*coils(prev))
            bus = pack_v if bus_v is None else bus_v
            out = sm.step(
                now, pack_voltage_v=pack_v, bus_voltage_v=bus, feedback=feedback,
                fault_latched=latched,
            )  # fmt: skip
            check_outputs(out, fault_latched=latched)
            if out.main_positive and not prev.main_positive:
                # Main positive only closes onto a precharged link.
                assert abs(pack_v - bus) <= CFG.precharge_voltage_diff_v
                assert out.state == "precharge"
            if out.state == "closed":
                assert prev.state in ("precharge", "closed")
            prev = out
        if sm.state == "fault":
            assert sm.outputs.all_off


tick_action = st.tuples(
    st.just("tick"), st.integers(1, 60), st.sampled_from([0.005, 0.02, 0.1, 0.3])
)
plant_action = st.one_of(
    tick_action,
    tick_action,
    st.tuples(st.sampled_from(["close", "close", "open", "reset", "reset", "unlatch", "repair"])),
    st.tuples(st.sampled_from(["trip", "latch", "short"])),
    st.tuples(st.sampled_from(["weld", "stuck_open"]), st.sampled_from(CONTACTORS)),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(plant_action, max_size=25), st.sampled_from([None, 500.0, 5_000.0]))
def test_property_closed_loop_with_simulated_faults(
    seq: list[tuple[Any, ...]], load_ohm: float | None
) -> None:
    rig = Rig(load_ohm=load_ohm)
    prev = rig.tick()
    seen_latched = False
    for action in seq:
        kind = action[0]
        if kind == "tick":
            rig.set_dt(action[2])
            for _ in range(action[1]):
                bus = rig.sim.bus_voltage_v
                out = rig.tick()
                check_outputs(out, fault_latched=rig.fault_latched)
                if out.main_positive and not prev.main_positive:
                    assert abs(rig.pack_v - bus) <= CFG.precharge_voltage_diff_v
                prev = out
                seen_latched = rig.fault_latched
        elif kind == "close":
            if rig.sm.request_close(rig.now) is None:
                # Judged on the last step's inputs; the next step checks again.
                assert not seen_latched
        elif kind == "open":
            rig.sm.request_open(rig.now)
        elif kind == "trip":
            assert rig.sm.trip(rig.now, "trip").all_off
        elif kind == "reset":
            if rig.sm.reset(rig.now) is None:
                assert not seen_latched and rig.feedback.all_open
        elif kind in ("latch", "unlatch"):
            rig.fault_latched = kind == "latch"
        elif kind == "weld":
            rig.sim.weld(action[1])
        elif kind == "stuck_open":
            rig.sim.stuck_open(action[1])
        elif kind == "short":
            rig.sim.precharge_short()
        else:
            rig.sim.clear_faults()


# -- the simulator on its own ------------------------------------------------------------------


def outputs(pos: bool, neg: bool, pre: bool) -> ContactorOutputs:
    return ContactorOutputs(pos, neg, pre, state="precharge", reason="test")


def test_sim_actuation_times() -> None:
    sim = SimulatedContactors(CFG, close_time_s=0.03, open_time_s=0.02)
    assert sim.step(0.029, outputs(True, False, False), PACK_V) == ContactorFeedback()
    assert sim.step(0.002, outputs(True, False, False), PACK_V).main_positive
    assert sim.step(0.019, outputs(False, False, False), PACK_V).main_positive
    assert sim.step(0.002, outputs(False, False, False), PACK_V).all_open
    # A coil pulse shorter than the close time never moves the contact.
    assert sim.step(0.01, outputs(False, True, False), PACK_V).all_open
    assert sim.step(0.1, outputs(False, False, False), PACK_V).all_open
    assert sim.time_s == pytest.approx(0.162)


def test_sim_rc_charge_is_exact_whatever_the_step() -> None:
    coarse = SimulatedContactors(CFG, close_time_s=0.0)
    fine = SimulatedContactors(CFG, close_time_s=0.0)
    pre = outputs(False, True, True)
    coarse.step(0.5, pre, PACK_V)
    for _ in range(50):
        fine.step(0.01, pre, PACK_V)
    expected = PACK_V * (1.0 - math.exp(-0.5 / TAU_S))
    assert coarse.bus_voltage_v == pytest.approx(expected, rel=1e-12)
    assert fine.bus_voltage_v == pytest.approx(expected, rel=1e-9)


def test_sim_contact_move_inside_a_step_splits_the_interval() -> None:
    sim = SimulatedContactors(CFG, close_time_s=0.03)
    sim.step(0.1, outputs(False, True, True), PACK_V)
    assert sim.bus_voltage_v == pytest.approx(PACK_V * (1.0 - math.exp(-0.07 / TAU_S)))


def test_sim_mains_closed_and_decay_through_load() -> None:
    load = 10_000.0
    sim = SimulatedContactors(CFG, close_time_s=0.0, open_time_s=0.0, load_ohm=load)
    sim.step(0.01, outputs(True, True, False), PACK_V)
    assert sim.bus_voltage_v == PACK_V
    sim.step(1.0, outputs(False, False, False), PACK_V)
    assert sim.bus_voltage_v == pytest.approx(PACK_V * math.exp(-1.0 / (load * 0.002)))
    # No load: the capacitor holds.
    hold = SimulatedContactors(CFG, close_time_s=0.0, open_time_s=0.0)
    hold.step(0.01, outputs(True, True, False), PACK_V)
    hold.step(10.0, outputs(False, False, False), PACK_V)
    assert hold.bus_voltage_v == PACK_V


def test_sim_no_path_without_main_negative() -> None:
    sim = SimulatedContactors(CFG, close_time_s=0.0)
    sim.step(1.0, outputs(True, False, True), PACK_V)
    assert sim.bus_voltage_v == 0.0


def test_sim_fault_injection() -> None:
    sim = SimulatedContactors(CFG)
    sim.weld("precharge")
    assert sim.step(1.0, outputs(False, False, False), PACK_V).precharge
    sim.stuck_open("main_negative")
    assert not sim.step(1.0, outputs(False, True, True), PACK_V).main_negative
    assert sim.bus_voltage_v == 0.0
    sim.clear_faults()
    fb = sim.step(1.0, outputs(False, True, True), PACK_V)
    assert fb.main_negative and fb.precharge and sim.bus_voltage_v > 0.9 * PACK_V
    sim.precharge_short()
    assert sim.bus_voltage_v == 0.0
    sim.step(1.0, outputs(True, True, True), PACK_V)
    assert sim.bus_voltage_v == 0.0
    with pytest.raises(ValueError, match="dt_s"):
        sim.step(-1.0, outputs(False, False, False), PACK_V)
    with pytest.raises(ValueError, match="load_ohm"):
        SimulatedContactors(CFG, load_ohm=0.0)
