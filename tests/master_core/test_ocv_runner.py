"""The `ocv_capture` command through the master's own loop and command server: start, the
start anchor reached from the cycle's readings, status, abort, and a new configuration ending
a running capture; each change logged as an `ocv_capture` event."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from services.master_core.estimation.ocv_capture import OcvCapture
from services.master_core.ocv_runner import OcvRunner, cell_temperatures
from services.master_core.pack import PackAggregator
from shared.config import SystemConfig
from shared.messages import CellTelemetry, ConfigMessage, OcvCaptureArgs
from shared.topics import CONFIG
from tests.master_core.test_ocv_capture import Pack, full_first_cycle
from tests.master_core.test_service_reset import Stack


def capture_events(stack: Stack) -> list[str]:
    return [e.text for e in stack.events if e.code == "ocv_capture"]


def test_start_anchor_status_and_abort(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.run(2.0)
    reply = stack.command("ocv_capture", OcvCaptureArgs(action="start"))
    assert reply.status == "accepted", reply.reason
    assert reply.result["state"] == "awaiting_start"
    assert reply.result["phase"] == "discharge"
    # NMC charge_v 4.2 V: every cell at 4.16 V with no current is at the CV end
    stack.cell_mv = {m: [4160] * 4 for m in range(2)}
    stack.run(15.0)
    status = stack.command("ocv_capture", OcvCaptureArgs(action="status"))
    assert status.result["state"] == "first", status.result
    assert "full anchor reached" in status.result["reason"]
    assert "csv" not in status.result
    reply = stack.command("ocv_capture", OcvCaptureArgs(action="abort"))
    assert reply.status == "accepted"
    assert reply.result["state"] == "aborted"
    assert reply.result["abort_reason"] == "aborted"
    again = stack.command("ocv_capture", OcvCaptureArgs(action="abort"))
    assert again.status == "refused" and again.reason == "no capture is running"
    stack.ui.process()
    texts = capture_events(stack)
    assert any(t.startswith("ocv capture started") for t in texts), texts
    assert any("full anchor reached" in t for t in texts), texts
    assert any(t == "ocv capture aborted on request" for t in texts), texts


def test_a_new_configuration_ends_a_running_capture(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.run(2.0)
    stack.command("ocv_capture", OcvCaptureArgs(action="start", order="empty_first"))
    other = SystemConfig.from_preset(
        "NMC", system_id="demo", modules=2, cells_per_module=4, cell_capacity_ah=50.0
    )
    stack.ui.publish(CONFIG, ConfigMessage(config=other))
    stack.bus.process()
    stack.run(0.5)
    status = stack.command("ocv_capture", OcvCaptureArgs(action="status"))
    assert status.result["state"] == "idle"
    assert any("a new configuration" in t for t in capture_events(stack))


def test_cells_take_their_modules_mean_temperature() -> None:
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=3)
    agg = PackAggregator(config.topology)
    # module 1's second sensor is faulty: NaN in the snapshot, left out of the mean
    for m, (temps, flags) in enumerate((([20.0, 30.0], [0, 0]), ([40.0, 99.0], [0, 4]))):
        agg.on_telemetry(
            CellTelemetry(
                module=m, mode="working", sample_ts=100.0, cell_mv=[3700] * 3,
                cell_flags=[0] * 3, balancing=[False] * 3, temp_c=temps,
                temp_flags=flags, seq=0,
            ),
            100.0,
        )  # fmt: skip
    temps = cell_temperatures(agg.snapshot(()))
    assert np.allclose(temps, [25.0] * 3 + [40.0] * 3)


def test_a_whole_cycle_through_the_runner_ends_with_the_csv() -> None:
    """The runner on the synthetic C/20 cycle of the core's tests (its readings in snapshots):
    each change logged, and the status carries the CSV and the summary once done."""
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=1, cells_per_module=2)
    agg = PackAggregator(config.topology)
    agg.on_telemetry(
        CellTelemetry(
            module=0, mode="working", sample_ts=100.0, cell_mv=[3700] * 2,
            cell_flags=[0] * 2, balancing=[False] * 2, temp_c=[21.0, 23.0],
            temp_flags=[0, 0], seq=0,
        ),
        100.0,
    )  # fmt: skip
    base = agg.snapshot(())
    runner = OcvRunner()
    reply = runner.command(OcvCaptureArgs(action="start"), config, 0.0)
    assert reply.accepted and len(reply.events) == 1
    events = list(reply.events)

    def fed(capture: OcvCapture, pack: Pack, i_a: float, v: np.ndarray) -> None:
        events.extend(runner.step(replace(base, cell_v=v), i_a, pack.t_s))

    pack = Pack(r_ohm=np.array([0.002, 0.003]), offset_v=np.zeros(2))
    assert runner.capture is not None
    full_first_cycle(runner.capture, pack, dt_s=10.0, fed=fed)
    texts = [e.text for e in events]
    assert [e.values["state"] for e in events] == [
        "awaiting_start", "first", "second", "done"
    ], texts  # fmt: skip
    assert texts[-1].startswith("ocv capture done: capacity")
    status = runner.command(OcvCaptureArgs(action="status"), config, pack.t_s)
    assert status.result["state"] == "done"
    assert status.result["csv"].splitlines()[1] == (
        "soc_pct,ocv_charge_v,ocv_discharge_v,temperature_c"
    )
    assert ",22.0" in status.result["csv"]  # the module's mean temperature
    assert status.result["summary"]["capacity_ah"] > 80.0
