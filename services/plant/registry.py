"""The plant's devices: each one a thin adapter between `PlantCore` and a real wire protocol.

A device is made by a `DeviceFactory` from a `DeviceContext` and then ticked once per physics
step with the plant's state; it puts what arrives on the wire into the core (coils, balancing
switches) and serves the state back. Adding a device is one line in `DEVICE_FACTORIES`.

Every device sits where the system configuration puts it (the address the master reads):
the relay module at `contactors.io`, the IVT-S on `current_sensor.can`, the iso165C on
`insulation_monitor.can`. Each CAN device is a node of its own: it opens its own bus through
`context.can_bus(...)` (with udp_multicast or virtual, every bus on a channel sees the others'
frames, as nodes on one wire do); the context closes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import can

from services.can_gateway.service import protocol_options
from services.master_core.contactors import CONTACTORS
from services.plant.core import CoilState, PlantCore, PlantState
from services.plant.devices.boards import BoardServer
from services.plant.devices.inverter_can import InverterCan
from services.plant.devices.iso165c import Iso165cRunner, SimulatedIso165c
from services.plant.devices.ivt_s import IvtSCanDevice
from services.plant.devices.relay import RelayModule
from services.plant.inverter import SimulatedInverter
from services.plant.load_profiles import LoadProfile
from services.plant.settings import PlantSettings
from services.slave_agent.modbus_boot import load_board_map
from shared.can_bus import open_can
from shared.config import CanConfig, SystemConfig
from shared.config.devices import DeviceCanConfig

log = logging.getLogger("plant")


@runtime_checkable
class PlantDevice(Protocol):
    def tick(self, now_s: float, state: PlantState) -> None:
        """Serve `state`; feed the core what arrived on the wire."""
        ...

    def close(self) -> None: ...


def _open_can(interface: str, channel: str) -> can.BusABC:
    return open_can(interface, channel)


@dataclass
class DeviceContext:
    core: PlantCore
    settings: PlantSettings
    config: SystemConfig
    open_can: Callable[[str, str], can.BusABC] = field(default=_open_can)
    clock: Callable[[], float] = time.monotonic
    """The plant's clock (the one `tick` gets its `now_s` from)."""
    _buses: list[can.BusABC] = field(default_factory=list)

    def can_bus(self, where: DeviceCanConfig | CanConfig) -> can.BusABC:
        """A bus of its own on the configured interface and channel (closed by `close`)."""
        bus = self.open_can(where.interface, where.channel)
        self._buses.append(bus)
        return bus

    def close(self) -> None:
        for bus in self._buses:
            try:
                bus.shutdown()
            except Exception:
                log.exception("closing a CAN bus failed")
        self._buses.clear()


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
        port = io.tcp_port
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
    """The IVT-S current sensor on CAN (`devices/ivt_s.py`) at `current_sensor.can`."""

    def __init__(self, ctx: DeviceContext) -> None:
        bus = ctx.can_bus(ctx.config.current_sensor.can)
        self.device = IvtSCanDevice(bus, default_cycle_ms=ctx.settings.ivt_cycle_ms)

    def tick(self, now_s: float, state: PlantState) -> None:
        self.device.silent = state.sensed_current_a is None
        self.device.tick(
            now_s,
            state.sensed_current_a,
            state.sensed_string_voltage_v,
            state.link_voltage_v,
            state.u3_v,
            state.sensor_temperature_c,
        )

    def close(self) -> None:
        pass  # the bus belongs to the context


class Iso165c:
    """The Bender iso165C insulation monitor on CAN (`devices/iso165c.py`) at
    `insulation_monitor.can`, measuring the plant's insulation resistance (which the
    `insulation_fault` injection lowers). Nothing is served while the configuration names no
    iso165C (`insulation_monitor.driver`): the master would not read it."""

    def __init__(self, ctx: DeviceContext) -> None:
        self.runner: Iso165cRunner | None = None
        monitor = ctx.config.insulation_monitor
        if monitor.driver != "iso165c":
            log.info("iso165c: not served (insulation_monitor.driver is %s)", monitor.driver)
            return
        device = SimulatedIso165c(resistance_ohm=ctx.core.params.insulation_ohm)
        self.runner = Iso165cRunner(ctx.can_bus(monitor.can), device, clock=ctx.clock)
        self.runner.start()

    def tick(self, now_s: float, state: PlantState) -> None:
        if self.runner is None:
            return
        with self.runner.lock:
            self.runner.device.resistance_ohm = state.insulation_ohm
            self.runner.sending_info = not state.insulation_monitor_silent

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()  # the bus belongs to the context


DEVICE_FACTORIES: dict[str, DeviceFactory] = {
    "boards": Boards,
    "relay": Relay,
    "ivt_s": IvtS,
    "iso165c": Iso165c,
}
"""Name -> factory; `--devices` picks from these."""


class CanInverter:
    """The plant's inverter on the configured inverter bus (`interfaces.can`): a
    `SimulatedInverter` of the first configured profile reads the CAN gateway's frames with the
    gateway's DBCs and protocol options, sends that inverter's keep-alives or requests, and
    keeps the load profile's current within the limits it decoded (`services/plant/inverter.py`).

    The core asks it for the current on the plant's time (seconds since the core started); the
    frames are stamped on the same clock. It owns its bus: devices reopen without it.
    """

    def __init__(self, profile: LoadProfile, ctx: DeviceContext) -> None:
        cfg = ctx.config.interfaces.can
        if not cfg.enabled:
            log.warning("interfaces.can is disabled: the inverter hears no limits and draws 0 A")
        options = protocol_options(cfg, {})
        inverter = SimulatedInverter(cfg.profiles[0], profile, options=options)
        core = ctx.core
        self.bus = ctx.open_can(cfg.interface, cfg.channel)
        self.adapter = InverterCan(inverter, self.bus, clock=lambda: ctx.clock() - core.start_s)
        self.adapter.start()
        log.info("inverter: %s on %s %s", cfg.profiles[0], cfg.interface, cfg.channel)

    def current_a(
        self, t_s: float, *, soc_pct: float | None, cell_v_min: float, cell_v_max: float
    ) -> float:
        return self.adapter.current_a(
            t_s, soc_pct=soc_pct, cell_v_min=cell_v_min, cell_v_max=cell_v_max
        )

    def tick(self, now_s: float, state: PlantState) -> None:
        pass  # frames arrive on python-can's Notifier thread

    def close(self) -> None:
        self.adapter.stop()
        self.bus.shutdown()
