"""Prometheus metrics of a service: its bus counters, and the histograms it adds.

`/metrics` speaks the Prometheus text format and, when the scraper asks for it (Prometheus does
by default), OpenMetrics (prometheus-client's exposition, https://prometheus.io/docs/specs/om/
open_metrics_spec/). Counters are read from the bus when scraped, so counting costs the service
nothing between scrapes. Metrics are never on the protection path: a port that cannot be bound
is logged and the service runs on without them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.bus import BusCore
from shared.settings import ServiceSettings

log = logging.getLogger("shared.metrics")

BUS_COUNTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "bms_bus_received": (("received",), "Messages taken from the inbox."),
    "bms_bus_refused": (("payload_errors",), "Payloads refused (oversize, undecodable, invalid)."),
    "bms_bus_published": (("published",), "Messages handed to the broker connection."),
    "bms_bus_dropped": (
        ("inbox_dropped", "publish_dropped_queue_full", "publish_dropped_offline"),
        "Messages dropped: inbox full, outgoing queue full, or QoS 0 while offline.",
    ),
    "bms_bus_reconnects": (("disconnects",), "Broker connections lost (each is retried)."),
    "bms_bus_handler_errors": (("handler_errors",), "Handlers that raised."),
    "bms_bus_overruns": (("overruns",), "Loop slots missed: the service ran late."),
}
"""Named families over the bus counters; every counter is also in `bms_service_counter`."""


class BusCollector(Collector):
    """The bus counters of one service, read at scrape time."""

    def __init__(self, bus: BusCore) -> None:
        self.bus = bus

    def collect(self) -> Iterable[Metric]:
        counters = dict(self.bus.counters)
        labels = [self.bus.service, self.bus.kind]
        for name, (keys, text) in BUS_COUNTERS.items():
            family = CounterMetricFamily(name, text, labels=["service", "kind"])
            family.add_metric(labels, float(sum(counters.get(k, 0) for k in keys)))
            yield family
        every = CounterMetricFamily(
            "bms_service_counter",
            "Every health counter of the service, by name (as in its retained status).",
            labels=["service", "kind", "counter"],
        )
        for key in sorted(counters):
            every.add_metric([*labels, key], float(counters[key]))
        yield every


def service_registry(bus: BusCore) -> CollectorRegistry:
    """A registry with the service's bus counters; the service registers its histograms."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BusCollector(bus))
    return registry


class MetricsServer:
    """`/metrics` on a port of its own (a daemon thread)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """False (logged) when the port cannot be bound: metrics are not worth a crash."""
        if self.port == 0:
            return False
        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%d (%s); running without", self.host,
                      self.port, exc)  # fmt: skip
            return False
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_metrics(bus: BusCore, settings: ServiceSettings, *collectors: Collector) -> MetricsServer:
    """The service's bus counters and `collectors` (its histograms) on BMS_METRICS_PORT, when
    set; the caller stops the server when it stops."""
    registry = service_registry(bus)
    for collector in collectors:
        registry.register(collector)
    server = MetricsServer(registry, settings.metrics_host, settings.metrics_port)
    server.start()
    return server
