"""The simulated inverter: its pure core against the CAN gateway's own profiles (the frames a
real gateway builds, its answers to the inverter's requests), then end to end against the
gateway service over python-can `virtual` and, in a private network namespace,
`udp_multicast`."""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.can_gateway.codec import Frame
from services.can_gateway.profile import PackView, ProtocolOptions, is_extended
from services.can_gateway.registry import load_profile
from services.can_gateway.service import CanGateway
from services.plant.devices.inverter_can import InverterCan, open_bus
from services.plant.inverter import (
    INVERTER_PROFILES,
    STALE_AFTER_S,
    SimulatedInverter,
    UnknownInverterProfileError,
)
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.config import SystemConfig, demo_config
from shared.messages import PackState
from shared.topics import PACK_STATE
from tests.factories import limits, pack_state

PROFILES = tuple(INVERTER_PROFILES)
STEP_A = 0.05  # half the 0.1 A resolution of every current-limit signal
STEP_V = 0.05


def with_can(config: SystemConfig, **can_fields: Any) -> SystemConfig:
    data = config.model_dump(mode="json")
    data["interfaces"]["can"].update(can_fields)
    return SystemConfig.model_validate(data)


LV = SystemConfig.from_preset("LFP", system_id="lv", modules=1, cells_per_module=16)
CONFIGS: dict[str, SystemConfig] = {
    "victron_0x35x": with_can(LV, profiles=["victron_0x35x"]),
    "pylon_v12": with_can(LV, profiles=["pylon_v12"]),
    "pylon_hv": with_can(demo_config("hv"), profiles=["pylon_hv"]),
    "native": with_can(demo_config("hv"), profiles=["native"]),
}
LOAD = dict(soc_pct=50.0, cell_v_min=3.3, cell_v_max=3.4)


def healthy(ccl: float = 80.0, dcl: float = 120.0, cvl: float = 55.2, dvl: float = 44.8,
            **overrides: Any) -> PackState:  # fmt: skip
    return pack_state(
        limits_=limits(charge_current_a=ccl, discharge_current_a=dcl, charge_voltage_v=cvl,
                       discharge_voltage_v=dvl),
        **overrides,
    )  # fmt: skip


def view(name: str, pack: PackState | None, *, stale: bool = False,
         options: ProtocolOptions | None = None) -> PackView:  # fmt: skip
    return PackView(CONFIGS[name], pack, stale or pack is None, None, options or ProtocolOptions())


def exchange(inv: SimulatedInverter, pack_view: PackView, now_s: float) -> list[Frame]:
    """One gateway period, pure: the gateway profile's cyclic frames and its answers to what
    the inverter sends now, all received by the inverter. Returns the frames."""
    gateway = load_profile(inv.profile_name)
    frames = list(gateway.cyclic(pack_view).frames)
    for frame_id, data in inv.due(now_s):
        if gateway.accepts(frame_id, is_extended(frame_id)):
            frames += gateway.handle(frame_id, data, pack_view).frames
    for frame_id, data in frames:
        inv.receive(frame_id, data, now_s)
    return frames


hv_options = st.builds(
    ProtocolOptions,
    pylon_hv_byte_order=st.sampled_from(["little", "big"]),
    pylon_hv_current_offset_a=st.sampled_from([3000.0, 0.0]),
    pylon_hv_discharge_limit_sign=st.sampled_from(["negative", "positive"]),
)
amps = st.floats(0.0, 500.0)
volts = st.floats(10.0, 900.0)
requests = st.floats(-2000.0, 2000.0)


# --- pure core -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(PROFILES), ccl=amps, dcl=amps, cvl=volts, dvl=volts,
       request=requests, options=hv_options)  # fmt: skip
def test_reads_the_limits_the_gateway_was_given_and_never_exceeds_them(
    name: str, ccl: float, dcl: float, cvl: float, dvl: float, request: float,
    options: ProtocolOptions,
) -> None:  # fmt: skip
    inv = SimulatedInverter(name, f"constant:{request}", options=options)
    exchange(inv, view(name, healthy(ccl, dcl, cvl, dvl), options=options), 100.0)
    reading = inv.reading(100.0)
    assert reading.limits is not None and not reading.stale
    lim = reading.limits
    assert lim.charge_current_a is not None and lim.discharge_current_a is not None
    assert abs(lim.charge_current_a - ccl) <= STEP_A + 1e-6
    assert abs(lim.discharge_current_a - dcl) <= STEP_A + 1e-6
    assert lim.charge_voltage_v is not None and abs(lim.charge_voltage_v - cvl) <= STEP_V + 1e-6
    assert lim.discharge_voltage_v is not None
    assert abs(lim.discharge_voltage_v - dvl) <= STEP_V + 1e-6
    drawn = inv.current_a(100.5, **LOAD)
    assert -lim.discharge_current_a <= drawn <= lim.charge_current_a
    assert drawn == min(max(request, -lim.discharge_current_a), lim.charge_current_a)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(PROFILES), request=requests, after_s=st.floats(1e-3, 1e6),
       ccl=st.floats(1.0, 500.0), dcl=st.floats(1.0, 500.0))  # fmt: skip
def test_stale_limits_draw_nothing(
    name: str, request: float, after_s: float, ccl: float, dcl: float
) -> None:
    inv = SimulatedInverter(name, f"constant:{request}")
    exchange(inv, view(name, healthy(ccl, dcl)), 10.0)
    fresh = inv.current_a(10.0 + inv.timeout_s * 0.99, **LOAD)
    assert fresh == pytest.approx(min(max(request, -dcl), ccl), abs=STEP_A + 1e-6)
    assert inv.current_a(10.0 + inv.timeout_s + after_s, **LOAD) == 0.0
    assert inv.reading(10.0 + inv.timeout_s + after_s).stale


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(name=st.sampled_from(PROFILES), request=requests,
       frames=st.lists(st.tuples(st.integers(0, 0x1FFFFFFF), st.binary(max_size=8),
                                 st.booleans()), max_size=20))  # fmt: skip
def test_frames_it_does_not_read_draw_nothing(
    name: str, request: float, frames: list[tuple[int, bytes, bool]]
) -> None:
    inv = SimulatedInverter(name, f"constant:{request}")
    spec = INVERTER_PROFILES[name]
    unread = [(i, d, x) for i, d, x in frames
              if i not in spec.reads or x != spec.extended or (not x and i > 0x7FF)]  # fmt: skip
    for frame_id, data, extended in unread:
        assert not inv.receive(frame_id, data, 1.0, is_extended_id=extended)
    assert inv.counters["frames_ignored"] == len(unread)
    assert inv.current_a(1.0, **LOAD) == 0.0
    assert inv.reading(1.0).limits is None


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(PROFILES), request=requests.filter(lambda a: abs(a) > 0.1))
def test_a_withheld_limits_frame_draws_nothing(name: str, request: float) -> None:
    """Every other frame of the profile arrives, the limits frame never does."""
    inv = SimulatedInverter(name, f"constant:{request}")
    limits_id = INVERTER_PROFILES[name].limits_id
    gateway = load_profile(name)
    pack_view = view(name, healthy())
    frames = list(gateway.cyclic(pack_view).frames)
    for frame_id, data in inv.due(0.0):
        if gateway.accepts(frame_id, is_extended(frame_id)):
            frames += gateway.handle(frame_id, data, pack_view).frames
    assert limits_id in {f for f, _ in frames}
    for frame_id, data in frames:
        if frame_id != limits_id:
            inv.receive(frame_id, data, 0.0)
    assert inv.reading(0.0).soc_pct == pytest.approx(50.0, abs=0.5)  # the rest was read
    assert inv.current_a(0.1, **LOAD) == 0.0


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(PROFILES), request=requests, stale=st.booleans(),
       fault=st.booleans(), fed=st.booleans(), after_s=st.floats(0.0, 1e4))  # fmt: skip
def test_ignore_limits_draws_the_load_whatever_the_bms_says(
    name: str, request: float, stale: bool, fault: bool, fed: bool, after_s: float
) -> None:
    inv = SimulatedInverter(name, f"constant:{request}", ignore_limits=True)
    pack = healthy(ccl=1.0, dcl=1.0, faults=["cell_overvoltage"] if fault else [])
    if fed:
        exchange(inv, view(name, pack, stale=stale), 0.0)
    assert inv.current_a(after_s, **LOAD) == request
    inv.ignore_limits = False
    assert abs(inv.current_a(after_s, **LOAD)) <= 1.0 + STEP_A


@pytest.mark.parametrize("name", PROFILES)
def test_the_gateway_fail_safe_draws_nothing(name: str) -> None:
    inv = SimulatedInverter(name, "constant:-50")
    exchange(inv, view(name, healthy()), 0.0)
    assert inv.current_a(0.0, **LOAD) == -50.0  # honest: the same inverter draws when allowed
    exchange(inv, view(name, healthy(), stale=True), 1.0)
    reading = inv.reading(1.0)
    assert reading.limits is not None  # fresh frames, which say: nothing
    assert inv.current_a(1.0, **LOAD) == 0.0


@pytest.mark.parametrize("name", PROFILES)
def test_a_fault_flag_stops_it_a_warning_does_not(name: str) -> None:
    """The limits of a healthy pack with the status frames of a faulted one: the inverter
    itself must stop (the gateway would also send 0 A, which this test takes away)."""
    limits_id = INVERTER_PROFILES[name].limits_id

    def frames_with_status_of(pack: PackState) -> SimulatedInverter:
        inv = SimulatedInverter(name, "constant:30")
        gateway = load_profile(name)
        ok = exchange(SimulatedInverter(name), view(name, healthy()), 0.0)
        other = exchange(SimulatedInverter(name), view(name, pack), 0.0)
        for frame_id, data in [f for f in ok if f[0] == limits_id] + [
            f for f in other if f[0] != limits_id
        ]:
            inv.receive(frame_id, data, 0.0)
        assert gateway.name == name
        return inv

    faulted = frames_with_status_of(healthy(faults=["cell_overvoltage"]))
    assert faulted.reading(0.0).status.stop
    assert faulted.current_a(0.0, **LOAD) == 0.0
    warned = frames_with_status_of(healthy(warnings=["cell_overvoltage"]))
    assert warned.reading(0.0).status.warnings and not warned.reading(0.0).status.stop
    assert warned.current_a(0.0, **LOAD) == 30.0


@pytest.mark.parametrize("name", ["pylon_v12", "pylon_hv"])
@pytest.mark.parametrize("request_a", [-40.0, 40.0])
def test_a_forbidden_direction_draws_nothing_the_other_still_does(
    name: str, request_a: float
) -> None:
    """0x35C / 0x4280 of a pack without discharge, next to limits that still allow it."""
    limits_id = INVERTER_PROFILES[name].limits_id
    ok = exchange(SimulatedInverter(name), view(name, healthy()), 0.0)
    no_discharge = exchange(SimulatedInverter(name), view(name, healthy(dcl=0.0)), 0.0)
    inv = SimulatedInverter(name, f"constant:{request_a}")
    for frame_id, data in [f for f in ok if f[0] == limits_id] + [
        f for f in no_discharge if f[0] != limits_id
    ]:
        inv.receive(frame_id, data, 0.0)
    status = inv.reading(0.0).status
    assert status.charge_allowed and not status.discharge_allowed
    assert inv.current_a(0.0, **LOAD) == (request_a if request_a > 0 else 0.0)


@pytest.mark.parametrize("name", PROFILES)
def test_voltage_limits_stop_charging_at_cvl_and_discharging_at_dvl(name: str) -> None:
    inv = SimulatedInverter(name, "constant:0")
    exchange(inv, view(name, healthy(cvl=55.2, dvl=44.8)), 0.0)
    assert inv.allowed_a(0.0) == pytest.approx((80.0, 120.0))
    assert inv.allowed_a(0.0, pack_voltage_v=50.0) == pytest.approx((80.0, 120.0))
    assert inv.allowed_a(0.0, pack_voltage_v=55.3) == pytest.approx((0.0, 120.0))
    assert inv.allowed_a(0.0, pack_voltage_v=44.7) == pytest.approx((80.0, 0.0))


@pytest.mark.parametrize("name", PROFILES)
def test_what_it_sends_is_what_the_gateway_reads_as_an_inverter(name: str) -> None:
    inv = SimulatedInverter(name)
    gateway = load_profile(name)
    sent = inv.due(0.0)
    assert [len(d) for _, d in sent] == [8] * len(INVERTER_PROFILES[name].sends)
    for frame_id, data in sent:
        assert gateway.accepts(frame_id, is_extended(frame_id))
        assert gateway.handle(frame_id, data, view(name, healthy())).keepalive
    assert bool(sent) == gateway.supervises_keepalive  # the native controller sends nothing


def test_frames_go_out_once_per_period_and_not_while_silent() -> None:
    inv = SimulatedInverter("pylon_hv")

    def ids(frames: list[Frame]) -> list[tuple[int, int]]:
        return [(f, d[0]) for f, d in frames]

    assert ids(inv.due(0.0)) == [(0x4200, 0x00), (0x4200, 0x02)]
    assert inv.due(0.5) == []
    assert ids(inv.due(1.0)) == [(0x4200, 0x00)]
    assert ids(inv.due(2.05)) == [(0x4200, 0x00)]
    assert ids(inv.due(10.0)) == [(0x4200, 0x00), (0x4200, 0x02)]
    inv.transmitting = False
    assert inv.due(20.0) == []
    inv.transmitting = True
    assert len(inv.due(20.1)) == 2
    victron = SimulatedInverter("victron_0x35x").due(0.0)
    assert victron == [(0x305, bytes(8)), (0x307, b"\x12\x34\x56\x78VIC\x00")]


def test_stale_timeouts_follow_the_reference() -> None:
    assert STALE_AFTER_S == 3.0  # Safiery p.9: stop if 0x351 is missing for 3 s
    assert {n: p.timeout_s for n, p in INVERTER_PROFILES.items()} == {
        "victron_0x35x": 3.0, "pylon_v12": 3.0, "pylon_hv": 3.0, "native": 1.0,
    }  # fmt: skip
    assert SimulatedInverter("victron_0x35x", timeout_s=60.0).timeout_s == 60.0


@pytest.mark.parametrize("name", PROFILES)
def test_a_bad_frame_is_counted_logged_once_and_draws_nothing(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    inv = SimulatedInverter(name, "constant:10")
    limits_id = INVERTER_PROFILES[name].limits_id
    with caplog.at_level(logging.WARNING, logger="plant.inverter"):
        for t in range(5):
            assert not inv.receive(limits_id, b"\x01\x02", float(t))
    assert inv.counters["frames_bad"] == 5
    assert len(caplog.records) == 1 and f"0x{limits_id:X}" in caplog.text
    assert inv.current_a(5.0, **LOAD) == 0.0


def test_a_not_available_value_reads_as_unknown() -> None:
    inv = SimulatedInverter("native", "constant:10")
    exchange(inv, view("native", healthy(soc=None)), 0.0)
    assert inv.reading(0.0).soc_pct is None
    exchange(inv, view("native", healthy(soc=42.0)), 0.1)
    assert inv.reading(0.1).soc_pct == pytest.approx(42.0, abs=0.05)


def test_an_unknown_profile_or_bad_request_is_refused_clearly() -> None:
    with pytest.raises(UnknownInverterProfileError, match="victron_0x35x"):
        SimulatedInverter("sma_si")

    class Broken:
        def current_a(self, t_s: float, *, soc_pct: float | None, cell_v_min: float,
                      cell_v_max: float) -> float:  # fmt: skip
            return math.nan

    inv = SimulatedInverter("victron_0x35x", Broken(), ignore_limits=True)
    assert inv.current_a(0.0, **LOAD) == 0.0
    assert inv.counters["load_requests_bad"] == 1


# --- end to end: the CAN gateway service and the inverter on one python-can bus --------------


class Rig:
    """The gateway service core (in-memory broker, real msgpack) and the simulated inverter
    (through its python-can adapter) on two handles of one CAN channel."""

    def __init__(self, name: str, open_can: Callable[[], can.BusABC]) -> None:
        config = CONFIGS[name]
        self.broker = InMemoryBroker()
        self.master = InMemoryBus(self.broker, system=config.system_id, service="master_core",
                                  kind="test")  # fmt: skip
        self.master.start()
        self.bus = InMemoryBus(self.broker, system=config.system_id, service="can_gateway",
                               kind="test")  # fmt: skip
        self.bus.start()
        self.gateway = CanGateway(self.bus, open_can(), stale_after_s=1.0)
        self.gateway.apply_config(config)
        cfg = config.interfaces.can
        options = ProtocolOptions(cfg.pylon_hv_byte_order, cfg.pylon_hv_current_offset_a,
                                  cfg.pylon_hv_discharge_limit_sign)  # fmt: skip
        self.inverter_bus = open_can()
        self.inverter = InverterCan(
            SimulatedInverter(name, "constant:-1000", options=options), self.inverter_bus
        ).start()
        self.pack: PackState | None = None
        self.gateway_running = True

    def cycle(self) -> None:
        if self.pack is not None:
            self.master.publish(PACK_STATE, self.pack)
        if self.gateway_running:
            self.bus.process(0.0)
            self.gateway.step()

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.cycle()
            if condition():
                return True
            time.sleep(0.05)
        return False

    def stop_gateway(self) -> None:
        self.gateway_running = False
        self.gateway.close()

    def close(self) -> None:
        self.inverter.stop()
        if self.gateway_running:
            self.gateway.close()
        self.gateway.can.shutdown()
        self.inverter_bus.shutdown()


def drawn(rig: Rig) -> float:
    return rig.inverter.current_a(time.monotonic(), **LOAD)


def run_end_to_end(name: str, open_can: Callable[[], can.BusABC]) -> None:
    rig = Rig(name, open_can)
    try:
        rig.pack = healthy(ccl=61.3, dcl=87.6, cvl=55.2, dvl=44.8)

        def reads_the_limits() -> bool:
            lim = rig.inverter.reading().limits
            return lim is not None and lim.discharge_current_a is not None and math.isclose(
                lim.discharge_current_a, 87.6, abs_tol=STEP_A)  # fmt: skip

        assert rig.wait_until(reads_the_limits), rig.inverter.reading()
        lim = rig.inverter.reading().limits
        assert lim is not None
        assert lim.charge_current_a == pytest.approx(61.3, abs=STEP_A)
        assert lim.charge_voltage_v == pytest.approx(55.2, abs=STEP_V)
        assert lim.discharge_voltage_v == pytest.approx(44.8, abs=STEP_V)
        assert drawn(rig) == pytest.approx(-87.6, abs=STEP_A)  # the load asks for 1000 A
        assert rig.inverter.counters["frames_sent"] >= len(INVERTER_PROFILES[name].sends)
        if rig.gateway.profiles[0].supervises_keepalive:
            # the gateway heard the inverter (its keep-alive may still be on the line)
            assert rig.wait_until(lambda: rig.gateway.keepalive_s is not None)
        rig.inverter.inverter.ignore_limits = True
        assert drawn(rig) == -1000.0
        rig.inverter.inverter.ignore_limits = False

        rig.pack = None  # the master falls silent: the gateway's fail-safe reaches the inverter
        assert rig.wait_until(lambda: drawn(rig) == 0.0)
        assert not rig.inverter.reading().stale

        rig.stop_gateway()  # the gateway falls silent: the inverter's own timeout
        assert rig.wait_until(lambda: rig.inverter.reading().stale)
        age = rig.inverter.reading().limits_age_s
        assert age is not None and age > rig.inverter.inverter.timeout_s
        assert drawn(rig) == 0.0
    finally:
        rig.close()


@pytest.mark.parametrize("name", PROFILES)
def test_end_to_end_over_virtual_can(name: str) -> None:
    channel = f"inv-{uuid.uuid4().hex[:8]}"
    run_end_to_end(name, lambda: open_bus("virtual", channel))


def test_the_adapter_refuses_what_no_inverter_reads_and_keeps_running() -> None:
    channel = f"inv-{uuid.uuid4().hex[:8]}"
    bms, inverter_bus = open_bus("virtual", channel), open_bus("virtual", channel)
    adapter = InverterCan(SimulatedInverter("victron_0x35x", "constant:5"), inverter_bus).start()
    try:
        for msg in (
            can.Message(arbitration_id=0x351, is_remote_frame=True, is_extended_id=False),
            can.Message(arbitration_id=0x351, data=bytes(12), is_fd=True, is_extended_id=False),
            can.Message(arbitration_id=0x351, is_error_frame=True, is_extended_id=False),
            can.Message(arbitration_id=0x351, data=b"\x01", is_extended_id=False),
        ):
            bms.send(msg)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and (
            adapter.counters["frames_refused"] < 3 or adapter.inverter.counters["frames_bad"] < 1
        ):
            time.sleep(0.05)
        assert adapter.counters["frames_refused"] == 3
        assert adapter.inverter.counters["frames_bad"] == 1
        bms.send(can.Message(arbitration_id=0x351, data=bytes.fromhex("2802640064000000"),
                             is_extended_id=False))  # fmt: skip
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and adapter.reading().limits is None:
            time.sleep(0.05)
        assert adapter.allowed_a() == pytest.approx((10.0, 10.0))
        assert adapter.current_a(time.monotonic(), **LOAD) == 5.0
        heard = {m.arbitration_id for m in iter(lambda: bms.recv(0.5), None)}
        assert heard == {0x305, 0x307}  # the keep-alives go out meanwhile
    finally:
        adapter.stop()
        bms.shutdown()
        inverter_bus.shutdown()


@pytest.mark.parametrize("name", PROFILES)
def test_end_to_end_over_slcan_on_a_serial_link(name: str, tmp_path: Path) -> None:
    """The gateway on one end of a socat pty pair, the inverter on the other (USB-CAN adapters
    speaking Lawicel slcan)."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    ends = [tmp_path / "bms", tmp_path / "inverter"]
    socat = subprocess.Popen(
        ["socat", *(f"pty,raw,echo=0,link={end}" for end in ends)], stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10.0
        while not all(end.exists() for end in ends) and time.monotonic() < deadline:
            time.sleep(0.05)
        opening = iter(ends)  # the gateway opens first, then the inverter
        run_end_to_end(name, lambda: can.Bus(interface="slcan", channel=str(next(opening)),
                                             bitrate=500_000, sleep_after_open=0))  # fmt: skip
    finally:
        socat.kill()
        socat.wait()


NETNS_ENV = "BMS_TEST_INVERTER_NETNS"
UDP_GROUP = "239.74.163.2"  # python-can's UdpMulticastBus.DEFAULT_GROUP_IPv4


@pytest.mark.skipif(os.environ.get(NETNS_ENV) != "1", reason="runs inside a network namespace")
@pytest.mark.parametrize("name", PROFILES)
def test_end_to_end_over_udp_multicast_in_netns(name: str) -> None:
    run_end_to_end(name, lambda: open_bus("udp_multicast", UDP_GROUP))


def test_end_to_end_over_udp_multicast() -> None:
    """The udp_multicast cases in a private network namespace with multicast on loopback."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not installed")
    root = Path(__file__).resolve().parents[2]
    setup = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"
    probe = subprocess.run([unshare, "--net", "--map-root-user", "sh", "-c", setup],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"no private network namespace here: {probe.stderr.strip()}")
    inner = f"{setup} && exec {sys.executable} -m pytest -q -p no:cacheprovider " + (
        f"{Path(__file__).relative_to(root)} -k test_end_to_end_over_udp_multicast_in_netns"
    )
    done = subprocess.run(
        [unshare, "--net", "--map-root-user", "sh", "-c", inner],
        cwd=root, env={**os.environ, NETNS_ENV: "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"{len(PROFILES)} passed" in done.stdout, done.stdout[-2000:]
