"""The fleet's broker configuration: each site's bridge to the centre, and the centre's nodes.

A site runs its own mosquitto (the stack works without the centre); a mosquitto bridge
forwards what the centre needs to a central broker (a RabbitMQ cluster with its MQTT plugin),
remapping `bms/v1/...` to `fleet/{site}/...` (mosquitto's `topic` local and remote prefixes,
mosquitto.conf(5) "Bridges"). Store and forward: a persistent bridge session (`cleansession
false`, `local_cleansession false`), QoS 1, and a local queue bounded by count and bytes
(`max_queued_messages`, `max_queued_bytes`: over either, mosquitto drops new messages and the
fleet view counts the sequence gap). With `persistence true` the queue survives a restart of
the site's broker too.

What crosses (`CROSSING`, a table): the events (QoS 1, every one, with its per-source
sequence number) and the site summary (QoS 1, a small message with its own sequence number,
sent at a reduced rate by the site controller). Pack and site state (10 Hz per string,
retained) and cell data stay at the site: they would multiply the central load by about 50
and the summary already carries what a fleet list shows; the fleet view links to the site's
own web application for the detail. The bridge's connection state crosses as mosquitto's
notification (`fleet/{site}/bridge/state`, "1" up, "0" from its will when the link drops).

The bridge speaks MQTT 3.1.1 (`bridge_protocol_version mqttv311`): RabbitMQ 3.10's plugin
knows no MQTT 5. `try_private false`: RabbitMQ refuses mosquitto's bridge protocol flag.
`bridge_outgoing_retain false`: RabbitMQ's retained store is node-local (docs/deployment.md).

    python -m shared.deploy.fleet bridge --site ID --centre HOST:PORT [--centre ...]
        [--password-file F] [--cafile F] [--out FILE]
    python -m shared.deploy.fleet rabbitmq [--out FILE]
    python -m shared.deploy.fleet --check     # the committed deploy/fleet/ files match

deploy/fleet/bridge.conf.example and deploy/fleet/rabbitmq.conf are this module's output for
`EXAMPLE` (tests/deploy/test_fleet_config.py checks they do not drift).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.config import SYSTEM_ID_RE
from shared.messages import Message
from shared.topics import EVENTS, ROOT, SITE_SUMMARY, TopicSpec

FLEET_ROOT = "fleet"
LOCAL_ROOT = f"{ROOT}/"
REPO_DIR = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_DIR / "deploy" / "fleet"
PASSWORD_PLACEHOLDER = "@BRIDGE_PASSWORD@"

MAX_QUEUED_MESSAGES = 200_000
"""The bridge's queue while the centre is unreachable: a summary every 5 s is 17 280 a day,
plus events (tens to thousands a day): a day's outage with room to spare."""
MAX_QUEUED_BYTES = 64 * 1024 * 1024
"""... and at most 64 MiB of it (a summary is about 300 bytes, an event up to 1.3 kB), so a
flood of events cannot take the site broker's memory."""
MAX_INFLIGHT_MESSAGES = 100
"""QoS 1 messages unacknowledged at once per client: a catch-up after an outage is bounded by
round trips, 100 in flight keeps a 100 ms link busy."""


@dataclass(frozen=True)
class Crossing:
    pattern: str
    """Below `bms/v1/` at the site, below `fleet/{site}/` at the centre."""
    qos: int
    why: str


def _below_root(spec: TopicSpec[Message]) -> str:
    return spec.filter().removeprefix(LOCAL_ROOT)


CROSSING: tuple[Crossing, ...] = (
    Crossing(_below_root(EVENTS), EVENTS.qos, "every event with its per-source sequence number"),
    Crossing(_below_root(SITE_SUMMARY), SITE_SUMMARY.qos, "the site summary, every 10 s"),
)


def fleet_prefix(site: str) -> str:
    return f"{FLEET_ROOT}/{_site(site)}/"


def notification_topic(site: str) -> str:
    return f"{fleet_prefix(site)}bridge/state"


def _site(site: str) -> str:
    if not SYSTEM_ID_RE.match(site):
        raise ValueError(f"site id {site!r} must be 1-32 lower-case letters, digits, '-' or '_'")
    return site


@dataclass(frozen=True)
class BridgeSettings:
    site: str
    centre: tuple[str, ...]
    """host:port of every central node; the bridge tries them in turn (round robin)."""
    username: str | None = None
    """The site's user at the centre; default: the site id."""
    password: str = PASSWORD_PLACEHOLDER
    cafile: str | None = "/mosquitto/certs/fleet-ca.crt"
    """TLS to the centre, checked against this CA (None: plain TCP, tests on loopback only)."""
    max_queued_messages: int = MAX_QUEUED_MESSAGES
    max_queued_bytes: int = MAX_QUEUED_BYTES
    keepalive_s: int = 30
    restart_base_s: int = 2
    restart_cap_s: int = 30


EXAMPLE = BridgeSettings(
    site="site-a",
    centre=("fleet-1.example.net:8883", "fleet-2.example.net:8883", "fleet-3.example.net:8883"),
)


def bridge_conf(s: BridgeSettings) -> str:
    """mosquitto configuration to append to the site broker's (MOSQUITTO_EXTRA_CONF)."""
    site = _site(s.site)
    if not s.centre:
        raise ValueError("at least one central address")
    lines = [
        f"# The bridge of site {site} to the fleet centre: generated by",
        "# `python -m shared.deploy.fleet bridge` (shared/deploy/fleet.py says why each line).",
        "# Global: the queue of every client, the bridge's included, is bounded.",
        f"max_queued_messages {s.max_queued_messages}",
        f"max_queued_bytes {s.max_queued_bytes}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        "",
        f"connection fleet-{site}",
        f"address {' '.join(s.centre)}",
        "round_robin true",
        "bridge_protocol_version mqttv311",
        "try_private false",
        "bridge_outgoing_retain false",
        f"remote_clientid fleet-bridge-{site}",
        f"local_clientid fleet-bridge-{site}-local",
        "cleansession false",
        "local_cleansession false",
        "start_type automatic",
        f"restart_timeout {s.restart_base_s} {s.restart_cap_s}",
        f"keepalive_interval {s.keepalive_s}",
        "notifications true",
        f"notification_topic {notification_topic(site)}",
        f"remote_username {s.username or site}",
        f"remote_password {s.password}",
    ]
    if s.cafile is not None:
        lines += [f"bridge_cafile {s.cafile}", "bridge_insecure false"]
    lines += [f"topic {c.pattern} out {c.qos} {LOCAL_ROOT} {fleet_prefix(site)}" for c in CROSSING]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SitePermissions:
    vhost: tuple[str, str, str]
    """configure, write, read (regular expressions on resource names)."""
    topic: tuple[str, str]
    """write, read on amq.topic routing keys (MQTT `/` is `.` there)."""


def site_topic_permissions(site: str) -> SitePermissions:
    """A site's bridge user at the centre: it publishes under `fleet/{site}/` only and reads
    nothing, so one site's credentials cannot write another's topics."""
    mine = f"^{FLEET_ROOT}\\.{re.escape(_site(site))}\\."
    return SitePermissions(
        vhost=(f"^mqtt-subscription-fleet-bridge-{re.escape(site)}", "^amq\\.topic$", "^$"),
        topic=(mine, "^$"),
    )


def rabbitmq_conf(
    *,
    amqp_listener: str = "5672",
    mqtt_listener: str | None = None,
    mqtt_tls_listener: str | None = "8883",
    tls_dir: str = "/etc/rabbitmq/certs",
    log_file: str | None = None,
) -> str:
    """rabbitmq.conf (new-style, RabbitMQ 3.10) of one central node: MQTT over TLS only unless
    a plain listener is asked for (tests on loopback). `tls_dir` holds ca.crt, server.crt and
    server.key (deploy/make-test-certs.sh names them so)."""
    lines = [
        "# A central node of the fleet: generated by `python -m shared.deploy.fleet rabbitmq`.",
        f"listeners.tcp.default = {amqp_listener}",
        "# no anonymous MQTT: every site logs in with its own user",
        "mqtt.allow_anonymous = false",
        "mqtt.vhost = /",
        "mqtt.exchange = amq.topic",
        "# a persistent subscriber's queue (the fleet view's) is a quorum queue: replicated on",
        "# three nodes, it survives the loss of one",
        "mqtt.durable_queue_type = quorum",
        "mqtt.prefetch = 100",
        "# a minority side of a partition stops rather than accepting what it cannot replicate",
        "cluster_partition_handling = pause_minority",
    ]
    if mqtt_listener is not None:
        lines += [f"mqtt.listeners.tcp.default = {mqtt_listener}", "loopback_users = none"]
    else:
        lines.append("mqtt.listeners.tcp = none")
    if mqtt_tls_listener is not None:
        lines += [
            f"mqtt.listeners.ssl.default = {mqtt_tls_listener}",
            f"ssl_options.cacertfile = {tls_dir}/ca.crt",
            f"ssl_options.certfile = {tls_dir}/server.crt",
            f"ssl_options.keyfile = {tls_dir}/server.key",
            "# sites log in with a password; their certificates are not asked for",
            "ssl_options.verify = verify_none",
            "ssl_options.fail_if_no_peer_cert = false",
        ]
    if log_file is not None:
        lines += [f"log.file = {log_file}", "log.console = false"]
    return "\n".join(lines) + "\n"


DEPLOY_FILES: dict[str, Callable[[], str]] = {
    "bridge.conf.example": lambda: bridge_conf(EXAMPLE),
    "rabbitmq.conf": lambda: rabbitmq_conf(),
}


def check() -> list[str]:
    """Names of the committed deploy/fleet/ files that differ from the generator."""
    return [
        name
        for name, render in DEPLOY_FILES.items()
        if not (DEPLOY_DIR / name).is_file() or (DEPLOY_DIR / name).read_text() != render()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.deploy.fleet", description=__doc__)
    parser.add_argument("--check", action="store_true", help="committed files match")
    parser.add_argument("--write", action="store_true", help="rewrite deploy/fleet/")
    sub = parser.add_subparsers(dest="what")
    b = sub.add_parser("bridge", help="a site's bridge configuration")
    b.add_argument("--site", required=True)
    b.add_argument("--centre", action="append", required=True, help="HOST:PORT, repeatable")
    b.add_argument("--username")
    b.add_argument("--password-file", type=Path)
    b.add_argument("--cafile", help="CA of the centre's TLS listener; 'none' for plain TCP")
    b.add_argument("--out", type=Path)
    r = sub.add_parser("rabbitmq", help="a central node's rabbitmq.conf")
    r.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        for name in stale:
            print(f"deploy/fleet/{name} is stale: run python -m shared.deploy.fleet --write")
        return 1 if stale else 0
    if args.write:
        DEPLOY_DIR.mkdir(parents=True, exist_ok=True)
        for name, render in DEPLOY_FILES.items():
            (DEPLOY_DIR / name).write_text(render())
        return 0
    if args.what == "bridge":
        cafile = EXAMPLE.cafile if args.cafile is None else args.cafile
        text = bridge_conf(
            BridgeSettings(
                site=args.site,
                centre=tuple(args.centre),
                username=args.username,
                password=(
                    args.password_file.read_text().strip()
                    if args.password_file
                    else PASSWORD_PLACEHOLDER
                ),
                cafile=None if cafile == "none" else cafile,
            )
        )
    elif args.what == "rabbitmq":
        text = rabbitmq_conf()
    else:
        parser.print_help()
        return 2
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
