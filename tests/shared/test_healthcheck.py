"""The container health check: reads the settings as the services do, and is healthy exactly
when a service of its kind on its host is online on the broker."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.broker import MosquittoBroker, free_port
from shared.bus import MqttBus
from shared.healthcheck import STATUS_FILTER, Target, main, online_here, target_from_env
from shared.settings import ServiceSettings, parse_mqtt_url
from shared.topics import SERVICE_STATUS


def test_status_filter_is_the_registrys() -> None:
    assert STATUS_FILTER.format(system="plant-1") == SERVICE_STATUS.filter("plant-1")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"BMS_MQTT_URL": "mqtt://u:p%40ss@broker:1884", "BMS_SYSTEM": "north"},
        {"BMS_MQTT_URL": "mqtts://broker", "BMS_MQTT_USERNAME": "slave_agent",
         "BMS_MQTT_PASSWORD_FILE": "{secret}", "BMS_MQTT_CA_FILE": "/ca.crt",
         "BMS_MQTT_CERT_FILE": "/c.crt", "BMS_MQTT_KEY_FILE": "/c.key",
         "BMS_MQTT_PROTOCOL": "3.1.1"},
        {"BMS_MQTT_URL": "mqtt://alice@broker", "BMS_MQTT_PASSWORD_FILE": "{secret}",
         "BMS_MQTT_CA_FILE": ""},
    ],
)  # fmt: skip
def test_reads_the_environment_as_the_service_settings_do(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    env = {k: v.format(secret=secret) for k, v in env.items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ServiceSettings()
    target = target_from_env(env)
    assert target == Target(
        settings.endpoint, settings.mqtt_protocol, settings.system,
        settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file,
    )  # fmt: skip


def test_a_statefulset_rack_logs_in_as_the_agent_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.slave_agent.settings import SlaveAgentSettings

    (tmp_path / "slave_agent-rack3").write_text("rack-3-secret\n")
    env = {"BMS_RACK": "ordinal", "BMS_MODULES_PER_RACK": "4",
           "BMS_MQTT_PASSWORD_DIR": str(tmp_path), "BMS_MQTT_URL": "mqtt://bms-broker"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("socket.gethostname", lambda: "bms-rack-3")
    target = target_from_env(env)
    assert (target.endpoint.username, target.endpoint.password) == (
        "slave_agent-rack3", "rack-3-secret"
    )  # fmt: skip
    assert target.endpoint == SlaveAgentSettings().endpoint


def test_online_only_for_a_service_of_its_kind_on_its_host(
    mosquitto: MosquittoBroker, system_id: str
) -> None:
    target = Target(parse_mqtt_url(mosquitto.url), "5", system_id)
    host = socket.gethostname()
    assert online_here(target, "master_core", host) is not None  # nothing yet
    bus = MqttBus(parse_mqtt_url(mosquitto.url), system=system_id, service="m1", kind="master_core")
    assert bus.start(wait_s=10)
    try:
        assert online_here(target, "master_core", host) is None
        assert "slave_agent" in str(online_here(target, "slave_agent", host))
        assert "other-host" in str(online_here(target, "master_core", "other-host"))
    finally:
        bus.stop()
    assert "offline" in str(online_here(target, "master_core", host))


def test_an_unreachable_broker_is_unhealthy() -> None:
    target = Target(parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}"), "5", "demo")
    assert "cannot reach" in str(online_here(target, "master_core", "h", timeout_s=1))


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_http_mode(web: str) -> None:
    assert main(["config_ui", "--http", f"{web}/healthz"]) == 0
    assert main(["config_ui", "--http", f"{web}/broken"]) == 1
    assert main(["config_ui", "--http", f"http://127.0.0.1:{free_port()}/healthz"]) == 1


def test_unusable_settings_are_unhealthy_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMS_MQTT_USERNAME", "master_core")
    monkeypatch.setenv("BMS_MQTT_PASSWORD_FILE", "/nonexistent/password")
    assert main(["master_core"]) == 1


def test_a_master_hosting_several_systems_checks_the_first_as_its_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BMS_SYSTEMS with a password directory: the first system, logged in as its master user,
    as `MasterHostSettings.for_system` does."""
    from services.master_core.host import MasterHostSettings

    (tmp_path / "master_core-s1").write_text("s1-secret\n")
    env = {"BMS_SYSTEMS": "s1,s2", "BMS_MQTT_PASSWORD_DIR": str(tmp_path),
           "BMS_MQTT_URL": "mqtt://broker"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    target = target_from_env(env)
    settings = MasterHostSettings().for_system("s1")
    assert target == Target(settings.endpoint, settings.mqtt_protocol, "s1")
    assert target.endpoint.username == "master_core-s1"
    plain = target_from_env({"BMS_SYSTEMS": "s1,s2", "BMS_SYSTEM": "x"})
    assert plain.system == "s1" and plain.endpoint.username is None
