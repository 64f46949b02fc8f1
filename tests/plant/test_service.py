"""`python -m services.plant` as a real process beside the slave agent (`--driver modbus` over
Modbus TCP) on a real broker: the configuration from MQTT, the cells on the agent's telemetry,
coils through the master's relay driver, the IVT-S across processes on udp_multicast, faults
from `python -m services.plant inject`.

Run in a private network namespace with a multicast route on lo (see test_wire.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import can
import pytest

from services.master_core.drivers.contactor_io import ModbusContactorIo
from services.master_core.drivers.ivt_s import CurrentSensorReading
from services.master_core.drivers.ivt_s_can import IvtSCanDriver
from services.plant.core import CoilState
from services.plant.settings import DEFAULT_BOARD_MAP
from services.slave_agent.sim import MeasurementParams
from shared.broker import MosquittoBroker, free_port
from shared.bus import Delivery
from shared.config import DeviceCanConfig, SystemConfig
from shared.messages import ChannelFlag, GroundTruth
from shared.topics import SIM_TRUTH
from tests.plant.conftest import require_multicast
from tests.system.agents import ROOT, Recorder, ServiceProcess, publish_config, wait_until

CAN_GROUP = "239.74.163.11"
PROFILE_A = 10.0


@dataclass
class Stack:
    url: str
    system: str
    config: SystemConfig
    plant: ServiceProcess
    agent: ServiceProcess
    recorder: Recorder
    truth: dict[int, GroundTruth]

    def logs(self) -> str:
        return f"--- plant ---\n{self.plant.log()}\n--- agent ---\n{self.agent.log()}"


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> Iterator[Stack]:
    """The plant (devices: the indirect parameter, else boards and relay) and the agent."""
    devices: str = getattr(request, "param", "boards,relay")
    if "ivt_s" in devices:
        require_multicast()
    relay_port, boards_port = free_port(), free_port()
    base = SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    io = base.contactors.io.model_copy(update={"tcp_port": relay_port})
    ivt = base.current_sensor.model_copy(update={"can": DeviceCanConfig(
        interface="udp_multicast", channel=CAN_GROUP)})  # fmt: skip
    config = base.model_copy(update={"contactors": base.contactors.model_copy(update={"io": io}),
                                     "current_sensor": ivt})  # fmt: skip
    ui = publish_config(mosquitto.url, config)
    plant = ServiceProcess(
        "plant", mosquitto.url, system_id, tmp_path, boards_port=str(boards_port),
        devices=devices, inverter="false", load_profile=f"constant:{PROFILE_A}",
        truth_period_s="0.2",
    )  # fmt: skip
    agent = ServiceProcess(
        "slave_agent", mosquitto.url, system_id, tmp_path, driver="modbus",
        modbus_port=f"tcp://127.0.0.1:{boards_port}", modbus_map_file=DEFAULT_BOARD_MAP,
    )  # fmt: skip
    recorder = Recorder(mosquitto.url, system_id)
    truth: dict[int, GroundTruth] = {}
    lock = threading.Lock()

    def on_truth(d: Delivery[GroundTruth]) -> None:
        with lock:
            truth[d.message.module] = d.message

    recorder.bus.subscribe(SIM_TRUTH, on_truth)
    made = Stack(mosquitto.url, system_id, config, plant, agent, recorder, truth)
    try:
        assert wait_until(lambda: len(truth) == 2, 30.0), made.logs()
        yield made
    finally:
        agent.stop()
        plant.stop()
        recorder.close()
        ui.stop()


def inject(stack: Stack, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "services.plant", "inject", *args, "--mqtt-url", stack.url,
         "--system", stack.system],
        cwd=ROOT, check=True, timeout=30,
    )  # fmt: skip


def test_the_agent_reads_the_plant_over_modbus_tcp_and_sees_injected_faults(
    stack: Stack,
) -> None:
    # samples taken once the plant serves its configured boards (the fixture has seen its
    # truth): one read before may be of boards not yet set up, flagged out of range
    since = time.time() + 0.2

    def sampled_since(m: int) -> bool:
        t = stack.recorder.latest(m)
        return t is not None and t.sample_ts > since

    assert wait_until(lambda: sampled_since(0) and sampled_since(1), 30.0), stack.logs()
    bound_mv = MeasurementParams().voltage_error_bound_v * 1000
    for m in (0, 1):
        telemetry = stack.recorder.latest(m)
        assert telemetry is not None and telemetry.cell_flags == [0] * 4
        true_mv = [v * 1000 for v in stack.truth[m].cell_v]
        # +2 mV: truth and telemetry are sampled at different instants
        assert all(
            abs(a - b) <= bound_mv + 2 for a, b in zip(telemetry.cell_mv, true_mv, strict=True)
        )

    # Coils through the master's relay driver: current flows in the cells only once both
    # main contacts are closed.
    relay = ModbusContactorIo(stack.config.contactors.io)
    try:
        relay.write(CoilState(main_negative=True, precharge=True))
        time.sleep(1.0)
        assert stack.truth[1].current_a <= 0.0  # at most the precharge current, out of the pack
        relay.write(CoilState(main_negative=True, main_positive=True))
        assert wait_until(lambda: stack.truth[1].current_a == pytest.approx(PROFILE_A), 10.0)
        relay.write(CoilState())
        assert wait_until(lambda: stack.truth[1].current_a == 0.0, 10.0)
    finally:
        relay.close()

    # A fault from the command line reaches the running plant, and the agent reports it.
    inject(stack, "open_wire", "--module", "2", "--channel", "3")

    def flagged() -> bool:
        t = stack.recorder.latest(1)
        return t is not None and bool(t.cell_flags[2] & ChannelFlag.OPEN_WIRE)

    assert wait_until(flagged, 10.0), stack.logs()
    latest0 = stack.recorder.latest(0)
    assert latest0 is not None and latest0.cell_flags == [0] * 4

    # A board that stops answering: the agent's telemetry of that module stops, not the other.
    inject(stack, "board_dropout", "--module", "1")
    time.sleep(1.0)
    since = time.time()
    assert wait_until(lambda: len(stack.recorder.since(1, since)) >= 3, 10.0)
    assert stack.recorder.since(0, since) == []
    assert "module 0 (unit id 1)" in stack.agent.log()


@pytest.mark.parametrize("stack", ["boards,relay,ivt_s"], indirect=True)
def test_the_master_ivt_s_driver_reads_the_plant_across_processes(stack: Stack) -> None:
    bus = can.Bus(interface="udp_multicast", channel=CAN_GROUP)
    ivt = IvtSCanDriver(bus, stale_after_s=0.5)
    relay = ModbusContactorIo(stack.config.contactors.io)

    def now() -> CurrentSensorReading:
        return ivt.reading(time.monotonic())

    try:
        assert wait_until(lambda: not now().stale, 10.0), stack.logs()
        assert now().current_a == pytest.approx(0.0, abs=0.2)
        pack_v = now().u1_v
        assert pack_v is not None and pack_v > 4 * 3.0
        assert now().u2_v == 0.0

        relay.write(CoilState(main_negative=True, precharge=True))
        assert wait_until(lambda: (now().u2_v or 0.0) > pack_v - 0.5, 10.0), stack.logs()
        relay.write(CoilState(main_negative=True, main_positive=True))
        assert wait_until(lambda: now().current_a == pytest.approx(PROFILE_A, abs=0.2), 10.0), (
            stack.logs()
        )
        inject(stack, "current_dropout")
        assert wait_until(lambda: now().stale and now().current_a is None, 10.0)
    finally:
        relay.close()
        ivt.close()
        bus.shutdown()


def test_inject_refuses_an_unknown_fault() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.plant", "inject", "meltdown"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_help_lists_the_settings() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.plant", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0
    for flag in ("--boards-port", "--devices", "--inverter", "--load-profile"):
        assert flag in done.stdout
