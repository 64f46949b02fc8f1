"""The site configuration's REST endpoints: applied versions are stored, published retained
under the site id and acknowledged by the real site controller; problems come back by field."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.site_controller.service import SiteService
from services.site_controller.settings import SiteControllerSettings
from shared.bus import InMemoryBus
from shared.messages import SiteConfigMessage
from shared.topics import SITE_CONFIG
from tests.config_ui.conftest import UiHarness, make_harness
from tests.config_ui.test_api import wait_for

SITE = "site-a"


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[UiHarness]:
    yield from make_harness(tmp_path, site=SITE, site_config=True)


@pytest.fixture
def controller(keeper: UiHarness) -> Iterator[SiteService]:
    """The site controller on the same broker, its bus served in a thread."""
    bus = InMemoryBus(keeper.broker, system=SITE, service="site_controller", kind="test")
    service = SiteService(bus, SiteControllerSettings(system=SITE))
    bus.start()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            bus.process(timeout_s=0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield service
    stop.set()
    thread.join(1)


def body(*systems: str, **extra: Any) -> dict[str, Any]:
    return {"config": {"site": SITE, "strings": [{"system": s} for s in systems], **extra}}


def test_apply_publishes_retained_and_the_site_controller_acknowledges(
    keeper: UiHarness, controller: SiteService
) -> None:
    keeper.login()
    assert keeper.client.get("/api/site/config").json()["version"] is None
    r = keeper.client.post("/api/site/config", json=body("s1", "s2") | {"comment": "two"})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["summary"] == "2 strings: s1, s2"
    wait_for(lambda: controller.core is not None)
    assert controller.core is not None and controller.core.config.system_ids == ("s1", "s2")

    def acked() -> bool:
        acks = keeper.client.get("/api/site/config").json()["acks"]
        return any(a["current"] and a["accepted"] for a in acks)

    wait_for(acked)
    # a late subscriber (a restarted controller) gets the retained version
    late: list[SiteConfigMessage] = []
    other = InMemoryBus(keeper.broker, system=SITE, service="late", kind="test")
    other.subscribe(SITE_CONFIG, lambda d: late.append(d.message))
    other.start()
    wait_for(lambda: (other.process(timeout_s=0.01), bool(late))[1])
    assert late[0].config.config_version == 1

    r = keeper.client.post(
        "/api/site/config", json=body("s1", "s2", "s3", join_window_v=3.0, stale_after_s=4.0)
    )
    assert r.status_code == 201 and r.json()["version"] == 2
    wait_for(lambda: controller.core is not None and len(controller.core.config.strings) == 3)
    wait_for(lambda: keeper.client.get("/api/site/config").json()["acks"][0]["config_version"] == 2)
    diff = keeper.client.get("/api/site/config/diff?from_version=1&to_version=2").json()
    assert {d["path"]: d["change"] for d in diff} == {
        "strings[2].system": "added",
        "strings[2].resistance_mohm": "added",
        "strings[2].in_service": "added",
        "join_window_v": "changed",
        "stale_after_s": "changed",
    }
    versions = keeper.client.get("/api/site/config/versions").json()
    assert versions["count"] == 2 and [v["version"] for v in versions["versions"]] == [2, 1]
    back = keeper.client.post("/api/site/config/rollback/1", json={})
    assert back.status_code == 201 and back.json()["based_on"] == 1
    wait_for(lambda: controller.core is not None and len(controller.core.config.strings) == 2)
    exported = keeper.client.get("/api/site/config/export?version=2")
    assert exported.json()["format"] == "bms-site-config"
    assert "bms-site-config-site-a-v2.json" in exported.headers["content-disposition"]
    # the same content again is not a new version
    again = keeper.client.post("/api/site/config", json=body("s1", "s2"))
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        (body("s1", "s1")["config"], "strings.1.system", "listed twice (also string 1)"),
        (body("s1", SITE)["config"], "site", "is also the id of one of its strings"),
        (body("s1", SITE)["config"], "strings.1.system", "is also the id of one of its"),
        (body(*[f"s{i}" for i in range(17)])["config"], "strings", "at most 16"),
        (body("s1", current_sharing_factor=1.5)["config"], "current_sharing_factor", "at most 1"),
        (body("s1", join_window_v=0)["config"], "join_window_v", "greater than 0"),
        (body("s1", stale_after_s=0.1)["config"], "stale_after_s", "at least 0.5"),
        ({"site": SITE, "strings": [{"system": "s1", "resistance_mohm": -2}]},
         "strings.0.resistance_mohm", "greater than 0"),
        ({"site": "other", "strings": [{"system": "s1"}]}, "site", "BMS_SITE"),
        ({"site": SITE, "strings": [{"system": "Bad Id"}]}, "strings.0.system", "not valid"),
    ],
)  # fmt: skip
def test_problems_come_back_at_their_field(
    keeper: UiHarness, config: dict[str, Any], field: str, words: str
) -> None:
    keeper.login()
    r = keeper.client.post("/api/site/config", json={"config": config})
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(words in m for m in errors.get(field, [])), errors
    checked = keeper.client.post("/api/site/config/validate", json=config).json()
    assert checked["valid"] is False and field in checked["errors"]
    assert keeper.client.get("/api/site/config/versions").json()["count"] == 0


def test_a_valid_configuration_validates(keeper: UiHarness) -> None:
    keeper.login()
    r = keeper.client.post("/api/site/config/validate", json=body("s1", "s2")["config"])
    assert r.json() == {"valid": True, "errors": {}}


def test_only_the_keeping_application_has_the_endpoints(tmp_path: Path) -> None:
    for ui in make_harness(tmp_path, site=SITE):
        ui.login()
        assert ui.client.get("/api/site/config").status_code == 404
        assert ui.client.post("/api/site/config", json=body("s1")).status_code == 404


def test_a_viewer_cannot_apply(keeper: UiHarness) -> None:
    keeper.login()
    r = keeper.client.post(
        "/api/users", json={"username": "vera", "password": "a long password 1", "role": "viewer"}
    )
    assert r.status_code == 201, r.text
    keeper.client.post("/api/session/logout")
    keeper.client.headers.pop("X-CSRF-Token", None)
    keeper.login("vera", "a long password 1")
    assert keeper.client.post("/api/site/config", json=body("s1")).status_code == 403


def test_the_page_is_served_where_the_configuration_is_kept(keeper: UiHarness) -> None:
    keeper.login()
    page = keeper.client.get("/site/config")
    assert page.status_code == 200
    assert 'data-testid="site-form"' in page.text and "/static/site_config.js" in page.text
    assert 'href="/site/config"' in keeper.client.get("/").text


def test_no_page_without_the_site_configuration(tmp_path: Path) -> None:
    for ui in make_harness(tmp_path, site=SITE):
        ui.login()
        assert ui.client.get("/site/config").status_code == 404
        assert 'href="/site/config"' not in ui.client.get("/").text


def test_an_operator_holds_a_string_out_and_asks_it_to_join(
    keeper: UiHarness, controller: SiteService
) -> None:
    keeper.login()
    assert keeper.client.post("/api/site/config", json=body("s1", "s2")).status_code == 201
    wait_for(lambda: controller.core is not None)
    r = keeper.client.post("/api/site/strings/s2/out")
    assert r.status_code == 200, r.text
    assert controller.core is not None and set(controller.core.held()) == {"s2"}
    r = keeper.client.post("/api/site/strings/nope/join")
    assert r.status_code == 502 and "not a string of site" in r.json()["detail"]
    assert keeper.client.post("/api/site/strings/s2/join").status_code == 200
    assert controller.core.held() == {}
    assert keeper.client.post("/api/site/strings/s2/sideways").status_code == 422


def test_the_site_page_offers_operators_hold_and_join(tmp_path: Path) -> None:
    for ui in make_harness(tmp_path, site=SITE):
        ui.login()
        page = ui.client.get("/site").text
        assert 'data-testid="site-operator"' in page and "/static/site_operator.js" in page


def test_an_operator_disconnects_the_site_and_connects_it_again(
    keeper: UiHarness, controller: SiteService
) -> None:
    keeper.login()
    r = keeper.client.post("/api/site/operation/disconnect")
    assert r.status_code == 502 and "no site configuration yet" in r.json()["detail"]
    assert keeper.client.post("/api/site/config", json=body("s1", "s2")).status_code == 201
    wait_for(lambda: controller.core is not None)
    r = keeper.client.post("/api/site/operation/disconnect")
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"operation": "disconnect", "held": 2}
    assert controller.core is not None
    assert controller.core.held() == {"s1": "disconnected by an operator",
                                      "s2": "disconnected by an operator"}  # fmt: skip
    r = keeper.client.post("/api/site/strings/s2/join")  # one string cannot beat the site's
    assert r.status_code == 502 and "connect it first" in r.json()["detail"]
    r = keeper.client.post("/api/site/operation/connect")
    assert r.status_code == 200 and r.json()["result"] == {"operation": "connect", "released": 2}
    assert controller.core.held() == {} and controller.core.disconnected is None
    assert keeper.client.post("/api/site/operation/sideways").status_code == 422


def test_the_site_page_offers_operators_disconnect_and_connect(tmp_path: Path) -> None:
    for ui in make_harness(tmp_path, site=SITE):
        ui.login()
        page = ui.client.get("/site").text
        assert 'data-testid="op-disconnect"' in page and 'data-testid="op-connect"' in page
