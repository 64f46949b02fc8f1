from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from shared.messages import COMMAND_ARGS
from shared.topics import (
    COMMAND,
    COMMAND_SENDERS,
    OUTSIDE_ROOT,
    OUTSIDE_TOPICS,
    ROOT,
    SLAVE_TELEMETRY,
    SPARKPLUG_DEVICE,
    SPARKPLUG_HOST,
    SPARKPLUG_NODE,
    THIRD_PARTY,
    TOPICS,
    UI,
    TopicError,
    acl_filter_in,
    sparkplug_id,
    spec_for,
)

levels = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
systems = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True)


@given(systems, st.data())
def test_every_topic_round_trips_and_is_unambiguous(system: str, data: st.DataObject) -> None:
    for spec in TOPICS:
        params = {p: data.draw(levels) for p in spec.params}
        topic = spec.topic(system, **params)
        assert topic.startswith(f"{ROOT}/{system}/")
        assert spec.parse(topic) == (system, params)
        assert topic_matches_sub(spec.filter(), topic)
        assert topic_matches_sub(spec.filter(system), topic)
        assert [s for s in TOPICS if s.parse(topic)] == [spec]
        assert spec_for(topic) is spec


def test_names_and_templates_are_unique() -> None:
    assert len({s.name for s in TOPICS}) == len(TOPICS)
    assert len({s.template for s in TOPICS}) == len(TOPICS)


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", " x", "x y"])
def test_parameters_must_be_single_levels(bad: str) -> None:
    with pytest.raises(TopicError):
        SLAVE_TELEMETRY.topic("demo", module=bad)


@pytest.mark.parametrize("bad", ["Demo", "a/b", "+", "", "x" * 33])
def test_system_ids_are_checked(bad: str) -> None:
    with pytest.raises(TopicError, match="system id"):
        SLAVE_TELEMETRY.topic(bad, module=1)


def test_missing_or_extra_parameters_are_refused() -> None:
    with pytest.raises(TopicError, match="needs parameters"):
        SLAVE_TELEMETRY.topic("demo")
    with pytest.raises(TopicError, match="needs parameters"):
        COMMAND.topic("demo", command="x", extra="y")


def test_filters_leave_out_parameters_as_wildcards() -> None:
    assert SLAVE_TELEMETRY.filter("demo") == "bms/v1/demo/slave/+/telemetry"
    assert SLAVE_TELEMETRY.filter(module=3) == "bms/v1/+/slave/3/telemetry"


def test_retained_topics_are_state_not_streams_of_commands() -> None:
    for spec in TOPICS:
        if spec.name.startswith(("command", "events", "slave_balance", "sim_control")):
            assert not spec.retain, spec.name
        if spec.last_will:
            assert spec.retain and spec.qos == 1, spec.name


def test_every_command_names_its_senders_and_only_the_ui_sends_a_service_reset() -> None:
    assert set(COMMAND_SENDERS) == set(COMMAND_ARGS)
    senders = {role for roles in COMMAND_SENDERS.values() for role in roles}
    assert senders == set(COMMAND.publishers)
    assert COMMAND_SENDERS["service_reset"] == (UI,)


def test_outside_topics_are_never_taken_for_bus_topics() -> None:
    """No bus spec matches a Home Assistant or Sparkplug topic, so nothing on the bus tries to
    decode their JSON or protobuf as msgpack; and their names do not clash with the bus's."""
    for topic in OUTSIDE_TOPICS:
        assert spec_for(topic.example("s1")) is None, topic.name
        assert not topic.address.startswith(ROOT)
    names = [t.name for t in (*TOPICS, *OUTSIDE_TOPICS)]
    assert len(names) == len(set(names))


def test_the_acl_filters_of_outside_topics_name_the_system_where_there_is_one() -> None:
    assert SPARKPLUG_DEVICE.acl_filter == "spBv1.0/bms/+/{edge_node}/{system}"
    assert SPARKPLUG_NODE.acl_filter == "spBv1.0/bms/+/{edge_node}"
    assert OUTSIDE_ROOT[THIRD_PARTY] == (
        ("spBv1.0/bms/+/{edge_node}", "read"), ("spBv1.0/bms/+/{edge_node}/{system}", "read"),
    )  # fmt: skip
    assert OUTSIDE_ROOT[SPARKPLUG_HOST] == (
        ("spBv1.0/bms/+/{edge_node}", "read"),
        ("spBv1.0/bms/NCMD/{edge_node}", "write"),
        ("spBv1.0/bms/+/{edge_node}/{system}", "read"),
        ("spBv1.0/bms/DCMD/{edge_node}/{system}", "write"),
        ("spBv1.0/STATE/+", "readwrite"),
    )


def test_an_acl_filter_gets_the_system_and_the_edge_node_or_any() -> None:
    f = SPARKPLUG_DEVICE.acl_filter
    assert acl_filter_in(f, "plant1", "site-a") == "spBv1.0/bms/+/site-a/plant1"
    assert acl_filter_in(f, "plant1", None) == "spBv1.0/bms/+/+/plant1"
    assert acl_filter_in(SPARKPLUG_NODE.acl_filter, "s", "site a") == "spBv1.0/bms/+/site a"


@pytest.mark.parametrize("bad", ["a/b", "a+", "#", "", "a\nb", "tab\there"])
def test_a_sparkplug_id_holds_no_level_separator_wildcard_or_control(bad: str) -> None:
    with pytest.raises(ValueError, match="Sparkplug edge node id"):
        sparkplug_id("edge node id", bad)
    assert sparkplug_id("edge node id", "site a.1") == "site a.1"
