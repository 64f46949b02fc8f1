"""The fleet view's bus adapter: a persistent MQTT 3.1.1 session on the central broker.

MQTT 3.1.1 (`clean_session false` under a fixed client id) because the central tier may be
RabbitMQ 3.10, which knows no MQTT 5; its queue there is a quorum queue (docs/deployment.md),
so the QoS 1 summaries and events forwarded while the view is away wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from services.fleet_view.core import FleetView, SiteView
from shared.bus import MqttBus
from shared.deploy.fleet import FLEET_ROOT
from shared.endpoint import MqttEndpoint

SUBSCRIPTION = f"{FLEET_ROOT}/#"
SESSION_EXPIRY_S = 7 * 24 * 3600


class FleetViewService:
    """The core fed from the broker on a thread of its own; `sites()` is thread-safe."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str = "fleet-view",
        web_urls: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        tls_ca_file: str | None = None,
    ) -> None:
        self.core = FleetView(web_urls=dict(web_urls or {}))
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.bus = MqttBus(
            endpoint,
            system="fleet",
            service="fleet_view",
            kind="fleet_view",
            protocol="3.1.1",
            client_id=client_id,
            presence=False,
            session_expiry_s=SESSION_EXPIRY_S,
            tls_ca_file=tls_ca_file,
            max_inbox=100_000,
        )
        self.bus.subscribe_raw(SUBSCRIPTION, self._on_raw, qos=1)
        self._thread = threading.Thread(target=self._run, name="fleet-view", daemon=True)

    def _on_raw(self, topic: str, payload: bytes, _retained: bool) -> None:
        with self._lock:
            self.core.on_message(topic, payload, self._clock())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.2)

    def start(self, wait_s: float | None = None) -> bool:
        self._thread.start()
        return self.bus.start(wait_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.bus.stop()

    def sites(self, now_s: float | None = None) -> list[SiteView]:
        with self._lock:
            return self.core.sites(self._clock() if now_s is None else now_s)
