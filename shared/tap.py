"""Print bus messages decoded as JSON lines: `python -m shared.tap [--mqtt-url URL] [FILTER ...]`.

A debugging aid for integrators: every payload is checked against its topic's schema and
printed with the topic, or with the reason it was refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from shared.bus import MqttBus
from shared.codec import PayloadError, unpack, validate
from shared.settings import DEFAULT_MQTT_PROTOCOL, DEFAULT_MQTT_URL, parse_mqtt_url
from shared.topics import spec_for


def render(topic: str, payload: bytes) -> str:
    spec = spec_for(topic)
    record: dict[str, Any] = {"topic": topic}
    try:
        data = unpack(topic, payload)
        record["payload"] = data
        if spec is None:
            record["error"] = "topic is not in the tree"
        else:
            validate(spec.payload, topic, data)
    except PayloadError as err:
        record["error"] = str(err)
    return json.dumps(record, default=repr, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.tap", description=__doc__)
    parser.add_argument("filters", nargs="*", default=["bms/v1/#"], help="MQTT topic filters")
    parser.add_argument("--mqtt-url", default=DEFAULT_MQTT_URL)
    parser.add_argument("--protocol", choices=("5", "3.1.1"), default=DEFAULT_MQTT_PROTOCOL)
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages")
    args = parser.parse_args(argv)
    bus = MqttBus(
        parse_mqtt_url(args.mqtt_url),
        system="tap",
        service="tap",
        kind="tap",
        protocol=args.protocol,
        presence=False,  # a watcher, not a service: works as the read-only third party
    )
    seen = 0

    def show(topic: str, payload: bytes, _retained: bool) -> None:
        nonlocal seen
        seen += 1
        print(render(topic, payload), flush=True)

    for flt in args.filters:
        bus.subscribe_raw(flt, show)
    bus.start()
    try:
        while not args.count or seen < args.count:
            bus.process(timeout_s=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        time.sleep(0)
        bus.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
