"""`python -m shared.healthcheck KIND`: exit 0 when this container's service is online.

The container health check of every service. It logs in to the broker with the service's own
`BMS_*` settings (so it also proves the broker is reachable and the secret valid), reads the
retained presence of the system (`service/+/status`), and wants a status of this KIND,
published from this host, that says online: a left-over status of an earlier container, or
one of another container, does not count, and no instance name needs working out (a rack's
comes from its pod ordinal). `--http URL` checks a web endpoint instead (the UI's /healthz).

It runs every few seconds in every container, so it imports no pydantic: the standard
library, paho and msgpack only (about a third of the start-up cost of the settings).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared import SCHEMA_VERSION
from shared.endpoint import (
    DEFAULT_MQTT_PROTOCOL,
    DEFAULT_MQTT_URL,
    MqttEndpoint,
    parse_mqtt_url,
    with_credentials,
)
from shared.racks import rack_credentials

STATUS_FILTER = "bms/v1/{system}/service/+/status"
"""`shared.topics.SERVICE_STATUS.filter(system)`, spelled out to keep the import light."""
STRING_MASTER_PREFIX = "master_core-"
"""`services.master_core.host.STRING_MASTER_PREFIX`, spelled out to keep the import light."""
RETAINED_WAIT_S = 0.5
"""Retained messages follow the SUBACK at once; this is slack for a busy broker."""


@dataclass(frozen=True)
class Target:
    endpoint: MqttEndpoint
    protocol: str
    system: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def target_from_env(env: Mapping[str, str]) -> Target:
    """What `ServiceSettings` would read from these variables (a test keeps them equal)."""

    def opt(name: str) -> str | None:
        return env.get(f"BMS_{name}") or None

    url = opt("MQTT_URL") or DEFAULT_MQTT_URL
    username, password_file = opt("MQTT_USERNAME"), opt("MQTT_PASSWORD_FILE")
    rack, password_dir = opt("RACK"), opt("MQTT_PASSWORD_DIR")
    system = opt("SYSTEM") or "demo"
    hosted = [s.strip() for s in (opt("SYSTEMS") or "").split(",") if s.strip()]
    if hosted:
        # a master process hosting several systems: the first one's presence, and its own
        # user with a password directory (as MasterHostSettings.for_system); the process is
        # one, so are its systems' fates
        system = hosted[0]
        if password_dir:
            username = STRING_MASTER_PREFIX + system
            password_file = str(Path(password_dir) / username)
    elif rack and password_dir:  # a rack of a StatefulSet: as SlaveAgentSettings.endpoint
        username, password_file = rack_credentials(rack, password_dir, socket.gethostname())
    endpoint = with_credentials(parse_mqtt_url(url), username, password_file)
    return Target(
        endpoint, opt("MQTT_PROTOCOL") or DEFAULT_MQTT_PROTOCOL, system,
        opt("MQTT_CA_FILE"), opt("MQTT_CERT_FILE"), opt("MQTT_KEY_FILE"),
    )  # fmt: skip


def online_here(target: Target, kind: str, host: str, timeout_s: float = 4.0) -> str | None:
    """None when a `kind` service on `host` is online on the broker, else what is wrong."""
    endpoint = target.endpoint
    topic_filter = STATUS_FILTER.format(system=target.system)
    seen: list[str] = []
    problems: list[str] = []
    subscribed = threading.Event()
    found = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"health.{target.system}.{kind}.{host[:20]}.{os.getpid()}",
        protocol=mqtt.MQTTv5 if target.protocol == "5" else mqtt.MQTTv311,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set(target.ca_file, target.cert_file, target.key_file)

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            problems.append(f"the broker refused the login: {reason}")
            found.set()
        else:
            c.subscribe(topic_filter, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _m: Any, reasons: Any, _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            problems.append(f"not allowed to read {topic_filter}")
            found.set()
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            status = msgpack.unpackb(msg.payload, raw=False)
        except Exception:  # a bad payload is some other publisher's problem
            return
        if not isinstance(status, dict) or status.get("schema_version") != SCHEMA_VERSION:
            return
        if status.get("kind") == kind and status.get("host") == host:
            seen.append(str(status.get("state")))
            if status.get("state") == "online":
                found.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=10)
    except OSError as exc:
        return f"cannot reach the broker at {endpoint.host}:{endpoint.port}: {exc}"
    client.loop_start()
    try:
        if subscribed.wait(timeout_s):
            found.wait(RETAINED_WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    if problems:
        return problems[0]
    if not subscribed.is_set():
        return f"no answer from the broker at {endpoint.host}:{endpoint.port} in {timeout_s:g} s"
    if found.is_set():
        return None
    if seen:
        return f"the {kind} service on this host is {', '.join(sorted(set(seen)))}"
    return f"no {kind} status from host {host} on {topic_filter}"


def http_ok(url: str, timeout_s: float = 4.0) -> str | None:
    """None when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            code = int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if code == 200 else f"{url} answered {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.healthcheck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", help="the service kind, e.g. master_core or slave_agent")
    parser.add_argument("--http", metavar="URL", help="check that URL answers 200 instead")
    args = parser.parse_args(argv)
    try:
        if args.http:
            problem = http_ok(args.http)
        else:
            target = target_from_env(os.environ)
            problem = online_here(target, args.kind, socket.gethostname())
    except ValueError as exc:  # unusable settings: unhealthy, and say why
        problem = str(exc)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"{args.kind} online")
    return 0


if __name__ == "__main__":
    sys.exit(main())
