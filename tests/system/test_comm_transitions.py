"""Transitions on a live stack (real mosquitto, real slave agents, real master): a configuration
apply with a new module count and standby -> working, repeated, latch no `communication_loss`,
the contactors close again by themselves (auto-close), and no slave agent fails on the way. A
rack that boots long after the master is waited for with the contactors open, latching nothing.

On the wire path (`WireStack`): the plant serves the boards (the agents read them over Modbus
TCP), the relay module and the sensors; it draws 10 A while the contactors are closed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import MosquittoBroker
from shared.config import SystemConfig
from shared.messages import ConfigMessage, ContactorsArgs, SetModeArgs
from shared.topics import CONFIG

from .agents import Recorder, ServiceProcess, WireStack, publish_config, wait_until
from .test_master_core import Watch


def preset(
    wire: WireStack, system_id: str, modules: int, cells: int, version: int = 1
) -> SystemConfig:
    config = SystemConfig.from_preset(
        "NMC", system_id=system_id, modules=modules, cells_per_module=cells
    )
    return wire.wire(config.model_copy(update={"config_version": version}))


@pytest.fixture
def stack(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A 112-cell system (8 modules of 14 cells), as in the report."""
    wire = WireStack(mosquitto.url, system_id, tmp_path, load_profile="constant:-10")
    config = preset(wire, system_id, 8, 14)
    ui = publish_config(mosquitto.url, config)
    slaves = wire.agent()
    master = wire.master(data_dir=str(tmp_path / "data"))
    watch = Watch(mosquitto.url, system_id)
    rec = Recorder(mosquitto.url, system_id)
    made = dict(ui=ui, slaves=slaves, master=master, watch=watch, rec=rec, config=config,
                wire=wire)  # fmt: skip
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


def close_within_s(config: SystemConfig) -> float:
    """The close sequence's own worst case (every precharge try used), and a margin: a plant
    starved of CPU may need a retry, which is the sequence working, not a latch."""
    c = config.contactors
    tries = c.precharge_retries + 1
    return tries * c.precharge_timeout_s + c.precharge_retries * c.precharge_retry_wait_s + 5.0


def comm_losses(watch: Watch) -> list[str]:
    with watch.lock:
        states = [f"{s.ts}: {s.faults}" for s in watch.states if "communication_loss" in s.faults]
        events = [
            f"{e.ts}: {e.code} {e.text}" for e in watch.events if e.code == "communication_loss"
        ]
    return states[:3] + events


def assert_slaves_healthy(slaves: ServiceProcess) -> None:
    log = slaves.log()
    assert "Traceback" not in log and "cannot reshape" not in log, log[-3000:]


def test_a_new_module_count_latches_nothing_and_closes_again(
    stack: dict[str, Any], system_id: str
) -> None:
    watch: Watch = stack["watch"]
    rec: Recorder = stack["rec"]
    t0 = time.time()
    stack["ui"].publish(
        CONFIG, ConfigMessage(config=preset(stack["wire"], system_id, 9, 14, version=2))
    )
    assert wait_until(lambda: rec.latest(8) is not None, 15), stack["slaves"].log()[-3000:]

    def settled() -> bool:
        s = watch.latest()
        return (
            s is not None and (s.ts or 0) > t0 and s.contactors == "closed" and not s.stale_modules
        )

    assert wait_until(settled, close_within_s(stack["config"]) + 3), (
        watch.story(),
        stack["master"].log()[-3000:],
    )
    time.sleep(1.0)
    assert not comm_losses(watch), comm_losses(watch)
    assert watch.latest().contactors == "closed"  # type: ignore[union-attr]
    assert_slaves_healthy(stack["slaves"])


def test_the_same_layout_again_latches_nothing_and_stays_closed(
    stack: dict[str, Any], system_id: str
) -> None:
    watch: Watch = stack["watch"]
    t0 = time.time()
    same = preset(stack["wire"], system_id, 8, 14, version=2).model_copy(update={"name": "renamed"})
    stack["ui"].publish(CONFIG, ConfigMessage(config=same))
    assert wait_until(
        lambda: (
            (s := watch.latest()) is not None and (s.ts or 0) > t0 + 3 and s.contactors == "closed"
        ),
        close_within_s(stack["config"]) + 3,
    ), (watch.story(), stack["master"].log()[-3000:])
    assert not comm_losses(watch), comm_losses(watch)
    assert_slaves_healthy(stack["slaves"])


def test_standby_and_back_ten_times_latches_nothing(stack: dict[str, Any]) -> None:
    watch: Watch = stack["watch"]
    rec: Recorder = stack["rec"]
    for i in range(10):
        assert watch.command("set_mode", SetModeArgs(mode="standby")).status == "accepted"
        assert wait_until(lambda: (t := rec.latest(0)) is not None and t.mode == "standby", 5)
        last = rec.latest(0)
        assert last is not None
        # the last standby sample is older than 5 working periods when the mode switches back
        time.sleep(max(0.0, last.sample_ts + 0.8 + 0.1 * (i % 10) - time.time()))
        assert watch.command("set_mode", SetModeArgs(mode="working")).status == "accepted"
        assert wait_until(
            lambda: (s := watch.latest()) is not None and s.mode == "working"
            and s.contactors == "closed", close_within_s(stack["config"]),
        ), (i, watch.story(), stack["master"].log()[-3000:])  # fmt: skip
        assert not comm_losses(watch), (i, comm_losses(watch))
    assert_slaves_healthy(stack["slaves"])


LATE_RACK_S = 25.0
"""How long the last rack stays down: well past any timeout of a module that was seen."""


def test_a_rack_that_boots_late_is_waited_for_with_the_contactors_open(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    wire = WireStack(mosquitto.url, system_id, tmp_path, load_profile="constant:-10")
    ui = publish_config(mosquitto.url, preset(wire, system_id, 3, 4))
    master = wire.master(data_dir=str(tmp_path / "data"))
    watch = Watch(mosquitto.url, system_id)
    wire.agent(label="-0-1", modules="0-1")
    try:
        assert wait_until(lambda: (s := watch.latest()) is not None and s.stale_modules == [2], 20)
        t0 = time.time()
        time.sleep(LATE_RACK_S)
        with watch.lock:
            waiting = [s for s in watch.states if (s.ts or 0) >= t0]
        assert len(waiting) > 5 * LATE_RACK_S  # published every 0.1 s
        for s in waiting:
            assert s.contactors == "standby" and not s.faults, s
            assert s.stale_modules == [2], s.stale_modules
            assert (s.limits.charge_current_a, s.limits.discharge_current_a) == (0.0, 0.0)
            assert s.soc is None and s.sum_of_cells_v is None
        reply = watch.command("contactors", ContactorsArgs(action="close"))
        assert reply.status == "refused"
        assert reply.reason == "module 3 has not reported: the pack is not fully supervised"
        wire.agent(label="-2", modules="2")
        assert wait_until(lambda: watch.latest().contactors == "closed", 20), master.log()[-3000:]  # type: ignore[union-attr]
        assert not comm_losses(watch), comm_losses(watch)
        assert watch.latest().stale_modules == []  # type: ignore[union-attr]
    finally:
        watch.close()
        wire.stop()
        ui.stop()
