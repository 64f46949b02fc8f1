"""The bridge's Sparkplug wiring on the in-memory bus, with a recording link in place of the
edge node's MQTT session: an edge node per system, pack and cells into it, the master's
absence (offline or silent) as null metrics and dead devices, and back."""

from __future__ import annotations

from typing import Any

from services.integrations.service import STALE_AFTER_S, IntegrationsBridge
from services.integrations.settings import IntegrationsSettings
from services.integrations.sparkplug import EdgeNode
from services.integrations.sparkplug_b_pb2 import Payload
from shared.bus import InMemoryBroker, InMemoryBus
from shared.topics import PACK_CELLS, PACK_STATE
from tests.factories import pack_state
from tests.integrations.test_bridge import Clock, snapshot


class Link:
    """Born at once (bdSeq 0), records what the bridge sends."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node
        self.sent: list[tuple[str, Payload]] = []
        self.stopped = False

    def start(self) -> None:
        self.node.session(0)
        self.send(self.node.birth(0.0))

    def stop(self) -> None:
        self.stopped = True

    def pump(self) -> None:
        pass

    def send(self, messages: list[tuple[str, bytes]]) -> None:
        self.sent += [(t, Payload.FromString(p)) for t, p in messages]

    def kinds(self) -> list[str]:
        return [t.split("/", 3)[2] + ("/" + t.split("/")[4] if t.count("/") > 3 else "")
                for t, _p in self.sent]  # fmt: skip


class Rig:
    def __init__(self, **settings: Any) -> None:
        self.broker = InMemoryBroker()
        self.clock = Clock()
        self.master = InMemoryBus(
            self.broker, system="s1", service="master_core", kind="master_core"
        )
        self.bus = InMemoryBus(
            self.broker, system="s1", service="integrations", kind="integrations", clock=self.clock
        )
        self.links: dict[str, Link] = {}

        def link(node: EdgeNode) -> Any:
            self.links[node.edge] = Link(node)
            return self.links[node.edge]

        self.bridge = IntegrationsBridge(
            self.bus,
            IntegrationsSettings(system="s1", json_mirror=False, metrics_port=0, **settings),
            clock=self.clock,
            sparkplug_link=link,
        )
        self.bridge.attach()
        self.bus.start()
        self.master.start()

    def pump(self) -> None:
        self.bus.process()


def last_values(link: Link) -> dict[str, Any]:
    """Name -> the value a host would show now (None: null)."""
    names: dict[int, str] = {}
    shown: dict[str, Any] = {}
    for topic, p in link.sent:
        if "/NBIRTH/" in topic:
            names.update({m.alias: m.name for m in p.metrics if m.name != "bdSeq"})
        if "/NBIRTH/" in topic or "/NDATA/" in topic:
            for m in p.metrics:
                name = m.name or names[m.alias]
                field = m.WhichOneof("value")
                shown[name] = None if field is None else getattr(m, field)
    return shown


def test_an_edge_node_per_system_with_pack_and_modules() -> None:
    rig = Rig(sparkplug=True)
    rig.master.publish(PACK_STATE, pack_state(soc=40.0))
    rig.master.publish(PACK_CELLS, snapshot())
    rig.master.publish(PACK_STATE, pack_state(soc=41.0), system="s2")
    rig.pump()
    assert sorted(rig.links) == ["s1", "s2"]
    s1 = rig.links["s1"]
    assert s1.kinds() == ["NBIRTH", "NDATA", "DBIRTH/module_00", "DBIRTH/module_01"]
    assert last_values(s1)["Pack/SOC"] == 40.0 and last_values(s1)["BMS/Online"] is True
    assert last_values(rig.links["s2"])["Pack/SOC"] == 41.0
    rig.bridge.close()
    assert all(link.stopped for link in rig.links.values())


def test_a_silent_master_nulls_the_pack_and_kills_the_modules_until_it_is_back() -> None:
    rig = Rig(sparkplug=True)
    rig.master.publish(PACK_STATE, pack_state(soc=40.0))
    rig.master.publish(PACK_CELLS, snapshot())
    rig.pump()
    link = rig.links["s1"]
    rig.clock.now += STALE_AFTER_S / 2
    rig.bridge.sparkplug_tick()
    assert "DDEATH/module_00" not in link.kinds()
    rig.clock.now += STALE_AFTER_S
    rig.bridge.sparkplug_tick()
    rig.bridge.sparkplug_tick()  # once
    assert link.kinds()[-3:] == ["NDATA", "DDEATH/module_00", "DDEATH/module_01"]
    shown = last_values(link)
    assert shown["BMS/Online"] is False and shown["Pack/SOC"] is None
    assert shown["Pack/Voltage"] is None
    rig.master.publish(PACK_CELLS, snapshot())  # cells without a state: still gone
    rig.pump()
    assert link.kinds()[-1] == "DDEATH/module_01"
    rig.master.publish(PACK_STATE, pack_state(soc=42.0))
    rig.master.publish(PACK_CELLS, snapshot())
    rig.pump()
    assert link.kinds()[-3:] == ["NDATA", "DBIRTH/module_00", "DBIRTH/module_01"]
    assert last_values(link)["Pack/SOC"] == 42.0 and last_values(link)["BMS/Online"] is True


def test_the_master_going_offline_counts_as_gone_at_once() -> None:
    rig = Rig(sparkplug=True)
    rig.master.publish(PACK_STATE, pack_state(soc=40.0))
    rig.pump()
    rig.master.abort()  # its will: status offline
    rig.pump()
    assert last_values(rig.links["s1"])["BMS/Online"] is False


def test_no_edge_node_unless_switched_on_and_no_modules_when_not_asked() -> None:
    rig = Rig()
    rig.master.publish(PACK_STATE, pack_state())
    rig.pump()
    assert rig.links == {}
    rig = Rig(sparkplug=True, sparkplug_modules=False)
    rig.master.publish(PACK_STATE, pack_state())
    rig.master.publish(PACK_CELLS, snapshot())
    rig.pump()
    assert rig.links["s1"].kinds() == ["NBIRTH", "NDATA"]
