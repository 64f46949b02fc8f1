"""Which subscriptions a topic matches, without testing every filter on every message.

MQTT filter semantics (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7): `+` matches exactly one level, `#`
(last level only) matches the parent level and everything below it, and a filter starting
with a wildcard does not match a topic starting with `$` (§4.7.2).

Filters without wildcards live in a dict keyed by the topic itself; the others in a trie of
levels, walked once per message. A topic's answer is then cached (bounded: a flood of distinct
topics clears the cache rather than growing it). Matches come back in the order the
subscriptions were added, as a linear scan returned them, so handlers run in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

CACHE_TOPICS_MAX = 4096
"""Distinct topics whose matches are remembered; a system has a few hundred."""


@dataclass
class _Node(Generic[T]):
    children: dict[str, _Node[T]] = field(default_factory=dict)
    here: list[tuple[int, T]] = field(default_factory=list)
    """Filters ending at this level."""
    below: list[tuple[int, T]] = field(default_factory=list)
    """Filters ending in `#` after this level: this level and everything under it."""


class SubscriptionIndex(Generic[T]):
    """Subscriptions by filter; `match(topic)` gives those whose filter matches `topic`."""

    def __init__(self, cache_topics_max: int = CACHE_TOPICS_MAX) -> None:
        self._exact: dict[str, list[tuple[int, T]]] = {}
        self._root: _Node[T] = _Node()
        self._count = 0
        self._cache: dict[str, tuple[T, ...]] = {}
        self._cache_max = cache_topics_max

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, item: T) -> None:
        entry = (self._count, item)
        self._count += 1
        self._cache.clear()
        if "+" not in topic_filter and "#" not in topic_filter:
            self._exact.setdefault(topic_filter, []).append(entry)
            return
        node = self._root
        levels = topic_filter.split("/")
        for i, level in enumerate(levels):
            if level == "#":
                if i != len(levels) - 1:
                    raise ValueError(f"'#' must be the last level of {topic_filter!r}")
                node.below.append(entry)
                return
            node = node.children.setdefault(level, _Node())
        node.here.append(entry)

    def match(self, topic: str) -> tuple[T, ...]:
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        found = list(self._exact.get(topic, ()))
        self._walk(self._root, topic.split("/"), 0, found, topic.startswith("$"))
        found.sort(key=lambda entry: entry[0])
        result = tuple(item for _, item in found)
        if len(self._cache) >= self._cache_max:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def _walk(
        self,
        node: _Node[T],
        levels: list[str],
        depth: int,
        found: list[tuple[int, T]],
        system_topic: bool,
    ) -> None:
        first = depth == 0 and system_topic  # no wildcard matches a `$` first level
        if not first:
            found.extend(node.below)
        if depth == len(levels):
            found.extend(node.here)
            return
        level = levels[depth]
        child = node.children.get(level)
        if child is not None:
            self._walk(child, levels, depth + 1, found, system_topic)
        if not first:
            plus = node.children.get("+")
            if plus is not None:
                self._walk(plus, levels, depth + 1, found, system_topic)
