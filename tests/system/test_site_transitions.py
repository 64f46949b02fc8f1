"""A site's transitions read from outside, as SCADA and the inverter see them.

Two strings, each a simulated slave agent and a real master, the real site controller, the
site's own Modbus gateway process (read with pysunspec2) and a CAN gateway serving the site
(decoded with cantools and the project DBC), on a real mosquitto:

- a string's master restarts: the string leaves the site's sums at once (its values go out
  unknown, never stale), the site's limits are the remaining string's, and the string joins
  again once its master is back, without an operator;
- the site's broker restarts: everything comes back by itself, and no string is held out as if
  an operator had put it in standby.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import can
import pytest
from sunspec2.modbus import client as sunspec

from services.can_gateway.codec import load_dbc
from services.can_gateway.service import CanGateway
from shared.broker import MosquittoBroker, free_port, wait_for_port
from shared.bus import MqttBus
from shared.settings import parse_mqtt_url

from .agents import ServiceProcess, wait_until
from .test_site_controller import Rig, StringSpec, rigs_on

STALE_S = 6.0  # the rig's site configuration


@pytest.fixture
def site_rig(
    restartable_mosquitto: MosquittoBroker, tmp_path: Path
) -> Iterator[Callable[..., Rig]]:
    yield from rigs_on(restartable_mosquitto, tmp_path)


class Scada:
    """pysunspec2 on the site's Modbus TCP server: the bank (802) and its strings (804)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bank: Any = None
        self.strings: list[Any] = []

    def read(self) -> bool:
        d = sunspec.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=self.port)
        try:
            d.scan()
        except Exception:  # the server rebuilds its chain (a string's size changed): again
            return False
        finally:
            d.close()
        if 802 not in d.models:
            return False
        self.bank, self.strings = d.models[802][0], list(d.models.get(804, []))
        return True

    def joined(self) -> list[bool]:
        return [s.St.value is not None and bool(s.St.value & 1) for s in self.strings]


class Inverter:
    """The site's values over CAN (victron_0x35x), decoded with the project DBC."""

    def __init__(self, url: str, host: str, site: str) -> None:
        channel = f"can-{uuid.uuid4().hex[:8]}"
        self.bus = MqttBus(parse_mqtt_url(url), system=host, service="can_gateway", kind="test")
        self.gateway = CanGateway(self.bus, can.Bus(interface="virtual", channel=channel),
                                  site=site)  # fmt: skip
        self.can = can.Bus(interface="virtual", channel=channel)
        self.db = load_dbc("victron_0x35x")
        self.latest: dict[int, dict[str, Any]] = {}
        self.stop = threading.Event()
        assert self.bus.start(wait_s=10)
        self.runner = threading.Thread(target=self.gateway.run, args=(self.stop.is_set,),
                                       daemon=True)  # fmt: skip
        self.runner.start()

    def ccl_a(self) -> float | None:
        while (msg := self.can.recv(timeout=0.05)) is not None:
            decoded = self.db.decode_message(msg.arbitration_id, msg.data)
            self.latest[msg.arbitration_id] = dict(decoded)
        value = self.latest.get(0x351, {}).get("ChargeCurrentLimit")
        return None if value is None else float(value)

    def close(self) -> None:
        self.stop.set()
        self.runner.join(5)
        self.gateway.close()
        self.gateway.can.shutdown()
        self.can.shutdown()
        self.bus.stop()


def _both_joined(rig: Rig) -> bool:
    s = rig.latest()
    return s is not None and s.strings_joined == 2


def _start(site_rig: Callable[..., Rig], tmp_path: Path) -> tuple[Rig, Scada, Inverter]:
    port = free_port()
    rig: Rig = site_rig(
        [StringSpec("a", 50.0, 100.0), StringSpec("b", 50.0, 100.0)],
        cells=4, capacity_ah=10.0, load="constant:0", join_window_v=2.0, modbus_port=port,
    )  # fmt: skip
    rig.procs.append(ServiceProcess("modbus_gateway", rig.url, rig.site, tmp_path,
                                    site=rig.site, stale_after_s="3"))  # fmt: skip
    inverter = Inverter(rig.url, rig.strings[0], rig.site)
    wait_for_port("127.0.0.1", port, 30)
    return rig, Scada(port), inverter


def _site_ccl_a(rig: Rig) -> float | None:
    s = rig.latest()
    return None if s is None else s.limits.charge_current_a


def _outside_agrees(rig: Rig, scada: Scada, inverter: Inverter) -> bool:
    """SCADA's and the inverter's charge limit are the site controller's (which moves as the
    masters' limits ramp; read at once, each to its protocol's 0.1 A)."""
    ccl = _site_ccl_a(rig)
    if ccl is None or not scada.read():
        return False
    on_can = inverter.ccl_a()
    on_modbus = scada.bank.AChaMax.cvalue
    return (
        on_can is not None and abs(on_can - ccl) <= 0.15
        and on_modbus is not None and abs(on_modbus - ccl) <= 0.15
    )  # fmt: skip


def test_a_strings_master_restart_leaves_and_rejoins_the_site_read_from_outside(
    site_rig: Callable[..., Rig], tmp_path: Path
) -> None:
    rig, scada, inverter = _start(site_rig, tmp_path)
    a, b = rig.strings
    try:
        assert wait_until(lambda: _both_joined(rig), 90), rig.story()
        # the masters allow charging once their estimators start
        assert wait_until(lambda: (_site_ccl_a(rig) or 0) > 0, 30), rig.latest()
        assert wait_until(lambda: scada.read() and scada.joined() == [True, True], 30)
        assert wait_until(lambda: _outside_agrees(rig, scada, inverter), 20), (
            _site_ccl_a(rig),
            inverter.latest.get(0x351),
            scada.bank.AChaMax.cvalue,
        )

        # string b's master stops: b leaves the sums once its state is stale
        master_b = next(p for p in rig.procs if p.log_path.name == f"master_core-{b}.log")
        master_b.stop()
        assert wait_until(lambda: rig.members().get(b) == "stale", STALE_S + 15), rig.story()
        s = rig.latest()
        assert s is not None and s.strings_joined == 1
        own_a = next(x for x in s.strings if x.system == a).limits
        assert own_a is not None
        # one string of two equal ones: its own limit, derated by the sharing factor
        assert s.limits.charge_current_a == pytest.approx(0.9 * own_a.charge_current_a)
        alone_ccl = s.limits.charge_current_a

        def scada_sees_b_gone() -> bool:
            if not scada.read() or scada.joined() != [True, False]:
                return False
            return scada.strings[1].V.cvalue is None and scada.strings[1].SoC.cvalue is None

        assert wait_until(scada_sees_b_gone, 20), [(x.V.cvalue, x.St.value) for x in scada.strings]
        assert wait_until(lambda: _outside_agrees(rig, scada, inverter), 20)

        # b's master starts again (in working mode, as a master restarts): it joins by itself
        rig.procs.append(ServiceProcess(
            "master_core", rig.url, b, tmp_path, label="-again", hardware="simulated",
            load_profile="constant:0", auto_close="false", data_dir=str(tmp_path / b),
        ))  # fmt: skip
        assert wait_until(lambda: _both_joined(rig), 90), rig.story()
        assert rig.members() == {a: "joined", b: "joined"}
        assert not any(e.code == "site_string_held" for e in rig.events), rig.story()
        assert wait_until(lambda: scada.read() and scada.joined() == [True, True], 30)
        assert scada.strings[1].V.cvalue is not None
        assert wait_until(lambda: (_site_ccl_a(rig) or 0) > alone_ccl, 30), rig.latest()
        assert wait_until(lambda: _outside_agrees(rig, scada, inverter), 20)
    finally:
        inverter.close()


def test_a_broker_restart_at_the_site_recovers_without_an_operator(
    site_rig: Callable[..., Rig], restartable_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    rig, scada, inverter = _start(site_rig, tmp_path)
    try:
        assert wait_until(lambda: _both_joined(rig), 90), rig.story()
        assert wait_until(lambda: scada.read() and scada.joined() == [True, True], 30)
        restartable_mosquitto.kill()
        # the inverter is told to stop within the staleness: no stale limit goes out
        assert wait_until(lambda: inverter.ccl_a() == 0, 20), inverter.latest
        restartable_mosquitto.start()
        # the masters open on the loss and recover once every module is back; the site
        # controller joins them again, and nobody is held out
        with rig.lock:
            rig.states.clear()
        assert wait_until(lambda: _both_joined(rig), 120), rig.story()
        assert not any(e.code == "site_string_held" for e in rig.events), rig.story()
        assert wait_until(lambda: scada.read() and scada.joined() == [True, True], 30)
        assert wait_until(lambda: (_site_ccl_a(rig) or 0) > 0, 60), rig.latest()
        assert wait_until(lambda: _outside_agrees(rig, scada, inverter), 20), inverter.latest
    finally:
        inverter.close()
