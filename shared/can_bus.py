"""Opening a python-can bus the same way in every service (master devices, CAN gateway, plant).

- `virtual` and `udp_multicast` take no bit rate (python-can would pass it on and ignore it at
  best); every other interface gets the configured one.
- `udp_multicast` (software in the loop, one multicast group per CAN bus): python-can binds
  every bus to the same UDP port (43113), and Linux then delivers a datagram of *any* group
  joined on the host to every such socket (`IP_MULTICAST_ALL` defaults to 1, ip(7)). Two buses
  on two groups would see each other's frames. Switching `IP_MULTICAST_ALL` off on the socket
  keeps a bus to its own group, so the group alone names the bus, as the configuration says.

`multicast_problem()` says whether udp_multicast frames come back on this host at all (a
container or namespace without a multicast route has none): None when they do.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import sys
from typing import Final

import can
from can.interfaces.slcan import slcanBus as SlcanBus

log = logging.getLogger(__name__)

NO_BITRATE: Final = frozenset({"virtual", "udp_multicast"})
IP_MULTICAST_ALL: Final = getattr(socket, "IP_MULTICAST_ALL", 49)
"""Linux <linux/in.h>; Python's socket module does not export it."""
PROBE_GROUP: Final = "239.74.163.30"


def open_can(interface: str, channel: str, bitrate: int | None = None) -> can.BusABC:
    """A python-can bus on `interface` `channel` (see the module docstring)."""
    if interface in NO_BITRATE or bitrate is None:
        bus = can.Bus(interface=interface, channel=channel)
    else:
        bus = can.Bus(interface=interface, channel=channel, bitrate=bitrate)
    if interface == "udp_multicast":
        _own_group_only(bus)
    return bus


def _own_group_only(bus: can.BusABC) -> None:
    if not sys.platform.startswith("linux"):
        return  # BSD and macOS deliver only the groups a socket joined
    sock = getattr(getattr(bus, "_multicast", None), "_socket", None)
    if not isinstance(sock, socket.socket) or sock.family != socket.AF_INET:
        log.warning("udp_multicast: cannot restrict the bus to its own group; groups may mix")
        return
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)


def multicast_problem(group: str = PROBE_GROUP, timeout_s: float = 2.0) -> str | None:
    """None when a udp_multicast frame sent here is received here, else what went wrong."""
    # A bus whose socket failed half-way warns "not properly shut down" when collected: the
    # failure is the answer here, not news for the log.
    can_log = logging.getLogger("can")
    level = can_log.level
    can_log.setLevel(logging.ERROR)
    try:
        return _probe(group, timeout_s)
    finally:
        gc.collect()
        can_log.setLevel(level)


def _probe(group: str, timeout_s: float) -> str | None:
    buses: list[can.BusABC] = []
    try:
        sender = open_can("udp_multicast", group)
        buses.append(sender)
        receiver = open_can("udp_multicast", group)
        buses.append(receiver)
        sender.send(can.Message(arbitration_id=0x7FF, data=b"\x01", is_extended_id=False))
        if receiver.recv(timeout=timeout_s) is None:
            return "udp_multicast frames do not come back on this host (no multicast route?)"
    except (can.CanError, OSError) as exc:
        return f"udp_multicast unavailable ({exc})"
    finally:
        for bus in buses:
            with contextlib.suppress(Exception):
                bus.shutdown()
    return None


class ClearLineAfterError(can.Listener):
    """Clears a serial adapter's line buffer after a receive error, on the Notifier's thread.

    python-can 4.6's slcan keeps bytes it cannot decode (`\\xff\\r`) in its line buffer, so every
    later read fails too and the device falls silent for good. `SlcanBus.flush()` (public) drops
    that buffer and the serial input: the frames in flight are lost, the next ones arrive.
    Other interfaces recover by themselves; nothing is done for them.
    """

    def __init__(self, bus: can.BusABC) -> None:
        self.bus = bus
        self.cleared = 0

    def on_message_received(self, msg: can.Message) -> None:
        pass

    def on_error(self, exc: Exception) -> None:
        flush = getattr(self.bus, "flush", None)
        if isinstance(self.bus, SlcanBus) and callable(flush):
            with contextlib.suppress(can.CanError, OSError, ValueError):
                flush()
                self.cleared += 1
