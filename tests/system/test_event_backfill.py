"""Events missed by the integrations bridge and by a third party, fetched from the master's log
on a real mosquitto with the generated passwords and ACL of the system.

The master (`python -m services.master_core`, its in-process plant) raises
`controller_heartbeat_lost` each time the web application's heartbeat stops; a gateway (the
`can_gateway` user) raises events of its own, which the master keeps. The bridge
(`python -m services.integrations`, alerts to a local webhook) is stopped, events are raised,
the bridge starts again: the webhook gets every missed event exactly once. A third party with
the `events_reader` user fetches the log and is rate limited; nobody else reads its replies.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port
from shared.bus import MqttBus
from shared.commands import CommandClient
from shared.config import SystemConfig
from shared.deploy import credentials
from shared.messages import CommandReply, ConfigMessage, Event, EventsQueryArgs, HeartbeatArgs
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG, EVENTS

from .agents import ServiceProcess, wait_until
from .test_integrations import Webhook

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

HEARTBEAT_TIMEOUT_S = 1.0
LOST = "controller_heartbeat_lost"
PROBE = "backfill_probe"


@dataclass
class Broker:
    port: int
    store: Path
    system: str

    def password_file(self, user: str) -> str:
        return str(self.store / user / "password")

    def url(self, user: str) -> str:
        password = (self.store / user / "password").read_text().strip()
        return f"mqtt://{user}:{password}@127.0.0.1:{self.port}"

    def service(self, name: str, user: str, log_dir: Path, **env: str) -> ServiceProcess:
        return ServiceProcess(
            name, f"mqtt://127.0.0.1:{self.port}", self.system, log_dir,
            mqtt_username=user, mqtt_password_file=self.password_file(user), **env,
        )  # fmt: skip

    def bus(self, user: str, *, presence: bool = True) -> MqttBus:
        bus = MqttBus(parse_mqtt_url(self.url(user)), system=self.system, service=user,
                      kind="test", presence=presence)  # fmt: skip
        return bus


@pytest.fixture
def broker(tmp_path: Path, system_id: str) -> Iterator[Broker]:
    store = tmp_path / "credentials"
    credentials.init(store, uid=None, system=system_id)
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {store / 'broker' / 'passwd'}\nacl_file {store / 'broker' / 'acl'}\n"
    )
    with MosquittoBroker(extra_config=extra):
        wait_for_port("127.0.0.1", port, 5)
        yield Broker(port, store, system_id)


class Pumped:
    """A bus processed by a thread of its own."""

    def __init__(self, bus: MqttBus) -> None:
        self.bus = bus
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()
        assert bus.start(wait_s=10)

    def _pump(self) -> None:
        while not self.stop.is_set():
            self.bus.process(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.bus.stop(timeout_s=0.5)


class Spy:
    """A raw paho client of one user subscribed to every reply of the system."""

    def __init__(self, broker: Broker, user: str) -> None:
        self.got: list[str] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, (broker.store / user / "password").read_text().strip())
        self.c.on_message = lambda _c, _u, m: self.got.append(m.topic)
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *_a: subscribed.set()
        self.c.on_connect = lambda c, *_a: c.subscribe(f"bms/v1/{broker.system}/reply/#", qos=1)
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()
        assert subscribed.wait(10), user

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_the_bridge_alerts_each_event_it_missed_once_and_a_third_party_fetches_its_own(
    broker: Broker, tmp_path: Path
) -> None:
    system = broker.system
    hook = Webhook()
    rules = [{"name": "ops", "urls": [f"json://127.0.0.1:{hook.port}/bms"],
              "min_level": "warning", "codes": [LOST, PROBE], "quiet_period_s": 0}]  # fmt: skip
    master = broker.service(
        "master_core", "master_core", tmp_path, hardware="simulated", load_profile="constant:0",
        data_dir=str(tmp_path / "master"), heartbeat_timeout_s=str(HEARTBEAT_TIMEOUT_S),
    )  # fmt: skip
    bridge_env = {
        "all_systems": "false", "metrics_port": "0", "alert_rules": json.dumps(rules),
        "events_state_file": str(tmp_path / "bridge" / "events.json"),
    }  # fmt: skip
    ui = Pumped(broker.bus("config_ui"))
    gateway = Pumped(broker.bus("can_gateway"))
    reader_bus = broker.bus("events_reader", presence=False)
    seen: list[Event] = []
    reader_bus.subscribe(EVENTS, lambda d: seen.append(d.message))
    reader = Pumped(reader_bus)
    spies = [Spy(broker, "third_party"), Spy(broker, "config_ui"), Spy(broker, "home_assistant")]
    heart = CommandClient(ui.bus)
    bridge: ServiceProcess | None = None
    procs = [master]
    try:
        config = SystemConfig.from_preset("NMC", system_id=system, modules=2, cells_per_module=4)
        ui.bus.publish(CONFIG, ConfigMessage(config=config))

        def lost_once() -> None:
            """One heartbeat, then silence: the master raises `controller_heartbeat_lost`."""
            before = sum(e.code == LOST for e in list(seen))
            reply = heart.request_pumped("heartbeat", HeartbeatArgs(counter=1), wait_s=10)
            assert reply is not None and reply.status == "accepted", master.log()
            assert wait_until(lambda: sum(e.code == LOST for e in list(seen)) > before, 15), (
                master.log()
            )

        probes = iter(range(100))

        def probe() -> None:
            n = next(probes)
            gateway.bus.publish(
                EVENTS, Event(level="alarm", kind="raise", code=PROBE, text=f"probe {n}")
            )
            assert wait_until(lambda: any(e.text == f"probe {n}" for e in list(seen)), 10)

        # the master runs the configuration; a first loss happens before the bridge is up
        assert wait_until(lambda: any(e.code == "config_applied" for e in list(seen)), 30), (
            master.log()
        )
        lost_once()
        bridge = broker.service("integrations", "integrations", tmp_path, label="-1", **bridge_env)
        procs.append(bridge)

        def alerted() -> tuple[int, Counter[str]]:
            """(heartbeat losses alerted, probe texts alerted)."""
            posts = list(hook.posts)
            probed = Counter(
                p["message"].rsplit("The master says: ", 1)[-1]
                for p in posts
                if PROBE.replace("_", " ") in p["title"]
            )
            return len(posts) - sum(probed.values()), probed

        # the bridge is up once it alerts a loss: then it has a place in the master's stream
        def lost_and_alerted() -> bool:
            lost_once()
            return alerted()[0] > 0

        assert wait_until(lost_and_alerted, 60, step_s=0.5), bridge.log()
        probe()
        assert wait_until(lambda: alerted()[1] == Counter(["probe 0"]), 30), bridge.log()
        losses_before = alerted()[0]
        assert bridge.stop() == 0, bridge.log()

        for _ in range(3):  # while the bridge is down
            lost_once()
            probe()

        bridge = broker.service("integrations", "integrations", tmp_path, label="-2", **bridge_env)
        procs.append(bridge)
        want_probes = Counter(f"probe {n}" for n in range(4))
        assert wait_until(
            lambda: alerted()[0] >= losses_before + 3 and alerted()[1] == want_probes, 60
        ), bridge.log()
        time.sleep(3.0)  # a duplicate would arrive now
        assert alerted() == (losses_before + 3, want_probes), [p["title"] for p in hook.posts]
        assert "Traceback" not in bridge.log()

        # the third party fetches the master's log, and the gateway's events it kept
        fetch = CommandClient(reader.bus)
        page = fetch.request_pumped("events_query", EventsQueryArgs(after_id=0, limit=1000))
        assert page is not None and page.status == "accepted", page
        rows = page.result["events"]
        assert len(rows) <= 500  # the third party's page
        assert sum(r["code"] == LOST for r in rows) == sum(e.code == LOST for e in seen) >= 5
        gw_epoch = next(e.seq_epoch for e in seen if e.code == PROBE)
        kept = fetch.request_pumped(
            "events_query",
            EventsQueryArgs(after_id=-1, source="can_gateway", seq_epoch=gw_epoch),
        )
        assert kept is not None and [r["text"] for r in kept.result["events"]] == [
            f"probe {n}" for n in range(4)
        ]
        # ... within its budget: asking on and on is refused, with the time to wait
        replies: list[CommandReply | None] = []
        done = threading.Event()

        def got(reply: CommandReply | None) -> None:
            replies.append(reply)
            if len(replies) == 12:
                done.set()

        for _ in range(12):
            fetch.send("events_query", EventsQueryArgs(limit=1), on_reply=got)
        assert done.wait(10), replies
        refused = [r for r in replies if r is not None and r.status == "refused"]
        assert refused and all(r.reason.startswith("rate limited") for r in refused)
        assert all(r.result["retry_after_s"] > 0 for r in refused)
        # nobody else read a reply: not the read-only third party, Home Assistant, or the UI
        # (which reads its own heartbeat replies only)
        time.sleep(0.5)
        assert spies[0].got == [] and spies[2].got == []
        assert spies[1].got and all("/reply/config_ui/" in t for t in spies[1].got)
    finally:
        for spy in spies:
            spy.close()
        for pumped in (ui, gateway, reader):
            pumped.close()
        for proc in reversed(procs):
            proc.stop()
        hook.close()
    assert "Traceback" not in master.log()
