"""`make run` (python -m services): the whole stack starts, prints the UI address and the
first admin password, and that password logs in to a UI showing live values; in the loop
(udp_multicast works: run in a network namespace with a multicast route) the master measures
the plant's string current over CAN, closes the plant's contactors through its relay module,
and trips on a fault injected into the plant. `--in-process` (the fallback where multicast does
not work) runs the same UI test on the simulation inside the master."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.broker import MosquittoBroker, free_port
from shared.bus import MqttBus
from shared.can_bus import multicast_problem
from shared.messages import GroundTruth, PackState
from shared.settings import parse_mqtt_url
from shared.topics import PACK_STATE, SIM_TRUTH
from tests.system.agents import ROOT, wait_until


def require_multicast() -> None:
    problem = multicast_problem()
    if problem is not None:
        pytest.skip(
            f"{problem}; in a network namespace: ip link set lo multicast on; "
            "ip route add 224.0.0.0/4 dev lo"
        )


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


IN_LOOP_LINE = re.compile(r"\[launcher\] (software in the loop): plant")
FALLBACK_LINE = re.compile(r"\[launcher\] .*(falling back|--in-process)")
BROKER_LINE = re.compile(r"\[launcher\] started \S+ at (mqtt://\S+)")


@pytest.fixture(params=["in_loop", "in_process"])
def mode(request: pytest.FixtureRequest) -> str:
    if request.param == "in_loop":
        require_multicast()
    return str(request.param)


@pytest.fixture
def launched(mosquitto: MosquittoBroker, tmp_path: Path, mode: str) -> Iterator[Launched]:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        BMS_DATA_DIR=str(tmp_path),
        BMS_UI_PORT=str(free_port()),
        BMS_TCP_PORT=str(free_port()),
    )
    if mode == "in_process":
        env["BMS_CAN_CHANNEL"] = f"bms-{tmp_path.name}"
    # a broker of its own, as `make run` on a fresh machine would start (free port: the
    # default 1883 may be taken)
    args = ["--in-process"] if mode == "in_process" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "--broker-port", "0", *args],
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


def test_make_run_prints_where_to_log_in_and_the_ui_goes_live(
    launched: Launched, mode: str
) -> None:
    launched.find(IN_LOOP_LINE if mode == "in_loop" else FALLBACK_LINE, 30)
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


@pytest.mark.parametrize("mode", ["in_loop"], indirect=True)
def test_make_run_closes_the_loop_through_the_plant(launched: Launched) -> None:
    launched.find(IN_LOOP_LINE, 30)
    url = launched.find(BROKER_LINE, 30)
    watch = Watch(url)
    try:
        _closes_the_loop(launched, watch, url)
    finally:
        watch.close()


class Watch:
    """The master's pack state and the plant's ground truth, as a third party sees them."""

    def __init__(self, url: str) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system="demo", service="watch", kind="test",
                           presence=False)  # fmt: skip
        self.states: list[tuple[float, PackState]] = []
        self.truths: list[tuple[float, GroundTruth]] = []
        self.bus.subscribe(PACK_STATE, lambda d: self.states.append((time.monotonic(), d.message)))
        self.bus.subscribe(SIM_TRUTH, lambda d: self.truths.append((time.monotonic(), d.message)))
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._run, daemon=True)
        self._pump.start()
        assert self.bus.start(wait_s=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.05)

    def close(self) -> None:
        self._stop.set()
        self._pump.join(timeout=5)
        self.bus.stop()

    def state(self) -> PackState | None:
        return self.states[-1][1] if self.states else None


def _closes_the_loop(launched: Launched, watch: Watch, url: str) -> None:
    def log() -> str:
        return "\n".join(launched.lines[-80:])

    def closed_and_flowing() -> bool:
        s = watch.state()
        return (
            s is not None
            and s.contactors == "closed"
            and s.soc is not None
            and bool(watch.truths and abs(watch.truths[-1][1].current_a) > 1.0)
        )

    # the master closes the contactors through the plant's relay module: only then does the
    # plant's string carry the inverter's current (the demo cycles between 30 A and -40 A)
    assert wait_until(closed_and_flowing, 90, step_s=0.5), log()
    soc_start = watch.state().soc  # type: ignore[union-attr]

    # the pack current the master publishes is the plant's string current, over the IVT-S
    def current_matches() -> bool:
        truth_at, truth = watch.truths[-1]
        near = [s.current for t, s in watch.states if abs(t - truth_at) < 0.15]
        return bool(near) and all(c is not None and abs(c - truth.current_a) < 1.0 for c in near)

    assert wait_until(current_matches, 20, step_s=0.5), (
        f"truth {watch.truths[-1][1].current_a:.2f} A, master {watch.state().current} A"  # type: ignore[union-attr]
    )
    # the inverter keeps within the limits the CAN gateway sends it
    state = watch.state()
    assert state is not None
    truth_a = watch.truths[-1][1].current_a
    assert -state.limits.discharge_current_a - 1.0 <= truth_a <= state.limits.charge_current_a + 1.0

    # SOC moves with the plant's current
    assert wait_until(
        lambda: abs((watch.state().soc or 0.0) - (soc_start or 0.0)) >= 0.05,  # type: ignore[union-attr]
        60, step_s=1.0,
    ), log()  # fmt: skip

    # a fault injected into the plant trips the master: the insulation falls below the trip
    # threshold, the iso165C reports it on CAN, the master opens the contactors
    subprocess.run(
        [sys.executable, "-m", "services.plant", "inject", "insulation_fault", "--mqtt-url", url,
         "--system", "demo"],
        cwd=ROOT, check=True, timeout=30,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip

    def tripped() -> bool:
        s = watch.state()
        return s is not None and bool(s.faults) and s.contactors != "closed"

    assert wait_until(tripped, 60, step_s=0.5), log()
    state = watch.state()
    assert state is not None
    assert any("insulation" in f for f in state.faults), state.faults
    # with the contactors open the plant's string carries no current
    assert wait_until(lambda: abs(watch.truths[-1][1].current_a) < 0.5, 20, step_s=0.5), log()


METRICS_LINE = re.compile(r"Metrics:\s+(http://127\.0\.0\.1:\d+/metrics)")


@pytest.mark.parametrize("mode", ["in_process"], indirect=True)
def test_make_run_starts_the_integrations_bridge_with_json_and_metrics(
    launched: Launched,
) -> None:
    """The bridge comes up with the stack: Prometheus metrics of the demo system, and the
    JSON mirror of its pack state readable by a plain MQTT client."""
    url = launched.find(METRICS_LINE, 30)
    broker = launched.find(BROKER_LINE, 30)

    cell = 'bms_cell_voltage_volts{cell="14",module="7",system="demo"}'  # the last, from 1

    def exported() -> bool:
        # the pack and its cells: the cells come on their own topic, at their own rate
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            return False
        return 'bms_pack_voltage_volts{system="demo"}' in text and cell in text

    assert wait_until(exported, 90, step_s=1.0), "\n".join(launched.lines[-60:])
    text = httpx.get(url, timeout=5).text
    assert 'bms_bus_received_total{kind="integrations",service="integrations"}' in text
    got: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: got.append(m.payload)
    endpoint = parse_mqtt_url(broker)
    client.connect(endpoint.host, endpoint.port)
    client.subscribe("bms/v1/demo/json/pack/state")
    client.loop_start()
    try:
        assert wait_until(lambda: bool(got), 20)
        assert json.loads(got[-1])["source"] == "master_core"
    finally:
        client.loop_stop()
        client.disconnect()
