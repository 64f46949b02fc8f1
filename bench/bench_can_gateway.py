"""CAN gateway timing: period jitter of the 1 s inverter frames, and the latency from a pack
state change to the next frame that carries it (0x35x profile, python-can virtual bus,
real mosquitto). Figures only: no pass/fail."""

from __future__ import annotations

import itertools
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import can  # noqa: E402

from services.can_gateway.codec import load_dbc  # noqa: E402
from services.can_gateway.service import CanGateway  # noqa: E402
from shared.broker import MosquittoBroker, find_mosquitto  # noqa: E402
from shared.bus import MqttBus  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.messages import ConfigMessage, Limits, PackState  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import CONFIG, PACK_STATE  # noqa: E402

CHANGES = 20


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def main() -> None:
    if find_mosquitto() is None:
        print("mosquitto not installed: skipped")
        return
    with MosquittoBroker() as broker:
        config = SystemConfig.from_preset("LFP", system_id="bench", modules=1, cells_per_module=16)
        url = parse_mqtt_url(broker.url)
        master = MqttBus(url, system="bench", service="master_core", kind="bench")
        master.start(wait_s=10)
        master.publish(CONFIG, ConfigMessage(config=config))
        channel = f"bench-{uuid.uuid4().hex[:6]}"
        bus = MqttBus(url, system="bench", service="can_gateway", kind="bench")
        gateway = CanGateway(bus, can.Bus(interface="virtual", channel=channel))
        bus.start(wait_s=10)
        stop = threading.Event()
        threading.Thread(target=gateway.run, args=(stop.is_set,), daemon=True).start()
        inverter = can.Bus(interface="virtual", channel=channel)
        db = load_dbc("victron_0x35x")
        soc = 50.0
        state = PackState(
            soc=soc,
            soh=99.0,
            voltage=52.0,
            current=0.0,
            contactors="closed",
            mode="working",
            cell_v_min=3.2,
            cell_v_max=3.3,
            cell_v_avg=3.25,
            limits=Limits(
                charge_voltage_v=55.2,
                discharge_voltage_v=44.8,
                charge_current_a=90,
                discharge_current_a=120,
            ),
        )
        arrivals: list[float] = []
        latencies: list[float] = []
        try:
            rng = random.Random(7)
            for i in range(CHANGES):
                time.sleep(rng.uniform(0.0, 1.0))  # changes land anywhere in the 1 s cycle
                soc = 20.0 + i
                changed = time.monotonic()
                master.publish(PACK_STATE, state.model_copy(update={"soc": soc}))
                deadline = changed + 3.0
                while time.monotonic() < deadline:
                    msg = inverter.recv(timeout=0.5)
                    if msg is None:
                        continue
                    if msg.arbitration_id == 0x351:
                        arrivals.append(msg.timestamp)  # stamped when sent
                    fresh = msg.arbitration_id == 0x355 and (
                        db.decode_message(0x355, msg.data)["StateOfCharge"] == round(soc)
                    )
                    if fresh:
                        latencies.append(time.monotonic() - changed)
                        break
        finally:
            stop.set()
            time.sleep(0.3)
            gateway.close()
            gateway.can.shutdown()
            inverter.shutdown()
            bus.stop()
            master.stop()
        periods = [b - a for a, b in itertools.pairwise(arrivals)]
        jitter_ms = [abs(p - 1.0) * 1000 for p in periods]
        print(f"CAN gateway, 0x35x profile on the virtual bus, {CHANGES} pack-state changes")
        print(
            f"  0x351 period: mean {statistics.mean(periods):.4f} s; jitter p50 "
            f"{pct(jitter_ms, 0.5):.1f} ms, p99 {pct(jitter_ms, 0.99):.1f} ms"
        )
        print(
            f"  pack state -> next 0x355 with it: p50 {pct(latencies, 0.5) * 1000:.0f} ms, "
            f"p99 {pct(latencies, 0.99) * 1000:.0f} ms (period 1 s)"
        )


if __name__ == "__main__":
    main()
