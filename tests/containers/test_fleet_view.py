"""The fleet view's image (deploy/compose.fleet.yaml) on a real Docker engine, against a
mosquitto standing in for the central broker (tests/containers/fleet-centre.yaml): a site
summary published at the centre as a site's bridge would (`fleet/{site}/{site}/site/summary`,
msgpack) comes back from the view's REST API on the host; the view runs as uid 10001, logs in
with its password file, and its health check follows the broker connection."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.codec import encode
from shared.deploy.credentials import password_file
from shared.deploy.fleet import FLEET_ROOT
from shared.messages import SiteSummary
from tests.containers.conftest import TAG
from tests.containers.stack import ComposeStack
from tests.system.agents import wait_until

pytestmark = pytest.mark.timeout(600)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HERE = Path(__file__).resolve().parent
SITE = "site-a"
TOPIC = f"{FLEET_ROOT}/{SITE}/{SITE}/site/summary"
SITE_URL = "https://site-a.example.net/"
VIEW_PASSWORD = "view-secret-1"
SITE_PASSWORD = "site-secret-1"


def readable_dir(path: Path) -> Path:
    """A bind-mounted directory the containers' own users (mosquitto, uid 10001) can read."""
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def fleet_stack(
    docker_client: docker.DockerClient,
    images: dict[str, float],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ComposeStack]:
    centre = readable_dir(tmp_path_factory.mktemp("centre"))
    (centre / "passwd").write_text(
        password_file({"fleet_view": VIEW_PASSWORD, SITE: SITE_PASSWORD})
    )
    (centre / "mosquitto.conf").write_text(
        "listener 1883\nallow_anonymous false\npassword_file /mosquitto/config/passwd\n"
    )
    secrets = readable_dir(tmp_path_factory.mktemp("fleet-secrets"))
    (secrets / "password").write_text(VIEW_PASSWORD + "\n")
    for f in (*centre.iterdir(), *secrets.iterdir()):
        f.chmod(0o644)
    s = ComposeStack(
        docker_client,
        TAG,
        files=(DEPLOY / "compose.fleet.yaml", HERE / "fleet-centre.yaml"),
        env={
            "FLEET_CENTRE_CONFIG": str(centre),
            "BMS_FLEET_MQTT_URL": "mqtt://centre:1883",
            "BMS_FLEET_SECRETS_DIR": str(secrets),
            "BMS_FLEET_SITE_URLS": f"{SITE}={SITE_URL}",
            "BMS_HOST_FLEET_PORT": "0",
        },
    )
    try:
        s.up()
        s.healthy_after_s = s.wait_healthy(services=("fleet-view",))
        yield s
    finally:
        s.down()


def publish_summaries(stack: ComposeStack, seq: int) -> None:
    """One summary, QoS 1, as the site's bridge forwards it (its own user at the centre)."""
    summary = SiteSummary(seq_epoch=1_800_000_000.0, site=SITE, online=True, strings_total=3,
                          strings_joined=2, soc=61.5, power_w=-4200.0)  # fmt: skip
    payload = encode(summary, source="site_controller", seq=seq, ts=time.time())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"site-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)  # fmt: skip
    client.username_pw_set(SITE, SITE_PASSWORD)
    client.connect(stack.host, stack.port("centre", 1883))
    client.loop_start()
    try:
        client.publish(TOPIC, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_view_lists_a_site_summary_published_at_the_centre(fleet_stack: ComposeStack) -> None:
    view = f"http://{fleet_stack.host}:{fleet_stack.port('fleet-view', 8090)}"
    assert httpx.get(f"{view}/api/sites").json() == []  # nothing published yet

    def listed() -> list[dict[str, Any]]:
        sites: list[dict[str, Any]] = httpx.get(f"{view}/api/sites", timeout=5).json()
        return sites

    # the view is healthy once connected; its subscription follows: publish until seen
    seq = 0
    deadline = time.monotonic() + 60
    while not any(s["site"] == SITE and s["summaries"] for s in listed()):
        assert time.monotonic() < deadline, (listed(), fleet_stack.logs("fleet-view"))
        seq += 1
        publish_summaries(fleet_stack, seq)
        time.sleep(1.0)
    (row,) = listed()
    assert row["site"] == SITE and row["online"] is True, row
    assert (row["strings_total"], row["strings_joined"]) == (3, 2)
    assert row["soc"] == 61.5 and row["power_w"] == -4200.0
    assert row["web_url"] == SITE_URL and row["worst_level"] is None
    page = httpx.get(f"{view}/").text
    assert f'<a href="{SITE_URL}">{SITE}</a>' in page


def test_the_view_runs_unprivileged_and_logs_in_with_its_password_file(
    fleet_stack: ComposeStack,
) -> None:
    container = fleet_stack.container("fleet-view")
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["BMS_MQTT_USERNAME"] == "fleet_view"
    assert env["BMS_MQTT_PASSWORD_FILE"] == "/run/secrets/fleet/password"
    assert "fleet_view" not in env["BMS_MQTT_URL"]  # no secret in the environment


def test_health_follows_the_central_broker(fleet_stack: ComposeStack) -> None:
    """Runs last: it stops the centre."""
    view = f"http://{fleet_stack.host}:{fleet_stack.port('fleet-view', 8090)}"
    assert httpx.get(f"{view}/healthz").status_code == 200
    fleet_stack.compose("stop", "-t", "5", "centre")
    assert wait_until(lambda: httpx.get(f"{view}/healthz").status_code == 503, 30)
    fleet_stack.compose("start", "centre")
    assert wait_until(lambda: httpx.get(f"{view}/healthz").status_code == 200, 60)
