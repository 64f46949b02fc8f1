"""Modbus gateway latency: a 125-register read over TCP with 1 and 8 concurrent clients,
next to the wire time of the same read over RTU at 115200 and 9600 baud.

The gateway runs as a real process on a real broker, fed pack data like the master does.
RTU wire time is computed from the frame sizes (a pty has no baud-rate timing).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pymodbus.client import ModbusTcpClient  # noqa: E402

from shared.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port  # noqa: E402
from shared.bus import MqttBus  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import ConfigMessage, Limits, PackState  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import CONFIG, PACK_STATE  # noqa: E402

READS_PER_CLIENT = 300
REGISTERS = 125


def rtu_wire_ms(baud: int, registers: int = REGISTERS) -> float:
    """Request (8 bytes) + response (5 + 2n bytes) at 11 bits a character (8E1), plus the
    3.5-character silence after each frame."""
    chars = 8 + 5 + 2 * registers + 2 * 3.5
    return 1000.0 * chars * 11 / baud


def clients(port: int, n: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        c = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        c.connect()
        mine = []
        for _ in range(READS_PER_CLIENT):
            t0 = time.perf_counter()
            rr = c.read_holding_registers(40000, count=REGISTERS, device_id=1)
            mine.append(time.perf_counter() - t0)
            assert not rr.isError()
        c.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def main() -> None:
    if find_mosquitto() is None:
        print("mosquitto not installed: skipped")
        return
    with MosquittoBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        config = SystemConfig.from_preset("NMC", system_id="bench", modules=14, cells_per_module=14)
        bus = MqttBus(
            parse_mqtt_url(broker.url), system="bench", service="master_core", kind="bench"
        )
        bus.start(wait_s=10)
        bus.publish(CONFIG, ConfigMessage(config=config))
        state = PackState(
            soc=55.0, soh=98.0, voltage=720.0, current=-40.0, contactors="closed", mode="working",
            cell_v_min=3.6, cell_v_max=3.7, cell_v_avg=3.65,
            limits=Limits(charge_voltage_v=800, discharge_voltage_v=600, charge_current_a=80,
                          discharge_current_a=80),
        )  # fmt: skip
        stop = threading.Event()

        def feed() -> None:
            while not stop.is_set():
                bus.publish(PACK_STATE, state)
                time.sleep(0.1)

        threading.Thread(target=feed, daemon=True).start()
        port = free_port()
        env = dict(os.environ, BMS_MQTT_URL=broker.url, BMS_SYSTEM="bench", PYTHONPATH=str(ROOT),
                   BMS_TCP_PORT=str(port), BMS_TCP_HOST="127.0.0.1")  # fmt: skip
        log = Path(tmp, "gateway.log")
        with log.open("wb") as out:
            gw = subprocess.Popen([sys.executable, "-m", "services.modbus_gateway"], cwd=ROOT,
                                  env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for_port("127.0.0.1", port, 20)
            time.sleep(1.0)
            print(f"Modbus TCP, {REGISTERS}-register read (FC3), 196-cell map")
            single_p50 = 0.0
            for n in (1, 8):
                lat = sorted(clients(port, n))
                p50 = statistics.median(lat) * 1000
                p99 = lat[int(0.99 * (len(lat) - 1))] * 1000
                single_p50 = single_p50 or p50
                print(f"  {n} client(s): p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({len(lat)} reads)")
            for baud in (115200, 9600):
                wire = rtu_wire_ms(baud)
                print(f"  RTU wire time at {baud:>6} baud: {wire:6.1f} ms, "
                      f"{wire / single_p50:5.0f} x the TCP p50 of one client")  # fmt: skip
        finally:
            stop.set()
            gw.terminate()
            gw.wait(10)
            bus.stop()


if __name__ == "__main__":
    main()
