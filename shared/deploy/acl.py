"""The broker's access control list, generated from the topic registry (`shared/topics.py`).

One broker user per service, and one per rack of slave modules. A role may publish what the
registry lists it as a publisher of, and read what it lists it as a subscriber of;
`any_service` stands for every service role. Commands are granted one by one from
`COMMAND_SENDERS`, so only the web application may send `cmd/service_reset`. Each user
publishes its presence, configuration acknowledgement and events under its own name only (the
user name is the instance name), so nobody else can publish an event as the master; and a
rack (`slave_agent-rack<r>`) only the topics of its own modules (and of its own module range,
`slaves/<first>-<last>/telemetry`), so a rack cannot speak for another's cells. A command's
reply (`reply/{user}/{client}`) is readable by the user it names
only. Third parties only read; the `events_reader` user also fetches the events it missed
(`cmd/events_query`, and its own replies).

Outside `bms/v1/` (`OUTSIDE_TOPICS`): Home Assistant's discovery prefix, and Sparkplug B's
`spBv1.0/bms/...`. A Sparkplug device is a system (`spBv1.0/bms/+/<edge node>/<system>`: the
deployed system's only), and the edge node is the site, a setting of the bridge
(BMS_SPARKPLUG_EDGE_NODE). With `--edge-node ID` (the credentials step passes the deployed
BMS_SPARKPLUG_EDGE_NODE) the bridge may publish only `spBv1.0/bms/+/ID` and
`spBv1.0/bms/+/ID/<system>` and read only its commands there, so on a broker shared by several
sites it cannot write another site's topics; without it every such entry has `+` for the edge
node (any edge node of the group). The `sparkplug_host` user is a Sparkplug host application
(SCADA): it reads those topics, may send the edge node's commands (NCMD: a rebirth request;
DCMD, which changes nothing) and publish its own STATE (`spBv1.0/STATE/+`), and has nothing
under `bms/v1/`.

Every entry names the deployed system (`bms/v1/<system>/...`, never `+`): the users of a
broker act for that one system and can neither publish nor read another system's topics. In a
site's stack (the deployed system is the site) the site controller's grants (`site_grants`)
and the gateways' reads of what they serve (`SITE_SERVING_READS`) also name each string.
mosquitto's `pattern` substitution (`%u`, `%c`) is not used: it must fill a whole topic level
and applies to every user alike, while the system level is fixed per deployment and not part
of any user or client name, and the third party must write nothing at all.

The rack users depend on the layout (racks x modules per rack), so the ACL is not a file of
the repository: the credentials step writes the deployed layout's at every start, and
`python -m shared.deploy.acl --system S --racks N --modules-per-rack n [--edge-node ID]`
prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from shared.config import SYSTEM_ID_RE
from shared.racks import module_range_level, rack_instance, rack_module_range
from shared.topics import (
    ANY,
    CAN,
    COMMAND,
    COMMAND_REPLY,
    COMMAND_SENDERS,
    CONFIG,
    EVENTS_READER,
    HA_COMMAND,
    HA_COMMANDS,
    HOME_ASSISTANT,
    INTEGRATIONS,
    INTEGRATIONS_COMMANDS,
    MASTER,
    MODBUS,
    OUTSIDE_ROOT,
    PACK_CELLS,
    PACK_STATE,
    READS_AS,
    ROOT,
    SERVICE_STATUS,
    SIM,
    SITE,
    SITE_OWN_TOPICS,
    SITE_SERVED_COMMANDS,
    SITE_STRING_TOPICS,
    SLAVE,
    SPARKPLUG_HOST,
    THIRD_PARTY,
    TOPICS,
    UI,
    TopicSpec,
    acl_filter_in,
    sparkplug_id,
)

SERVICE_ROLES = (SLAVE, MASTER, MODBUS, CAN, UI, INTEGRATIONS)
CENTRAL_USERS = (
    MASTER, MODBUS, CAN, UI, INTEGRATIONS, INTEGRATIONS_COMMANDS, HOME_ASSISTANT, THIRD_PARTY,
    EVENTS_READER, SPARKPLUG_HOST, SIM, SITE,
)  # fmt: skip
"""Broker users besides the racks: one per central service, the integrations bridge's command
user and Home Assistant's (both only with BMS_HA_COMMANDS), a read-only one for third parties,
one for third parties that also fetch the events they missed (`events_query`, its own replies
only), a Sparkplug host application's (Sparkplug topics and rebirth requests only), and the
simulation's fault injection (demo stacks only), and the site controller's (its grants are
`site_grants`: the deployed system is then the site, and the ACL names its strings)."""
SERVICE_LOGINS = (INTEGRATIONS_COMMANDS,)
"""Users a service container logs in as besides its own (its secret belongs to the service)."""


@dataclass(frozen=True)
class RackLayout:
    """`racks` racks of `modules_per_rack` modules each (see shared/racks.py)."""

    racks: int = 2
    modules_per_rack: int = 4

    def __post_init__(self) -> None:
        if self.racks < 1:
            raise ValueError("a layout needs at least one rack")
        self.modules(self.racks - 1)  # the last rack must start at a real module

    def modules(self, rack: int) -> range:
        return rack_module_range(rack, self.modules_per_rack)

    def users(self) -> tuple[str, ...]:
        """The racks' broker users: their instance names."""
        return tuple(rack_instance(r) for r in range(self.racks))


DEFAULT_LAYOUT = RackLayout()
DEFAULT_SYSTEM = "demo"
"""The system a deployment serves unless BMS_SYSTEM says otherwise (as the services)."""
EDGE_NODE_ENV = "BMS_SPARKPLUG_EDGE_NODE"
"""The bridge's edge node id setting, read by the ACL generator as well (one name, one value)."""


def check_edge_node(edge_node: str | None) -> str | None:
    """The edge node id the ACL pins the bridge to, or None (any edge node: `+`). A Sparkplug
    id (printable, no `/`, `+`, `#`: they would widen the grant to other edge nodes, or not be
    one topic level), without a space at either end: mosquitto reads the rest of an ACL line
    as the topic and trims its ends (2.0.11 keeps a space inside, `site a`)."""
    if edge_node is None:
        return None
    sparkplug_id("edge node id", edge_node)
    if edge_node != edge_node.strip():
        raise ValueError(f"Sparkplug edge node id {edge_node!r} must not start or end with a space")
    return edge_node


STRING_MASTER_PREFIX = f"{MASTER}-"


def string_master(system: str) -> str:
    """The broker user of a site string's master (`master_core-<system>`): the masters of
    several strings share the site's broker, each confined to its own string's topics."""
    return STRING_MASTER_PREFIX + system


def users(
    layout: RackLayout = DEFAULT_LAYOUT, site_strings: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The racks, the central users and, for a site, one master user per string."""
    return (*layout.users(), *CENTRAL_USERS, *(string_master(s) for s in site_strings))


def role_of(user: str) -> str:
    if user.startswith(f"{SLAVE}-rack"):
        return SLAVE
    return MASTER if user.startswith(STRING_MASTER_PREFIX) else user


NARROWED_WRITES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    COMMAND.name: ("command", COMMAND_SENDERS),
    HA_COMMAND.name: ("command", dict.fromkeys(HA_COMMANDS, (HOME_ASSISTANT,))),
}
"""Topics whose publishers differ by the value of one parameter: spec -> (parameter, value ->
roles). The ACL then grants each value's topic on its own (MQTT ACLs filter by topic only)."""

OWN_NAME_LEVELS = frozenset({"service", "source"})
"""Levels that name the publisher: a user may write them under its own name only, so an
event on `events/master_core` comes from the master's user and no other."""

OWN_READ_LEVELS = frozenset({"user"})
"""Levels that name the reader: a user may read them under its own name only, so a command's
reply on `reply/config_ui/...` is the web application's to read and no other user's (the
master, which writes every reply, is not narrowed)."""

HEALTH_READS: tuple[TopicSpec[Any], ...] = (SERVICE_STATUS,)
"""Every service (and the site controller) also reads presence: its container health check
reads its own status."""


@dataclass(frozen=True)
class Grant:
    pattern: str
    read: bool
    write: bool

    @property
    def access(self) -> str:
        return "readwrite" if self.read and self.write else "read" if self.read else "write"


def pattern(spec: TopicSpec[Any], system: str) -> str:
    """The topic filter of a spec in one system: `bms/v1/demo/slave/+/telemetry`."""
    return spec.filter(system)


def _has(roles: tuple[str, ...], role: str) -> bool:
    return role in roles or (ANY in roles and role in SERVICE_ROLES)


def grants(
    user: str,
    layout: RackLayout = DEFAULT_LAYOUT,
    system: str = DEFAULT_SYSTEM,
    edge_node: str | None = None,
    site_strings: tuple[str, ...] = (),
) -> list[Grant]:
    """What `user` may read and write in `system`: its role's grants, narrowed to its own
    name on per-service topics and, for a rack, to its own modules on per-module topics; the
    Sparkplug topics to the edge node `edge_node` (None: any). The site controller's are
    `site_grants(system, site_strings)`: `system` is then the site."""
    if not SYSTEM_ID_RE.fullmatch(system):  # `+` or `#` would admit every system again
        raise ValueError(
            f"system id {system!r} must be 1-32 lower-case letters, digits, '-' or '_'"
        )
    check_edge_node(edge_node)
    role = role_of(user)
    if role == SITE:
        return site_grants(system, site_strings)
    if user.startswith(STRING_MASTER_PREFIX):
        return string_master_grants(user.removeprefix(STRING_MASTER_PREFIX), site_strings)
    modules = layout.modules(int(user.rsplit("rack", 1)[1])) if role == SLAVE else None
    out: list[Grant] = []
    for spec in TOPICS:
        out += _spec_grants(spec, role, user, system, modules)
    out += [
        Grant(pattern(spec, string), True, False)
        for string in site_strings
        for spec in SITE_SERVING_READS.get(role, ())
    ]
    return out + _outside_grants(role, system, edge_node)


SITE_SERVING_READS: dict[str, tuple[TopicSpec[Any], ...]] = {
    MODBUS: (CONFIG, PACK_STATE, PACK_CELLS),
    CAN: (CONFIG, PACK_STATE),
}
"""In a site's stack (`system` is the site, `site_strings` its strings) the gateways serve the
site (BMS_SITE): they read, under each string's id, what they serve of it (Modbus: 804/805
from its pack state and cells, the layout from its configuration; CAN: the cell extremes of
the joined strings; both: the interface from the first string's configuration). Read only."""


def _spec_grants(
    spec: TopicSpec[Any], role: str, user: str, system: str, modules: range | None
) -> list[Grant]:
    """What `role` (as `user`) may do with one spec's topics in `system`."""
    write = _has(spec.publishers, role)
    read = (
        _has(spec.subscribers, READS_AS.get(role, role))
        or role in spec.subscribers
        or (role in (*SERVICE_ROLES, SITE) and spec in HEALTH_READS)
    )
    out: list[Grant] = []
    if not (read or write):
        return out
    if write and spec.name in NARROWED_WRITES:
        param, writers = NARROWED_WRITES[spec.name]
        if read:
            out.append(Grant(pattern(spec, system), True, False))
        out += [
            Grant(spec.filter(system, **{param: value}), False, True)
            for value, roles in writers.items()
            if _has(roles, role)
        ]
    elif read and not write and (mine := OWN_READ_LEVELS & set(spec.params)):
        out.append(Grant(spec.filter(system, **dict.fromkeys(mine, user)), True, False))
    elif write and (own := OWN_NAME_LEVELS & set(spec.params)):
        if read:
            out.append(Grant(pattern(spec, system), True, False))
        out.append(Grant(spec.filter(system, **dict.fromkeys(own, user)), False, True))
    elif modules is not None and "module" in spec.params:
        out += [Grant(spec.filter(system, module=m), read, write) for m in modules]
    elif modules is not None and "modules" in spec.params:  # the rack's own range only
        out.append(Grant(spec.filter(system, modules=module_range_level(modules)), read, write))
    else:
        out.append(Grant(pattern(spec, system), read, write))
    return out


def string_master_grants(string: str, site_strings: tuple[str, ...]) -> list[Grant]:
    """A site string's master (user `master_core-<string>`): the master's grants under its
    string's id, exactly as `master_core`'s in a stack of its own (its events and presence
    under its service name `master_core`); nothing under the site's or another string's id.
    None for a string the site does not have."""
    if string not in site_strings or not SYSTEM_ID_RE.fullmatch(string):
        return []
    out: list[Grant] = []
    for spec in TOPICS:
        out += _spec_grants(spec, MASTER, MASTER, string, None)
    return out


def site_grants(site: str, strings: tuple[str, ...]) -> list[Grant]:
    """The site controller's grants (user `site_controller`): under the site's id the site
    topics, its own events, acknowledgement and presence (`SITE_OWN_TOPICS`); under each
    string's id (`SITE_STRING_TOPICS`) it reads the pack state, configuration and events and
    its own replies, and writes `cmd/set_mode` and `cmd/contactors` only (`COMMAND_SENDERS`),
    nothing else. Under the site's id it also serves the site commands and the site's event
    log (`SITE_SERVED_COMMANDS`: the operators' `cmd/site_string`, SCADA's and the operators'
    `cmd/site_operation`, `cmd/events_query`; reads them, writes the replies)."""
    ids = (site, *strings)
    bad = [i for i in ids if not SYSTEM_ID_RE.fullmatch(i)]
    if bad:
        raise ValueError(
            f"site and string ids {bad} must be 1-32 lower-case letters, digits, '-' or '_'"
        )
    if site in strings or len(set(strings)) != len(strings):  # SiteConfig refuses it too
        raise ValueError(f"site {site!r} and its strings {list(strings)} must be distinct ids")
    out: list[Grant] = []
    for spec in SITE_OWN_TOPICS:
        out += _spec_grants(spec, SITE, SITE, site, None)
    out += [Grant(COMMAND.filter(site, command=c), True, False) for c in SITE_SERVED_COMMANDS]
    out.append(Grant(COMMAND_REPLY.filter(site), False, True))
    for system in strings:
        for spec in SITE_STRING_TOPICS:
            if spec is COMMAND_REPLY:  # its own replies (it writes replies under the site only)
                out.append(Grant(spec.filter(system, user=SITE), True, False))
                continue
            for g in _spec_grants(spec, SITE, SITE, system, None):
                # it sends commands there (and reads no other's); its events and presence
                # belong under the site
                write = g.write and spec is COMMAND
                read = g.read and spec is not COMMAND
                if read or write:
                    out.append(Grant(g.pattern, read, write))
    return out


def _outside_grants(role: str, system: str, edge_node: str | None) -> list[Grant]:
    """Topics outside `bms/v1/` (Home Assistant, Sparkplug): the role's own, and the reads of
    the role it reads as, one grant per filter."""
    access: dict[str, set[str]] = {}
    for p, a in OUTSIDE_ROOT.get(role, ()):
        access.setdefault(p, set()).update(k for k in ("read", "write") if k in a)
    if role in READS_AS:
        for p, a in OUTSIDE_ROOT.get(READS_AS[role], ()):
            if "read" in a:
                access.setdefault(p, set()).add("read")
    return [
        Grant(acl_filter_in(p, system, edge_node), "read" in kinds, "write" in kinds)
        for p, kinds in access.items()
    ]


def may(
    user: str,
    access: str,
    topic: str,
    layout: RackLayout = DEFAULT_LAYOUT,
    system: str = DEFAULT_SYSTEM,
    edge_node: str | None = None,
    site_strings: tuple[str, ...] = (),
) -> bool:
    """Whether the ACL of `system` (and `edge_node`, `site_strings`) lets `user` read or
    write `topic` (MQTT filter matching)."""
    return any(
        (g.read if access == "read" else g.write) and _matches(g.pattern, topic)
        for g in grants(user, layout, system, edge_node, site_strings)
    )


def _matches(pattern: str, topic: str) -> bool:
    p, t = pattern.split("/"), topic.split("/")
    return len(p) == len(t) and all(a in ("+", b) for a, b in zip(p, t, strict=True))


def render(
    layout: RackLayout = DEFAULT_LAYOUT,
    system: str = DEFAULT_SYSTEM,
    edge_node: str | None = None,
    site_strings: tuple[str, ...] = (),
) -> str:
    check_edge_node(edge_node)
    node = f"edge node {edge_node}" if edge_node else "any edge node (no --edge-node)"
    site = f"strings {', '.join(site_strings)}" if site_strings else "no strings (--site-strings)"
    lines = [
        "# Broker access control: one user per service and per rack. Generated from",
        "# shared/topics.py by `python -m shared.deploy.acl`; do not edit.",
        f"# System {system}, {layout.racks} racks of {layout.modules_per_rack} modules.",
        f"# Every entry is under {ROOT}/{system}/: no user may touch another system's topics.",
        f"# Sparkplug B: {node}.",
        f"# As a site, {system} has {site}: the site controller's grants under their ids.",
    ]
    for user in users(layout, site_strings):
        lines += ["", f"user {user}"]
        lines += [
            f"topic {g.access} {g.pattern}"
            for g in grants(user, layout, system, edge_node, site_strings)
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.deploy.acl", description=__doc__)
    parser.add_argument("--system", default=env_system(), help="the system id (BMS_SYSTEM)")
    parser.add_argument("--racks", type=int, default=DEFAULT_LAYOUT.racks)
    parser.add_argument("--modules-per-rack", type=int, default=DEFAULT_LAYOUT.modules_per_rack)
    add_edge_node_option(parser)
    parser.add_argument(
        "--site-strings",
        default=os.environ.get(SITE_STRINGS_ENV) or None,
        help="comma-separated system ids of a site's strings (BMS_SITE_STRINGS): --system is "
        "then the site id, and the site controller may read and command those strings",
    )
    args = parser.parse_args(argv)
    try:
        layout = RackLayout(args.racks, args.modules_per_rack)
        text = render(layout, args.system, args.edge_node, site_strings(args.site_strings))
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(text)
    return 0


def site_strings(text: str | None) -> tuple[str, ...]:
    """`--site-strings a,b,c` (or BMS_SITE_STRINGS) as a tuple of system ids."""
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


SITE_STRINGS_ENV = "BMS_SITE_STRINGS"


def env_system() -> str:
    """The system of the deployment: BMS_SYSTEM, as every service reads it."""
    return os.environ.get("BMS_SYSTEM") or DEFAULT_SYSTEM


def add_edge_node_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--edge-node",
        default=os.environ.get(EDGE_NODE_ENV) or None,
        help=f"the bridge's Sparkplug edge node id ({EDGE_NODE_ENV}); the bridge may then "
        "publish only that edge node's topics (default: any edge node of the group)",
    )


if __name__ == "__main__":
    sys.exit(main())
