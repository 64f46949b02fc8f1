"""The agent publishes one message per sample with every hosted module (issue 19: the broker's
and each subscriber's cost is per message), on its range's topic; a sample the contract refuses
is counted and logged, and the other modules' samples still go out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.slave_agent.driver import ModuleReading
from services.slave_agent.service import SlaveAgent
from services.slave_agent.settings import SlaveAgentSettings
from services.slave_agent.sim_driver import SimulatedDriver
from shared.bus import Delivery, InMemoryBroker, InMemoryBus
from shared.config import SystemConfig
from shared.messages import ConfigMessage, RackTelemetry
from shared.topics import CONFIG, RACK_TELEMETRY

CONFIG_3X4 = SystemConfig.from_preset("NMC", system_id="demo", modules=3, cells_per_module=4)


class OddDriver(SimulatedDriver):
    """The simulated cells, with module 1 reading 7 V on its first cell while `odd` is set."""

    odd = False

    def read(self, module: int) -> ModuleReading:
        reading = super().read(module)
        if module == 1 and self.odd:
            return replace(reading, cell_mv=[7000, *reading.cell_mv[1:]])
        return reading


def agent(modules: str = "all") -> tuple[SlaveAgent, InMemoryBus, list[Delivery[RackTelemetry]]]:
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="demo", service="slave_agent", kind="slave_agent")
    a = SlaveAgent(SlaveAgentSettings(modules=modules), bus, OddDriver)
    bus.start()
    master = InMemoryBus(broker, system="demo", service="master_core", kind="master_core")
    got: list[Delivery[RackTelemetry]] = []
    master.subscribe(RACK_TELEMETRY, got.append)
    master.start()
    master.publish(CONFIG, ConfigMessage(config=CONFIG_3X4))
    bus.process()
    assert a.driver is not None
    return a, master, got


def test_one_message_per_sample_carries_every_hosted_module() -> None:
    a, master, got = agent()
    for _ in range(3):
        a.sample()
    master.process()
    assert len(got) == 3
    assert {d.topic for d in got} == {"bms/v1/demo/slaves/0-2/telemetry"}
    assert [d.message.seq for d in got] == [0, 1, 2]
    for k, d in enumerate(got):
        assert [s.module for s in d.message.samples] == [0, 1, 2]
        assert [s.seq for s in d.message.samples] == [k, k, k]  # each module counts its own
        assert all(len(s.cell_mv) == 4 for s in d.message.samples)


def test_a_rack_keeps_its_whole_range_in_the_topic_when_the_system_is_shorter() -> None:
    """Rack 0 of 4 modules in a system of 3: the ACL grants `0-3`, the agent hosts 0-2."""
    a, master, got = agent("0-3")
    a.sample()
    master.process()
    assert [d.topic for d in got] == ["bms/v1/demo/slaves/0-3/telemetry"]
    assert [s.module for s in got[0].message.samples] == [0, 1, 2]


def test_a_sample_the_contract_refuses_is_counted_and_the_others_go_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, master, got = agent()
    assert isinstance(a.driver, OddDriver)
    a.driver.odd = True
    for _ in range(3):
        a.sample()
    master.process()
    assert [[s.module for s in d.message.samples] for d in got] == [[0, 2]] * 3
    assert a.bus.counters["telemetry_invalid"] == 3
    lines = [r for r in caplog.records if "refused by the contract" in r.getMessage()]
    assert len(lines) == 1  # one line per 10 s, not one per sample
    assert "module 1" in lines[0].getMessage() and "cell_mv" in lines[0].getMessage()
    a.driver.odd = False
    a.sample()
    master.process()
    assert [s.module for s in got[-1].message.samples] == [0, 1, 2]
