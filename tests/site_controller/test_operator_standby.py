"""The operator's standby is respected: a string an operator put in standby (or took out in
the site configuration) stays out, the reason in words, until the operator asks it to join."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.site_controller.core import BUS_GATHER_S, MODE_ECHO_S, SiteCore
from shared.config import SiteConfig
from tests.site_controller.test_core import Site, _config


def joined_site(**kw: object) -> Site:
    site = Site(**kw)
    for system in ("s1", "s2", "s3"):
        site.string(system, voltage=400.0, contactors="standby", mode="standby")
    for _ in range(10):
        site.step()
    return site


def reason_of(site: Site, system: str) -> str:
    out = site.step()
    return next(s.reason for s in out.state.strings if s.system == system)


def test_an_operators_standby_holds_the_string_out_until_asked_to_join() -> None:
    site = joined_site()
    assert site.members(site.step()) == {"s1": "joined", "s2": "joined", "s3": "joined"}
    site.log.clear()
    site.string("s2", mode="standby", contactors="standby")  # the operator, on s2's own page
    first = site.step()
    codes = [e.code for e in first.events]
    assert "site_string_held" in codes and "site_string_left" in codes
    for _ in range(100):  # 10 s: never set back to working
        out = site.step()
    assert site.members(out)["s2"] == "out"
    assert out.state.strings_joined == 2
    assert not [c for c in site.log if c.startswith("s2:")]
    assert reason_of(site, "s2") == (
        "put in standby by an operator (not by the site controller): stays out until an "
        "operator asks it to join again"
    )
    assert site.core.held() == {"s2": "put in standby by an operator (not by the site controller)"}

    # its master restarts (in working mode): still held, sent back to standby
    site.string("s2", mode="working", contactors="standby")
    site.step()
    assert site.log == ["s2:set_mode:standby"]
    assert site.members(site.step())["s2"] == "out"

    # the operator asks it to join: it joins by the controller's rules
    assert site.core.join("s2")
    released = site.step()
    assert "site_string_released" in [e.code for e in released.events]
    for _ in range(5):
        out = site.step()
    assert site.members(out)["s2"] == "joined"
    assert site.log[-2:] == ["s2:set_mode:working", "s2:contactors:close"]
    assert site.core.held() == {}


def test_the_controllers_own_standby_is_not_an_operators() -> None:
    site = Site()
    site.string("s1", voltage=400.0, contactors="standby", mode="standby")
    site.string("s2", voltage=400.0, contactors="standby", mode="standby")
    # s3 starts in working mode, 5 V above the bus: the controller sends it to standby
    site.string("s3", voltage=405.0, contactors="standby", mode="working")
    for _ in range(10):
        out = site.step()
    assert "s3:set_mode:standby" in site.log
    assert site.members(out)["s3"] == "waiting" and site.core.held() == {}
    site.string("s3", voltage=400.5)  # it comes within the window: it joins
    for _ in range(30):
        out = site.step()
    assert site.members(out)["s3"] == "joined"


def test_a_string_out_of_service_in_the_configuration_leaves_and_returns_with_it() -> None:
    site = joined_site()
    taken_out = _config(strings=[{"system": "s1"}, {"system": "s2", "in_service": False},
                                 {"system": "s3"}])  # fmt: skip
    site.core.apply_config(taken_out)
    site.log.clear()
    out = site.step()
    assert site.log == ["s2:set_mode:standby"]
    assert site.members(out)["s2"] == "out" and out.state.strings_joined == 2
    assert reason_of(site, "s2") == "taken out of service in the site configuration"
    left = [e for e in out.events if e.code == "site_string_left"]
    assert left and "taken out of service" in left[0].text
    for _ in range(50):
        out = site.step()
    assert site.members(out)["s2"] == "out" and site.log == ["s2:set_mode:standby"]
    # the configuration's own standby is not held as an operator's
    assert site.core.held() == {}
    site.core.apply_config(_config())
    for _ in range(5):
        out = site.step()
    assert site.members(out)["s2"] == "joined"


def test_a_string_out_of_service_does_not_keep_the_bus_waiting() -> None:
    site = Site(strings=[{"system": "s1"}, {"system": "s2", "in_service": False}])
    site.string("s1", voltage=400.0, contactors="standby", mode="standby")  # s2 says nothing
    out = site.step()
    assert site.members(out) == {"s1": "waiting", "s2": "stale"}
    for _ in range(3):
        out = site.step()
    assert site.members(out)["s1"] == "joined"  # at once, not after BUS_GATHER_S
    assert site.now - 100.0 < BUS_GATHER_S


def test_hold_by_request_and_unknown_strings() -> None:
    site = joined_site()
    assert site.core.hold("s1", "held out for maintenance")
    out = site.step()
    assert site.members(out)["s1"] == "out"
    assert not site.core.hold("nope") and not site.core.join("nope")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["operator_standby", "operator_working", "join", "restart", "wait"]),
            st.sampled_from(["s1", "s2", "s3"]),
            st.floats(399.0, 401.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_held_string_is_never_asked_to_work_nor_to_close(
    actions: list[tuple[str, str, float]],
) -> None:
    site = joined_site()
    for action, system, volts in actions:
        held_before = set(site.core.held())
        site.log.clear()
        if action == "operator_standby":
            site.string(system, mode="standby", contactors="standby", voltage=volts)
        elif action in ("operator_working", "restart"):  # someone sets it working on the string
            site.string(system, mode="working", contactors="standby", voltage=volts)
        elif action == "join":
            site.core.join(system)
            held_before.discard(system)
        out = site.step()
        held = set(site.core.held())
        for s in held_before & held:
            assert f"{s}:set_mode:working" not in site.log
            assert f"{s}:contactors:close" not in site.log
        for s in held:
            assert site.members(out)[s] == "out"
            assert next(x.reason for x in out.state.strings if x.system == s).endswith(
                "stays out until an operator asks it to join again"
            )
        assert out.state.strings_joined == sum(m == "joined" for m in site.members(out).values())


def test_the_hold_survives_a_new_configuration() -> None:
    site = joined_site()
    site.string("s3", mode="standby", contactors="standby")
    site.step()
    site.core.apply_config(SiteConfig.model_validate(
        {"site": "site1", "strings": [{"system": "s1"}, {"system": "s3"}], "stale_after_s": 1.0}
    ))  # fmt: skip
    assert set(site.core.held()) == {"s3"}
    assert isinstance(site.core, SiteCore)


def test_a_late_echo_of_the_controllers_own_standby_is_not_an_operators() -> None:
    """CI found it: at start-up the controller sends a working master to standby (to gather),
    then picks it to define the bus and asks working before the master's standby state
    arrives. The late standby answers the controller's own command; it must not hold."""
    site = Site()
    site.string("s1", voltage=15.3, contactors="standby", mode="working")
    site.step(obey=False)  # s1 alone: waits for the others, asked to stand by
    assert site.log == ["s1:set_mode:standby"]
    site.string("s2", voltage=15.3, contactors="standby", mode="standby")
    site.string("s3", voltage=15.3, contactors="standby", mode="standby")
    site.step(obey=False)  # every string ready: s1 defines the bus, asked to work
    assert site.log[-1] == "s1:set_mode:working"
    site.string("s1", mode="standby")  # the master's answer to the first command, late
    site.step(obey=False)
    assert site.core.held() == {}
    site.string("s1", mode="working")  # then to the second
    for _ in range(10):
        out = site.step()
    assert site.core.held() == {}
    assert site.members(out) == {"s1": "joined", "s2": "joined", "s3": "joined"}


def test_an_operators_standby_long_after_the_controllers_own_still_holds() -> None:
    """The controller's standby, never answered (the master missed it), excuses a standby
    only for `MODE_ECHO_S`: an operator's later standby holds."""
    site = Site()
    site.string("s1", voltage=15.3, contactors="standby", mode="working")
    site.step(obey=False)
    assert site.log == ["s1:set_mode:standby"]
    site.string("s2", voltage=15.3, contactors="standby", mode="standby")
    site.string("s3", voltage=15.3, contactors="standby", mode="standby")
    for _ in range(10):  # s1 never stood by; it joins
        out = site.step()
    assert site.members(out)["s1"] == "joined"
    site.now += MODE_ECHO_S
    site.string("s1", mode="standby", contactors="standby")
    site.step()
    assert site.core.held() == {"s1": "put in standby by an operator (not by the site controller)"}
