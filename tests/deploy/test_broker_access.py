"""The generated ACL and password file on a real mosquitto: every role may publish and read
exactly what the topic registry grants it, and nobody gets in without a valid password."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port
from shared.bus import MqttBus
from shared.codec import encode
from shared.config import demo_config
from shared.deploy import acl, credentials
from shared.endpoint import DEFAULT_MQTT_PROTOCOL, MqttEndpoint
from shared.messages import ConfigMessage, SlaveStatus
from shared.topics import (
    COMMAND_SENDERS,
    CONFIG,
    HA_COMMAND,
    HA_COMMANDS,
    SLAVE_STATUS,
    TOPICS,
    TopicSpec,
)

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

SYSTEM = "plant1"
ROOT = Path(__file__).resolve().parents[2]
NOT_AUTHORIZED = 0x87
ACCEPTED_BELOW = 0x80  # MQTT 5 reason codes: 0x10 'no matching subscribers' is a success


class Client:
    def __init__(self, port: int, user: str, password: str) -> None:
        self.received: set[str] = set()
        self.pubacks: dict[int, int] = {}
        self.refused: list[int] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        client_id = f"{user or 'anonymous'}-{uuid.uuid4().hex[:6]}"
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, m: self._add(self.received, m.topic)
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _add(self, into: set[str], topic: str) -> None:
        with self.lock:
            into.add(topic)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused.append(int(reason.value))
        else:
            self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.lock:
            self.pubacks[mid] = int(reason.value)

    def publish(self, topic: str) -> int:
        info = self.c.publish(topic, b"x", qos=1)
        deadline = time.monotonic() + 5
        while info.mid not in self.pubacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    store = tmp_path_factory.mktemp("credentials")
    credentials.init(store, uid=None, system=SYSTEM)
    acl_file = store / "acl"
    acl_file.write_text(acl.render(system=SYSTEM))
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {store / 'broker' / 'passwd'}\nacl_file {acl_file}\n"
    )
    with MosquittoBroker(extra_config=extra):
        wait_for_port("127.0.0.1", port, 5)
        yield port, store


def concrete(
    spec: TopicSpec[Any], module: int = 1, service: str = "nobody", command: str = "set_mode"
) -> str:
    layout = acl.DEFAULT_LAYOUT
    rack = layout.modules(module // layout.modules_per_rack)  # the range that hosts `module`
    values = {"module": module, "modules": f"{rack[0]}-{rack[-1]}", "service": service,
              "source": service, "command": command}  # fmt: skip
    return spec.topic(SYSTEM, **{p: values.get(p, "1") for p in spec.params})


def every_command(spec: TopicSpec[Any], module: int, service: str) -> set[str]:
    """One topic per command (and one no command has) where the spec names a command."""
    commands = [*COMMAND_SENDERS, "unknown"] if "command" in spec.params else ["set_mode"]
    return {concrete(spec, module, service, c) for c in commands}


def login(broker: tuple[int, Path], user: str) -> Client:
    port, store = broker
    client = Client(port, user, credentials.show(store, user))
    assert client.connected.wait(5), f"{user} could not log in: {client.refused}"
    return client


def test_each_user_publishes_exactly_what_the_acl_grants(broker: tuple[int, Path]) -> None:
    """Every topic, for a module of rack 0 and one of rack 1, under the user's own name and
    another's: the broker agrees with `acl.may` everywhere."""
    for user in acl.users():
        client = login(broker, user)
        try:
            for spec in TOPICS:
                topics = set().union(
                    *(every_command(spec, m, s) for m in (1, 5) for s in (user, "other"))
                )
                for topic in sorted(topics):
                    code = client.publish(topic)
                    allowed = acl.may(user, "write", topic, system=SYSTEM)
                    assert (code != NOT_AUTHORIZED) == allowed, (user, topic, hex(code))
        finally:
            client.close()


def test_each_user_reads_exactly_what_the_acl_grants(broker: tuple[int, Path]) -> None:
    readers = {user: login(broker, user) for user in acl.users()}
    try:
        for client in readers.values():
            client.c.subscribe(f"bms/v1/{SYSTEM}/#", qos=1)
        time.sleep(0.3)
        # each topic published by a user allowed to: the broker then decides who receives it
        published = []
        for spec in TOPICS:
            names = HA_COMMANDS if spec is HA_COMMAND else COMMAND_SENDERS
            for command in names if "command" in spec.params else ["set_mode"]:
                writer = next(
                    u
                    for u in acl.users()
                    if acl.may(u, "write", concrete(spec, 1, u, command), system=SYSTEM)
                )
                published.append(concrete(spec, 1, writer, command))
                assert readers[writer].publish(published[-1]) < ACCEPTED_BELOW
        time.sleep(0.5)
        for user, client in readers.items():
            assert client.received == {
                t for t in published if acl.may(user, "read", t, system=SYSTEM)
            }, user
    finally:
        for client in readers.values():
            client.close()


def test_a_rack_speaks_only_for_its_own_modules(broker: tuple[int, Path]) -> None:
    """Two racks of four: rack 0 owns modules 0-3, rack 1 modules 4-7."""
    rack0, rack1 = login(broker, "slave_agent-rack0"), login(broker, "slave_agent-rack1")
    try:
        for topic in ("slave/3/telemetry", "slave/3/status"):
            assert rack0.publish(f"bms/v1/{SYSTEM}/{topic}") < ACCEPTED_BELOW
            assert rack1.publish(f"bms/v1/{SYSTEM}/{topic}") == NOT_AUTHORIZED
        assert rack1.publish(f"bms/v1/{SYSTEM}/slave/4/telemetry") < ACCEPTED_BELOW
        assert rack0.publish(f"bms/v1/{SYSTEM}/slave/4/telemetry") == NOT_AUTHORIZED
        # presence and acknowledgements under its own name only
        assert rack0.publish(f"bms/v1/{SYSTEM}/service/slave_agent-rack0/status") < ACCEPTED_BELOW
        assert rack0.publish(f"bms/v1/{SYSTEM}/service/master_core/status") == NOT_AUTHORIZED
        assert rack0.publish(f"bms/v1/{SYSTEM}/config/ack/master_core") == NOT_AUTHORIZED
    finally:
        rack0.close()
        rack1.close()


def test_a_publish_the_acl_refuses_is_counted_and_logged_with_its_topic(
    broker: tuple[int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Rack 1's agent on MQTT 5, set up as if it hosted module 3 (a wrong BMS_MODULES_PER_RACK):
    the broker refuses the status (PUBACK 0x87). The bus counts each refusal and logs the
    topic and what to check, once a minute per topic; its own module 4 goes through. (MQTT
    3.1.1, the default, has no reason code: a broker drops such a publish without a word.)"""
    bus = bus_as(
        broker, "slave_agent-rack1", presence=False, service="slave_agent-rack1", protocol="5"
    )
    try:
        assert bus.start(wait_s=5)
        with caplog.at_level(logging.ERROR, logger="shared.bus.mqtt"):
            for _ in range(3):
                bus.publish(SLAVE_STATUS, SlaveStatus(module=3, state="online"), module=3)
            bus.publish(SLAVE_STATUS, SlaveStatus(module=4, state="online"), module=4)
            deadline = time.monotonic() + 5
            while bus.counters["publish_refused_by_broker"] < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # module 4's acknowledgement, had it been refused too
        assert bus.counters["publish_refused_by_broker"] == 3
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert f"bms/v1/{SYSTEM}/slave/3/status" in lines[0]
        assert "Not authorized" in lines[0] and "slave_agent-rack1" in lines[0]
        assert "BMS_MODULES_PER_RACK" in lines[0]
    finally:
        bus.publish(SLAVE_STATUS, SlaveStatus(module=4, state="offline"), module=4)
        bus.stop()


def test_services_cannot_forge_each_others_presence(broker: tuple[int, Path]) -> None:
    gateway = login(broker, "modbus_gateway")
    try:
        assert gateway.publish(f"bms/v1/{SYSTEM}/service/modbus_gateway/status") < ACCEPTED_BELOW
        assert gateway.publish(f"bms/v1/{SYSTEM}/service/master_core/status") == NOT_AUTHORIZED
        assert gateway.publish(f"bms/v1/{SYSTEM}/slave/1/telemetry") == NOT_AUTHORIZED
    finally:
        gateway.close()


def test_only_the_web_application_may_send_a_service_reset(broker: tuple[int, Path]) -> None:
    """A reset with a service override travels on its own topic so that the ACL, which
    filters by topic only, can keep it to the web application (which checks the admin role);
    the gateways keep their ordinary commands."""
    topic = f"bms/v1/{SYSTEM}/cmd/service_reset"
    assert [u for u in acl.users() if acl.may(u, "write", topic, system=SYSTEM)] == ["config_ui"]
    for user in ("modbus_gateway", "can_gateway", "third_party", "simulation"):
        client = login(broker, user)
        try:
            assert client.publish(topic) == NOT_AUTHORIZED, user
        finally:
            client.close()
    for user in ("modbus_gateway", "config_ui"):
        client = login(broker, user)
        try:
            assert client.publish(f"bms/v1/{SYSTEM}/cmd/reset_faults") < ACCEPTED_BELOW, user
        finally:
            client.close()
    ui = login(broker, "config_ui")
    try:
        assert ui.publish(topic) < ACCEPTED_BELOW
    finally:
        ui.close()


def test_only_the_master_publishes_events_as_the_master(broker: tuple[int, Path]) -> None:
    """The issue: any user could publish a fault event claiming to be the master. Now the
    source is a topic level, and each user may write events under its own name only."""
    master_topic = f"bms/v1/{SYSTEM}/events/master_core"
    for user in acl.users():
        client = login(broker, user)
        try:
            code = client.publish(master_topic)
            if user == "master_core":
                assert code < ACCEPTED_BELOW
            else:
                assert code == NOT_AUTHORIZED, user
            # the users that publish no events: read-only ones, and the command-only logins
            if user not in (
                "third_party", "events_reader", "simulation", "home_assistant",
                "integrations_commands", "sparkplug_host",
            ):  # fmt: skip
                assert client.publish(f"bms/v1/{SYSTEM}/events/{user}") < ACCEPTED_BELOW, user
        finally:
            client.close()


def test_third_party_reads_state_but_cannot_command(broker: tuple[int, Path]) -> None:
    grants = {g.pattern: g for g in acl.grants("third_party", system=SYSTEM)}
    assert not any(g.write for g in grants.values())
    for name in ("pack/state", "pack/cells", "events/+", "config", "service/+/status"):
        assert grants[f"bms/v1/{SYSTEM}/{name}"].read
    client = login(broker, "third_party")
    try:
        assert client.publish(f"bms/v1/{SYSTEM}/cmd/reset_faults") == NOT_AUTHORIZED
        assert client.publish(f"bms/v1/{SYSTEM}/slave/1/telemetry") == NOT_AUTHORIZED
    finally:
        client.close()


@pytest.mark.parametrize("password", ["wrong", ""])
def test_a_wrong_password_or_anonymous_is_refused(broker: tuple[int, Path], password: str) -> None:
    port, _ = broker
    client = Client(port, "master_core" if password else "", password)
    try:
        assert not client.connected.wait(2)
        assert client.refused, "no CONNACK refusal"
    finally:
        client.close()


def bus_as(
    broker: tuple[int, Path],
    user: str,
    *,
    presence: bool,
    service: str = "tool",
    protocol: str = DEFAULT_MQTT_PROTOCOL,
) -> MqttBus:
    port, store = broker
    endpoint = MqttEndpoint("127.0.0.1", port, False, user, credentials.show(store, user))
    return MqttBus(
        endpoint, system=SYSTEM, service=service, kind="tool", presence=presence,
        protocol=protocol,
    )  # fmt: skip


def test_tools_log_in_as_users_that_may_publish_no_presence(broker: tuple[int, Path]) -> None:
    """Newer mosquitto releases refuse a connection whose last will the user may not publish:
    the tap (as the third party) and fault injection (as the simulation) set none, and
    publish no presence."""
    topic = f"bms/v1/{SYSTEM}/pack/state"
    master = login(broker, "master_core")
    # retained, as the master publishes it: the tap gets it whenever its subscription lands
    master.c.publish(topic, b"state", qos=1, retain=True).wait_for_publish(5)
    seen: list[str] = []
    tap = bus_as(broker, "third_party", presence=False)
    tap.subscribe_raw(topic, lambda t, _p, _r: seen.append(t))
    try:
        assert tap.start(wait_s=5)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            tap.process(timeout_s=0.1)
        assert seen == [topic]
    finally:
        tap.stop()
        master.c.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        master.close()


@pytest.mark.parametrize("presence", [True, False])
def test_a_bus_without_presence_publishes_no_status(
    broker: tuple[int, Path], presence: bool
) -> None:
    topic = f"bms/v1/{SYSTEM}/service/modbus_gateway/status"
    owner = login(broker, "modbus_gateway")
    owner.c.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)  # no retained status
    owner.close()
    watcher = login(broker, "config_ui")
    watcher.c.subscribe(topic, qos=1)
    time.sleep(0.3)
    bus = bus_as(broker, "modbus_gateway", presence=presence, service="modbus_gateway")
    try:
        assert bus.start(wait_s=5)
        time.sleep(0.5)
    finally:
        bus.stop()
        time.sleep(0.3)
        watcher.close()
    assert bool(watcher.received) == presence


def test_fault_injection_runs_as_the_simulation_user(broker: tuple[int, Path]) -> None:
    port, store = broker
    rack0 = login(broker, "slave_agent-rack0")
    rack0.c.subscribe(f"bms/v1/{SYSTEM}/sim/control", qos=1)
    time.sleep(0.3)
    url = f"mqtt://simulation:{credentials.show(store, 'simulation')}@127.0.0.1:{port}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.slave_agent", "inject", "clear", "--mqtt-url", url,
             "--system", SYSTEM],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 5
        while not rack0.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rack0.received == {f"bms/v1/{SYSTEM}/sim/control"}
    finally:
        rack0.close()


def test_fault_injection_reads_the_configuration_to_check_module_numbers(
    broker: tuple[int, Path],
) -> None:
    """The simulation user may read the retained configuration: a module past the configured
    ones (the demo's 7) is refused in words, and nothing is published."""
    port, store = broker
    ui = login(broker, "config_ui")
    config = encode(ConfigMessage(config=demo_config(SYSTEM)), source="config_ui", seq=0,
                    ts=time.time())  # fmt: skip
    ui.c.publish(CONFIG.topic(SYSTEM), config, qos=1, retain=True).wait_for_publish(5)
    rack0 = login(broker, "slave_agent-rack0")
    rack0.c.subscribe(f"bms/v1/{SYSTEM}/sim/control", qos=1)
    time.sleep(0.3)
    url = f"mqtt://simulation:{credentials.show(store, 'simulation')}@127.0.0.1:{port}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.slave_agent", "inject", "dropout", "--module", "8",
             "--mqtt-url", url, "--system", SYSTEM],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "module numbers run from 1 to 7 in the active configuration" in done.stderr
        time.sleep(0.5)
        assert not rack0.received
    finally:
        rack0.close()
        ui.c.publish(CONFIG.topic(SYSTEM), b"", qos=1, retain=True).wait_for_publish(5)
        ui.close()


def test_the_integrations_bridge_writes_only_its_own_prefixes(broker: tuple[int, Path]) -> None:
    """It reads what a third party reads, writes its JSON mirror and Home Assistant's discovery
    documents, and cannot touch the protection path (state, commands, balancing)."""
    reads = {g.pattern for g in acl.grants("integrations") if g.read}
    assert reads >= {g.pattern for g in acl.grants("third_party") if g.read}
    bridge = login(broker, "integrations")
    try:
        mirror = ("json/pack/state", "json/pack/cells", "json/events", "json/service/x/status")
        for topic in (*mirror, "service/integrations/status"):
            assert bridge.publish(f"bms/v1/{SYSTEM}/{topic}") < ACCEPTED_BELOW, topic
        assert bridge.publish("homeassistant/sensor/bms_plant1/soc/config") < ACCEPTED_BELOW
        for topic in ("pack/state", "cmd/reset_faults", "cmd/contactors", "slave/1/balance",
                      "slaves/mode", "config", "service/master_core/status"):  # fmt: skip
            assert bridge.publish(f"bms/v1/{SYSTEM}/{topic}") == NOT_AUTHORIZED, topic
        assert bridge.publish("homeassistant/status") == NOT_AUTHORIZED
    finally:
        bridge.close()


def test_home_assistant_and_the_command_user_get_exactly_the_opt_in_commands(
    broker: tuple[int, Path],
) -> None:
    """Home Assistant asks on `ha/cmd/...` and cannot command the master itself; the bridge's
    command user may send reset_faults and set_mode and nothing else."""
    ha = login(broker, "home_assistant")
    commands = login(broker, "integrations_commands")
    try:
        for command in ("reset_faults", "set_mode"):
            assert ha.publish(f"bms/v1/{SYSTEM}/ha/cmd/{command}") < ACCEPTED_BELOW
            assert ha.publish(f"bms/v1/{SYSTEM}/cmd/{command}") == NOT_AUTHORIZED
            assert commands.publish(f"bms/v1/{SYSTEM}/cmd/{command}") < ACCEPTED_BELOW
        # the bridge hears Home Assistant's birth (it publishes its discovery again then)
        bridge = login(broker, "integrations")
        bridge.c.subscribe("homeassistant/status", qos=1)
        time.sleep(0.3)
        assert ha.publish("homeassistant/status") < ACCEPTED_BELOW
        deadline = time.monotonic() + 5
        while not bridge.received and time.monotonic() < deadline:
            time.sleep(0.05)
        bridge.close()
        assert bridge.received == {"homeassistant/status"}
        assert ha.publish("homeassistant/sensor/x/y/config") == NOT_AUTHORIZED
        others = ("cmd/contactors", "cmd/service_reset", "cmd/heartbeat", "json/events", "events")
        for topic in (*others, "service/integrations_commands/status", "ha/cmd/set_mode"):
            assert commands.publish(f"bms/v1/{SYSTEM}/{topic}") == NOT_AUTHORIZED, topic
    finally:
        ha.close()
        commands.close()
