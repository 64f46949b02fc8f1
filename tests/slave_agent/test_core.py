"""Balancing safety of the agent: fresh commands only, master watchdog, voltage and heat limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.slave_agent.core import AgentCore, BalancingLimits
from services.slave_agent.driver import ModuleReading
from shared.messages import BalanceCommand
from tests.factories import pack_state

LIMITS = BalancingLimits(
    min_cell_voltage_v=3.3, max_temperature_c=55.0, active=False, master_silence_timeout_s=3.0
)


def reading(mv: list[int], temp: float = 25.0, flags: list[int] | None = None) -> ModuleReading:
    return ModuleReading(mv, flags or [0] * len(mv), [temp, temp], [0, 0])


def command(
    discharge: list[bool], expires_at: float, charge: list[bool] | None = None
) -> BalanceCommand:
    return BalanceCommand(module=0, expires_at=expires_at, discharge=discharge, charge=charge or [])


def core() -> AgentCore:
    c = AgentCore({0: 4}, LIMITS)
    c.on_pack_state(pack_state(), now_s=0.0)
    return c


def test_fresh_command_runs() -> None:
    c = core()
    assert c.on_balance(command([True, False, True, False], expires_at=5.0), now_s=1.0) is None
    d = c.balancing(0, reading([3900, 3800, 3900, 3800]), now_s=1.5)
    assert d.discharge == [True, False, True, False] and d.reason == ""


@given(st.floats(0, 100), st.floats(0, 100))
def test_expired_command_never_runs(expires_at: float, now: float) -> None:
    c = AgentCore({0: 4}, LIMITS)
    c.on_pack_state(pack_state(), now_s=now)
    reason = c.on_balance(command([True] * 4, expires_at=expires_at), now_s=now)
    d = c.balancing(0, reading([3900] * 4), now_s=now)
    if now > expires_at:
        assert reason is not None and "expired" in reason
        assert not any(d.discharge)
    else:
        assert reason is None and all(d.discharge)


def test_command_stops_when_it_expires_later() -> None:
    c = core()
    c.on_balance(command([True] * 4, expires_at=2.0), now_s=1.0)
    c.on_pack_state(pack_state(), now_s=2.5)
    d = c.balancing(0, reading([3900] * 4), now_s=2.5)
    assert not any(d.discharge) and d.reason == "command expired"


@given(st.floats(0.0, 10.0))
def test_master_silence_stops_balancing(silence_s: float) -> None:
    c = core()
    c.on_balance(command([True] * 4, expires_at=1000.0), now_s=0.0)
    d = c.balancing(0, reading([3900] * 4), now_s=silence_s)
    assert any(d.discharge) == (silence_s <= LIMITS.master_silence_timeout_s)


@given(st.lists(st.integers(2500, 4300), min_size=4, max_size=4))
def test_never_bleeds_a_cell_below_the_minimum(mv: list[int]) -> None:
    c = core()
    c.on_balance(command([True] * 4, expires_at=10.0), now_s=0.0)
    d = c.balancing(0, reading(mv), now_s=0.1)
    for v, on in zip(mv, d.discharge, strict=True):
        assert on == (v >= 3300)


def test_flagged_cells_are_not_bled() -> None:
    c = core()
    c.on_balance(command([True] * 4, expires_at=10.0), now_s=0.0)
    d = c.balancing(0, reading([3900] * 4, flags=[0, 1, 2, 0]), now_s=0.1)
    assert d.discharge == [True, False, False, True]


@given(st.floats(-20, 90))
def test_too_hot_module_does_not_balance(temp: float) -> None:
    c = core()
    c.on_balance(command([True] * 4, expires_at=10.0), now_s=0.0)
    d = c.balancing(0, reading([3900] * 4, temp=temp), now_s=0.1)
    assert any(d.discharge) == (temp <= 55.0)


def test_standby_refuses_and_clears_commands() -> None:
    c = core()
    c.on_balance(command([True] * 4, expires_at=10.0), now_s=0.0)
    c.on_mode("standby", now_s=0.1)
    assert not any(c.balancing(0, reading([3900] * 4), now_s=0.2).discharge)
    assert (
        c.on_balance(command([True] * 4, expires_at=10.0), now_s=0.3) == "standby: balancing is off"
    )


def test_passive_module_refuses_to_charge_cells_and_wrong_sizes() -> None:
    c = core()
    reason = c.on_balance(command([False] * 4, 10.0, charge=[True, False, False, False]), now_s=0)
    assert reason is not None and "passively" in reason
    reason = c.on_balance(command([True] * 3, expires_at=10.0), now_s=0.0)
    assert reason is not None and "4 cells" in reason
    other = BalanceCommand(module=5, expires_at=10.0, discharge=[True] * 4)
    assert c.on_balance(other, now_s=0.0) == "module 5 is not hosted here"


@given(
    st.sampled_from(["standby", "precharge", "closed", "opening", "fault"]), st.floats(-200, 200)
)
def test_string_current_flows_only_through_closed_contactors(
    contactors: str, current: float
) -> None:
    c = AgentCore({0: 4}, LIMITS)
    c.on_pack_state(pack_state(contactors=contactors, current=current), now_s=0.0)
    expected = current if contactors in ("closed", "precharge") else 0.0
    assert c.string_current_a == expected
