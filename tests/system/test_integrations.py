"""The integrations bridge as its own process on mosquitto, each integration checked by an
independent consumer: a plain paho client validating the JSON mirror against the published
AsyncAPI schema (jsonschema), Home Assistant's discovery documents against
ha-mqtt-discoverable's models with their templates rendered over the mirror (Jinja2), and a
real Prometheus scraping `/metrics`."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from services.integrations.ha import (
    BINARY_SENSORS,
    SENSORS,
    SITE_BINARY_SENSORS,
    SITE_SENSORS,
    site_node_id,
)
from shared.broker import MosquittoBroker, free_port, wait_for_port
from shared.bus import MqttBus
from shared.messages import CellLocation, CellSnapshot, Event, ModuleCells, SiteState
from shared.settings import parse_mqtt_url
from shared.topics import COMMAND, EVENTS, JSON_PACK_STATE, PACK_CELLS, PACK_STATE, SITE_STATE
from tests.deploy.test_grafana import queries as dashboard_queries
from tests.factories import pack_state, site_state
from tests.integrations.test_bridge import schema_of
from tests.integrations.test_ha import validate

from .agents import ServiceProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Consumer:
    """A third party: plain paho, JSON only, no code of the stack."""

    def __init__(self, broker: MosquittoBroker, *filters: str) -> None:
        self.got: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port)
        for f in filters:
            self.c.subscribe(f, qos=1)
        self.c.loop_start()

    def _on(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got[msg.topic].append((time.monotonic(), json.loads(msg.payload)))

    def on(self, topic: str) -> list[Any]:
        with self.lock:
            return [d for _t, d in self.got[topic]]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def snapshot() -> CellSnapshot:
    return CellSnapshot(
        modules=[
            ModuleCells(module=m, fresh=True, cell_v=[3.30, 3.31, 3.32], cell_flags=[0, 0, 0],
                        balancing=[False] * 3, temp_c=[24.5], temp_flags=[0])
            for m in range(2)
        ]
    )  # fmt: skip


class Master:
    """A stand-in master publishing state at 10 Hz and cells at 2 Hz (values the test knows)."""

    def __init__(self, broker: MosquittoBroker, system: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(broker.url), system=system, service="master_core",
                           kind="master_core")  # fmt: skip
        assert self.bus.start(wait_s=10)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.1):
            self.bus.publish(PACK_STATE, pack_state(soc=61.5, voltage=52.0, current=-4.0,
                                                    alarms=["cell_ov"], temp_min_c=20.0,
                                                    temp_max_c=25.0, temp_avg_c=22.0))  # fmt: skip
            if i % 5 == 0:
                self.bus.publish(PACK_CELLS, snapshot())
            i += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.bus.stop()


class SiteController:
    """A stand-in site controller publishing its site's state at 10 Hz (`state`, which the
    test may change)."""

    def __init__(self, broker: MosquittoBroker, site: str) -> None:
        self.state: SiteState = site_state(site=site)
        self.bus = MqttBus(parse_mqtt_url(broker.url), system=site, service="site_controller",
                           kind="site_controller")  # fmt: skip
        assert self.bus.start(wait_s=10)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self.bus.publish(SITE_STATE, self.state)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.bus.stop()


def site_of(system_id: str) -> str:
    """The site the bridge follows (BMS_SITE), an id of its own beside the system's."""
    return f"{system_id}-site"


@pytest.fixture
def bridge(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, int]]:
    port = free_port()
    proc = ServiceProcess(
        "integrations", mosquitto.url, system_id, tmp_path, all_systems="false",
        json_state_period_s="0.5", ha_discovery="true", ha_cell_sensors="true",
        metrics_port=str(port), site=site_of(system_id),
    )  # fmt: skip
    try:
        yield proc, port
    finally:
        assert proc.stop() == 0, proc.log()
        assert "Traceback" not in proc.log(), proc.log()


def test_json_mirror_and_home_assistant_discovery(
    mosquitto: MosquittoBroker, system_id: str, bridge: tuple[ServiceProcess, int]
) -> None:
    proc, _port = bridge
    node = f"bms_{system_id}"
    consumer = Consumer(mosquitto, f"bms/v1/{system_id}/json/#", f"homeassistant/+/{node}/+/config")
    master = Master(mosquitto, system_id)
    base = f"bms/v1/{system_id}/json"
    try:
        assert wait_until(lambda: len(consumer.on(f"{base}/pack/state")) >= 2, 20), proc.log()
        master.bus.publish(EVENTS, Event(level="alarm", kind="raise", code="cell_ov", text="hi"))
        started = time.monotonic()
        time.sleep(3.0)
        window = [t for t, _d in consumer.got[f"{base}/pack/state"] if t >= started]
        # 10 Hz in, one per 0.5 s out: 6 in 3 s, give or take the edges and a loaded machine
        assert 4 <= len(window) <= 7, len(window)
        assert wait_until(lambda: len(consumer.on(f"{base}/events")) == 1, 10)
        states = consumer.on(f"{base}/pack/state")
        checks = {
            "PackState": states,
            "CellSnapshot": consumer.on(f"{base}/pack/cells"),
            "Event": consumer.on(f"{base}/events"),
            "ServiceStatus": consumer.on(f"{base}/service/master_core/status"),
        }
        for name, items in checks.items():
            assert items, name
            for item in items:
                jsonschema.validate(item, schema_of(name))
        assert states[-1]["soc"] == 61.5 and states[-1]["source"] == "master_core"
        assert consumer.on(f"{base}/events")[0]["code"] == "cell_ov"

        # Home Assistant: every entity announced, valid, and its template reads the mirror
        expected = len(SENSORS) + len(BINARY_SENSORS) + 6  # + one per cell (2 x 3)
        configs = lambda: {t: v[-1][1] for t, v in consumer.got.items() if t.endswith("/config")}  # noqa: E731
        assert wait_until(lambda: len(configs()) == expected, 10), sorted(configs())
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        rendered = {}
        for topic, doc in configs().items():
            component, obj = topic.split("/")[1], topic.split("/")[3]
            validate(component, doc)
            source = consumer.on(doc["state_topic"])[-1]
            rendered[obj] = env.from_string(doc["value_template"]).render(value_json=source)
        assert rendered["soc"] == "61.5" and rendered["power"] == "-208.0"
        assert rendered["alarm_active"] == "ON" and rendered["fault_active"] == "OFF"
        assert float(rendered["cell_01_02"]) == 3.32

        # availability follows the master's presence
        soc_doc = configs()[f"homeassistant/sensor/{node}/soc/config"]
        avail = env.from_string(soc_doc["availability_template"])
        status = lambda: consumer.on(soc_doc["availability_topic"])[-1]  # noqa: E731
        assert avail.render(value_json=status()) == soc_doc["payload_available"]
        master.close()
        assert wait_until(
            lambda: avail.render(value_json=status()) == soc_doc["payload_not_available"], 10
        )
    finally:
        master.stop.set()
        consumer.close()


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_the_site_in_the_json_mirror_home_assistant_and_metrics(
    mosquitto: MosquittoBroker, system_id: str, bridge: tuple[ServiceProcess, int]
) -> None:
    proc, port = bridge
    site = site_of(system_id)
    node = site_node_id(site)
    consumer = Consumer(mosquitto, f"bms/v1/{site}/json/#", f"homeassistant/+/{node}/+/config")
    controller = SiteController(mosquitto, site)
    mirror = f"bms/v1/{site}/json/site/state"
    try:
        assert wait_until(lambda: len(consumer.on(mirror)) >= 2, 20), proc.log()
        for item in consumer.on(mirror):
            jsonschema.validate(item, schema_of("SiteState"))
        assert consumer.on(mirror)[-1]["source"] == "site_controller"

        # Home Assistant: the site's device, every entity valid, its templates over the mirror
        expected = len(SITE_SENSORS) + len(SITE_BINARY_SENSORS)
        configs = lambda: {t: v[-1][1] for t, v in consumer.got.items() if t.endswith("/config")}  # noqa: E731
        assert wait_until(lambda: len(configs()) == expected, 10), sorted(configs())
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)

        def rendered() -> dict[str, str]:
            out = {}
            for topic, doc in configs().items():
                assert doc["state_topic"] == mirror and doc["device"]["identifiers"] == [node]
                source = consumer.on(doc["state_topic"])[-1]
                out[topic.split("/")[3]] = env.from_string(doc["value_template"]).render(
                    value_json=source
                )
            return out

        for topic, doc in configs().items():
            validate(topic.split("/")[1], doc)
        shown = rendered()
        assert shown["soc"] == "41.5" and shown["power"] == "-602.6"
        assert shown["strings_joined"] == "2" and shown["strings_total"] == "3"
        assert shown["alarm_active"] == "ON" and shown["full_charge_requested"] == "OFF"
        assert shown["operation"] == "connect" and shown["since_anchor"] == "3600.0"

        # Prometheus: the site's gauges, labelled by site
        got = scrape(port)
        where = (("site", site),)
        assert got["bms_site_soc_percent"][where] == 41.5
        assert got["bms_site_strings_joined"][where] == 2.0
        assert got["bms_site_charge_current_limit_amperes"][where] == 75.5

        # no string joined: unknown in Home Assistant, no sample in Prometheus, never 0
        controller.state = site_state(site=site, soc=None, voltage_v=None, current_a=None,
                                      power_w=None, strings_joined=0)  # fmt: skip
        assert wait_until(lambda: consumer.on(mirror)[-1]["soc"] is None, 10)
        shown = rendered()
        assert shown["soc"] == shown["voltage"] == shown["power"] == "None"
        assert shown["strings_joined"] == "0"
        got = scrape(port)
        assert "bms_site_soc_percent" not in got and "bms_site_power_watts" not in got
        assert got["bms_site_strings_joined"][where] == 0.0

        # availability follows the site controller's presence, mirrored under the site id
        soc_doc = configs()[f"homeassistant/sensor/{node}/soc/config"]
        avail = env.from_string(soc_doc["availability_template"])
        status = lambda: consumer.on(soc_doc["availability_topic"])[-1]  # noqa: E731
        assert avail.render(value_json=status()) == soc_doc["payload_available"]
        controller.close()
        assert wait_until(
            lambda: avail.render(value_json=status()) == soc_doc["payload_not_available"], 10
        )
    finally:
        controller.stop.set()
        consumer.close()


def test_discovery_comes_back_after_a_broker_restart_and_at_home_assistants_birth(
    restartable_mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    """A broker without persistence forgets the retained documents when it restarts; Home
    Assistant asks for them again with its birth message (here after a user deleted them)."""
    broker = restartable_mosquitto
    site = site_of(system_id)
    filters = (
        f"homeassistant/+/bms_{system_id}/+/config",
        f"homeassistant/+/{site_node_id(site)}/+/config",
    )
    proc = ServiceProcess(
        "integrations", broker.url, system_id, tmp_path, all_systems="false",
        ha_discovery="true", site=site, metrics_port=str(free_port()),
    )  # fmt: skip
    master, controller = Master(broker, system_id), SiteController(broker, site)
    consumers: list[Consumer] = []
    """Subscribers still connected at the end."""

    def documents() -> set[str]:
        """The documents retained now, as a subscriber arriving now gets them."""
        consumer = Consumer(broker, *filters)
        time.sleep(1.0)  # the retained ones arrive at once
        consumer.close()
        return set(consumer.got)

    def seen(consumer: Consumer) -> set[str]:
        with consumer.lock:
            return {t for t, v in consumer.got.items() if v}

    try:
        assert wait_until(lambda: len(documents()) >= 2, 20), proc.log()
        first = documents()
        assert any("bms_site-" in t for t in first) and any(f"bms_{system_id}/" in t for t in first)

        broker.kill()
        broker.start()  # retained documents gone with it
        watcher = Consumer(broker, *filters)
        consumers.append(watcher)
        assert wait_until(lambda: seen(watcher) >= first, 30), (
            sorted(first - seen(watcher)),
            proc.log(),
        )

        def quiet_for(seconds: float) -> bool:
            with watcher.lock:
                last = max(t for v in watcher.got.values() for t, _d in v)
            return time.monotonic() - last >= seconds

        # every renewal done (a reconnection that flaps may renew twice): nothing new for 3 s
        assert wait_until(lambda: quiet_for(3.0), 30)
        watcher.close()

        # a user deletes the devices in Home Assistant: their retained documents are cleared
        eraser = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        eraser.connect(broker.host, broker.port)
        eraser.loop_start()
        for topic in sorted(documents()):
            eraser.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        assert documents() == set(), "the retained documents were not cleared"
        time.sleep(2.0)
        assert documents() == set(), "published again with no birth message"
        # Home Assistant (re)starts: its birth message
        eraser.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        eraser.loop_stop()
        eraser.disconnect()
        assert wait_until(lambda: documents() >= first, 20), proc.log()
    finally:
        for consumer in consumers:
            consumer.close()
        master.close()
        controller.close()
        assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()


def prometheus_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:  # URLError, HTTPError (503), a refused or reset connection
        return False


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_scrapes_the_bridge(
    mosquitto: MosquittoBroker, system_id: str, bridge: tuple[ServiceProcess, int], tmp_path: Path
) -> None:
    proc, port = bridge
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: bms\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    master = Master(mosquitto, system_id)
    controller = SiteController(mosquitto, site_of(system_id))

    def query(expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        with urllib.request.urlopen(url, timeout=5) as r:
            result: list[dict[str, Any]] = json.load(r)["data"]["result"]
            return result

    try:
        wait_for_port("127.0.0.1", prom_port, 30)
        # its API answers 503 until its storage is up, later than the port on a loaded machine
        assert wait_until(lambda: prometheus_ready(prom_port), 60, 0.5)
        soc = f'bms_pack_soc_percent{{system="{system_id}"}}'
        assert wait_until(lambda: bool(query(soc)), 60, 0.5), proc.log()
        assert float(query(soc)[0]["value"][1]) == 61.5
        site_soc = f'bms_site_soc_percent{{site="{site_of(system_id)}"}}'
        assert wait_until(lambda: bool(query(site_soc)), 30, 0.5), proc.log()
        assert float(query(site_soc)[0]["value"][1]) == 41.5
        cells = query(f'count(bms_cell_voltage_volts{{system="{system_id}"}})')
        assert float(cells[0]["value"][1]) == 6
        received = query('bms_bus_received_total{service="integrations"}')
        assert float(received[0]["value"][1]) > 0
        assert query('up{job="bms"}')[0]["value"][1] == "1"
        assert query("bms_integrations_handle_seconds_count")
        # every panel of the Grafana dashboard parses in Prometheus and finds data
        for title, expr in dashboard_queries():
            if not expr.startswith("label_values"):
                concrete = expr.replace("$system", system_id)
                assert wait_until(lambda: bool(query(concrete)), 15, 0.5), title  # noqa: B023
    finally:
        master.close()
        controller.close()
        prom.terminate()
        prom.wait(10)
        log.close()


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_scrapes_every_service_of_the_stack(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    """Slave agent, master, Modbus gateway and the bridge, each with its own /metrics: a real
    Prometheus scrapes all four; the master's cycle time and the gateway's request time are
    histograms, and the bridge exports the real master's pack values."""
    from pymodbus.client import ModbusTcpClient

    from shared.config import SystemConfig

    from .agents import publish_config

    config = SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    ui = publish_config(mosquitto.url, config)
    ports = {name: free_port() for name in ("slave_agent", "master_core", "modbus_gateway",
                                            "integrations")}  # fmt: skip
    modbus_port = free_port()
    extra: dict[str, dict[str, str]] = {
        "master_core": {"data_dir": str(tmp_path / "data"), "load_profile": "constant:-10"},
        "modbus_gateway": {"tcp_port": str(modbus_port)},
        "integrations": {"all_systems": "false"},
    }
    procs = [
        ServiceProcess(name, mosquitto.url, system_id, tmp_path, metrics_port=str(port),
                       **extra.get(name, {}))
        for name, port in ports.items()
    ]  # fmt: skip
    prom_port = free_port()
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in ports.values())
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        f"scrape_configs:\n  - job_name: stack\n    static_configs: [{{targets: [{targets}]}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def value(expr: str) -> float | None:
        args = urllib.parse.urlencode({"query": expr})
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?{args}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                result = json.load(r)["data"]["result"]
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None

    try:
        wait_for_port("127.0.0.1", prom_port, 30)
        # its API answers 503 until its storage is up, later than the port on a loaded machine
        assert wait_until(lambda: prometheus_ready(prom_port), 60, 0.5)
        assert wait_until(lambda: value('sum(up{job="stack"})') == 4, 60, 0.5), [
            p.log()[-2000:] for p in procs
        ]
        assert wait_until(lambda: (value("bms_master_cycle_seconds_count") or 0) > 10, 60, 0.5), [
            p.log()[-1500:] for p in procs
        ]
        wait_for_port("127.0.0.1", modbus_port, 30)
        client = ModbusTcpClient("127.0.0.1", port=modbus_port)
        assert client.connect()
        for _ in range(5):
            client.read_holding_registers(40000, count=2, device_id=1)
        client.close()
        logs = lambda: "\n".join(p.log()[-1500:] for p in procs)  # noqa: E731
        # pymodbus may retry a request on a loaded machine: at least the five sent
        assert wait_until(lambda: (value("bms_modbus_request_seconds_count") or 0) >= 5, 30, 0.5), (
            logs()
        )
        for service in ports:
            received = f'bms_bus_received_total{{service="{service}"}}'
            assert wait_until(lambda: (value(received) or 0) > 0, 30, 0.5), service  # noqa: B023
        soc = f'bms_pack_soc_percent{{system="{system_id}"}}'
        assert wait_until(lambda: value(soc) is not None, 60, 0.5), logs()
        assert 0 < (value(soc) or 0) <= 100
    finally:
        prom.terminate()
        prom.wait(10)
        log.close()
        for proc in procs:
            proc.stop()
        ui.stop()


class Webhook:
    """A local webhook receiver: every POST body as JSON."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        posts = self.posts = []  # type: list[dict[str, Any]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers["Content-Length"])
                posts.append(json.loads(self.rfile.read(size)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_alerts_reach_a_webhook_and_a_mail_server_exactly_once(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    from email import message_from_bytes
    from email.message import Message as Mail

    from aiosmtpd.controller import Controller

    mails: list[Mail] = []

    class Smtp:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
            mails.append(message_from_bytes(envelope.content))
            return "250 OK"

    smtp = Controller(Smtp(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    hook = Webhook()
    rules = [
        {"name": "ops", "urls": [f"json://127.0.0.1:{hook.port}/bms"], "min_level": "alarm",
         "quiet_period_s": 60},
        {"name": "cells", "min_level": "warning", "codes": ["cell_overvoltage"],
         "urls": [f"mailto://127.0.0.1:{smtp.port}?from=bms@example.com&to=ops@example.com"
                  "&mode=insecure"]},
    ]  # fmt: skip
    proc = ServiceProcess("integrations", mosquitto.url, system_id, tmp_path,
                          all_systems="false", metrics_port="0",
                          alert_rules=json.dumps(rules))  # fmt: skip
    master = MqttBus(parse_mqtt_url(mosquitto.url), system=system_id, service="master_core",
                     kind="master_core")  # fmt: skip
    assert master.start(wait_s=10)

    def emit(code: str, level: str, kind: str, value: float | None = 4.251) -> None:
        master.publish(EVENTS, Event(level=level, kind=kind, code=code,  # type: ignore[arg-type]
                                     text=f"{code} {level} {kind}",
                                     values={"value": value, "threshold": 4.2}))  # fmt: skip

    try:
        state = pack_state(cell_v_max_at=CellLocation(module=1, index=3))
        watcher = Consumer(mosquitto, JSON_PACK_STATE.topic(system_id))
        # the bridge is up and has the state (its location) once it mirrors it
        mirrored = lambda: bool(watcher.on(JSON_PACK_STATE.topic(system_id)))  # noqa: E731
        assert wait_until(lambda: master.publish(PACK_STATE, state) or mirrored(), 20, 0.3)
        watcher.close()
        emit("cell_overvoltage", "warning", "raise")  # mail only
        emit("cell_overvoltage", "alarm", "raise")  # both
        emit("cell_overvoltage", "alarm", "raise")  # both quiet (60 s; mail rule 300 s)
        emit("cell_overvoltage", "alarm", "clear")  # both
        emit("cell_overvoltage", "alarm", "clear")  # nobody: already cleared
        emit("insulation_low", "fault", "raise", 12_000.0)  # webhook only
        emit("pack_undervoltage", "warning", "raise")  # nobody
        assert wait_until(lambda: len(hook.posts) >= 3 and len(mails) >= 3, 30), proc.log()
        time.sleep(2.0)  # anything extra would arrive now
        assert [p["title"] for p in hook.posts] == [
            f"[BMS {system_id}] ALARM raised: Highest cell voltage too high",
            f"[BMS {system_id}] ALARM cleared: Highest cell voltage too high",
            f"[BMS {system_id}] FAULT raised: Insulation resistance between the pack and earth "
            "too low",
        ]
        assert sorted(str(m["Subject"]) for m in mails) == sorted([
            f"[BMS {system_id}] WARNING raised: Highest cell voltage too high",
            f"[BMS {system_id}] ALARM raised: Highest cell voltage too high",
            f"[BMS {system_id}] ALARM cleared: Highest cell voltage too high",
        ])  # fmt: skip
        body = hook.posts[0]["message"]
        assert f"System {system_id}" in body and "module 2, cell 4" in body
        assert "Value: 4.251, threshold: 4.2." in body
        assert mails[0]["To"] == "ops@example.com"
    finally:
        master.stop()
        assert proc.stop() == 0, proc.log()
        hook.close()
        smtp.stop()
    assert "Traceback" not in proc.log()


def test_home_assistant_button_and_select_reach_the_master(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    """What Home Assistant publishes for the button and the select (the documents' own
    payload and command template) arrives at the master as its commands."""
    proc = ServiceProcess("integrations", mosquitto.url, system_id, tmp_path,
                          all_systems="false", metrics_port="0", ha_discovery="true",
                          ha_commands="true")  # fmt: skip
    master = MqttBus(parse_mqtt_url(mosquitto.url), system=system_id, service="master_core",
                     kind="master_core")  # fmt: skip
    got: list[tuple[str, dict[str, Any]]] = []
    master.subscribe(COMMAND, lambda d: got.append((d.params["command"], d.message.args)))
    assert master.start(wait_s=10)
    node = f"bms_{system_id}"
    ha = Consumer(mosquitto, f"homeassistant/+/{node}/+/config")
    try:
        docs = lambda: {t.split("/")[1]: v[-1][1] for t, v in ha.got.items()}  # noqa: E731
        assert wait_until(lambda: master.publish(PACK_STATE, pack_state()) or
                          {"button", "select"} <= set(docs()), 20, 0.3), proc.log()  # fmt: skip
        button, select = docs()["button"], docs()["select"]
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        ha.c.publish(button["command_topic"], button["payload_press"], qos=1)
        choice = env.from_string(select["command_template"]).render(value="standby")
        ha.c.publish(select["command_topic"], choice, qos=1)
        assert wait_until(lambda: (master.process(), len(got))[1] >= 2, 15), proc.log()
        assert sorted(got, key=lambda g: g[0]) == [
            ("reset_faults", {}), ("set_mode", {"mode": "standby"})
        ]  # fmt: skip
    finally:
        ha.close()
        master.stop()
        assert proc.stop() == 0, proc.log()
