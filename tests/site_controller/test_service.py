"""The site controller's adapter on an in-memory broker, with fake masters that serve
set_mode through the real `CommandServer` (the master's reply-topic check included)."""

from __future__ import annotations

from typing import Any

from services.site_controller.service import SiteService
from services.site_controller.settings import SiteControllerSettings
from shared.bus import Delivery
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.commands import CommandClient, CommandOutcome, CommandServer
from shared.config import SiteConfig, SystemConfig
from shared.messages import (
    CommandArgs,
    CommandReply,
    ConfigAck,
    ConfigMessage,
    Event,
    SetModeArgs,
    SiteConfigMessage,
    SiteOperationArgs,
    SiteState,
    SiteStringArgs,
    SiteSummary,
)
from shared.topics import (
    CONFIG,
    CONFIG_ACK,
    EVENTS,
    PACK_STATE,
    SITE_CONFIG,
    SITE_STATE,
    SITE_SUMMARY,
)
from tests.factories import pack_state


class FakeMaster:
    """Obeys set_mode at once as a master with auto-close: working closes, standby opens
    (the controller then needs no close command)."""

    def __init__(self, broker: InMemoryBroker, system: str, voltage: float) -> None:
        self.bus = InMemoryBus(broker, system=system, service="master_core", kind="master_core")
        self.bus.start()
        self.fields: dict[str, Any] = dict(voltage=voltage, contactors="standby", mode="standby")
        CommandServer(self.bus, {"set_mode": self._mode})
        config = SystemConfig.from_preset(
            "NMC", system_id=system, modules=1, cells_per_module=4, cell_capacity_ah=50.0
        )
        self.bus.publish(CONFIG, ConfigMessage(config=config))

    def _mode(self, args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, SetModeArgs)
        self.fields["mode"] = args.mode
        self.fields["contactors"] = "closed" if args.mode == "working" else "standby"
        return CommandOutcome(True)

    def publish(self) -> None:
        self.bus.process()
        self.bus.publish(PACK_STATE, pack_state(**self.fields))


def test_a_site_on_the_bus_joins_its_strings_through_the_window() -> None:
    broker = InMemoryBroker()
    clock = [0.0]
    bus = InMemoryBus(broker, system="site1", service="site_controller", kind="site_controller")
    bus.start()
    service = SiteService(bus, SiteControllerSettings(system="site1"), monotonic=lambda: clock[0])
    ui = InMemoryBus(broker, system="site1", service="config_ui", kind="config_ui")
    ui.start()
    seen: dict[str, list[Any]] = {"state": [], "summary": [], "events": [], "acks": []}
    ui.subscribe(SITE_STATE, lambda d: seen["state"].append(d.message))
    ui.subscribe(SITE_SUMMARY, lambda d: seen["summary"].append(d))
    ui.subscribe(EVENTS, lambda d: seen["events"].append(d.message))
    ui.subscribe(CONFIG_ACK, lambda d: seen["acks"].append(d.message))
    masters = {s: FakeMaster(broker, s, v) for s, v in (("s1", 400.0), ("s2", 405.0))}
    config = SiteConfig(
        site="site1",
        strings=({"system": "s1"}, {"system": "s2"}),  # type: ignore[arg-type]
    )
    ui.publish(SITE_CONFIG, SiteConfigMessage(config=config))

    def cycle(n: int = 1) -> None:
        for _ in range(n):
            for m in masters.values():
                m.publish()
            bus.process()
            service.tick()
            clock[0] += 0.1
            ui.process()

    cycle(4)
    last: SiteState = seen["state"][-1]
    assert [s.membership for s in last.strings] == ["joined", "waiting"]
    assert last.strings[1].reason == "5.0 V above the bus, waits for the bus to rise"
    assert last.strings[0].capacity_ah == 50.0  # from the string's own configuration
    masters["s1"].fields["voltage"] = 404.0
    cycle(40)  # the join decision follows the voltage averaged over 1 s
    last = seen["state"][-1]
    assert last.strings_joined == 2, last.strings
    codes = [e.code for e in seen["events"]]
    assert "site_config_applied" in codes and "site_bus_defined" in codes
    assert codes.count("site_string_joined") == 2
    assert all(e.source == "site_controller" for e in seen["events"])
    ack: ConfigAck = seen["acks"][-1]
    assert ack.accepted and ack.service == "site_controller"
    summaries: list[Delivery[SiteSummary]] = seen["summary"]
    assert summaries[-1].message.strings_joined == 2 and summaries[-1].message.online
    seqs = [d.message.seq for d in summaries]
    assert seqs == list(range(len(seqs)))  # one count per topic: a gap would show
    service.stop()
    ui.process()
    assert seen["summary"][-1].message.online is False


def test_a_configuration_for_another_site_is_refused() -> None:
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="site1", service="site_controller", kind="site_controller")
    bus.start()
    service = SiteService(bus, SiteControllerSettings(system="site1"))
    ui = InMemoryBus(broker, system="site1", service="config_ui", kind="config_ui")
    ui.start()
    acks: list[ConfigAck] = []
    events: list[Event] = []
    ui.subscribe(CONFIG_ACK, lambda d: acks.append(d.message))
    ui.subscribe(EVENTS, lambda d: events.append(d.message))
    other = SiteConfig(site="site2", strings=({"system": "s1"},))  # type: ignore[arg-type]
    ui.publish(SITE_CONFIG, SiteConfigMessage(config=other))
    bus.process()
    assert service.tick() is None
    ui.process()
    assert acks and not acks[-1].accepted and "not this site's id" in acks[-1].errors[0]
    assert [e.code for e in events] == ["site_config_refused"]


def test_an_operator_holds_a_string_out_and_asks_it_to_join_with_site_string() -> None:
    broker = InMemoryBroker()
    clock = [0.0]
    bus = InMemoryBus(broker, system="site1", service="site_controller", kind="site_controller")
    bus.start()
    service = SiteService(bus, SiteControllerSettings(system="site1"), monotonic=lambda: clock[0])
    ui = InMemoryBus(broker, system="site1", service="config_ui", kind="config_ui")
    ui.start()
    states: list[SiteState] = []
    ui.subscribe(SITE_STATE, lambda d: states.append(d.message))
    masters = {s: FakeMaster(broker, s, 400.0) for s in ("s1", "s2")}
    config = SiteConfig(site="site1", strings=({"system": "s1"}, {"system": "s2"}))  # type: ignore[arg-type]
    ui.publish(SITE_CONFIG, SiteConfigMessage(config=config))
    client = CommandClient(ui, system="site1")
    replies: list[CommandReply | None] = []

    def cycle(n: int = 1) -> None:
        for _ in range(n):
            for m in masters.values():
                m.publish()
            bus.process()
            service.tick()
            clock[0] += 0.1
            ui.process()

    def ask(system: str, action: str) -> CommandReply | None:
        replies.clear()
        client.send("site_string", SiteStringArgs(system=system, action=action),  # type: ignore[arg-type]
                    on_reply=replies.append)  # fmt: skip
        cycle(2)
        return replies[-1] if replies else None

    cycle(20)
    assert states[-1].strings_joined == 2
    reply = ask("s2", "out")
    assert reply is not None and reply.status == "accepted"
    cycle(20)
    s2 = states[-1].strings[1]
    assert s2.membership == "out" and s2.reason.startswith("held out by an operator")
    assert masters["s2"].fields["mode"] == "standby" and states[-1].strings_joined == 1
    refused = ask("nope", "join")
    assert refused is not None and refused.status == "refused" and "not a string" in refused.reason
    reply = ask("s2", "join")
    assert reply is not None and reply.status == "accepted"
    cycle(20)
    assert states[-1].strings_joined == 2 and masters["s2"].fields["mode"] == "working"


def test_scada_disconnects_and_connects_the_site_with_site_operation() -> None:
    broker = InMemoryBroker()
    clock = [0.0]
    bus = InMemoryBus(broker, system="site1", service="site_controller", kind="site_controller")
    bus.start()
    service = SiteService(bus, SiteControllerSettings(system="site1"), monotonic=lambda: clock[0])
    gw = InMemoryBus(broker, system="site1", service="modbus_gateway", kind="modbus_gateway")
    gw.start()
    states: list[SiteState] = []
    events: list[Event] = []
    gw.subscribe(SITE_STATE, lambda d: states.append(d.message))
    gw.subscribe(EVENTS, lambda d: events.append(d.message))
    client = CommandClient(gw, system="site1")
    replies: list[CommandReply | None] = []

    def ask(name: str, args: CommandArgs) -> CommandReply | None:
        replies.clear()
        client.send(name, args, on_reply=replies.append)
        cycle(2)
        return replies[-1] if replies else None

    def cycle(n: int = 1) -> None:
        for _ in range(n):
            for m in masters.values():
                m.publish()
            bus.process()
            service.tick()
            clock[0] += 0.1
            gw.process()

    masters: dict[str, FakeMaster] = {}
    early = ask("site_operation", SiteOperationArgs(action="disconnect", by="scada"))
    assert (
        early is not None
        and early.status == "refused"
        and "no site configuration" in (early.reason)
    )
    masters = {s: FakeMaster(broker, s, 400.0) for s in ("s1", "s2")}
    config = SiteConfig(site="site1", strings=({"system": "s1"}, {"system": "s2"}))  # type: ignore[arg-type]
    gw.publish(SITE_CONFIG, SiteConfigMessage(config=config))
    cycle(20)
    assert states[-1].strings_joined == 2 and states[-1].operation == "connect"
    reply = ask("site_operation", SiteOperationArgs(action="disconnect", by="scada"))
    assert reply is not None and reply.status == "accepted", reply
    assert reply.result == {"operation": "disconnect", "held": 2}
    cycle(20)
    last = states[-1]
    assert last.operation == "disconnect" and last.strings_joined == 0
    assert {s.membership for s in last.strings} == {"out"}
    assert last.strings[0].reason == (
        "disconnected by SCADA: stays out until the site is connected again"
    )
    assert all(m.fields["mode"] == "standby" for m in masters.values())
    # an operator cannot let one string join a disconnected site
    refused = ask("site_string", SiteStringArgs(system="s1", action="join"))
    assert refused is not None and refused.status == "refused"
    assert "disconnected by SCADA: connect it first" in refused.reason
    reply = ask("site_operation", SiteOperationArgs(action="connect", by="scada"))
    assert reply is not None and reply.status == "accepted"
    assert reply.result == {"operation": "connect", "released": 2}
    cycle(20)
    assert states[-1].strings_joined == 2 and states[-1].operation == "connect"
    codes = [e.code for e in events]
    assert codes.count("site_disconnected") == 1 and codes.count("site_connected") == 1
