"""A broker restart on a real mosquitto, read from outside: the loss opens the contactors within
its timeout, and once every module is back the master recovers by itself and says why.

Found from outside: a broker restart of 3 s latched `communication_loss` on every system and
needed an operator at the site, 20 times out of 20, while the cells were fine."""

from __future__ import annotations

import time
from pathlib import Path

from shared.broker import MosquittoBroker
from shared.config import SystemConfig
from shared.messages import EventsQueryArgs

from .agents import WireStack, publish_config, wait_until
from .test_master_core import Watch


def test_a_three_second_broker_restart_recovers_without_an_operator(
    restartable_mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    broker = restartable_mosquitto
    stack = WireStack(broker.url, system_id, tmp_path, load_profile="constant:-10")
    config = stack.wire(
        SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    )
    ui = publish_config(broker.url, config)
    stack.agent()
    master = stack.master(data_dir=str(tmp_path / "data"))
    watch = Watch(broker.url, system_id)
    try:
        closed = wait_until(lambda: (s := watch.latest()) is not None and s.contactors == "closed",
                            30)  # fmt: skip
        assert closed, master.log()
        t_kill = time.time()
        broker.kill()
        time.sleep(3.0)
        broker.start()
        assert wait_until(
            lambda: any("communication_loss" in s.faults for s in watch.states
                        if (s.ts or 0) > t_kill), 30,
        ), master.log()[-3000:]  # fmt: skip
        assert wait_until(
            lambda: (s := watch.latest()) is not None and s.contactors == "closed"
            and not s.faults and (s.ts or 0) > t_kill + 3, 30,
        ), (watch.latest(), master.log()[-3000:])  # fmt: skip
        reply = watch.command("events_query", EventsQueryArgs(since_ts=t_kill, limit=100))
        assert reply.status == "accepted", reply
        rows = reply.result["events"]
        recovered = [e for e in rows if e["code"] == "communication_loss_recovered"]
        assert len(recovered) == 1, [e["code"] for e in rows]
        assert "broker connection was down for" in recovered[0]["text"], recovered[0]
        assert [e["kind"] for e in rows if e["code"] == "broker_connection_lost"] == [
            "clear",
            "raise",
        ]  # newest first
    finally:
        watch.close()
        stack.stop()
        ui.stop()
