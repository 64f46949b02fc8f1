"""Publish one message and leave: the command-line tools that inject faults."""

from __future__ import annotations

from typing import TypeVar

from shared.bus.mqtt import MqttBus
from shared.messages import Message
from shared.settings import parse_mqtt_url
from shared.topics import TopicSpec

M = TypeVar("M", bound=Message)


def publish_once(url: str, system: str, protocol: str, spec: TopicSpec[M], message: M) -> bool:
    """Connect as a presence-less `inject` client, publish, disconnect; False without a broker."""
    bus = MqttBus(parse_mqtt_url(url), system=system, service="inject", kind="inject",
                  protocol=protocol, presence=False)  # fmt: skip
    if not bus.start(wait_s=5):
        return False
    bus.publish(spec, message)
    bus.stop()
    return True
