"""The Kubernetes manifests, read as data: consistent with each other, with the Secrets that
`python -m shared.deploy.credentials k8s` makes, and with the broker configuration."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.fleet_view.__main__ import parse_args
from shared.deploy import credentials
from shared.deploy.acl import SERVICE_ROLES, RackLayout, render
from shared.topics import OUTSIDE_ROOT, SLAVE, acl_filter_in

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUSTOMIZATION = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
DOCS = [d for f in KUSTOMIZATION["resources"] for d in yaml.safe_load_all((DEPLOY / f).read_text())]
WORKLOADS = [d for d in DOCS if d["kind"] in ("Deployment", "StatefulSet")]
SECRETS = {i["metadata"]["name"]: i for i in json.loads(credentials.k8s_secrets("bms"))["items"]}


def pods() -> list[tuple[str, dict[str, Any]]]:
    return [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in WORKLOADS]


def test_kustomization_lists_every_manifest_and_the_broker_files() -> None:
    listed = {Path(f).name for f in KUSTOMIZATION["resources"]}
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")}
    for f in KUSTOMIZATION["configMapGenerator"][0]["files"]:
        assert (DEPLOY / f).is_file(), f


def test_services_select_a_workload() -> None:
    labels = [w["spec"]["template"]["metadata"]["labels"] for w in WORKLOADS]
    for svc in (d for d in DOCS if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= lab.items() for lab in labels), svc["metadata"]["name"]


def secret_of(pod: dict[str, Any], container: dict[str, Any], directory: str) -> str:
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    return str(next(v["secret"]["secretName"] for v in pod["volumes"]
                    if v["name"] == mounts[directory]))  # fmt: skip


def test_every_service_pod_is_non_root_probed_and_logs_in_with_its_own_secret() -> None:
    roles = set()
    for name, pod in pods():
        (container,) = pod["containers"]
        if not container["image"].startswith("bms/"):
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert "readinessProbe" in container, name
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["BMS_MQTT_URL"] == "mqtt://bms-broker:1883", name
        if "BMS_MQTT_PASSWORD_DIR" in env:  # the racks: each pod picks its user by ordinal
            assert "BMS_MQTT_USERNAME" not in env and env["BMS_RACK"] == "ordinal", name
            secret = secret_of(pod, container, env["BMS_MQTT_PASSWORD_DIR"])
            assert secret == credentials.RACKS_SECRET, name
            roles.add(SLAVE)
            continue
        user = env["BMS_MQTT_USERNAME"]
        assert user in SERVICE_ROLES and container["image"].startswith(f"bms/{user}:"), name
        secret = secret_of(pod, container, str(Path(env["BMS_MQTT_PASSWORD_FILE"]).parent))
        assert secret == f"bms-mqtt-{user.replace('_', '-')}" and secret in SECRETS, name
        roles.add(user)
    assert roles == set(SERVICE_ROLES)


def test_the_racks_secret_and_the_acl_cover_the_statefulset_replicas() -> None:
    sts = next(w for w in WORKLOADS if w["metadata"]["name"] == "bms-rack")
    env = {e["name"]: e["value"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    layout = RackLayout(sts["spec"]["replicas"], int(env["BMS_MODULES_PER_RACK"]))
    assert set(SECRETS[credentials.RACKS_SECRET]["stringData"]) == set(layout.users())
    assert SECRETS["bms-broker-passwd"]["stringData"]["acl"] == render(layout)
    bigger = RackLayout(6, 4)
    doc = json.loads(credentials.k8s_secrets("bms", bigger))
    racks = next(i for i in doc["items"] if i["metadata"]["name"] == credentials.RACKS_SECRET)
    assert set(racks["stringData"]) == {f"slave_agent-rack{r}" for r in range(6)}


def test_the_acl_secret_grants_the_system_the_pods_run() -> None:
    systems = {
        e["value"]
        for _, pod in pods()
        for c in pod["containers"]
        for e in c.get("env", [])
        if e["name"] == "BMS_SYSTEM"
    }
    assert len(systems) == 1
    (system,) = systems
    acl_text = SECRETS["bms-broker-passwd"]["stringData"]["acl"]
    topics = [line.split()[-1] for line in acl_text.splitlines() if line.startswith("topic ")]
    outside = {  # Home Assistant's, Sparkplug's
        acl_filter_in(p, system, None) for grants in OUTSIDE_ROOT.values() for p, _ in grants
    }
    assert topics and all(t.startswith(f"bms/v1/{system}/") or t in outside for t in topics)


def test_the_documented_secrets_command_pins_the_acl_to_the_bridges_edge_node() -> None:
    """`credentials k8s --edge-node` (docs, kustomization) is the bridge's
    BMS_SPARKPLUG_EDGE_NODE, so the ACL grants the edge node the bridge publishes as."""
    _, pod = next(p for p in pods() if p[0] == "bms-integrations")
    (container,) = pod["containers"]
    edge = {e["name"]: e["value"] for e in container["env"]}["BMS_SPARKPLUG_EDGE_NODE"]
    for doc in (DEPLOY.parent / "docs/deployment.md", DEPLOY / "kustomization.yaml"):
        commands = re.findall(r"deploy\.credentials k8s[^|`]*\| kubectl", doc.read_text())
        assert commands, doc
        for command in commands:
            assert re.findall(r"--edge-node (\S+)", command) == [edge], (doc, command)
    acl_text = json.loads(credentials.k8s_secrets("bms", edge_node=edge))["items"]
    broker = next(i for i in acl_text if i["metadata"]["name"] == "bms-broker-passwd")
    assert f"topic readwrite spBv1.0/bms/+/{edge}\n" in broker["stringData"]["acl"]


def test_ui_admin_password_comes_from_its_secret() -> None:
    _, pod = next(p for p in pods() if p[0] == "bms-config-ui")
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    path = Path(env["BMS_UI_ADMIN_PASSWORD_FILE"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(path.parent)])
    assert volume["secret"]["secretName"] == "bms-ui-admin" in SECRETS
    assert path.name in SECRETS["bms-ui-admin"]["stringData"]


FLEET = DEPLOY / "k8s" / "fleet"
FLEET_KUSTOMIZATION = yaml.safe_load((FLEET / "kustomization.yaml").read_text())
FLEET_DOCS = [d for f in FLEET_KUSTOMIZATION["resources"]
              for d in yaml.safe_load_all((FLEET / f).read_text())]  # fmt: skip


def fleet_view_pod() -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = [d for d in FLEET_DOCS if d["kind"] == "Deployment"]
    return deployment, deployment["spec"]["template"]["spec"]


def test_the_fleet_view_is_a_kustomization_of_its_own_apart_from_the_sites() -> None:
    """The centre's view reads the central broker: it is no part of a site's namespace."""
    assert {Path(f).name for f in FLEET_KUSTOMIZATION["resources"]} == {
        p.name for p in FLEET.glob("*.yaml") if p.name != "kustomization.yaml"
    }
    assert FLEET_KUSTOMIZATION["namespace"] == "bms-fleet" != KUSTOMIZATION["namespace"]
    assert {i["name"] for i in FLEET_KUSTOMIZATION["images"]} == {"bms/fleet_view"}
    assert not any("fleet" in str(f) for f in KUSTOMIZATION["resources"])


def test_the_fleet_view_pod_is_non_root_probed_and_reads_its_secret() -> None:
    deployment, pod = fleet_view_pod()
    (container,) = pod["containers"]
    assert container["image"].startswith("bms/fleet_view:")
    dockerfile = (DEPLOY / "docker" / "fleet_view.Dockerfile").read_text()
    uid = int(re.findall(r"^USER (\d+):", dockerfile, re.M)[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    (port,) = container["ports"]
    assert int(env["BMS_FLEET_PORT"]) == port["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # a broker outage makes it not ready; only a view that stops serving is restarted
    assert container["livenessProbe"]["httpGet"]["path"] != "/healthz"
    for key in ("BMS_MQTT_PASSWORD_FILE", "BMS_MQTT_CA_FILE"):
        assert secret_of(pod, container, str(Path(env[key]).parent)) == "bms-fleet-view", key
    assert env["BMS_MQTT_URL"].startswith("mqtts://")  # the centre over TLS, its CA mounted
    # one client id, one persistent session: never two pods at once, not even in a rollout
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    (service,) = [d for d in FLEET_DOCS if d["kind"] == "Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_the_fleet_view_reads_the_manifests_environment() -> None:
    """The names in the manifest are the ones `python -m services.fleet_view` reads."""
    _, pod = fleet_view_pod()
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    args = parse_args([], env)
    assert args.mqtt_url == env["BMS_MQTT_URL"] and args.username == "fleet_view"
    assert args.password_file == env["BMS_MQTT_PASSWORD_FILE"]
    assert args.ca_file == env["BMS_MQTT_CA_FILE"]
    assert (args.host, args.port) == ("0.0.0.0", 8090)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize(("root", "namespace"), [(DEPLOY, "bms"), (FLEET, "bms-fleet")])
def test_kustomize_renders_the_manifests_into_their_namespace(root: Path, namespace: str) -> None:
    done = subprocess.run([str(shutil.which("kubectl")), "kustomize", str(root)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d["kind"] != "Namespace"]
    assert rendered and {d["metadata"]["namespace"] for d in rendered} == {namespace}
