"""Per-system access on a real mosquitto: every broker user x every topic of the registry x
its own system and a foreign one, publishing and reading, judged by what is delivered.

The broker runs the generated password file and ACL for system `plant1` (a deployment's
BMS_SYSTEM). A test-only `observer` reads everything and a test-only `injector` writes
everything; nothing else is added. A message is judged delivered or not, not by its PUBACK:
MQTT 3.1.1 clients get no refusal at all, and delivery is what matters. Each round ends with a
sentinel published after every PUBACK came back, so that "not delivered" is decided when the
broker has provably handled everything before it (one subscriber's QoS 1 messages arrive in
order), without sleeping.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port
from shared.deploy import acl, credentials
from shared.racks import rack_module_range
from shared.topics import (
    ANY,
    CAN,
    COMMAND,
    COMMAND_REPLY,
    COMMAND_SENDERS,
    EVENTS_READER,
    HA_COMMAND,
    HA_COMMANDS,
    HOME_ASSISTANT,
    INTEGRATIONS,
    MASTER,
    MODBUS,
    OUTSIDE_ROOT,
    SERVICE_STATUS,
    SITE,
    SITE_OWN_TOPICS,
    SITE_SERVED_COMMANDS,
    SLAVE,
    SPARKPLUG_HOST,
    THIRD_PARTY,
    TOPICS,
    UI,
    TopicSpec,
    acl_filter_in,
    spec_for,
)

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

OWN, FOREIGN = "plant1", "plant2"
LAYOUT = acl.RackLayout(racks=2, modules_per_rack=4)
SENTINEL = "test/sentinel"
TEST_USERS = f"""
# test only: sees and writes everything, and every user reads the round's sentinel
user observer
topic read bms/#
topic read {SENTINEL}
user injector
topic write bms/#
topic write {SENTINEL}
pattern read {SENTINEL}
"""
WAIT_S = 10.0
SERVICES = (SLAVE, MASTER, MODBUS, CAN, UI, INTEGRATIONS)  # the roles `any_service` stands for
READS_LIKE = {INTEGRATIONS: THIRD_PARTY, HOME_ASSISTANT: THIRD_PARTY, EVENTS_READER: THIRD_PARTY}
"""The bridge, Home Assistant and the events reader read what a third party reads (and what
they are named a subscriber of)."""


def expected(user: str, access: str, topic: str) -> bool:
    """The oracle, read off the registry: a role may publish what it is a publisher of and
    read what it is a subscriber of (`any_service`: every service); each command by its
    senders; presence and acknowledgements under its own name; a rack its own modules only;
    every service reads presence; events under its own name; and nothing at all outside the
    deployed system."""
    spec = spec_for(topic)
    assert spec is not None, topic
    parsed = spec.parse(topic)
    assert parsed is not None
    system, params = parsed
    if system != OWN:
        return False
    role = SLAVE if user.startswith(f"{SLAVE}-rack") else user
    if role == SITE and spec not in SITE_OWN_TOPICS:  # a site without strings: its own only,
        if spec is COMMAND:  # it serves the site commands and its event log under the site id
            return access == "read" and params["command"] in SITE_SERVED_COMMANDS
        return spec is COMMAND_REPLY and access == "write"

    def listed(roles: tuple[str, ...], who: str = role) -> bool:
        return who in roles or (ANY in roles and who in SERVICES)

    if access == "write":
        ok = listed(spec.publishers)
        if spec is HA_COMMAND:  # Home Assistant asks for these only, never contactors
            ok = ok and params["command"] in HA_COMMANDS
        elif "command" in params:
            ok = ok and listed(COMMAND_SENDERS.get(params["command"], ()))
        for own in ("service", "source"):  # levels that name the publisher itself
            if own in params:
                ok = ok and params[own] == user
    else:
        ok = (
            listed(spec.subscribers, READS_LIKE.get(role, role))
            or role in spec.subscribers
            or (spec is SERVICE_STATUS and role in (*SERVICES, SITE))
        )
        if "user" in params and role != MASTER:  # a reply: the user it names reads it alone
            ok = ok and params["user"] == user
    if "module" in params and role == SLAVE:
        rack = int(user.rsplit("rack", 1)[1])
        ok = ok and int(params["module"]) in rack_module_range(rack, LAYOUT.modules_per_rack)
    if "modules" in params and role == SLAVE:  # an agent's range: the rack's own, exactly
        rack = int(user.rsplit("rack", 1)[1])
        first = rack * LAYOUT.modules_per_rack
        ok = ok and params["modules"] == f"{first}-{first + LAYOUT.modules_per_rack - 1}"
    return ok


def topics_of(spec: TopicSpec[Any], services: tuple[str, ...]) -> set[str]:
    """Concrete topics of a spec in both systems: a module of each rack, each command and one
    nobody sends, each of `services` as the publishing name."""
    values: dict[str, list[str]] = {
        "module": ["1", "5"],
        "modules": ["0-3", "4-7", "0-7", "1-3"],
        "command": [*COMMAND_SENDERS, "unknown"],
        "service": list(services),
        "source": list(services),
        "client": ["c1"],
        "user": list(services),
        "instance": ["master_core"],
    }
    out: set[str] = set()
    for system in (OWN, FOREIGN):
        combos: list[dict[str, str]] = [{}]
        for p in spec.params:
            combos = [{**c, p: v} for c in combos for v in values[p]]
        out |= {spec.topic(system, **c) for c in combos}
    return out


def all_topics(services: tuple[str, ...]) -> list[str]:
    return sorted(set().union(*(topics_of(s, services) for s in TOPICS)))


class Client:
    """A paho client that records what it receives and waits for its round's sentinel."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.user = user
        self.received: list[str] = []
        self.sentinels: set[str] = set()
        self.cond = threading.Condition()
        self.subacks = 0
        client_id = f"{user}-{uuid.uuid4().hex[:6]}"
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password)
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        connected = threading.Event()
        self.c.on_connect = lambda *a: connected.set() if not a[3].is_failure else None
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert connected.wait(WAIT_S), f"{user} could not log in"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            if msg.topic == SENTINEL:
                self.sentinels.add(msg.payload.decode())
            else:
                self.received.append(msg.topic)
            self.cond.notify_all()

    def _on_subscribe(self, *_a: Any) -> None:
        with self.cond:
            self.subacks += 1
            self.cond.notify_all()

    def subscribe(self, *filters: str) -> None:
        with self.cond:
            before = self.subacks
        self.c.subscribe([(f, 1) for f in filters])
        with self.cond:
            assert self.cond.wait_for(lambda: self.subacks > before, WAIT_S), self.user

    def publish_all(self, topics: list[str]) -> None:
        """QoS 1 each, and wait for every PUBACK: the broker has then handled them all."""
        infos = [self.c.publish(t, self.user.encode(), qos=1) for t in topics]
        for info in infos:
            info.wait_for_publish(WAIT_S)
            assert info.is_published(), self.user

    def round_ended(self, token: str) -> list[str]:
        """What arrived before the sentinel `token`; clears it for the next round."""
        with self.cond:
            assert self.cond.wait_for(lambda: token in self.sentinels, WAIT_S), self.user
            got, self.received = self.received, []
            return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@dataclass
class Broker:
    port: int
    store: Path

    def login(self, user: str) -> Client:
        password = (self.store / user / "password").read_text().strip()
        return Client(self.port, user, password)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    store = tmp_path_factory.mktemp("credentials")
    credentials.init(store, uid=None, layout=LAYOUT, system=OWN)
    test_passwords = {u: credentials.new_secret() for u in ("observer", "injector")}
    for user, password in test_passwords.items():
        (store / user).mkdir()
        (store / user / "password").write_text(password)
    passwd = store / "test-passwd"
    passwd.write_text(
        (store / "broker" / "passwd").read_text() + credentials.password_file(test_passwords)
    )
    acl_file = store / "test-acl"
    acl_file.write_text((store / "broker" / "acl").read_text() + TEST_USERS)
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl_file}\n"
    )
    with MosquittoBroker(extra_config=extra):
        wait_for_port("127.0.0.1", port, 5)
        yield Broker(port, store)


def sentinel(injector: Client) -> str:
    token = uuid.uuid4().hex
    injector.c.publish(SENTINEL, token.encode(), qos=1).wait_for_publish(WAIT_S)
    return token


def test_the_acl_names_the_deployed_system_only() -> None:
    text = acl.render(LAYOUT, OWN)
    rules = [line.split() for line in text.splitlines() if line.startswith("topic ")]
    outside = {  # Home Assistant's, Sparkplug's
        acl_filter_in(p, OWN, None) for grants in OUTSIDE_ROOT.values() for p, _ in grants
    }
    assert rules and all(r[2].startswith(f"bms/v1/{OWN}/") or r[2] in outside for r in rules)


def test_the_generator_agrees_with_the_registry_everywhere() -> None:
    """The same matrix without a broker: `acl.may` against the oracle."""
    for user in acl.users(LAYOUT):
        for topic in all_topics((user, "master_core", "slave_agent-rack1")):
            for access in ("read", "write"):
                want = expected(user, access, topic)
                assert acl.may(user, access, topic, LAYOUT, OWN) == want, (user, access, topic)


@pytest.mark.parametrize("user", acl.users(LAYOUT))
def test_each_user_publishes_only_its_own_topics_of_its_own_system(
    broker: Broker, user: str
) -> None:
    observer, injector, client = (broker.login(u) for u in ("observer", "injector", user))
    try:
        observer.subscribe("bms/#", SENTINEL)
        topics = all_topics((user, "master_core" if user != "master_core" else "config_ui"))
        client.publish_all(topics)
        delivered = observer.round_ended(sentinel(injector))
        allowed = {t for t in topics if expected(user, "write", t)}
        assert sorted(delivered) == sorted(allowed), (
            f"{user}: forbidden yet delivered {sorted(set(delivered) - allowed)}, "
            f"allowed yet lost {sorted(allowed - set(delivered))}"
        )
        assert all(f"/{OWN}/" in t for t in allowed)
        # the third party only reads; the Sparkplug host has nothing under bms/v1/
        assert bool(allowed) == (user not in (THIRD_PARTY, SPARKPLUG_HOST)), user
    finally:
        for c in (observer, injector, client):
            c.close()


def test_each_user_reads_only_its_own_topics_of_its_own_system(broker: Broker) -> None:
    """Every user subscribes to the whole tree, as a tap would; the injector publishes every
    topic of both systems and each user gets exactly what it may read of its own system."""
    readers = {u: broker.login(u) for u in acl.users(LAYOUT)}
    injector = broker.login("injector")
    try:
        for reader in readers.values():
            reader.subscribe("bms/#", SENTINEL)
        topics = all_topics(("master_core", "slave_agent-rack1", UI, INTEGRATIONS, EVENTS_READER))
        injector.publish_all(topics)
        token = sentinel(injector)
        for user, reader in readers.items():
            got = reader.round_ended(token)
            allowed = {t for t in topics if expected(user, "read", t)}
            assert sorted(got) == sorted(allowed), (
                f"{user}: forbidden yet delivered {sorted(set(got) - allowed)}, "
                f"allowed yet lost {sorted(allowed - set(got))}"
            )
            assert bool(allowed) == (user != SPARKPLUG_HOST), user  # it reads Sparkplug only
            assert all(f"/{OWN}/" in t for t in allowed), user
    finally:
        for c in (*readers.values(), injector):
            c.close()


@pytest.mark.parametrize(
    ("user", "access", "topic", "allowed"),
    [
        ("slave_agent-rack0", "write", f"bms/v1/{OWN}/slave/1/telemetry", True),
        ("slave_agent-rack0", "write", f"bms/v1/{FOREIGN}/slave/1/telemetry", False),
        ("slave_agent-rack0", "write", f"bms/v1/{OWN}/slave/5/telemetry", False),
        ("slave_agent-rack1", "write", f"bms/v1/{FOREIGN}/service/slave_agent-rack1/status", False),
        ("master_core", "write", f"bms/v1/{FOREIGN}/pack/state", False),
        ("master_core", "write", f"bms/v1/{FOREIGN}/events/master_core", False),
        ("master_core", "write", f"bms/v1/{OWN}/events/master_core", True),
        ("modbus_gateway", "write", f"bms/v1/{OWN}/events/master_core", False),
        ("config_ui", "write", f"bms/v1/{FOREIGN}/cmd/service_reset", False),
        ("config_ui", "write", f"bms/v1/{OWN}/cmd/service_reset", True),
        ("modbus_gateway", "write", f"bms/v1/{OWN}/cmd/service_reset", False),
        ("third_party", "read", f"bms/v1/{OWN}/pack/state", True),
        ("third_party", "read", f"bms/v1/{FOREIGN}/pack/state", False),
        ("master_core", "read", f"bms/v1/{FOREIGN}/slave/1/telemetry", False),
        ("home_assistant", "write", f"bms/v1/{OWN}/ha/cmd/reset_faults", True),
        ("home_assistant", "write", f"bms/v1/{OWN}/ha/cmd/contactors", False),
        ("integrations", "read", f"bms/v1/{OWN}/pack/state", True),
        ("integrations", "write", f"bms/v1/{OWN}/pack/state", False),
        # events_query: the bridge and the events reader fetch what they missed, each reading
        # its own replies only; the read-only third party and Home Assistant ask nothing
        ("integrations", "write", f"bms/v1/{OWN}/cmd/events_query", True),
        ("integrations", "write", f"bms/v1/{OWN}/cmd/reset_faults", False),
        ("integrations", "read", f"bms/v1/{OWN}/reply/integrations/c1", True),
        ("integrations", "read", f"bms/v1/{OWN}/reply/events_reader/c1", False),
        ("events_reader", "write", f"bms/v1/{OWN}/cmd/events_query", True),
        ("events_reader", "write", f"bms/v1/{FOREIGN}/cmd/events_query", False),
        ("events_reader", "write", f"bms/v1/{OWN}/cmd/contactors", False),
        ("events_reader", "write", f"bms/v1/{OWN}/events/events_reader", False),
        ("events_reader", "read", f"bms/v1/{OWN}/events/master_core", True),
        ("events_reader", "read", f"bms/v1/{OWN}/reply/events_reader/c1", True),
        ("events_reader", "read", f"bms/v1/{OWN}/reply/config_ui/c1", False),
        ("events_reader", "read", f"bms/v1/{FOREIGN}/reply/events_reader/c1", False),
        ("config_ui", "read", f"bms/v1/{OWN}/reply/config_ui/c1", True),
        ("config_ui", "read", f"bms/v1/{OWN}/reply/events_reader/c1", False),
        ("modbus_gateway", "read", f"bms/v1/{OWN}/reply/config_ui/c1", False),
        ("master_core", "write", f"bms/v1/{OWN}/reply/events_reader/c1", True),
        ("master_core", "read", f"bms/v1/{OWN}/reply/events_reader/c1", False),
        ("third_party", "write", f"bms/v1/{OWN}/cmd/events_query", False),
        ("third_party", "read", f"bms/v1/{OWN}/reply/third_party/c1", False),
        ("home_assistant", "write", f"bms/v1/{OWN}/cmd/events_query", False),
        ("home_assistant", "read", f"bms/v1/{OWN}/reply/events_reader/c1", False),
        ("sparkplug_host", "write", f"bms/v1/{OWN}/cmd/reset_faults", False),
        ("sparkplug_host", "read", f"bms/v1/{OWN}/pack/state", False),
        # a site controller of a site without strings: its own topics, nothing of a string
        ("site_controller", "write", f"bms/v1/{OWN}/site/state", True),
        ("site_controller", "write", f"bms/v1/{OWN}/events/site_controller", True),
        ("site_controller", "read", f"bms/v1/{OWN}/site/config", True),
        ("site_controller", "write", f"bms/v1/{OWN}/cmd/set_mode", False),
        ("site_controller", "read", f"bms/v1/{OWN}/pack/state", False),
        ("site_controller", "write", f"bms/v1/{FOREIGN}/site/state", False),
        ("config_ui", "write", f"bms/v1/{OWN}/site/config", True),
        ("modbus_gateway", "read", f"bms/v1/{OWN}/site/state", True),
        ("modbus_gateway", "write", f"bms/v1/{OWN}/site/state", False),
    ],
)
def test_the_oracle_says_what_the_issue_asks(
    user: str, access: str, topic: str, allowed: bool
) -> None:
    """Spelled out, so that the oracle above cannot drift into agreeing with a wrong ACL."""
    assert expected(user, access, topic) == allowed
    assert acl.may(user, access, topic, LAYOUT, OWN) == allowed
