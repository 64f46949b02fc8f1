"""Home Assistant's discovery documents are published again when they may be gone: after a
reconnection to the broker (one without persistence forgets retained messages when it
restarts) and at Home Assistant's birth message. Before, they went out once per bridge process:
after such a broker restart Home Assistant had no BMS device until the bridge restarted."""

from __future__ import annotations

from shared.topics import PACK_STATE, SITE_STATE
from tests.factories import pack_state, site_state
from tests.integrations.test_bridge import Rig

SITE = "site1"


def documents(rig: Rig) -> list[str]:
    return sorted(
        t for t, _p, _q, retain in rig.bus.sent if t.startswith("homeassistant/") and retain
    )


def states(rig: Rig) -> None:
    """A pack state from the master and a site state from the site controller, handled."""
    assert rig.site is not None
    rig.master.publish(PACK_STATE, pack_state())
    rig.site.publish(SITE_STATE, site_state())
    rig.pump()
    rig.bridge.poll_feed()


def announced() -> tuple[Rig, list[str]]:
    rig = Rig(ha_discovery=True, site=SITE)
    rig.bridge.poll_feed()  # the first connection: nothing announced yet, nothing renewed
    states(rig)
    first = documents(rig)
    assert any("/bms_s1/" in t for t in first) and any(f"/bms_site-{SITE}/" in t for t in first)
    rig.bus.sent.clear()
    states(rig)  # announced once: further states publish no document
    assert documents(rig) == []
    assert rig.bus.counters["ha_discovery_renewals"] == 0
    return rig, first


def test_every_document_is_published_again_after_a_reconnection() -> None:
    rig, first = announced()
    rig.bus.abort()  # the broker went away
    rig.bridge.poll_feed()
    rig.bus.start()  # and came back without what it had retained
    rig.bridge.poll_feed()
    states(rig)
    assert documents(rig) == first
    assert rig.bus.counters["ha_discovery_renewals"] == 1
    rig.bus.sent.clear()
    states(rig)
    assert documents(rig) == []


def test_home_assistants_birth_asks_for_every_document_again() -> None:
    rig, first = announced()
    rig.broker.route("homeassistant/status", b"offline", False)
    states(rig)
    assert documents(rig) == []
    rig.broker.route("homeassistant/status", b"online", False)
    states(rig)
    assert documents(rig) == first
    assert rig.bus.counters["ha_discovery_renewals"] == 1


def test_without_discovery_nothing_listens_to_home_assistant() -> None:
    rig = Rig(site=SITE)
    states(rig)
    rig.broker.route("homeassistant/status", b"online", False)
    states(rig)
    assert documents(rig) == []
    assert not rig.bus.wants("homeassistant/status")
