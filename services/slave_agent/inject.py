"""`python -m services.slave_agent inject FAULT [options]`: fault injection from a shell."""

from __future__ import annotations

import argparse
import os
import time
from typing import get_args

from shared.bus.oneshot import publish_once
from shared.messages import SimControl
from shared.messages.sim import FaultKind
from shared.settings import DEFAULT_MQTT_URL
from shared.topics import SIM_CONTROL


def inject_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.slave_agent inject",
        description="Inject a fault into the simulated battery of a running system.",
    )
    parser.add_argument("fault", choices=[*get_args(FaultKind), "clear"])
    parser.add_argument("--module", type=int, help="module index (default: every module)")
    parser.add_argument("--channel", type=int, help="cell or sensor channel within the module")
    parser.add_argument("--target", choices=("cell", "temp"), help="channel kind of sensor faults")
    parser.add_argument("--value", type=float,
                        help="V/s for cell_drift, °C target for temperatures, σ V for "
                             "noisy_channel, s for slow/late samples")  # fmt: skip
    parser.add_argument("--duration-s", type=float, help="end the fault after this long")
    parser.add_argument("--mqtt-url", default=os.environ.get("BMS_MQTT_URL", DEFAULT_MQTT_URL))
    parser.add_argument("--mqtt-protocol", default=os.environ.get("BMS_MQTT_PROTOCOL", "5"))
    parser.add_argument("--system", default=os.environ.get("BMS_SYSTEM", "demo"))
    args = parser.parse_args(argv)
    try:
        control = SimControl(
            fault=args.fault, module=args.module, channel=args.channel, target=args.target,
            value=args.value, duration_s=args.duration_s, expires_at=time.time() + 10,
        )  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    if not publish_once(args.mqtt_url, args.system, args.mqtt_protocol, SIM_CONTROL, control):
        parser.exit(2, f"cannot reach the broker at {args.mqtt_url}\n")
    print(f"injected {args.fault} into system {args.system}")
    return 0
