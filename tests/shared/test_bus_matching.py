"""The subscription index against paho's own `topic_matches_sub` (the reference)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from shared.bus.matching import SubscriptionIndex

TOPIC_LEVELS = st.sampled_from(["bms", "v1", "a", "b", "", "$SYS", "$x"])
topics = st.lists(TOPIC_LEVELS, min_size=1, max_size=5).map("/".join)


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(TOPIC_LEVELS, st.just("+")), min_size=1, max_size=5))
    if draw(st.booleans()):
        levels = [*levels[: draw(st.integers(0, len(levels)))], "#"]
    return "/".join(levels)


@settings(max_examples=400)
@given(st.lists(filters(), min_size=1, max_size=12), st.lists(topics, min_size=1, max_size=8))
def test_matches_exactly_what_paho_matches_in_subscription_order(
    subscribed: list[str], published: list[str]
) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex(cache_topics_max=3)
    for n, topic_filter in enumerate(subscribed):
        index.add(topic_filter, n)
    for topic in published * 2:  # the second pass answers from the cache
        expected = tuple(n for n, f in enumerate(subscribed) if topic_matches_sub(f, topic))
        assert index.match(topic) == expected, (topic, subscribed)


def test_a_new_subscription_is_seen_by_a_topic_already_cached() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("bms/v1/+/pack/state", "pack")
    assert index.match("bms/v1/s1/pack/state") == ("pack",)
    index.add("bms/v1/#", "all")
    assert index.match("bms/v1/s1/pack/state") == ("pack", "all")
    assert len(index) == 2


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("sport/#", "sport", True),  # MQTT 3.1.1 §4.7.1.2: '#' includes the parent level
        ("#", "$SYS/broker", False),  # §4.7.2: wildcards skip '$' topics at the first level
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("a/+/c", "a//c", True),  # '+' matches an empty level
        ("a/+", "a/b/c", False),
    ],
)
def test_spec_examples(topic_filter: str, topic: str, matches: bool) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    index.add(topic_filter, 1)
    assert (index.match(topic) == (1,)) is matches


def test_a_hash_before_the_last_level_is_refused() -> None:
    with pytest.raises(ValueError, match="last level"):
        SubscriptionIndex[int]().add("a/#/b", 1)
