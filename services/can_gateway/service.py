"""The CAN gateway edge: periodic inverter frames from the pack state, keep-alive supervision.

Frames come from the pure profile code (`profiles.py`); this module only owns the CAN bus,
the timing and the events. Each frame id is sent once per period by python-can's cyclic
tasks, and a new pack state replaces the data of every task in one pass (`modify_data`), so
an inverter never sees a frame whose fields come from two different states.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Literal

import can

from services.can_gateway import native, pylon_hv
from services.can_gateway.profiles import frames_for, is_keepalive
from shared.bus import BusCore, Delivery
from shared.commands import CommandClient
from shared.config import SystemConfig
from shared.config_ack import acknowledge_config
from shared.messages import (
    COMMAND_ARGS,
    CellSnapshot,
    CommandReply,
    ConfigMessage,
    ContactorsArgs,
    Event,
    PackState,
    SetModeArgs,
)
from shared.topics import CONFIG, EVENTS, PACK_CELLS, PACK_STATE

log = logging.getLogger("can_gateway")

CYCLIC_PERIOD_S = {"victron_0x35x": 1.0, "pylon_v12": 1.0}
"""Inverter profiles send each frame once a second (never faster than 200 ms per id)."""
MIN_PERIOD_S = 0.2
NATIVE_PACK_PERIOD_S = 0.1
"""The native profile is for supervisory controllers: pack values every 100 ms."""
NATIVE_CELLS_PER_CYCLE = 18
"""Cell and temperature groups sent per 100 ms cycle: every cell about once a second."""
COMMAND_TTL_S = 2.0


class CanGateway:
    def __init__(
        self,
        bus: BusCore,
        can_bus: can.BusABC,
        *,
        stale_after_s: float = 3.0,
        keepalive_timeout_s: float = 600.0,
        hv_byte_order: Literal["little", "big"] = "little",
        hv_current_offset_a: float = 3000.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.can = can_bus
        self.stale_after_s = stale_after_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.hv_byte_order: Literal["little", "big"] = hv_byte_order
        self.hv_current_offset_a = hv_current_offset_a
        self.monotonic = monotonic
        self.config: SystemConfig | None = None
        self.pack: PackState | None = None
        self.pack_s: float | None = None
        self.tasks: dict[int, can.broadcastmanager.CyclicSendTaskABC] = {}
        self.started_s = monotonic()
        self.keepalive_s: float | None = None
        self.keepalive_lost = False
        self._lock = threading.Lock()
        self.cells: CellSnapshot | None = None
        self._cell_cursor = 0
        self._commands: queue.SimpleQueue[native.NativeCommand | native.NativeCommandError] = (
            queue.SimpleQueue()
        )
        self._hv_requests: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._hv_commands: queue.SimpleQueue[pylon_hv.InverterCommand] = queue.SimpleQueue()
        self.client = CommandClient(bus)
        bus.subscribe(CONFIG, self._on_config)
        bus.subscribe(PACK_STATE, self._on_pack)
        bus.subscribe(PACK_CELLS, self._on_cells)
        self.notifier = can.Notifier(can_bus, [self._on_frame])

    def _on_config(self, d: Delivery[ConfigMessage]) -> None:
        config = d.message.config
        if config.system_id != self.bus.system:
            errors = [f"configuration is for system {config.system_id!r}, not {self.bus.system!r}"]
            acknowledge_config(self.bus, config.config_version, errors)
            return
        self.apply_config(config)
        acknowledge_config(self.bus, config.config_version)

    def apply_config(self, config: SystemConfig) -> None:
        self.config = config
        unknown = [p for p in self.config.interfaces.can.profiles if p not in CYCLIC_PERIOD_S]
        if unknown:
            log.warning("profiles %s are not served by this gateway", unknown)

    def _on_pack(self, d: Delivery[PackState]) -> None:
        self.pack, self.pack_s = d.message, self.monotonic()

    def _on_cells(self, d: Delivery[CellSnapshot]) -> None:
        self.cells = d.message

    def _on_frame(self, msg: can.Message) -> None:
        """CAN receive thread: note keep-alives, queue commands, never block."""
        data = bytes(msg.data)
        if len(data) > 8 or msg.is_error_frame or msg.is_remote_frame:
            self.bus.counters["can_frames_refused"] += 1  # CAN FD, error or remote: not ours
            return
        if is_keepalive(msg.arbitration_id, data):
            self.keepalive_s = self.monotonic()
        elif msg.arbitration_id == pylon_hv.REQUEST_ID and "pylon_hv" in self.profiles():
            self.keepalive_s = self.monotonic()  # an HV inverter shows it is alive by asking
            self._hv_requests.put(data)
        elif msg.arbitration_id in (pylon_hv.SLEEP_WAKE_ID, pylon_hv.RELAY_ID):
            if "pylon_hv" in self.profiles():
                wish = pylon_hv.decode_command(msg.arbitration_id, data)
                if wish is not None:
                    self._hv_commands.put(wish)
        elif msg.arbitration_id == native.COMMAND_ID and "native" in self.profiles():
            try:
                command = native.decode_command(msg.arbitration_id, data)
            except native.NativeCommandError as err:
                self._commands.put(err)
                return
            if command is not None:
                self._commands.put(command)
        else:
            self.bus.counters["can_frames_ignored"] += 1

    @property
    def stale(self) -> bool:
        return self.pack_s is None or self.monotonic() - self.pack_s > self.stale_after_s

    def profiles(self) -> list[str]:
        if self.config is None or not self.config.interfaces.can.enabled:
            return []
        served = {*CYCLIC_PERIOD_S, "native", "pylon_hv"}
        return [p for p in self.config.interfaces.can.profiles if p in served]

    def refresh(self) -> None:
        """Rebuild every frame from the latest state and hand it to the cyclic tasks."""
        if self.config is None:
            return
        stale = self.stale
        wanted: dict[int, tuple[bytes, float]] = {}
        for profile in self.profiles():
            if profile == "native":
                limits_v = (self.config.charge_pack_voltage_v, self.config.discharge_pack_voltage_v)
                frames = native.pack_frames(self.pack, stale=stale, voltage_limits_v=limits_v)
                for frame_id, data in frames:
                    wanted[frame_id] = (data, NATIVE_PACK_PERIOD_S)
                continue
            if profile not in CYCLIC_PERIOD_S:
                continue  # request-driven (pylon_hv): answered in answer_hv_requests
            period = max(MIN_PERIOD_S, CYCLIC_PERIOD_S[profile])
            for frame_id, data in frames_for(profile, self.pack, stale=stale, config=self.config):
                wanted[frame_id] = (data, period)
        with self._lock:
            for frame_id in list(self.tasks):
                if frame_id not in wanted:  # e.g. measurements are withheld while stale
                    self.tasks.pop(frame_id).stop()
            for frame_id, (data, period) in wanted.items():
                msg = can.Message(
                    arbitration_id=frame_id, data=data, is_extended_id=frame_id > 0x7FF
                )
                task = self.tasks.get(frame_id)
                if task is None:
                    self.tasks[frame_id] = self.can.send_periodic(msg, period)
                else:
                    task.modify_data(msg)  # type: ignore[attr-defined]

    def send_cells(self) -> None:
        """Native profile: a slice of the multiplexed cell frames each cycle."""
        if self.cells is None or "native" not in self.profiles() or self.stale:
            return
        frames = native.cell_frames(self.cells)
        for _ in range(min(NATIVE_CELLS_PER_CYCLE, len(frames))):
            frame_id, data = frames[self._cell_cursor % len(frames)]
            self._cell_cursor += 1
            self.can.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))

    def handle_commands(self) -> None:
        """Native commands become master commands; the ack follows the master's reply."""
        while True:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, native.NativeCommandError):
                self.bus.counters["can_commands_refused"] += 1
                log.warning("CAN command refused: %s", item)
                if item.counter is not None:
                    self._ack(item.counter, False, item.reason)
                continue
            counter = item.counter
            if self.stale:
                self._ack(counter, False, native.AckReason.STALE)
                continue

            def replied(reply: CommandReply | None, counter: int = counter) -> None:
                if reply is None:
                    self._ack(counter, False, native.AckReason.TIMEOUT)
                else:
                    ok = reply.status == "accepted"
                    self._ack(
                        counter,
                        ok,
                        native.AckReason.NONE if ok else native.AckReason.REFUSED_BY_MASTER,
                    )

            args = COMMAND_ARGS[item.command].model_validate(item.args)
            self.client.send(item.command, args, ttl_s=COMMAND_TTL_S, on_reply=replied)

    def answer_hv_requests(self) -> None:
        """Pylontech HV is request-driven: each 0x4200 gets its response frames."""
        assert self.config is not None
        while True:
            try:
                request = self._hv_requests.get_nowait()
            except queue.Empty:
                break
            frames = pylon_hv.responses_for(
                request, self.pack, stale=self.stale, config=self.config
            )
            for frame_id, data in frames:
                self.can.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=True))
        while True:
            try:
                command = self._hv_commands.get_nowait()
            except queue.Empty:
                return
            # sleep/wake and relay requests are the inverter's wishes; the master decides
            if command.sleep is not None:
                mode = SetModeArgs(mode="standby" if command.sleep else "working")
                self.client.send("set_mode", mode, ttl_s=COMMAND_TTL_S)
            if command.close_charge_relay is not None or command.close_discharge_relay is not None:
                close = bool(command.close_charge_relay or command.close_discharge_relay)
                action = ContactorsArgs(action="close" if close else "open")
                self.client.send("contactors", action, ttl_s=COMMAND_TTL_S)

    def _ack(self, counter: int, accepted: bool, reason: int) -> None:
        frame_id, data = native.ack_frame(counter, accepted, reason)
        self.can.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))

    def supervise(self) -> None:
        now = self.monotonic()
        last = self.keepalive_s if self.keepalive_s is not None else self.started_s
        inverters = [p for p in self.profiles() if p != "native"]
        lost = bool(inverters) and now - last > self.keepalive_timeout_s
        if lost != self.keepalive_lost:
            self.keepalive_lost = lost
            code = "inverter_keepalive_lost"
            if lost:
                log.warning("no inverter keep-alive (0x305/0x307) for %.0f s", now - last)
                self.bus.publish(
                    EVENTS,
                    Event(
                        level="warning",
                        kind="raise",
                        code=code,
                        text="no inverter keep-alive (0x305/0x307)",
                    ),
                )
            else:
                log.info("inverter keep-alive back")
                self.bus.publish(
                    EVENTS,
                    Event(
                        level="warning", kind="clear", code=code, text="inverter keep-alive back"
                    ),
                )

    def run(self, should_stop: Callable[[], bool], period_s: float = 0.1) -> None:
        while not should_stop():
            self.bus.process(timeout_s=period_s)
            try:
                self.refresh()
                self.send_cells()
                if self.config is not None:
                    self.answer_hv_requests()
                self.handle_commands()
                self.client.expire()
                self.supervise()
            except Exception:  # a bad state must not stop the fail-safe frames
                self.bus.counters["cycle_errors"] += 1
                log.exception("CAN cycle failed")

    def close(self) -> None:
        self.notifier.stop()
        with self._lock:
            for task in self.tasks.values():
                task.stop()
            self.tasks.clear()
