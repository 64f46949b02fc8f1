"""The bridge: subscribes to pack state, cells, events and presence of every system and feeds
the JSON mirror, Home Assistant discovery and the metrics collector. With BMS_SITE it also
follows that site's state and its site controller's presence, under the site id: the site is
one more device (JSON mirror, Home Assistant, Prometheus, the Sparkplug edge node's metrics);
its strings stay the systems they are.

Its own system's events (BMS_SYSTEM) come through `shared.event_feed.EventFeed`: each once,
and what it missed (a gap, a reconnect, a restart with BMS_EVENTS_STATE_FILE) fetched from the
master's log with `events_query` (`backfill.py`). Other systems' events (BMS_ALL_SYSTEMS) are
passed on as they come: the broker's ACL of a system lets the bridge ask that system's master
only.

Handlers run in the bridge's own loop (`BusCore.process`) and only copy, encode and publish:
nothing here waits for anyone, and no other service waits for the bridge.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from services.integrations.alerts import AlertPolicy
from services.integrations.backfill import PlaceFile
from services.integrations.commands import HaCommandRelay
from services.integrations.ha import DiscoveryOptions, discovery, site_discovery
from services.integrations.metrics import PackCollector
from services.integrations.mirror import RateGate
from services.integrations.notify import Notifier
from services.integrations.settings import IntegrationsSettings
from services.integrations.sparkplug import EdgeNode
from services.integrations.sparkplug_link import SparkplugLink
from shared.bus import BusCore, Delivery
from shared.codec import EncodeError
from shared.commands import CommandClient
from shared.event_feed import EventFeed
from shared.log_limit import LimitedLog
from shared.messages import CellSnapshot, Event, Message, PackState, ServiceStatus, SiteState
from shared.metrics import service_registry
from shared.topics import (
    EVENTS,
    JSON_EVENTS,
    JSON_PACK_CELLS,
    JSON_PACK_STATE,
    JSON_SERVICE_STATUS,
    JSON_SITE_STATE,
    MASTER,
    PACK_CELLS,
    PACK_STATE,
    SERVICE_STATUS,
    SITE,
    SITE_STATE,
    TopicSpec,
)

log = logging.getLogger("integrations")
STATUS_EVERY_S = 10.0
"""The retained status with its counters is republished this often (health)."""
STALE_AFTER_S = 10.0
"""Pack and site values older than this are no longer exported as metrics (the master and the
site controller publish at 10 Hz; a gap of 10 s means it is gone, and a stale number must not
look current)."""
SPARKPLUG_CHECK_EVERY_S = 1.0
"""How often the Sparkplug edge node looks for a system gone silent."""
HANDLE_BUCKETS_S = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


class IntegrationsBridge:
    def __init__(
        self,
        bus: BusCore,
        settings: IntegrationsSettings,
        *,
        clock: Callable[[], float] = time.time,
        version: str = "",
        commands_bus: BusCore | None = None,
        sparkplug_link: Callable[[EdgeNode], SparkplugLink] | None = None,
    ) -> None:
        """`sparkplug_link`: the MQTT session of the edge node (default: a paho client on
        the bridge's broker with the bridge's login)."""
        self.bus = bus
        self.commands_bus = commands_bus
        """Its own broker connection (user `integrations_commands`), with BMS_HA_COMMANDS."""
        self.settings = settings
        self.clock = clock
        self.states: dict[str, tuple[PackState, float]] = {}
        self.cells: dict[str, tuple[CellSnapshot, float]] = {}
        self.online: dict[tuple[str, str], bool] = {}
        self.state_gate = RateGate(settings.json_state_period_s)
        self.cells_gate = RateGate(settings.json_cells_period_s)
        self.sites: dict[str, tuple[SiteState, float]] = {}
        """The site's (BMS_SITE) latest state, with the time it came."""
        self.site_gate = RateGate(settings.json_state_period_s)
        self.site_announced = False
        self.announced: dict[str, tuple[int, ...] | None] = {}
        """System -> the cell layout its discovery documents were published for."""
        self.ha = DiscoveryOptions(
            prefix=settings.ha_prefix,
            availability_service=settings.ha_availability_service,
            expire_after_s=settings.ha_expire_after_s,
            cell_sensors=settings.ha_cell_sensors,
            commands=settings.ha_commands and commands_bus is not None,
            version=version,
        )
        self._log = LimitedLog(log, every_s=60.0)
        self.sparkplug: SparkplugLink | None = None
        """The bridge's Sparkplug edge node (the site), every system a device of it; it
        connects in `attach`."""
        self._sparkplug_link = sparkplug_link or self._default_link
        self.alerts = AlertPolicy(tuple(settings.alert_rules))
        self.notifier = Notifier(bus.counters) if settings.alert_rules else None
        self.registry: CollectorRegistry = service_registry(bus)
        self.registry.register(PackCollector(self, clock))
        self.feed: EventFeed | None = None
        self.places = (
            PlaceFile(settings.events_state_file, bus.counters)
            if settings.events_state_file
            else None
        )
        self._was_connected = False
        self.handle_s = Histogram(
            "bms_integrations_handle_seconds",
            "Time to handle one message, by topic.",
            ["topic"],
            registry=self.registry,
            buckets=HANDLE_BUCKETS_S,
        )

    # --- wiring -----------------------------------------------------------------------------
    def attach(self) -> None:
        system = "+" if self.settings.all_systems else self.settings.system
        self.bus.subscribe(PACK_STATE, self._timed(PACK_STATE, self.on_state), system=system)
        self.bus.subscribe(PACK_CELLS, self._timed(PACK_CELLS, self.on_cells), system=system)
        own = self.settings.system
        self.feed = EventFeed(
            self.bus,
            lambda event: self.handle_event(own, event),
            commands=CommandClient(self.bus, clock=self.clock),
            clock=self.clock,
        )
        if self.places is not None:
            self.feed.resume(self.places.load())
        if system == "+":
            self.bus.subscribe(EVENTS, self._timed(EVENTS, self.on_event), system=system)
        self.bus.subscribe(
            SERVICE_STATUS, self._timed(SERVICE_STATUS, self.on_status), system=system
        )
        site = self.settings.site
        if site is not None:
            self.bus.subscribe(SITE_STATE, self._timed(SITE_STATE, self.on_site), system=site)
            if system not in ("+", site):  # the site controller's presence, under the site id
                self.bus.subscribe(
                    SERVICE_STATUS, self._timed(SERVICE_STATUS, self.on_status), system=site
                )
        if self.settings.ha_discovery:
            # Home Assistant's birth: it may have lost or dropped what it knew (a restart with
            # its retained discovery documents deleted, a device removed by its user)
            self.bus.subscribe_raw(f"{self.settings.ha_prefix}/status", self.on_ha_status, qos=1)
        if self.commands_bus is not None:
            HaCommandRelay(self.commands_bus, self.clock).attach(system)
        if self.settings.sparkplug and self.sparkplug is None:
            s = self.settings
            node = EdgeNode(
                s.sparkplug_group, s.edge_node, modules=s.sparkplug_modules, site=s.site is not None
            )
            self.sparkplug = self._sparkplug_link(node)
            self.sparkplug.start()
            log.info("Sparkplug edge node %s/%s", node.group, node.edge)

    def _timed(
        self, spec: TopicSpec[Any], handler: Callable[[Delivery[Any]], None]
    ) -> Callable[[Delivery[Any]], None]:
        observe = self.handle_s.labels(spec.name).observe

        def run(delivery: Delivery[Any]) -> None:
            start = time.perf_counter()
            handler(delivery)
            observe(time.perf_counter() - start)

        return run

    # --- handlers ---------------------------------------------------------------------------
    def on_state(self, d: Delivery[PackState]) -> None:
        now = self.clock()
        self.states[d.system] = (d.message, now)
        if self.settings.json_mirror and self.state_gate.due(d.system, now):
            self.mirror(JSON_PACK_STATE, d.message, d.system)
        if self.settings.ha_discovery and d.system not in self.announced:
            self.announce(d.system, None)
        if self.sparkplug is not None:
            self.sparkplug.send(self.sparkplug.node.pack(d.system, d.message, now))

    def on_cells(self, d: Delivery[CellSnapshot]) -> None:
        now = self.clock()
        self.cells[d.system] = (d.message, now)
        if self.settings.json_mirror and self.cells_gate.due(d.system, now):
            self.mirror(JSON_PACK_CELLS, d.message, d.system)
        if self.settings.ha_discovery and self.settings.ha_cell_sensors:
            layout = tuple(len(m.cell_v) for m in d.message.modules)
            if self.announced.get(d.system) != layout:
                self.announce(d.system, layout)
        if self.sparkplug is not None:
            self.sparkplug.send(self.sparkplug.node.cells(d.system, d.message, now))

    def on_site(self, d: Delivery[SiteState]) -> None:
        """The site's state (BMS_SITE): kept for the metrics, mirrored, announced once."""
        now = self.clock()
        self.sites[d.system] = (d.message, now)
        if self.settings.json_mirror and self.site_gate.due(d.system, now):
            self.mirror(JSON_SITE_STATE, d.message, d.system)
        if self.settings.ha_discovery and not self.site_announced:
            self.announce_site(d.system)
        if self.sparkplug is not None:
            self.sparkplug.send(self.sparkplug.node.site_state(d.message, now))

    def on_event(self, d: Delivery[Event]) -> None:
        """Another system's event (the own system's come through the feed, each once)."""
        if self.feed is not None and d.system == self.settings.system:
            return
        self.handle_event(d.system, d.message)

    def handle_event(self, system: str, event: Event) -> None:
        if self.settings.json_mirror:
            self.mirror(JSON_EVENTS, event, system)
        if self.notifier is not None:
            state = self.states.get(system)
            alerts = self.alerts.consider(system, event, state[0] if state else None, self.clock())
            for alert in alerts:
                self.notifier.submit(alert)
            self.bus.counters["alerts_suppressed"] = self.alerts.suppressed
        if self.places is not None and self.feed is not None and system == self.settings.system:
            self.places.save(self.feed.positions())

    def on_ha_status(self, topic: str, payload: bytes, retained: bool) -> None:
        if payload.strip() == b"online":
            self.forget_announcements("Home Assistant's birth")

    def forget_announcements(self, why: str) -> None:
        """Publish every discovery document again, each at its device's next state: a broker
        without persistence loses retained documents when it restarts, and Home Assistant asks
        for them again with its birth message."""
        if not self.settings.ha_discovery or not (self.announced or self.site_announced):
            return
        self.announced.clear()
        self.site_announced = False
        self.bus.counters["ha_discovery_renewals"] += 1
        log.info("Home Assistant discovery: published again at the next states (%s)", why)

    def poll_feed(self) -> None:
        """On each (re)connection fetch what was logged meanwhile, and publish the discovery
        documents again; retry failed fetches."""
        connected = self.bus.connected
        if connected and not self._was_connected:
            self.forget_announcements("connected to the broker")
            if self.feed is not None:
                self.feed.catch_up()
        self._was_connected = connected
        if self.feed is None:
            return
        assert self.feed.commands is not None
        self.feed.commands.expire()
        self.feed.poll()

    def on_status(self, d: Delivery[ServiceStatus]) -> None:
        service = d.params["service"]
        self.online[(d.system, service)] = d.message.state == "online"
        if service == MASTER and d.message.state != "online":
            self.master_gone(d.system)
        if (
            service == SITE
            and d.system == self.settings.site
            and d.message.state != "online"
            and self.sparkplug is not None
        ):
            self.sparkplug.send(self.sparkplug.node.site_gone(self.clock()))
        if self.settings.json_mirror:
            self.mirror(JSON_SERVICE_STATUS, d.message, d.system, instance=service)

    # --- outputs ----------------------------------------------------------------------------
    def mirror(
        self, spec: TopicSpec[Any], message: Message, system: str, **params: str | int
    ) -> None:
        """The message as JSON with its original envelope, unless it is over the topic's limit."""
        topic = spec.topic(system, **params)
        try:
            payload = self.bus.encode_for(topic, message, spec.content_type)
        except EncodeError as exc:
            self.bus.counters["json_encode_errors"] += 1
            self._log.warning(f"encode:{spec.name}", "not mirrored on %s: %s", topic, exc)
            return
        if len(payload) > spec.byte_limit:
            self.bus.counters["json_oversize"] += 1
            self._log.warning(
                f"oversize:{spec.name}", "not mirrored on %s: %d bytes over the %d-byte limit",
                topic, len(payload), spec.byte_limit,
            )  # fmt: skip
            return
        self.bus.counters[f"json.{spec.name}"] += 1
        self.bus.publish_raw(topic, payload, qos=spec.qos, retain=spec.retain, spec=spec)

    def announce(self, system: str, layout: tuple[int, ...] | None) -> None:
        """Home Assistant discovery documents of one system (retained, QoS 1)."""
        docs = discovery(system, self.ha, list(layout) if layout else None)
        for topic, doc in docs:
            payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
            self.bus.publish_raw(topic, payload, qos=1, retain=True)
        self.bus.counters["ha_discovery_published"] += len(docs)
        self.announced[system] = layout
        log.info("Home Assistant discovery: %d entities for system %s", len(docs), system)

    def announce_site(self, site: str) -> None:
        """Home Assistant discovery documents of the site's device (retained, QoS 1)."""
        docs = site_discovery(site, self.ha)
        for topic, doc in docs:
            payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
            self.bus.publish_raw(topic, payload, qos=1, retain=True)
        self.bus.counters["ha_discovery_published"] += len(docs)
        self.site_announced = True
        log.info("Home Assistant discovery: %d entities for site %s", len(docs), site)

    # --- Sparkplug ---------------------------------------------------------------------------
    def _default_link(self, node: EdgeNode) -> SparkplugLink:
        s = self.settings
        return SparkplugLink(
            node, s.endpoint, self.bus.counters, self.clock, protocol=s.mqtt_protocol,
            keepalive_s=s.mqtt_keepalive_s, tls_ca_file=s.mqtt_ca_file,
            tls_cert_file=s.mqtt_cert_file, tls_key_file=s.mqtt_key_file,
        )  # fmt: skip

    def master_gone(self, system: str) -> None:
        """The system's master is offline or silent: its device dies until its next pack
        state (once: the edge node knows whether it is online)."""
        if self.sparkplug is not None:
            self.sparkplug.send(self.sparkplug.node.gone(system, self.clock()))

    def sparkplug_tick(self) -> None:
        if self.sparkplug is None:
            return
        now = self.clock()
        site = self.sites.get(self.settings.site or "")
        if self.sparkplug.node.site_online and (site is None or now - site[1] > STALE_AFTER_S):
            self.sparkplug.send(self.sparkplug.node.site_gone(now))
        for system in list(self.sparkplug.node.devices):
            last = self.states.get(system)
            if self.sparkplug.node.online(system) and (
                last is None or now - last[1] > STALE_AFTER_S
            ):
                self.master_gone(system)

    # --- what the metrics collector reads ---------------------------------------------------
    def fresh_states(self) -> dict[str, tuple[PackState, float]]:
        now = self.clock()
        return {s: v for s, v in self.states.items() if now - v[1] <= STALE_AFTER_S}

    def fresh_cells(self) -> dict[str, CellSnapshot]:
        now = self.clock()
        return {s: c for s, (c, ts) in self.cells.items() if now - ts <= STALE_AFTER_S}

    def presence(self) -> dict[tuple[str, str], bool]:
        return dict(self.online)

    def fresh_sites(self) -> dict[str, tuple[SiteState, float]]:
        now = self.clock()
        return {s: v for s, v in self.sites.items() if now - v[1] <= STALE_AFTER_S}

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
        if self.sparkplug is not None:
            self.sparkplug.stop()

    # --- loop -------------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool]) -> None:
        next_status = time.monotonic() + STATUS_EVERY_S
        next_sparkplug = time.monotonic() + SPARKPLUG_CHECK_EVERY_S
        while not should_stop():
            self.bus.process(timeout_s=0.2, budget_s=0.1)
            if self.sparkplug is not None:
                self.sparkplug.pump()
            if self.sparkplug is not None and time.monotonic() >= next_sparkplug:
                next_sparkplug = time.monotonic() + SPARKPLUG_CHECK_EVERY_S
                self.sparkplug_tick()
            self.poll_feed()
            if self.commands_bus is not None and self.commands_bus is not self.bus:
                self.commands_bus.process(budget_s=0.05)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                if self.bus.connected:
                    self.bus.publish_status()
