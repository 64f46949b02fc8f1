"""The REST API and the pages on an in-memory bus: auth, roles, CSRF, config, commands, events."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable
from urllib.parse import unquote

import httpx
import pytest
from fastapi.testclient import TestClient

from services.config_ui.api import live as live_api
from services.config_ui.auth import CHANGE_PASSWORD_FIRST
from services.config_ui.live import HistoryPoint
from services.config_ui.users import Role
from shared.bus import InMemoryBus
from shared.codec import decode
from shared.config import SystemConfig, demo_config, get_preset
from shared.messages import (
    CellSnapshot,
    ConfigAck,
    ConfigMessage,
    Event,
    EventsQueryArgs,
    FieldInUse,
    ModuleCells,
    ServiceOverride,
    ServiceResetArgs,
    ServiceStatus,
)
from shared.messages.events import EventKind, EventLevel, EventValue
from shared.topics import CONFIG, CONFIG_ACK, EVENTS, PACK_CELLS, PACK_STATE, SERVICE_STATUS
from tests.config_ui.conftest import ADMIN_PASSWORD, SYSTEM, UiHarness
from tests.factories import pack_state


def config_json(**changes: object) -> dict[str, object]:
    data = SystemConfig.from_preset("LFP", system_id=SYSTEM, modules=2, cells_per_module=8)
    return {**data.model_dump(mode="json"), **changes}


def add_user(ui: UiHarness, name: str, role: Role) -> None:
    ui.ctx.users.create_user(name, f"{name}-password-1", role, created_by="admin")


def retained_config(ui: UiHarness) -> SystemConfig:
    topic = CONFIG.topic(SYSTEM)
    return decode(ConfigMessage, topic, ui.broker.retained[topic]).config


def wait_for(check, timeout_s: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- authentication ---------------------------------------------------------------------------
def test_api_needs_a_session_and_pages_send_to_the_login(ui: UiHarness) -> None:
    assert ui.client.get("/api/state").status_code == 401
    r = ui.client.get("/config", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/config"


def test_wrong_password_is_refused_and_throttled(ui: UiHarness) -> None:
    for _ in range(5):
        r = ui.client.post("/api/session", json={"username": "admin", "password": "nope-nope-1"})
        assert r.status_code == 401
    r = ui.client.post("/api/session", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0


def test_login_sets_an_http_only_strict_cookie(ui: UiHarness) -> None:
    r = ui.client.post("/api/session", json={"username": "admin", "password": ADMIN_PASSWORD})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert r.json()["role"] == "admin"
    assert ui.client.get("/api/session").json()["username"] == "admin"


def test_writes_need_the_csrf_token(ui: UiHarness) -> None:
    token = ui.login()
    del ui.client.headers["X-CSRF-Token"]
    r = ui.client.post("/api/commands/reset_faults")
    assert r.status_code == 403
    assert "CSRF" in r.json()["detail"]
    r = ui.client.post("/api/commands/reset_faults", headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    r = ui.client.post("/api/commands/reset_faults", headers={"X-CSRF-Token": token})
    assert r.status_code == 200


def test_page_forms_need_the_csrf_field(ui: UiHarness) -> None:
    token = ui.login()
    del ui.client.headers["X-CSRF-Token"]
    form = {"username": "newbie", "password": "long-enough-1", "role": "viewer"}
    r = ui.client.post("/users", data=form, follow_redirects=False)
    assert r.status_code == 403
    assert ui.ctx.users.get_user("newbie") is None
    r = ui.client.post("/users", data={**form, "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert ui.ctx.users.get_user("newbie") is not None


def test_roles_viewer_reads_operator_commands_admin_configures(ui: UiHarness) -> None:
    add_user(ui, "vera", "viewer")
    add_user(ui, "otto", "operator")
    ui.login("vera", "vera-password-1")
    assert ui.client.get("/api/state").status_code == 200
    assert ui.client.post("/api/commands/reset_faults").status_code == 403
    ui.login("otto", "otto-password-1")
    assert ui.client.post("/api/commands/reset_faults").json()["status"] == "accepted"
    r = ui.client.post("/api/config", json={"config": config_json()})
    assert r.status_code == 403
    assert "admin" in r.json()["detail"]
    assert ui.client.get("/api/users").status_code == 403


def test_only_an_admin_sends_a_service_reset_with_a_reason_under_their_own_name(
    ui: UiHarness,
) -> None:
    add_user(ui, "otto", "operator")
    ui.login("otto", "otto-password-1")
    r = ui.client.post("/api/commands/service_reset", json={"reason": "cell replaced"})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    ui.login()
    for body in ({}, {"reason": "  "}, {"reason": "cell replaced", "user": "mallory"}):
        assert ui.client.post("/api/commands/service_reset", json=body).status_code == 422, body
    assert not [name for name, _ in ui.master.received if name == "service_reset"]
    r = ui.client.post("/api/commands/service_reset", json={"reason": "cell replaced"})
    assert r.json()["status"] == "accepted", r.json()
    name, args = ui.master.received[-1]
    assert name == "service_reset"
    assert args == ServiceResetArgs(
        service_override=ServiceOverride(user="admin", reason="cell replaced")
    )


def test_the_dashboard_offers_the_service_reset_to_admins_only(ui: UiHarness) -> None:
    add_user(ui, "otto", "operator")
    ui.login("otto", "otto-password-1")
    page = ui.client.get("/").text
    assert 'data-command="reset_faults"' in page
    assert 'data-command="service_reset"' not in page
    ui.login()
    page = ui.client.get("/").text
    assert 'data-command="service_reset"' in page and "data-reason=" in page


def test_logout_ends_the_session(ui: UiHarness) -> None:
    ui.login()
    assert ui.client.delete("/api/session").status_code == 204
    assert ui.client.get("/api/state").status_code == 401


def test_password_change_needs_the_current_one(ui: UiHarness) -> None:
    ui.login()
    r = ui.client.post(
        "/api/account/password",
        json={"current_password": "wrong-wrong-1", "new_password": "brand-new-pass-1"},
    )
    assert r.status_code == 403
    r = ui.client.post(
        "/api/account/password",
        json={"current_password": ADMIN_PASSWORD, "new_password": "brand-new-pass-1"},
    )
    assert r.status_code == 204
    assert ui.ctx.users.authenticate("admin", "brand-new-pass-1") is not None


@pytest.mark.parametrize(
    ("new", "words"),
    [
        (ADMIN_PASSWORD, "must differ from the current one"),
        ("password1234", "too easy to guess"),
        ("qwertyuiop12", "too easy to guess"),
        ("admin-admin-admin", "too easy to guess"),
        ("short", "at least 10 characters"),
    ],
)
def test_a_chosen_password_must_be_new_and_hard_to_guess(
    ui: UiHarness, new: str, words: str
) -> None:
    ui.login()
    r = ui.client.post(
        "/api/account/password", json={"current_password": ADMIN_PASSWORD, "new_password": new}
    )
    assert r.status_code == 422 and words in r.json()["detail"], r.json()
    assert ui.ctx.users.authenticate("admin", ADMIN_PASSWORD) is not None


def test_the_account_page_wants_the_new_password_twice(ui: UiHarness) -> None:
    ui.login()
    token = ui.client.headers["X-CSRF-Token"]
    form = {
        "csrf_token": token, "current_password": ADMIN_PASSWORD,
        "new_password": "a-lighthouse-keeper", "confirm_password": "a-lighthouse-keepr",
    }  # fmt: skip
    page = ui.client.post("/account", data=form)
    assert page.status_code == 422 and "confirmation differ" in page.text
    assert ui.ctx.users.authenticate("admin", ADMIN_PASSWORD) is not None
    page = ui.client.post("/account", data=form | {"confirm_password": "a-lighthouse-keeper"})
    assert page.status_code == 200 and "Password changed" in page.text
    assert ui.ctx.users.authenticate("admin", "a-lighthouse-keeper") is not None


def test_a_password_set_by_someone_else_must_be_changed_before_anything_else(
    ui: UiHarness,
) -> None:
    ui.login()
    ui.client.post(
        "/api/users", json={"username": "olga", "password": "olga-password-1", "role": "admin"}
    )
    ui.client.cookies.clear()
    info = ui.client.post(
        "/api/session", json={"username": "olga", "password": "olga-password-1"}
    ).json()
    assert info["must_change_password"] is True
    ui.client.headers["X-CSRF-Token"] = info["csrf_token"]
    for path in ("/api/state", "/api/config", "/api/users", "/api/events"):
        r = ui.client.get(path)
        assert (r.status_code, r.json()["detail"]) == (403, CHANGE_PASSWORD_FIRST), path
    assert ui.client.post("/api/commands/reset_faults").status_code == 403
    page = ui.client.get("/config", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/account")
    assert ui.client.get("/account").status_code == 200
    assert ui.client.get("/api/session").json()["must_change_password"] is True
    change = {"current_password": "olga-password-1", "new_password": "olga-own-password-2"}
    assert ui.client.post("/api/account/password", json=change).status_code == 204
    assert ui.client.get("/api/state").status_code == 200
    assert ui.client.get("/api/session").json()["must_change_password"] is False


def test_admin_resets_a_forgotten_password(ui: UiHarness) -> None:
    ui.login()
    ui.client.post(
        "/api/users", json={"username": "olga", "password": "olga-password-1", "role": "viewer"}
    )
    reset = {"new_password": "olga-reset-password-3"}
    assert ui.client.post("/api/users/olga/password", json=reset).status_code == 204
    assert ui.ctx.users.authenticate("olga", "olga-password-1") is None
    olga = ui.ctx.users.authenticate("olga", "olga-reset-password-3")
    assert olga is not None and olga.must_change_password
    assert ui.client.post("/api/users/nobody/password", json=reset).status_code == 422
    assert ui.client.post("/api/users/admin/password", json=reset).status_code == 422
    short = {"new_password": "short"}
    assert ui.client.post("/api/users/olga/password", json=short).status_code == 422


def test_version_numbers_beyond_sqlite_are_refused_not_crashed(ui: UiHarness) -> None:
    ui.login()
    huge = 10**20
    assert ui.client.get(f"/config/diff?from_version={huge}&to_version=1").status_code == 422
    assert ui.client.post(f"/config/rollback/{huge}").status_code == 422
    assert ui.client.get(f"/api/config/versions/{huge}").status_code == 422


# --- configuration ----------------------------------------------------------------------------
def test_apply_stores_a_version_with_its_user_and_publishes_it_retained(ui: UiHarness) -> None:
    ui.login()
    r = ui.client.post("/api/config", json={"config": config_json(), "comment": "first"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["version"], body["user"], body["source"]) == (1, "admin", "api")
    published = retained_config(ui)
    assert published.config_version == 1
    assert published.chemistry == "LFP"
    assert ui.client.get("/api/config").json()["config"]["topology"]["modules"] == 2


def test_invalid_config_is_refused_with_errors_at_their_fields(ui: UiHarness) -> None:
    ui.login()
    bad = config_json()
    prot = bad["protection"]
    assert isinstance(prot, dict)
    prot["cell_overvoltage"]["alarm"]["threshold"] = 9.0
    bad["cell_capacity_ah"] = -1
    r = ui.client.post("/api/config", json={"config": bad})
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert any(p.startswith("protection.cell_overvoltage") for p in errors), errors
    assert "cell_capacity_ah" in errors
    assert ui.ctx.store.latest() is None
    assert CONFIG.topic(SYSTEM) not in ui.broker.retained
    r = ui.client.post("/api/config/validate", json=bad)
    assert r.json()["valid"] is False


def test_config_for_another_system_is_pinned_to_this_one(ui: UiHarness) -> None:
    ui.login()
    r = ui.client.post("/api/config", json={"config": config_json(system_id="other")})
    assert r.status_code == 201
    assert retained_config(ui).system_id == SYSTEM


def test_history_diff_rollback_and_export_import(ui: UiHarness) -> None:
    ui.login()
    ui.client.post("/api/config", json={"config": config_json()})
    ui.client.post("/api/config", json={"config": config_json(cell_capacity_ah=120.0)})
    versions = ui.client.get("/api/config/versions").json()
    assert versions["count"] == 2
    assert [v["version"] for v in versions["versions"]] == [2, 1]
    diff = ui.client.get("/api/config/diff?from_version=1&to_version=2").json()
    assert {"path": "cell_capacity_ah", "old": 100.0, "new": 120.0, "change": "changed"} in diff
    r = ui.client.post("/api/config/rollback/1", json={"comment": "back"})
    assert r.status_code == 201
    assert (r.json()["version"], r.json()["based_on"]) == (3, 1)
    assert retained_config(ui).cell_capacity_ah == 100.0
    exported = ui.client.get("/api/config/export?version=2")
    assert "attachment" in exported.headers["content-disposition"]
    r = ui.client.post("/api/config/import", json=exported.json())
    assert r.status_code == 201
    assert r.json()["version"] == 4
    assert r.json()["source"] == "import"
    assert retained_config(ui).cell_capacity_ah == 120.0
    assert ui.client.get("/api/config/versions/99").status_code == 404


def test_import_of_garbage_is_refused(ui: UiHarness) -> None:
    ui.login()
    r = ui.client.post("/api/config/import", json={"format": "bms-config", "config": {"x": 1}})
    assert r.status_code == 422
    assert "topology" in r.json()["errors"]
    newer = {"format": "bms-config", "format_version": 99, "config": config_json()}
    r = ui.client.post("/api/config/import", json=newer)
    assert r.status_code == 422
    assert "format_version: 99 is not supported" in r.json()["errors"][""][0]


def test_services_show_the_version_they_acknowledged(ui: UiHarness) -> None:
    ui.login()
    ui.client.post("/api/config", json={"config": config_json()})
    master = ui.master.bus
    ack = ConfigAck(service="master_core", config_version=1, accepted=True)
    master.publish(CONFIG_ACK, ack, service="master_core")
    refused = ConfigAck(service="gw", config_version=1, accepted=False, errors=["restart me"])
    master.publish(CONFIG_ACK, refused, service="gw")

    def acks() -> dict[str, object]:
        rows = ui.client.get("/api/services").json()["services"]
        return {s["service"]: (s["config_version"], s["config_accepted"]) for s in rows}

    wait_for(lambda: acks().get("gw") == (1, False))
    assert acks()["master_core"] == (1, True)
    page = ui.client.get("/config").text
    assert "restart me" in page and "(refused)" in page


def test_the_fields_a_gateway_runs_with_host_values_show_at_the_fields(ui: UiHarness) -> None:
    ui.login()
    ui.client.post("/api/config", json={"config": config_json()})
    gw = ui.master.bus
    status = ServiceStatus(service="modbus_gateway", kind="modbus_gateway", state="online",
                           host="ipc-2")  # fmt: skip
    gw.publish(SERVICE_STATUS, status, service="modbus_gateway")
    ack = ConfigAck(
        service="modbus_gateway", config_version=1, accepted=True,
        in_use={
            "interfaces.modbus.tcp_port": FieldInUse(value="1502", source="BMS_TCP_PORT"),
            "interfaces.modbus.rtu_port": FieldInUse(
                value="/dev/ttyS1", source="BMS_RTU_PORT", host="ipc-2", device=True
            ),
        },
    )  # fmt: skip
    gw.publish(CONFIG_ACK, ack, service="modbus_gateway")
    tcp_port_note = "modbus_gateway@ipc-2 uses 1502 (BMS_TCP_PORT)"
    rtu_port_note = "modbus_gateway@ipc-2 uses /dev/ttyS1 (device named by BMS_RTU_PORT)"

    def by_path() -> dict[str, list[str]]:
        got = ui.client.get("/api/services").json()["in_use"]
        return {p: [u["note"] for u in us] for p, us in got.items()}

    wait_for(lambda: "interfaces.modbus.tcp_port" in by_path())
    assert by_path() == {
        "interfaces.modbus.rtu_port": [rtu_port_note],
        "interfaces.modbus.tcp_port": [tcp_port_note],
    }
    (row,) = [s for s in ui.client.get("/api/services").json()["services"]
              if s["service"] == "modbus_gateway"]  # fmt: skip
    assert [
        (u["path"], u["value"], u["source"], u["host"], u["device"]) for u in row["in_use"]
    ] == [
        ("interfaces.modbus.rtu_port", "/dev/ttyS1", "BMS_RTU_PORT", "ipc-2", True),
        ("interfaces.modbus.tcp_port", "1502", "BMS_TCP_PORT", "ipc-2", False),
    ]
    step = ui.client.get("/api/wizard/steps/interfaces").json()
    assert set(step["in_use"]) == {"interfaces.modbus.tcp_port", "interfaces.modbus.rtu_port"}
    assert ui.client.get("/api/wizard/steps/cells").json()["in_use"] == {}

    page = ui.client.get("/wizard/interfaces").text
    notes = re.findall(r'data-testid="in-use" data-path="([^"]+)"[^>]*>([^<]+)<', page)
    assert sorted(notes) == [
        ("interfaces.modbus.rtu_port", rtu_port_note),
        ("interfaces.modbus.tcp_port", tcp_port_note),
    ]
    # each note sits in the div of its own field
    field = page.split('data-path="interfaces.modbus.tcp_port"', 1)[1].split('class="field', 1)[0]
    assert tcp_port_note in field and rtu_port_note not in field
    config_page = ui.client.get("/config").text
    assert "interfaces.modbus.tcp_port = 1502 (BMS_TCP_PORT on ipc-2)" in config_page


# --- live values, commands and events ---------------------------------------------------------
def test_state_and_history_follow_the_pack(ui: UiHarness) -> None:
    ui.login()
    assert ui.client.get("/api/state").json()["stale"] is True
    ui.master.bus.publish(PACK_STATE, pack_state(soc=55.5, voltage=320.0, current=-10.0))
    wait_for(lambda: ui.client.get("/api/state").json()["pack"] is not None)
    state = ui.client.get("/api/state").json()
    assert state["stale"] is False
    assert state["pack"]["soc"] == 55.5
    assert state["pack"]["power_w"] == -3200.0
    history = ui.client.get("/api/history?seconds=60").json()
    assert history[-1]["soc"] == 55.5


def test_unknown_values_are_null_in_the_state_and_the_history(ui: UiHarness) -> None:
    """Issue 12: before every module reported, the API says null, never 0."""
    ui.login()
    unknown = dict(soc=None, soh=None, voltage=None, current=-2.0, cell_v_min=None,
                   cell_v_max=None, cell_v_avg=None)  # fmt: skip
    ui.master.bus.publish(PACK_STATE, pack_state(**unknown))
    wait_for(lambda: ui.client.get("/api/state").json()["pack"] is not None)
    pack = ui.client.get("/api/state").json()["pack"]
    assert {k: pack[k] for k in unknown} == unknown
    assert pack["power_w"] is None  # the current alone is not a power
    (point,) = ui.client.get("/api/history?seconds=60").json()
    assert (point["soc"], point["voltage"], point["current"]) == (None, None, -2.0)
    ui.ctx.bridge.persist_history()  # stored as NULL, read back as null after a restart
    assert ui.ctx.history is not None
    (stored,) = ui.ctx.history.query(point["ts"] - 1, point["ts"] + 1, max_points=10)
    assert (stored.soc_pct, stored.voltage_v, stored.current_a) == (None, None, -2.0)


def test_live_stream_sends_state_events(ui: UiHarness) -> None:
    ui.login()
    ui.master.bus.publish(PACK_STATE, pack_state(soc=42.0))
    wait_for(lambda: ui.ctx.live.pack is not None)
    with ui.client.stream("GET", "/api/live") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data:"):
                break
    assert "event: state" in lines
    assert '"soc": 42.0' in lines[-1]


def test_live_stream_ends_with_its_session(ui: UiHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_api, "SESSION_RECHECK_S", 0.0)
    ui.login()
    with ui.client.stream("GET", "/api/live") as r:
        events = []
        for line in r.iter_lines():
            if line.startswith("event:"):
                events.append(line.removeprefix("event:").strip())
                if len(events) == 2:  # open: the session is checked and the state follows
                    ui.ctx.users.delete_sessions_of("admin")
            if "session_ended" in events:
                break
    assert events[:2] == ["state", "state"]
    assert events[-1] == "session_ended"


def test_commands_return_the_masters_reply(ui: UiHarness) -> None:
    ui.login()
    r = ui.client.post("/api/commands/contactors", json={"action": "open"})
    assert r.json() == {"command": "contactors", "status": "accepted", "reason": "", "result": {}}
    r = ui.client.post("/api/commands/set_mode", json={"mode": "standby"})
    assert r.json()["status"] == "refused"
    assert r.json()["reason"] == "refused for the test"
    assert [name for name, _ in ui.master.received] == ["contactors", "set_mode"]
    assert ui.client.post("/api/commands/set_mode", json={"mode": "sleep"}).status_code == 422


def add_event(ui: UiHarness, ts: float, level: EventLevel, kind: EventKind, code: str, text: str,
              **values: EventValue) -> None:  # fmt: skip
    event = Event(level=level, kind=kind, code=code, text=text, values=values)
    ui.master.events.add_event(event, ts=ts, source="master_core")


def test_events_are_filtered_and_exported_as_csv(ui: UiHarness) -> None:
    ui.login()
    now = time.time()
    add_event(ui, now - 2, "warning", "raise", "cell_imbalance", "spread")
    add_event(ui, now - 1, "info", "command", "contactors", "close")
    add_event(ui, now, "fault", "raise", "cell_overvoltage", "cell 4 at 4.31 V", cell=4)
    assert len(ui.client.get("/api/events").json()) == 3
    assert [e["id"] for e in ui.client.get("/api/events?kind=raise").json()] == [3, 1]
    assert [e["id"] for e in ui.client.get("/api/events?code=overvolt").json()] == [3]
    assert [e["id"] for e in ui.client.get("/api/events?text=CELL%204").json()] == [3]
    assert [e["id"] for e in ui.client.get(f"/api/events?until_ts={now - 0.5}").json()] == [2, 1]
    assert [e["id"] for e in ui.client.get("/api/events?min_level=warning").json()] == [3, 1]
    r = ui.client.get("/api/events.csv?kind=raise")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["code"] for row in rows] == ["cell_overvoltage", "cell_imbalance"]
    assert rows[0]["values"] == '{"cell": 4}'


def test_the_events_csv_numbers_places_from_one(ui: UiHarness) -> None:
    """A spreadsheet reads module 2, cell 4 where the contract's values say module 1, index 3;
    a sensor's place goes to the sensor column; an event of no single place leaves them empty."""
    ui.login()
    now = time.time()
    add_event(ui, now - 2, "fault", "raise", "cell_overvoltage", "at M2 · C4", value=4.3,
              module=1, index=3)  # fmt: skip
    add_event(ui, now - 1, "alarm", "raise", "cell_overtemp_discharge", "at M1 · T2",
              module=0, index=1)  # fmt: skip
    add_event(ui, now, "fault", "raise", "pack_overvoltage", "pack", value=60.0)
    r = ui.client.get("/api/events.csv?kind=raise")
    header = r.text.splitlines()[0]
    assert header == "ts,time_utc,level,kind,code,text,source,module,cell,sensor,values"
    rows = list(csv.DictReader(io.StringIO(r.text)))
    places = [(row["code"], row["module"], row["cell"], row["sensor"]) for row in rows]
    assert places == [
        ("pack_overvoltage", "", "", ""),
        ("cell_overtemp_discharge", "1", "", "2"),
        ("cell_overvoltage", "2", "4", ""),
    ]
    assert json.loads(rows[2]["values"]) == {"value": 4.3, "module": 1, "index": 3}


def test_a_refused_event_query_says_why(ui: UiHarness) -> None:
    ui.login()
    ui.master.refuse["events_query"] = "the event log is being rotated"
    r = ui.client.get("/api/events")
    assert r.status_code == 502
    assert r.json()["detail"].endswith("the event log is being rotated")


def test_event_filters_reach_past_the_newest_thousand(ui: UiHarness) -> None:
    """A rare old event is found under 1500 newer ones, and an old time window is complete."""
    ui.login()
    start = time.time() - 10_000
    add_event(ui, start, "fault", "raise", "welded_contactor", "main positive welded")
    for i in range(1500):
        add_event(ui, start + 1 + i, "info", "command", "heartbeat", f"beat {i}")
    found = ui.client.get("/api/events?code=welded").json()
    assert [e["code"] for e in found] == ["welded_contactor"]
    window = ui.client.get(f"/api/events?since_ts={start}&until_ts={start + 10.5}&limit=1000")
    assert len(window.json()) == 11
    assert ui.client.get("/api/events?code=Not-A-Code").json() == []  # read as not_a_code
    assert ui.client.get("/api/events?code=not%3Ba%3Bcode").status_code == 422


def test_recent_bus_events_reach_the_live_view(ui: UiHarness) -> None:
    ui.master.bus.publish(EVENTS, Event(level="alarm", kind="raise", code="x_y", text="t"))
    wait_for(lambda: bool(ui.ctx.live.recent_events()))
    assert ui.ctx.live.recent_events()[0].code == "x_y"


def test_live_events_the_ui_missed_are_fetched_from_the_master_log(ui: UiHarness) -> None:
    assert ui.master.log is not None
    ui.login()
    ui.master.log.emit("info", "config", "config_applied", "one")
    wait_for(lambda: len(ui.ctx.live.recent_events()) == 1)
    ui.broker.detach(ui.ctx.bridge.bus)  # the UI is away: these never reach it live
    for text in ("two", "three", "four"):
        ui.master.log.emit("info", "config", "config_applied", text)
    ui.broker.attach(ui.ctx.bridge.bus)
    ui.master.log.emit("info", "config", "config_applied", "five")
    wait_for(lambda: len(ui.ctx.live.recent_events()) == 5)
    shown = ui.client.get("/api/events/recent").json()
    assert [e["text"] for e in shown] == ["five", "four", "three", "two", "one"]
    assert [e["seq"] for e in shown] == [5, 4, 3, 2, 1]
    assert {e["source"] for e in shown} == {"master_core"}
    counters = ui.ctx.bridge.bus.counters
    assert counters["events_fetched"] == 3 and counters["events_lost"] == 0
    assert [a.after_id for n, a in ui.master.received if isinstance(a, EventsQueryArgs)] == [1]


def test_an_event_claiming_to_be_the_masters_is_shown_with_its_real_source(
    ui: UiHarness,
) -> None:
    """The issue: any user could publish a `fault` event claiming `source: master_core` and
    the UI showed it as the master's. The UI shows the topic level (which the broker ACL pins
    to the publishing user) instead."""
    intruder = InMemoryBus(ui.broker, system=SYSTEM, service="modbus_gateway", kind="x")
    intruder.start()
    fake = Event(level="fault", kind="raise", code="welded_contactor", source="master_core")
    intruder.publish(EVENTS, fake)
    wait_for(lambda: bool(ui.ctx.live.recent_events()))
    ui.login()
    shown = ui.client.get("/api/events/recent").json()
    assert [(e["code"], e["source"]) for e in shown] == [("welded_contactor", "modbus_gateway")]
    assert ui.ctx.bridge.bus.counters["events_source_mismatch"] == 1


# --- users ------------------------------------------------------------------------------------
def test_users_are_managed_by_admins(ui: UiHarness) -> None:
    ui.login()
    r = ui.client.post(
        "/api/users", json={"username": "olga", "password": "olga-password-1", "role": "operator"}
    )
    assert r.status_code == 201
    assert r.json()["created_by"] == "admin"
    weak = {"username": "weak", "password": "short", "role": "viewer"}
    assert ui.client.post("/api/users", json=weak).status_code == 422
    assert ui.client.patch("/api/users/olga", json={"role": "viewer"}).json()["role"] == "viewer"
    assert ui.client.delete("/api/users/admin").status_code == 422  # yourself / the last admin
    assert ui.client.delete("/api/users/olga").status_code == 204
    assert [u["username"] for u in ui.client.get("/api/users").json()] == ["admin"]


# --- pages ------------------------------------------------------------------------------------
def test_login_page_logs_in_and_pages_render(ui: UiHarness) -> None:
    r = ui.client.post(
        "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "next": "/events"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/events"
    for path in ("/", "/events", "/config", "/users", "/account", "/wizard/chemistry"):
        page = ui.client.get(path)
        assert page.status_code == 200, path
        assert 'name="csrf-token"' in page.text


def test_login_page_refuses_open_redirects(ui: UiHarness) -> None:
    r = ui.client.post(
        "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/"


def test_security_headers_and_health(ui: UiHarness) -> None:
    r = ui.client.get("/healthz")
    assert r.json()["status"] == "ok"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


def test_wizard_pages_walk_to_apply(ui: UiHarness) -> None:
    token = ui.login()
    r = ui.client.post(
        "/wizard/chemistry",
        data={"csrf_token": token, "chemistry": "NMC", "name": "Rack A", "go": "next"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    # a new chemistry derives the thresholds again: the step lists them before going on
    assert r.headers["location"] == "/wizard/chemistry"
    page = ui.client.get("/wizard/chemistry").text
    assert 'data-testid="rederived-table"' in page and "Cell over-voltage fault threshold" in page
    r = ui.client.post(
        "/wizard/chemistry",
        data={"csrf_token": token, "chemistry": "NMC", "name": "Rack A", "go": "next"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/wizard/cells"
    assert 'data-testid="rederived"' not in ui.client.get("/wizard/cells").text
    page = ui.client.get("/wizard/protection")
    assert 'data-testid="level-chart-cell_overvoltage"' in page.text
    review = ui.client.get("/wizard/review").text
    assert "Rack A" in review
    r = ui.client.post(
        "/wizard/review", data={"csrf_token": token, "go": "apply", "comment": "wizard"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303
    latest = ui.ctx.store.latest()
    assert latest is not None
    assert (latest.user, latest.source, latest.config.chemistry) == ("admin", "wizard", "NMC")
    assert retained_config(ui).name == "Rack A"


def test_wizard_cell_limit_override_becomes_the_applied_fault_level(ui: UiHarness) -> None:
    token = ui.login()
    page = ui.client.get("/wizard/cells").text
    chemistry = ui.ctx.draft_for("admin")["chemistry"]
    assert f'data-testid="ocv-source">OCV table source: {get_preset(chemistry).ocv_source}' in page
    limit_v = round(get_preset(chemistry).ov_limit_v - 0.03, 3)
    r = ui.client.post(
        "/wizard/cells",
        data={
            "csrf_token": token, "go": "next",
            "chemistry_overrides.ov_limit_v": str(limit_v),
            "chemistry_overrides.ocv_source": "Maker X datasheet rev 3",
        },
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303, r.text
    page = ui.client.get("/wizard/cells").text
    assert 'data-testid="ocv-source">OCV table source: Maker X datasheet rev 3' in page
    r = ui.client.post(
        "/wizard/review", data={"csrf_token": token, "go": "apply", "comment": "datasheet"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303, r.text
    latest = ui.ctx.store.latest()
    assert latest is not None
    assert latest.config.protection.cell_overvoltage.fault.threshold == limit_v
    assert latest.config.chemistry_overrides.ov_limit_v == limit_v


def test_wizard_shows_an_error_at_its_field(ui: UiHarness) -> None:
    token = ui.login()
    ui.ctx.apply(demo_config(SYSTEM), user="admin", source="api")
    r = ui.client.post(
        "/wizard/topology",
        data={"csrf_token": token, "topology.modules": "30", "topology.cells_per_module": "14",
              "topology.temp_sensors_per_module": "2", "go": "next"},
    )  # fmt: skip
    assert r.status_code == 422
    assert 'class="field has-error" data-path="topology.modules"' in r.text or (
        'data-path="topology"' in r.text
    )
    assert "196" in r.text


# --- bad input: a clear answer, a log line and a counter ---------------------------------------
def test_bad_requests_are_logged_and_counted(
    ui: UiHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="config_ui")
    r = ui.client.post("/api/session", json={"username": "admin", "password": "not-it-at-all"})
    assert r.status_code == 401
    assert "failed login for 'admin' from testclient" in caplog.text
    ui.login()
    assert "admin (admin) logged in from testclient" in caplog.text
    r = ui.client.post("/api/commands/set_mode", json={"mode": "sleep"})
    assert r.status_code == 422 and r.json()["problems"]
    assert "POST /api/commands/set_mode refused: body.mode" in caplog.text
    counters = ui.client.get("/healthz").json()["counters"]
    assert counters["login_failed"] == 1
    assert counters["logins"] == 1
    assert counters["http_invalid_request"] == 1
    assert counters["http_401"] == 1


def test_an_internal_error_is_a_clear_500_and_the_service_goes_on(
    ui: UiHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = TestClient(ui.client.app, raise_server_exceptions=False)
    r = client.post("/api/session", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200

    def broken() -> dict[str, object]:
        raise RuntimeError("snapshot exploded")

    monkeypatch.setattr(ui.ctx.live, "snapshot", broken)
    r = client.get("/api/state")
    assert (r.status_code, r.json()["detail"]) == (
        500, "internal error; the service log has the details"
    )  # fmt: skip
    assert "snapshot exploded" in caplog.text
    assert client.get("/api/services").status_code == 200
    assert ui.ctx.counters()["http_internal_errors"] == 1


def test_the_service_status_carries_the_counters(ui: UiHarness) -> None:
    ui.client.post("/api/session", json={"username": "admin", "password": "not-it-at-all"})
    ui.ctx.bridge.bus.publish_status()
    topic = SERVICE_STATUS.topic(SYSTEM, service="config_ui")
    status = decode(ServiceStatus, topic, ui.broker.retained[topic])
    assert status.counters["login_failed"] == 1


def test_long_history_comes_from_the_store_and_survives_a_restart(ui: UiHarness) -> None:
    ui.login()
    now = time.time()
    ui.master.bus.publish(PACK_STATE, pack_state(soc=42.0))
    wait_for(lambda: ui.ctx.live.latest_point() is not None)
    ui.ctx.bridge.persist_history()
    ui.ctx.bridge.persist_history()  # the same point is stored once
    assert ui.ctx.history is not None
    assert len(ui.ctx.history.query(now - 60, now + 60, max_points=10_000)) == 1
    for hours_ago in (30, 20, 10, 0.5):  # what an earlier run stored
        ui.ctx.history.add(HistoryPoint(now - hours_ago * 3600, 80.0 - hours_ago, 400.0, 5.0))
    day = ui.client.get("/api/history?seconds=86400").json()
    # hours without a stored point read as gaps: the plot must not bridge them
    socs = [None if p["soc"] is None else round(p["soc"]) for p in day]
    assert socs == [60, None, 70, None, 80, None, 42]
    # the last hour: the 1 s points in memory, and before them (this UI started a moment
    # ago) what the store has
    hour = ui.client.get("/api/history?seconds=3600").json()
    assert [p["soc"] for p in hour] == [79.5, None, 42.0]


# --- wizard: nothing changes behind the user's back (issue 14) --------------------------------
def _wizard_post(ui: UiHarness, token: str, key: str, **fields: str) -> object:
    data = {
        "csrf_token": token,
        "go": "next",
        **{k.replace("__", "."): v for k, v in fields.items()},
    }
    return ui.client.post(f"/wizard/{key}", data=data, follow_redirects=False)


def test_wizard_capacity_change_keeps_a_hand_tuned_threshold_and_offers_the_old_values(
    ui: UiHarness,
) -> None:
    token = ui.login()
    ov_warning = "protection.cell_overvoltage.warning.threshold"
    r = _wizard_post(ui, token, "protection", **{ov_warning: "3.55"})
    assert r.status_code == 303, r.text  # type: ignore[attr-defined]
    r = _wizard_post(ui, token, "cells", cell_capacity_ah="200")
    # the step stays to show what the new capacity derived
    assert r.headers["location"] == "/wizard/cells"  # type: ignore[attr-defined]
    draft = ui.ctx.draft_for("admin")
    assert draft["protection"]["cell_overvoltage"]["warning"]["threshold"] == 3.55
    assert draft["protection"]["charge_overcurrent"]["fault"]["threshold"] == 200.0
    page = ui.client.get("/wizard/cells").text
    row = 'data-path="protection.charge_overcurrent.fault.threshold" class="derived"'
    assert row in page
    assert "Charge over-current fault threshold" in page
    assert "<td>100 A</td>" in page and "<td>200 A</td>" in page
    assert ov_warning not in page.split('data-testid="rederived-table"')[1].split("</table>")[0]
    # keep the old value of one of them
    r = ui.client.post(
        "/wizard/cells/derived",
        data={"csrf_token": token, "path": "protection.charge_overcurrent.fault.threshold",
              "keep": "old"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/wizard/cells"
    assert ui.ctx.draft_for("admin")["protection"]["charge_overcurrent"]["fault"]["threshold"] == (
        100.0
    )
    page = ui.client.get("/wizard/cells").text
    assert 'data-path="protection.charge_overcurrent.fault.threshold" class="kept"' in page
    assert "Use 200" in page
    # going on: the list is gone, and a later size change keeps the chosen value
    r = _wizard_post(ui, token, "cells", cell_capacity_ah="200")
    assert r.headers["location"] == "/wizard/topology"  # type: ignore[attr-defined]
    r = _wizard_post(ui, token, "cells", cell_capacity_ah="150")
    draft = ui.ctx.draft_for("admin")
    assert draft["protection"]["charge_overcurrent"]["fault"]["threshold"] == 100.0
    assert draft["protection"]["cell_overvoltage"]["warning"]["threshold"] == 3.55
    # a path the last step did not derive is not a choice
    r = ui.client.post(
        "/wizard/cells/derived",
        data={"csrf_token": token, "path": "name", "keep": "old"},
        follow_redirects=False,
    )
    assert r.status_code == 404


def test_wizard_api_lists_and_chooses_derived_fields(ui: UiHarness) -> None:
    ui.login()
    r = ui.client.put("/api/wizard/steps/cells", json={"cell_capacity_ah": "50"})
    body = r.json()
    assert r.status_code == 200 and body["rederived"] is True
    fault = next(
        c for c in body["changes"] if c["path"] == "protection.charge_overcurrent.fault.threshold"
    )
    assert fault == {
        "path": "protection.charge_overcurrent.fault.threshold",
        "label": "Charge over-current fault threshold", "unit": "A",
        "old": 100.0, "new": 50.0, "kept": False,
    }  # fmt: skip
    listed = ui.client.get("/api/wizard/steps/cells").json()["changes"]
    assert listed == body["changes"]
    assert ui.client.get("/api/wizard/steps/topology").json()["changes"] == []
    r = ui.client.put("/api/wizard/derived", json={"path": fault["path"], "keep_old": True})
    assert r.status_code == 200
    assert next(c for c in r.json()["changes"] if c["path"] == fault["path"])["kept"] is True
    draft = ui.client.get("/api/wizard/draft").json()["draft"]
    assert draft["protection"]["charge_overcurrent"]["fault"]["threshold"] == 100.0
    r = ui.client.put("/api/wizard/derived", json={"path": "name", "keep_old": True})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("12.5", "&#39;12.5&#39; is not a whole number"),
        ("twelve", "&#39;twelve&#39; is not a number"),
    ],
)
def test_wizard_shows_invalid_input_as_typed_with_its_error(
    ui: UiHarness, typed: str, message: str
) -> None:
    token = ui.login()
    r = _wizard_post(ui, token, "topology", topology__modules=typed)
    assert r.status_code == 422  # type: ignore[attr-defined]
    page = r.text  # type: ignore[attr-defined]
    field = page.split('has-error" data-path="topology.modules"')[1].split("</div>")[0]
    assert f'value="{typed}"' in field
    assert message in field
    assert ui.ctx.draft_for("admin")["topology"]["modules"] == 2  # the draft stays valid


def test_wizard_range_message_names_the_field_with_units(ui: UiHarness) -> None:
    token = ui.login()
    r = _wizard_post(ui, token, "balancing", balancing__threshold_v="20")
    assert r.status_code == 422  # type: ignore[attr-defined]
    field = r.text.split('has-error" data-path="balancing.threshold_v"')[1].split("</div>")[0]  # type: ignore[attr-defined]
    assert "Balancing threshold must be at most 500 mV (got 20 V; 20 mV is 0.02 V)" in field
    assert 'value="20"' in field


def test_wizard_shows_a_precharge_problem_at_its_three_fields_and_once_in_the_review(
    ui: UiHarness,
) -> None:
    token = ui.login()
    r = _wizard_post(ui, token, "contactors", contactors__dc_link_capacitance_f="50")  # mF
    assert r.status_code == 422  # type: ignore[attr-defined]
    page: str = r.text  # type: ignore[attr-defined]
    assert '<span class="unit">(mF)</span>' in page
    for path in ("contactors.precharge_timeout_s", "contactors.precharge_resistor_ohm",
                 "contactors.dc_link_capacitance_f"):  # fmt: skip
        field = page.split(f'has-error" data-path="{path}"')[1].split("</div>")[0]
        assert "the precharge timeout 2 s is too short" in field, path
        assert "the 50 mF DC link (R x C = 5 s)" in field, path
    review = ui.client.get("/wizard/review").text
    assert review.count("the precharge timeout 2 s is too short") == 1
    assert (
        "contactors.precharge_timeout_s, contactors.precharge_resistor_ohm, "
        "contactors.dc_link_capacitance_f: the precharge timeout" in review
    )
    api = ui.client.get("/api/wizard/review").json()["errors"]
    assert set(api) == {"contactors.precharge_timeout_s", "contactors.precharge_resistor_ohm",
                        "contactors.dc_link_capacitance_f"}  # fmt: skip


def test_event_filters_take_text_as_typed(ui: UiHarness) -> None:
    ui.login()
    now = time.time()
    add_event(ui, now - 1, "warning", "raise", "cell_imbalance", "spread")
    add_event(ui, now, "fault", "raise", "cell_overvoltage", "cell 4 at 4.31 V", cell=4)
    for query in ("code=cell%20over", "code=Cell-Overvoltage", "code=%20cell_over%20"):
        r = ui.client.get(f"/api/events?{query}")
        assert r.status_code == 200, (query, r.text)
        assert [e["code"] for e in r.json()] == ["cell_overvoltage"], query
    for blank in ("code=%20", "code=", "text=", "text=%20%20"):
        r = ui.client.get(f"/api/events?{blank}")
        assert r.status_code == 200 and len(r.json()) == 2, blank
    r = ui.client.get("/api/events?code=ov%21")
    assert r.status_code == 422
    assert "letters, digits and '_' only" in r.json()["problems"][0]


def test_the_user_name_rule_is_on_the_page_and_in_the_refusal(ui: UiHarness) -> None:
    token = ui.login()
    page = ui.client.get("/users").text
    assert "lower-case letters, digits, &#39;_&#39;, &#39;.&#39; or &#39;-&#39;" in page
    assert 'title="User name: 2 to 32 characters' in page
    r = ui.client.post(
        "/users", data={"csrf_token": token, "username": "J Smith", "password": "long-password-1",
                        "role": "viewer"},
    )  # fmt: skip
    assert "starting with a letter" in r.text


# --- import: reviewed before it applies, another system's file only when confirmed (issue 14) ---
def _upload(ui: UiHarness, data: dict[str, object], name: str = "site.json") -> httpx.Response:
    token = ui.client.headers["X-CSRF-Token"]
    files = {"file": (name, json.dumps(data).encode(), "application/json")}
    return ui.client.post("/config/import", data={"csrf_token": token}, files=files)


def _token(page_html: str) -> str:
    match = re.search(r'name="token" value="([^"]+)"', page_html)
    assert match is not None, page_html
    return match.group(1)


def test_an_imported_file_is_shown_with_its_changes_and_applied_only_on_apply(
    ui: UiHarness,
) -> None:
    ui.login()
    ui.client.post("/api/config", json={"config": config_json()})
    review = _upload(ui, config_json(cell_capacity_ah=120.0))
    assert review.status_code == 200 and "cell_capacity_ah" in review.text
    assert "the active version 1" in review.text and "other-system" not in review.text
    assert retained_config(ui).cell_capacity_ah != 120.0  # nothing applied yet
    csrf = ui.client.headers["X-CSRF-Token"]
    done = ui.client.post("/config/import/apply", data={"csrf_token": csrf,
                          "token": _token(review.text)}, follow_redirects=False)  # fmt: skip
    assert done.status_code == 303
    page = ui.client.get(done.headers["location"])
    assert "Imported site.json as version 2" in page.text
    assert retained_config(ui).cell_capacity_ah == 120.0
    # the same review cannot be applied twice
    again = ui.client.post("/config/import/apply", data={"csrf_token": csrf,
                           "token": _token(review.text)}, follow_redirects=False)  # fmt: skip
    assert "no longer waiting" in unquote(again.headers["location"])


def test_a_file_for_another_system_needs_the_admins_confirmation(ui: UiHarness) -> None:
    ui.login()
    ui.client.post("/api/config", json={"config": config_json()})
    foreign = config_json(system_id="plant-b", cell_capacity_ah=90.0)
    review = _upload(ui, foreign)
    assert 'data-testid="other-system"' in review.text and "plant-b" in review.text
    csrf = ui.client.headers["X-CSRF-Token"]
    form = {"csrf_token": csrf, "token": _token(review.text)}
    refused = ui.client.post("/config/import/apply", data=form)
    assert refused.status_code == 422 and "tick the box" in refused.text
    assert retained_config(ui).cell_capacity_ah != 90.0
    ui.client.post("/config/import/apply", data=form | {"confirm_other_system": "yes"})
    applied = retained_config(ui)
    assert applied.cell_capacity_ah == 90.0 and applied.system_id == SYSTEM
    # the API: 409 unless confirmed
    r = ui.client.post("/api/config/import", json=config_json(system_id="plant-b"))
    assert r.status_code == 409 and "plant-b" in r.json()["detail"]
    r = ui.client.post("/api/config/import?confirm_other_system=true",
                       json=config_json(system_id="plant-b"))  # fmt: skip
    assert r.status_code == 201


# --- per-cell history (issue 14) --------------------------------------------------------------
def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_cells_history_balancing_trend_and_csv_come_from_the_published_cells(
    ui: UiHarness,
) -> None:
    ui.login()
    ui.client.post("/api/config", json={"config": config_json()})  # 2 modules x 8 cells
    now = time.time()
    start = now - now % 60 - 180  # three whole minutes ago
    for k in range(181):  # 1 Hz; module 1 cell 3 high and balancing
        modules = [
            ModuleCells(module=m, fresh=True, cell_v=[3.30] * 8, cell_flags=[0] * 8,
                        balancing=[False] * 8, temp_c=[25.0, 25.0], temp_flags=[0, 0])
            for m in range(2)
        ]  # fmt: skip
        modules[1].cell_v[3] = 3.35
        modules[1].balancing[3] = True
        ui.master.bus.publish(PACK_CELLS, CellSnapshot(modules=modules, ts=start + k))
    store = ui.ctx.cell_history
    assert store is not None
    assert wait_until(lambda: len(store.cell(1, 3, start, now)) == 3, 5)
    got = ui.client.get("/api/cells/1/3/history?seconds=600").json()
    assert got["label"] == "M2 · C4"
    assert [p["voltage_v"] for p in got["points"]] == [3.35] * 3
    assert [p["balancing_s"] for p in got["points"]] == [60.0] * 3
    totals = ui.client.get("/api/cells/balancing?seconds=600").json()
    assert totals["1"][3] == 180.0 and sum(totals["0"]) == 0.0
    [day] = ui.client.get("/api/cells/imbalance?days=1").json()
    assert day["spread_mv"] == 50.0
    csv_text = ui.client.get(f"/api/cells/history.csv?since_ts={start}").text
    rows = [r.split(",") for r in csv_text.strip().splitlines()]
    assert rows[0] == ["ts", "time_utc", "module", "cell", "series", "voltage_v", "balancing_s"]
    high = [r for r in rows[1:] if r[2:4] == ["2", "4"]]
    assert len(high) == 3 and all(r[4] == "12" and r[5] == "3.3500" for r in high)
    assert len(rows) == 1 + 3 * 16
    assert ui.client.get("/api/cells/0/999/history").status_code == 422
    too_long = ui.client.get(f"/api/cells/history.csv?since_ts={now - 40 * 86400}")
    assert too_long.status_code == 422
