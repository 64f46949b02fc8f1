"""`python -m services.fleet_view` as deployed, with mosquitto as the central broker: a site's
generated bridge forwards to it, the page and the API list the site. The centre is any broker
with QoS 1 and persistent sessions (docs/deployment.md); the RabbitMQ cluster is
tests/system/test_fleet.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.fleet_view.rig import SiteSim, wait_for
from shared.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
ROOT = Path(__file__).resolve().parents[2]


def test_the_fleet_view_lists_a_site_bridged_to_a_mosquitto_centre(tmp_path: Path) -> None:
    centre = MosquittoBroker(persistence_dir=tmp_path / "centre")
    centre.start()
    site = SiteSim("site-a", 2, [centre.port], password="unused", workdir=tmp_path)
    port = free_port()
    view = subprocess.Popen(
        [sys.executable, "-m", "services.fleet_view", "--mqtt-url", centre.url,
         "--site-url", "site-a=https://site-a.example.net/", "--port", str(port)],
        cwd=ROOT,
    )  # fmt: skip
    try:
        site.start()
        wait_for_port("127.0.0.1", port, 30.0, alive=lambda: view.poll() is None)

        def listed() -> list[dict[str, object]]:
            sites: list[dict[str, object]] = httpx.get(f"http://127.0.0.1:{port}/api/sites").json()
            return sites

        # the view subscribes once connected: publish until it has seen the site
        deadline = time.monotonic() + 60
        while not any(s["site"] == "site-a" and s["events"] for s in listed()):
            assert time.monotonic() < deadline, listed()
            site.publish_events()
            site.publish_summary(soc=42.0)
            time.sleep(0.5)
        assert wait_for(lambda: listed()[0]["online"] is True, 30), listed()
        row = listed()[0]
        assert row["soc"] == 42.0 and row["strings_total"] == 2
        assert row["web_url"] == "https://site-a.example.net/"
        # the bridge connected before the view subscribed, and its notification is not
        # retained at the centre: unknown until the link changes (the summary says online)
        assert row["bridge_up"] is None
        page = httpx.get(f"http://127.0.0.1:{port}/").text
        assert '<a href="https://site-a.example.net/">site-a</a>' in page
    finally:
        view.terminate()
        view.wait(10)
        site.close()
        centre.close()
