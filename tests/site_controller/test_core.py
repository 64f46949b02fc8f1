"""The site controller's decisions: membership, join window, commands, events, sums."""

from __future__ import annotations

from typing import Any

import pytest

from services.site_controller.core import (
    BUS_GATHER_S,
    RETRY_S,
    SiteCore,
    Step,
    StringCommand,
    worst_of,
)
from shared.config import SiteConfig
from tests.factories import limits, pack_state


def mode(system: str, m: str) -> StringCommand:
    return StringCommand(system, "set_mode", m)


def close(system: str) -> StringCommand:
    return StringCommand(system, "contactors", "close")


def _config(**kw: Any) -> SiteConfig:
    base: dict[str, Any] = {
        "site": "site1",
        "strings": [{"system": "s1"}, {"system": "s2"}, {"system": "s3"}],
        "join_window_v": 2.0,
        "current_sharing_factor": 1.0,
        "stale_after_s": 1.0,
    }
    return SiteConfig.model_validate(base | kw)


class Site:
    """The core with a clock and masters that obey at once, as the masters of a site run
    (BMS_AUTO_CLOSE=false): working does not close, `contactors close` does, standby opens."""

    def __init__(self, **kw: Any) -> None:
        self.core = SiteCore(_config(**kw))
        self.now = 100.0
        self.packs: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []

    def string(self, system: str, **fields: Any) -> None:
        self.packs[system] = {**self.packs.get(system, {}), **fields}

    def step(self, obey: bool = True) -> Step:
        for system, fields in self.packs.items():
            self.core.pack_state(system, pack_state(**fields), self.now)
        out = self.core.step(self.now)
        for c in out.commands:
            self.log.append(f"{c.system}:{c.command}:{c.arg}")
            if not obey:
                continue
            if c.command == "contactors":
                self.string(c.system, contactors="closed")
            elif c.arg == "standby":
                self.string(c.system, mode="standby", contactors="standby")
            else:
                self.string(c.system, mode="working")
        self.now += 0.1
        return out

    def members(self, out: Step) -> dict[str, str]:
        return {s.system: s.membership for s in out.state.strings}


def test_the_first_string_defines_the_bus_and_a_mismatched_one_waits_until_it_is_near() -> None:
    site = Site()
    site.string("s1", voltage=400.0, contactors="standby", mode="standby")
    site.string("s2", voltage=400.5, contactors="standby", mode="standby")
    site.string("s3", voltage=403.65, contactors="standby", mode="standby")
    steps = [site.step() for _ in range(5)]
    # s1 and s2 are within 2 V of each other: s1 (the first of the two) closes first and
    # defines the bus; s2 follows; s3 is never asked
    assert site.log == [
        "s1:set_mode:working", "s1:contactors:close",
        "s2:set_mode:working", "s2:contactors:close",
    ]  # fmt: skip
    last = steps[-1]
    assert site.members(last) == {"s1": "joined", "s2": "joined", "s3": "waiting"}
    s3 = next(s for s in last.state.strings if s.system == "s3")
    assert s3.reason == "3.4 V above the bus, waits for the bus to rise"
    assert last.state.voltage_v == pytest.approx(400.25)
    codes = [e.code for step in steps for e in step.events]
    assert codes.count("site_bus_defined") == 1 and codes.count("site_string_joined") == 2
    # s2 and s3 wait for the bus to be defined, then s3 for the window
    assert codes.count("site_string_waiting") == 3
    # the bus rises (charging): s3 comes within the window (the filter follows in ~1 s)
    site.string("s1", voltage=401.9)
    site.string("s2", voltage=402.0)
    for _ in range(40):
        out = site.step()
        if site.members(out)["s3"] == "joined":
            break
    assert site.log[-2:] == ["s3:set_mode:working", "s3:contactors:close"]
    assert out.state.strings_joined == 3 and out.changed


def test_one_noisy_sample_does_not_close_a_string() -> None:
    site = Site()
    site.string("s1", voltage=400.0)
    site.string("s2", voltage=400.0)
    site.string("s3", voltage=404.0, contactors="standby", mode="standby")
    for _ in range(20):
        site.step()
    site.string("s3", voltage=401.0)  # one sample within the window...
    site.step()
    site.string("s3", voltage=404.0)  # ...and back
    for _ in range(5):
        out = site.step()
    assert not [c for c in site.log if c.startswith("s3")]
    assert site.members(out)["s3"] == "waiting"


def test_below_the_bus_waits_for_it_to_fall() -> None:
    site = Site()
    site.string("s1", voltage=400.0)
    site.string("s2", voltage=396.0, contactors="standby", mode="standby")
    site.string("s3", voltage=400.0)
    out = site.step()
    s2 = next(s for s in out.state.strings if s.system == "s2")
    assert s2.reason == "4.0 V below the bus, waits for the bus to fall"
    assert mode("s2", "working") not in out.commands


def test_a_string_that_closed_out_of_turn_is_sent_back_to_standby_while_waiting() -> None:
    """A master that runs in working mode while its string waits (its own start-up) is
    asked to stand by before it closes."""
    site = Site()
    site.string("s1", voltage=400.0)
    site.string("s2", voltage=400.0)
    site.string("s3", voltage=410.0, contactors="standby", mode="working")
    out = site.step()
    assert out.commands == [mode("s3", "standby")]


def test_a_fault_or_silence_leaves_the_sums_at_once_and_the_limits_follow() -> None:
    site = Site()
    for s, charge in (("s1", 100.0), ("s2", 60.0), ("s3", 30.0)):
        site.string(s, voltage=400.0, limits_=limits(charge_current_a=charge))
    out = site.step()
    assert out.state.strings_joined == 3
    assert out.state.limits.charge_current_a == pytest.approx(90.0)  # 3 x 30 A, equal sharing
    site.string("s3", faults=["cell_overvoltage"], contactors="fault")
    out = site.step()
    assert site.members(out)["s3"] == "fault"
    assert out.state.limits.charge_current_a == pytest.approx(120.0)  # 2 x 60 A
    left = [e for e in out.events if e.code == "site_string_left"]
    assert left and left[0].level == "warning" and left[0].values["system"] == "s3"
    assert mode("s3", "standby") in out.commands  # so nothing closes it after a reset
    assert out.state.faults == ["cell_overvoltage"]
    assert worst_of(out.state) == ("fault", "cell_overvoltage")
    # s2 goes silent: stale after 1 s, out of the sums; s1 alone
    site.packs.pop("s2")
    site.now += 1.5
    out = site.step()
    assert site.members(out)["s2"] == "stale"
    assert out.state.limits.charge_current_a == pytest.approx(100.0)
    site.string("s2", warnings=["cell_imbalance"])
    site.core.pack_state("s2", pack_state(**site.packs.pop("s2")), site.now - 10.0)
    out = site.step()
    assert out.state.warnings == []  # a stale string's codes are not known to be active
    # s3's fault is reset and its master stands by: it comes back through the window
    site.string("s3", faults=[], contactors="standby", mode="standby")
    out = site.step()
    assert mode("s3", "working") in out.commands
    out = site.step()
    assert close("s3") in out.commands
    out = site.step()
    assert site.members(out)["s3"] == "joined"
    assert out.state.limits.charge_current_a == pytest.approx(60.0)  # 2 x 30 A


def test_a_command_is_sent_again_while_the_master_does_not_follow() -> None:
    site = Site(strings=[{"system": "s1"}])  # alone: ready at once, no gathering
    site.string("s1", voltage=400.0, contactors="standby", mode="standby")
    assert site.step(obey=False).commands == [mode("s1", "working")]
    assert site.step(obey=False).commands == []
    site.now += RETRY_S
    assert site.step(obey=False).commands == [mode("s1", "working")]
    site.core.command_result("s1", mode("s1", "working"), False, "no reply in time")
    out = site.step(obey=False)
    assert out.commands == [mode("s1", "working")]
    failed = [e for e in out.events if e.code == "site_command_failed"]
    assert failed and failed[0].text == "s1: set_mode working failed: no reply in time"
    # in working mode and still open: the close is asked for, again after RETRY_S
    site.string("s1", mode="working")
    assert site.step(obey=False).commands == [close("s1")]
    assert site.step(obey=False).commands == []
    site.now += RETRY_S
    assert site.step(obey=False).commands == [close("s1")]


def test_unknown_values_stay_unknown() -> None:
    site = Site()
    out = site.step()
    assert out.state.soc is None and out.state.voltage_v is None
    assert out.state.limits.charge_current_a == 0.0 and out.state.limits.charge_voltage_v is None
    assert all(s.membership == "stale" for s in out.state.strings)
    site.string("s1", voltage=400.0, soc=None)
    site.string("s2", voltage=400.0, soc=40.0)
    out = site.step()
    assert out.state.strings_joined == 2 and out.state.soc is None
    site.string("s1", voltage=None)
    out = site.step()
    assert site.members(out)["s1"] == "out"


def test_soc_is_capacity_weighted_and_energy_summed() -> None:
    site = Site(strings=[{"system": "s1"}, {"system": "s2"}])
    site.core.capacity("s1", 100.0)
    site.core.capacity("s2", 300.0)
    site.string("s1", voltage=400.0, soc=20.0, current=10.0, energy_in_wh=5.0, energy_out_wh=1.0)
    site.string("s2", voltage=400.0, soc=60.0, current=30.0, energy_in_wh=7.0, energy_out_wh=2.0)
    out = site.step()
    assert out.state.soc == pytest.approx(50.0)
    assert out.state.current_a == pytest.approx(40.0)
    assert out.state.power_w == pytest.approx(16000.0)
    assert (out.state.energy_in_wh, out.state.energy_out_wh) == (12.0, 3.0)


def test_the_soc_uncertainty_anchor_age_and_full_charge_request_are_the_joined_strings_worst() -> (
    None
):
    site = Site()
    out = site.step()
    assert (out.state.soc_std, out.state.since_anchor_s, out.state.full_charge_requested) == (
        None, None, None,
    )  # fmt: skip
    site.string("s1", voltage=400.0, soc_std=1.5, since_anchor_s=3600.0,
                full_charge_requested=False)  # fmt: skip
    site.string("s2", voltage=400.0, soc_std=4.0, since_anchor_s=7200.0,
                full_charge_requested=True)  # fmt: skip
    site.string("s3", voltage=400.0, soc_std=2.0, since_anchor_s=10.0,
                full_charge_requested=False)  # fmt: skip
    out = site.step()
    assert out.state.strings_joined == 3
    assert out.state.soc_std == 4.0 and out.state.since_anchor_s == 7200.0
    assert out.state.full_charge_requested is True
    # s2 faults: out of the sums, its request and its uncertainty with it
    site.string("s2", faults=["cell_overvoltage"], contactors="fault")
    out = site.step()
    assert out.state.strings_joined == 2
    assert out.state.soc_std == 2.0 and out.state.since_anchor_s == 3600.0
    assert out.state.full_charge_requested is False
    # a joined string that does not know makes the site's value unknown, never 0 or False
    site.string("s3", soc_std=None, since_anchor_s=None, full_charge_requested=None)
    out = site.step()
    assert (out.state.soc_std, out.state.since_anchor_s, out.state.full_charge_requested) == (
        None, None, None,
    )  # fmt: skip
    # ... unless another joined string asks: the request stands
    site.string("s1", full_charge_requested=True)
    out = site.step()
    assert out.state.full_charge_requested is True


def test_a_new_configuration_keeps_what_it_knows_of_the_strings_that_stay() -> None:
    site = Site()
    site.string("s1", voltage=400.0)
    site.step()
    new = site.core.apply_config(_config(strings=[{"system": "s1"}, {"system": "s4"}]))
    assert new == ["s4"]
    site.packs.pop("s2", None)
    out = site.step()
    assert [s.system for s in out.state.strings] == ["s1", "s4"]
    assert site.members(out)["s1"] == "joined"
    assert any(e.code == "site_config_applied" for e in out.events)
    assert not site.core.pack_state("s2", pack_state(), site.now)  # not one of the site's


def test_strings_that_join_in_one_step_define_the_bus_once() -> None:
    site = Site()
    for name in ("s1", "s2", "s3"):
        site.string(name, voltage=400.0)  # closed and working already (a restart)
    out = site.step()
    codes = [e.code for e in out.events]
    assert codes.count("site_bus_defined") == 1 and codes.count("site_string_joined") == 3
    assert codes.index("site_bus_defined") == 0


def test_the_bus_waits_for_every_string_to_be_ready_before_one_defines_it() -> None:
    """The first string ready does not choose the bus alone: s3 (far above the others) is
    ready first; once all are, s1 and s2 (near each other) define it."""
    site = Site()
    site.string("s3", voltage=410.0, contactors="standby", mode="standby")
    out = site.step()
    assert out.commands == []
    s3 = next(s for s in out.state.strings if s.system == "s3")
    assert s3.reason == "waits for every string to be ready before one defines the bus"
    site.string("s1", voltage=None, contactors="standby", mode="standby")  # starting up
    site.string("s2", voltage=400.5, contactors="standby", mode="standby")
    assert site.step().commands == []
    site.string("s1", voltage=400.0)
    assert site.step().commands == [mode("s1", "working")]
    # a string that never gets ready holds the bus back for BUS_GATHER_S only
    lone = Site()
    lone.string("s1", voltage=400.0, contactors="standby", mode="standby")
    assert lone.step().commands == []
    lone.now += BUS_GATHER_S
    assert lone.step().commands == [mode("s1", "working")]


def test_a_mode_just_sent_is_not_taken_back_by_an_older_pack_state() -> None:
    """Standby was sent; a pack state from before it still says working: the controller asks
    for working again rather than closing a master that is by now in standby."""
    site = Site(strings=[{"system": "s1"}])
    site.string("s1", voltage=400.0, contactors="standby", mode="working", faults=["x"])
    assert site.step(obey=False).commands == [mode("s1", "standby")]
    site.string("s1", faults=[])  # healthy again; the state still says working
    assert site.step(obey=False).commands == [mode("s1", "working")]


def test_a_string_asked_to_join_is_not_sent_back_by_noise_at_the_window_edge() -> None:
    site = Site()
    site.string("s1", voltage=400.0)
    site.string("s2", voltage=400.0)
    site.string("s3", voltage=401.9, contactors="standby", mode="standby")
    assert mode("s3", "working") in site.step(obey=False).commands
    site.string("s3", voltage=402.4, mode="working")  # 2.4 V: outside 2 V, inside 2 x 2 V
    for _ in range(30):
        out = site.step(obey=False)
        assert mode("s3", "standby") not in out.commands
    site.string("s3", voltage=404.5)  # beyond twice the window: it waits again
    for _ in range(30):
        out = site.step(obey=False)
    assert site.log[-1] == "s3:set_mode:standby"
    assert next(x for x in out.state.strings if x.system == "s3").reason.endswith("to rise")
