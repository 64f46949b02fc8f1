"""The master with real slave agents on a real broker: protection reaches the contactors.

On the wire path (`WireStack`): the plant process serves the boards, the relay module, the
IVT-S and the iso165C; faults are injected into the plant. The plant draws 10 A (discharge)
whenever the contactors are closed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import MosquittoBroker
from shared.bus import Delivery, MqttBus
from shared.commands import CommandClient
from shared.config import SystemConfig
from shared.messages import (
    ContactorsArgs,
    Event,
    EventsQueryArgs,
    HeartbeatArgs,
    PackState,
    ResetFaultsArgs,
    SetModeArgs,
)
from shared.settings import parse_mqtt_url
from shared.topics import EVENTS, PACK_STATE

from .agents import Recorder, WireStack, publish_config, wait_until


class Watch:
    """Pack state and events as a third party sees them."""

    def __init__(self, url: str, system: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=system, service="watch", kind="test")
        self.states: list[PackState] = []
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.bus.subscribe(PACK_STATE, self._state)
        self.bus.subscribe(EVENTS, self._event)
        self.client = CommandClient(self.bus)
        self.stop = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.bus.start(wait_s=10)

    def _pump(self) -> None:
        while not self.stop.is_set():
            self.bus.process(0.05)

    def _state(self, d: Delivery[PackState]) -> None:
        with self.lock:
            self.states.append(d.message)

    def _event(self, d: Delivery[Event]) -> None:
        with self.lock:
            self.events.append(d.message)

    def latest(self) -> PackState | None:
        with self.lock:
            return self.states[-1] if self.states else None

    def story(self, events: int = 12) -> str:
        """What a failed wait shows: the last state and the last events."""
        with self.lock:
            s = self.states[-1] if self.states else None
            last = self.events[-events:]
        head = (
            "no state"
            if s is None
            else f"state at {s.ts}: mode {s.mode}, contactors {s.contactors}, faults {s.faults}, "
            f"stale {s.stale_modules}"
        )
        return "\n".join([head, *(f"{e.ts}: {e.level} {e.code} {e.text}" for e in last)])

    def command(self, name: str, args: Any) -> Any:
        replies: list[Any] = []
        done = threading.Event()
        self.client.send(name, args, ttl_s=5, on_reply=lambda r: (replies.append(r), done.set()))
        assert done.wait(6), f"no reply to {name}"
        return replies[0]

    def close(self) -> None:
        self.stop.set()
        self.bus.stop(timeout_s=0.5)


@pytest.fixture
def system(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    wire = WireStack(mosquitto.url, system_id, tmp_path, load_profile="constant:-10")
    config = wire.wire(
        SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    )
    ui = publish_config(mosquitto.url, config)
    slaves = wire.agent()
    env = {"data_dir": str(tmp_path / "data")}
    master = wire.master(**env)
    watch = Watch(mosquitto.url, system_id)
    rec = Recorder(mosquitto.url, system_id)
    made: dict[str, Any] = dict(
        config=config,
        slaves=slaves,
        master=master,
        watch=watch,
        rec=rec,
        url=mosquitto.url,
        env=env,
        tmp=tmp_path,
        wire=wire,
    )
    try:  # a failed start must not leave the services running
        closed = wait_until(
            lambda: (s := watch.latest()) is not None and s.contactors == "closed", 30
        )
        assert closed, wire.logs()
        yield made
    finally:
        watch.close()
        rec.close()
        wire.stop()
        ui.stop()


def test_overvoltage_opens_contactors_within_the_delay_plus_one_sample(
    system: dict[str, Any], system_id: str
) -> None:
    watch: Watch = system["watch"]
    rec: Recorder = system["rec"]
    fault = system["config"].protection.cell_overvoltage.fault
    wire: WireStack = system["wire"]
    wire.inject("cell_drift", "--module", "2", "--channel", "3", "--value", "1.0")
    assert wait_until(lambda: (s := watch.latest()) is not None and s.contactors == "fault", 10), (
        system["master"].log()
    )
    state = next(s for s in watch.states if s.contactors == "fault")
    crossed = next(t for t in rec.telemetry[1] if t.cell_mv[2] > fault.threshold * 1000)
    reaction_s = (state.ts or 0) - crossed.sample_ts
    assert reaction_s <= fault.delay_s + 0.1 + 0.1, reaction_s  # + one sample + scheduling margin
    assert reaction_s >= fault.delay_s - 0.1  # not before its delay
    assert "cell_overvoltage" in state.faults
    assert any(
        e.code == "cell_overvoltage" and e.level == "fault" and e.kind == "raise"
        for e in watch.events
    )

    reply = watch.command("reset_faults", ResetFaultsArgs())
    assert reply.status == "refused" and "cell_overvoltage" in reply.reason
    wire.inject("clear")
    assert wait_until(lambda: rec.latest(1).cell_mv[2] < 4100, 5)  # type: ignore[union-attr]
    time.sleep(0.5)
    reply = watch.command("reset_faults", ResetFaultsArgs())
    assert reply.status == "accepted", reply.reason
    # the reset is the only operator action: with auto_close the contactors close again
    assert wait_until(lambda: watch.latest().contactors == "closed", 10)  # type: ignore[union-attr]


def test_killing_a_slave_raises_loss_of_communication(system: dict[str, Any]) -> None:
    watch: Watch = system["watch"]
    os.kill(system["slaves"].proc.pid, signal.SIGKILL)
    assert wait_until(lambda: "communication_loss" in watch.latest().faults, 5)  # type: ignore[union-attr]
    assert wait_until(lambda: watch.latest().contactors == "fault", 2)  # type: ignore[union-attr]
    assert wait_until(lambda: sorted(watch.latest().stale_modules) == [0, 1], 2)  # type: ignore[union-attr]
    limits = watch.latest().limits  # type: ignore[union-attr]
    assert limits.charge_current_a == 0 and limits.discharge_current_a == 0


def test_restart_restores_soc_and_latched_faults(
    system: dict[str, Any], system_id: str, mosquitto: MosquittoBroker
) -> None:
    watch: Watch = system["watch"]
    wire: WireStack = system["wire"]
    wire.inject("cell_drift", "--module", "1", "--channel", "1", "--value", "1.0")
    assert wait_until(lambda: watch.latest().contactors == "fault", 10)  # type: ignore[union-attr]
    wire.inject("clear")
    time.sleep(1.0)
    soc_before = watch.latest().soc  # type: ignore[union-attr]
    system["master"].stop()
    system["master"] = wire.master(**system["env"])
    t0 = time.time()
    assert wait_until(lambda: (s := watch.latest()) is not None and (s.ts or 0) > t0 + 0.5, 15)
    after = watch.latest()
    assert after is not None
    assert "cell_overvoltage" in after.faults
    assert after.contactors in ("fault", "standby")
    assert abs(after.soc - soc_before) < 1.0


def test_standby_mode_opens_contactors_and_slows_the_slaves(system: dict[str, Any]) -> None:
    watch: Watch = system["watch"]
    rec: Recorder = system["rec"]
    assert watch.command("set_mode", SetModeArgs(mode="standby")).status == "accepted"
    assert wait_until(
        lambda: watch.latest().mode == "standby" and watch.latest().contactors == "standby", 5
    )  # type: ignore[union-attr]
    assert wait_until(lambda: rec.latest(0).mode == "standby", 5)  # type: ignore[union-attr]
    reply = watch.command("contactors", ContactorsArgs(action="close"))
    assert reply.status == "refused" and "standby" in reply.reason
    time.sleep(3)
    assert "communication_loss" not in watch.latest().faults  # type: ignore[union-attr]
    reply = watch.command("events_query", EventsQueryArgs(limit=50))
    codes = [e["code"] for e in reply.result["events"]]
    assert "mode_standby" in codes and "config_applied" in codes


def test_controller_heartbeat_watchdog_falls_back_to_safe_limits(
    system: dict[str, Any], system_id: str, mosquitto: MosquittoBroker
) -> None:
    watch: Watch = system["watch"]
    system["master"].stop()
    env = system["env"] | {"heartbeat_timeout_s": "1.5"}
    t0 = time.time()
    system["master"] = system["wire"].master(**env)
    assert wait_until(
        lambda: (
            (s := watch.latest()) is not None and (s.ts or 0) > t0 + 1 and s.contactors == "closed"
        ),
        20,
    )
    beating = threading.Event()
    beating.set()

    def beat() -> None:
        counter = 0
        while beating.is_set():
            watch.client.send("heartbeat", HeartbeatArgs(counter=counter), ttl_s=2)
            counter += 1
            time.sleep(0.3)

    threading.Thread(target=beat, daemon=True).start()
    # limits rise only after the recovery hold that follows the start-up
    assert wait_until(lambda: watch.latest().limits.discharge_current_a > 0, 30)  # type: ignore[union-attr]
    beating.clear()
    assert wait_until(lambda: watch.latest().limits.discharge_current_a == 0, 4)  # type: ignore[union-attr]
    assert watch.latest().limits.discharge_reason == "stale_data"  # type: ignore[union-attr]
    assert wait_until(lambda: any(e.code == "controller_heartbeat_lost" for e in watch.events), 2)
