"""Racks: one agent (one container) per rack, hosting a contiguous range of modules.

Rack r with n modules per rack hosts modules r*n .. r*n+n-1 (0-based, as module numbers are).
In a Kubernetes StatefulSet the rack is the pod's ordinal, read from the end of its host name
(`bms-rack-2` is rack 2), so one manifest scales to any number of racks. A rack's instance
name is also its broker user, which the ACL allows its own modules' topics only.

Standard library only: the container health check imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

MAX_MODULE = 195
ORDINAL = "ordinal"
_ORDINAL_RE = re.compile(r"-(\d+)$")
_RANGE_RE = re.compile(r"([0-9]{1,3})-([0-9]{1,3})")


def ordinal_from_hostname(hostname: str) -> int:
    """The ordinal of a StatefulSet pod from its host name (`<set>-<ordinal>`)."""
    short = hostname.split(".", 1)[0]
    m = _ORDINAL_RE.search(short)
    if m is None:
        raise ValueError(
            f"host name {hostname!r} does not end in '-<ordinal>' (a StatefulSet pod name)"
        )
    return int(m.group(1))


def rack_index(rack: str, hostname: str) -> int:
    """`rack` is a number, or 'ordinal' for the pod ordinal in `hostname`."""
    if rack == ORDINAL:
        return ordinal_from_hostname(hostname)
    if not rack.isdigit():
        raise ValueError(f"rack {rack!r} must be a number or {ORDINAL!r}")
    return int(rack)


def rack_module_range(index: int, per_rack: int) -> range:
    """The modules of rack `index` (the last rack may be short)."""
    if per_rack < 1:
        raise ValueError("a rack needs modules_per_rack of at least 1")
    first = index * per_rack
    if first > MAX_MODULE:
        raise ValueError(
            f"rack {index} would start at module {first}, past the last ({MAX_MODULE})"
        )
    return range(first, min(first + per_rack, MAX_MODULE + 1))


def rack_modules(index: int, per_rack: int) -> str:
    """The module range of rack `index`, as a `modules` setting ('4-7')."""
    modules = rack_module_range(index, per_rack)
    first, last = modules[0], modules[-1]
    return f"{first}-{last}" if last > first else str(first)


def rack_instance(index: int) -> str:
    """The instance name a rack announces itself with (`service/slave_agent-rack2/status`)."""
    return f"slave_agent-rack{index}"


def rack_credentials(rack: str, password_dir: str, hostname: str) -> tuple[str, str]:
    """The broker user and password file of a rack whose passwords sit in one directory,
    a file per rack user (one Kubernetes Secret for a whole StatefulSet)."""
    user = rack_instance(rack_index(rack, hostname))
    return user, str(Path(password_dir) / user)


def module_range_level(modules: Iterable[int]) -> str:
    """The `{modules}` level of an agent's topic: `first-last` of the modules it hosts."""
    ordered = sorted(modules)
    if not ordered:
        raise ValueError("an agent's topic needs at least one module")
    return f"{ordered[0]}-{ordered[-1]}"


def parse_module_range(level: str) -> range | None:
    """The modules a `{modules}` level names, or None when it is no `first-last` range of
    modules 0..MAX_MODULE (ASCII digits only: a topic comes from anyone on an open broker)."""
    m = _RANGE_RE.fullmatch(level)
    if m is None:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    return range(a, b + 1) if a <= b <= MAX_MODULE else None
