"""Recovery from a communication loss: automatic, limited per hour, explained (pure).

Found from outside: a broker restart of 3 s latched `communication_loss` on every system and
needed an operator at the site, 20 times out of 20, while the cells were fine."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.master_core.comm_recovery import WINDOW_S, BrokerOutages, CommLossRecovery
from services.master_core.supervisor import Supervisor, SupervisorEvent, SupervisorOutputs
from shared.config import SystemConfig

from .test_supervisor import CONFIG, MODULES, OV, Rig

TIMEOUT_S = CONFIG.protection.module_timeout_periods * CONFIG.timing.sample_period_working_s


def with_comm_loss(**fields: object) -> SystemConfig:
    data = CONFIG.model_dump(mode="json")
    data["comm_loss"].update(fields)
    return SystemConfig.model_validate(data)


def run(rig: Rig, seconds: float) -> tuple[SupervisorOutputs, list[SupervisorEvent]]:
    events: list[SupervisorEvent] = []
    out = rig.step()
    events.extend(out.events)
    for _ in range(round(seconds / 0.05)):
        out = rig.step()
        events.extend(out.events)
    return out, events


def outage(rig: Rig, down_s: float, *, broker: bool = True) -> list[SupervisorEvent]:
    """Every module silent for `down_s` (the master's own broker link down with it), then back
    for 5 s."""
    rig.silent = set(range(MODULES))
    rig.broker_connected = not broker
    out, events = run(rig, down_s)
    assert "communication_loss" in out.protection.faults and out.coils.all_off
    rig.silent, rig.broker_connected = set(), True
    out, more = run(rig, 5.0)
    return events + more


def codes(events: list[SupervisorEvent]) -> list[str]:
    return [e.code for e in events]


def closed_rig(config: SystemConfig = CONFIG) -> Rig:
    rig = Rig()
    rig.sup.adopt(Supervisor.prepare(config, insulation_monitor=False), rig.now)
    out, _ = run(rig, 5.0)
    assert out.coils.state == "closed"
    return rig


def test_a_broker_outage_recovers_by_itself_and_names_its_cause() -> None:
    rig = closed_rig()
    events = outage(rig, TIMEOUT_S + 3.0)
    out = rig.step()
    assert out.protection.faults == () and out.coils.state == "closed"
    recovered = [e for e in events if e.code == "communication_loss_recovered"]
    assert len(recovered) == 1
    assert "broker connection was down for" in recovered[0].text
    assert recovered[0].values == {"recoveries": 1, "limit": 3}
    assert codes(events).count("broker_connection_lost") == 2  # raised, then cleared


def test_silent_modules_without_a_broker_outage_say_so() -> None:
    rig = closed_rig()
    events = outage(rig, TIMEOUT_S + 1.0, broker=False)
    [recovered] = [e for e in events if e.code == "communication_loss_recovered"]
    assert "module telemetry stopped" in recovered.text
    assert "broker_connection_lost" not in codes(events)


def test_beyond_the_hourly_limit_the_loss_latches_for_an_operator() -> None:
    rig = closed_rig()
    for n in range(1, 4):
        events = outage(rig, TIMEOUT_S + 1.0)
        assert codes(events).count("communication_loss_recovered") == 1, n
    events = outage(rig, TIMEOUT_S + 1.0)
    assert "communication_loss_recovered" not in codes(events)
    assert codes(events).count("communication_loss_recovery_exhausted") == 1
    out, later = run(rig, WINDOW_S / 10)
    assert "communication_loss" in out.protection.faults and out.coils.all_off
    assert "communication_loss_recovery_exhausted" not in codes(later)  # said once
    rig.now += WINDOW_S  # the hour has passed: still the operator's latch
    out, _ = run(rig, 1.0)
    assert "communication_loss" in out.protection.faults
    assert rig.sup.reset(rig.now, service_override=False).ok
    out, _ = run(rig, 5.0)
    assert out.coils.state == "closed"


def test_policy_latch_never_recovers_by_itself() -> None:
    rig = closed_rig(with_comm_loss(recovery="latch"))
    rig.silent = set(range(MODULES))
    run(rig, TIMEOUT_S + 1.0)
    rig.silent = set()
    out, events = run(rig, 10.0)
    assert "communication_loss" in out.protection.faults and out.coils.all_off
    assert "communication_loss_recovered" not in codes(events)


def test_no_recovery_while_another_fault_holds() -> None:
    rig = closed_rig()
    rig.cell_v = OV.threshold + 0.05
    rig.silent = set(range(MODULES))
    run(rig, TIMEOUT_S + 1.0)
    rig.silent = set()
    out, events = run(rig, 5.0)  # the cells are back, and over-voltage with them
    assert "communication_loss" in out.protection.faults
    assert "communication_loss_recovered" not in codes(events)


def test_an_operator_open_is_not_undone_by_a_recovery() -> None:
    rig = closed_rig()
    rig.sup.open(rig.now)
    run(rig, 1.0)
    outage(rig, TIMEOUT_S + 1.0)
    out, _ = run(rig, 5.0)
    assert out.protection.faults == () and out.coils.all_off


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.floats(0.0, 2_000.0), st.booleans(), st.booleans()), max_size=60),
    st.integers(1, 5),
)
def test_never_more_recoveries_in_an_hour_than_allowed(
    history: list[tuple[float, bool, bool]], per_hour: int
) -> None:
    """Random latches and returns: recoveries in any hour <= the limit; once refused, a latch
    is never recovered by itself."""
    recovery = CommLossRecovery(policy="auto", per_hour=per_hour)
    now, done = 0.0, []
    refused_latch = False
    latched = False
    for dt, loss, fresh in history:
        now += dt
        latched = latched or loss
        verdict = recovery.decide(
            now,
            latched_faults=("communication_loss",) if latched else (),
            every_module_fresh=fresh,
        )
        if verdict == "recover":
            assert latched and fresh and not refused_latch
            recovery.recovered(now)
            done.append(now)
            latched = False
        elif verdict == "exhausted":
            refused_latch = True
        if not latched:
            refused_latch = False
        assert all(sum(1 for t in done if s <= t < s + WINDOW_S) <= per_hour for s in done)


def test_broker_outages_name_the_cause_only_when_they_overlap_the_loss() -> None:
    outages = BrokerOutages()
    assert outages.update(False, 10.0) == "lost" and outages.update(False, 11.0) is None
    assert outages.update(True, 13.0) == "back"
    assert "down for 3.0 s" in outages.cause(12.0)
    assert outages.cause(20.0) == "module telemetry stopped"
    assert outages.cause(None) == "module telemetry stopped"


@settings(max_examples=200, deadline=None)
@given(
    ages_s=st.lists(st.floats(0.0, 2 * WINDOW_S), max_size=20),
    down_s=st.floats(0.0, 2 * WINDOW_S),
    wall_skew_s=st.floats(-1e6, 1e6),
)
def test_the_stored_count_is_the_count_after_the_time_spent_down(
    ages_s: list[float], down_s: float, wall_skew_s: float
) -> None:
    """Stored by one process, restored by the next (another monotonic clock) `down_s` later:
    the same recoveries count, minus those that have left the hour meanwhile."""
    first = CommLossRecovery(policy="auto", per_hour=20)
    now_s, wall_s = 5000.0, 1.7e9 + wall_skew_s
    for age in sorted(ages_s, reverse=True):
        first.recoveries_s.append(now_s - age)
    times, exhausted = first.stored(now_s, wall_s)
    second = CommLossRecovery(policy="auto", per_hour=20)
    second.restore(times, exhausted, now_s=7.0, wall_s=wall_s + down_s)
    expected = sum(1 for a in ages_s if a + down_s < WINDOW_S)
    assert abs(second.used(7.0) - expected) <= sum(
        1 for a in ages_s if abs(a + down_s - WINDOW_S) < 1e-6
    )


def test_a_recovery_stored_ahead_of_the_wall_clock_counts_a_whole_hour() -> None:
    """The wall clock was set back between two runs: never fewer recoveries for it."""
    r = CommLossRecovery(policy="auto", per_hour=3)
    r.restore([2000.0, 2000.0], False, now_s=10.0, wall_s=1000.0)
    assert r.used(10.0) == 2
    assert r.used(10.0 + WINDOW_S - 1.0) == 2
    assert r.used(10.0 + WINDOW_S) == 0
