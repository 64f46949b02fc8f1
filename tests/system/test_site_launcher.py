"""`python -m services --systems 2 --site site1` end to end: the first string's web application
seeds the site configuration in its store and publishes it (the launcher no longer does), the
real site controller acknowledges it and joins both strings; the REST API shows the stored
version and the acknowledgement; the integrations bridge's /metrics has the site's gauges."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.broker import find_mosquitto, free_port
from shared.bus import MqttBus
from shared.messages import SiteConfigMessage, SiteState
from shared.settings import parse_mqtt_url
from shared.topics import SITE_CONFIG, SITE_STATE
from tests.system.agents import ROOT, wait_until

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

PASSWORD = "site-launcher-password"
UI_PORT = 8000  # the first system's web application (services/launcher.py UI_BASE_PORT)
METRICS_PORT = 9108  # the integrations bridge's /metrics (services/launcher.py METRICS_PORT)


def test_the_launchers_site_is_configured_by_its_web_application(tmp_path: Path) -> None:
    secret = tmp_path / "admin-password"
    secret.write_text(PASSWORD)
    port = free_port()
    env = dict(
        os.environ, PYTHONPATH=str(ROOT), BMS_DATA_DIR=str(tmp_path / "data"),
        BMS_UI_ADMIN_PASSWORD_FILE=str(secret),
    )  # fmt: skip
    log = (tmp_path / "launcher.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "--systems", "2", "--site", "site1", "--in-process",
         "--broker-port", str(port), "--exit-after-s", "240"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    seen: dict[str, Any] = {}
    bus = MqttBus(parse_mqtt_url(f"mqtt://127.0.0.1:{port}"), system="site1", service="watch",
                  kind="test")  # fmt: skip
    bus.subscribe(SITE_STATE, lambda d: seen.__setitem__("state", d.message))
    bus.subscribe(SITE_CONFIG, lambda d: seen.__setitem__("config", d.message))
    try:
        assert wait_until(lambda: bus.start(wait_s=2), 60), "no broker"

        def both_joined() -> bool:
            bus.process(0.2)
            state: SiteState | None = seen.get("state")
            return state is not None and state.strings_joined == 2

        assert wait_until(both_joined, 120), (tmp_path / "launcher.log").read_text()[-3000:]

        def site_scraped() -> bool:  # the launcher's bridge follows the site (BMS_SITE)
            try:
                r = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5)
            except httpx.HTTPError:
                return False
            return 'bms_site_strings_joined{site="site1"} 2.0' in r.text

        assert wait_until(site_scraped, 30), (tmp_path / "launcher.log").read_text()[-3000:]
        config: SiteConfigMessage = seen["config"]
        assert config.config.system_ids == ("demo1", "demo2")
        assert config.config.config_version == 1
        client = httpx.Client(base_url=f"http://127.0.0.1:{UI_PORT}", timeout=10)
        r = client.post("/api/session", json={"username": "admin", "password": PASSWORD})
        assert r.status_code == 200, r.text
        client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        # the first login must change the password before anything else
        r = client.post(
            "/api/account/password",
            json={"current_password": PASSWORD, "new_password": "admins-own-password-1"},
        )
        assert r.status_code in (200, 204), r.text
        versions = client.get("/api/site/config/versions").json()
        assert versions["count"] == 1 and versions["versions"][0]["source"] == "seed"

        def acked() -> bool:
            acks = client.get("/api/site/config").json()["acks"]
            return any(a["current"] and a["accepted"] for a in acks)

        assert wait_until(acked, 30)
    finally:
        bus.stop()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        _kill_left_over(tmp_path / "data")


def _kill_left_over(data_dir: Path) -> None:
    """The launcher starts each service in a session of its own (issue 19), out of reach of
    its process group; it stops them, and they die with it (tests/system/test_launcher_stop.py).
    Should that ever fail, any service still running with this test's data directory is
    killed, so that none outlives the test (a left-over integrations bridge held port 9108
    against the container tests of a later run)."""
    marker = f"BMS_DATA_DIR={data_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)
