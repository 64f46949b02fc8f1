"""The site's disconnect and connect (site command `site_operation`, SCADA's 802 SetOp): a
disconnect holds every string out in standby until connect, which releases the disconnect's
holds only (an operator's hold and the configuration's out of service stay)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.site_controller.test_core import Site, _config
from tests.site_controller.test_operator_standby import joined_site, reason_of


def test_disconnect_sends_every_string_to_standby_and_connect_lets_them_join_again() -> None:
    site = joined_site()
    site.log.clear()
    assert site.core.disconnect("disconnected by SCADA") == ["s1", "s2", "s3"]
    out = site.step()
    assert sorted(site.log) == ["s1:set_mode:standby", "s2:set_mode:standby",
                                "s3:set_mode:standby"]  # fmt: skip
    codes = [e.code for e in out.events]
    assert codes.count("site_disconnected") == 1 and codes.count("site_string_held") == 3
    assert out.state.operation == "disconnect"
    for _ in range(50):
        out = site.step()
    assert set(site.members(out).values()) == {"out"} and out.state.strings_joined == 0
    assert reason_of(site, "s2") == (
        "disconnected by SCADA: stays out until the site is connected again"
    )
    assert len(site.log) == 3  # nothing else asked meanwhile

    assert site.core.connect("connected by SCADA") == ["s1", "s2", "s3"]
    out = site.step()
    assert "site_connected" in [e.code for e in out.events]
    assert out.state.operation == "connect"
    for _ in range(30):
        out = site.step()
    assert site.members(out) == {"s1": "joined", "s2": "joined", "s3": "joined"}
    assert site.core.held() == {}


def test_connect_keeps_an_operators_hold_and_the_configurations_out_of_service() -> None:
    site = joined_site(strings=[{"system": "s1"}, {"system": "s2"},
                                {"system": "s3", "in_service": False}])  # fmt: skip
    assert site.core.hold("s1", "held out by an operator")
    site.core.disconnect("disconnected by an operator")
    assert site.core.held()["s1"] == "held out by an operator"
    site.step()
    site.core.hold("s2", "held out by an operator")  # while disconnected: now the operator's
    assert site.core.connect("connected by an operator") == ["s3"]
    for _ in range(30):
        out = site.step()
    assert site.members(out) == {"s1": "out", "s2": "out", "s3": "out"}
    assert reason_of(site, "s3") == "taken out of service in the site configuration"
    assert reason_of(site, "s1").endswith("stays out until an operator asks it to join again")


def test_no_string_joins_while_disconnected_whoever_asks_and_new_strings_stay_out() -> None:
    site = joined_site()
    site.core.disconnect("disconnected by SCADA")
    site.step()
    assert site.core.join("s1")  # an operator's join of one string does not beat the site's
    assert set(site.core.held()) == {"s1", "s2", "s3"}
    site.core.apply_config(_config(strings=[{"system": "s1"}, {"system": "s2"},
                                            {"system": "s3"}, {"system": "s4"}]))  # fmt: skip
    assert site.core.held()["s4"] == "disconnected by SCADA"
    site.core.disconnect("disconnected by SCADA")  # again: nothing changes, no second event
    assert "site_disconnected" not in [e.code for e in site.step().events]
    assert site.core.connect("connected by SCADA") == ["s1", "s2", "s3", "s4"]
    assert site.core.connect("connected by SCADA") == []  # again: nothing to release
    assert "site_connected" in [e.code for e in site.step().events]


def test_connect_of_a_connected_site_changes_nothing() -> None:
    site = Site()
    assert site.core.connect("connected by SCADA") == []
    assert "site_connected" not in [e.code for e in site.step().events]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["disconnect", "connect", "join", "out", "operator_standby", "restart", "wait"]
            ),
            st.sampled_from(["s1", "s2", "s3"]),
            st.floats(399.0, 401.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_after_disconnect_no_string_is_asked_to_work_or_close_until_connect(
    actions: list[tuple[str, str, float]],
) -> None:
    site = joined_site()
    disconnected = False
    operator_held: set[str] = set()
    for action, system, volts in actions:
        site.log.clear()
        if action == "disconnect":
            site.core.disconnect("disconnected by SCADA")
            disconnected = True
        elif action == "connect":
            site.core.connect("connected by SCADA")
            disconnected = False
        elif action == "join":
            site.core.join(system)
            if not disconnected:
                operator_held.discard(system)
        elif action == "out":
            site.core.hold(system)
            operator_held.add(system)
        elif action == "operator_standby":
            site.string(system, mode="standby", contactors="standby", voltage=volts)
        elif action == "restart":  # its master restarts in working mode
            site.string(system, mode="working", contactors="standby", voltage=volts)
        out = site.step()
        operator_held |= {s for s, why in site.core.held().items() if "operator" in why}
        if disconnected:
            assert not [c for c in site.log if c.endswith((":working", ":close"))], site.log
            assert "joined" not in site.members(out).values()
            assert out.state.operation == "disconnect"
            assert set(site.core.held()) == {"s1", "s2", "s3"}
        else:
            assert out.state.operation == "connect"
            # connect released the disconnect's holds only
            assert set(site.core.held()) == operator_held
