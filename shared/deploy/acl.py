"""The broker's access control list, generated from the topic registry (`shared/topics.py`).

One broker user per role. A role may publish what the registry lists it as a publisher of,
and read what it lists it as a subscriber of; `any_service` stands for every service role.
Third parties only read. `python -m shared.deploy.acl` writes `deploy/mosquitto/acl`;
`--check` fails when that file no longer matches the registry.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.topics import (
    ANY,
    CAN,
    MASTER,
    MODBUS,
    ROOT,
    SERVICE_STATUS,
    SIM,
    SLAVE,
    THIRD_PARTY,
    TOPICS,
    UI,
    TopicSpec,
)

SERVICE_ROLES = (SLAVE, MASTER, MODBUS, CAN, UI)
USERS = (*SERVICE_ROLES, THIRD_PARTY, SIM)
"""Broker users: one per service, a read-only one for third parties, and the simulation's
fault injection (demo stacks only)."""

HEALTH_READS: tuple[TopicSpec[Any], ...] = (SERVICE_STATUS,)
"""Every service also reads presence: its container health check reads its own status."""

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl"


@dataclass(frozen=True)
class Grant:
    pattern: str
    read: bool
    write: bool

    @property
    def access(self) -> str:
        return "readwrite" if self.read and self.write else "read" if self.read else "write"


def pattern(spec: TopicSpec[Any]) -> str:
    """The topic filter of a spec across every system: `bms/v1/+/slave/+/telemetry`."""
    return spec.filter("+")


def _has(roles: tuple[str, ...], role: str) -> bool:
    return role in roles or (ANY in roles and role in SERVICE_ROLES)


def grants(role: str) -> list[Grant]:
    """What `role` may read and write, in registry order."""
    out: list[Grant] = []
    for spec in TOPICS:
        write = _has(spec.publishers, role)
        read = _has(spec.subscribers, role) or (role in SERVICE_ROLES and spec in HEALTH_READS)
        if read or write:
            out.append(Grant(pattern(spec), read, write))
    return out


def render() -> str:
    lines = [
        "# Broker access control, one user per role. Generated from shared/topics.py by",
        "# `python -m shared.deploy.acl`; do not edit (make docs regenerates it).",
        f"# Every topic is under {ROOT}/<system>/; '+' in the system level admits every system.",
    ]
    for role in USERS:
        lines += ["", f"user {role}"]
        lines += [f"topic {g.access} {g.pattern}" for g in grants(role)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.deploy.acl", description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="fail when the file is outdated")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is outdated: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
