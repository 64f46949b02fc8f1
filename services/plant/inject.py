"""`python -m services.plant inject FAULT [options]`: fault injection into a running plant.

Published on `sim/plant/control` (PLANT_CONTROL), the way the slave agent's `inject` publishes
on `sim/control`: the plant is an MQTT client anyway, so no extra socket or port is needed.
`--module` and `--channel` count from 1, as the web application does (M2 · C3); the
`PlantControl` message carries the contract's 0-based indices.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import get_args

from services.master_core.contactors import CONTACTORS
from services.slave_agent.inject import (
    CONTRACT,
    MODULE_HELP,
    add_place_arguments,
    counts_of,
    place_indices,
)
from shared.bus.oneshot import publish_once
from shared.config import SystemConfig
from shared.endpoint import DEFAULT_MQTT_PROTOCOL
from shared.messages import PlantControl
from shared.messages.sim import PLANT_CELL_FAULTS, PlantFaultKind
from shared.settings import DEFAULT_MQTT_URL
from shared.topics import PLANT_CONTROL

FAULTS = (*PLANT_CELL_FAULTS, *get_args(PlantFaultKind), "clear")


def inject_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.plant inject",
        description="Inject a fault into the running plant service of a system. Modules and "
        "channels are 1-based, as the web application shows them (M2 · C3).",
    )
    parser.add_argument("fault", choices=FAULTS)
    add_place_arguments(parser, f"{MODULE_HELP}; cell faults and board_dropout")
    parser.add_argument("--target", choices=("cell", "temp"), help="channel kind of sensor faults")
    parser.add_argument("--contactor", choices=CONTACTORS,
                        help="contactor_weld, feedback_stuck")  # fmt: skip
    parser.add_argument("--value", type=float,
                        help="V/s cell_drift, °C temperatures, σ V noisy_channel, A "
                             "current_offset, ohm insulation_fault, 1/0 feedback_stuck "
                             "closed/open")  # fmt: skip
    parser.add_argument("--duration-s", type=float, help="cell faults: end after this long")
    parser.add_argument("--mqtt-url", default=os.environ.get("BMS_MQTT_URL", DEFAULT_MQTT_URL))
    parser.add_argument(
        "--mqtt-protocol", default=os.environ.get("BMS_MQTT_PROTOCOL", DEFAULT_MQTT_PROTOCOL)
    )
    parser.add_argument("--system", default=os.environ.get("BMS_SYSTEM", "demo"))
    args = parser.parse_args(argv)

    def control(config: SystemConfig | None) -> PlantControl:
        counts = CONTRACT if config is None else counts_of(config)
        module, channel = place_indices(args.fault, args.module, args.channel, args.target, counts)
        return PlantControl(
            fault=args.fault, module=module, channel=channel, target=args.target,
            contactor=args.contactor, value=args.value, duration_s=args.duration_s,
            expires_at=time.time() + 10,
        )  # fmt: skip

    try:
        control(None)  # the contract's limits, before looking for a broker
        if not publish_once(args.mqtt_url, args.system, args.mqtt_protocol, PLANT_CONTROL, control):
            parser.exit(2, f"cannot reach the broker at {args.mqtt_url}\n")
    except ValueError as exc:
        parser.error(str(exc))
    print(f"injected {args.fault} into the plant of system {args.system}")
    return 0
