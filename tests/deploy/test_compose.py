"""The compose files and Dockerfiles, read as data: every service healthy-checked, restarted,
logged in as its own broker user with its own secret; racks cover every module once."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.fleet_view.__main__ import parse_args
from services.slave_agent.settings import SlaveAgentSettings, parse_modules
from shared.broker import LATENCY_SETTINGS, PERSISTENCE_SETTINGS
from shared.config import demo_config
from shared.deploy.acl import SERVICE_ROLES, RackLayout, role_of
from shared.racks import rack_instance
from shared.topics import SITE, SLAVE

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGES = ("slave_agent", "master_core", "modbus_gateway", "can_gateway", "config_ui", "fleet_view")
DEMO_MODULES = demo_config().topology.modules


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return data


def mount(volume: str) -> tuple[str, str]:
    """(source, target) of a short volume syntax; sources may hold `${VAR:-default}`."""
    plain = re.sub(r"\$\{[^}]*\}", "VAR", volume)
    source_len = len(volume) - len(plain) + len(plain.split(":")[0])
    return volume[:source_len], plain.split(":")[1]


def merged(*names: str) -> dict[str, Any]:
    """Compose's merge of override files, for the keys these files use."""
    out: dict[str, Any] = {}
    for name in names:
        for svc, spec in load(name)["services"].items():
            base = out.setdefault(svc, {})
            for key, value in spec.items():
                if key == "environment":
                    base[key] = {**base.get(key, {}), **value}
                elif key == "volumes":
                    targets = {mount(v)[1]: v for v in [*base.get(key, []), *value]}
                    base[key] = list(targets.values())
                else:
                    base[key] = value
    return out


def dockerfile(svc: dict[str, Any]) -> str:
    return (DEPLOY.parent / svc["build"]["dockerfile"]).read_text()


def racks(services: dict[str, Any]) -> list[int]:
    hosted = []
    for name, svc in services.items():
        env = svc.get("environment", {})
        if name.startswith("slave-rack"):
            settings = SlaveAgentSettings(
                rack=env["BMS_RACK"], modules_per_rack=int(default_of(env["BMS_MODULES_PER_RACK"]))
            )
            hosted += settings.module_list(DEMO_MODULES)
    return sorted(hosted)


def test_every_service_restarts_and_has_a_health_check() -> None:
    for name, svc in load("compose.yaml")["services"].items():
        if name == "credentials":
            assert svc["restart"] == "no"
            continue
        assert svc["restart"] == "unless-stopped", name
        own = "test" in svc.get("healthcheck", {})
        assert own or "\nHEALTHCHECK " in dockerfile(svc), name


def test_each_service_logs_in_as_its_own_user_with_its_own_secret() -> None:
    services = load("compose.yaml")["services"]
    made_by_init = {mount(v)[1]: mount(v)[0] for v in services["credentials"]["volumes"]}
    roles = set()
    for name, svc in services.items():
        env = svc.get("environment", {})
        if "BMS_MQTT_URL" not in env:
            continue
        user = env["BMS_MQTT_USERNAME"]
        role = role_of(user)
        assert role in SERVICE_ROLES and svc["image"].startswith(f"bms/{role}:"), name
        volume = f"secret-{user}"
        if role == SLAVE:  # a rack: its own user and secret
            assert user == rack_instance(int(env["BMS_RACK"])), name
            volume = f"secret-rack{env['BMS_RACK']}"
        secret_dir = str(Path(env["BMS_MQTT_PASSWORD_FILE"]).parent)
        mounted = {mount(v)[1]: mount(v)[0] for v in svc["volumes"]}
        assert mounted[secret_dir] == volume, name
        assert made_by_init[f"/credentials/{user}"] == volume, name
        roles.add(role)
    assert roles == set(SERVICE_ROLES)


@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.racks.yaml")])
def test_the_credentials_step_knows_every_rack_of_the_layout(files: tuple[str, ...]) -> None:
    """The ACL it writes names each rack's modules: it must match the racks that run."""
    services = merged(*files)
    env = services["credentials"]["environment"]
    layout = RackLayout(int(default_of(env["BMS_RACKS"])),
                        int(default_of(env["BMS_MODULES_PER_RACK"])))  # fmt: skip
    rack_envs = [svc["environment"] for n, svc in services.items() if n.startswith("slave-rack")]
    assert sorted(int(e["BMS_RACK"]) for e in rack_envs) == list(range(layout.racks))
    for e in rack_envs:
        assert int(default_of(e["BMS_MODULES_PER_RACK"])) == layout.modules_per_rack
    made = {mount(v)[1] for v in services["credentials"]["volumes"]}
    assert {f"/credentials/{u}" for u in layout.users()} <= made


@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.racks.yaml")])
def test_the_credentials_step_scopes_the_acl_to_the_system_the_services_run(
    files: tuple[str, ...],
) -> None:
    """The ACL grants one system's topics: the credentials step must be told the same system
    (the same variable, with the same default) as every service."""
    services = merged(*files)
    systems = {n: str(svc["environment"]["BMS_SYSTEM"]) for n, svc in services.items()
               if "environment" in svc and n != "broker"}  # fmt: skip
    assert systems["credentials"] == "${BMS_SYSTEM:-demo}"
    assert set(systems.values()) == {"${BMS_SYSTEM:-demo}"}, systems


def test_the_credentials_step_pins_the_acl_to_the_bridges_edge_node() -> None:
    """The ACL grants the bridge its own Sparkplug edge node only: the credentials step must
    be told the bridge's BMS_SPARKPLUG_EDGE_NODE (the same variable, the same default)."""
    services = load("compose.yaml")["services"]
    bridge = services["integrations"]["environment"]["BMS_SPARKPLUG_EDGE_NODE"]
    assert bridge == "${BMS_SPARKPLUG_EDGE_NODE:-bms}"
    assert services["credentials"]["environment"]["BMS_SPARKPLUG_EDGE_NODE"] == bridge


def default_of(value: object) -> str:
    """`${VAR:-4}` -> '4' (what compose uses with VAR unset)."""
    return re.sub(r"\$\{\w+:-(\d+)\}", r"\1", str(value))


def test_broker_requires_logins_and_keeps_retained_state() -> None:
    broker = load("compose.yaml")["services"]["broker"]
    assert broker["image"] == "eclipse-mosquitto:2"
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "acl_file" in conf and "password_file" in conf
    assert "persistence true" in conf
    # saved after every change, as the test harness's broker (no event lost in a kill)
    settings = [line for line in conf.splitlines() if line.startswith("autosave")]
    assert settings == list(PERSISTENCE_SETTINGS)
    assert all(line in conf.splitlines() for line in LATENCY_SETTINGS)
    assert any(v.startswith("broker-data:/mosquitto/data") for v in broker["volumes"])
    depends = broker["depends_on"]["credentials"]["condition"]
    assert depends == "service_completed_successfully"


ALSO_COPIED = {"master_core": {"plant", "site_controller"}}
"""Besides its own service: the master image carries the in-process plant for the container
demo (BMS_HARDWARE=simulated in compose.yaml; a real installation runs `devices`) and the site
controller (compose.site.yaml), which needs nothing the master does not."""


def test_dockerfiles_are_slim_non_root_and_install_only_their_extra() -> None:
    for image in IMAGES:
        text = (DEPLOY / "docker" / f"{image}.Dockerfile").read_text()
        instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert instructions[0] == "FROM python:3.11-slim", image
        assert re.search(r"^USER 10001:10001$", text, re.M) and "--uid 10001" in text, image
        assert f"COPY deploy/requirements/{image}.txt" in text, image
        assert "--no-cache-dir" in text and "\nHEALTHCHECK " in text, image
        copied = set(re.findall(r"^COPY services/(\w+)/", text, re.M))
        assert copied == {image} | ALSO_COPIED.get(image, set()), image
        requirements = (DEPLOY / "requirements" / f"{image}.txt").read_text()
        assert f"--extra {image}" in requirements.splitlines()[1], image
        assert "pytest" not in requirements and "mypy" not in requirements


def test_the_racks_of_each_layout_host_every_demo_module_once() -> None:
    assert racks(merged("compose.yaml")) == list(range(DEMO_MODULES))
    assert racks(merged("compose.yaml", "compose.racks.yaml")) == list(range(DEMO_MODULES))


def test_added_racks_look_like_the_base_ones() -> None:
    def without_rack(svc: dict[str, Any]) -> dict[str, Any]:
        # the rack number, and with it the broker user and its secret, differ
        env = {k: v for k, v in svc["environment"].items()
               if k not in ("BMS_RACK", "BMS_MQTT_USERNAME")}  # fmt: skip
        return {**svc, "environment": env, "volumes": None}

    base = without_rack(merged("compose.yaml")["slave-rack1"])
    base["environment"]["BMS_MODULES_PER_RACK"] = "2"
    for name, svc in merged("compose.yaml", "compose.racks.yaml").items():
        if name.startswith("slave-rack"):
            assert without_rack(svc) == base, name


def test_remote_racks_need_the_broker_address_and_rack_number() -> None:
    rack = load("compose.rack-remote.yaml")["services"]["rack"]
    env = rack["environment"]
    assert env["BMS_MQTT_URL"].startswith("${BMS_MQTT_URL:?")
    assert env["BMS_RACK"].startswith("${BMS_RACK:?")
    assert env["BMS_MQTT_USERNAME"] == "slave_agent-rack${BMS_RACK}"
    assert rack["restart"] == "unless-stopped"
    assert "HEALTHCHECK" in (DEPLOY / "docker" / "slave_agent.Dockerfile").read_text()


def test_tls_override_moves_every_service_to_mqtts_with_the_ca() -> None:
    services = merged("compose.yaml", "compose.tls.yaml")
    for name, svc in services.items():
        env = svc.get("environment", {})
        if "BMS_MQTT_URL" in env:
            assert env["BMS_MQTT_URL"] == "mqtts://broker:8883", name
            sources = {mount(v)[1]: mount(v)[0] for v in svc["volumes"]}
            assert sources[env["BMS_MQTT_CA_FILE"]].endswith("/ca.crt"), name
    assert services["broker"]["environment"]["MOSQUITTO_EXTRA_CONF"].endswith("tls.conf")


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose missing")
@pytest.mark.parametrize(
    "files",
    [
        ["compose.yaml"],
        ["compose.yaml", "compose.racks.yaml"],
        ["compose.yaml", "compose.tls.yaml"],
        ["compose.rack-remote.yaml"],
        ["compose.yaml", "compose.site.yaml"],
        ["compose.yaml", "compose.site.yaml", "compose.masters.yaml"],
        ["compose.fleet.yaml"],
    ],
)
def test_docker_compose_accepts_the_files(files: list[str]) -> None:
    argv = [str(shutil.which("docker-compose")), "-p", "bmscheck"]
    for f in files:
        argv += ["-f", str(DEPLOY / f)]
    env = {"BMS_MQTT_URL": "mqtt://central:1883", "BMS_RACK": "2", "BMS_SITE_STRINGS": "s1,s2",
           "BMS_FLEET_MQTT_URL": "mqtts://fleet-1:8883"}  # fmt: skip
    done = subprocess.run([*argv, "config", "-q"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ordinal_racks_cover_the_modules_of_a_scaled_statefulset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the Kubernetes StatefulSet in deploy/k8s/racks.yaml does with 2 replicas."""
    sts = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / "racks.yaml").read_text())
               if d["kind"] == "StatefulSet")  # fmt: skip
    env = {e["name"]: e["value"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BMS_RACK"] == "ordinal"
    hosted = []
    for ordinal in range(sts["spec"]["replicas"]):
        monkeypatch.setattr("socket.gethostname", lambda o=ordinal: f"bms-rack-{o}")
        settings = SlaveAgentSettings(rack="ordinal", modules_per_rack=env["BMS_MODULES_PER_RACK"])
        assert settings.instance_name() == f"slave_agent-rack{ordinal}"
        hosted += parse_modules(settings.modules)
    assert [m for m in hosted if m < DEMO_MODULES] == list(range(DEMO_MODULES))


def test_the_site_controller_logs_in_as_its_own_user_made_by_the_credentials_step() -> None:
    services = merged("compose.yaml", "compose.site.yaml")
    svc = services["site-controller"]
    env = svc["environment"]
    assert env["BMS_MQTT_USERNAME"] == SITE and env["BMS_SYSTEM"] == "${BMS_SYSTEM:-demo}"
    assert svc["command"] == ["python", "-m", "services.site_controller"]
    assert svc["restart"] == "unless-stopped" and "site_controller" in svc["healthcheck"]["test"]
    made = {mount(v)[1]: mount(v)[0] for v in services["credentials"]["volumes"]}
    mounted = {mount(v)[1]: mount(v)[0] for v in svc["volumes"]}
    assert made[f"/credentials/{SITE}"] == mounted["/run/secrets/bms"] == f"secret-{SITE}"
    # its event log outlives a restart: a volume where the image keeps its data (BMS_DATA_DIR)
    assert mounted["/data"] == "site-data"
    dockerfile = (DEPLOY / "docker" / "master_core.Dockerfile").read_text()
    assert "ENV BMS_DATA_DIR=/data" in dockerfile
    # the ACL names the strings the site controller may read and command
    assert services["credentials"]["environment"]["BMS_SITE_STRINGS"].startswith(
        "${BMS_SITE_STRINGS:?"
    )


def test_the_gateways_web_application_and_bridge_of_a_site_stack_serve_the_site() -> None:
    services = merged("compose.yaml", "compose.site.yaml")
    for name, user in (("modbus-gateway", "modbus_gateway"), ("can-gateway", "can_gateway"),
                       ("config-ui", "config_ui"), ("integrations", "integrations")):  # fmt: skip
        env = services[name]["environment"]
        assert env["BMS_SITE"] == env["BMS_SYSTEM"] == "${BMS_SYSTEM:-demo}", name
        assert env["BMS_MQTT_USERNAME"] == user  # the base file's, kept


def compose_default(value: object) -> str:
    """`${VAR:-x}` -> 'x', `${VAR:-}` -> '' (what compose uses with VAR unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def test_the_fleet_view_needs_the_central_broker_and_reads_its_password_from_a_file() -> None:
    (name,) = load("compose.fleet.yaml")["services"]
    svc = load("compose.fleet.yaml")["services"][name]
    env = svc["environment"]
    assert svc["image"].startswith("bms/fleet_view:") and svc["restart"] == "unless-stopped"
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert env["BMS_MQTT_URL"].startswith("${BMS_FLEET_MQTT_URL:?")
    mounted = {mount(v)[1]: mount(v)[0] for v in svc["volumes"]}
    assert str(Path(env["BMS_MQTT_PASSWORD_FILE"]).parent) in mounted
    # the image's health check, on the port the image listens on and compose publishes
    text = dockerfile(svc)
    assert "test" not in svc["healthcheck"] and "/healthz" in text.split("\nHEALTHCHECK ")[1]
    port = re.findall(r"BMS_FLEET_PORT=(\d+)", text)[0]
    assert [p.rsplit(":", 1)[1] for p in svc["ports"]] == [port]
    # the names are the ones `python -m services.fleet_view` reads
    values = {k: compose_default(v) for k, v in env.items()}
    values["BMS_MQTT_URL"] = "mqtts://fleet-1:8883"
    args = parse_args([], {**values, "BMS_FLEET_HOST": "0.0.0.0", "BMS_FLEET_PORT": port})
    assert args.username == "fleet_view" and args.ca_file is None
    assert args.password_file == env["BMS_MQTT_PASSWORD_FILE"]


def test_one_container_masters_every_string_of_a_site_each_as_its_own_user() -> None:
    """compose.masters.yaml: the strings of BMS_SITE_STRINGS in one master process, their
    passwords in the directory the credentials step fills (a file per master user), without
    auto-close (the site controller closes them), healthy-checked by the image."""
    from services.master_core.host import MasterHostSettings
    from shared.deploy.credentials import STRING_MASTERS

    services = merged("compose.yaml", "compose.site.yaml", "compose.masters.yaml")
    svc = services["string-masters"]
    env = svc["environment"]
    assert env["BMS_SYSTEMS"].startswith("${BMS_SITE_STRINGS:?")
    assert env["BMS_AUTO_CLOSE"] == "false" and "BMS_MQTT_USERNAME" not in env
    made = {mount(v)[1]: mount(v)[0] for v in services["credentials"]["volumes"]}
    mounted = {mount(v)[1]: mount(v)[0] for v in svc["volumes"]}
    password_dir = env["BMS_MQTT_PASSWORD_DIR"]
    assert mounted[password_dir] == made[f"/credentials/{STRING_MASTERS}"]
    assert svc["image"].startswith("bms/master_core:") and "\nHEALTHCHECK " in dockerfile(svc)
    assert svc["restart"] == "unless-stopped"
    # the variables are the settings' (BMS_ + the field's name)
    assert {"systems", "mqtt_password_dir"} <= set(MasterHostSettings.model_fields)
