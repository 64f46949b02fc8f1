"""Publish one message and leave: the command-line tools that inject faults."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from shared.bus.core import Delivery
from shared.bus.mqtt import MqttBus
from shared.config import SystemConfig
from shared.messages import ConfigMessage, Message
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG, TopicSpec

M = TypeVar("M", bound=Message)

CONFIG_WAIT_S = 1.0
"""How long a tool waits for the retained configuration: the broker sends it right after the
subscription; a broker without one (or an ACL that keeps it from this user) costs this long."""


def publish_once(
    url: str,
    system: str,
    protocol: str,
    spec: TopicSpec[M],
    message: M | Callable[[SystemConfig | None], M],
    config_wait_s: float = CONFIG_WAIT_S,
) -> bool:
    """Connect as a presence-less `inject` client, publish, disconnect; False without a broker.

    A callable `message` is built once connected, from the system's active configuration (the
    retained `config` message; None when none came within `config_wait_s`), so a tool can
    check a person's module number against the configured modules. What it raises (a
    ValueError naming the valid range) is raised here, after the disconnect, and nothing is
    published."""
    bus = MqttBus(parse_mqtt_url(url), system=system, service="inject", kind="inject",
                  protocol=protocol, presence=False)  # fmt: skip
    configs: list[SystemConfig] = []
    if not isinstance(message, Message):

        def take(d: Delivery[ConfigMessage]) -> None:
            configs.append(d.message.config)

        bus.subscribe(CONFIG, take)
    if not bus.start(wait_s=5):
        return False
    try:
        if not isinstance(message, Message):
            deadline = time.monotonic() + config_wait_s
            while not configs and (left_s := deadline - time.monotonic()) > 0:
                bus.process(timeout_s=left_s)
            message = message(configs[-1] if configs else None)
        bus.publish(spec, message)
    finally:
        bus.stop()
    return True
