"""Settings common to every service: flags and `BMS_*` environment variables."""

from __future__ import annotations

import logging
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config import SYSTEM_ID_RE
from shared.endpoint import (
    DEFAULT_MQTT_PROTOCOL,
    DEFAULT_MQTT_URL,
    MqttEndpoint,
    parse_mqtt_url,
    read_secret,
    with_credentials,
)

__all__ = [
    "DEFAULT_MQTT_PROTOCOL",
    "DEFAULT_MQTT_URL",
    "MqttEndpoint",
    "ServiceSettings",
    "configure_logging",
    "parse_mqtt_url",
    "read_secret",
]


class ServiceSettings(BaseSettings):
    """Base settings of every service; subclasses add their own fields."""

    model_config = SettingsConfigDict(
        env_prefix="BMS_", cli_kebab_case=True, cli_implicit_flags=True, extra="ignore"
    )

    mqtt_url: str = Field(
        DEFAULT_MQTT_URL, description="broker: mqtt://[user:pass@]host:port, mqtts:// for TLS"
    )
    mqtt_protocol: Literal["5", "3.1.1"] = Field(
        DEFAULT_MQTT_PROTOCOL,
        description="MQTT protocol version (3.1.1: half the receive CPU; 5: content type and "
        "message expiry on the wire for third parties)",
    )
    mqtt_username: str | None = Field(
        None, description="broker user name (a user name in the URL takes precedence)"
    )
    mqtt_password_file: str | None = Field(
        None, description="file holding the broker password (a password in the URL wins)"
    )
    mqtt_ca_file: str | None = Field(None, description="CA certificate for mqtts://")
    mqtt_cert_file: str | None = Field(None, description="client certificate for mqtts://")
    mqtt_key_file: str | None = Field(None, description="client key for mqtts://")
    mqtt_keepalive_s: int = Field(
        10,
        ge=2,
        le=600,
        description="MQTT keepalive: a dead connection is noticed within 1.5x this (the bus "
        "pings the broker every half of it)",
    )
    mqtt_client_id: str | None = Field(None, description="client id (default: unique per process)")
    system: str = Field("demo", description="system id: one string of up to 196 series cells")
    instance: str | None = Field(None, description="instance name (default: the service name)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0: off)")
    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on")

    @field_validator(
        "mqtt_username", "mqtt_password_file", "mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose files pass optional settings as `${VAR:-}`, i.e. empty when unset
        return None if value == "" else value

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

    @model_validator(mode="after")
    def _usable_credentials(self) -> Self:
        self.endpoint  # noqa: B018 - refuse unreadable secrets at start-up, not at connect
        return self

    @property
    def endpoint(self) -> MqttEndpoint:
        """The broker address with credentials: from the URL, else the user name and password
        file settings (a file keeps the secret out of the environment and the process list)."""
        return with_credentials(
            parse_mqtt_url(self.mqtt_url), self.mqtt_username, self.mqtt_password_file
        )


def configure_logging(level: str, prefix: str = "") -> None:
    fmt = (
        "%(asctime)s %(levelname)-7s " + (f"{prefix} " if prefix else "") + "%(name)s: %(message)s"
    )
    logging.basicConfig(level=level, format=fmt)
