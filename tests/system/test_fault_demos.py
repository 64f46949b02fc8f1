"""The README's fault demos on the demo system, each to its end: the fault opens the
contactors, the cause goes away, the reset the fault needs is sent through the web
application's REST API, and the contactors close again with no other operator action.

Real mosquitto, plant, slave agent, master, CAN gateway and web application as processes, on
the wire as `make run` runs them (`WireStack`): the agent reads the plant's boards over Modbus
TCP, the master its IVT-S, iso165C and relay module, the plant's inverter draws its load
profile within the limits the CAN gateway sends. Faults go in through the same `inject` tools
the README uses: cell faults into the plant, `crash` into the slave agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import MosquittoBroker
from shared.config import demo_config
from shared.messages import ResetFaultsArgs, ServiceOverride

from .agents import WireStack, wait_until
from .test_config_ui import Ui
from .test_master_core import Watch
from .test_slave_agent import inject

pytestmark = pytest.mark.broker
README = Path(__file__).resolve().parents[2] / "README.md"

OPEN_WIRE = "open_wire --module 3 --channel 8"
OVER_TEMPERATURE = "over_temperature --module 2 --channel 1 --value 70"
COOL = "under_temperature --module 2 --channel 1 --value 25 --duration-s 30"
DRIFT_UP = "cell_drift --module 4 --channel 6 --value 0.5"
DRIFT_DOWN = "cell_drift --module 4 --channel 6 --value -0.5"
DEMO_LINES = (OPEN_WIRE, OVER_TEMPERATURE, COOL, DRIFT_UP, DRIFT_DOWN, "clear", "crash")
"""The README's demo lines, as these tests run them."""


AGENT_FAULTS = {"crash"}
"""Faults of the agent process (`python -m services.slave_agent inject`); the rest are the
plant's (README: cell faults go to the plant, the loop's agent refuses them)."""


class Demo:
    def __init__(self, wire: WireStack, watch: Watch, ui: Ui) -> None:
        self.wire, self.watch, self.ui = wire, watch, ui
        self.url, self.system = wire.url, wire.system
        self.restarts = 0
        self.slaves = wire.agent()

    def restart_slaves(self) -> None:
        """What `make run`'s launcher does when a service exits."""
        self.slaves.stop()
        self.restarts += 1
        self.slaves = self.wire.agent(label=f"-{self.restarts}")

    def inject(self, line: str) -> None:
        words = line.split()
        if words[0] in AGENT_FAULTS:
            inject(self.url, self.system, *words)
        else:
            self.wire.inject(*words)

    def contactors(self) -> str | None:
        state = self.watch.latest()
        return None if state is None else state.contactors

    def faults(self) -> list[str]:
        state = self.watch.latest()
        return [] if state is None else state.faults

    def faults_ever(self) -> set[str]:
        with self.watch.lock:
            return {code for s in self.watch.states for code in s.faults}

    def wait_for_fault(self, code: str, timeout_s: float = 20) -> None:
        assert wait_until(lambda: code in self.faults(), timeout_s), self.faults()
        assert wait_until(lambda: self.contactors() == "fault", 5), self.contactors()

    def post(self, command: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.ui.http.post(f"/api/commands/{command}", json=body)
        assert r.status_code == 200, r.text
        reply: dict[str, Any] = r.json()
        return reply

    def reset_until_accepted(self, command: str = "reset_faults", **body: Any) -> None:
        """The operator's reset, repeated while the master says the cause is still present."""
        replies: list[dict[str, Any]] = []

        def accepted() -> bool:
            replies.append(self.post(command, body or None))
            return replies[-1]["status"] == "accepted"

        assert wait_until(accepted, 30, step_s=1.0), replies[-3:]

    def back_to_closed(self) -> None:
        assert wait_until(lambda: self.contactors() == "closed", 20), (
            self.contactors(),
            self.faults(),
        )
        assert self.faults() == []


@pytest.fixture
def demo(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[Demo]:
    wire = WireStack(mosquitto.url, system_id, tmp_path, load_profile="cycle:30:40:20:80",
                     inverter=True)  # fmt: skip
    wire.master(data_dir=str(tmp_path / "master"))
    wire.service("can_gateway")
    # the demo system wired to this test's plant, applied as the UI's first configuration
    ui = Ui(mosquitto.url, system_id, tmp_path, ui_seed_config="")
    watch = Watch(mosquitto.url, system_id)
    d = Demo(wire, watch, ui)
    try:
        ui.start()
        config = wire.wire(demo_config(system_id), inverter_bus=True).model_dump(mode="json")
        r = ui.http.post("/api/config", json={"config": config, "comment": "demo on the plant"})
        assert r.status_code == 201, r.text
        assert wait_until(lambda: d.contactors() == "closed", 60), (wire.logs(), d.faults())
        yield d
    finally:
        watch.close()
        ui.stop()
        wire.stop()


def test_the_readme_shows_the_demos_these_tests_run() -> None:
    text = README.read_text()
    for line in DEMO_LINES:
        assert f"inject {line}" in text, line
    for path in ("/api/commands/reset_faults", "/api/commands/service_reset"):
        assert path in text


def test_open_wire_raises_open_wire_never_deep_discharge_and_one_reset_recovers(
    demo: Demo,
) -> None:
    demo.inject(OPEN_WIRE)
    demo.wait_for_fault("open_wire")
    refused = demo.post("reset_faults")
    assert refused["status"] == "refused" and "open_wire" in refused["reason"]
    demo.inject("clear")
    demo.reset_until_accepted()
    demo.back_to_closed()
    assert "deep_discharge" not in demo.faults_ever()
    assert "cell_undervoltage" not in demo.faults_ever()


def test_over_temperature_cell_drift_and_deep_discharge_demos_end_closed(demo: Demo) -> None:
    demo.inject(OVER_TEMPERATURE)
    demo.wait_for_fault("cell_overtemp_discharge", 60)
    demo.inject("clear")  # the heat source is gone; the cells cool as the README shows
    demo.inject(COOL)
    demo.reset_until_accepted()
    demo.back_to_closed()

    demo.inject(DRIFT_UP)
    demo.wait_for_fault("cell_overvoltage")
    demo.inject("clear")
    demo.reset_until_accepted()
    demo.back_to_closed()

    # a real deep discharge needs the service reset: a normal one is refused, and so is an
    # override on the ordinary command topic
    demo.inject(DRIFT_DOWN)
    demo.wait_for_fault("deep_discharge")
    demo.inject("clear")
    override = ServiceOverride(user="mallory", reason="no admin here")
    sneaked = demo.watch.command("reset_faults", ResetFaultsArgs(service_override=override))
    assert sneaked.status == "refused" and "cmd/service_reset" in sneaked.reason
    assert "deep_discharge" in demo.faults()
    refused = demo.post("reset_faults")
    assert refused["status"] == "refused" and "service reset" in refused["reason"]
    demo.reset_until_accepted("service_reset", reason="cell 3/5 checked after the demo")
    demo.back_to_closed()
    audit = [e for e in demo.watch.events if e.code == "service_reset" and e.kind == "command"]
    assert audit[-1].values["user"] == "admin"
    assert audit[-1].values["reason"] == "cell 3/5 checked after the demo"
    assert "deep_discharge" in str(audit[-1].values["cleared"])


def test_a_crashed_agent_restarted_by_its_supervisor_recovers_with_one_reset(demo: Demo) -> None:
    demo.inject("crash")
    demo.wait_for_fault("communication_loss")
    assert wait_until(lambda: demo.slaves.proc.poll() is not None, 5)
    demo.restart_slaves()
    demo.reset_until_accepted()
    demo.back_to_closed()


def test_the_dashboard_service_reset_asks_the_admin_for_a_reason(demo: Demo) -> None:
    from playwright.sync_api import Dialog, expect, sync_playwright

    from .test_config_ui import OWN_PASSWORD
    from .test_config_ui_browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (deploy/install-system-deps.sh does it)")
    demo.inject(DRIFT_DOWN)
    demo.wait_for_fault("deep_discharge")
    demo.inject("clear")
    assert wait_until(lambda: (demo.watch.latest().cell_v_min or 0) > 3.0, 10)  # type: ignore[union-attr]
    prompts: list[str] = []
    reasons: list[str] = []  # typed into the next prompts; then nothing

    def answer(dialog: Dialog) -> None:
        prompts.append(dialog.message)
        dialog.accept(reasons.pop(0) if reasons else "")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", answer)
            page.goto(f"{demo.ui.base}/login")
            page.fill('input[name="username"]', "admin")
            page.fill('input[name="password"]', OWN_PASSWORD)
            page.click('button[type="submit"]')
            reply = page.locator('[data-testid="command-reply"]')
            button = page.locator('[data-testid="service-reset"]')
            # the dashboard's script is running once the live stream is (its handlers too)
            expect(page.locator('[data-testid="live-status"]')).to_have_class(
                "live", timeout=30_000
            )
            button.click()
            expect(reply).to_contain_text("not sent, a reason is required")
            assert "Reason" in prompts[-1]
            assert "deep_discharge" in demo.faults()  # nothing was sent
            reasons.append("cell 3/5 checked in the browser")
            button.click()
            expect(reply).to_contain_text("service_reset: accepted by the master", timeout=10_000)
        finally:
            browser.close()
    demo.back_to_closed()
    audit = [e for e in demo.watch.events if e.code == "service_reset" and e.kind == "command"]
    assert audit[-1].values["reason"] == "cell 3/5 checked in the browser"
