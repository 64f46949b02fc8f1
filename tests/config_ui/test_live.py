"""The live view: staleness, the 1 Hz history, cell extremes and the heat map by module."""

from __future__ import annotations

import itertools

from services.config_ui.live import STALE_AFTER_S, LiveView, cells_view
from shared.messages import CellSnapshot, ConfigAck, ServiceStatus
from tests.factories import pack_state


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


def test_cells_view_marks_extremes_and_groups_temperatures_by_module() -> None:
    cells = CellSnapshot(
        cell_v=[3.30, 3.41, 3.25, 3.30],
        temp_c=[20.0, 21.0, None, 30.0],
        balancing=[False, True, False, False],
        module_of_cell=[0, 0, 1, 1],
    )
    view = cells_view(cells)
    assert (view["min_index"], view["max_index"]) == (2, 1)
    assert view["spread_mv"] == 160.0
    assert view["temp_c_by_module"] == [[20.0, 21.0], [None, 30.0]]


def test_services_merge_presence_and_acknowledgements() -> None:
    live = LiveView()
    live.on_ack(ConfigAck(service="gw", config_version=3, accepted=False, errors=["restart"]))
    live.on_status(ServiceStatus(service="gw", kind="modbus_gateway", state="online"))
    (gw,) = live.services()
    assert (gw["state"], gw["config_version"], gw["config_accepted"]) == ("online", 3, False)
    assert gw["config_errors"] == ["restart"]
