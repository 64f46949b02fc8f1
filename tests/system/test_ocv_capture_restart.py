"""The OCV capture outlives a restart of a real master process on a real broker (the plant,
slave agents on its boards, the master on the wire, `WireStack`).

The plant's cells start at 98 % SOC (NMC: ~4.18 V, past the full anchor's 4.15 V) and it draws
5 A (C/20 of the 100 Ah cells) while the contactors are closed. The master starts with its
contactors open: at rest the capture reaches the full anchor; closing them starts the slow
discharge. A SIGKILL and a restart within the 30 s gap rule resume it where it was (its
recorded updates and the charge counted go on); a restart after more than 30 s down aborts
it with "gap". A finished capture (seeded in the store: a C/20 cycle takes ~40 h) is offered
again after a restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import MosquittoBroker
from shared.config import SystemConfig
from shared.messages import ContactorsArgs, OcvCaptureArgs

from .agents import WireStack, publish_config, wait_until
from .ocv_seed import seed_finished_capture
from .test_master_core import Watch

STATUS = OcvCaptureArgs(action="status")


@pytest.fixture
def stack(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    wire = WireStack(mosquitto.url, system_id, tmp_path, load_profile="constant:-5",
                     initial_soc_pct=98.0)  # fmt: skip
    config = wire.wire(
        SystemConfig.from_preset("NMC", system_id=system_id, modules=2, cells_per_module=4)
    )
    ui = publish_config(mosquitto.url, config)
    wire.agent()
    data = tmp_path / "data"
    watch = Watch(mosquitto.url, system_id)
    starts = iter(range(1000))
    made: dict[str, Any] = dict(watch=watch, wire=wire, config=config,
                                store=data / f"master_core-{system_id}.sqlite")  # fmt: skip

    def master() -> Any:
        made["master"] = wire.master(
            label=f"-{next(starts)}", data_dir=str(data), auto_close="false",
            persist_period_s="1",
        )  # fmt: skip
        return made["master"]

    made["start_master"] = master
    try:
        yield made
    finally:
        watch.close()
        wire.stop()
        ui.stop()


def status(watch: Watch) -> dict[str, Any]:
    reply = watch.command("ocv_capture", STATUS)
    assert reply.status == "accepted", reply
    result: dict[str, Any] = reply.result
    return result


def master_answers(stack: dict[str, Any]) -> None:
    """Up with its configuration: the capture's status comes (not "no configuration yet")."""
    watch: Watch = stack["watch"]

    def answers() -> bool:
        try:
            return bool(watch.command("ocv_capture", STATUS).status == "accepted")
        except AssertionError:  # no reply yet
            return False

    assert wait_until(answers, 30), stack["master"].log()


def capture_texts(watch: Watch) -> list[str]:
    with watch.lock:
        return [e.text for e in watch.events if e.code == "ocv_capture"]


def test_a_running_capture_resumes_after_a_restart_within_its_gap_rule_and_aborts_beyond(
    stack: dict[str, Any],
) -> None:
    watch: Watch = stack["watch"]
    stack["start_master"]()
    master_answers(stack)
    started = watch.command("ocv_capture", OcvCaptureArgs(action="start"))
    assert started.status == "accepted" and started.result["state"] == "awaiting_start"
    assert wait_until(lambda: status(watch)["state"] == "first", 40), (
        status(watch), stack["wire"].logs()
    )  # fmt: skip
    assert watch.command("contactors", ContactorsArgs(action="close")).status == "accepted"
    assert wait_until(lambda: (status(watch)["moved_ah"] or 0.0) > 0.004, 40), status(watch)
    before = status(watch)
    assert before["reason"] == "slow discharge running" and before["phase"] == "discharge"

    # SIGKILL: only the periodic save (every second); the restart is within 30 s
    os.kill(stack["master"].proc.pid, signal.SIGKILL)
    stack["master"].stop()
    stack["start_master"]()
    master_answers(stack)
    after = status(watch)
    assert after["state"] == "first", (after, stack["master"].log())
    assert after["phase"] == "discharge"
    # what was saved up to a second before the kill: the updates kept and the charge counted
    assert after["samples"] >= before["samples"] - 1
    assert after["moved_ah"] >= before["moved_ah"] - 0.5 * 5.0 / 3600.0 * 2
    assert after["elapsed_s"] > before["elapsed_s"]
    assert wait_until(
        lambda: any(t.startswith("ocv capture resumed after a restart (first)")
                    for t in capture_texts(watch)), 10,
    ), capture_texts(watch)  # fmt: skip
    # the discharge goes on, counted from where it was
    if watch.latest() is not None and watch.latest().contactors != "closed":  # type: ignore[union-attr]
        watch.command("contactors", ContactorsArgs(action="close"))
    assert wait_until(
        lambda: (status(watch)["moved_ah"] or 0.0) > before["moved_ah"] + 0.003, 40
    ), status(watch)
    assert status(watch)["state"] == "first"

    # down for longer than the gap rule: aborted with "gap", named
    assert stack["master"].stop() == 0
    time.sleep(33.0)
    stack["start_master"]()
    master_answers(stack)
    gone = status(watch)
    assert (gone["state"], gone["abort_reason"]) == ("aborted", "gap"), gone
    assert "restarted after" in gone["reason"]
    assert wait_until(
        lambda: any(t.startswith("ocv capture aborted (gap) after a restart")
                    for t in capture_texts(watch)), 10,
    ), capture_texts(watch)  # fmt: skip


def test_a_finished_capture_is_offered_again_after_a_restart(stack: dict[str, Any]) -> None:
    watch: Watch = stack["watch"]
    csv = seed_finished_capture(stack["store"], stack["config"])
    stack["start_master"]()
    master_answers(stack)
    done = status(watch)
    assert done["state"] == "done" and done["progress_pct"] == 100.0, done
    assert done["csv"] == csv
    assert done["summary"]["capacity_ah"] > 90.0
    time.sleep(2.5)  # saved again by this master (every second)
    os.kill(stack["master"].proc.pid, signal.SIGKILL)
    stack["master"].stop()
    stack["start_master"]()
    master_answers(stack)
    again = status(watch)
    assert again["state"] == "done" and again["csv"] == csv, again
    assert again["summary"] == done["summary"]
