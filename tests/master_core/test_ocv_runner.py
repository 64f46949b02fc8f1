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
from services.master_core.persisted import (
    OCV_ROWS_PER_CHUNK,
    OcvCaptureRecord,
    load_ocv_capture,
    save_all,
)
from services.master_core.stores import Store
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


def finished(config: SystemConfig) -> tuple[OcvRunner, float]:
    """A runner whose capture ran the synthetic C/20 cycle to done, and the time it ended."""
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
    runner.command(OcvCaptureArgs(action="start"), config, 0.0)

    def fed(capture: OcvCapture, pack: Pack, i_a: float, v: np.ndarray) -> None:
        runner.step(replace(base, cell_v=v), i_a, pack.t_s)

    pack = Pack(r_ohm=np.array([0.002, 0.003]), offset_v=np.zeros(2))
    assert runner.capture is not None
    full_first_cycle(runner.capture, pack, dt_s=10.0, fed=fed)
    assert runner.capture.state == "done"
    return runner, pack.t_s


def test_a_finished_capture_is_kept_across_a_restart_whatever_the_parameters_now(
    tmp_path: Path,
) -> None:
    """Two days of capture, not imported yet: a restart whose capture parameters differ (an
    update's defaults, another capacity) still offers the same result; only a running capture
    needs them unchanged."""
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=1, cells_per_module=2)
    runner, end_s = finished(config)
    csv = runner.command(OcvCaptureArgs(action="status"), config, end_s).result["csv"]
    other = SystemConfig.from_preset(
        "NMC", system_id="demo", modules=1, cells_per_module=2, cell_capacity_ah=50.0
    )
    after, events = stored_and_restored(tmp_path, runner, other, end_s, down_s=3600.0)
    assert events == ()
    assert after.capture is not None and after.capture.state == "done"
    assert after.command(OcvCaptureArgs(action="status"), other, 10.0).result["csv"] == csv


def test_a_stored_capture_not_taken_back_stays_stored_until_a_new_one_starts(
    tmp_path: Path,
) -> None:
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
    runner = first_phase_resting(config, rest_s=40 * 30.0)
    store = Store(tmp_path / "master.sqlite")
    save_all(store, runner.records(1216.0), ts=5000.0)
    other = SystemConfig.from_preset(
        "NMC", system_id="demo", modules=2, cells_per_module=4, cell_capacity_ah=50.0
    )
    stored, refusal = load_ocv_capture(store, other)
    after = OcvRunner()
    events = after.restore(stored, refusal, other, 10.0, 5001.0)
    assert after.capture is None and len(events) == 1
    assert after.records(11.0) == []  # the stored capture is not overwritten by "none"
    after.command(OcvCaptureArgs(action="start"), other, 12.0)
    assert after.capture_id == runner.capture_id + 1
    assert [r.store_key() for r in after.records(13.0)] == ["ocv_capture"]
    store.close()


def first_phase_resting(config: SystemConfig, rest_s: float) -> OcvRunner:
    """A capture at its full anchor, then resting (no current) for `rest_s`: an update kept
    every 30 s (`record_period_s`)."""
    runner = OcvRunner()
    runner.command(OcvCaptureArgs(action="start"), config, 0.0)
    cap = runner.capture
    assert cap is not None
    temps = np.full(config.total_cells, 25.0)
    t = 0.0
    while t < 15.0 + rest_s:
        t += 1.0
        cap.update(t, 0.0, np.full(config.total_cells, 4.16), temps)
    assert cap.state == "first"
    return runner


def feed_rest(runner: OcvRunner, config: SystemConfig, until_s: float) -> None:
    cap = runner.capture
    assert cap is not None and cap._last is not None
    t = cap._last.t_s
    while t < until_s:
        t += 1.0
        cap.update(t, 0.0, np.full(config.total_cells, 4.16), np.full(config.total_cells, 25.0))


def test_the_kept_updates_are_stored_in_chunks_written_again_only_while_they_fill(
    tmp_path: Path,
) -> None:
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
    runner = first_phase_resting(config, rest_s=40 * 30.0)
    keys = [r.store_key() for r in runner.records(1300.0)]
    assert keys == ["ocv_capture", "ocv_capture_rows.0.0", "ocv_capture_rows.0.1"]
    assert [r.store_key() for r in runner.records(1300.0)] == ["ocv_capture"]
    feed_rest(runner, config, 1400.0)
    assert [r.store_key() for r in runner.records(1400.0)] == [
        "ocv_capture",
        "ocv_capture_rows.0.1",
    ]
    runner.command(OcvCaptureArgs(action="start"), config, 1400.0)  # a new capture: none yet
    assert runner.capture_id == 2
    assert [r.store_key() for r in runner.records(1400.0)] == ["ocv_capture"]
    assert [r.store_key() for r in runner.records(1401.0)] == ["ocv_capture"]  # running
    # not running (aborted, done, none), the state does not change: handed once
    runner.command(OcvCaptureArgs(action="abort"), config, 1402.0)
    assert [r.store_key() for r in runner.records(1402.0)] == ["ocv_capture"]
    assert runner.records(1403.0) == []
    runner.configure()
    assert [r.capture for r in runner.records(1404.0)] == [None]  # type: ignore[attr-defined]
    assert runner.records(1405.0) == []


def stored_and_restored(
    tmp_path: Path, runner: OcvRunner, config: SystemConfig, now_s: float, down_s: float
) -> tuple[OcvRunner, tuple[str, ...]]:
    """`runner`'s records saved at wall time 5000 into a real store, read back by a master
    started `down_s` later."""
    store = Store(tmp_path / "master.sqlite")
    save_all(store, runner.records(now_s), ts=5000.0)
    stored, refusal = load_ocv_capture(store, config)
    after = OcvRunner()
    events = after.restore(stored, refusal, config, 10.0, 5000.0 + down_s)
    store.close()
    return after, tuple(e.text for e in events)


def test_a_capture_stored_and_restored_resumes_or_aborts_with_gap(tmp_path: Path) -> None:
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
    runner = first_phase_resting(config, rest_s=40 * 30.0)
    samples = runner.capture.status(1216.0).samples  # type: ignore[union-attr]
    assert samples > OCV_ROWS_PER_CHUNK
    after, events = stored_and_restored(tmp_path, runner, config, 1216.0, down_s=12.0)
    assert after.capture is not None and after.capture.state == "first"
    assert after.capture.status(10.0).samples == samples
    assert after.capture_id == runner.capture_id
    assert events and events[0].startswith("ocv capture resumed after a restart (first)")
    # nothing new to write but the state: its chunks are the stored ones
    assert [r.store_key() for r in after.records(11.0)] == ["ocv_capture"]

    after, events = stored_and_restored(tmp_path, runner, config, 1216.0, down_s=120.0)
    assert after.capture is not None and after.capture.state == "aborted"
    assert after.capture.abort_reason == "gap"
    assert events and events[0].startswith("ocv capture aborted (gap) after a restart")


def test_a_stored_capture_of_another_configuration_or_a_stale_chunk_is_not_resumed(
    tmp_path: Path,
) -> None:
    config = SystemConfig.from_preset("NMC", system_id="demo", modules=2, cells_per_module=4)
    runner = first_phase_resting(config, rest_s=40 * 30.0)
    store = Store(tmp_path / "master.sqlite")
    save_all(store, runner.records(1216.0), ts=5000.0)
    # another capacity: other C-rates, the capture's parameters differ
    other = SystemConfig.from_preset(
        "NMC", system_id="demo", modules=2, cells_per_module=4, cell_capacity_ah=50.0
    )
    stored, refusal = load_ocv_capture(store, other)
    after = OcvRunner()
    events = after.restore(stored, refusal, other, 10.0, 5001.0)
    assert after.capture is None
    assert [e.text for e in events] == [
        "ocv capture not resumed after a restart: the configuration's capture parameters changed"
    ]
    # the stored chunks are of another capture than the stored state
    state = next(r for r in runner.records(1216.0) if r.KEY == "ocv_capture")
    newer = OcvCaptureRecord.model_validate(state.model_dump() | {"capture_id": 7})
    save_all(store, [newer], ts=5000.0)
    stored, refusal = load_ocv_capture(store, config)
    assert stored is None and refusal == "chunk 0 of phase 0 is of another OCV capture"
    store.close()
