"""Racks: a rack number (or a StatefulSet pod's ordinal) picks the modules an agent hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.slave_agent.settings import SlaveAgentSettings, parse_modules
from shared import racks as rack
from shared.deploy import acl


@pytest.mark.parametrize(
    ("hostname", "ordinal"),
    [("bms-rack-0", 0), ("bms-rack-12", 12), ("rack-3.bms-rack.bms.svc.cluster.local", 3)],
)
def test_ordinal_from_a_statefulset_pod_name(hostname: str, ordinal: int) -> None:
    assert rack.ordinal_from_hostname(hostname) == ordinal


@pytest.mark.parametrize("hostname", ["bms-rack", "4f2a9c1e7b3d", "rack-1a"])
def test_host_names_without_an_ordinal_are_refused(hostname: str) -> None:
    with pytest.raises(ValueError, match="ordinal"):
        rack.ordinal_from_hostname(hostname)


def test_rack_ranges() -> None:
    assert rack.rack_modules(0, 4) == "0-3"
    assert rack.rack_modules(1, 4) == "4-7"
    assert rack.rack_modules(6, 1) == "6"
    assert rack.rack_modules(48, 4) == "192-195"
    assert rack.rack_modules(19, 10) == "190-195"  # the last rack may be short
    with pytest.raises(ValueError, match="past the last"):
        rack.rack_modules(49, 4)


@given(per_rack=st.integers(1, 196), modules=st.integers(1, 196))
def test_racks_cover_every_module_exactly_once(per_rack: int, modules: int) -> None:
    racks = -(-modules // per_rack)
    hosted = [m for r in range(racks) for m in parse_modules(rack.rack_modules(r, per_rack))]
    assert [m for m in hosted if m < modules] == list(range(modules))


def test_the_pod_ordinal_becomes_the_module_range_and_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "bms-rack-2")
    monkeypatch.setenv("BMS_RACK", "ordinal")
    monkeypatch.setenv("BMS_MODULES_PER_RACK", "4")
    settings = SlaveAgentSettings()
    assert settings.modules == "8-11" and settings.rack == "2"
    assert settings.instance_name() == "slave_agent-rack2"
    assert settings.module_list(10) == [8, 9]


def test_a_rack_number_with_an_explicit_instance() -> None:
    settings = SlaveAgentSettings(rack="1", modules_per_rack=4, instance="north-rack")
    assert settings.module_list(7) == [4, 5, 6]
    assert settings.instance_name() == "north-rack"


def test_without_a_rack_the_instance_follows_the_modules() -> None:
    assert SlaveAgentSettings().instance_name() == "slave_agent"
    assert SlaveAgentSettings(modules="0-2,5").instance_name() == "slave_agent-0-2_5"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rack": "1"}, "modules_per_rack"),
        ({"rack": "1", "modules_per_rack": 4, "modules": "0-3"}, "not both"),
        ({"rack": "north", "modules_per_rack": 4}, "number"),
    ],
)
def test_inconsistent_rack_settings_are_refused(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        SlaveAgentSettings(**kwargs)


def test_a_pod_picks_its_own_password_from_the_racks_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for r in range(3):
        (tmp_path / rack.rack_instance(r)).write_text(f"password-of-rack-{r}\n")
    monkeypatch.setattr("socket.gethostname", lambda: "bms-rack-2")
    settings = SlaveAgentSettings(
        rack="ordinal", modules_per_rack=4, mqtt_password_dir=str(tmp_path),
        mqtt_url="mqtt://bms-broker:1883",
    )  # fmt: skip
    endpoint = settings.endpoint
    assert (endpoint.username, endpoint.password) == ("slave_agent-rack2", "password-of-rack-2")


def test_a_rack_missing_from_the_secret_stops_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "bms-rack-5")
    with pytest.raises(ValidationError, match="slave_agent-rack5"):
        SlaveAgentSettings(rack="ordinal", modules_per_rack=4, mqtt_password_dir=str(tmp_path))


@given(st.integers(0, 48))
def test_an_agent_announces_itself_as_the_acl_user_of_its_modules(index: int) -> None:
    """The agent's instance name is the ACL user allowed exactly the modules it hosts."""
    layout = acl.RackLayout(racks=49, modules_per_rack=4)
    agent = SlaveAgentSettings(rack=str(index), modules_per_rack=4)
    assert agent.instance_name() == layout.users()[index]
    assert parse_modules(agent.modules) == list(layout.modules(index))
