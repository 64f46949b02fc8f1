"""One master process hosting three systems on a real mosquitto (`BMS_SYSTEMS`, host.py).

Each system has its simulated slave agent (its own process, as in a deployment); the master
runs `--hardware simulated` (the plant in its process, one per system): three plants on the
wire would be three more processes on a machine of two cores, and the test is about the
systems' isolation inside the one master process, which the wire does not change. A fault
injected into one system (`python -m services.slave_agent inject`) faults that system only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.broker import MosquittoBroker
from shared.config import SystemConfig

from .agents import Recorder, ServiceProcess, publish_config, wait_until
from .test_master_core import Watch
from .test_slave_agent import inject

pytestmark = pytest.mark.broker


@dataclass
class Host:
    url: str
    systems: list[str]
    master: ServiceProcess
    agents: list[ServiceProcess]
    watches: dict[str, Watch]
    recorders: dict[str, Recorder]

    def contactors(self, system: str) -> str | None:
        state = self.watches[system].latest()
        return None if state is None else state.contactors

    def story(self) -> str:
        states = "\n".join(f"{s}: {w.story(6)}" for s, w in self.watches.items())
        return f"{states}\n--- master\n{self.master.log()[-3000:]}"


@pytest.fixture
def host(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[Host]:
    systems = [f"{system_id[:28]}-{k}" for k in "abc"]
    agents, uis = [], []
    for i, system in enumerate(systems):
        config = SystemConfig.from_preset("NMC", system_id=system, modules=2, cells_per_module=4)
        uis.append(publish_config(mosquitto.url, config))
        agents.append(ServiceProcess("slave_agent", mosquitto.url, system, tmp_path, seed=str(i)))
    master = ServiceProcess(
        "master_core", mosquitto.url, systems[0], tmp_path, label="-host",
        systems=",".join(systems), hardware="simulated", load_profile="constant:-10",
        data_dir=str(tmp_path / "data"),
    )  # fmt: skip
    h = Host(
        mosquitto.url, systems, master, agents,
        {s: Watch(mosquitto.url, s) for s in systems},
        {s: Recorder(mosquitto.url, s) for s in systems},
    )  # fmt: skip
    try:
        closed = wait_until(lambda: all(h.contactors(s) == "closed" for s in systems), 60)
        assert closed, h.story()
        yield h
    finally:
        for w in h.watches.values():
            w.close()
        for r in h.recorders.values():
            r.close()
        master.stop()
        for a in agents:
            a.stop()
        for ui in uis:
            ui.stop(timeout_s=0.5)


def test_one_process_hosts_three_systems_and_a_fault_in_one_leaves_the_others(host: Host) -> None:
    """Each system's pack state is published, each system's master presence comes from the
    same process; an open wire injected into b faults b (its contactors open) while a and c
    stay closed without a fault and keep publishing; stopping the process says every system's
    master offline."""
    a, b, c = host.systems
    for s in host.systems:
        state = host.watches[s].latest()
        assert state is not None and state.cell_v_min is not None and state.faults == []
    pids = set()
    for s in host.systems:
        rec = host.recorders[s]
        assert wait_until(lambda rec=rec: rec.service_status.get("master_core"), 10), s
        pids.add(rec.service_status["master_core"][-1].pid)
    assert pids == {host.master.proc.pid}

    counts = {s: len(host.watches[s].states) for s in (a, c)}
    inject(host.url, b, "open_wire", "--module", "1", "--channel", "2")
    faulted = wait_until(
        lambda: (
            (st := host.watches[b].latest()) is not None
            and "open_wire" in st.faults
            and st.contactors == "fault"
        ),
        30,
    )
    assert faulted, host.story()
    time.sleep(2.0)  # the others run on past b's trip
    for s in (a, c):
        w = host.watches[s]
        with w.lock:
            since = w.states[counts[s] :]
        assert len(since) >= 10, (s, len(since))  # 10 Hz for seconds
        assert all(st.contactors == "closed" and st.faults == [] for st in since), host.story()
    assert "Traceback" not in host.master.log(), host.master.log()[-3000:]
    for s in host.systems:  # no system's cycle, save or loop failed
        counters = host.recorders[s].service_status["master_core"][-1].counters
        bad = {k: counters.get(k, 0) for k in ("cycle_errors", "persist_errors", "loop_errors")}
        assert not any(bad.values()), (s, bad)

    assert host.master.stop() == 0
    for s in host.systems:
        rec = host.recorders[s]
        offline = wait_until(lambda rec=rec: rec.service_status["master_core"][-1].state
                             == "offline", 10)  # fmt: skip
        assert offline, s
