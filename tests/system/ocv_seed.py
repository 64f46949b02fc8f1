"""A finished OCV capture in a master's store, as the master saves it: a C/20 cycle (~40 h)
cannot run in a test, so the pure capture records a synthetic one (the cells of
`tests/master_core/test_ocv_capture.py`) and the runner's records go into the real SQLite file
the master then starts on."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from services.master_core.estimation.ocv_capture import OcvCapture
from services.master_core.ocv_runner import OcvRunner, capture_params
from services.master_core.persisted import save_all
from services.master_core.stores import Store
from shared.config import SystemConfig
from shared.messages import OcvCaptureArgs
from tests.master_core.test_ocv_capture import Pack, charge_cv, run_segment


def seed_finished_capture(store_path: Path, config: SystemConfig) -> str:
    """Store a finished capture of `config`'s cells (100 Ah, charge_v 4.2 V: NMC); returns
    the CSV it derived."""
    chem = config.cell_chemistry
    assert config.cell_capacity_ah == 100.0 and chem.charge_v == 4.2, "the synthetic cells'"
    n = config.total_cells
    pack = Pack(r_ohm=np.linspace(0.0015, 0.0025, n), offset_v=np.linspace(-0.005, 0.005, n))
    capture = OcvCapture(n, capture_params(config, OcvCaptureArgs(action="start")))
    capture.start(0.0)
    charge_cv(capture, pack)
    run_segment(capture, pack, 0.0, 5.0, for_s=120.0)
    cutoff_v = chem.discharge_cutoff_v
    run_segment(capture, pack, -4.8, 5.0, until=lambda v: v.min() <= cutoff_v)
    run_segment(capture, pack, 0.0, 5.0, for_s=600.0)
    charge_cv(capture, pack, 4.8)
    run_segment(capture, pack, 0.0, 5.0, for_s=600.0)
    assert capture.state == "done" and capture.result is not None, capture.reason
    runner = OcvRunner()
    runner.capture, runner.capture_id = capture, 1
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(store_path)
    try:
        save_all(store, runner.records(pack.t_s), ts=time.time())
    finally:
        store.close()
    return capture.result.csv()
