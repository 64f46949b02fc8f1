"""Home Assistant's requests become the master's commands, checked and throttled."""

from __future__ import annotations

from typing import Any

from services.integrations.service import IntegrationsBridge
from services.integrations.settings import IntegrationsSettings
from shared.bus import Delivery, InMemoryBroker, InMemoryBus
from shared.messages import COMMAND_ARGS, CommandRequest
from shared.topics import (
    COMMAND,
    COMMAND_SENDERS,
    HA_COMMAND,
    HA_COMMANDS,
    INTEGRATIONS_COMMANDS,
)

from .test_bridge import Clock


class Rig:
    def __init__(self) -> None:
        broker = InMemoryBroker()
        self.clock = Clock()
        self.master = InMemoryBus(broker, system="s1", service="master_core", kind="master_core")
        self.ha = InMemoryBus(broker, system="s1", service="ha", kind="ha")
        self.bus = InMemoryBus(broker, system="s1", service="integrations", kind="integrations")
        self.commands = InMemoryBus(
            broker, system="s1", service="cmd", kind="cmd", clock=self.clock
        )
        settings = IntegrationsSettings(system="s1", ha_discovery=True, ha_commands=True)
        self.bridge = IntegrationsBridge(self.bus, settings, clock=self.clock,
                                         commands_bus=self.commands)  # fmt: skip
        self.bridge.attach()
        self.got: list[Delivery[CommandRequest]] = []
        self.master.subscribe(COMMAND, self.got.append)
        for bus in (self.bus, self.commands, self.master, self.ha):
            bus.start()

    def ask(self, command: str, payload: bytes, *, retain: bool = False) -> None:
        topic = HA_COMMAND.topic("s1", command=command)
        self.ha.publish_raw(topic, payload, qos=1, retain=retain)
        self.commands.process()
        self.master.process()


def test_a_press_and_a_choice_become_the_masters_commands() -> None:
    rig = Rig()
    rig.ask("reset_faults", b"{}")
    rig.ask("set_mode", b'{"mode": "standby"}')
    assert [(d.params["command"], d.message.args) for d in rig.got] == [
        ("reset_faults", {}),
        ("set_mode", {"mode": "standby"}),
    ]
    for d in rig.got:
        COMMAND_ARGS[d.message.command].model_validate(d.message.args)
        assert d.message.expires_at == rig.clock.now + 10.0
    assert rig.commands.counters["ha_commands_sent"] == 2


def test_refusals_are_counted_and_nothing_is_sent() -> None:
    rig = Rig()
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("contactors", b'{"action": "close"}', {}),  # never from Home Assistant
        ("service_reset", b"{}", {}),
        ("set_mode", b"{}", {}),  # no mode
        ("set_mode", b'{"mode": "sleep"}', {}),
        ("reset_faults", b'{"service_override": {"user": "x", "reason": "because"}}', {}),
        ("reset_faults", b"not json", {}),
    ]
    for command, payload, kw in cases:
        rig.ask(command, payload, **kw)
    assert rig.got == []
    c = rig.commands.counters
    assert c["ha_commands_unknown"] == 2 and c["ha_commands_invalid"] == 4


def test_a_retained_request_is_not_replayed_at_reconnect() -> None:
    rig = Rig()
    rig.ask("reset_faults", b"{}", retain=True)  # live: sent once
    late = InMemoryBus(rig.ha.broker, system="s1", service="cmd2", kind="cmd", clock=rig.clock)
    IntegrationsBridge(InMemoryBus(rig.ha.broker, system="s1", service="i2", kind="i"),
                       IntegrationsSettings(system="s1", ha_discovery=True, ha_commands=True),
                       clock=rig.clock, commands_bus=late).attach()  # fmt: skip
    rig.clock.now += 5.0
    late.process()  # the broker's retained copy: refused
    rig.master.process()
    assert len(rig.got) == 1 and late.counters["ha_commands_retained"] == 1


def test_a_held_button_sends_one_command_a_second() -> None:
    rig = Rig()
    for _ in range(5):
        rig.ask("reset_faults", b"{}")
        rig.clock.now += 0.3
    assert len(rig.got) == 2  # t = 0 and t = 1.2
    assert rig.commands.counters["ha_commands_throttled"] == 3


def test_the_command_user_may_send_exactly_what_home_assistant_may_ask_for() -> None:
    granted = tuple(c for c, roles in COMMAND_SENDERS.items() if INTEGRATIONS_COMMANDS in roles)
    assert granted == HA_COMMANDS == ("reset_faults", "set_mode")
