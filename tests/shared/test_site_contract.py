"""The site contract: configuration rules, payload bounds, topics and the site controller's
broker grants."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import SiteConfig, explain_errors
from shared.deploy import acl
from shared.messages import SiteLimits, SiteState, SiteSummary, StringState
from shared.topics import BROKER_MESSAGE_SIZE_LIMIT, SITE_STATE, SITE_SUMMARY, spec_for


def _site(**kw: object) -> dict[str, object]:
    return {"site": "site1", "strings": [{"system": "s1"}, {"system": "s2"}], **kw}


def test_a_site_config_has_sourced_defaults() -> None:
    cfg = SiteConfig.model_validate(_site())
    assert cfg.system_ids == ("s1", "s2")
    assert cfg.join_window_v == 2.0 and cfg.current_sharing_factor == 0.9
    assert cfg.resistance_ohm("s1") is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"site": "s1"}, "site, strings.0.system: 's1' is also the id of one of its strings"),
        (
            {"strings": [{"system": "s1"}, {"system": "s1"}]},
            "strings.1.system: each system id may appear once; 's1' is listed twice (also "
            "string 1)",
        ),
        ({"strings": []}, "strings"),
        ({"strings": [{"system": f"s{i}"} for i in range(17)]}, "strings"),
        ({"site": "Site 1"}, "site: 'Site 1' is not valid"),
        ({"strings": [{"system": "A"}]}, "strings.0.system: 'A' is not valid"),
        ({"current_sharing_factor": 0.0}, "current_sharing_factor: must be greater than 0"),
        ({"current_sharing_factor": 1.1}, "current_sharing_factor: must be at most 1"),
        ({"join_window_v": 0.0}, "join_window_v: must be greater than 0"),
        ({"strings": [{"system": "s1", "resistance_mohm": -1.0}]}, "resistance_mohm"),
        ({"stale_after_s": 0.1}, "stale_after_s: must be at least 0.5"),
        ({"join_windows_v": 2.0}, "join_windows_v: unknown setting"),
    ],
)
def test_a_bad_site_config_is_refused_in_words(changes: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as exc:
        SiteConfig.model_validate(_site(**changes))
    assert any(words in line for line in explain_errors(exc.value)), explain_errors(exc.value)


def test_the_largest_site_state_fits_the_broker() -> None:
    assert SITE_STATE.byte_limit <= BROKER_MESSAGE_SIZE_LIMIT
    assert SITE_SUMMARY.byte_limit < 4096


def test_unknown_is_none_and_limits_reach_sixteen_strings() -> None:
    limits = SiteLimits(
        charge_voltage_v=None,
        discharge_voltage_v=None,
        charge_current_a=16 * 1000.0,
        discharge_current_a=0.0,
    )
    state = SiteState(
        site="site1",
        limits=limits,
        strings_total=1,
        strings_joined=0,
        strings=[StringState(system="s1", membership="stale", reason="no pack state for 3 s")],
    )
    assert state.soc is None and state.voltage_v is None and state.strings[0].soc is None
    with pytest.raises(ValidationError):
        SiteLimits(
            charge_voltage_v=None,
            discharge_voltage_v=None,
            charge_current_a=16 * 1000.0 + 1,
            discharge_current_a=0.0,
        )
    summary = SiteSummary(site="site1", online=True, strings_total=3, strings_joined=2)
    assert summary.worst_level is None and summary.power_w is None


def test_site_topics_live_under_the_site_id() -> None:
    assert SITE_STATE.topic("site1") == "bms/v1/site1/site/state"
    assert spec_for("bms/v1/site1/site/summary") is SITE_SUMMARY


def test_the_site_controller_reads_its_strings_and_sends_them_mode_and_close_only() -> None:
    strings = ("s1", "s2")

    def may(access: str, topic: str) -> bool:
        return any(
            (g.read if access == "read" else g.write) and acl._matches(g.pattern, topic)
            for g in acl.site_grants("site1", strings)
        )

    assert may("read", "bms/v1/s1/pack/state")
    assert may("read", "bms/v1/s2/config")
    assert may("read", "bms/v1/s2/events/master_core")
    assert may("write", "bms/v1/s1/cmd/set_mode")
    assert may("read", "bms/v1/s1/reply/site_controller/c1")
    assert may("write", "bms/v1/site1/site/state")
    assert may("write", "bms/v1/site1/site/summary")
    assert may("write", "bms/v1/site1/events/site_controller")
    assert may("read", "bms/v1/site1/site/config")
    assert may("write", "bms/v1/s1/cmd/contactors")
    assert not may("write", "bms/v1/s1/cmd/reset_faults")
    assert not may("write", "bms/v1/s1/cmd/service_reset")
    assert not may("write", "bms/v1/s1/events/site_controller")
    assert not may("write", "bms/v1/s1/pack/state")
    assert not may("read", "bms/v1/s1/reply/config_ui/c1")
    assert not may("read", "bms/v1/s3/pack/state")
    assert not may("write", "bms/v1/site1/site/config")
    assert not may("write", "bms/v1/site1/events/master_core")
    assert may("read", "bms/v1/site1/cmd/site_string")
    assert may("read", "bms/v1/site1/cmd/site_operation")
    assert not may("write", "bms/v1/site1/cmd/site_operation")
    assert may("write", "bms/v1/site1/reply/config_ui/c1")
    assert not may("read", "bms/v1/s1/cmd/set_mode")
    assert not may("write", "bms/v1/s1/reply/config_ui/c1")
    with pytest.raises(ValueError, match="distinct"):
        acl.site_grants("s1", strings)
    text = acl.render(system="site1", site_strings=strings)
    assert "topic write bms/v1/s2/cmd/set_mode" in text.split("user site_controller")[1]
    assert acl.may("site_controller", "read", "bms/v1/s2/pack/state", system="site1",
                   site_strings=strings)  # fmt: skip


def test_the_gateways_of_a_site_read_what_they_serve_of_its_strings() -> None:
    strings = ("s1", "s2")

    def may(user: str, access: str, topic: str) -> bool:
        return acl.may(user, access, topic, system="site1", site_strings=strings)

    for topic in ("bms/v1/s1/config", "bms/v1/s2/pack/state", "bms/v1/s2/pack/cells"):
        assert may("modbus_gateway", "read", topic), topic
    assert may("can_gateway", "read", "bms/v1/s2/pack/state")
    assert may("can_gateway", "read", "bms/v1/s1/config")
    assert may("modbus_gateway", "read", "bms/v1/site1/site/state")
    assert may("can_gateway", "read", "bms/v1/site1/site/config")
    assert not may("can_gateway", "read", "bms/v1/s1/pack/cells")
    assert not may("modbus_gateway", "write", "bms/v1/s1/cmd/contactors")
    # SCADA's 802 SetOp: the Modbus gateway sends the site command, reads only its replies
    assert may("modbus_gateway", "write", "bms/v1/site1/cmd/site_operation")
    assert may("modbus_gateway", "read", "bms/v1/site1/reply/modbus_gateway/c1")
    assert not may("modbus_gateway", "write", "bms/v1/site1/cmd/site_string")
    assert not may("can_gateway", "write", "bms/v1/site1/cmd/site_operation")
    assert not may("modbus_gateway", "read", "bms/v1/s3/pack/state")
    assert not may("config_ui", "read", "bms/v1/s1/pack/state")
    assert not acl.may("modbus_gateway", "read", "bms/v1/s1/pack/state", system="site1")
