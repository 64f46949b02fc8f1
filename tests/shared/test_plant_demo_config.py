"""`plant_demo_config`: the demo wired to the plant, every system of `make run` on its own CAN
groups and Modbus port, and `shared.can_bus.open_can` keeping a udp_multicast bus to its group."""

from __future__ import annotations

import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.can_bus import multicast_problem, open_can
from shared.config import demo_config, plant_demo_config
from shared.config.system import PLANT_SYSTEMS_MAX


def addresses(index: int) -> set[tuple[str, object]]:
    c = plant_demo_config(f"demo{index}", index)
    return {
        ("can", c.interfaces.can.channel),
        ("can", c.current_sensor.can.channel),
        ("can", c.insulation_monitor.can.channel),
        ("tcp", c.contactors.io.tcp_port),
    }


def test_the_plant_demo_is_the_demo_on_the_plants_devices() -> None:
    c, demo = plant_demo_config(), demo_config()
    assert c.topology == demo.topology and c.chemistry == demo.chemistry
    assert c.insulation_monitor.driver == "iso165c"
    assert {c.interfaces.can.interface, c.current_sensor.can.interface,
            c.insulation_monitor.can.interface} == {"udp_multicast"}  # fmt: skip
    assert c.contactors.io.transport == "tcp" and c.contactors.io.tcp_port != 502
    assert len(addresses(0)) == 4  # no two devices share a bus or a port


@settings(max_examples=50)
@given(st.integers(0, PLANT_SYSTEMS_MAX - 1), st.integers(0, PLANT_SYSTEMS_MAX - 1))
def test_two_systems_share_no_group_or_port(a: int, b: int) -> None:
    if a != b:
        assert not addresses(a) & addresses(b)


@pytest.mark.parametrize("index", [-1, PLANT_SYSTEMS_MAX])
def test_an_index_out_of_range_is_refused(index: int) -> None:
    with pytest.raises(ValueError, match="plant system index"):
        plant_demo_config("demo", index)


def test_a_udp_multicast_bus_hears_only_its_own_group() -> None:
    problem = multicast_problem()
    if problem is not None:
        pytest.skip(problem)
    buses = [open_can("udp_multicast", g) for g in ("239.74.9.1", "239.74.9.2", "239.74.9.1")]
    try:
        buses[0].send(can.Message(arbitration_id=0x123, data=b"\x01", is_extended_id=False))
        got = buses[2].recv(timeout=2.0)
        assert got is not None and got.arbitration_id == 0x123
        assert buses[1].recv(timeout=0.5) is None  # python-can alone would deliver it here too
    finally:
        for bus in buses:
            bus.shutdown()
