"""The fleet's broker configuration (shared/deploy/fleet.py): committed files, what crosses the
bridge, and a site's permissions at the centre."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.broker import MosquittoBroker, find_mosquitto
from shared.deploy import fleet
from shared.topics import EVENTS, PACK_STATE, SITE_STATE, SITE_SUMMARY


def test_committed_deploy_files_match_the_generator() -> None:
    assert fleet.check() == [], "run python -m shared.deploy.fleet --write"


def test_check_notices_a_changed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "DEPLOY_DIR", tmp_path)
    assert sorted(fleet.check()) == sorted(fleet.DEPLOY_FILES)
    for name, render in fleet.DEPLOY_FILES.items():
        (tmp_path / name).write_text(render())
    assert fleet.check() == []
    (tmp_path / "rabbitmq.conf").write_text(fleet.rabbitmq_conf() + "# edited\n")
    assert fleet.check() == ["rabbitmq.conf"]


def _lines(conf: str, key: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in conf.splitlines() if line.startswith(key + " ")]


def test_bridge_forwards_events_and_summaries_only_at_qos_1_remapped_under_the_site() -> None:
    conf = fleet.bridge_conf(fleet.EXAMPLE)
    topics = _lines(conf, "topic")
    assert topics == [
        "+/events/+ out 1 bms/v1/ fleet/site-a/",
        "+/site/summary out 1 bms/v1/ fleet/site-a/",
    ]
    # the patterns are the registry's: what a subscriber at the site reads is what crosses
    assert f"bms/v1/{topics[0].split()[0]}" == EVENTS.filter()
    assert f"bms/v1/{topics[1].split()[0]}" == SITE_SUMMARY.filter()
    assert EVENTS.qos == SITE_SUMMARY.qos == 1
    for spec in (SITE_STATE, PACK_STATE):  # 10 Hz state stays at the site
        assert not any(spec.filter().endswith(t.split()[0].lstrip("+")) for t in topics)


def test_bridge_is_persistent_bounded_mqtt311_and_authenticated() -> None:
    conf = fleet.bridge_conf(fleet.EXAMPLE)
    for line in (
        "cleansession false",
        "local_cleansession false",
        "bridge_protocol_version mqttv311",
        "try_private false",
        "remote_username site-a",
        "bridge_cafile /mosquitto/certs/fleet-ca.crt",
        "bridge_insecure false",
        f"max_queued_messages {fleet.MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {fleet.MAX_QUEUED_BYTES}",
        "notification_topic fleet/site-a/bridge/state",
    ):
        assert line in conf.splitlines()
    # global options come before the connection block (after it they would be the bridge's)
    assert conf.index("max_queued_messages") < conf.index("connection ")


def test_plain_tcp_only_when_asked() -> None:
    plain = fleet.BridgeSettings(site="s1", centre=("127.0.0.1:1883",), cafile=None)
    assert "bridge_cafile" not in fleet.bridge_conf(plain)


@pytest.mark.parametrize("site", ["", "Site", "a/b", "+", "#", "x" * 33])
def test_a_bad_site_id_is_refused(site: str) -> None:
    with pytest.raises(ValueError):
        fleet.bridge_conf(fleet.BridgeSettings(site=site, centre=("h:1",)))


@given(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True), st.data())
def test_a_site_may_write_its_own_prefix_only(site: str, data: st.DataObject) -> None:
    other = data.draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True))
    write, read = fleet.site_topic_permissions(site).topic
    assert re.match(write, f"fleet.{site}.site-1.events.master_core")
    assert read == "^$"
    if other != site:
        assert not re.match(write, f"fleet.{other}.site-1.events.master_core")


def test_cli_writes_a_site_bridge_with_its_secret(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    out = tmp_path / "bridge.conf"
    rc = fleet.main(
        ["bridge", "--site", "plant-7", "--centre", "c1:8883", "--centre", "c2:8883",
         "--password-file", str(secret), "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    conf = out.read_text()
    assert "remote_password s3cret" in conf.splitlines()
    assert "address c1:8883 c2:8883" in conf.splitlines()


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_mosquitto_accepts_the_generated_bridge(tmp_path: Path) -> None:
    """mosquitto 2.0 has no config check flag: it must start with the block (an unknown or
    misplaced option makes it exit), the centre being unreachable."""
    conf = fleet.bridge_conf(
        fleet.BridgeSettings(site="site-a", centre=("127.0.0.1:9",), password="x", cafile=None)
    )
    with MosquittoBroker(persistence_dir=tmp_path, extra_config=conf) as broker:
        assert broker.running
