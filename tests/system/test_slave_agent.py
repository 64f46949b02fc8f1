"""The slave agent as a real process on a real broker, driven like the master would."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.slave_agent.inject import inject_main as agent_inject_main
from shared.broker import MosquittoBroker
from shared.bus import MqttBus
from shared.config import SystemConfig
from shared.messages import (
    BalanceCommand,
    ChannelFlag,
    GroundTruth,
    SlaveModeCommand,
)
from shared.settings import parse_mqtt_url
from shared.topics import PACK_STATE, SIM_TRUTH, SLAVE_BALANCE, SLAVE_MODE
from tests.factories import pack_state

from .agents import Recorder, ServiceProcess, publish_config, wait_until


def small_config(system: str, modules: int = 2, cells: int = 4) -> SystemConfig:
    """The NMC preset, balancing from 3.6 V: the simulated cells start at 50 % (3.74 V on the
    NMC table), below the preset's balancing start (3.8 V), and these tests are about the
    switches, commands and modes, not that threshold."""
    config = SystemConfig.from_preset(
        "NMC", system_id=system, modules=modules, cells_per_module=cells
    )
    data = config.model_dump()
    data["balancing"]["min_cell_voltage_v"] = 3.6
    return SystemConfig.model_validate(data)


@pytest.fixture
def stack(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> Iterator[dict[str, object]]:
    made: dict[str, object] = {"procs": [], "buses": []}

    def agent(config: SystemConfig, **env: str) -> ServiceProcess:
        made["buses"].append(publish_config(mosquitto.url, config))  # type: ignore[union-attr]
        proc = ServiceProcess("slave_agent", mosquitto.url, system_id, tmp_path, **env)
        made["procs"].append(proc)  # type: ignore[union-attr]
        return proc

    master = MqttBus(
        parse_mqtt_url(mosquitto.url), system=system_id, service="master_core", kind="test"
    )
    assert master.start(wait_s=10)
    recorder = Recorder(mosquitto.url, system_id)
    made.update(agent=agent, master=master, recorder=recorder, url=mosquitto.url)
    yield made
    for p in made["procs"]:  # type: ignore[attr-defined]
        p.stop()
    for b in made["buses"]:  # type: ignore[attr-defined]
        b.stop()
    recorder.close()
    master.stop()


def inject(url: str, system: str, *args: str) -> None:
    """`python -m services.slave_agent inject ARGS`, its own code without a fork per fault
    (17 interpreters under load took most of the test's time)."""
    assert agent_inject_main([*args, "--mqtt-url", url, "--system", system]) == 0


def test_ten_hertz_for_fourteen_modules_of_fourteen_cells(stack: dict, system_id: str) -> None:
    agent = stack["agent"](
        SystemConfig.from_preset("NMC", system_id=system_id, modules=14, cells_per_module=14)
    )
    rec: Recorder = stack["recorder"]
    assert wait_until(lambda: all(rec.latest(m) for m in range(14)), 15), agent.log()
    time.sleep(1.0)
    t0 = time.time()
    time.sleep(31.0)
    for m in range(14):
        window = [t for t in rec.since(m, t0) if t.sample_ts < t0 + 30.0]
        assert 294 <= len(window) <= 306, (m, len(window))
        seqs = [t.seq for t in rec.since(m, t0) if t.seq is not None]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "sequence gap"
        assert len(window[0].cell_mv) == 14 and len(window[0].temp_c) == 2
    periods = [b.sample_ts - a.sample_ts for a, b in itertools.pairwise(window)]
    assert abs(statistics.mean(periods) - 0.1) < 0.002


def test_standby_samples_slowly_without_balancing_and_back(stack: dict, system_id: str) -> None:
    stack["agent"](small_config(system_id))
    rec: Recorder = stack["recorder"]
    master: MqttBus = stack["master"]
    assert wait_until(lambda: rec.latest(0) is not None, 15)
    master.publish(PACK_STATE, pack_state())
    master.publish(
        SLAVE_BALANCE,
        BalanceCommand(module=0, expires_at=time.time() + 30, discharge=[True] * 4),
        module=0,
    )
    assert wait_until(lambda: any(rec.latest(0).balancing), 5)  # type: ignore[union-attr]

    master.publish(SLAVE_MODE, SlaveModeCommand(mode="standby"))
    assert wait_until(lambda: rec.latest(0).mode == "standby", 5)  # type: ignore[union-attr]
    t0 = time.time()
    time.sleep(4.5)
    slow = rec.since(0, t0)
    assert 1 <= len(slow) <= 3  # one sample every 2 s
    assert all(t.mode == "standby" and not any(t.balancing) for t in slow)

    master.publish(SLAVE_MODE, SlaveModeCommand(mode="working"))
    assert wait_until(lambda: rec.latest(0).mode == "working", 5)  # type: ignore[union-attr]
    t1 = time.time()
    time.sleep(1.0)
    assert len(rec.since(0, t1)) >= 8


def test_balancing_needs_a_fresh_command_and_a_talking_master(stack: dict, system_id: str) -> None:
    stack["agent"](small_config(system_id), master_silence_timeout_s="1.5")
    rec: Recorder = stack["recorder"]
    master: MqttBus = stack["master"]
    assert wait_until(lambda: rec.latest(0) is not None, 15)
    master.publish(PACK_STATE, pack_state())

    master.publish(
        SLAVE_BALANCE,
        BalanceCommand(module=0, expires_at=time.time() - 1, discharge=[True] * 4),
        module=0,
    )
    time.sleep(0.5)
    assert not any(rec.latest(0).balancing)  # type: ignore[union-attr]

    master.publish(
        SLAVE_BALANCE,
        BalanceCommand(
            module=0, expires_at=time.time() + 1.0, discharge=[True, False, True, False]
        ),
        module=0,
    )
    assert wait_until(lambda: rec.latest(0).balancing == [True, False, True, False], 3)  # type: ignore[union-attr]
    assert wait_until(lambda: not any(rec.latest(0).balancing), 3)  # the command expired

    master.publish(
        SLAVE_BALANCE,
        BalanceCommand(module=0, expires_at=time.time() + 60, discharge=[True] * 4),
        module=0,
    )
    assert wait_until(lambda: all(rec.latest(0).balancing), 3)  # type: ignore[union-attr]
    t_silent = time.time()  # the master stops talking: no more pack state
    assert wait_until(lambda: not any(rec.latest(0).balancing), 5)  # type: ignore[union-attr]
    assert time.time() - t_silent >= 0.5


def test_every_fault_injection(stack: dict, system_id: str) -> None:
    agent = stack["agent"](small_config(system_id))
    rec: Recorder = stack["recorder"]
    url: str = stack["url"]
    assert wait_until(lambda: rec.latest(1) is not None, 15)

    def latest(m: int = 1):
        t = rec.latest(m)
        assert t is not None
        return t

    inject(url, system_id, "cell_drift", "--module", "2", "--channel", "3", "--value", "2.0")
    assert wait_until(lambda: latest().cell_mv[2] > 4950, 5)  # pushed out of range
    assert latest().cell_flags[2] & ChannelFlag.OUT_OF_RANGE
    inject(url, system_id, "clear", "--module", "2")
    assert wait_until(lambda: latest().cell_mv[2] < 4300, 5)

    inject(url, system_id, "cell_drift", "--module", "2", "--channel", "1", "--value", "-2.0")
    assert wait_until(lambda: latest().cell_mv[0] < 2500, 5)
    inject(url, system_id, "clear", "--module", "2")

    inject(url, system_id, "over_temperature", "--module", "2", "--channel", "1", "--value", "80")
    assert wait_until(lambda: latest().temp_c[0] > 60, 30)
    inject(url, system_id, "under_temperature", "--module", "2", "--channel", "2", "--value", "-25")
    assert wait_until(lambda: latest().temp_c[1] < -15, 30)
    inject(url, system_id, "clear", "--module", "2")

    inject(url, system_id, "open_wire", "--module", "2", "--channel", "4")
    assert wait_until(lambda: bool(latest().cell_flags[3] & ChannelFlag.OPEN_WIRE), 5)
    assert latest().cell_mv[3] < 1000
    inject(url, system_id, "clear", "--module", "2")
    assert wait_until(lambda: latest().cell_flags[3] == 0, 5)

    inject(url, system_id, "stuck_sensor", "--module", "2", "--channel", "2")
    time.sleep(0.5)
    t0 = time.time()
    time.sleep(1.0)
    assert len({t.cell_mv[1] for t in rec.since(1, t0)}) == 1
    inject(url, system_id, "noisy_channel", "--module", "2", "--channel", "1", "--value", "0.2")
    time.sleep(0.3)
    t0 = time.time()
    time.sleep(2.0)
    noisy = [t.cell_mv[0] for t in rec.since(1, t0)]
    quiet = [t.cell_mv[2] for t in rec.since(1, t0)]
    assert statistics.pstdev(noisy) > 5 * max(statistics.pstdev(quiet), 1.0)
    inject(url, system_id, "clear")

    inject(url, system_id, "dropout", "--module", "2", "--duration-s", "1.0")
    time.sleep(2.0)
    seqs = [t.seq for t in rec.telemetry[1] if t.seq is not None]
    gaps = [b - a for a, b in itertools.pairwise(seqs) if b - a > 1]
    assert gaps and max(gaps) >= 8  # about ten samples lost, visible to the master
    assert rec.telemetry[0], "dropout hit one module only"

    before = latest().overruns
    inject(url, system_id, "slow_samples", "--value", "0.25", "--duration-s", "1.0")
    assert wait_until(lambda: latest().overruns > before, 5)

    inject(url, system_id, "late_samples", "--value", "2.0", "--duration-s", "1.0")
    assert wait_until(lambda: latest().ts - latest().sample_ts > 1.5, 5)  # type: ignore[operator]
    assert agent.proc.poll() is None


def test_crash_leaves_last_wills(stack: dict, system_id: str) -> None:
    agent = stack["agent"](small_config(system_id))
    rec: Recorder = stack["recorder"]
    assert wait_until(lambda: rec.latest(1) is not None, 15)
    assert wait_until(
        lambda: all(
            rec.slave_status[m] and rec.slave_status[m][-1].state == "online" for m in (0, 1)
        ),
        5,
    )
    inject(stack["url"], system_id, "crash")
    assert wait_until(lambda: agent.proc.poll() is not None, 5)
    assert wait_until(lambda: all(rec.slave_status[m][-1].state == "offline" for m in (0, 1)), 5)
    assert rec.service_status["slave_agent"][-1].state == "offline"


def test_bad_commands_are_counted_and_never_crash_the_agent(stack: dict, system_id: str) -> None:
    agent = stack["agent"](small_config(system_id))
    rec: Recorder = stack["recorder"]
    master: MqttBus = stack["master"]
    assert wait_until(lambda: rec.latest(0) is not None, 15)
    master.publish(PACK_STATE, pack_state())
    topic = SLAVE_BALANCE.topic(system_id, module=0)
    for payload in (b"\xc1", b"\x93\x01\x02", b"\x81\xa6module\xa3one", b""):
        master._client.publish(topic, payload, qos=1)
    too_many = BalanceCommand(module=0, expires_at=time.time() + 30, discharge=[True] * 9)
    master.publish(SLAVE_BALANCE, too_many, module=0)
    master.publish(SLAVE_MODE, SlaveModeCommand(mode="working"))
    master._client.publish(SLAVE_MODE.topic(system_id), b"\x81\xa4mode\xa5sleep", qos=1)

    def counters() -> dict[str, int]:
        statuses = rec.service_status["slave_agent"]
        return statuses[-1].counters if statuses else {}

    assert wait_until(lambda: counters().get("payload_errors.slave_balance", 0) >= 4, 10), (
        counters()
    )
    assert counters().get("payload_errors.slave_mode", 0) >= 1
    assert counters().get("balance_refused", 0) >= 1
    assert "refused" in agent.log()
    t0 = time.time()
    time.sleep(0.5)
    assert len(rec.since(0, t0)) >= 4 and agent.proc.poll() is None


def test_two_racks_on_one_broker_with_ground_truth(
    stack: dict, system_id: str, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    config = small_config(system_id, modules=4, cells=3)
    stack["agent"](config, modules="0-1")
    stack["procs"].append(
        ServiceProcess("slave_agent", mosquitto.url, system_id, tmp_path / "..", modules="2,3")
    )
    rec: Recorder = stack["recorder"]
    assert wait_until(lambda: all(rec.latest(m) for m in range(4)), 15)
    assert {"slave_agent-0-1", "slave_agent-2_3"} <= set(rec.service_status)
    sources = {rec.latest(m).source for m in range(4)}  # type: ignore[union-attr]
    assert sources == {"slave_agent-0-1", "slave_agent-2_3"}

    truths: list[GroundTruth] = []
    watcher = MqttBus(parse_mqtt_url(mosquitto.url), system=system_id, service="bench", kind="test")
    watcher.subscribe(SIM_TRUTH, lambda d: truths.append(d.message), module=3)
    assert watcher.start(wait_s=5)
    assert wait_until(lambda: watcher.process(0.1) >= 0 and bool(truths), 5)
    watcher.stop()
    truth = truths[-1]
    reading = rec.latest(3)
    assert reading is not None and len(truth.cell_v) == 3
    for true_v, mv in zip(truth.cell_v, reading.cell_mv, strict=True):
        assert abs(true_v * 1000 - mv) <= 50  # the specified ±0.05 V accuracy
