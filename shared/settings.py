"""Settings common to every service: flags and `BMS_*` environment variables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config import SYSTEM_ID_RE

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"


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


class ServiceSettings(BaseSettings):
    """Base settings of every service; subclasses add their own fields."""

    model_config = SettingsConfigDict(
        env_prefix="BMS_", cli_kebab_case=True, cli_implicit_flags=True, extra="ignore"
    )

    mqtt_url: str = Field(
        DEFAULT_MQTT_URL, description="broker: mqtt://[user:pass@]host:port, mqtts:// for TLS"
    )
    mqtt_protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    mqtt_ca_file: str | None = Field(None, description="CA certificate for mqtts://")
    mqtt_cert_file: str | None = Field(None, description="client certificate for mqtts://")
    mqtt_key_file: str | None = Field(None, description="client key for mqtts://")
    mqtt_keepalive_s: int = Field(10, ge=2, le=600, description="MQTT keepalive")
    mqtt_client_id: str | None = Field(None, description="client id (default: unique per process)")
    system: str = Field("demo", description="system id: one string of up to 196 series cells")
    instance: str | None = Field(None, description="instance name (default: the service name)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")

    @field_validator("mqtt_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        parse_mqtt_url(value)
        return value

    @field_validator("system")
    @classmethod
    def _valid_system(cls, value: str) -> str:
        if not SYSTEM_ID_RE.match(value):
            raise ValueError("must be 1-32 lower-case letters, digits, '-' or '_'")
        return value

    @property
    def endpoint(self) -> MqttEndpoint:
        return parse_mqtt_url(self.mqtt_url)


def configure_logging(level: str, prefix: str = "") -> None:
    fmt = (
        "%(asctime)s %(levelname)-7s " + (f"{prefix} " if prefix else "") + "%(name)s: %(message)s"
    )
    logging.basicConfig(level=level, format=fmt)
