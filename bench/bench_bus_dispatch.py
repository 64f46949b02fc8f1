"""Cost of finding a message's subscriptions on the master's bus: the subscription index
(`shared.bus.matching`) against the linear scan with paho's `topic_matches_sub` it replaced.

The filters are the ones a real master subscribes to (built with its in-process plant on the
in-memory bus); the topics are one system's traffic at 10 Hz: 14 modules' telemetry plus the
master's own pack state and service status. Prints figures and the ratio; no pass/fail.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paho.mqtt.client import topic_matches_sub  # noqa: E402

from services.master_core.service import MasterCore  # noqa: E402
from services.master_core.settings import MasterCoreSettings  # noqa: E402
from services.master_core.stores import Store  # noqa: E402
from services.plant.in_process import in_process_factory  # noqa: E402
from shared.bus import InMemoryBroker, InMemoryBus  # noqa: E402
from shared.bus.matching import SubscriptionIndex  # noqa: E402

SYSTEM = "bench"
MODULES = 14
ROUNDS = 2000


def master_filters() -> list[str]:
    bus = InMemoryBus(InMemoryBroker(), system=SYSTEM, service="master_core", kind="master_core")
    filters: list[str] = []
    subscribe = bus._subscribe_filter

    def record(topic_filter: str, qos: int) -> None:
        filters.append(topic_filter)
        subscribe(topic_filter, qos)

    bus._subscribe_filter = record  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "master.sqlite")
        MasterCore(MasterCoreSettings(load_profile="constant:0"), bus, store,
                   in_process_factory(bus, load_profile="constant:0"))  # fmt: skip
        store.close()
    return filters


def traffic() -> list[str]:
    base = f"bms/v1/{SYSTEM}"
    return [f"{base}/slave/{m}/telemetry" for m in range(MODULES)] + [
        f"{base}/pack/state",
        f"{base}/service/master_core/status",
        f"{base}/slave/3/status",
    ]


def per_message_us(match: object, topics: list[str]) -> float:
    assert callable(match)
    start = time.perf_counter()
    for _ in range(ROUNDS):
        for topic in topics:
            match(topic)
    return (time.perf_counter() - start) / (ROUNDS * len(topics)) * 1e6


def main() -> None:
    filters = master_filters()
    topics = traffic()
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for f in filters:
        index.add(f, f)

    def scan(topic: str) -> list[str]:
        return [f for f in filters if topic_matches_sub(f, topic)]

    for topic in topics:  # both answer alike
        assert list(index.match(topic)) == scan(topic), topic
    linear = per_message_us(scan, topics)
    cached = per_message_us(index.match, topics)
    fresh: SubscriptionIndex[str] = SubscriptionIndex(cache_topics_max=1)
    for f in filters:
        fresh.add(f, f)
    walked = per_message_us(fresh.match, topics)  # every topic misses the one-entry cache
    print(f"master subscriptions: {len(filters)}; topics per round: {len(topics)}")
    rows = [("linear scan (topic_matches_sub)", linear), ("index, trie walk (cache miss)", walked),
            ("index, cached topic", cached)]  # fmt: skip
    for name, us in rows:
        print(f"{name:32s} {us:8.2f} µs/message  ratio {linear / us:6.1f}x")


if __name__ == "__main__":
    main()
