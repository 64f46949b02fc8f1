"""`python -m services` stops with its services: on SIGTERM (`docker stop`, systemd) and on
Ctrl-C (SIGINT to the terminal's foreground process group: the launcher alone, not its broker
nor the services, each in a session of its own) the launcher stops every service and exits;
killed outright (SIGKILL), its services and its broker die with it. A process of the run is
one whose environment holds the run's BMS_DATA_DIR (the launcher hands its environment
down)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from services.launcher import StopStep, stop_processes
from shared.broker import find_mosquitto, free_port
from shared.codec import decode
from shared.messages.service import ServiceStatus
from shared.topics import SERVICE_STATUS
from tests.system.agents import ROOT, wait_until

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

SERVICES_LINE = re.compile(r"services:\s+(\S.*)$")
BROKER_LINE = re.compile(r"\[launcher\] started \S+ at mqtt://([\d.]+):(\d+)")
ANSI = re.compile(r"\033\[[0-9;]*m")
STOPPED_WITHIN_S = 20.0
"""The launcher's grace for its services (services/launcher.py STOP_GRACE) and an interpreter's
exit, with room for a loaded machine."""


def processes_of(data_dir: Path) -> set[int]:
    """The processes whose environment holds BMS_DATA_DIR=`data_dir` (zombies have none)."""
    marker = f"BMS_DATA_DIR={data_dir}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
    return found


class Run:
    """The launcher with one system on the in-process simulation, its log collected."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.data_dir = tmp_path / "data"
        env = dict(
            os.environ, PYTHONPATH=str(ROOT), BMS_DATA_DIR=str(self.data_dir),
            BMS_UI_PORT=str(free_port()), BMS_TCP_PORT=str(free_port()),
            BMS_CAN_CHANNEL=f"bms-{tmp_path.name}",
        )  # fmt: skip
        # a session of its own, as a terminal's job: Ctrl-C reaches its process group
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", "--in-process", "--broker-port", "0", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(ANSI.sub("", line.rstrip()))

    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    def services(self) -> set[int]:
        """The processes of the run but the launcher."""
        return processes_of(self.data_dir) - {self.proc.pid}

    def wait_until_up(self) -> set[int]:
        """The services' processes once the launcher has started them all."""
        labels: list[str] = []

        def listed() -> bool:
            for line in list(self.lines):
                if m := SERVICES_LINE.search(line):
                    labels[:] = m.group(1).split(", ")
            return bool(labels)

        assert wait_until(listed, 60, step_s=0.2), self.log()
        # every service and the broker (mosquitto)
        assert wait_until(lambda: len(self.services()) >= len(labels) + 1, 30), self.log()
        return self.services()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(*args: str) -> Run:
        runs.append(Run(tmp_path, *args))
        return runs[-1]

    yield start
    for launched in runs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launched.proc.pid, signal.SIGKILL)
        launched.proc.wait()
        for pid in processes_of(launched.data_dir):  # left over: none outlives the test
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run(launch: Callable[..., Run]) -> Run:
    return launch()


@pytest.mark.parametrize(
    ("how", "args"),
    [("sigterm", ()), ("sigterm", ("--exit-after-s", "300")), ("ctrl_c_twice", ()), ("sighup", ())],
    ids=[
        "sigterm_to_the_launcher",
        "sigterm_to_a_run_of_bounded_length",
        "ctrl_c_twice",
        "terminal_closed",
    ],
)
def test_a_stopped_launcher_stops_every_service_and_exits(
    launch: Callable[..., Run], how: str, args: tuple[str, ...]
) -> None:
    """SIGTERM to the launcher alone (`docker stop`, systemd's main process); Ctrl-C to its
    process group, pressed twice: the second does not cut the stop short; SIGHUP (the terminal
    or the SSH session closed) stops it as SIGTERM does."""
    run = launch(*args)
    services = run.wait_until_up() - _brokers(run)
    # each service in a session of its own (its own autogroup: its own share of the CPU)
    sessions = {os.getsid(pid) for pid in services}
    assert len(sessions) == len(services) and os.getsid(run.proc.pid) not in sessions
    sig = {"sigterm": signal.SIGTERM, "sighup": signal.SIGHUP}.get(how, signal.SIGINT)
    if how in ("sigterm", "sighup"):
        os.kill(run.proc.pid, sig)
    else:
        os.killpg(run.proc.pid, signal.SIGINT)
        time.sleep(0.1)
        os.killpg(run.proc.pid, signal.SIGINT)
    try:
        code = run.proc.wait(STOPPED_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher still runs {STOPPED_WITHIN_S} s after {sig.name}:\n{run.log()}")
    assert code == 0, run.log()
    assert not processes_of(run.data_dir), run.log()
    assert any("[launcher] stopped" in line for line in run.lines), run.log()


def test_ctrl_c_stops_the_services_before_their_broker(run: Run) -> None:
    """Ctrl-C reaches the launcher's process group. The broker is not in it: the launcher stops
    it after the services, so each service's last word (its retained `offline` status, as on
    any clean stop) reaches the broker, rather than its last will or nothing."""
    run.wait_until_up()
    found = [m for line in list(run.lines) if (m := BROKER_LINE.search(line))]
    assert found, run.log()
    host, port = found[0].group(1), int(found[0].group(2))
    offline: set[str] = set()
    online: set[str] = set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        status = decode(ServiceStatus, msg.topic, msg.payload)
        (offline if status.state == "offline" else online).add(status.service)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.connect(host, port)
    client.subscribe(SERVICE_STATUS.filter(), qos=1)
    client.loop_start()
    try:
        assert wait_until(lambda: len(online) >= 3, 30), (online, run.log())
        os.killpg(run.proc.pid, signal.SIGINT)
        assert run.proc.wait(STOPPED_WITHIN_S) == 0, run.log()
    finally:
        client.loop_stop()
        client.disconnect()
    assert online <= offline, (sorted(online - offline), run.log())


def test_a_killed_launchers_services_die_with_it(run: Run) -> None:
    run.wait_until_up()
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(10)
    left = processes_of(run.data_dir)
    assert wait_until(lambda: not processes_of(run.data_dir), STOPPED_WITHIN_S, step_s=0.2), (
        f"left over: {sorted(left)}\n{run.log()}"
    )


def test_a_launcher_stopped_while_starting_leaves_no_service(run: Run) -> None:
    """SIGTERM while the launcher starts: its broker runs, the services are about to."""
    assert wait_until(lambda: bool(_brokers(run)), 60, step_s=0.01), run.log()
    os.kill(run.proc.pid, signal.SIGTERM)
    try:
        run.proc.wait(STOPPED_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher still runs {STOPPED_WITHIN_S} s after SIGTERM:\n{run.log()}")
    assert wait_until(lambda: not processes_of(run.data_dir), 5, step_s=0.2), run.log()


def _brokers(run: Run) -> set[int]:
    return {pid for pid in run.services() if _comm(pid) == "mosquitto"}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _child(code: str) -> subprocess.Popen[bytes]:
    """A process leading its own session (as the launcher's services), ready once it says so."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{code}\nprint('ready', flush=True)\nimport time; time.sleep(60)"],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_every_service_gets_sigterm_at_once_and_sigkill_after_the_grace() -> None:
    deaf = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    procs = {"quick": _child("pass"), "gone": _child("pass")}
    procs.update({f"deaf{i}": _child(deaf) for i in range(3)})
    procs["gone"].kill()
    procs["gone"].wait()
    steps = (StopStep(signal.SIGTERM, 1.0), StopStep(signal.SIGKILL, 5.0))
    try:
        started = time.monotonic()
        stopped_by = stop_processes(procs, steps)
        took_s = time.monotonic() - started
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    assert stopped_by == {
        "quick": signal.SIGTERM,
        "gone": None,
        **{f"deaf{i}": signal.SIGKILL for i in range(3)},
    }
    # one grace for every service at once: one after the other, it would be three
    assert took_s < 2 * steps[0].wait_s, took_s
