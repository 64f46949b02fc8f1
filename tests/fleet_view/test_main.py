"""`python -m services.fleet_view`'s options: the command line, else the container's
environment (deploy/compose.fleet.yaml, deploy/k8s/fleet/)."""

from __future__ import annotations

import pytest

from services.fleet_view.__main__ import parse_args, site_urls

ENV = {
    "BMS_MQTT_URL": "mqtts://centre:8883",
    "BMS_MQTT_USERNAME": "fleet_view",
    "BMS_MQTT_PASSWORD_FILE": "/run/secrets/fleet/password",
    "BMS_MQTT_CA_FILE": "",  # compose's `${BMS_FLEET_CA_FILE:-}` when unset
    "BMS_FLEET_HOST": "0.0.0.0",
    "BMS_FLEET_PORT": "8091",
    "BMS_FLEET_SITE_URLS": "site-a=https://a.example.net/, site-b=http://b:8000/",
}


def test_the_environment_gives_the_defaults() -> None:
    args = parse_args([], ENV)
    assert args.mqtt_url == "mqtts://centre:8883" and args.username == "fleet_view"
    assert args.password_file == "/run/secrets/fleet/password"
    assert args.ca_file is None  # empty is unset
    assert (args.host, args.port, args.client_id) == ("0.0.0.0", 8091, "fleet-view")
    assert site_urls(args.site_url) == {
        "site-a": "https://a.example.net/",
        "site-b": "http://b:8000/",
    }


def test_the_command_line_wins() -> None:
    args = parse_args(["--mqtt-url", "mqtt://other:1883", "--site-url", "c=http://c/"], ENV)
    assert args.mqtt_url == "mqtt://other:1883"
    assert site_urls(args.site_url) == {"c": "http://c/"}


def test_a_broker_url_is_required_somewhere() -> None:
    with pytest.raises(SystemExit):
        parse_args([], {})
    assert parse_args(["--mqtt-url", "mqtt://c:1883"], {}).port == 8090


def test_a_site_url_without_a_site_is_refused() -> None:
    with pytest.raises(SystemExit, match="SITE=URL"):
        site_urls(["https://a.example.net/"])
