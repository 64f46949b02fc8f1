"""The gateways serve a site (BMS_SITE): three strings in parallel as one battery.

A real gateway process on a real mosquitto, fed by the test with each string's configuration,
pack state and cell snapshot, and the site's configuration and state, as the masters and the
site controller publish them; read by independent clients (pysunspec2 for Modbus, an inverter
decoding with cantools and the project DBC for CAN).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import pytest
from pymodbus.client import ModbusTcpClient
from sunspec2.modbus import client as sunspec

from services.can_gateway.codec import load_dbc
from services.can_gateway.service import CanGateway
from services.modbus_gateway.site_map import site_map
from shared.broker import MosquittoBroker, free_port, wait_for_port
from shared.bus import MqttBus
from shared.can_bus import open_can
from shared.config.site import SiteConfig
from shared.messages import ConfigMessage, PackState
from shared.messages.site import (
    Membership,
    SiteConfigMessage,
    SiteLimits,
    SiteState,
    StringState,
)
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG, PACK_CELLS, PACK_STATE, SITE_CONFIG, SITE_STATE
from tests.factories import limits, pack_state
from tests.system.test_modbus_gateway import FakeMaster, gateway_config, snapshot

from .agents import ServiceProcess, publish_config, skip_without_multicast, wait_until

MODULES = (2, 3, 2)
MEMBERSHIP: tuple[Membership, ...] = ("joined", "joined", "waiting")


def string_pack(k: int) -> PackState:
    """String k (1-based); string 3 has no SOC yet (its estimator has not started)."""
    return pack_state(
        soc=None if k == 3 else 50.0 + k, soh=95.0 + k, voltage=30.0 + 0.2 * k,
        current=-5.0 * k, cell_v_min=3.70, cell_v_max=3.70 + 0.01 * k, cell_v_avg=3.74,
        limits_=limits(charge_voltage_v=33.6, discharge_voltage_v=24.0,
                       charge_current_a=40.0 + k, discharge_current_a=60.0 + k),
    )  # fmt: skip


def site_state(site: str, systems: list[str]) -> SiteState:
    """SOH unknown: one joined string's SOH is not known to the site controller here."""
    return SiteState(
        site=site, soc=51.4, soh=None, voltage_v=30.3, current_a=-15.0, power_w=-454.5,
        limits=SiteLimits(charge_voltage_v=33.6, discharge_voltage_v=24.0,
                          charge_current_a=75.6, discharge_current_a=111.6),
        strings_total=3, strings_joined=2, soc_std=2.5, since_anchor_s=90_061.0,
        full_charge_requested=True,
        strings=[
            StringState(system=s, membership=MEMBERSHIP[i], reason="" if i < 2 else
                        "1.2 V above the bus") for i, s in enumerate(systems)
        ],
    )  # fmt: skip


class SiteFeed:
    """Publishes like three masters and a site controller, every 0.2 s."""

    def __init__(self, url: str, site: str, systems: list[str], tcp_port: int) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=site, service="feed", kind="test")
        assert self.bus.start(wait_s=10)
        for k, system in enumerate(systems, start=1):
            config = gateway_config(system, tcp_port=tcp_port, rtu_port="/dev/null",
                                    modules=MODULES[k - 1], rtu=False)  # fmt: skip
            self.bus.publish(CONFIG, ConfigMessage(config=config), system=system)
        site_config = SiteConfig.model_validate(
            {"site": site, "strings": [{"system": s} for s in systems]}
        )
        self.bus.publish(SITE_CONFIG, SiteConfigMessage(config=site_config))
        self.site, self.systems = site, systems
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.bus.publish(SITE_STATE, site_state(self.site, self.systems))
            for k, system in enumerate(self.systems, start=1):
                self.bus.publish(PACK_STATE, string_pack(k), system=system)
                self.bus.publish(PACK_CELLS, snapshot(MODULES[k - 1]), system=system)
            self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        self.bus.stop()


@pytest.fixture(params=["string", "site"])
def site_modbus(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    port = free_port()
    site, systems = f"{system_id}-site", [f"{system_id}-s{k}" for k in (1, 2, 3)]
    feed = SiteFeed(mosquitto.url, site, systems, port)
    # The Modbus interface comes from the configuration of the host's system, string 1; in
    # the site's own stack (BMS_SYSTEM is the site id) from the site's first string.
    host = systems[0] if request.param == "string" else site
    proc = ServiceProcess(
        "modbus_gateway", mosquitto.url, host, tmp_path, site=site, stale_after_s="2"
    )
    wait_for_port("127.0.0.1", port, 15)
    yield port
    proc.stop()
    feed.close()


def test_pysunspec2_reads_the_site_bank_and_its_three_strings(site_modbus: int) -> None:
    def scan() -> Any:
        d = sunspec.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1",
                                                 ipport=site_modbus)  # fmt: skip
        try:
            d.scan()
            d.models[802][0].read()
            return d
        finally:
            d.close()

    found: list[Any] = []

    def complete() -> bool:
        d = scan()
        found[:] = [d]
        return (
            len(d.models.get(804, [])) == 3
            and len(d.models.get(805, [])) == sum(MODULES)
            and d.models[802][0].SoC.cvalue is not None
            and all(s.V.cvalue is not None for s in d.models[804])
        )

    assert wait_until(complete, 20), "the site chain never became complete"
    d = found[0]
    assert d.common[0].SN.cvalue.endswith("-site")
    bank = d.models[802][0]
    assert bank.SoC.cvalue == pytest.approx(51.4, abs=0.05)
    assert bank.V.cvalue == pytest.approx(30.3, abs=0.05)
    assert bank.A.cvalue == pytest.approx(-15.0, abs=0.05)
    assert bank.AChaMax.cvalue == pytest.approx(75.6, abs=0.05)
    assert bank.ADisChaMax.cvalue == pytest.approx(111.6, abs=0.05)
    assert bank.VMax.cvalue == pytest.approx(33.6, abs=0.05)
    assert bank.SoH.cvalue is None  # unknown: not implemented, never 0
    assert bank.SoH.value is None
    assert bank.CellVMaxStr.cvalue == 3
    for k, string in enumerate(d.models[804], start=1):
        assert string.Idx.cvalue == k
        assert string.NMod.cvalue == MODULES[k - 1]
        assert string.V.cvalue == pytest.approx(30.0 + 0.2 * k, abs=0.05)
        assert string.A.cvalue == pytest.approx(-5.0 * k, abs=0.05)
        assert string.St.value & 1 == (1 if MEMBERSHIP[k - 1] == "joined" else 0)
    assert d.models[804][0].SoC.cvalue == pytest.approx(51.0, abs=0.05)
    assert d.models[804][2].SoC.cvalue is None  # string 3's SOC is unknown
    places = sorted((m.StrIdx.cvalue, m.ModIdx.cvalue) for m in d.models[805])
    assert places == [(k, m) for k in (1, 2, 3) for m in range(1, MODULES[k - 1] + 1)]
    # SetOp is the site's one writable point, a site command to the site controller; none
    # runs here: no reply in time answers exception 04. Any other point answers 02, another
    # SetOp value 03, both at once (nothing is sent).
    rmap = site_map(())
    client = ModbusTcpClient("127.0.0.1", port=site_modbus, timeout=10)
    assert client.connect()
    try:
        reply = client.write_register(rmap.by_key["battery.SetOp"].address, 1, device_id=1)
        assert reply.isError() and reply.exception_code == 4
        reply = client.write_register(rmap.by_key["battery.AlmRst"].address, 1, device_id=1)
        assert reply.isError() and reply.exception_code == 2
        reply = client.write_register(rmap.by_key["battery.SetOp"].address, 3, device_id=1)
        assert reply.isError() and reply.exception_code == 3
        # what 802 has no point for, in the native block where a single system serves it:
        # SoCStd 1026 (0.1 %), SinceAnchor 1027-1028 (uint32, s), FullChargeReq 1029
        first = rmap.by_key["native.SoCStd"].address
        assert (first, rmap.by_key["native.FullChargeReq"].address) == (1026, 1029)
        reply = client.read_holding_registers(first, count=4, device_id=1)
        assert not reply.isError(), reply
        assert reply.registers == [25, 90_061 >> 16, 90_061 & 0xFFFF, 1]
        reply = client.read_holding_registers(1000, count=2, device_id=1)  # version, stale
        assert not reply.isError() and reply.registers == [1, 0]
        reply = client.read_holding_registers(1004, count=1, device_id=1)  # a system's SoC
        assert reply.isError() and reply.exception_code == 2
    finally:
        client.close()


def test_the_can_gateway_sends_the_site_values_to_the_inverter(
    mosquitto: MosquittoBroker, system_id: str
) -> None:
    """Over a real broker; the inverter decodes with cantools and the project DBC."""
    site, systems = f"{system_id}-site", [f"{system_id}-s{k}" for k in (1, 2, 3)]
    feed = SiteFeed(mosquitto.url, site, systems, free_port())
    channel = f"can-{uuid.uuid4().hex[:8]}"
    bus = MqttBus(parse_mqtt_url(mosquitto.url), system=systems[0], service="can_gateway",
                  kind="test")  # fmt: skip
    gateway = CanGateway(bus, can.Bus(interface="virtual", channel=channel), site=site)
    inverter = can.Bus(interface="virtual", channel=channel)
    stop = threading.Event()
    assert bus.start(wait_s=10)
    runner = threading.Thread(target=gateway.run, args=(stop.is_set,), daemon=True)
    runner.start()
    db = load_dbc("victron_0x35x")
    latest: dict[int, dict[str, Any]] = {}

    def heard() -> bool:
        while (msg := inverter.recv(timeout=0.1)) is not None:
            latest[msg.arbitration_id] = dict(db.decode_message(msg.arbitration_id, msg.data))
        return 0x356 in latest and latest.get(0x351, {}).get("ChargeCurrentLimit", 0) > 0

    try:
        assert wait_until(heard, 15), latest
        assert latest[0x351]["ChargeCurrentLimit"] == pytest.approx(75.6, abs=0.05)
        assert latest[0x351]["DischargeCurrentLimit"] == pytest.approx(111.6, abs=0.05)
        assert latest[0x351]["ChargeVoltageLimit"] == pytest.approx(33.6, abs=0.05)
        assert latest[0x356]["BatteryVoltage"] == pytest.approx(30.3, abs=0.005)
        assert latest[0x356]["BatteryCurrent"] == pytest.approx(-15.0, abs=0.05)
        assert 0x355 not in latest  # the site's SOH is unknown: SOC/SOH never go out as 0
        assert latest[0x372]["ModulesOnline"] == 2 and latest[0x372]["ModulesOffline"] == 1
        # The site controller stops: the inverter gets the fail-safe within the staleness
        feed.close()
        latest.clear()
        assert wait_until(
            lambda: (heard() or True) and latest.get(0x351, {}).get("ChargeCurrentLimit", -1) == 0,
            15,
        ), latest
    finally:
        stop.set()
        runner.join(5)
        gateway.close()
        gateway.can.shutdown()
        inverter.shutdown()
        bus.stop()
        feed.close()


def test_the_can_gateway_process_in_a_sites_own_stack(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    """`python -m services.can_gateway` with BMS_SYSTEM = BMS_SITE (compose.site.yaml): the
    channel and profiles come from the site's first string's configuration; the inverter on
    udp_multicast decodes the site's values with cantools and the project DBC."""
    skip_without_multicast()
    site, systems = f"{system_id}-site", [f"{system_id}-s{k}" for k in (1, 2, 3)]
    digest = int(hashlib.sha256(system_id.encode()).hexdigest()[:4], 16)
    group = f"239.84.{digest >> 8}.{digest & 0xFF}"
    feed = SiteFeed(mosquitto.url, site, systems, free_port())
    proc = ServiceProcess(
        "can_gateway", mosquitto.url, site, tmp_path, site=site, can_interface="udp_multicast",
        can_channel=group, stale_after_s="2",
    )  # fmt: skip
    inverter = open_can("udp_multicast", group)
    db = load_dbc("victron_0x35x")
    latest: dict[int, dict[str, Any]] = {}

    def heard() -> bool:
        while (msg := inverter.recv(timeout=0.1)) is not None:
            latest[msg.arbitration_id] = dict(db.decode_message(msg.arbitration_id, msg.data))
        return 0x356 in latest and latest.get(0x351, {}).get("ChargeCurrentLimit", 0) > 0

    try:
        assert wait_until(heard, 20), (latest, proc.log())
        assert latest[0x351]["ChargeCurrentLimit"] == pytest.approx(75.6, abs=0.05)
        assert latest[0x351]["DischargeCurrentLimit"] == pytest.approx(111.6, abs=0.05)
        assert latest[0x356]["BatteryVoltage"] == pytest.approx(30.3, abs=0.005)
        assert latest[0x372]["ModulesOnline"] == 2
    finally:
        inverter.shutdown()
        proc.stop()
        feed.close()


def test_end_to_end_with_the_site_controller(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    """Three masters (stand-ins publishing their pack state and cells), the real site
    controller and the real Modbus gateway in the site's own stack: pysunspec2 reads the
    site the controller computed, with every string joined."""
    port = free_port()
    site, systems = f"{system_id}-site", [f"{system_id}-s{k}" for k in (1, 2, 3)]
    configs = [gateway_config(s, tcp_port=port, rtu_port="/dev/null", rtu=False) for s in systems]
    uis = [publish_config(mosquitto.url, c) for c in configs]
    masters = [FakeMaster(mosquitto.url, s) for s in systems]
    for master in masters:
        master.refuse_close = False  # the controller joins a string with set_mode, then close
    ui = MqttBus(parse_mqtt_url(mosquitto.url), system=site, service="config_ui", kind="test")
    assert ui.start(wait_s=10)
    config = SiteConfig.model_validate({"site": site, "strings": [{"system": s} for s in systems]})
    ui.publish(SITE_CONFIG, SiteConfigMessage(config=config))
    procs = [
        ServiceProcess(
            "site_controller", mosquitto.url, site, tmp_path, data_dir=str(tmp_path / "site")
        ),
        ServiceProcess("modbus_gateway", mosquitto.url, site, tmp_path, site=site),
    ]
    found: list[Any] = []

    def all_joined() -> bool:
        d = sunspec.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
        try:
            d.scan()
        finally:
            d.close()
        found[:] = [d]
        strings = d.models.get(804, [])
        return len(strings) == 3 and all(s.St.value is not None and s.St.value & 1
                                         for s in strings)  # fmt: skip

    try:
        wait_for_port("127.0.0.1", port, 20)
        assert wait_until(all_joined, 30), [p.log()[-3000:] for p in procs]
        # a scan reads model 802 before the strings' 804: the scan that saw every string
        # joined may have read the bank a moment before; read it all again, now settled
        assert all_joined(), [p.log()[-3000:] for p in procs]
        bank = found[0].models[802][0]
        assert bank.V.cvalue == pytest.approx(30.2, abs=0.05)
        assert bank.A.cvalue == pytest.approx(3 * -12.5, abs=0.05)
        assert bank.SoC.cvalue == pytest.approx(63.4, abs=0.1)
        assert bank.AChaMax.cvalue is not None and bank.AChaMax.cvalue > 0
        assert len(found[0].models[805]) == 3 * 2
    finally:
        for p in procs:
            p.stop()
        for m in masters:
            m.close()
        for b in (*uis, ui):
            b.stop()
