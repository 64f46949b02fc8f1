"""The plant's devices: each one a thin adapter between `PlantCore` and a real wire protocol.

A device is made by a `DeviceFactory` from a `DeviceContext` and then ticked once per physics
step with the plant's state; it puts what arrives on the wire into the core (coils, balancing
switches) and serves the state back. Adding a device is one line in `DEVICE_FACTORIES`, e.g. a
simulated insulation monitor serving `state.insulation_ohm`:

    "iso165c": iso165c_device,

Devices on the IVT-S CAN bus share `context.can_bus()` (one socket per process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import can

from services.master_core.contactors import CONTACTORS
from services.plant.core import CoilState, PlantCore, PlantState
from services.plant.devices.boards import BoardServer
from services.plant.devices.ivt_s import IvtSCanDevice
from services.plant.devices.relay import RelayModule
from services.plant.settings import PlantSettings
from services.slave_agent.modbus_boot import load_board_map
from shared.config import SystemConfig

log = logging.getLogger("plant")


@runtime_checkable
class PlantDevice(Protocol):
    def tick(self, now_s: float, state: PlantState) -> None:
        """Serve `state`; feed the core what arrived on the wire."""
        ...

    def close(self) -> None: ...


@dataclass
class DeviceContext:
    core: PlantCore
    settings: PlantSettings
    config: SystemConfig
    open_can: Callable[[str, str], can.BusABC] = field(
        default=lambda interface, channel: can.Bus(interface=interface, channel=channel)
    )
    _can: can.BusABC | None = None

    def can_bus(self) -> can.BusABC:
        """The IVT-S CAN bus (opened on first use, shared by the devices on it)."""
        if self._can is None:
            s = self.settings
            self._can = self.open_can(s.ivt_can_interface, s.ivt_can_channel)
        return self._can

    def close(self) -> None:
        if self._can is not None:
            self._can.shutdown()
            self._can = None


DeviceFactory = Callable[[DeviceContext], PlantDevice]


class Boards:
    """Slave boards on Modbus TCP (`devices/boards.py`), refreshed every `board_period_s`."""

    def __init__(self, ctx: DeviceContext) -> None:
        s = ctx.settings
        self.core = ctx.core
        self.period_s = s.board_period_s
        board_map = load_board_map(s.board_map_file, ctx.config)
        counts = ctx.config.topology.module_cell_counts
        if counts is not None and set(counts) != {board_map.cell_count}:
            # The agent's Modbus driver reads one cell count from every board.
            raise ValueError(
                f"the boards' register map has {board_map.cell_count} cells per board; "
                f"modules with {sorted(set(counts))} cells cannot be served"
            )
        self.server = BoardServer(board_map, ctx.core.modules, s.modbus_host, s.boards_port)
        self._due_s: float | None = None
        self.balancing_errors = 0
        # Never serve zeros: a board shows a measurement from its first answer on.
        self.server.publish({m: self.core.read_board(m) for m in self.core.modules})

    def tick(self, now_s: float, state: PlantState) -> None:
        if self._due_s is not None and now_s < self._due_s:
            return
        self._due_s = now_s + self.period_s
        if state.silent_boards != self.server.silent:
            self.server.set_silent(state.silent_boards)
        readings = {m: self.core.read_board(m) for m in self.core.modules}
        for module, bits in self.server.publish(readings).items():
            try:
                self.core.set_balancing(module, bits)
            except ValueError as exc:
                self.balancing_errors += 1
                if self.balancing_errors == 1:
                    log.warning("balancing coils not applied: %s (further ones counted)", exc)

    def close(self) -> None:
        self.server.stop()


class Relay:
    """The relay module on Modbus TCP (`devices/relay.py`) at the `contactors.io` addresses:
    its coils drive the contactor physics, its inputs show the auxiliary contacts."""

    def __init__(self, ctx: DeviceContext) -> None:
        io = ctx.config.contactors.io
        self.core = ctx.core
        self.coil_of = {name: getattr(io, f"coil_{name}") for name in CONTACTORS}
        self.input_of = {name: getattr(io, f"input_{name}") for name in CONTACTORS}
        size = max([*self.coil_of.values(), *self.input_of.values()]) + 1
        self.module = RelayModule(unit=io.unit_id, size=max(size, 8), follow=False)
        port = ctx.settings.relay_port or io.tcp_port
        if io.transport != "tcp":
            log.warning(
                "contactors.io is Modbus %s; the plant serves the relay module on Modbus TCP "
                "only, at %s:%d", io.transport.upper(), ctx.settings.modbus_host, port,
            )  # fmt: skip
        try:
            self.module.start_tcp(port, ctx.settings.modbus_host)
        except BaseException:
            self.module.stop()
            raise

    def tick(self, now_s: float, state: PlantState) -> None:
        inputs = {self.input_of[name]: state.feedback[name] for name in CONTACTORS}
        coils = self.module.exchange(inputs)
        self.core.set_coils(CoilState(**{n: coils[a] for n, a in self.coil_of.items()}))

    def close(self) -> None:
        self.module.stop()


class IvtS:
    """The IVT-S current sensor on CAN (`devices/ivt_s.py`)."""

    def __init__(self, ctx: DeviceContext) -> None:
        self.device = IvtSCanDevice(ctx.can_bus(), default_cycle_ms=ctx.settings.ivt_cycle_ms)

    def tick(self, now_s: float, state: PlantState) -> None:
        self.device.silent = state.sensed_current_a is None
        self.device.tick(
            now_s,
            state.sensed_current_a,
            state.string_voltage_v,
            state.link_voltage_v,
            state.u3_v,
            state.sensor_temperature_c,
        )

    def close(self) -> None:
        pass  # the bus belongs to the context


DEVICE_FACTORIES: dict[str, DeviceFactory] = {
    "boards": Boards,
    "relay": Relay,
    "ivt_s": IvtS,
}
"""Name -> factory; `--devices` picks from these."""
