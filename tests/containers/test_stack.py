"""The whole stack in containers: images, health, the read-only third party, and a rack lost
and recovered. Runs against a real Docker engine (see conftest.py); tests run in file order
on one stack, and the last one kills a rack."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import ModbusTcpClient

from shared.bus import MqttBus
from shared.codec import decode, encode
from shared.commands import CommandClient
from shared.messages import (
    CommandRequest,
    ConfigMessage,
    ContactorsArgs,
    Event,
    PackState,
    ResetFaultsArgs,
    ServiceStatus,
)
from shared.settings import MqttEndpoint
from shared.topics import (
    COMMAND,
    CONFIG,
    EVENTS,
    PACK_STATE,
    RACK_TELEMETRY,
    SERVICE_STATUS,
    SLAVE_TELEMETRY,
    TOPICS,
    TopicSpec,
)  # fmt: skip
from tests.containers.conftest import TAG
from tests.containers.stack import COMPOSE_FILE, IMAGES, ComposeStack

pytestmark = pytest.mark.timeout(900)

SYSTEM = "demo"
RACK = "slave-rack1"
RACK_MODULES = [4, 5, 6]  # rack 1 of the demo's 7 modules at 4 per rack
NOT_AUTHORIZED = 0x87
DEPLOY = COMPOSE_FILE.parent


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


class ThirdParty:
    """A read-only client as a third party would write it: paho, MQTT 5, shared.codec."""

    def __init__(self, stack: ComposeStack, user: str = "third_party") -> None:
        self.lock = threading.Lock()
        self.latest: dict[str, bytes] = {}
        self.events: list[Event] = []
        self.pubacks: dict[int, int] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"tp-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self.client.username_pw_set(user, stack.password(user))
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.client.on_connect = lambda c, _u, _f, rc, _p: rc.is_failure or self.connected.set()
        self.client.connect(stack.host, stack.port("broker", 1883))
        self.client.loop_start()
        assert self.connected.wait(10), f"{user} could not log in"
        for spec in (PACK_STATE, EVENTS, CONFIG, SERVICE_STATUS):
            self.client.subscribe(spec.filter(SYSTEM), qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.latest[msg.topic] = bytes(msg.payload)
            if EVENTS.parse(msg.topic):
                self.events.append(decode(Event, msg.topic, msg.payload))

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.lock:
            self.pubacks[mid] = int(reason.value)

    def get(self, spec: TopicSpec[Any], **params: str) -> Any:
        topic = spec.topic(SYSTEM, **params)
        with self.lock:
            raw = self.latest.get(topic)
        return None if raw is None else decode(spec.payload, topic, raw)

    def state(self) -> PackState | None:
        state: PackState | None = self.get(PACK_STATE)
        return state

    def publish(self, topic: str, payload: bytes) -> int:
        """The PUBACK reason code the broker answers a QoS 1 publish with."""
        info = self.client.publish(topic, payload, qos=1)
        assert wait_until(lambda: info.mid in self.pubacks, 5), f"no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def closed(tp: ThirdParty) -> bool:
    state = tp.state()
    return state is not None and state.contactors == "closed"


@pytest.fixture(scope="module")
def third_party(stack: ComposeStack) -> Any:
    tp = ThirdParty(stack)
    yield tp
    tp.close()


def test_images_run_as_non_root_with_a_health_check(
    docker_client: docker.DockerClient, images: dict[str, float]
) -> None:
    for name in IMAGES:
        config = docker_client.images.get(f"bms/{name}:{TAG}").attrs["Config"]
        assert config["User"] == "10001:10001", name
        assert config["Healthcheck"]["Test"], name
        assert config["Cmd"][:3] == ["python", "-m", f"services.{name}"], name


def test_every_service_becomes_healthy(stack: ComposeStack) -> None:
    expected = {"broker", "master-core", "slave-rack0", "slave-rack1", "modbus-gateway",
                "can-gateway", "config-ui", "integrations"}  # fmt: skip
    assert set(stack.healthy_after_s) == expected
    for name, c in stack.containers().items():
        policy = c.attrs["HostConfig"]["RestartPolicy"]["Name"]
        assert policy == ("no" if name == "credentials" else "unless-stopped"), name


def test_third_party_reads_state_configuration_and_presence(third_party: ThirdParty) -> None:
    assert wait_until(lambda: closed(third_party), 60)
    state = third_party.state()
    assert state is not None and not state.faults and not state.stale_modules
    assert 300 < state.voltage < 420 and 0 <= state.soc <= 100  # the demo's 98 NMC cells
    assert wait_until(lambda: third_party.get(CONFIG) is not None, 5)  # retained
    config: ConfigMessage = third_party.get(CONFIG)
    assert config.config.topology.modules == 7
    assert wait_until(lambda: third_party.get(SERVICE_STATUS, service="master_core"), 5)
    master: ServiceStatus = third_party.get(SERVICE_STATUS, service="master_core")
    assert master.state == "online"


def test_third_party_can_publish_nothing(third_party: ThirdParty) -> None:
    """Refused by the broker (MQTT 5 PUBACK 0x87), so the master never sees the command."""
    assert wait_until(lambda: closed(third_party), 60)  # closed before: an open would show
    request = CommandRequest(
        command="contactors", correlation_id=uuid.uuid4().hex,
        reply_to=f"bms/v1/{SYSTEM}/reply/third_party/tp", expires_at=time.time() + 30,
        args=ContactorsArgs(action="open").model_dump(),
    )  # fmt: skip
    cmd = COMMAND.topic(SYSTEM, command="contactors")
    assert third_party.publish(cmd, encode(request, source="tp", seq=0, ts=time.time())) == (
        NOT_AUTHORIZED
    )
    for spec in TOPICS:  # nothing else either
        params = {p: "0" for p in spec.params}
        assert third_party.publish(spec.topic(SYSTEM, **params), b"\x80") == NOT_AUTHORIZED
    time.sleep(3)  # the master would have opened the contactors by now
    state = third_party.state()
    assert state is not None and state.contactors == "closed"
    assert not any(e.code == "contactors_open" for e in third_party.events)


def test_a_rack_cannot_speak_for_another_racks_modules(stack: ComposeStack) -> None:
    """Rack 0 (modules 0-3) logs in with its own secret; module 5 belongs to rack 1."""
    rack0 = ThirdParty(stack, user="slave_agent-rack0")
    try:
        foreign = SLAVE_TELEMETRY.topic(SYSTEM, module=5)
        assert rack0.publish(foreign, b"\x80") == NOT_AUTHORIZED
        assert rack0.publish(SLAVE_TELEMETRY.topic(SYSTEM, module=2), b"\x80") < 0x80
        # the agents' own topic: rack 0's range only
        assert rack0.publish(RACK_TELEMETRY.topic(SYSTEM, modules="0-3"), b"\x80") < 0x80
        for other_range in ("4-7", "0-7"):
            topic = RACK_TELEMETRY.topic(SYSTEM, modules=other_range)
            assert rack0.publish(topic, b"\x80") == NOT_AUTHORIZED
        other = SERVICE_STATUS.topic(SYSTEM, service="master_core")
        assert rack0.publish(other, b"\x80") == NOT_AUTHORIZED
    finally:
        rack0.close()


def test_modbus_and_web_ui_are_published(stack: ComposeStack) -> None:
    modbus = ModbusTcpClient(stack.host, port=stack.port("modbus-gateway", 5020))
    assert modbus.connect()
    try:
        regs = modbus.read_holding_registers(40000, count=2, device_id=1)
        assert not regs.isError() and regs.registers == [0x5375, 0x6E53]  # "SunS"
    finally:
        modbus.close()
    base = f"http://{stack.host}:{stack.port('config-ui', 8000)}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
        assert response.status == 200
        json.loads(response.read())
    # the first admin's password is the one the credentials step made
    login = json.dumps({"username": "admin", "password": stack.password("ui_admin")}).encode()
    request = urllib.request.Request(
        f"{base}/api/session", data=login, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        session = json.loads(response.read())
    assert session["role"] == "admin"
    assert session["must_change_password"] is True  # the stored secret is only a first key


def operator(stack: ComposeStack) -> tuple[MqttBus, CommandClient]:
    """A client allowed to command: it logs in as the web UI does."""
    endpoint = MqttEndpoint(
        stack.host, stack.port("broker", 1883), False, "config_ui", stack.password("config_ui")
    )
    bus = MqttBus(endpoint, system=SYSTEM, service=f"ops-{uuid.uuid4().hex[:6]}", kind="test",
                  presence=False)  # fmt: skip  # not the UI: it may not speak for its presence
    client = CommandClient(bus)
    assert bus.start(wait_s=10)
    return bus, client


def test_a_lost_rack_opens_the_contactors_and_its_return_recovers(
    stack: ComposeStack, third_party: ThirdParty
) -> None:
    """comm_loss.recovery auto (the default): the loss opens and latches; once every module is
    back and nothing else holds, the master clears the latch itself and closes again."""
    assert wait_until(lambda: closed(third_party), 60)
    rack = stack.container(RACK)
    rack.kill()  # SIGKILL: no goodbye, the broker's last will and the silence tell the master

    def lost() -> bool:
        s = third_party.state()
        return s is not None and "communication_loss" in s.faults and s.contactors != "closed"

    assert wait_until(lost, 15), stack.logs("master-core")
    # every module of the rack, and only those, once each has missed its deadline
    assert wait_until(lambda: sorted(third_party.state().stale_modules) == RACK_MODULES, 5)  # type: ignore[union-attr]
    state = third_party.state()
    assert state is not None and state.contactors == "fault"  # opened, and latched
    assert state.limits.charge_current_a == 0 and state.limits.discharge_current_a == 0
    assert any(e.code == "communication_loss" and e.level == "fault" for e in third_party.events)

    rack.start()
    stack.wait_healthy(120, services=[RACK])
    assert wait_until(lambda: (s := third_party.state()) is not None and not s.faults, 30), (
        stack.logs("master-core")
    )
    assert any(e.code == "communication_loss_recovered" for e in third_party.events)
    assert wait_until(lambda: closed(third_party), 30)
    state = third_party.state()
    assert state is not None and not state.faults, state


def test_a_rack_on_another_machine_takes_over_through_the_broker(
    stack: ComposeStack, third_party: ThirdParty, tmp_path: Path
) -> None:
    """compose.rack-remote.yaml: the rack finds the central broker by host name and logs in
    with its own rack user's password copied from the central machine."""
    assert wait_until(lambda: closed(third_party), 60)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o755)
    (secrets / "password").write_text(stack.password("slave_agent-rack1") + "\n")
    (secrets / "password").chmod(0o644)  # the image's user (uid 10001) reads it
    remote = ComposeStack(
        stack.client,
        TAG,
        files=(
            DEPLOY / "compose.rack-remote.yaml",
            Path(__file__).with_name("remote-network.yaml"),
        ),
        env={
            "BMS_MQTT_URL": "mqtt://broker:1883",
            "BMS_RACK": "1",
            "BMS_SECRETS_DIR": str(secrets),
            "CENTRAL_NETWORK": stack.network,
        },
    )
    stack.container(RACK).stop()  # the central rack 1 goes; the remote one replaces it
    try:
        remote.up()
        remote.wait_healthy(120)
        host = remote.container("rack").attrs["Config"]["Hostname"]

        def remote_rack_online() -> bool:
            status = third_party.get(SERVICE_STATUS, service="slave_agent-rack1")
            return status is not None and status.state == "online" and status.host == host

        assert wait_until(remote_rack_online, 30)
        assert wait_until(lambda: not third_party.state().stale_modules, 30)  # type: ignore[union-attr]
        bus, commands = operator(stack)
        try:
            # the switch-over may have latched a loss of communication: the reset is the one
            # operator action, the master (auto_close) closes the contactors again
            reply = commands.request("reset_faults", ResetFaultsArgs(), ttl_s=10)
            assert reply is not None and reply.status == "accepted", reply
        finally:
            bus.stop(timeout_s=1)
        assert wait_until(lambda: closed(third_party), 30)
    finally:
        remote.down()
