"""Credentials made at first start: kept across restarts, private, and mosquitto-compatible."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from shared.deploy import credentials
from shared.deploy.acl import RackLayout, render, users
from shared.topics import EVENTS_READER, HOME_ASSISTANT, SIM, SPARKPLUG_HOST, THIRD_PARTY

USERS = users()


def test_first_start_makes_a_secret_per_user_and_the_password_file(tmp_path: Path) -> None:
    made = credentials.init(tmp_path, uid=None)
    assert set(made) == {*USERS, credentials.UI_ADMIN}
    secrets = {u: credentials.show(tmp_path, u) for u in USERS}
    assert len(set(secrets.values())) == len(USERS)  # all different
    assert all(len(s) >= 32 for s in secrets.values())
    passwd = (tmp_path / "broker" / "passwd").read_text().splitlines()
    assert [line.split(":", 1)[0] for line in passwd] == list(USERS)
    assert (tmp_path / "broker" / "acl").read_text() == render()
    for path in [tmp_path / "broker" / "passwd", tmp_path / "broker" / "acl",
                 *(tmp_path / u / "password" for u in USERS)]:  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path  # owner only


def test_more_racks_get_their_secrets_and_the_acl_follows_the_layout(tmp_path: Path) -> None:
    credentials.init(tmp_path, uid=None)
    kept = credentials.show(tmp_path, "slave_agent-rack1")
    layout = RackLayout(racks=4, modules_per_rack=2)
    assert credentials.init(tmp_path, uid=None, layout=layout) == [
        "slave_agent-rack2", "slave_agent-rack3"
    ]  # fmt: skip
    assert credentials.show(tmp_path, "slave_agent-rack1") == kept
    acl_text = (tmp_path / "broker" / "acl").read_text()
    assert acl_text == render(layout)
    assert "user slave_agent-rack3\ntopic write bms/v1/demo/slave/6/telemetry\n" in acl_text


def test_the_layout_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BMS_RACKS", "3")
    monkeypatch.setenv("BMS_MODULES_PER_RACK", "5")
    monkeypatch.setenv("BMS_SYSTEM", "plant-7")
    assert credentials.main(["init", str(tmp_path), "--uid", "0"]) == 0
    acl_text = (tmp_path / "broker" / "acl").read_text()
    assert acl_text == render(RackLayout(3, 5), "plant-7")
    assert "topic write bms/v1/plant-7/slave/14/telemetry" in acl_text
    assert "bms/v1/+/" not in acl_text and "bms/v1/demo/" not in acl_text
    monkeypatch.setenv("BMS_RACKS", "90")
    with pytest.raises(SystemExit):
        credentials.main(["init", str(tmp_path)])  # 90 racks of 5 pass module 195


@pytest.mark.parametrize("system", ["+", "#", "Demo", "a/b", "", "demo\n"])
def test_a_system_id_that_is_no_topic_level_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system: str
) -> None:
    """`+` would admit every system again; the credentials step refuses it before writing."""
    monkeypatch.delenv("BMS_SYSTEM", raising=False)
    with pytest.raises(SystemExit):
        credentials.main(["init", str(tmp_path), "--uid", "0", "--system", system])
    assert not (tmp_path / "broker").exists()


def test_a_restart_keeps_secrets_and_adds_what_is_missing(tmp_path: Path) -> None:
    credentials.init(tmp_path, uid=None)
    before = {u: credentials.show(tmp_path, u) for u in USERS}
    (tmp_path / "third_party" / "password").unlink()
    assert credentials.init(tmp_path, uid=None) == ["third_party"]
    after = {u: credentials.show(tmp_path, u) for u in USERS}
    assert {u for u in USERS if before[u] != after[u]} == {"third_party"}
    assert credentials.init(tmp_path, uid=None) == []


SERVICE_UID = 12345


def _can_give_files_to(uid: int) -> bool:
    """Root, with `uid` mapped: in a user namespace of its own (`unshare --map-root-user`) a
    process is root, but a uid outside its map cannot own a file (EINVAL)."""
    if os.geteuid() != 0:
        return False
    try:
        rows = Path("/proc/self/uid_map").read_text().split("\n")
    except OSError:
        return True  # no user namespaces here: root is root
    spans = [tuple(int(x) for x in row.split()) for row in rows if row.strip()]
    return any(inside <= uid < inside + count for inside, _outside, count in spans)


@pytest.mark.skipif(
    not _can_give_files_to(SERVICE_UID),
    reason="giving a file to the service user needs root with that user mapped",
)
def test_service_secrets_belong_to_the_service_user_the_rest_to_root(tmp_path: Path) -> None:
    credentials.init(tmp_path, uid=SERVICE_UID)
    for user in USERS:
        owner = (tmp_path / user / "password").stat().st_uid
        assert owner == (
            0
            if user in (THIRD_PARTY, EVENTS_READER, SIM, HOME_ASSISTANT, SPARKPLUG_HOST)
            else SERVICE_UID
        ), user
    assert (tmp_path / "broker" / "passwd").stat().st_uid == 0


def test_hash_is_mosquittos_pbkdf2_sha512_format() -> None:
    salt = bytes(range(12))
    line = credentials.mosquitto_hash("secret", salt)
    kind, iterations, salt_b64, digest_b64 = line.split("$")[1:]
    assert (kind, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)
    assert base64.b64decode(digest_b64) == expected


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_mosquitto_passwd_reads_our_file(tmp_path: Path) -> None:
    """mosquitto_passwd rewrites entries it can parse; a line it cannot parse makes it fail."""
    path = tmp_path / "passwd"
    path.write_text(credentials.password_file({"alice": "a", "bob": "b"}))
    subprocess.run(["mosquitto_passwd", "-b", str(path), "carol", "c"], check=True)
    users = [line.split(":")[0] for line in path.read_text().splitlines()]
    assert users == ["alice", "bob", "carol"]


def test_show_refuses_unknown_names(tmp_path: Path) -> None:
    credentials.init(tmp_path, uid=None)
    with pytest.raises(SystemExit, match="unknown name"):
        credentials.show(tmp_path, "root")
    assert credentials.show(tmp_path, credentials.UI_ADMIN)


def test_kubernetes_secrets_have_one_secret_per_user_and_the_password_file() -> None:
    doc = json.loads(credentials.k8s_secrets("bms"))
    names = {item["metadata"]["name"]: item["stringData"] for item in doc["items"]}
    for user in USERS:
        if user.startswith("slave_agent-rack"):
            assert names[credentials.RACKS_SECRET][user]
        else:
            assert names[f"bms-mqtt-{user.replace('_', '-')}"]["password"]
    passwd = names["bms-broker-passwd"]["passwd"].splitlines()
    assert [line.split(":")[0] for line in passwd] == list(USERS)
    assert names["bms-ui-admin"][credentials.UI_ADMIN_FILE]
    assert {item["metadata"]["namespace"] for item in doc["items"]} == {"bms"}


def test_a_sites_string_masters_get_their_passwords_in_one_directory(tmp_path: Path) -> None:
    """For one master process hosting every string (deploy/compose.masters.yaml): a file per
    string master, named after its user, holding its password; owner only; none without a
    site."""
    credentials.init(tmp_path / "plain", uid=None)
    assert not (tmp_path / "plain" / credentials.STRING_MASTERS).exists()
    credentials.init(tmp_path, uid=None, system="site1", site_strings=("s1", "s2"))
    folder = tmp_path / credentials.STRING_MASTERS
    assert sorted(p.name for p in folder.iterdir()) == ["master_core-s1", "master_core-s2"]
    for user in ("master_core-s1", "master_core-s2"):
        path = folder / user
        assert path.read_text().strip() == credentials.show(tmp_path, user)
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
