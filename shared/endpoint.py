"""The broker address and credentials, with the standard library only: shared by the service
settings and by the container health check, which must start fast."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_MQTT_PROTOCOL: Final = "3.1.1"
"""The stack needs no MQTT 5 feature (deadlines travel in payloads, persistent sessions exist
in both), and a 3.1.1 client receives for about half the CPU: paho parses the properties of
every MQTT 5 PUBLISH (bench/bench_bus_receive.py, docs/architecture.md). "5" stays a choice."""


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """`mqtt://[user:pass@]host[:port]`, or `mqtts://` for TLS (default ports 1883 / 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"MQTT URL {url!r} has an invalid port") from exc
    tls = parts.scheme == "mqtts"
    return MqttEndpoint(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def with_credentials(
    endpoint: MqttEndpoint, username: str | None, password_file: str | None
) -> MqttEndpoint:
    """Credentials from the URL, else the user name and the password file (a file keeps the
    secret out of the environment and the process list)."""
    if endpoint.username is None and username:
        endpoint = replace(endpoint, username=username, password=None)
    if endpoint.password is None and password_file:
        endpoint = replace(endpoint, password=read_secret(password_file))
    if endpoint.password is not None and endpoint.username is None:
        raise ValueError("a broker password needs a user name (BMS_MQTT_USERNAME)")
    return endpoint


def read_secret(path: str) -> str:
    """A secret file's content without the trailing newline; a clear error when unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the password file {path}: {exc.strerror}") from exc
    secret = text.rstrip("\r\n")
    if not secret:
        raise ValueError(f"the password file {path} is empty")
    return secret
