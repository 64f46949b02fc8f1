"""A service-like process holding one bus connection, for last-will tests: killed with -9."""

from __future__ import annotations

import sys
import time

from shared.bus import MqttBus
from shared.settings import parse_mqtt_url


def main() -> None:
    url, system, service, protocol = sys.argv[1:5]
    bus = MqttBus(
        parse_mqtt_url(url),
        system=system,
        service=service,
        kind="child",
        protocol=protocol,
        keepalive_s=5,
    )
    if not bus.start(wait_s=10):
        sys.exit("no broker")
    print("ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
