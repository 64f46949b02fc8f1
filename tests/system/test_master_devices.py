"""`python -m services.master_core` with `BMS_HARDWARE=devices` on a real broker: the simulated
IVT-S on udp_multicast (another process, so not the `virtual` bus) and the simulated relay
module on Modbus TCP, with real slave agents. The master configures the sensor, closes the
contactors through the relay module's coils, publishes the sensor's current, and releases the
coils when it stops."""

from __future__ import annotations

from pathlib import Path

import can
import pytest

from services.master_core.drivers.ivt_s import Quantity, TriggerMode
from services.plant.devices.ivt_s import SimulatedIvtS
from services.plant.devices.relay import RelayModule
from shared.broker import MosquittoBroker
from tests.master_core.test_devices import (
    CYCLE_MS,
    MCAST_GROUP,
    IvtSRunner,
    free_port,
    multicast_works,
    system_config,
)

from .agents import Recorder, ServiceProcess, publish_config, wait_until
from .test_master_core import Watch

LOAD_A = 12.0
TAU_S = 0.05


def test_the_master_process_runs_on_devices(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    if not multicast_works():
        pytest.skip("no multicast route (ip link set lo multicast on; ip route add ...)")
    relay = RelayModule(follow_delay_s=0.01)
    port = free_port()
    relay.start_tcp(port)
    config = system_config("udp_multicast", MCAST_GROUP, {"transport": "tcp", "tcp_port": port},
                           system_id)  # fmt: skip
    ui = publish_config(mosquitto.url, config)
    slaves = ServiceProcess("slave_agent", mosquitto.url, system_id, tmp_path, initial_soc_pct="60")
    rec = Recorder(mosquitto.url, system_id)
    ivt: IvtSRunner | None = None
    master: ServiceProcess | None = None
    watch = Watch(mosquitto.url, system_id)
    try:
        assert wait_until(lambda: all(rec.latest(m) is not None for m in (0, 1)), 20), slaves.log()

        def string_v() -> float:
            return sum(sum(t.cell_mv) for m in (0, 1) if (t := rec.latest(m))) / 1000.0

        def physics(sim: SimulatedIvtS) -> None:
            positive, negative, precharge = relay.inputs()[:3]
            u1 = string_v()
            u2 = sim.values[Quantity.U2_V]
            target = u1 if negative and (positive or precharge) else 0.0
            sim.values[Quantity.U2_V] = u2 + (target - u2) * min(CYCLE_MS / 1000.0 / TAU_S, 1.0)
            sim.values[Quantity.U1_V] = u1
            sim.values[Quantity.CURRENT_A] = LOAD_A if positive and negative else 0.0

        ivt = IvtSRunner(can.Bus(interface="udp_multicast", channel=MCAST_GROUP), update=physics)
        master = ServiceProcess(
            "master_core", mosquitto.url, system_id, tmp_path,
            data_dir=str(tmp_path / "data"), hardware="devices",
        )  # fmt: skip
        closed = wait_until(
            lambda: (
                (s := watch.latest()) is not None
                and s.contactors == "closed"
                and s.current is not None
                and abs(s.current - LOAD_A) < 0.01
            ),
            30,
        )
        assert closed, (watch.latest(), master.log()[-3000:])
        with ivt.lock:
            cyclic = {q for q, m in ivt.sim.trigger.items() if m is TriggerMode.CYCLIC}
        assert cyclic == {Quantity.CURRENT_A, Quantity.U1_V, Quantity.U2_V}
        assert relay.coils()[:3] == [True, True, False]
        assert "precharge" in {s.contactors for s in watch.states}
        assert master.stop() == 0, master.log()[-3000:]
        assert relay.coils()[:3] == [False, False, False]  # released when the master stops
    finally:
        if master is not None:
            master.stop()
        if ivt is not None:
            ivt.stop()
        watch.close()
        rec.close()
        slaves.stop()
        ui.stop()
        relay.stop()
