"""`python -m services.slave_agent inject FAULT [options]`: fault injection from a shell.

`--module` and `--channel` count from 1, as people do (`--module 2 --channel 3` is "M2 · C3" in
the web application); the `SimControl` message carries the contract's 0-based indices, so the
conversion happens here, at the edge (`shared.numbering`).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import get_args

from services.slave_agent.sim.faults import DEFAULT_TARGET
from shared.bus.oneshot import publish_once
from shared.config import SystemConfig
from shared.endpoint import DEFAULT_MQTT_PROTOCOL
from shared.messages import SimControl
from shared.messages.sim import FaultKind
from shared.messages.slave import MAX_CELLS_PER_MODULE, MAX_MODULES, MAX_TEMPS_PER_MODULE
from shared.numbering import index_of, whole_number
from shared.settings import DEFAULT_MQTT_URL
from shared.topics import SIM_CONTROL

MODULE_HELP = "module number, 1-based (1 = the first module; default: every module)"
CHANNEL_HELP = (
    "cell or temperature sensor number within the module, 1-based (1 = its first cell, or "
    "its first sensor with --target temp); checked against the active configuration"
)

_NATURAL_TARGET: dict[str, str] = {str(k): v for k, v in DEFAULT_TARGET.items()}


@dataclass(frozen=True)
class Counts:
    """How far a person's module and channel numbers may go."""

    modules: int
    cells: tuple[int, ...]
    """Cells of each module."""
    temps: int
    """Temperature sensors of each module."""
    source: str
    """Where the counts come from, for the error message."""

    def cells_in(self, module: int | None) -> int:
        return max(self.cells) if module is None else self.cells[module]


CONTRACT = Counts(
    MAX_MODULES, (MAX_CELLS_PER_MODULE,) * MAX_MODULES, MAX_TEMPS_PER_MODULE, "the message contract"
)
"""All a tool knows without the system's configuration."""


def counts_of(config: SystemConfig) -> Counts:
    topology = config.topology
    cells = tuple(topology.cells_in_module(m) for m in range(topology.modules))
    return Counts(topology.modules, cells, topology.temp_sensors_per_module,
                  "the active configuration")  # fmt: skip


def add_place_arguments(parser: argparse.ArgumentParser, module_help: str = MODULE_HELP) -> None:
    """`--module` and `--channel`, 1-based, for both injection commands."""
    parser.add_argument("--module", type=whole_number("module"), help=module_help)
    parser.add_argument("--channel", type=whole_number("channel"), help=CHANNEL_HELP)


def place_indices(
    fault: str,
    module: int | None,
    channel: int | None,
    target: str | None,
    counts: Counts = CONTRACT,
) -> tuple[int | None, int | None]:
    """The contract's 0-based (module, channel) for a person's 1-based numbers (None stays
    None: every module, the fault's whole module); a ValueError naming the flag and the valid
    range. The channel counts cells, or temperature sensors when the fault targets them
    (`--target temp`, or the fault's natural target: `over_temperature` heats the cells
    behind a sensor)."""
    try:
        module_index = None if module is None else index_of(
            module, "module", counts.modules, counts.source
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"argument --module: {exc}") from None
    if channel is None:
        return module_index, None
    kind = target or _NATURAL_TARGET.get(fault, "cell")
    what, count = (
        ("temperature sensor", counts.temps)
        if kind == "temp"
        else ("cell", counts.cells_in(module_index))
    )
    try:
        return module_index, index_of(channel, what, count, counts.source)
    except ValueError as exc:
        raise ValueError(f"argument --channel: {exc}") from None


def inject_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.slave_agent inject",
        description="Inject a fault into the simulated battery of a running system. Modules "
        "and channels are 1-based, as the web application shows them (M2 · C3).",
    )
    parser.add_argument("fault", choices=[*get_args(FaultKind), "clear"])
    add_place_arguments(parser)
    parser.add_argument("--target", choices=("cell", "temp"), help="channel kind of sensor faults")
    parser.add_argument("--value", type=float,
                        help="V/s for cell_drift, °C target for temperatures, σ V for "
                             "noisy_channel, s for slow/late samples")  # fmt: skip
    parser.add_argument("--duration-s", type=float, help="end the fault after this long")
    parser.add_argument("--mqtt-url", default=os.environ.get("BMS_MQTT_URL", DEFAULT_MQTT_URL))
    parser.add_argument(
        "--mqtt-protocol", default=os.environ.get("BMS_MQTT_PROTOCOL", DEFAULT_MQTT_PROTOCOL)
    )
    parser.add_argument("--system", default=os.environ.get("BMS_SYSTEM", "demo"))
    args = parser.parse_args(argv)

    def control(config: SystemConfig | None) -> SimControl:
        counts = CONTRACT if config is None else counts_of(config)
        module, channel = place_indices(args.fault, args.module, args.channel, args.target, counts)
        return SimControl(
            fault=args.fault, module=module, channel=channel, target=args.target,
            value=args.value, duration_s=args.duration_s, expires_at=time.time() + 10,
        )  # fmt: skip

    try:
        control(None)  # the contract's limits, before looking for a broker
        if not publish_once(args.mqtt_url, args.system, args.mqtt_protocol, SIM_CONTROL, control):
            parser.exit(2, f"cannot reach the broker at {args.mqtt_url}\n")
    except ValueError as exc:
        parser.error(str(exc))
    print(f"injected {args.fault} into system {args.system}")
    return 0
