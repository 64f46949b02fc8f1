"""udp_multicast needs a multicast route; where there is none its tests skip and say why."""

from __future__ import annotations

import functools

import can
import pytest

PROBE_GROUP = "239.74.163.31"


@functools.cache
def multicast_problem() -> str | None:
    """None when a udp_multicast frame sent here is received here, else what went wrong."""
    try:
        a = can.Bus(interface="udp_multicast", channel=PROBE_GROUP)
    except can.CanError as exc:
        return f"udp_multicast unavailable ({exc})"
    try:
        b = can.Bus(interface="udp_multicast", channel=PROBE_GROUP)
        try:
            a.send(can.Message(arbitration_id=0x7FF, data=b"\x01", is_extended_id=False))
            if b.recv(timeout=2.0) is None:
                return "udp_multicast frames do not come back on this host"
        finally:
            b.shutdown()
    except can.CanError as exc:
        return f"udp_multicast unavailable ({exc})"
    finally:
        a.shutdown()
    return None


def require_multicast() -> None:
    problem = multicast_problem()
    if problem is not None:
        pytest.skip(
            f"{problem}; in a network namespace: ip link set lo multicast on; "
            "ip route add 224.0.0.0/4 dev lo"
        )
