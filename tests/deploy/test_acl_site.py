"""The site controller's broker access on a real mosquitto: under the site its own topics,
under each of its strings the pack state, configuration and events to read and exactly
`cmd/set_mode` and `cmd/contactors` to send; nothing of another system. Judged by delivery,
as tests/deploy/test_acl_matrix.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port
from shared.deploy import acl, credentials
from shared.topics import INTEGRATIONS, MODBUS, SITE

from .test_acl_matrix import SENTINEL, TEST_USERS, Broker, sentinel

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

SITE_ID, STRINGS, OTHER = "site1", ("s1", "s2"), "s3"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    store: Path = tmp_path_factory.mktemp("credentials")
    credentials.init(store, uid=None, system=SITE_ID, site_strings=STRINGS)
    extra_users = {u: credentials.new_secret() for u in ("observer", "injector")}
    for user, password in extra_users.items():
        (store / user).mkdir()
        (store / user / "password").write_text(password)
    passwd = store / "test-passwd"
    passwd.write_text(
        (store / "broker" / "passwd").read_text() + credentials.password_file(extra_users)
    )
    acl_file = store / "test-acl"
    acl_file.write_text((store / "broker" / "acl").read_text() + TEST_USERS)
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl_file}\n"
    )
    with MosquittoBroker(extra_config=extra):
        wait_for_port("127.0.0.1", port, 5)
        yield Broker(port, store)


WRITES = {
    f"bms/v1/{SITE_ID}/site/state": True,
    f"bms/v1/{SITE_ID}/site/summary": True,
    f"bms/v1/{SITE_ID}/events/{SITE}": True,
    f"bms/v1/{SITE_ID}/config/ack/{SITE}": True,
    f"bms/v1/{SITE_ID}/site/config": False,
    f"bms/v1/{SITE_ID}/events/master_core": False,
    f"bms/v1/{SITE_ID}/cmd/set_mode": False,
    f"bms/v1/{SITE_ID}/reply/config_ui/c1": True,  # its replies to the operators' site_string
    **{f"bms/v1/{s}/reply/config_ui/c1": False for s in STRINGS},
    **{f"bms/v1/{s}/cmd/set_mode": True for s in STRINGS},
    **{f"bms/v1/{s}/cmd/contactors": True for s in STRINGS},
    **{f"bms/v1/{s}/cmd/reset_faults": False for s in STRINGS},
    **{f"bms/v1/{s}/cmd/service_reset": False for s in STRINGS},
    **{f"bms/v1/{s}/pack/state": False for s in STRINGS},
    **{f"bms/v1/{s}/events/{SITE}": False for s in STRINGS},
    f"bms/v1/{OTHER}/cmd/set_mode": False,
}
READS = {
    f"bms/v1/{SITE_ID}/site/config": True,
    f"bms/v1/{SITE_ID}/site/state": False,
    f"bms/v1/{SITE_ID}/cmd/site_string": True,  # the operators' command it serves
    f"bms/v1/{SITE_ID}/cmd/site_operation": True,  # SCADA's and the operators' too
    f"bms/v1/{SITE_ID}/cmd/events_query": True,  # and its event log
    **{f"bms/v1/{s}/cmd/events_query": False for s in STRINGS},  # the masters' own
    f"bms/v1/{SITE_ID}/cmd/set_mode": False,
    **{f"bms/v1/{s}/cmd/set_mode": False for s in STRINGS},
    **{f"bms/v1/{s}/pack/state": True for s in STRINGS},
    **{f"bms/v1/{s}/config": True for s in STRINGS},
    **{f"bms/v1/{s}/events/master_core": True for s in STRINGS},
    **{f"bms/v1/{s}/reply/{SITE}/c1": True for s in STRINGS},
    **{f"bms/v1/{s}/reply/config_ui/c1": False for s in STRINGS},
    **{f"bms/v1/{s}/pack/cells": False for s in STRINGS},
    f"bms/v1/{OTHER}/pack/state": False,
}


def test_the_generator_says_the_same() -> None:
    for topic, allowed in WRITES.items():
        assert acl.may(SITE, "write", topic, system=SITE_ID, site_strings=STRINGS) == allowed
    for topic, allowed in READS.items():
        assert acl.may(SITE, "read", topic, system=SITE_ID, site_strings=STRINGS) == allowed


def test_the_site_controller_publishes_only_what_it_may(broker: Broker) -> None:
    observer, injector, site = (broker.login(u) for u in ("observer", "injector", SITE))
    try:
        observer.subscribe("bms/#", SENTINEL)
        site.publish_all(list(WRITES))
        delivered = set(observer.round_ended(sentinel(injector)))
        assert delivered == {t for t, ok in WRITES.items() if ok}
    finally:
        for c in (observer, injector, site):
            c.close()


def test_the_site_controller_reads_only_what_it_may(broker: Broker) -> None:
    injector, site = (broker.login(u) for u in ("injector", SITE))
    try:
        site.subscribe("bms/#", SENTINEL)
        injector.publish_all(list(READS))
        got = set(site.round_ended(sentinel(injector)))
        assert got == {t for t, ok in READS.items() if ok}
    finally:
        for c in (injector, site):
            c.close()


# --- the strings' masters on the site's broker: one user each --------------------------------
S1_MASTER = acl.string_master("s1")
MASTER_WRITES = {
    "bms/v1/s1/pack/state": True,
    "bms/v1/s1/pack/cells": True,
    "bms/v1/s1/events/master_core": True,
    "bms/v1/s1/reply/site_controller/c1": True,
    "bms/v1/s1/events/site_controller": False,  # not another service's name
    "bms/v1/s1/config": False,  # the web application's
    "bms/v1/s2/pack/state": False,  # another string
    "bms/v1/s2/events/master_core": False,
    f"bms/v1/{SITE_ID}/site/state": False,  # the site's
    f"bms/v1/{SITE_ID}/pack/state": False,
    f"bms/v1/{OTHER}/pack/state": False,
}
MASTER_READS = {
    "bms/v1/s1/cmd/set_mode": True,
    "bms/v1/s1/cmd/contactors": True,
    "bms/v1/s1/config": True,
    "bms/v1/s2/cmd/set_mode": False,
    "bms/v1/s2/config": False,
    f"bms/v1/{SITE_ID}/cmd/site_string": False,
    f"bms/v1/{SITE_ID}/site/config": False,
}


def test_each_string_has_a_master_user_of_its_own() -> None:
    assert acl.users(site_strings=STRINGS)[-2:] == ("master_core-s1", "master_core-s2")
    assert acl.role_of(S1_MASTER) == "master_core"
    for topic, allowed in MASTER_WRITES.items():
        assert acl.may(S1_MASTER, "write", topic, system=SITE_ID, site_strings=STRINGS) == allowed
    for topic, allowed in MASTER_READS.items():
        assert acl.may(S1_MASTER, "read", topic, system=SITE_ID, site_strings=STRINGS) == allowed
    # the same user names no string of another site
    assert acl.grants(acl.string_master("s9"), system=SITE_ID, site_strings=STRINGS) == []
    text = acl.render(system=SITE_ID, site_strings=STRINGS)
    assert "user master_core-s2\ntopic " in text


def test_a_string_master_publishes_and_reads_only_its_string(broker: Broker) -> None:
    observer, injector, master = (broker.login(u) for u in ("observer", "injector", S1_MASTER))
    try:
        observer.subscribe("bms/#", SENTINEL)
        master.publish_all(list(MASTER_WRITES))
        delivered = set(observer.round_ended(sentinel(injector)))
        assert delivered == {t for t, ok in MASTER_WRITES.items() if ok}
        master.subscribe("bms/#", SENTINEL)
        injector.publish_all(list(MASTER_READS))
        got = set(master.round_ended(sentinel(injector)))
        assert got == {t for t, ok in MASTER_READS.items() if ok}
    finally:
        for c in (observer, injector, master):
            c.close()


# --- SCADA's SetOp: the site's Modbus gateway sends the site command -------------------------
MODBUS_WRITES = {
    f"bms/v1/{SITE_ID}/cmd/site_operation": True,  # SCADA's 802 SetOp
    f"bms/v1/{SITE_ID}/cmd/site_string": False,  # the operators' alone
    "bms/v1/s1/cmd/site_operation": False,  # under the site's id only
    "bms/v1/s1/cmd/contactors": False,  # a string's master takes no command from it
}


def test_the_modbus_gateway_of_a_site_sends_site_operation_only(broker: Broker) -> None:
    for topic, allowed in MODBUS_WRITES.items():
        assert acl.may(MODBUS, "write", topic, system=SITE_ID, site_strings=STRINGS) == allowed
    observer, injector, gateway = (broker.login(u) for u in ("observer", "injector", MODBUS))
    try:
        observer.subscribe("bms/#", SENTINEL)
        gateway.publish_all(list(MODBUS_WRITES))
        delivered = set(observer.round_ended(sentinel(injector)))
        assert delivered == {t for t, ok in MODBUS_WRITES.items() if ok}
    finally:
        for c in (observer, injector, gateway):
            c.close()


def test_the_web_application_may_ask_the_sites_event_log_and_read_the_answer() -> None:
    """The Site page's backfill: `cmd/events_query` under the site id, the reply on its own
    reply topic, which the site controller may write."""
    asks, answer = f"bms/v1/{SITE_ID}/cmd/events_query", f"bms/v1/{SITE_ID}/reply/config_ui/c1"
    for user, access, topic in (
        ("config_ui", "write", asks), (SITE, "read", asks),
        (SITE, "write", answer), ("config_ui", "read", answer),
    ):  # fmt: skip
        assert acl.may(user, access, topic, system=SITE_ID, site_strings=STRINGS), (user, topic)


BRIDGE_WRITES = {
    f"bms/v1/{SITE_ID}/json/site/state": True,
    f"bms/v1/{SITE_ID}/json/service/site_controller/status": True,
    "homeassistant/sensor/bms_site-site1/soc/config": True,
    f"bms/v1/{SITE_ID}/site/state": False,  # the site controller's
    f"bms/v1/{OTHER}/json/site/state": False,  # another system's
}
BRIDGE_READS = {
    f"bms/v1/{SITE_ID}/site/state": True,
    f"bms/v1/{SITE_ID}/service/site_controller/status": True,
    f"bms/v1/{OTHER}/site/state": False,
}


def test_the_integrations_bridge_of_a_site_reads_its_state_and_mirrors_it(broker: Broker) -> None:
    """BMS_SITE on the bridge: under the site id it reads the site state and the site
    controller's presence and writes their JSON mirror and the site device's discovery."""
    for topic, allowed in BRIDGE_WRITES.items():
        assert acl.may(INTEGRATIONS, "write", topic, system=SITE_ID) == allowed, topic
    for topic, allowed in BRIDGE_READS.items():
        assert acl.may(INTEGRATIONS, "read", topic, system=SITE_ID) == allowed, topic
    observer, injector, bridge = (broker.login(u) for u in ("observer", "injector", INTEGRATIONS))
    try:
        observer.subscribe("bms/#", SENTINEL)  # the test's observer reads bms/# only
        under_bms = [t for t in BRIDGE_WRITES if t.startswith("bms/")]
        bridge.publish_all(under_bms)
        delivered = set(observer.round_ended(sentinel(injector)))
        assert delivered == {t for t in under_bms if BRIDGE_WRITES[t]}
    finally:
        for c in (observer, injector, bridge):
            c.close()
