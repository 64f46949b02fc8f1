"""The Modbus gateway with independent clients: pysunspec2 (TCP and RTU), mbpoll, pymodbus."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType
from sunspec2.modbus import client as sunspec

from services.modbus_gateway.register_map import register_map
from shared.broker import MosquittoBroker, free_port, wait_for_port
from shared.bus import MqttBus
from shared.commands import CommandOutcome, CommandServer
from shared.config import SystemConfig
from shared.messages import (
    CellSnapshot,
    CommandArgs,
    ConfigAck,
    ConfigMessage,
    ContactorsArgs,
    ModuleCells,
    PackState,
)
from shared.settings import parse_mqtt_url
from shared.topics import CONFIG, CONFIG_ACK, PACK_CELLS, PACK_STATE
from tests.factories import limits
from tests.factories import pack_state as base_pack_state

from .agents import ServiceProcess, publish_config, wait_until

# A pty refuses parity settings (EINVAL), so the serial tests run 8N1; real RS-485 lines use
# the configured parity.

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")


def pack_state(soc: float | None = 63.4, stale_modules: list[int] | None = None) -> PackState:
    return base_pack_state(
        soc=soc, soh=97.0, voltage=30.2, current=-12.5, cell_v_min=3.71, cell_v_max=3.79,
        cell_v_avg=3.75, warnings=["cell_imbalance"], stale_modules=stale_modules or [],
        limits_=limits(charge_voltage_v=33.6, discharge_voltage_v=24.0, charge_current_a=50.0,
                       discharge_current_a=80.0),
    )  # fmt: skip


CELL_V = [3.71, 3.75, 3.76, 3.79, 3.74, 3.75, 3.73, 3.77, 3.72, 3.78, 3.70, 3.74]


def snapshot(modules: int, stale: frozenset[int] = frozenset()) -> CellSnapshot:
    """Four cells and two sensors per module; a stale module's channels are None in place."""
    return CellSnapshot(
        modules=[
            ModuleCells(
                module=m,
                fresh=m not in stale,
                cell_v=[None if m in stale else v for v in CELL_V[4 * m : 4 * m + 4]],
                cell_flags=[0] * 4,
                balancing=[False] * 4,
                temp_c=[None if m in stale else 25.0 + m for _ in range(2)],
                temp_flags=[0] * 2,
            )
            for m in range(modules)
        ]
    )


def gateway_config(
    system_id: str,
    *,
    tcp_port: int,
    rtu_port: str,
    modules: int = 2,
    parity: str = "N",
    tcp: bool = True,
    rtu: bool = True,
    version: int = 1,
) -> SystemConfig:
    """The Modbus interface as the wizard would set it in the system configuration."""
    base = SystemConfig.from_preset(
        "NMC", system_id=system_id, modules=modules, cells_per_module=4, config_version=version
    )
    data = base.model_dump(mode="json")
    data["interfaces"]["modbus"] = dict(
        tcp_enabled=tcp, tcp_host="127.0.0.1", tcp_port=tcp_port, rtu_enabled=rtu,
        rtu_port=rtu_port, rtu_baudrate=19200, rtu_parity=parity, rtu_stop_bits=1, unit_id=1,
    )  # fmt: skip
    return SystemConfig.model_validate(data)


class FakeMaster:
    """Publishes pack data like the master and answers commands, recording them."""

    def __init__(self, url: str, system: str, modules: int = 2) -> None:
        self.bus = MqttBus(parse_mqtt_url(url), system=system, service="master_core", kind="test")
        self.commands: list[tuple[str, CommandArgs]] = []
        self.refuse_close = True
        self.publishing = True
        self.soc: float | None = 63.4
        self.modules = modules
        self.stale: frozenset[int] = frozenset()
        self.acks: list[ConfigAck] = []
        self.bus.subscribe(CONFIG_ACK, lambda d: self.acks.append(d.message))

        def contactors(args: CommandArgs) -> CommandOutcome:
            self.commands.append(("contactors", args))
            assert isinstance(args, ContactorsArgs)
            if args.action == "close" and self.refuse_close:
                return CommandOutcome(False, "a fault is latched")
            return CommandOutcome(True)

        def other(name: str) -> Any:
            return lambda args: (self.commands.append((name, args)), CommandOutcome(True))[1]

        CommandServer(
            self.bus,
            {
                "contactors": contactors,
                "reset_faults": other("reset_faults"),
                "heartbeat": other("heartbeat"),
                "set_mode": other("set_mode"),
            },
        )
        self.stop = threading.Event()
        assert self.bus.start(wait_s=10)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            if self.publishing and n % 5 == 0:
                self.bus.publish(PACK_STATE, pack_state(self.soc, sorted(self.stale)))
                self.bus.publish(PACK_CELLS, snapshot(self.modules, self.stale))
            self.bus.process(0.02)
            n += 1

    def close(self) -> None:
        self.stop.set()
        self.bus.stop()


@pytest.fixture
def links(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A socat pty pair: (the gateway's end, the client's end)."""
    pair = tmp_path / "gw", tmp_path / "client"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={pair[0]}", f"pty,raw,echo=0,link={pair[1]}"],
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: pair[0].exists() and pair[1].exists(), 5)
    yield pair
    socat.kill()
    socat.wait()


@pytest.fixture
def gateway(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path, links: tuple[Path, Path]
) -> Iterator[dict[str, Any]]:
    port = free_port()
    config = gateway_config(system_id, tcp_port=port, rtu_port=str(links[0]))
    ui = publish_config(mosquitto.url, config)
    master = FakeMaster(mosquitto.url, system_id)
    # Every protocol parameter comes from the system configuration; nothing is overridden.
    proc = ServiceProcess("modbus_gateway", mosquitto.url, system_id, tmp_path, stale_after_s="1.5")
    wait_for_port("127.0.0.1", port, 15)
    yield dict(port=port, rtu=str(links[1]), master=master, proc=proc, config=config, ui=ui)
    proc.stop()
    master.close()
    ui.stop()


def test_pysunspec2_scans_and_reads_over_tcp(gateway: dict[str, Any]) -> None:
    d = sunspec.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=gateway["port"])
    try:
        time.sleep(0.5)
        d.scan()
        assert [m for m in d.models if isinstance(m, int)][:3] == [1, 802, 804]
        assert len(d.models[805]) == 2
        battery = d.models[802][0]
        battery.read()
        assert battery.SoC.cvalue == pytest.approx(63.4, abs=0.1)
        assert battery.SoH.cvalue == pytest.approx(97.0, abs=0.1)
        assert battery.V.cvalue == pytest.approx(30.2, abs=0.1)
        assert battery.A.cvalue == pytest.approx(-12.5, abs=0.1)
        assert battery.AChaMax.cvalue == pytest.approx(50.0, abs=0.1)
        assert battery.CellVMax.cvalue == pytest.approx(3.79, abs=0.001)
    finally:
        d.close()


def test_pysunspec2_and_mbpoll_over_rtu(gateway: dict[str, Any]) -> None:
    d = sunspec.SunSpecModbusClientDeviceRTU(
        slave_id=1, name=gateway["rtu"], baudrate=19200, parity="N", timeout=2
    )
    try:
        time.sleep(0.5)
        d.scan()
        battery = d.models[802][0]
        battery.read()
        assert battery.SoC.cvalue == pytest.approx(63.4, abs=0.1)
    finally:
        d.close()
    if shutil.which("mbpoll") is None:
        pytest.skip("mbpoll is not installed")
    out = subprocess.run(
        [
            "mbpoll",
            "-m",
            "rtu",
            "-a",
            "1",
            "-b",
            "19200",
            "-P",
            "none",
            "-t",
            "4:hex",
            "-r",
            "40001",
            "-c",
            "2",
            "-1",
            gateway["rtu"],
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0x5375" in out.stdout and "0x6E53" in out.stdout.upper().replace("0X", "0x")


def test_exceptions_and_commands(gateway: dict[str, Any]) -> None:
    master: FakeMaster = gateway["master"]
    client = ModbusTcpClient("127.0.0.1", port=gateway["port"], timeout=3)
    assert client.connect()
    try:
        time.sleep(0.5)
        base = 40000
        regs = client.read_holding_registers(base, count=2, device_id=1)
        assert regs.registers == [0x5375, 0x6E53]
        write_ro = client.write_register(base + 2, 7, device_id=1)  # the model id is read only
        assert write_ro.isError() and write_ro.exception_code == 2
        unmapped = client.read_holding_registers(30000, count=2, device_id=1)
        assert unmapped.isError() and unmapped.exception_code == 2
        setop = _point(gateway, 802, "SetOp")
        refused = client.write_register(setop, 1, device_id=1)  # connect, refused by the master
        assert refused.isError() and refused.exception_code == 4
        bad = client.write_register(setop, 7, device_id=1)
        assert bad.isError() and bad.exception_code == 3
        master.refuse_close = False
        ok = client.write_register(setop, 1, device_id=1)
        assert not ok.isError()
        assert [name for name, _ in master.commands][-2:] == ["contactors", "contactors"]
        alm = client.write_register(_point(gateway, 802, "AlmRst"), 1, device_id=1)
        assert not alm.isError() and master.commands[-1][0] == "reset_faults"
        hb = client.write_register(_point(gateway, 802, "CtrlHb"), 42, device_id=1)
        assert not hb.isError() and master.commands[-1][0] == "heartbeat"
        assert master.commands[-1][1].counter == 42  # type: ignore[attr-defined]
        mode = client.write_register(_native(gateway, "Mode"), 0, device_id=1)
        assert not mode.isError() and master.commands[-1][0] == "set_mode"
        assert master.commands[-1][1].mode == "standby"  # type: ignore[attr-defined]
        cells = client.read_holding_registers(_native(gateway, "CellV1"), count=8, device_id=1)
        assert cells.registers == [3710, 3750, 3760, 3790, 3740, 3750, 3730, 3770]
    finally:
        client.close()


def test_rtu_is_silent_for_other_unit_ids(gateway: dict[str, Any]) -> None:
    client = ModbusSerialClient(
        gateway["rtu"], framer=FramerType.RTU, baudrate=19200, parity="N", timeout=0.5, retries=0
    )
    assert client.connect()
    try:
        time.sleep(0.3)
        mine = client.read_holding_registers(40000, count=2, device_id=1)
        assert mine.registers == [0x5375, 0x6E53]
        from pymodbus.exceptions import ModbusIOException

        try:
            other = client.read_holding_registers(40000, count=2, device_id=7)
            assert other.isError()
        except ModbusIOException:
            pass  # no answer at all, as on a shared RS-485 line
        again = client.read_holding_registers(40000, count=2, device_id=1)
        assert again.registers == [0x5375, 0x6E53]
    finally:
        client.close()


def test_stale_data_reads_not_implemented(gateway: dict[str, Any]) -> None:
    master: FakeMaster = gateway["master"]
    soc = _point(gateway, 802, "SoC")
    client = ModbusTcpClient("127.0.0.1", port=gateway["port"], timeout=3)
    assert client.connect()
    try:
        assert wait_until(
            lambda: client.read_holding_registers(soc, count=1, device_id=1).registers[0] != 0xFFFF,
            5,
        )
        master.publishing = False
        assert wait_until(
            lambda: client.read_holding_registers(soc, count=1, device_id=1).registers[0] == 0xFFFF,
            5,
        )
        master.publishing = True
        assert wait_until(
            lambda: client.read_holding_registers(soc, count=1, device_id=1).registers[0] != 0xFFFF,
            5,
        )
    finally:
        client.close()


def _point(gateway: dict[str, Any], model: int, name: str) -> int:
    from services.modbus_gateway.register_map import register_map

    rmap = register_map(gateway["config"])
    return next(p.address for p in rmap.points if p.model == model and p.name == name)


def test_fuzzed_requests_never_crash_the_server(gateway: dict[str, Any]) -> None:
    """Random and malformed frames over TCP and RTU: answered or ignored, never fatal."""
    import random
    import socket

    rng = random.Random(1234)
    port = gateway["port"]
    for _ in range(120):
        size = rng.randint(0, 40)
        frame = bytes(rng.getrandbits(8) for _ in range(size))
        if rng.random() < 0.5 and size >= 8:  # a valid MBAP header around a random PDU
            pdu = frame[7:]
            frame = bytes([0, 1, 0, 0]) + (len(pdu) + 1).to_bytes(2, "big") + bytes([1]) + pdu
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(0.2)
            sock.sendall(frame)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                sock.recv(512)
    with open(gateway["rtu"], "wb", buffering=0) as tty:
        for _ in range(100):
            tty.write(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 30))))
    time.sleep(1.0)
    assert gateway["proc"].proc.poll() is None
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
    assert client.connect()
    try:
        assert client.read_holding_registers(40000, count=2, device_id=1).registers == [
            0x5375,
            0x6E53,
        ]
    finally:
        client.close()
    rtu = ModbusSerialClient(
        gateway["rtu"], framer=FramerType.RTU, baudrate=19200, timeout=1, retries=2
    )
    assert rtu.connect()
    try:
        assert rtu.read_holding_registers(40000, count=2, device_id=1).registers == [0x5375, 0x6E53]
    finally:
        rtu.close()


def test_broadcast_write_is_executed_without_a_reply(gateway: dict[str, Any]) -> None:
    master: FakeMaster = gateway["master"]
    client = ModbusSerialClient(
        gateway["rtu"], framer=FramerType.RTU, baudrate=19200, timeout=0.5, retries=0
    )
    assert client.connect()
    try:
        time.sleep(0.3)
        before = len(master.commands)
        client.write_register(
            _point(gateway, 802, "AlmRst"), 1, device_id=0, no_response_expected=True
        )
        assert wait_until(lambda: len(master.commands) > before, 5)
        assert master.commands[-1][0] == "reset_faults"
        assert client.read_holding_registers(40000, count=2, device_id=1).registers == [
            0x5375,
            0x6E53,
        ]
    finally:
        client.close()


def test_several_tcp_clients_at_once(gateway: dict[str, Any]) -> None:
    results: list[list[int]] = []

    def read() -> None:
        c = ModbusTcpClient("127.0.0.1", port=gateway["port"], timeout=3)
        assert c.connect()
        try:
            for _ in range(20):
                results.append(
                    c.read_holding_registers(40000, count=125, device_id=1).registers[:2]
                )
        finally:
            c.close()

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 80 and all(r == [0x5375, 0x6E53] for r in results)


def _native(gateway: dict[str, Any], name: str) -> int:
    from services.modbus_gateway.register_map import register_map

    rmap = register_map(gateway["config"])
    return next(p.address for p in rmap.points if p.block == "native" and p.name == name)


# --- item 8: bugs seen from outside -------------------------------------------------------------


def _standalone(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path, config: SystemConfig
) -> tuple[ServiceProcess, MqttBus]:
    """A gateway on `config`, with the same parameters as BMS_* settings too (an older gateway
    read only those), so each test states the behaviour whichever source is read."""
    m = config.interfaces.modbus
    ui = publish_config(mosquitto.url, config)
    proc = ServiceProcess(
        "modbus_gateway", mosquitto.url, system_id, tmp_path,
        tcp_enabled=str(m.tcp_enabled).lower(), tcp_host=m.tcp_host, tcp_port=str(m.tcp_port),
        rtu_port=m.rtu_port, rtu_baudrate=str(m.rtu_baudrate), rtu_parity=m.rtu_parity,
        unit_id=str(m.unit_id),
    )  # fmt: skip
    return proc, ui


def test_a_parity_the_port_refuses_stops_only_rtu(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path, links: tuple[Path, Path]
) -> None:
    """A pty refuses parity E (EINVAL), as some USB adapters do: TCP must go on serving."""
    port = free_port()
    config = gateway_config(system_id, tcp_port=port, rtu_port=str(links[0]), parity="E")
    proc, ui = _standalone(mosquitto, system_id, tmp_path, config)
    try:
        wait_for_port("127.0.0.1", port, 15)
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
        assert client.connect()
        try:
            assert wait_until(lambda: "parity E" in proc.log(), 10), proc.log()
            time.sleep(0.5)
            regs = client.read_holding_registers(40000, count=2, device_id=1)
            assert regs.registers == [0x5375, 0x6E53]
        finally:
            client.close()
        assert proc.proc.poll() is None, proc.log()
        line = next(x for x in proc.log().splitlines() if "parity E" in x)
        assert str(links[0]) in line
    finally:
        proc.stop()
        ui.stop()


def test_nothing_to_serve_exits_nonzero_naming_the_parity(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path, links: tuple[Path, Path]
) -> None:
    config = gateway_config(
        system_id, tcp_port=free_port(), rtu_port=str(links[0]), parity="E", tcp=False
    )
    proc, ui = _standalone(mosquitto, system_id, tmp_path, config)
    try:
        assert wait_until(lambda: proc.proc.poll() is not None, 20), proc.log()
        assert proc.proc.returncode != 0, proc.log()
        assert "parity E" in proc.log() and str(links[0]) in proc.log()
    finally:
        proc.stop()
        ui.stop()


def test_foreign_unit_ids_and_coils(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path, links: tuple[Path, Path]
) -> None:
    """RTU requests for other unit ids: no answer and no traceback. Coils and discrete inputs:
    exception 01 (illegal function), not 02."""
    port = free_port()
    config = gateway_config(system_id, tcp_port=port, rtu_port=str(links[0]))
    proc, ui = _standalone(mosquitto, system_id, tmp_path, config)
    rtu = ModbusSerialClient(
        str(links[1]), framer=FramerType.RTU, baudrate=19200, parity="N", timeout=0.5, retries=0
    )
    tcp = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
    try:
        wait_for_port("127.0.0.1", port, 15)
        assert rtu.connect() and tcp.connect()
        time.sleep(0.5)
        for _ in range(3):
            with contextlib.suppress(ModbusIOException):
                other = rtu.read_holding_registers(40000, count=2, device_id=7)
                assert other.isError()
        mine = rtu.read_holding_registers(40000, count=2, device_id=1)
        assert mine.registers == [0x5375, 0x6E53]
        time.sleep(0.3)
        assert "Traceback" not in proc.log(), proc.log()
        for read in (tcp.read_coils, tcp.read_discrete_inputs, rtu.read_coils):
            answer = read(40000, count=8, device_id=1)
            assert answer.isError() and answer.exception_code == 1, answer
        written = tcp.write_coil(40000, True, device_id=1)
        assert written.isError() and written.exception_code == 1
        assert "Traceback" not in proc.log(), proc.log()
    finally:
        rtu.close()
        tcp.close()
        proc.stop()
        ui.stop()


# --- unknown at start-up, live topology and interface changes --------------------------------


def _scan(port: int) -> Any:
    d = sunspec.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    d.scan()
    return d


def test_pysunspec2_reads_not_implemented_until_every_module_has_reported(
    gateway: dict[str, Any],
) -> None:
    master: FakeMaster = gateway["master"]
    master.soc, master.stale = None, frozenset({1})  # the estimator waits for module 2
    time.sleep(1.0)
    d = _scan(gateway["port"])
    try:
        battery = d.models[802][0]
        battery.read()
        assert battery.SoC.cvalue is None and battery.DoD.cvalue is None
        assert battery.Evt1.value & 1 == 1  # COMMUNICATION_ERROR
        assert battery.V.cvalue == pytest.approx(30.2, abs=0.1)  # what is known stays known
        first, second = d.models[805]
        first.read()
        second.read()
        cells = "lithium-ion-module-cell"
        assert first.groups[cells][0].CellV.cvalue == pytest.approx(3.71, abs=0.001)
        assert [c.CellV.cvalue for c in second.groups[cells]] == [None] * 4
        master.soc, master.stale = 63.4, frozenset()
        time.sleep(1.0)
        battery.read()
        second.read()
        assert battery.SoC.cvalue == pytest.approx(63.4, abs=0.1)
        assert battery.Evt1.value & 1 == 0
        assert second.groups[cells][0].CellV.cvalue == pytest.approx(3.74, abs=0.001)
    finally:
        d.close()


def test_a_topology_change_is_served_live(gateway: dict[str, Any]) -> None:
    master: FakeMaster = gateway["master"]
    ui: MqttBus = gateway["ui"]
    port = gateway["port"]
    old: SystemConfig = gateway["config"]
    new = gateway_config(
        old.system_id, tcp_port=port, rtu_port=old.interfaces.modbus.rtu_port, modules=3,
        version=2,
    )  # fmt: skip
    master.publishing = False  # the master has not applied the new topology yet
    ui.publish(CONFIG, ConfigMessage(config=new))
    assert wait_until(lambda: any(a.config_version == 2 for a in master.acks), 10)
    ack = next(a for a in master.acks if a.config_version == 2)
    assert ack.accepted, ack.errors
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
    assert client.connect()
    try:
        native = {p.name: p.address for p in register_map(new).points if p.block == "native"}
        head = client.read_holding_registers(1000, count=native["NTmp"] - 1000 + 1, device_id=1)
        regs = head.registers
        assert regs[native["NCell"] - 1000] == 12 and regs[native["NTmp"] - 1000] == 6
        assert regs[native["Stale"] - 1000] == 1
        assert regs[native["V"] - 1000] == 0xFFFF  # no old value in the new layout
        d = _scan(port)
        try:
            assert len(d.models[805]) == 3
            assert d.models[802][0].SoC.cvalue is None
        finally:
            d.close()
        master.modules, master.publishing = 3, True
        assert wait_until(
            lambda: client.read_holding_registers(native["Stale"], count=1).registers[0] == 0, 5
        )
        cells = client.read_holding_registers(native["CellV1"], count=12, device_id=1)
        assert cells.registers == [round(v * 1000) for v in CELL_V]
        d = _scan(port)
        try:
            third = d.models[805][2]
            assert third.groups["lithium-ion-module-cell"][0].CellV.cvalue == pytest.approx(3.72)
        finally:
            d.close()
    finally:
        client.close()


def test_a_new_tcp_port_is_served_live(gateway: dict[str, Any]) -> None:
    master: FakeMaster = gateway["master"]
    old: SystemConfig = gateway["config"]
    new_port = free_port()
    new = gateway_config(
        old.system_id, tcp_port=new_port, rtu_port=old.interfaces.modbus.rtu_port, version=3
    )
    gateway["ui"].publish(CONFIG, ConfigMessage(config=new))
    wait_for_port("127.0.0.1", new_port, 10)
    assert wait_until(lambda: any(a.config_version == 3 for a in master.acks), 10)
    ack = next(a for a in master.acks if a.config_version == 3)
    assert ack.accepted and ack.errors == []
    client = ModbusTcpClient("127.0.0.1", port=new_port, timeout=3)
    assert client.connect()
    try:
        assert client.read_holding_registers(40000, count=2).registers == [0x5375, 0x6E53]
    finally:
        client.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", gateway["port"]), 1):
        pass
    assert "Modbus TCP on 127.0.0.1:" + str(new_port) in gateway["proc"].log()


def test_new_rtu_parameters_are_served_live(gateway: dict[str, Any]) -> None:
    """The RTU server restarts in the gateway's process with the new unit id and baud rate."""
    master: FakeMaster = gateway["master"]
    old: SystemConfig = gateway["config"]
    data = old.model_dump(mode="json")
    data["config_version"] = 4
    data["interfaces"]["modbus"].update(unit_id=5, rtu_baudrate=9600)
    gateway["ui"].publish(CONFIG, ConfigMessage(config=SystemConfig.model_validate(data)))
    assert wait_until(lambda: any(a.config_version == 4 for a in master.acks), 10)
    ack = next(a for a in master.acks if a.config_version == 4)
    assert ack.accepted and ack.errors == []
    assert wait_until(lambda: "unit id 5" in gateway["proc"].log(), 5)
    client = ModbusSerialClient(
        gateway["rtu"], framer=FramerType.RTU, baudrate=9600, parity="N", timeout=0.5, retries=1
    )
    assert client.connect()
    try:
        time.sleep(0.3)
        assert client.read_holding_registers(40000, count=2, device_id=5).registers == [
            0x5375,
            0x6E53,
        ]
        with contextlib.suppress(ModbusIOException):
            assert client.read_holding_registers(40000, count=2, device_id=1).isError()
    finally:
        client.close()
    # The TCP server was not restarted.
    assert gateway["proc"].log().count("Modbus TCP on") == 1


def test_a_configured_port_that_a_host_setting_pins_is_said_and_kept(
    mosquitto: MosquittoBroker, system_id: str, tmp_path: Path
) -> None:
    """BMS_TCP_PORT overrides interfaces.modbus.tcp_port: a new configured port is accepted
    (nothing needs a restart), logged as pinned, and the override port keeps serving."""
    pinned_port, configured = free_port(), free_port()
    config = gateway_config(system_id, tcp_port=configured, rtu_port="/dev/null", rtu=False)
    ui = publish_config(mosquitto.url, config)
    acks: list[ConfigAck] = []
    ui.subscribe(CONFIG_ACK, lambda d: acks.append(d.message))
    proc = ServiceProcess(
        "modbus_gateway", mosquitto.url, system_id, tmp_path, tcp_port=str(pinned_port)
    )
    try:
        wait_for_port("127.0.0.1", pinned_port, 15)
        moved = config.model_copy(
            update={
                "config_version": 2,
                "interfaces": config.interfaces.model_copy(
                    update={
                        "modbus": config.interfaces.modbus.model_copy(
                            update={"tcp_port": free_port()}
                        )
                    }
                ),
            }
        )
        ui.publish(CONFIG, ConfigMessage(config=moved))
        assert wait_until(
            lambda: (ui.process(0.05), any(a.config_version == 2 for a in acks))[1], 10
        )
        ack = next(a for a in acks if a.config_version == 2)
        assert ack.accepted and ack.errors == [] and ack.restart_required == []
        assert wait_until(lambda: f"BMS_TCP_PORT={pinned_port} on this host keeps" in proc.log(), 5)
        client = ModbusTcpClient("127.0.0.1", port=pinned_port, timeout=3)
        assert client.connect()
        try:
            assert client.read_holding_registers(40000, count=2).registers == [0x5375, 0x6E53]
        finally:
            client.close()
    finally:
        proc.stop()
        ui.stop()


# --- replies the Modbus specification requires (raw requests and mbpoll) ----------------------


def _mbpoll(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mbpoll", "-1", "-o", "2", *args], capture_output=True, text=True, timeout=30
    )


def test_every_function_code_and_count_edge_on_the_running_gateway(
    gateway: dict[str, Any],
) -> None:
    """The service process as deployed: every function code 1–127 and the count edges over
    TCP and RTU get the reply the specification requires, nothing is logged with a
    traceback, and the log says each kind of refusal once."""
    from tests.modbus_gateway.test_wire import Wire, exc, expected_for_probe, read

    proc: ServiceProcess = gateway["proc"]
    wire = Wire(gateway["port"], gateway["rtu"])
    try:
        time.sleep(0.5)
        for ask in (wire.tcp, wire.rtu):
            replies = {fc: ask(bytes([fc, 0, 0, 0, 1])) for fc in range(1, 128)}
            assert {fc: r for fc, r in replies.items() if r != expected_for_probe(fc)} == {}
            for _ in range(20):  # a flood of the same bad requests
                for count, reply in ((0, exc(3, 3)), (126, exc(3, 3)), (0xFFFF, exc(4, 3))):
                    assert ask(read(3 if reply[0] == 0x83 else 4, 40000, count)) == reply
                assert ask(bytes.fromhex("08 0099 0000")) == exc(8, 1)
            assert ask(read(3, 40000, 125))[:2] == bytes([3, 250])
            assert ask(read(4, 40000, 1)) == bytes.fromhex("04 02 53 75")
            assert ask(bytes.fromhex("10 9c40 007c f8") + bytes(248)) == exc(16, 3)
            assert ask(bytes.fromhex("10 9c40 0000 00")) == exc(16, 3)
            assert ask(bytes.fromhex("10 9c40 0001 04 0001")) == exc(16, 3)
            assert ask(bytes([17])) == exc(17, 1)
    finally:
        wire.close()
    time.sleep(0.3)
    log = proc.log()
    assert "Traceback" not in log and "Unable to decode" not in log, log
    assert "Pymodbus" not in log
    refused = [line for line in log.splitlines() if "refused (" in line]
    # one line per interface, reason and function code: 127 - 4 unserved codes, plus the
    # quantity and length refusals of FC3, FC4 and FC16, on each interface
    assert 0 < len(refused) <= 2 * (123 + 6), "\n".join(refused[:20])
    assert proc.proc.poll() is None


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is not installed")
def test_mbpoll_sees_illegal_function_for_coils_and_report_server_id(
    gateway: dict[str, Any],
) -> None:
    """An independent client: coils (FC1) over TCP and Report Server ID (FC17, `mbpoll -u`)
    over RTU are illegal functions; input registers (FC4) read the map."""
    port = str(gateway["port"])
    coils = _mbpoll("-m", "tcp", "-p", port, "-a", "1", "-t", "0", "-r", "1", "127.0.0.1")
    assert "Illegal function" in coils.stdout + coils.stderr, coils.stdout + coils.stderr
    rtu = ["-m", "rtu", "-a", "1", "-b", "19200", "-P", "none"]
    ident = _mbpoll(*rtu, "-u", gateway["rtu"])
    out = ident.stdout + ident.stderr
    assert "Illegal function" in out and "Pymodbus" not in out, out
    regs = _mbpoll(*rtu, "-t", "3:hex", "-r", "40001", "-c", "2", gateway["rtu"])
    assert regs.returncode == 0 and "0x5375" in regs.stdout, regs.stdout + regs.stderr
