"""Receive cost of module telemetry on a real mosquitto: MQTT 3.1.1 against MQTT 5.

A publisher sends the telemetry of 14 modules (real `CellTelemetry` payloads, 14 cells and
4 sensors each) in bursts; a receiver in its own process (an `MqttBus`, as the master's)
takes them in with paho's network thread and dispatches them with `bus.process`, and reports
its process CPU time per message. Cases:

* `5, properties`: both ends MQTT 5, the publisher sets content type and message expiry on
  every message (the bus up to issue 19): paho parses them on every receive.
* `5, no properties`: both ends MQTT 5, no properties on the message.
* `3.1.1`: both ends MQTT 3.1.1 (no properties on the wire at all).
* `5 -> 3.1.1`: an MQTT 5 publisher with properties, a 3.1.1 receiver (the broker drops them).

`raw` receivers only count the bytes (paho's receive path alone); `decoded` ones decode and
dispatch to a handler as the master does. Prints figures; no pass/fail.
Usage: python bench/bench_bus_receive.py [messages]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.broker import MosquittoBroker, find_mosquitto  # noqa: E402
from shared.bus import MqttBus  # noqa: E402
from shared.endpoint import parse_mqtt_url  # noqa: E402
from shared.messages import CellTelemetry  # noqa: E402
from shared.topics import SLAVE_TELEMETRY  # noqa: E402

SYSTEM = "bench"
MODULES = 14
BURST = 140  # 1 s of a 14-module system at 10 Hz
CASES = (
    ("5, properties", "5", "5", True),
    ("5, no properties", "5", "5", False),
    ("3.1.1", "3.1.1", "3.1.1", False),
    ("5 -> 3.1.1", "5", "3.1.1", True),
)


def telemetry(module: int, seq: int) -> CellTelemetry:
    return CellTelemetry(
        module=module, mode="working", sample_ts=1.7e9 + seq / 10, cell_mv=[3300 + module] * 14,
        cell_flags=[0] * 14, balancing=[False] * 14, temp_c=[25.0] * 4, temp_flags=[0] * 4,
        overruns=0, seq=seq, boot_id="0123456789abcdef",
    )  # fmt: skip


def receive(url: str, protocol: str, mode: str, expected: int) -> None:
    """Child: take `expected` messages, print the CPU seconds spent from the first one."""
    bus = MqttBus(parse_mqtt_url(url), system=SYSTEM, service="receiver", kind="bench",
                  protocol=protocol, presence=False)  # fmt: skip
    got = [0]

    def count(*_args: Any) -> None:
        got[0] += 1

    if mode == "raw":
        bus.subscribe_raw(SLAVE_TELEMETRY.filter(SYSTEM), count)
    else:
        bus.subscribe(SLAVE_TELEMETRY, count)
    bus.start(wait_s=10.0)
    time.sleep(0.5)  # the subscription is in place
    print("ready", flush=True)
    cpu0: float | None = None
    deadline = time.monotonic() + 120.0
    while got[0] < expected and time.monotonic() < deadline:
        if bus.process(timeout_s=0.5) and cpu0 is None:
            cpu0 = time.process_time()
            got[0] = 1  # counted from the first message on
    cpu = time.process_time() - (cpu0 or 0.0)
    print(f"{got[0]} {cpu}", flush=True)
    bus.stop()


def run_case(url: str, pub_protocol: str, sub_protocol: str, props: bool, mode: str,
             messages: int) -> float:  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, __file__, "--receive", url, sub_protocol, mode, str(messages)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    pub = MqttBus(parse_mqtt_url(url), system=SYSTEM, service="publisher", kind="bench",
                  protocol=pub_protocol, presence=False)  # fmt: skip
    if not props:
        pub._properties = lambda _spec: None  # type: ignore[method-assign]
    pub.start(wait_s=10.0)
    payloads = [telemetry(m, 0) for m in range(MODULES)]
    sent = 0
    while sent < messages:
        for _ in range(BURST // MODULES):
            for m, msg in enumerate(payloads):
                pub.publish(SLAVE_TELEMETRY, msg, module=m)
                sent += 1
        time.sleep(0.02)  # bursts, so that the broker never drops QoS 0 for a slow reader
    out, _ = child.communicate(timeout=150)
    pub.stop()
    got, cpu = out.split()
    if int(got) < messages * 0.99:
        print(f"  (received {got} of {messages})")
    return float(cpu) / int(got) * 1e6


def main() -> None:
    if find_mosquitto() is None:
        sys.exit("needs mosquitto")
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(f"receive CPU per telemetry message, {messages} messages in bursts of {BURST}, "
          "mosquitto on loopback")  # fmt: skip
    with MosquittoBroker() as broker:
        for mode in ("raw", "decoded"):
            base = None
            for name, pub_p, sub_p, props in CASES:
                us = run_case(broker.url, pub_p, sub_p, props, mode, messages)
                base = base or us
                print(f"{mode:<8} {name:<18} {us:7.1f} us/message  ({us / base:4.2f} of the first)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--receive"]:
        receive(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
