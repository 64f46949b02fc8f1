"""`make run` (python -m services): the whole stack starts, prints the UI address and the
first admin password, and that password logs in to a UI showing live values."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.broker import MosquittoBroker, free_port
from tests.system.agents import ROOT, wait_until

pytestmark = pytest.mark.broker
UI_LINE = re.compile(r"UI demo:\s+(http://127\.0\.0\.1:\d+/)")
PASSWORD_LINE = re.compile(r"config_ui: log in as 'admin' with password '([^']+)'")
ANSI = re.compile(r"\033\[[0-9;]*m")


class Launched:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(ANSI.sub("", line.rstrip()))

    def find(self, pattern: re.Pattern[str], timeout_s: float) -> str:
        found: list[str] = []

        def seen() -> bool:
            found.extend(m.group(1) for line in list(self.lines) if (m := pattern.search(line)))
            return bool(found)

        assert wait_until(seen, timeout_s, step_s=0.2), "\n".join(self.lines[-60:])
        return found[0]


@pytest.fixture
def launched(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Launched]:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        BMS_DATA_DIR=str(tmp_path),
        BMS_UI_PORT=str(free_port()),
        BMS_TCP_PORT=str(free_port()),
        BMS_CAN_CHANNEL=f"bms-{tmp_path.name}",
    )
    # a broker of its own, as `make run` on a fresh machine would start (free port: the
    # default 1883 may be taken)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "--broker-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield Launched(proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_make_run_prints_where_to_log_in_and_the_ui_goes_live(launched: Launched) -> None:
    base = launched.find(UI_LINE, 30)
    password = launched.find(PASSWORD_LINE, 30)
    http = httpx.Client(base_url=base, timeout=5)
    assert wait_until(lambda: _up(http), 30)
    r = http.post("/api/session", json={"username": "admin", "password": password})
    assert r.status_code == 200, r.text
    assert r.json()["must_change_password"] is True  # generated: the user picks their own
    http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    change = {"current_password": password, "new_password": "my-own-password-1"}
    assert http.post("/api/account/password", json=change).status_code == 204

    def live() -> bool:
        state = http.get("/api/state").json()
        pack = state["pack"]
        return pack is not None and not state["stale"] and (pack["sum_of_cells_v"] or 0) > 0

    assert wait_until(live, 60, step_s=0.5), "\n".join(launched.lines[-60:])
    pack = http.get("/api/state").json()["pack"]
    # the demo system: NMC, 7 x 14 cells
    assert 7 * 14 * 3.0 < pack["sum_of_cells_v"] < 7 * 14 * 4.2
    assert len(http.get("/api/state").json()["cells"]["cell_v"]) == 7 * 14
    # the password is shown once: the log holds it exactly once
    assert sum("with password" in line for line in launched.lines) == 1


def _up(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False
