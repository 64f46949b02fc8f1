"""The bridge on the in-memory bus: JSON mirror rates and content, presence, the byte limit."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from services.integrations.mirror import RateGate
from services.integrations.service import IntegrationsBridge
from services.integrations.settings import IntegrationsSettings
from shared.bus import InMemoryBroker, InMemoryBus
from shared.codec import encode_json
from shared.messages import CellSnapshot, Event, ModuleCells, PackState, ServiceStatus, SiteState
from shared.topics import (
    EVENTS,
    JSON_EVENTS,
    JSON_PACK_CELLS,
    JSON_PACK_STATE,
    JSON_SERVICE_STATUS,
    JSON_SITE_STATE,
    PACK_CELLS,
    PACK_STATE,
    SITE_STATE,
)
from tests.factories import pack_state, site_state
from tests.shared import strategies


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def snapshot(modules: int = 2, cells: int = 4) -> CellSnapshot:
    return CellSnapshot(
        modules=[
            ModuleCells(
                module=m, fresh=True, cell_v=[3.3 + 0.001 * i for i in range(cells)],
                cell_flags=[0] * cells, balancing=[False] * cells, temp_c=[25.0, None],
                temp_flags=[0, 1],
            )
            for m in range(modules)
        ]
    )  # fmt: skip


class Rig:
    def __init__(self, **settings: Any) -> None:
        self.broker = InMemoryBroker()
        self.clock = Clock()
        self.master = InMemoryBus(
            self.broker, system="s1", service="master_core", kind="master_core"
        )
        self.bus = InMemoryBus(
            self.broker, system="s1", service="integrations", kind="integrations", clock=self.clock
        )
        self.bridge = IntegrationsBridge(
            self.bus, IntegrationsSettings(system="s1", **settings), clock=self.clock
        )
        self.site: InMemoryBus | None = None
        """The site controller, under the site id, with BMS_SITE."""
        if settings.get("site"):
            self.site = InMemoryBus(
                self.broker, system=settings["site"], service="site_controller",
                kind="site_controller",
            )  # fmt: skip
        self.bridge.attach()
        self.bus.start()
        self.master.start()
        if self.site is not None:
            self.site.start()

    def pump(self) -> None:
        self.bus.process()

    def json_on(self, topic_prefix: str) -> list[tuple[str, dict[str, Any]]]:
        return [(t, json.loads(p)) for t, p, _q, _r in self.bus.sent if t.startswith(topic_prefix)]


def test_pack_state_is_mirrored_once_a_period_with_its_original_envelope() -> None:
    rig = Rig(json_state_period_s=1.0)
    for i in range(25):  # 2.5 s at 10 Hz
        rig.master.publish(PACK_STATE, pack_state(soc=50.0 + i * 0.1, current=None))
        rig.pump()
        rig.clock.now += 0.1
    got = rig.json_on(JSON_PACK_STATE.topic("s1"))
    assert len(got) == 3  # t = 0, 1.0, 2.0
    first = PackState.model_validate(got[0][1])
    assert first.source == "master_core" and first.seq == 0
    assert first.current is None and got[0][1]["current"] is None  # unknown stays null
    assert [round(d["soc"], 1) for _t, d in got] == [50.0, 51.0, 52.0]


def test_every_message_passes_with_period_zero_and_cells_events_status_are_mirrored() -> None:
    rig = Rig(json_state_period_s=0.0, json_cells_period_s=0.0)
    for _ in range(3):
        rig.master.publish(PACK_STATE, pack_state())
        rig.master.publish(PACK_CELLS, snapshot())
    rig.master.publish(EVENTS, Event(level="alarm", kind="raise", code="cell_ov", text="x"))
    rig.pump()
    assert len(rig.json_on(JSON_PACK_STATE.topic("s1"))) == 3
    cells = rig.json_on(JSON_PACK_CELLS.topic("s1"))
    assert len(cells) == 3
    assert CellSnapshot.model_validate(cells[0][1]).modules[1].temp_c == [25.0, None]
    (event,) = rig.json_on(JSON_EVENTS.topic("s1"))
    assert Event.model_validate(event[1]).code == "cell_ov"
    status = rig.json_on(JSON_SERVICE_STATUS.topic("s1", instance="master_core"))
    assert ServiceStatus.model_validate(status[-1][1]).state == "online"
    rig.master.abort()
    rig.pump()
    status = rig.json_on(JSON_SERVICE_STATUS.topic("s1", instance="master_core"))
    assert ServiceStatus.model_validate(status[-1][1]).state == "offline"
    assert rig.bridge.presence()[("s1", "master_core")] is False


def test_systems_are_kept_apart_and_one_system_only_when_asked() -> None:
    rig = Rig(json_state_period_s=0.0, all_systems=False)
    rig.pump()  # the retained presence of both buses
    rig.bus.sent.clear()
    rig.master.publish(PACK_STATE, pack_state(), system="s2")
    rig.master.publish(PACK_STATE, pack_state())
    rig.pump()
    assert [t for t, _d in rig.json_on("bms/v1/")] == [JSON_PACK_STATE.topic("s1")]
    rig = Rig(json_state_period_s=0.0)
    rig.master.publish(PACK_STATE, pack_state(), system="s2")
    rig.pump()
    assert [t for t, _d in rig.json_on("bms/v1/s2/json/")] == [JSON_PACK_STATE.topic("s2")]


def test_the_site_state_is_mirrored_once_a_period_under_the_site_id() -> None:
    rig = Rig(site="site1", json_state_period_s=1.0)
    for i in range(25):  # 2.5 s at 10 Hz
        assert rig.site is not None
        rig.site.publish(SITE_STATE, site_state(soc=40.0 + i * 0.1, current_a=None))
        rig.pump()
        rig.clock.now += 0.1
    got = rig.json_on(JSON_SITE_STATE.topic("site1"))
    assert len(got) == 3  # t = 0, 1.0, 2.0
    first = SiteState.model_validate(got[0][1])
    assert first.source == "site_controller" and first.strings_joined == 2
    assert got[0][1]["current_a"] is None  # unknown stays null
    assert [round(d["soc"], 1) for _t, d in got] == [40.0, 41.0, 42.0]
    # the site controller's presence is mirrored under the site id: Home Assistant's
    # availability of the site device reads it
    status = rig.json_on(JSON_SERVICE_STATUS.topic("site1", instance="site_controller"))
    assert ServiceStatus.model_validate(status[-1][1]).state == "online"
    assert rig.bridge.presence()[("site1", "site_controller")] is True


def test_the_site_is_followed_with_one_system_only_and_not_without_bms_site() -> None:
    rig = Rig(site="site1", all_systems=False, json_state_period_s=0.0)
    assert rig.site is not None
    rig.site.publish(SITE_STATE, site_state())
    rig.site.publish(SITE_STATE, site_state(), system="other")
    rig.pump()
    assert [t for t, _d in rig.json_on("bms/v1/site1/json/")] == [
        JSON_SERVICE_STATUS.topic("site1", instance="site_controller"),
        JSON_SITE_STATE.topic("site1"),
    ]
    assert rig.json_on("bms/v1/other/") == []
    rig = Rig(json_state_period_s=0.0)
    rig.master.publish(SITE_STATE, site_state(), system="site1")
    rig.pump()
    assert rig.json_on("bms/v1/site1/json/site") == [] and rig.bridge.sites == {}


def test_the_largest_site_state_fits_its_json_limit() -> None:
    strings = [site_state().strings[0].model_copy(update={"system": f"string{i:02d}",
               "reason": "x" * 200}) for i in range(16)]  # fmt: skip
    big = site_state(strings=strings, faults=["cell_ov"] * 64, alarms=["cell_uv"] * 64)
    rig = Rig(site="site1", json_state_period_s=0.0)
    assert rig.site is not None
    rig.site.publish(SITE_STATE, big)
    rig.pump()
    ((_t, data),) = rig.json_on(JSON_SITE_STATE.topic("site1"))
    assert len(json.dumps(data)) < JSON_SITE_STATE.byte_limit


def test_bms_site_takes_a_site_id_and_an_empty_one_is_none() -> None:
    assert IntegrationsSettings(system="s1", site="").site is None
    assert IntegrationsSettings(system="s1", site="site-1").site == "site-1"
    with pytest.raises(ValueError, match="lower-case"):
        IntegrationsSettings(system="s1", site="Site/1")
    with pytest.raises(ValueError, match="lower-case"):  # `$` alone lets a newline through
        IntegrationsSettings(system="s1", site="site1\n")


def test_mirror_off_publishes_nothing_but_presence() -> None:
    rig = Rig(json_mirror=False)
    rig.master.publish(PACK_STATE, pack_state())
    rig.master.publish(PACK_CELLS, snapshot())
    rig.pump()
    assert rig.bus.sent == []


def test_a_json_text_over_the_topic_limit_is_counted_and_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(json_state_period_s=0.0)
    small = dataclasses.replace(JSON_PACK_STATE)
    object.__setattr__(small, "byte_limit", 100)
    monkeypatch.setattr("services.integrations.service.JSON_PACK_STATE", small)
    rig.master.publish(PACK_STATE, pack_state())
    rig.pump()
    assert rig.json_on("bms/v1/s1/json/pack") == []
    assert rig.bus.counters["json_oversize"] == 1


def test_the_largest_real_cell_snapshot_fits_its_json_limit() -> None:
    big = snapshot(modules=16, cells=12)
    rig = Rig(json_cells_period_s=0.0)
    rig.master.publish(PACK_CELLS, big)
    rig.pump()
    ((_t, data),) = rig.json_on(JSON_PACK_CELLS.topic("s1"))
    assert len(json.dumps(data)) < JSON_PACK_CELLS.byte_limit


@given(
    period=st.floats(0.0, 10.0),
    steps=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=50),
)
def test_rate_gate_passes_the_first_message_and_never_two_within_a_period(
    period: float, steps: list[float]
) -> None:
    gate = RateGate(period)
    now, passed = 0.0, []
    for step in steps:
        now += step
        if gate.due("k", now):
            passed.append(now)
    assert passed and passed[0] == steps[0]
    assert all(b - a >= period for a, b in itertools.pairwise(passed))


ASYNCAPI = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs/asyncapi.yaml").read_text())


def schema_of(model: str) -> dict[str, Any]:
    """The payload schema of the published AsyncAPI document, references resolved in it."""
    return {"$ref": f"#/components/schemas/{model}", "components": ASYNCAPI["components"]}


def test_the_mirrored_site_state_fits_the_published_schema() -> None:
    for message in (
        site_state(),
        site_state(
            soc=None,
            voltage_v=None,
            limits={"charge_voltage_v": None},
            full_charge_requested=None,
            operation="disconnect",
        ),
    ):
        data = json.loads(encode_json(message, source="site_controller", seq=3, ts=1.0))
        jsonschema.validate(data, schema_of("SiteState"))
        assert SiteState.model_validate(data).soc == message.soc


@given(message=st.one_of(strategies.pack_state(), strategies.event()))
def test_json_round_trips_every_valid_state_and_event_and_fits_the_published_schema(
    message: PackState | Event,
) -> None:
    payload = encode_json(message, source="master_core", seq=7, ts=1.0)
    data = json.loads(payload)
    assert type(message).model_validate(data) == message.model_copy(
        update={"source": message.source or "master_core", "seq": message.seq if message.seq
                is not None else 7, "ts": message.ts if message.ts is not None else 1.0}
    )  # fmt: skip
    jsonschema.validate(data, schema_of(type(message).__name__))
