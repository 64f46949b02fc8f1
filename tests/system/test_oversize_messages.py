"""Oversize payloads on a real mosquitto against a real master process: the broker drops what
is over its `message_size_limit`, the master refuses what is over the topic's byte limit before
decoding it (counted, logged once), and pack state keeps coming at 10 Hz meanwhile."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared import SCHEMA_VERSION
from shared.broker import MosquittoBroker
from shared.bus import Delivery, MqttBus
from shared.config import SystemConfig
from shared.messages import PackState, ServiceStatus
from shared.settings import parse_mqtt_url
from shared.topics import (
    BROKER_MESSAGE_SIZE_LIMIT,
    CONFIG,
    PACK_STATE,
    SERVICE_STATUS,
    SLAVE_TELEMETRY,
)

from .agents import ServiceProcess, publish_config, wait_until

BURST = 10


def telemetry_bytes(flags: int) -> bytes:
    data = {
        "schema_version": SCHEMA_VERSION, "source": "intruder", "seq": 1, "ts": time.time(),
        "module": 0, "mode": "working", "sample_ts": time.time(), "cell_mv": [3700] * 4,
        "cell_flags": [9] * flags, "balancing": [False] * 4, "temp_c": [25.0] * 2,
        "temp_flags": [0] * 2,
    }  # fmt: skip
    return bytes(msgpack.packb(data, use_bin_type=True))


class Watch:
    """Pack state arrival times, the master's counters, and the sizes of raw telemetry."""

    def __init__(self, url: str, system: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=system, service="watch", kind="test")
        self.state_times: list[float] = []
        self.counters: dict[str, int] = {}
        self.raw_sizes: list[int] = []
        self.bus.subscribe(PACK_STATE, self._state)
        self.bus.subscribe(SERVICE_STATUS, self._status, service="master_core")
        self.bus.subscribe_raw(SLAVE_TELEMETRY.filter(system), self._raw)
        self.stop = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.bus.start(wait_s=10)

    def _pump(self) -> None:
        while not self.stop.is_set():
            self.bus.process(timeout_s=0.05)

    def _state(self, d: Delivery[PackState]) -> None:
        self.state_times.append(d.received_ts)

    def _status(self, d: Delivery[ServiceStatus]) -> None:
        self.counters = dict(d.message.counters)

    def _raw(self, _topic: str, payload: bytes, _retained: bool) -> None:
        self.raw_sizes.append(len(payload))

    def close(self) -> None:
        self.stop.set()
        self.bus.stop(timeout_s=0.5)


@pytest.fixture
def master(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    config = SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    ui = publish_config(mosquitto.url, config)
    proc = ServiceProcess(
        "master_core", mosquitto.url, system_id, tmp_path, data_dir=str(tmp_path / "data")
    )
    watch = Watch(mosquitto.url, system_id)
    try:
        assert wait_until(lambda: len(watch.state_times) >= 5, 30), proc.log()
        yield {"proc": proc, "watch": watch}
    finally:
        watch.close()
        proc.stop()
        ui.stop()


def test_oversize_telemetry_is_refused_unread_and_pack_state_keeps_coming(
    master: dict[str, Any], mosquitto: MosquittoBroker, system_id: str
) -> None:
    watch: Watch = master["watch"]
    proc: ServiceProcess = master["proc"]
    over_topic = telemetry_bytes(100_000)  # over the topic limit, under the broker's
    over_broker = telemetry_bytes(900_000)  # the message: over the broker's limit
    assert SLAVE_TELEMETRY.byte_limit < len(over_topic) < BROKER_MESSAGE_SIZE_LIMIT
    assert len(over_broker) > BROKER_MESSAGE_SIZE_LIMIT
    # one byte per element: just past the configuration's limit (which grows with what a
    # configuration may hold, e.g. OCV branches per temperature)
    topology = {"module_cell_counts": [1] * (CONFIG.byte_limit + 64)}
    config_list = bytes(
        msgpack.packb({"schema_version": SCHEMA_VERSION, "config": {"topology": topology}})
    )
    assert CONFIG.byte_limit < len(config_list) < BROKER_MESSAGE_SIZE_LIMIT

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"intruder-{system_id}")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        start = time.time()
        infos = []
        for _ in range(BURST):
            infos.append(client.publish(SLAVE_TELEMETRY.topic(system_id, module=0), over_topic, 1))
            infos.append(client.publish(SLAVE_TELEMETRY.topic(system_id, module=1), over_broker, 1))
        infos.append(client.publish(CONFIG.topic(system_id), config_list, 1))
        for info in infos:
            info.wait_for_publish(10)
        time.sleep(2.0)  # pack state after the burst
        end = time.time()
    finally:
        client.loop_stop()
        client.disconnect()

    # the master refused every one that reached it, without decoding, and said so once
    assert wait_until(
        lambda: (
            watch.counters.get("payload_oversize.slave_telemetry", 0) >= BURST
            and watch.counters.get("payload_oversize.config", 0) >= 1
        ),
        20,
    ), (watch.counters, proc.log()[-2000:])
    assert proc.proc.poll() is None, proc.log()
    lines = [ln for ln in proc.log().splitlines() if "refused payload" in ln]
    assert sum("on slave_telemetry" in ln for ln in lines) == 1, lines
    # the broker forwarded the 100 KB messages but dropped the 900 KB ones
    assert wait_until(lambda: watch.raw_sizes.count(len(over_topic)) >= BURST, 10)
    assert len(over_broker) not in watch.raw_sizes

    # pack state kept its 10 Hz: no gap near a second while the burst was handled
    times = [t for t in watch.state_times if start - 0.5 <= t <= end]
    assert len(times) >= 10
    worst = max(b - a for a, b in itertools.pairwise(times))
    assert worst < 1.0, worst
