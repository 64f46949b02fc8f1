"""A fleet through its outages: three sites bridged to a three-node RabbitMQ cluster.

Each site is its own mosquitto with the generated bridge configuration, reaching each node
through a fault proxy of its own (services/fleet_view/rig.py); per site the real site controller
(its summaries every 2 s, its events) and a publisher of QoS 1 events standing in for the
strings' masters (one stream per string, two strings), each with its sequence number.
The fleet view reads them on node 1.

While they publish: node 3 (site C's first address) is killed with SIGKILL, and site B's link is
cut for 60 s (blackholed: no FIN, no RST, as a cut cable). Site B's own broker keeps delivering
locally throughout; the view sees its bridge go down (the bridge's will at the centre). After
the link returns, every QoS 1 event and summary of every site has arrived: counts equal to
what was published, no sequence number missing (a message resent after the reconnect may
arrive after a later one: its gap opens and closes, counted as late). Node 3 then rejoins.

Slow (about 4 min): `pytest -m slow tests/system/test_fleet.py`, in a network namespace.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from services.fleet_view.rig import FleetRig, SiteSim, wait_for
from services.fleet_view.service import FleetViewService
from shared.broker import find_mosquitto
from shared.endpoint import MqttEndpoint
from shared.rabbitmq import RabbitCluster, find_rabbitmq

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CUT_S = 60.0
TICK_S = 0.5
"""Each tick: one event per string; a summary every second tick."""


class Driver:
    """Publishes on every site at a steady rate until stopped; runs the local subscribers."""

    def __init__(self, sites: list[SiteSim]) -> None:
        self.sites = sites
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-driver", daemon=True)
        self.ticks = 0

    def _run(self) -> None:
        next_s = time.monotonic()
        while not self._stop.is_set():
            for sim in self.sites:
                sim.publish_events()
                if not sim.controller and self.ticks % 2 == 0:
                    sim.publish_summary(soc=50.0 + self.ticks % 10)
                sim.pump_local()
            self.ticks += 1
            next_s += TICK_S
            self._stop.wait(max(0.0, next_s - time.monotonic()))
        for sim in self.sites:
            sim.pump_local()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)


def _view(rig: FleetRig, site: str) -> dict[str, object]:
    assert rig.view is not None
    rows = {v.site: v for v in rig.view.sites()}
    v = rows.get(site)
    return {} if v is None else dict(vars(v))


def _all_arrived(rig: FleetRig) -> bool:
    """The view has counted what each site's own broker delivered locally: the publisher's
    events and the site controller's summaries and events. The controller goes on publishing
    after the driver stops: the local side is read up to now first (else a summary it missed
    would keep the two counts apart for good)."""
    for sim in rig.sites:
        sim.pump_local()
        v = _view(rig, sim.site)
        local = dict(sim.local_received)
        summaries = local.pop("summary", 0)
        if v.get("events") != sum(local.values()) or v.get("summaries") != summaries:
            return False
    return True


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_fleet_loses_nothing_through_a_node_kill_and_a_cut_site(
    rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
    rig = FleetRig(sites=3, strings=2, workdir=tmp_path, cluster=rabbit_cluster, controller=True)
    with rig:
        site_b, site_c = rig.sites[1], rig.sites[2]
        driver = Driver(rig.sites)
        driver.start()
        try:
            assert wait_for(lambda: all(_view(rig, s.site).get("online") for s in rig.sites), 60)

            # node 3 dies; site C was bridged to it and moves on to its next address
            rabbit_cluster.nodes[2].kill()
            assert rabbit_cluster.running_nodes() == ["fleet1@localhost", "fleet2@localhost"]
            c_before = _view(rig, site_c.site)["events"]
            assert wait_for(lambda: _view(rig, site_c.site)["events"] != c_before, 60), (
                "site C's events did not come through another node"
            )

            # site B's link is cut; its own broker keeps delivering to its local subscriber
            site_b.cut()
            cut_at = time.monotonic()
            local_before = sum(site_b.local_received.values())
            assert wait_for(lambda: _view(rig, site_b.site)["bridge_up"] is False, 30), (
                "the view did not see site B's bridge go down"
            )
            assert _view(rig, site_b.site)["online"] is False
            time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
            held_back = sum(n for k, n in site_b.published.items() if k != "summary")
            seen_in_cut = _view(rig, site_b.site)["events"]
            local_in_cut = sum(site_b.local_received.values()) - local_before
            site_b.restore()
            restored_at = time.monotonic()
            # the cut was real: site B's events stopped reaching the centre, not the site
            assert (
                isinstance(seen_in_cut, int) and held_back - seen_in_cut >= 0.8 * 2 * CUT_S / TICK_S
            )
            assert local_in_cut >= 0.8 * 2 * CUT_S / TICK_S  # the events alone

            def b_caught_up() -> bool:
                v = _view(rig, site_b.site)
                return isinstance(v["events"], int) and v["events"] >= held_back

            assert wait_for(b_caught_up, 120), "site B's queued events did not arrive"
            catch_up_s = time.monotonic() - restored_at
            time.sleep(5.0)
            assert all(_view(rig, s.site)["online"] for s in rig.sites)
        finally:
            driver.stop()

        arrived = wait_for(lambda: _all_arrived(rig), 120)
        for sim in rig.sites:
            print(sim.site, dict(sim.published), dict(sim.local_received), _view(rig, sim.site))
        assert arrived
        for sim in rig.sites:
            v = _view(rig, sim.site)
            assert v["missing"] == 0, v
            # a gap seen is a message that came late (a resend after the reconnect), not a loss
            assert v["late"] >= v["gaps"], v
            # the local side delivered everything the publisher sent, and the controller's
            for stream, n in sim.published.items():
                assert sim.local_received[stream] == n, (stream, dict(sim.local_received))
            assert sim.local_received["summary"] >= 30, dict(sim.local_received)
        print(
            f"\nfleet: {driver.ticks} ticks, delivered at each site and at the centre "
            f"{ {s.site: dict(s.local_received) for s in rig.sites} }, "
            f"duplicates { {s.site: _view(rig, s.site)['duplicates'] for s in rig.sites} }, "
            f"late { {s.site: _view(rig, s.site)['late'] for s in rig.sites} }, "
            f"site B caught up {catch_up_s:.1f} s after its link returned"
        )

        # the killed node comes back into the cluster
        rabbit_cluster.nodes[2].start()
        rabbit_cluster.nodes[2].wait_mqtt()
        rabbit_cluster.wait_running(3)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    script = Path(__file__).resolve().parents[2] / "deploy" / "make-test-certs.sh"
    subprocess.run(["bash", str(script), str(out)], check=True, capture_output=True)
    return out


@pytest.mark.skipif(
    find_mosquitto() is None or find_rabbitmq() is None or shutil.which("openssl") is None,
    reason="needs mosquitto, rabbitmq-server and openssl",
)
def test_a_site_bridges_over_tls_and_refuses_a_centre_it_cannot_verify(
    certs: Path, tmp_path: Path
) -> None:
    """The generated bridge with `bridge_cafile` against a node's TLS listener (the test CA of
    deploy/make-test-certs.sh): a site checking the centre against its CA gets through; one
    given another CA never connects, so nothing crosses."""
    other_ca = tmp_path / "other"
    script = Path(__file__).resolve().parents[2] / "deploy" / "make-test-certs.sh"
    subprocess.run(["bash", str(script), str(other_ca)], check=True, capture_output=True)
    with RabbitCluster(1, base=tmp_path / "rabbit", tls_dir=certs) as cluster:
        node = cluster.nodes[0]
        assert node.ports.mqtts is not None
        cluster.add_reader("fleet_view", "v-pw")
        view = FleetViewService(
            MqttEndpoint("127.0.0.1", node.mqtt_port, False, "fleet_view", "v-pw")
        )
        assert view.start(wait_s=30.0)
        sims = []
        try:
            for site, ca in (("site-a", certs / "ca.crt"), ("site-b", other_ca / "ca.crt")):
                cluster.add_site_user(site, f"{site}-pw")
                sim = SiteSim(
                    site, 1, [node.ports.mqtts], password=f"{site}-pw",
                    workdir=tmp_path, cafile=str(ca),
                )  # fmt: skip
                sims.append(sim)
                sim.start()
            for _ in range(5):
                for sim in sims:
                    sim.publish_events()
                    sim.publish_summary()

            def rows() -> dict[str, tuple[int, int]]:
                return {v.site: (v.events, v.summaries) for v in view.sites()}

            assert wait_for(lambda: rows().get("site-a") == (5, 5), 60), rows()
            time.sleep(5.0)  # site B's bridge has retried (1-3 s) and failed its handshake
            assert "site-b" not in rows()
            assert "certificate verify failed" in sims[1].broker.log_tail(200)

            # site B's own side still works: its local subscriber got everything
            def b_local() -> int:
                sims[1].pump_local()  # one pass takes what has arrived so far
                return sum(sims[1].local_received.values())

            assert wait_for(lambda: b_local() == 10, 20), sims[1].local_received
        finally:
            view.stop()
            for sim in sims:
                sim.close()
