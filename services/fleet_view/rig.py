"""A fleet on one machine, for the system test and the bench: sites bridged to a central cluster.

Each `SiteSim` is a site's own mosquitto (persistence on) with the bridge configuration of
`shared.deploy.fleet.bridge_conf`, reaching each central node through a fault proxy of its own
(`shared.netfault.TcpFaultProxy`), so one site's link can be cut without touching the others.
A publisher stands in for the site's services: per string a stream of QoS 1 `Event`s on
`bms/v1/{string}/events/site_sim`, and the site controller's `SiteSummary`, each with the
bus's per-topic sequence number and epoch, counted as published. A local subscriber counts
what the site's own broker delivers (the site keeps working while the centre is away).

`FleetRig` adds the central `RabbitCluster` (one broker user per site, one for the view) and
the fleet view (`services.fleet_view.service.FleetViewService`) on node 1.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from services.fleet_view.service import FleetViewService
from services.site_controller.service import SiteService
from services.site_controller.settings import SiteControllerSettings
from shared.broker import MosquittoBroker
from shared.bus import MqttBus
from shared.config import SiteConfig
from shared.deploy.fleet import BridgeSettings, bridge_conf
from shared.endpoint import MqttEndpoint
from shared.messages import Event, SiteConfigMessage
from shared.messages.site import SiteSummary
from shared.netfault import TcpFaultProxy
from shared.rabbitmq import RabbitCluster
from shared.topics import EVENTS, SITE_CONFIG, SITE_SUMMARY

SOURCE = "site_sim"
SUMMARY_PERIOD_S = 2.0
"""The real site controller's summary period here (10 s deployed): more of them in a test."""
VIEW_USER = "fleet_view"


class SiteSim:
    def __init__(
        self,
        site: str,
        strings: int,
        central_ports: list[int],
        *,
        password: str,
        workdir: Path,
        rotate: int = 0,
        keepalive_s: int = 5,
        cafile: str | None = None,
        controller: bool = False,
    ) -> None:
        """`central_ports`: the nodes' MQTT ports, TLS ones with `cafile` (the CA to check
        them against). `controller`: the real site controller publishes the site's summaries
        (and its own events), from the site configuration this publishes; its strings have
        no master here, so they are stale and the summary says 0 joined."""
        self.site = site
        self.strings = [f"{site}-s{i + 1}" for i in range(strings)]
        # rotated so that the sites spread over the nodes: site i starts at node i
        order = central_ports[rotate:] + central_ports[:rotate]
        self.proxies = [TcpFaultProxy("127.0.0.1", port) for port in order]
        conf = bridge_conf(
            BridgeSettings(
                site=site,
                centre=tuple(f"127.0.0.1:{p.port}" for p in self.proxies),
                password=password,
                cafile=cafile,
                keepalive_s=keepalive_s,
                restart_base_s=1,
                restart_cap_s=3,
            )
        )
        self.broker = MosquittoBroker(persistence_dir=workdir / site, extra_config=conf)
        self.published: Counter[str] = Counter()
        """Messages published per stream (`summary`, or a string id): seqs 0..n-1."""
        self.local_received: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._bus: MqttBus | None = None
        self._local: MqttBus | None = None
        self.controller = controller
        self._controller_stop = threading.Event()
        self._controller_thread: threading.Thread | None = None
        self._controller: SiteService | None = None
        self._controller_bus: MqttBus | None = None

    def start(self) -> None:
        self.broker.start()
        endpoint = MqttEndpoint("127.0.0.1", self.broker.port, tls=False)
        self._bus = MqttBus(endpoint, system=self.site, service=SOURCE, kind=SOURCE, presence=False)
        self._local = MqttBus(
            endpoint, system=self.site, service="local_view", kind="local_view", presence=False
        )
        self._local.subscribe_raw(EVENTS.filter(), self._on_local, qos=1)
        self._local.subscribe_raw(SITE_SUMMARY.filter(self.site), self._on_local, qos=1)
        probed = threading.Event()
        probe = f"rig/{self.site}/probe"  # outside bms/v1/: never bridged, never counted
        self._local.subscribe_raw(probe, lambda *_: probed.set(), qos=1)
        for bus in (self._bus, self._local):
            if not bus.start(wait_s=10.0):
                raise RuntimeError(f"{self.site}: no connection to its own broker")
        # Connected is not yet subscribed: a message published before the broker has the
        # local subscriber's filters is not its to count. They go in one SUBSCRIBE with the
        # probe's, so once a probe comes back, they are in place.
        deadline = time.monotonic() + 10.0
        while not probed.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.site}: its local subscriber never got a probe")
            self._bus.publish_raw(probe, b"probe", qos=1, retain=False)
            self._local.process(timeout_s=0.2)
        if self.controller:
            self._start_controller()

    def _start_controller(self) -> None:
        assert self._bus is not None
        config = SiteConfig.model_validate(
            {"site": self.site, "strings": [{"system": system} for system in self.strings]}
        )
        self._bus.publish(SITE_CONFIG, SiteConfigMessage(config=config))
        settings = SiteControllerSettings(
            system=self.site, mqtt_url=self.broker.url, summary_period_s=SUMMARY_PERIOD_S
        )
        bus = MqttBus.from_settings(settings, kind="site_controller")
        self._controller = SiteService(bus, settings)
        self._controller_bus = bus
        if not bus.start(wait_s=10.0):
            raise RuntimeError(f"{self.site}: the site controller did not connect")
        self._controller_thread = threading.Thread(
            target=self._controller.run,
            args=(self._controller_stop.is_set,),
            name=f"site-controller-{self.site}",
            daemon=True,
        )
        self._controller_thread.start()

    def _on_local(self, topic: str, _payload: bytes, _retained: bool) -> None:
        stream = "summary" if SITE_SUMMARY.parse(topic) else topic.split("/")[2]
        with self._lock:
            self.local_received[stream] += 1

    def pump_local(self) -> None:
        """Run the local subscriber's handlers (call from the driving loop)."""
        if self._local is not None:
            self._local.process()

    def publish_events(self, strings: int | None = None) -> None:
        """One event per string (the first `strings` of them)."""
        assert self._bus is not None
        for system in self.strings[:strings]:
            n = self.published[system]
            # a catalogued code (shared/event_codes.py), as the site controller would send
            event = Event(level="info", kind="info", code="site_string_joined", text=f"#{n}")
            self._bus.publish(EVENTS, event, system=system)
            self.published[system] += 1

    def publish_summary(self, soc: float = 55.0, power_w: float = 1200.0) -> None:
        assert self._bus is not None
        summary = SiteSummary(
            seq_epoch=self._bus.started_ts,
            site=self.site,
            online=True,
            strings_total=len(self.strings),
            strings_joined=len(self.strings),
            soc=soc,
            power_w=power_w,
        )
        self._bus.publish(SITE_SUMMARY, summary)
        self.published["summary"] += 1

    def cut(self) -> None:
        """The site's link to the centre is gone: bytes dropped both ways, no FIN, no RST."""
        for proxy in self.proxies:
            proxy.blackhole()

    def restore(self) -> None:
        for proxy in self.proxies:
            proxy.restore()

    def close(self) -> None:
        if self._controller is not None and self._controller_thread is not None:
            self._controller_stop.set()
            self._controller_thread.join(5.0)
            with contextlib.suppress(Exception):
                self._controller.stop()
            if self._controller_bus is not None:
                self._controller_bus.stop()
        for bus in (self._bus, self._local):
            if bus is not None:
                with contextlib.suppress(Exception):
                    bus.stop()
        self.broker.close()
        for proxy in self.proxies:
            proxy.close()


class FleetRig:
    """A cluster of `nodes` RabbitMQ nodes, `sites` sites of `strings` strings, the view."""

    def __init__(
        self,
        *,
        sites: int,
        strings: int,
        workdir: Path,
        cluster: RabbitCluster | None = None,
        nodes: int = 3,
        controller: bool = False,
    ) -> None:
        """`cluster`: one already started (a test fixture's), else one of `nodes` is made;
        `controller`: each site's summaries from the real site controller."""
        self.controller = controller
        self.workdir = workdir
        self._own_cluster = cluster is None
        self.cluster = cluster or RabbitCluster(nodes, base=workdir / "rabbit")
        self.site_ids = [f"site-{chr(ord('a') + i)}" for i in range(sites)]
        self.strings = strings
        self.sites: list[SiteSim] = []
        self.view: FleetViewService | None = None

    def start(self) -> None:
        if self._own_cluster:
            self.cluster.start()
        view_password = "view-secret"
        self.cluster.add_reader(VIEW_USER, view_password)
        node1 = self.cluster.nodes[0]
        self.view = FleetViewService(
            MqttEndpoint("127.0.0.1", node1.mqtt_port, False, VIEW_USER, view_password),
            web_urls={s: f"https://{s}.example.net/" for s in self.site_ids},
        )
        if not self.view.start(wait_s=30.0):
            raise RuntimeError("the fleet view did not connect to the central broker")
        for i, site in enumerate(self.site_ids):
            password = f"{site}-secret"
            self.cluster.add_site_user(site, password)
            sim = SiteSim(
                site,
                self.strings,
                self.cluster.mqtt_ports,
                password=password,
                workdir=self.workdir,
                rotate=i % len(self.cluster.nodes),
                controller=self.controller,
            )
            self.sites.append(sim)
            sim.start()

    def received(self) -> dict[str, Counter[str]]:
        """What the view counted per site and stream (`summary`, or a string id)."""
        assert self.view is not None
        out: dict[str, Counter[str]] = {}
        for view in self.view.sites():
            out[view.site] = Counter({"summary": view.summaries, "events": view.events})
        return out

    def close(self) -> None:
        if self.view is not None:
            with contextlib.suppress(Exception):
                self.view.stop()
        for sim in self.sites:
            sim.close()
        if self._own_cluster:
            self.cluster.close()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll `predicate()` until true or `timeout_s` passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
