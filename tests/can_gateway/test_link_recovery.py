"""The gateway's CAN receiver on slcan over a socat pty pair, fed junk serial lines.

Found from outside: one line such as `\\xff\\r` on slcan made the gateway deaf for good while it
still reported itself online (python-can's receive thread died on the unhandled exception, and
its slcan driver keeps undecodable bytes in its line buffer). Here the inverter's end writes
raw slcan lines: keep-alives (0x4200), junk, and keep-alives again. The gateway must hear the
keep-alives after the junk, count the errors, reopen the channel once and say so in events.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.can_gateway.channel import ChannelOpener
from services.can_gateway.service import CanGateway
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.config import demo_config
from shared.messages import Event
from shared.topics import EVENTS

KEEPALIVE = b"T0000420080000000000000000\r"
"""0x4200 (29-bit) with byte 0 = 0: the Pylon HV inverter's ensemble request."""


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Inverter:
    """The far end of the serial link: writes raw slcan lines, drains what the gateway sends."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        os.set_blocking(self.fd, False)
        while not self.stop.is_set():
            try:
                os.read(self.fd, 4096)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                return

    def write(self, line: bytes) -> None:
        os.write(self.fd, line)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        os.close(self.fd)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[CanGateway, Inverter, list[Event]]]:
    if shutil.which("socat") is None:
        pytest.skip("socat not installed (deploy/install-system-deps.sh installs it)")
    gateway_end, inverter_end = tmp_path / "gw", tmp_path / "inv"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={gateway_end}", f"pty,raw,echo=0,link={inverter_end}"],
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: gateway_end.exists() and inverter_end.exists())
    config = demo_config("link")  # Pylon HV: the inverter's 0x4200 request is its keep-alive
    broker = InMemoryBroker()
    bus = InMemoryBus(broker, system="link", service="can_gateway", kind="test")
    watcher = InMemoryBus(broker, system="link", service="watcher", kind="test")
    events: list[Event] = []
    watcher.subscribe(EVENTS, lambda d: events.append(d.message))
    bus.start()
    watcher.start()
    opener = ChannelOpener("slcan", str(gateway_end))
    params = opener.params(config.interfaces.can)
    gateway = CanGateway(bus, opener.open(params), opener=opener)
    gateway.bus_params = params
    gateway.apply_config(config)
    stop = threading.Event()
    loop = threading.Thread(target=gateway.run, args=(stop.is_set, 0.02), daemon=True)
    loop.start()
    inverter = Inverter(inverter_end)
    pump = threading.Thread(
        target=lambda: [watcher.process(0.02) for _ in iter(stop.is_set, True)], daemon=True
    )
    pump.start()
    try:
        yield gateway, inverter, events
    finally:
        stop.set()
        loop.join(5)
        pump.join(5)
        gateway.close()
        gateway.can.shutdown()
        inverter.close()
        socat.kill()
        socat.wait()


def heard_after(gateway: CanGateway, inverter: Inverter, t0: float, timeout_s: float) -> bool:
    """Keep-alives every 50 ms until the gateway has taken one in after `t0`."""

    def heard() -> bool:
        inverter.write(KEEPALIVE)
        return gateway.keepalive_s is not None and gateway.keepalive_s > t0

    return wait_until(heard, timeout_s)


def test_an_undecodable_line_costs_a_reopen_not_the_receiver(
    rig: tuple[CanGateway, Inverter, list[Event]],
) -> None:
    gateway, inverter, events = rig
    assert heard_after(gateway, inverter, 0.0, 15)
    t0 = time.monotonic()
    inverter.write(b"\xff\r")
    assert heard_after(gateway, inverter, t0, 20), gateway.bus.counters
    counters = gateway.bus.counters
    assert counters["can_receive_errors"] >= 2 and counters["can_reopens"] == 1
    assert wait_until(lambda: [(e.code, e.kind) for e in events if e.code == "can_link_down"]
                      == [("can_link_down", "raise"), ("can_link_down", "clear")])  # fmt: skip
    assert gateway.link.up


def test_a_malformed_line_between_good_frames_is_counted_without_a_reopen(
    rig: tuple[CanGateway, Inverter, list[Event]],
) -> None:
    gateway, inverter, events = rig
    assert heard_after(gateway, inverter, 0.0, 15)
    for _ in range(5):
        t0 = time.monotonic()
        inverter.write(b"t1\r")  # too short: the driver raises on it, then reads on
        assert heard_after(gateway, inverter, t0, 15)
    assert gateway.bus.counters["can_receive_errors"] == 5
    assert gateway.bus.counters["can_reopens"] == 0
    assert not [e for e in events if e.code == "can_link_down"]
