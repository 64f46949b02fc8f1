"""`publish_once` (the fault-injection commands): a message built from the system's active
configuration, the retained `config`, and nothing published when the build refuses."""

from __future__ import annotations

import time

import pytest

from shared.broker import MosquittoBroker
from shared.bus import MqttBus
from shared.bus.oneshot import publish_once
from shared.config import SystemConfig, demo_config
from shared.messages import ConfigMessage, SimControl
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG, SIM_CONTROL

WAIT_S = 10.0


def bus(url: str, system: str, service: str) -> MqttBus:
    b = MqttBus(parse_mqtt_url(url), system=system, service=service, kind=service)
    assert b.start(wait_s=WAIT_S)
    return b


def test_the_message_is_built_from_the_retained_configuration(
    mosquitto: MosquittoBroker, system_id: str
) -> None:
    config = demo_config(system_id)
    ui = bus(mosquitto.url, system_id, "config_ui")
    ui.publish(CONFIG, ConfigMessage(config=config))
    ui.stop()  # waits for nothing more: the broker keeps the retained copy
    received: list[SimControl] = []
    listener = bus(mosquitto.url, system_id, "slave_agent")
    listener.subscribe(SIM_CONTROL, lambda d: received.append(d.message))
    try:
        seen: list[SystemConfig | None] = []

        def build(active: SystemConfig | None) -> SimControl:
            seen.append(active)
            if active is not None and active.topology.modules < 8:
                raise ValueError("module numbers run from 1 to 7, not 8")
            return SimControl(fault="clear", module=7)

        deadline = time.monotonic() + WAIT_S
        while True:  # the retained copy may lag the publisher's disconnect
            with pytest.raises(ValueError, match="not 8"):
                publish_once(mosquitto.url, system_id, "5", SIM_CONTROL, build, WAIT_S)
            if seen[-1] is not None or time.monotonic() > deadline:
                break
        assert seen[-1] == config

        def fine(active: SystemConfig | None) -> SimControl:
            return SimControl(fault="clear", module=6)

        assert publish_once(mosquitto.url, system_id, "5", SIM_CONTROL, fine, WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while not received and time.monotonic() < deadline:
            listener.process(timeout_s=0.2)
        assert [m.module for m in received] == [6]  # the refused one never went out
    finally:
        listener.stop()


def test_without_a_configuration_the_build_gets_none(
    mosquitto: MosquittoBroker, system_id: str
) -> None:
    seen: list[SystemConfig | None] = []

    def build(active: SystemConfig | None) -> SimControl:
        seen.append(active)
        return SimControl(fault="clear")

    started = time.monotonic()
    assert publish_once(mosquitto.url, f"{system_id}-none", "5", SIM_CONTROL, build, 0.3)
    assert seen == [None] and time.monotonic() - started >= 0.3


def test_a_ready_message_needs_no_configuration(mosquitto: MosquittoBroker, system_id: str) -> None:
    assert publish_once(mosquitto.url, system_id, "5", SIM_CONTROL, SimControl(fault="clear"))
