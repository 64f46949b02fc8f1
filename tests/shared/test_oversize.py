"""One large malformed message must not stall the loop that decodes it: a payload over its
topic's byte limit is refused unread, a refusal builds one error, and a burst is cut into
slices of the caller's budget. Real codec, real bus core (in-memory adapter)."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgpack
import pytest

import shared.bus.core
from shared import SCHEMA_VERSION
from shared.bus import Delivery, InMemoryBroker, InMemoryBus
from shared.codec import PayloadError, decode
from shared.messages import CellTelemetry, ConfigMessage
from shared.messages.slave import MAX_CELLS_PER_MODULE, MAX_TEMPS_PER_MODULE
from shared.topics import CONFIG, SLAVE_TELEMETRY

TOPIC = SLAVE_TELEMETRY.topic("demo", module=0)


def telemetry(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "source": "slave", "seq": 1, "ts": 1.0,
        "module": 0, "mode": "working", "sample_ts": 1.0, "cell_mv": [3300] * 14,
        "cell_flags": [0] * 14, "balancing": [False] * 14, "temp_c": [25.0] * 2,
        "temp_flags": [0] * 2,
    }  # fmt: skip
    return data | fields


def packed(data: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


ISSUE_PAYLOAD = packed(telemetry(cell_flags=[9] * 900_000))
"""The message of the issue: 900 KB, `cell_flags` of 900,000 entries (each out of range)."""
LARGEST_VALID = packed(
    telemetry(
        cell_mv=[3300] * MAX_CELLS_PER_MODULE, cell_flags=[7] * MAX_CELLS_PER_MODULE,
        balancing=[True] * MAX_CELLS_PER_MODULE, temp_c=[25.0] * MAX_TEMPS_PER_MODULE,
        temp_flags=[7] * MAX_TEMPS_PER_MODULE,
    )
)  # fmt: skip


class Spy:
    """Counts calls of the codec's decode as the bus core makes them."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return decode(*args, **kwargs)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    s = Spy()
    monkeypatch.setattr(shared.bus.core, "decode", s)
    return s


def make_bus() -> tuple[InMemoryBroker, InMemoryBus]:
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="master_core", kind="test")
    bus.start()
    return broker, bus


def test_an_oversize_telemetry_is_refused_before_decoding(spy: Spy) -> None:
    broker, bus = make_bus()
    got: list[Delivery[CellTelemetry]] = []
    errors: list[PayloadError] = []
    bus.on_payload_error(errors.append)
    bus.subscribe(SLAVE_TELEMETRY, got.append)
    assert len(ISSUE_PAYLOAD) > SLAVE_TELEMETRY.byte_limit
    broker.route(TOPIC, ISSUE_PAYLOAD, False)
    bus.process()
    assert spy.calls == 0 and got == []
    assert len(errors) == 1 and errors[0].field == "<payload>"
    assert f"exceeds the {SLAVE_TELEMETRY.byte_limit}-byte limit" in errors[0].reason
    assert bus.counters["payload_oversize"] == 1
    assert bus.counters["payload_oversize.slave_telemetry"] == 1
    assert bus.counters["payload_errors.slave_telemetry"] == 1

    broker.route(TOPIC, LARGEST_VALID, False)  # the largest valid one still gets through
    bus.process()
    assert spy.calls == 1 and len(got) == 1
    assert len(got[0].message.cell_flags) == MAX_CELLS_PER_MODULE


def test_an_oversize_config_is_refused_before_decoding(spy: Spy) -> None:
    broker, bus = make_bus()
    got: list[Delivery[ConfigMessage]] = []
    bus.subscribe(CONFIG, got.append)
    bus.process()
    counts = {"schema_version": SCHEMA_VERSION, "config": {"topology": {"modules": 450_000}}}
    counts["config"]["topology"]["module_cell_counts"] = [1] * 450_000
    broker.route(CONFIG.topic("demo"), packed(counts), False)
    bus.process()
    assert spy.calls == 0 and got == []
    assert bus.counters["payload_oversize.config"] == 1


def test_refusals_are_all_counted_but_logged_once_a_minute(
    spy: Spy, caplog: pytest.LogCaptureFixture
) -> None:
    broker, bus = make_bus()
    bus.subscribe(SLAVE_TELEMETRY, lambda _d: None)
    with caplog.at_level(logging.WARNING, logger="shared.bus"):
        for _ in range(5):
            broker.route(TOPIC, ISSUE_PAYLOAD, False)
        bus.process()
    assert bus.counters["payload_oversize.slave_telemetry"] == 5
    lines = [r for r in caplog.records if "refused payload" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]


def test_a_list_over_its_bound_is_refused_by_its_length() -> None:
    raw = packed(telemetry(cell_flags=[0] * (MAX_CELLS_PER_MODULE + 1)))
    with pytest.raises(PayloadError) as exc:
        decode(CellTelemetry, TOPIC, raw)
    assert exc.value.field == "cell_flags"
    assert f"at most {MAX_CELLS_PER_MODULE} items" in exc.value.reason


def test_a_refusal_builds_one_error_not_one_per_item() -> None:
    """196 out-of-range flags: the first is reported, the list stops there (`fail_fast`)."""
    n = MAX_CELLS_PER_MODULE
    raw = packed(telemetry(cell_mv=[3300] * n, cell_flags=[9] * n, balancing=[False] * n))
    with pytest.raises(PayloadError) as exc:
        decode(CellTelemetry, TOPIC, raw)
    assert exc.value.field == "cell_flags.0"
    assert "more" not in exc.value.reason


def test_a_burst_is_processed_in_slices_of_the_budget() -> None:
    broker, bus = make_bus()
    handled: list[int] = []

    def slow(d: Delivery[CellTelemetry]) -> None:
        handled.append(d.message.module)
        time.sleep(0.001)  # 200 of them outlast the budget; a loaded machine only sleeps longer

    bus.subscribe(SLAVE_TELEMETRY, slow)
    for _ in range(200):
        broker.route(TOPIC, LARGEST_VALID, False)
    done = bus.process(budget_s=0.05)
    assert 2 <= done < 200 and bus.pending() == 200 - done
    assert bus.counters["process_budget_spent"] == 1
    while bus.pending():
        bus.process(budget_s=0.05)
    assert len(handled) == 200
