"""The UI as a process on mosquitto with the real services: it owns the configuration.

Seeding, adoption of a configuration already on the broker, acknowledgements of every
service, a change every service takes, a register-layout change every service takes live,
and a restart that republishes without resetting the master.

The services run on the wire as `make run` runs them (`WireStack`): the UI seeds the demo
system wired to the plant (`plant` seed, `plant_demo_config` at an index of this test's own),
the agent reads the plant's boards, the master its devices, the CAN gateway talks to the
plant's inverter on the configured bus.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.broker import MosquittoBroker, free_port
from shared.config import SystemConfig, demo_config
from tests.system.agents import PlantWiring, ServiceProcess, WireStack, publish_config, wait_until

pytestmark = pytest.mark.broker
PASSWORD = "system-test-password"
OWN_PASSWORD = "admins-own-password"
SERVICES = ("slave_agent", "master_core", "modbus_gateway", "can_gateway")


class Ui:
    def __init__(self, url: str, system: str, tmp: Path, **env: str) -> None:
        self.url, self.system, self.tmp, self.env = url, system, tmp, env
        secret = tmp / "admin-password"
        secret.write_text(PASSWORD)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.settings = dict(
            data_dir=str(tmp / "ui"), ui_port=str(self.port), ui_admin_password_file=str(secret)
        )
        self.proc: ServiceProcess | None = None
        self.http = httpx.Client(base_url=self.base, timeout=10)
        self.first_login = True

    def start(self) -> None:
        self.proc = ServiceProcess(
            "config_ui", self.url, self.system, self.tmp, **self.settings, **self.env
        )
        assert wait_until(self._up, 60), self.proc.log()  # a loaded machine starts slowly
        password = PASSWORD if self.first_login else OWN_PASSWORD
        r = self.http.post("/api/session", json={"username": "admin", "password": password})
        r.raise_for_status()
        self.http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        if r.json()["must_change_password"]:  # the file's password only opens the door
            change = {"current_password": password, "new_password": OWN_PASSWORD}
            self.http.post("/api/account/password", json=change).raise_for_status()
            self.first_login = False

    def _up(self) -> bool:
        try:
            return self.http.get("/healthz").json()["mqtt_connected"] is True
        except (httpx.HTTPError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def acks(self) -> dict[str, tuple[int | None, bool | None]]:
        rows = self.http.get("/api/services").json()["services"]
        return {r["service"]: (r["config_version"], r["config_accepted"]) for r in rows}

    def all_acked(self, version: int, services: tuple[str, ...] = SERVICES) -> bool:
        acks = self.acks()
        return all(acks.get(s) == (version, True) for s in services)


@pytest.fixture
def stack(mosquitto: MosquittoBroker, system_id: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    wiring, index = PlantWiring.demo_index(system_id)
    wire = WireStack(mosquitto.url, system_id, tmp_path, load_profile="cycle:30:40:20:80",
                     inverter=True, wiring=wiring)  # fmt: skip
    wire.agent()
    wire.master(data_dir=str(tmp_path / "master"))
    wire.service("modbus_gateway", tcp_port=str(free_port()))
    wire.service("can_gateway")
    made: dict[str, Any] = {"wire": wire, "index": index, "url": mosquitto.url, "tmp": tmp_path}
    try:
        yield made
    finally:
        if "ui" in made:
            made["ui"].stop()
        wire.stop()


def test_seed_apply_refuse_and_restart(stack: dict[str, Any], system_id: str) -> None:
    ui = Ui(stack["url"], system_id, stack["tmp"], ui_seed_config="plant",
            ui_seed_index=str(stack["index"]))  # fmt: skip
    stack["ui"] = ui
    ui.start()
    assert wait_until(lambda: ui.all_acked(1), 30), ui.acks()
    first = ui.http.get("/api/config").json()
    assert (first["version"], first["source"], first["user"]) == (1, "seed", "system")

    # a change every service takes, the Modbus gateway included (same register layout)
    config = first["config"]
    config["cell_capacity_ah"] = 90.0
    r = ui.http.post("/api/config", json={"config": config, "comment": "new cells"})
    assert r.status_code == 201, r.text
    assert wait_until(lambda: ui.all_acked(2), 20), ui.acks()

    # one module more, through the wizard (pack thresholds follow the size): every service
    # takes it live, the Modbus gateway with its new register layout
    topology = ui.http.get("/api/wizard/steps/topology").json()["fields"]
    form = {f["path"]: f["value"] for f in topology}
    form["topology.modules"] = str(int(form["topology.modules"]) + 1)
    r = ui.http.put("/api/wizard/steps/topology", json=form)
    assert r.json()["rederived"] is True and not r.json()["errors"], r.text
    assert not ui.http.get("/api/wizard/review").json()["errors"]
    r = ui.http.post("/api/wizard/apply", json={"comment": "module 8"})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "wizard"
    assert wait_until(lambda: ui.all_acked(3), 20), ui.acks()

    # a UI restart republishes version 3; the master acknowledges without a reset
    applied_before = _config_events(ui)
    ui.stop()
    ui.start()
    time.sleep(2.0)
    assert ui.http.get("/api/config").json()["version"] == 3
    assert ui.all_acked(3, ("slave_agent", "master_core", "can_gateway")), ui.acks()
    assert _config_events(ui) == applied_before
    state = ui.http.get("/api/state").json()
    assert state["stale"] is False


def _config_events(ui: Ui) -> int:
    events = ui.http.get("/api/events?kind=config").json()
    return sum(1 for e in events if e["code"] == "config_applied")


def test_adopts_the_configuration_running_on_the_broker(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    running = SystemConfig.model_validate(
        {**demo_config(system_id).model_dump(), "config_version": 7}
    )
    bus = publish_config(mosquitto.url, running)
    ui = Ui(mosquitto.url, system_id, tmp_path)
    try:
        ui.start()
        assert wait_until(lambda: ui.http.get("/api/config").status_code == 200, 15)
        adopted = ui.http.get("/api/config").json()
        assert (adopted["version"], adopted["source"]) == (7, "adopted")
        assert adopted["config"]["topology"] == running.model_dump(mode="json")["topology"]
    finally:
        ui.stop()
        bus.stop()


def test_without_a_configuration_the_ui_waits_for_the_wizard(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    ui = Ui(mosquitto.url, system_id, tmp_path)
    try:
        ui.start()
        time.sleep(4.0)  # past the adoption wait
        assert ui.http.get("/api/config").status_code == 404
        assert ui.proc is not None
        assert "open the wizard" in ui.proc.log()
    finally:
        ui.stop()


def test_the_ui_reports_the_fields_a_gateway_runs_with_its_host_settings(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    """Issue 14: a Modbus gateway started with BMS_TCP_PORT (and BMS_TCP_HOST) acknowledges the
    configuration with the fields it runs otherwise, and the UI's REST API says so."""
    port = free_port()
    gateway = ServiceProcess("modbus_gateway", mosquitto.url, system_id, tmp_path,
                             tcp_port=str(port), tcp_host="127.0.0.1")  # fmt: skip
    ui = Ui(mosquitto.url, system_id, tmp_path, ui_seed_config="demo")
    host = socket.gethostname()

    def in_use() -> dict[str, Any]:
        got: dict[str, Any] = ui.http.get("/api/services").json()["in_use"]
        return got

    try:
        ui.start()
        assert wait_until(lambda: ui.acks().get("modbus_gateway") == (1, True), 30), (
            ui.acks(), gateway.log())  # fmt: skip
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it serves where its host setting says
        assert wait_until(lambda: "interfaces.modbus.tcp_port" in in_use(), 10), in_use()
        (used,) = in_use()["interfaces.modbus.tcp_port"]
        assert (used["service"], used["value"], used["source"], used["host"], used["device"]) == (
            "modbus_gateway", str(port), "BMS_TCP_PORT", host, False)  # fmt: skip
        assert used["note"] == f"modbus_gateway@{host} uses {port} (BMS_TCP_PORT)"
        (listen,) = in_use()["interfaces.modbus.tcp_host"]
        assert (listen["value"], listen["device"]) == ("127.0.0.1", True)
        step = ui.http.get("/api/wizard/steps/interfaces").json()["in_use"]
        assert step["interfaces.modbus.tcp_port"][0]["note"] == used["note"]

        # once the configuration says what the host sets, that field is no longer reported
        config = ui.http.get("/api/config").json()["config"]
        config["interfaces"]["modbus"]["tcp_port"] = port
        r = ui.http.post("/api/config", json={"config": config, "comment": "the port in use"})
        assert r.status_code == 201, r.text
        assert wait_until(lambda: ui.acks().get("modbus_gateway") == (2, True), 20), ui.acks()
        assert set(in_use()) == {"interfaces.modbus.tcp_host"}
    finally:
        ui.stop()
        gateway.stop()
