"""Broker credentials: from the URL, or a user name setting plus a password file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.bus import MqttBus
from shared.settings import ServiceSettings


def test_user_name_and_password_file_reach_the_bus(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret:with/odd@chars\n")
    settings = ServiceSettings(
        mqtt_url="mqtt://broker:1883", mqtt_username="master_core", mqtt_password_file=str(secret)
    )
    bus = MqttBus.from_settings(settings, kind="master_core")
    assert (bus.endpoint.host, bus.endpoint.port) == ("broker", 1883)
    assert bus.endpoint.username == "master_core"
    assert bus.endpoint.password == "s3cret:with/odd@chars"  # the newline is not part of it
    assert bus._client._username == b"master_core"
    assert bus._client._password == b"s3cret:with/odd@chars"


def test_credentials_in_the_url_still_work_and_take_precedence(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file")
    settings = ServiceSettings(
        mqtt_url="mqtt://alice:p%40ss@broker",
        mqtt_username="bob",
        mqtt_password_file=str(secret),
    )
    endpoint = MqttBus.from_settings(settings, kind="test").endpoint
    assert (endpoint.username, endpoint.password) == ("alice", "p@ss")


def test_a_user_in_the_url_takes_the_password_from_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file")
    settings = ServiceSettings(mqtt_url="mqtt://alice@broker", mqtt_password_file=str(secret))
    assert (settings.endpoint.username, settings.endpoint.password) == ("alice", "from-file")


def test_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "password"
    secret.write_text("env-secret")
    monkeypatch.setenv("BMS_MQTT_USERNAME", "slave_agent")
    monkeypatch.setenv("BMS_MQTT_PASSWORD_FILE", str(secret))
    endpoint = ServiceSettings().endpoint
    assert (endpoint.username, endpoint.password) == ("slave_agent", "env-secret")


def test_no_credentials_by_default() -> None:
    bus = MqttBus.from_settings(ServiceSettings(), kind="test")
    assert bus.endpoint.username is None and bus.endpoint.password is None
    assert bus._client._username is None


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_a_missing_or_empty_password_file_is_refused_at_start_up(
    tmp_path: Path, content: str | None
) -> None:
    secret = tmp_path / "password"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ValidationError, match="password file"):
        ServiceSettings(mqtt_username="u", mqtt_password_file=str(secret))


def test_a_password_without_a_user_name_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("orphan")
    with pytest.raises(ValidationError, match="user name"):
        ServiceSettings(mqtt_password_file=str(secret))


def test_empty_optional_settings_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("USERNAME", "PASSWORD_FILE", "CA_FILE", "CERT_FILE", "KEY_FILE"):
        monkeypatch.setenv(f"BMS_MQTT_{name}", "")
    settings = ServiceSettings()
    assert settings.mqtt_ca_file is None and settings.mqtt_password_file is None
    assert settings.endpoint.username is None
