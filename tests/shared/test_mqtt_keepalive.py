"""A cut network link (no FIN, no RST: `TcpFaultProxy.blackhole`) is noticed by the bus within
1.5 x its keepalive on a real mosquitto, whether the link was busy or idle when it died.

paho 2.2 pings on a fixed schedule, one interval after the connection or the last ping
(outgoing publishes do not move it), and gives up one interval after an unanswered ping. Its
worst case is a cut just after a ping: noticed two intervals later, which took 12-19 s for a
keepalive of 10 s when the interval was the keepalive. Both cases here cut just after a ping
of that old schedule: at once after connecting, and just after the first interval of busy
traffic both ways."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.broker import MosquittoBroker
from shared.bus import MqttBus
from shared.bus.mqtt import PAHO_LOOP_PERIOD_S, ping_interval_s
from shared.netfault import TcpFaultProxy
from shared.settings import parse_mqtt_url
from shared.topics import SERVICE_STATUS

KEEPALIVE_S = 6
BOUND_S = 1.5 * KEEPALIVE_S
RATE_S = 0.05


@given(st.integers(min_value=2, max_value=600))
def test_the_ping_interval_bounds_detection_at_1_5_keepalives(keepalive_s: int) -> None:
    """paho notices a dead link at most two of its intervals (and one loop period) after the
    last byte received; the broker drops a silent client after 1.5 intervals."""
    interval = ping_interval_s(keepalive_s)
    assert 1 <= interval <= keepalive_s
    assert 2 * interval + PAHO_LOOP_PERIOD_S <= 1.5 * keepalive_s


def test_keepalive_zero_stays_off() -> None:
    assert ping_interval_s(0) == 0


@pytest.fixture
def make_bus() -> Iterator[Callable[[str, str, str], MqttBus]]:
    made: list[MqttBus] = []

    def make(url: str, system: str, service: str) -> MqttBus:
        bus = MqttBus(
            parse_mqtt_url(url),
            system=system,
            service=service,
            kind="test",
            keepalive_s=KEEPALIVE_S,
            reconnect_min_s=1,
            reconnect_max_s=2,
        )
        made.append(bus)
        assert bus.start(wait_s=10), f"{service} could not connect to {url}"
        return bus

    yield make
    for bus in made:
        bus.stop()


def _chatter(bus: MqttBus, stop: threading.Event) -> None:
    while not stop.wait(RATE_S):
        bus.publish_status()


def _pump(bus: MqttBus, stop: threading.Event) -> None:
    while not stop.is_set():
        bus.process(timeout_s=0.1)


@pytest.mark.parametrize("busy", [True, False], ids=["busy", "idle"])
def test_a_cut_link_is_noticed_within_1_5_keepalives(
    mosquitto: MosquittoBroker,
    fault_proxy: Callable[[MosquittoBroker], TcpFaultProxy],
    make_bus: Callable[[str, str, str], MqttBus],
    system_id: str,
    busy: bool,
) -> None:
    proxy = fault_proxy(mosquitto)
    cut = make_bus(proxy.url, system_id, "cut")
    connected_at = time.monotonic()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    if busy:
        peer = make_bus(mosquitto.url, system_id, "peer")
        received = threading.Event()
        cut.subscribe_raw(
            SERVICE_STATUS.topic(system_id, service="peer"), lambda *_: received.set()
        )
        threads = [
            threading.Thread(target=_chatter, args=(b, stop), daemon=True) for b in (cut, peer)
        ]
        threads.append(threading.Thread(target=_pump, args=(cut, stop), daemon=True))
        for t in threads:
            t.start()
        assert received.wait(10)
        # traffic both ways for a while, as in service, up to just after a keepalive's time
        time.sleep(max(0.0, connected_at + KEEPALIVE_S + 0.5 - time.monotonic()))
    try:
        proxy.blackhole()
        cut_at = time.monotonic()
        deadline = cut_at + 3 * KEEPALIVE_S
        while cut.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        noticed_s = time.monotonic() - cut_at
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    print(f"busy={busy}: noticed after {noticed_s:.1f} s (keepalive {KEEPALIVE_S} s)")
    assert not cut.connected, f"not noticed within {3 * KEEPALIVE_S} s"
    assert noticed_s <= BOUND_S, f"noticed after {noticed_s:.1f} s, keepalive {KEEPALIVE_S} s"
    assert cut.counters["disconnects"] == 1
