"""The live view: staleness, the 1 Hz history, cell extremes and the heat map by module."""

from __future__ import annotations

import itertools

import pytest

from services.config_ui.live import STALE_AFTER_S, LiveView, anchor_words, cells_view
from shared.config import SystemConfig
from shared.messages import (
    CellLocation,
    CellSnapshot,
    ChannelFlag,
    ConfigAck,
    Event,
    FieldInUse,
    ModuleCells,
    ServiceStatus,
)
from tests.factories import limits, pack_state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pack_goes_stale_after_silence() -> None:
    clock = Clock()
    live = LiveView(clock=clock)
    assert live.stale()
    live.on_pack(pack_state())
    clock.now += STALE_AFTER_S - 0.1
    assert not live.stale()
    clock.now += 0.2
    assert live.stale()
    assert live.snapshot()["stale"] is True


def test_history_keeps_one_point_a_second_within_its_span() -> None:
    clock = Clock()
    live = LiveView(history_s=60, clock=clock)
    for i in range(1000):  # 100 s at 10 Hz
        live.on_pack(pack_state(soc=float(i % 100)))
        clock.now += 0.1
    points = live.history(3600)
    assert 59 <= len(points) <= 61
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(points)]
    assert all(0.99 <= g <= 1.11 for g in gaps), gaps
    assert len(live.history(10)) in (10, 11)


def test_services_merge_presence_and_acknowledgements() -> None:
    live = LiveView()
    live.on_ack(ConfigAck(service="gw", config_version=3, accepted=False, errors=["restart"]))
    live.on_status(ServiceStatus(service="gw", kind="modbus_gateway", state="online"))
    (gw,) = live.services()
    assert (gw["state"], gw["config_version"], gw["config_accepted"]) == ("online", 3, False)
    assert gw["config_errors"] == ["restart"]


# --- unknown stays unknown (issue 12) ----------------------------------------------------------
UNKNOWN_AT_START = dict(
    soc=None,
    soh=None,
    voltage=None,
    current=None,
    cell_v_min=None,
    cell_v_max=None,
    cell_v_avg=None,
)


def test_unknown_pack_values_are_null_never_zero() -> None:
    live = LiveView(clock=Clock())
    live.on_pack(pack_state(**UNKNOWN_AT_START))
    pack = live.snapshot()["pack"]
    assert {k: pack[k] for k in (*UNKNOWN_AT_START, "power_w")} == dict.fromkeys(
        (*UNKNOWN_AT_START, "power_w")
    )


@pytest.mark.parametrize(("voltage", "current"), [(None, -10.0), (320.0, None)])
def test_power_is_null_when_voltage_or_current_is(
    voltage: float | None, current: float | None
) -> None:
    live = LiveView(clock=Clock())
    live.on_pack(pack_state(voltage=voltage, current=current))
    assert live.snapshot()["pack"]["power_w"] is None


def test_history_records_an_unknown_as_none_not_zero() -> None:
    clock = Clock()
    live = LiveView(clock=clock)
    live.on_pack(pack_state(**UNKNOWN_AT_START))
    clock.now += 1.0
    live.on_pack(pack_state(soc=61.0, voltage=None, current=-4.0))
    first, second = live.history(60)
    assert (first.soc_pct, first.voltage_v, first.current_a) == (None, None, None)
    assert (second.soc_pct, second.voltage_v, second.current_a) == (61.0, None, -4.0)


def test_history_breaks_where_the_master_was_silent() -> None:
    clock = Clock()
    live = LiveView(clock=clock)
    live.on_pack(pack_state(soc=50.0))
    clock.now += 60.0  # a minute without a pack state: the plot must not draw a line across
    live.on_pack(pack_state(soc=40.0))
    socs = [p.soc_pct for p in live.history(3600)]
    assert socs == [50.0, None, 40.0]


def module(
    m: int,
    *,
    fresh: bool = True,
    cells: list[float | None],
    cell_flags: list[int],
    temps: list[float | None],
    temp_flags: list[int],
) -> ModuleCells:
    return ModuleCells(
        module=m,
        fresh=fresh,
        cell_v=cells,
        cell_flags=cell_flags,
        balancing=[False] * len(cells),
        temp_c=temps,
        temp_flags=temp_flags,
    )


def test_cells_view_keeps_every_channel_at_its_own_place() -> None:
    open_wire, sensor_fault = int(ChannelFlag.OPEN_WIRE), int(ChannelFlag.SENSOR_FAULT)
    cells = CellSnapshot(
        modules=[
            module(
                0,
                cells=[3.30, None, 3.25],
                cell_flags=[0, open_wire, 0],
                temps=[None, 24.0, 25.0],
                temp_flags=[sensor_fault, 0, 0],
            ),
            module(
                1,
                fresh=False,
                cells=[None, None, None],
                cell_flags=[0, 0, 0],
                temps=[None, None, None],
                temp_flags=[0, 0, 0],
            ),
        ]
    )
    view = cells_view(cells)
    assert view["cell_v"] == [3.30, None, 3.25, None, None, None]
    assert view["cell_flags"] == [[], ["open_wire"], [], [], [], []]
    assert view["module_of_cell"] == [0, 0, 0, 1, 1, 1]
    assert view["index_in_module"] == [0, 1, 2, 0, 1, 2]
    # extremes and spread over the known cells only: an unknown is not 0 V
    assert (view["min_index"], view["max_index"]) == (2, 0)
    assert view["spread_mv"] == 50.0
    m0, m1 = view["modules"]
    assert (m0["module"], m0["fresh"], m1["module"], m1["fresh"]) == (0, True, 1, False)
    # the faulted first sensor leaves the later sensors at their places
    assert [s["temp_c"] for s in m0["temperatures"]] == [None, 24.0, 25.0]
    assert [s["flags"] for s in m0["temperatures"]] == [["sensor_fault"], [], []]
    assert [s["sensor_index"] for s in m1["temperatures"]] == [3, 4, 5]
    assert [s["temp_c"] for s in m1["temperatures"]] == [None, None, None]


def test_cells_view_without_a_known_cell_has_no_extremes() -> None:
    cells = CellSnapshot(
        modules=[
            module(
                0, fresh=False, cells=[None, None], cell_flags=[0, 0], temps=[None], temp_flags=[0]
            )
        ]
    )
    view = cells_view(cells)
    assert (view["min_index"], view["max_index"], view["spread_mv"]) == (None, None, None)


# --- alarms in words (issue 14) -----------------------------------------------------------------
def _event(kind: str, code: str, level: str, ts: float, **values: object) -> Event:
    return Event(kind=kind, code=code, level=level, ts=ts, values=values)  # type: ignore[arg-type]


def test_active_codes_come_with_words_from_their_raise_event_until_cleared() -> None:
    live = LiveView()
    live.on_config(SystemConfig.from_preset("NMC", modules=2, cells_per_module=4))
    at = CellLocation(module=1, index=2)
    live.on_pack(pack_state(faults=["cell_overvoltage"], cell_v_max_at=at))
    [words] = live.snapshot()["alarm_words"]
    assert words["title"] == "Cell over-voltage (fault)"
    assert words["reading"] is None and words["since_ts"] is None  # raised before the UI started
    raise_ = _event("raise", "cell_overvoltage", "fault", 50.0, value=4.31, threshold=4.25,
                    release=4.2, unit="V", module=1, index=2)  # fmt: skip
    live.on_event(raise_)
    [words] = live.snapshot()["alarm_words"]
    assert words["place_detail"] == "module 2, cell 3 (cell 7 in series)"
    assert words["reading"] == "4.310 V against its 4.250 V threshold"
    assert words["since_ts"] == 50.0
    # a gap's older raise arriving late does not replace the newer one
    live.on_event(_event("raise", "cell_overvoltage", "fault", 10.0, value=9.0, threshold=4.25))
    assert live.snapshot()["alarm_words"][0]["since_ts"] == 50.0
    live.on_event(_event("clear", "cell_overvoltage", "fault", 60.0))
    live.on_event(_event("raise", "not_a_protection_code", "fault", 61.0))
    assert live._raised == {}
    live.on_pack(pack_state())
    assert live.snapshot()["alarm_words"] == []


def test_limit_reasons_come_in_words_with_their_codes_kept() -> None:
    live = LiveView()
    lim = limits()
    lim = lim.model_copy(update={"charge_reason": "protection_alarm", "discharge_reason": "soc",
                                 "charge_voltage_reason": "from_a_newer_master"})  # fmt: skip
    live.on_pack(pack_state(limits_=lim))
    pack = live.snapshot()["pack"]
    assert pack["limit_words"] == {
        "charge": "Stopped: a protection alarm concerns this direction",
        "discharge": "Reduced by the state of charge",
        "charge_voltage": "from_a_newer_master",
    }
    assert pack["limits"]["charge_reason"] == "protection_alarm"


def test_services_show_uptime_restarts_and_fields_waiting_for_a_restart() -> None:
    clock = Clock()
    live = LiveView(clock=clock)
    status = ServiceStatus(service="mb", kind="modbus_gateway", state="online", started_ts=900.0)
    live.on_status(status)
    live.on_status(status)  # its periodic status: the same start, no restart
    live.on_ack(ConfigAck(service="mb", config_version=2, accepted=True,
                          restart_required=["interfaces.modbus.tcp_port"]))  # fmt: skip
    (mb,) = live.services()
    assert (mb["uptime_s"], mb["restarts"]) == (100, 0)
    assert mb["restart_required"] == ["interfaces.modbus.tcp_port"]
    live.on_status(status.model_copy(update={"started_ts": 995.0}))  # it restarted
    live.on_status(status)  # a late retained copy of the old start: not a restart
    (mb,) = live.services()
    assert (mb["uptime_s"], mb["restarts"]) == (5, 1)
    live.on_status(status.model_copy(update={"state": "offline", "started_ts": 995.0}))
    assert live.services()[0]["uptime_s"] is None
    unknown = ServiceStatus(service="old", kind="can_gateway", state="online")  # no start time
    live.on_status(unknown)
    assert next(s for s in live.services() if s["service"] == "old")["uptime_s"] is None


def test_fields_in_use_follow_the_last_ack_and_name_the_host() -> None:
    live = LiveView(clock=Clock())
    live.on_status(ServiceStatus(service="mb", kind="modbus_gateway", state="online", host="h1"))
    port = FieldInUse(value="1502", source="BMS_TCP_PORT")  # no host in the ack: the status's
    live.on_ack(ConfigAck(service="mb", config_version=1, accepted=True,
                          in_use={"interfaces.modbus.tcp_port": port}))  # fmt: skip
    can = FieldInUse(value="can1", source="BMS_CAN_CHANNEL", host="h2", device=True)
    live.on_ack(ConfigAck(service="cg", config_version=1, accepted=False, errors=["no can1"],
                          in_use={"interfaces.can.channel": can}))  # fmt: skip
    assert {p: [u["note"] for u in us] for p, us in live.in_use().items()} == {
        "interfaces.can.channel": ["cg@h2 uses can1 (device named by BMS_CAN_CHANNEL)"],
        "interfaces.modbus.tcp_port": ["mb@h1 uses 1502 (BMS_TCP_PORT)"],
    }
    live.on_status(ServiceStatus(service="mb", kind="modbus_gateway", state="offline", host="h1"))
    assert live.in_use()["interfaces.modbus.tcp_port"][0]["note"].endswith("(offline)")
    live.on_ack(ConfigAck(service="mb", config_version=2, accepted=True))  # the setting is gone
    assert list(live.in_use()) == ["interfaces.can.channel"]
    assert next(s for s in live.services() if s["service"] == "mb")["in_use"] == []


@pytest.mark.parametrize(
    ("since_s", "words"),
    [
        (None, "unknown: none since commissioning, or a restart could not tell"),
        (0.0, "just now"),
        (59.0, "just now"),
        (12 * 60.0, "12 min ago"),
        (3 * 3600.0 + 5 * 60.0, "3 h 5 min ago"),
        (5 * 86400.0 + 4 * 3600.0 + 59.0, "5 d 4 h ago"),
    ],
)
def test_the_last_anchor_in_words(since_s: float | None, words: str) -> None:
    assert anchor_words(since_s) == words


@pytest.mark.parametrize(
    ("requested", "start"), [(True, "requested"), (False, "not requested"), (None, "unknown")]
)
def test_the_dashboard_shows_the_last_anchor_and_the_full_charge_request(
    requested: bool | None, start: str
) -> None:
    live = LiveView()
    live.on_pack(pack_state(since_anchor_s=7200.0, full_charge_requested=requested, ts=50_000.0))
    pack = live.snapshot()["pack"]
    assert pack["full_charge_requested"] is requested
    assert pack["full_charge_words"].startswith(start)
    assert pack["anchor_words"] == "2 h 0 min ago"
    assert pack["last_anchor_ts"] == 50_000.0 - 7200.0
    live.on_pack(pack_state(since_anchor_s=None, ts=50_001.0))
    unknown = live.snapshot()["pack"]
    assert unknown["last_anchor_ts"] is None and unknown["anchor_words"].startswith("unknown")
