"""The bridge's Sparkplug wiring on the in-memory bus, with a recording link in place of the
edge node's MQTT session: one edge node, a device per system with pack and cells, the
master's absence (offline or silent) as the death of its device, and back."""

from __future__ import annotations

from typing import Any

from services.integrations.service import STALE_AFTER_S, IntegrationsBridge
from services.integrations.settings import IntegrationsSettings
from services.integrations.sparkplug import EdgeNode
from services.integrations.sparkplug_b_pb2 import Payload
from shared.bus import InMemoryBroker, InMemoryBus
from shared.topics import PACK_CELLS, PACK_STATE, SITE_STATE
from tests.factories import pack_state, site_state
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
        self.links: list[Link] = []

        def link(node: EdgeNode) -> Any:
            self.links.append(Link(node))
            return self.links[-1]

        self.bridge = IntegrationsBridge(
            self.bus,
            IntegrationsSettings(
                system="s1",
                json_mirror=False,
                metrics_port=0,
                sparkplug_edge_node="site",
                **settings,
            ),
            clock=self.clock,
            sparkplug_link=link,
        )
        self.site = InMemoryBus(
            self.broker, system="site1", service="site_controller", kind="site_controller"
        )
        self.bridge.attach()
        self.bus.start()
        self.master.start()
        self.site.start()

    @property
    def link(self) -> Link:
        (link,) = self.links
        return link

    def pump(self) -> None:
        self.bus.process()


def last_values(link: Link, system: str) -> dict[str, Any]:
    """Name -> the value a host would show now for a system's device (None: null; a dead
    device shows nothing)."""
    names: dict[int, str] = {}
    shown: dict[str, Any] = {}
    for topic, p in link.sent:
        parts = topic.split("/")
        if len(parts) < 5 or parts[4] != system:
            continue
        if parts[2] == "DBIRTH":
            names.update({m.alias: m.name for m in p.metrics})
        if parts[2] == "DDEATH":
            shown = {}
        if parts[2] in ("DBIRTH", "DDATA"):
            for m in p.metrics:
                name = m.name or names[m.alias]
                field = m.WhichOneof("value")
                shown[name] = None if field is None else getattr(m, field)
    return shown


def test_one_edge_node_with_a_device_per_system() -> None:
    rig = Rig(sparkplug=True)
    assert rig.link.kinds() == ["NBIRTH"]  # born at start, before any system
    assert rig.link.node.edge == "site"
    rig.master.publish(PACK_STATE, pack_state(soc=40.0))
    rig.master.publish(PACK_CELLS, snapshot())
    rig.master.publish(PACK_STATE, pack_state(soc=41.0), system="s2")
    rig.master.publish(PACK_CELLS, snapshot(), system="s2")
    rig.pump()
    # each system counted online with its pack state, born with its cells
    assert rig.link.kinds() == ["NBIRTH", "NDATA", "DBIRTH/s1", "NDATA", "DBIRTH/s2"]
    assert last_values(rig.link, "s1")["Pack/SOC"] == 40.0
    assert last_values(rig.link, "s1")["Module 01/Fresh"] is True
    assert last_values(rig.link, "s2")["Pack/SOC"] == 41.0
    seqs = [p.seq for _t, p in rig.link.sent]
    assert seqs == list(range(len(seqs)))  # one seq over the node and both devices
    rig.bridge.close()
    assert rig.link.stopped


def test_a_silent_master_kills_its_device_until_it_is_back() -> None:
    rig = Rig(sparkplug=True)
    rig.master.publish(PACK_STATE, pack_state(soc=40.0))
    rig.master.publish(PACK_CELLS, snapshot())
    rig.master.publish(PACK_STATE, pack_state(soc=41.0), system="s2")
    rig.master.publish(PACK_CELLS, snapshot(), system="s2")
    rig.pump()
    rig.clock.now += STALE_AFTER_S / 2
    rig.master.publish(PACK_STATE, pack_state(soc=41.0), system="s2")
    rig.pump()
    rig.bridge.sparkplug_tick()
    assert "DDEATH/s1" not in rig.link.kinds()[4:]
    rig.clock.now += STALE_AFTER_S / 2 + 1
    rig.bridge.sparkplug_tick()
    rig.bridge.sparkplug_tick()  # once
    assert rig.link.kinds()[-2:] == ["DDEATH/s1", "NDATA"]
    assert last_values(rig.link, "s1") == {} and last_values(rig.link, "s2")["Pack/SOC"] == 41.0
    rig.master.publish(PACK_CELLS, snapshot())  # cells without a state: still gone
    rig.pump()
    assert rig.link.kinds()[-1] == "NDATA"
    rig.master.publish(PACK_STATE, pack_state(soc=42.0))
    rig.pump()
    assert rig.link.kinds()[-2:] == ["DBIRTH/s1", "NDATA"]
    assert last_values(rig.link, "s1")["Pack/SOC"] == 42.0


def test_the_master_going_offline_counts_as_gone_at_once() -> None:
    rig = Rig(sparkplug=True)
    rig.master.publish(PACK_STATE, pack_state(soc=40.0))
    rig.master.publish(PACK_CELLS, snapshot())
    rig.pump()
    rig.master.abort()  # its will: status offline
    rig.pump()
    assert rig.link.kinds()[-2:] == ["DDEATH/s1", "NDATA"]


def test_no_edge_node_unless_switched_on_and_no_modules_when_not_asked() -> None:
    rig = Rig()
    rig.master.publish(PACK_STATE, pack_state())
    rig.pump()
    assert rig.links == []
    rig = Rig(sparkplug=True, sparkplug_modules=False)
    rig.master.publish(PACK_STATE, pack_state())
    rig.master.publish(PACK_CELLS, snapshot())
    rig.pump()
    assert rig.link.kinds() == ["NBIRTH", "DBIRTH/s1", "NDATA"]
    assert not any(n.startswith("Module ") for n in last_values(rig.link, "s1"))


def node_values(link: Link) -> dict[str, Any]:
    """Name -> the value a host shows now for the edge node's own metrics."""
    names: dict[int, str] = {}
    shown: dict[str, Any] = {}
    for topic, p in link.sent:
        kind = topic.split("/")[2]
        if kind == "NBIRTH":
            names.update({m.alias: m.name for m in p.metrics})
        if kind in ("NBIRTH", "NDATA"):
            for m in p.metrics:
                field = m.WhichOneof("value")
                shown[m.name or names[m.alias]] = None if field is None else getattr(m, field)
    return shown


def test_the_site_is_the_edge_node_its_metrics_on_the_node_null_when_it_is_gone() -> None:
    rig = Rig(sparkplug=True, site="site1")
    assert node_values(rig.link)["Site/SOC"] is None  # born before the first site state
    rig.site.publish(SITE_STATE, site_state(soc=55.0))
    rig.pump()
    assert rig.link.kinds()[-1] == "NDATA"
    assert node_values(rig.link)["Site/SOC"] == 55.0
    assert node_values(rig.link)["Site/Strings joined"] == 2
    rig.clock.now += STALE_AFTER_S / 2
    rig.bridge.sparkplug_tick()
    assert node_values(rig.link)["Site/SOC"] == 55.0
    rig.clock.now += STALE_AFTER_S / 2 + 1  # the site controller went quiet
    rig.bridge.sparkplug_tick()
    sent = len(rig.link.sent)
    rig.bridge.sparkplug_tick()  # once
    assert len(rig.link.sent) == sent
    assert node_values(rig.link)["Site/SOC"] is None
    assert node_values(rig.link)["Site/Strings joined"] is None
    rig.site.publish(SITE_STATE, site_state(soc=56.0))
    rig.pump()
    assert node_values(rig.link)["Site/SOC"] == 56.0
    rig.site.abort()  # its will: status offline, null at once
    rig.pump()
    assert node_values(rig.link)["Site/SOC"] is None


def test_without_bms_site_the_node_has_no_site_metrics() -> None:
    rig = Rig(sparkplug=True)
    rig.site.publish(SITE_STATE, site_state())
    rig.pump()
    assert rig.link.kinds() == ["NBIRTH"]
    assert not any(n.startswith("Site/") for n in node_values(rig.link))
