"""Module samples from either telemetry topic, each checked against its topic's module range."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.bus import InMemoryBroker, InMemoryBus
from shared.messages import CellTelemetry, RackTelemetry
from shared.module_samples import BAD_RANGE, OUTSIDE_RANGE, subscribe_module_samples
from shared.racks import module_range_level, parse_module_range, rack_module_range
from shared.topics import RACK_TELEMETRY, SLAVE_TELEMETRY


def sample(module: int, cells: int = 4) -> CellTelemetry:
    return CellTelemetry(
        module=module, mode="working", sample_ts=1.0, cell_mv=[3600] * cells,
        cell_flags=[0] * cells, balancing=[False] * cells, temp_c=[25.0], temp_flags=[0],
    )  # fmt: skip


@pytest.mark.parametrize(("modules", "level"), [([3], "3-3"), ([0, 1, 2], "0-2"), ([9, 4], "4-9")])
def test_a_range_level_names_the_first_and_last_module(modules: list[int], level: str) -> None:
    assert module_range_level(modules) == level
    parsed = parse_module_range(level)
    assert parsed is not None and parsed[0] == min(modules) and parsed[-1] == max(modules)


def test_a_racks_level_is_its_whole_range() -> None:
    assert parse_module_range(module_range_level(rack_module_range(2, 4))) == range(8, 12)


@pytest.mark.parametrize(
    "level",
    ["3", "5-2", "a-b", "-1-3", "1-", "1-2-3", "0x1-3", "", "0-196", "1-99999999999", "\u00b2-3",
     "\u0661-3", " 1-3", "1-3 "],
)  # fmt: skip
def test_anything_else_is_no_range(level: str) -> None:
    assert parse_module_range(level) is None


def test_no_module_has_no_level() -> None:
    with pytest.raises(ValueError, match="at least one module"):
        module_range_level([])


@pytest.mark.parametrize("modules", [[1, 0], [2, 2], [0, 3, 1]])
def test_a_rack_message_lists_each_module_once_in_rising_order(modules: list[int]) -> None:
    with pytest.raises(ValidationError, match="rising module order"):
        RackTelemetry(samples=[sample(m) for m in modules])


def test_a_rack_message_holds_no_more_cells_than_a_system() -> None:
    RackTelemetry(samples=[sample(m, 14) for m in range(14)])  # 196: a whole system
    with pytest.raises(ValidationError, match="197 cells exceed the 196"):
        RackTelemetry(samples=[*(sample(m, 14) for m in range(14)), sample(14, 1)])


class Subscriber:
    def __init__(self) -> None:
        broker = InMemoryBroker()
        self.bus = InMemoryBus(broker, system="demo", service="master_core", kind="master")
        self.agent = InMemoryBus(broker, system="demo", service="slave_agent", kind="slave")
        self.samples: list[CellTelemetry] = []
        self.refused: list[tuple[str, str]] = []
        subscribe_module_samples(
            self.bus, self.samples.append, lambda k, w: self.refused.append((k, w))
        )
        self.bus.start()
        self.agent.start()

    def modules(self) -> list[int]:
        self.bus.process(timeout_s=0)
        return [s.module for s in self.samples]


def test_each_sample_of_a_rack_message_is_handed_over_as_a_modules_own() -> None:
    sub = Subscriber()
    rack = RackTelemetry(samples=[sample(4), sample(5), sample(7)])
    sub.agent.publish(RACK_TELEMETRY, rack, modules="4-7")
    assert sub.modules() == [4, 5, 7]
    assert sub.samples == list(rack.samples)
    assert sub.refused == []


def test_a_module_published_on_its_own_topic_is_handed_over_too() -> None:
    sub = Subscriber()
    sub.agent.publish(SLAVE_TELEMETRY, sample(9), module=9)
    assert sub.modules() == [9]


def test_modules_outside_the_topics_range_are_refused_and_the_others_kept() -> None:
    """A rack's broker user may publish its own range's topic only: a module outside the range
    is another rack's, whatever the payload says."""
    sub = Subscriber()
    sub.agent.publish(
        RACK_TELEMETRY, RackTelemetry(samples=[sample(2), sample(3), sample(4)]), modules="0-3"
    )
    assert sub.modules() == [2, 3]
    assert len(sub.refused) == 1
    kind, why = sub.refused[0]
    assert kind == OUTSIDE_RANGE and "[4]" in why and "0-3" in why


def test_a_range_past_the_last_module_is_refused_without_walking_it() -> None:
    """A huge range on an open broker: refused at once, never a set of 10^11 numbers."""
    sub = Subscriber()
    sub.agent.publish(RACK_TELEMETRY, RackTelemetry(samples=[sample(0)]), modules="1-99999999999")
    assert sub.modules() == []
    assert [k for k, _ in sub.refused] == [BAD_RANGE]


def test_a_sample_of_another_module_than_its_topic_names_is_refused() -> None:
    """Rack 0 may write `slave/0/telemetry`: module 5's cells in it are rack 1's, refused."""
    sub = Subscriber()
    sub.agent.publish(SLAVE_TELEMETRY, sample(5), module=0)
    sub.agent.publish(SLAVE_TELEMETRY, sample(0), module=0)
    assert sub.modules() == [0]
    assert len(sub.refused) == 1
    kind, why = sub.refused[0]
    assert kind == OUTSIDE_RANGE and "module 5" in why


def test_a_topic_that_names_no_range_is_refused_whole() -> None:
    sub = Subscriber()
    sub.agent.publish(RACK_TELEMETRY, RackTelemetry(samples=[sample(0)]), modules="all")
    assert sub.modules() == []
    assert [k for k, _ in sub.refused] == [BAD_RANGE]
