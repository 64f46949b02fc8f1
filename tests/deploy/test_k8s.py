"""The Kubernetes manifests, read as data: consistent with each other, with the Secrets that
`python -m shared.deploy.credentials k8s` makes, and with the broker configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from shared.deploy import credentials
from shared.deploy.acl import SERVICE_ROLES

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


def test_every_service_pod_is_non_root_probed_and_logs_in_with_its_own_secret() -> None:
    users = set()
    for name, pod in pods():
        (container,) = pod["containers"]
        if not container["image"].startswith("bms/"):
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert "readinessProbe" in container, name
        env = {e["name"]: e["value"] for e in container["env"]}
        user = env["BMS_MQTT_USERNAME"]
        assert user in SERVICE_ROLES and container["image"].startswith(f"bms/{user}:"), name
        assert env["BMS_MQTT_URL"] == "mqtt://bms-broker:1883", name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = mounts[str(Path(env["BMS_MQTT_PASSWORD_FILE"]).parent)]
        secret = next(v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == volume)
        assert secret == f"bms-mqtt-{user.replace('_', '-')}" and secret in SECRETS, name
        users.add(user)
    assert users == set(SERVICE_ROLES)


def test_broker_gets_the_password_file_secret_and_the_generated_config() -> None:
    _, pod = next(p for p in pods() if p[0] == "bms-broker")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "bms-broker-passwd" in SECRETS
    config_map = KUSTOMIZATION["configMapGenerator"][0]["name"]
    assert volumes["config"]["configMap"]["name"] == config_map
    assert "passwd" in SECRETS["bms-broker-passwd"]["stringData"]


def test_ui_admin_password_comes_from_its_secret() -> None:
    _, pod = next(p for p in pods() if p[0] == "bms-config-ui")
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    path = Path(env["BMS_UI_ADMIN_PASSWORD_FILE"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(path.parent)])
    assert volume["secret"]["secretName"] == "bms-ui-admin" in SECRETS
    assert path.name in SECRETS["bms-ui-admin"]["stringData"]
