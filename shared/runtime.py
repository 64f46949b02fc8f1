"""The shared run loop of a threaded service: start the bus, run until SIGTERM or SIGINT,
then clean up and say goodbye on the bus."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from shared.bus import MqttBus


def run_until_signalled(
    bus: MqttBus, loop: Callable[[Callable[[], bool]], None], cleanup: Callable[[], None]
) -> int:
    """`loop(should_stop)` runs the service; `cleanup` runs before the bus says offline."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bus.start()
    try:
        loop(stop.is_set)
    finally:
        cleanup()
        bus.stop()
    return 0
