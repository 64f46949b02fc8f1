"""The generated ACL's Sparkplug B entries: the bridge pinned to its own edge node
(`--edge-node`, BMS_SPARKPLUG_EDGE_NODE), any edge node without it, and the `sparkplug_host`
user (reads the Sparkplug topics, sends the edge node's commands, nothing under `bms/v1/`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.deploy import acl, credentials
from shared.topics import INTEGRATIONS, SPARKPLUG_HOST, THIRD_PARTY

SYSTEM = "plant1"
EDGE = "site-a"
NODE_MESSAGES = ("NBIRTH", "NDATA", "NDEATH")
DEVICE_MESSAGES = ("DBIRTH", "DDATA", "DDEATH")


def sparkplug_rules(text: str, user: str) -> set[str]:
    """`<access> <filter>` of `user`'s Sparkplug entries in a rendered ACL."""
    block = text.split(f"\nuser {user}\n", 1)[1].split("\n\n", 1)[0]
    return {line.removeprefix("topic ") for line in block.splitlines() if " spBv1.0/" in line}


def test_with_an_edge_node_the_bridge_has_exactly_its_own_node_and_device() -> None:
    text = acl.render(system=SYSTEM, edge_node=EDGE)
    assert "# Sparkplug B: edge node site-a." in text
    assert sparkplug_rules(text, INTEGRATIONS) == {
        f"readwrite spBv1.0/bms/+/{EDGE}",
        f"read spBv1.0/bms/NCMD/{EDGE}",
        f"readwrite spBv1.0/bms/+/{EDGE}/{SYSTEM}",
        f"read spBv1.0/bms/DCMD/{EDGE}/{SYSTEM}",
    }
    for message in NODE_MESSAGES:
        own, other = (f"spBv1.0/bms/{message}/{node}" for node in (EDGE, "site-b"))
        assert acl.may(INTEGRATIONS, "write", own, system=SYSTEM, edge_node=EDGE)
        assert not acl.may(INTEGRATIONS, "write", other, system=SYSTEM, edge_node=EDGE)
    for message in DEVICE_MESSAGES:
        own = f"spBv1.0/bms/{message}/{EDGE}/{SYSTEM}"
        assert acl.may(INTEGRATIONS, "write", own, system=SYSTEM, edge_node=EDGE)
        for other in (f"spBv1.0/bms/{message}/site-b/{SYSTEM}", f"spBv1.0/bms/{message}/{EDGE}/x"):
            assert not acl.may(INTEGRATIONS, "write", other, system=SYSTEM, edge_node=EDGE)
    assert acl.may(INTEGRATIONS, "read", f"spBv1.0/bms/NCMD/{EDGE}", system=SYSTEM, edge_node=EDGE)
    assert not acl.may(
        INTEGRATIONS, "read", "spBv1.0/bms/NCMD/site-b", system=SYSTEM, edge_node=EDGE
    )


def test_every_sparkplug_entry_names_the_edge_node_when_it_is_given() -> None:
    """No user keeps a `+` at the edge node level (only a host's STATE has no edge node)."""
    text = acl.render(system=SYSTEM, edge_node=EDGE)
    for user in acl.users():
        for rule in sparkplug_rules(text, user):
            levels = rule.split()[1].split("/")
            assert levels[1] == "STATE" or levels[3] == EDGE, (user, rule)


def test_without_an_edge_node_any_edge_node_of_the_group_is_granted() -> None:
    text = acl.render(system=SYSTEM)
    assert "# Sparkplug B: any edge node (no --edge-node)." in text
    assert sparkplug_rules(text, INTEGRATIONS) == {
        "readwrite spBv1.0/bms/+/+",
        "read spBv1.0/bms/NCMD/+",
        f"readwrite spBv1.0/bms/+/+/{SYSTEM}",
        f"read spBv1.0/bms/DCMD/+/{SYSTEM}",
    }
    assert acl.may(INTEGRATIONS, "write", "spBv1.0/bms/NBIRTH/anyone", system=SYSTEM)


def test_the_sparkplug_host_reads_sparkplug_and_commands_only_the_bridge() -> None:
    text = acl.render(system=SYSTEM, edge_node=EDGE)
    assert sparkplug_rules(text, SPARKPLUG_HOST) == {
        f"read spBv1.0/bms/+/{EDGE}",
        f"write spBv1.0/bms/NCMD/{EDGE}",
        f"read spBv1.0/bms/+/{EDGE}/{SYSTEM}",
        f"write spBv1.0/bms/DCMD/{EDGE}/{SYSTEM}",
        "readwrite spBv1.0/STATE/+",
    }
    grants = acl.grants(SPARKPLUG_HOST, system=SYSTEM, edge_node=EDGE)
    assert not [g for g in grants if not g.pattern.startswith("spBv1.0/")]  # no bms/v1/
    for message in NODE_MESSAGES:
        topic = f"spBv1.0/bms/{message}/{EDGE}"
        assert acl.may(SPARKPLUG_HOST, "read", topic, system=SYSTEM, edge_node=EDGE)
        assert not acl.may(SPARKPLUG_HOST, "write", topic, system=SYSTEM, edge_node=EDGE)
    assert acl.may(SPARKPLUG_HOST, "write", f"spBv1.0/bms/NCMD/{EDGE}", system=SYSTEM,
                   edge_node=EDGE)  # fmt: skip
    assert not acl.may(SPARKPLUG_HOST, "write", "spBv1.0/bms/NCMD/site-b", system=SYSTEM,
                       edge_node=EDGE)  # fmt: skip
    for topic in (f"bms/v1/{SYSTEM}/cmd/reset_faults", f"bms/v1/{SYSTEM}/pack/state"):
        for access in ("read", "write"):
            assert not acl.may(SPARKPLUG_HOST, access, topic, system=SYSTEM, edge_node=EDGE)
    # nobody else may command the edge node
    ncmd = f"spBv1.0/bms/NCMD/{EDGE}"
    writers = [u for u in acl.users() if acl.may(u, "write", ncmd, system=SYSTEM, edge_node=EDGE)]
    assert sorted(writers) == [INTEGRATIONS, SPARKPLUG_HOST]  # the bridge: `+` message type


ids = st.text(
    st.characters(blacklist_characters="/+#", blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=20,
).filter(lambda s: s.isprintable() and s == s.strip())


@given(ids, ids)
def test_an_edge_node_id_grants_its_own_topics_and_no_other(edge: str, other: str) -> None:
    if other == edge:
        return
    for user, access, kind in ((INTEGRATIONS, "write", "NBIRTH"), (SPARKPLUG_HOST, "write",
                               "NCMD"), (THIRD_PARTY, "read", "NDATA")):  # fmt: skip
        assert acl.may(user, access, f"spBv1.0/bms/{kind}/{edge}", system=SYSTEM, edge_node=edge)
        assert not acl.may(
            user, access, f"spBv1.0/bms/{kind}/{other}", system=SYSTEM, edge_node=edge
        )


BAD_IDS = ["a/b", "+", "#", "site#1", "", " site", "site ", "a\nb", "a\tb"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_bad_edge_node_id_is_refused_with_a_clear_error(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="Sparkplug edge node id"):
        acl.render(system=SYSTEM, edge_node=bad)
    with pytest.raises(SystemExit):
        acl.main(["--system", SYSTEM, "--edge-node", bad])
    assert "Sparkplug edge node id" in capsys.readouterr().err


@pytest.mark.parametrize("bad", BAD_IDS)
def test_the_credentials_step_writes_nothing_for_a_bad_edge_node_id(
    tmp_path: Path, bad: str
) -> None:
    with pytest.raises(SystemExit):
        credentials.main(["init", str(tmp_path), "--uid", "0", "--edge-node", bad])
    assert not (tmp_path / "broker").exists()


def test_the_edge_node_comes_from_the_bridges_setting_or_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BMS_SYSTEM", SYSTEM)
    monkeypatch.setenv("BMS_SPARKPLUG_EDGE_NODE", EDGE)
    assert credentials.main(["init", str(tmp_path), "--uid", "0"]) == 0
    assert (tmp_path / "broker" / "acl").read_text() == acl.render(system=SYSTEM, edge_node=EDGE)
    capsys.readouterr()
    assert acl.main([]) == 0
    assert capsys.readouterr().out == acl.render(system=SYSTEM, edge_node=EDGE)
    assert acl.main(["--edge-node", "site-b"]) == 0  # the option wins
    assert capsys.readouterr().out == acl.render(system=SYSTEM, edge_node="site-b")
    monkeypatch.setenv("BMS_SPARKPLUG_EDGE_NODE", "")  # empty: unset, any edge node
    assert acl.main([]) == 0
    assert capsys.readouterr().out == acl.render(system=SYSTEM)


def test_the_sparkplug_host_gets_a_password_like_the_third_parties(tmp_path: Path) -> None:
    assert SPARKPLUG_HOST in credentials.init(tmp_path, uid=None, edge_node=EDGE)
    password = credentials.show(tmp_path, SPARKPLUG_HOST)
    assert len(password) >= 32
    passwd = (tmp_path / "broker" / "passwd").read_text()
    assert f"\n{SPARKPLUG_HOST}:$7$" in passwd
    doc = json.loads(credentials.k8s_secrets("bms", edge_node=EDGE))
    secrets = {i["metadata"]["name"]: i["stringData"] for i in doc["items"]}
    assert set(secrets["bms-mqtt-sparkplug-host"]) == {"password"}
    assert secrets["bms-broker-passwd"]["acl"] == acl.render(edge_node=EDGE)
