"""Module samples from either telemetry topic, each checked against the range it came under.

The stack's agents publish every module they host in one message per sample
(`slaves/{modules}/telemetry`, `RackTelemetry`); a slave that publishes module by module uses
`slave/{module}/telemetry`. A subscriber of module samples takes both through
`subscribe_module_samples` and sees one `CellTelemetry` per module either way.

The topic is the trust boundary: the broker lets a rack's user publish its own range's topic
and its own modules' topics only, so a sample of a module outside the range named in the topic,
or of another module than the per-module topic names, is refused here, as the broker refuses a
rack's write to another rack's topics.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.bus.core import BusCore, Delivery
from shared.messages import CellTelemetry, RackTelemetry
from shared.racks import parse_module_range
from shared.topics import RACK_TELEMETRY, SLAVE_TELEMETRY

SampleHandler = Callable[[CellTelemetry], None]
RefusalHandler = Callable[[str, str], None]
"""Called with a refusal's kind (a counter name) and what was wrong."""

OUTSIDE_RANGE = "telemetry_outside_range"
BAD_RANGE = "telemetry_bad_range"


def samples_in_range(d: Delivery[RackTelemetry], on_refused: RefusalHandler) -> list[CellTelemetry]:
    """The samples of a rack message whose modules lie inside its topic's range."""
    level = d.params.get("modules", "")
    modules = parse_module_range(level)
    if modules is None:
        on_refused(BAD_RANGE, f"{d.topic}: {level!r} is no module range (first-last)")
        return []
    inside = [s for s in d.message.samples if s.module in modules]
    if len(inside) < len(d.message.samples):
        outside = sorted({s.module for s in d.message.samples if s.module not in modules})
        on_refused(OUTSIDE_RANGE, f"{d.topic}: modules {outside} are outside {level}")
    return inside


def sample_of_its_topic(
    d: Delivery[CellTelemetry], on_refused: RefusalHandler
) -> CellTelemetry | None:
    """A per-module message's sample when its module is the one the topic names: a rack's
    broker user may write its own modules' topics only, so the topic is what is trusted."""
    if d.params.get("module") != str(d.message.module):
        on_refused(OUTSIDE_RANGE, f"{d.topic}: module {d.message.module} is not the topic's module")
        return None
    return d.message


def subscribe_module_samples(
    bus: BusCore, on_sample: SampleHandler, on_refused: RefusalHandler
) -> None:
    """Call `on_sample` for each module sample on either telemetry topic of the bus's system."""

    def on_rack(d: Delivery[RackTelemetry]) -> None:
        for sample in samples_in_range(d, on_refused):
            on_sample(sample)

    def on_module(d: Delivery[CellTelemetry]) -> None:
        sample = sample_of_its_topic(d, on_refused)
        if sample is not None:
            on_sample(sample)

    bus.subscribe(SLAVE_TELEMETRY, on_module)
    bus.subscribe(RACK_TELEMETRY, on_rack)
