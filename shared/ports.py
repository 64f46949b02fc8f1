"""Pick a TCP port for a listener that no outgoing connection can take in the meantime.

bind() to port 0 hands out a port from the kernel's ephemeral range, the range every
outgoing connection's local port comes from too. Between the pick and the listener's bind, a
client connecting anywhere (a service's MQTT client to the broker) can be given that port and
hold it for as long as it stays connected: the web application then failed "address already
in use" on every restart. Ports below the ephemeral range are never handed to a connect(), so a
pick there can only meet another listener, which the bind check here catches.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

__all__ = ["LISTEN_PORT_FLOOR", "ephemeral_range", "free_port"]

# above the ports of well-known services (MQTT 1883, HTTP 8080, Prometheus exporters 9xxx)
LISTEN_PORT_FLOOR = 20000
# below this many ports under the ephemeral range, picks would repeat too soon: the OS picks
_MIN_POOL = 1000
_PICK_TRIES = 64
# Linux's default; other kernels have no file to read and start their range higher
_DEFAULT_EPHEMERAL = (32768, 60999)
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_given_lock = threading.Lock()
_given: set[int] = set()


def ephemeral_range() -> tuple[int, int] | None:
    """The kernel's range of local ports for outgoing connections, None when unreadable."""
    try:
        low, high = (int(x) for x in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def _candidate(low: int, high: int) -> int:
    return random.randrange(low, high)


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _os_pick(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now, below the ephemeral range; another listener could still take it.

    Ports given once by this process are not given again (two asked for in a row both stay
    free), until the pool is spent.
    """
    low = (ephemeral_range() or _DEFAULT_EPHEMERAL)[0]
    if low - LISTEN_PORT_FLOOR < _MIN_POOL:
        return _os_pick(host)
    with _given_lock:
        if len(_given) >= (low - LISTEN_PORT_FLOOR) // 2:
            _given.clear()
        for _ in range(_PICK_TRIES):
            port = _candidate(LISTEN_PORT_FLOOR, low)
            if port not in _given and _bindable(host, port):
                _given.add(port)
                return port
    return _os_pick(host)
