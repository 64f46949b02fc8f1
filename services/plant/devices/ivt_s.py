"""A simulated IVT-S (the plant's current sensor): encodes its result frames with cantools from
the driver's DBC and answers SET_MODE / SET_CONFIG_RESULT commands like the datasheet describes
(response id = command id | 0x80)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import can

from services.master_core.drivers.ivt_s import (
    COMMAND_ID,
    RESPONSE_FLAG,
    RESPONSE_ID,
    SET_CONFIG_RESULT,
    SET_MODE,
    Quantity,
    TriggerMode,
    decode_numbers,
    ivt_s_dbc,
    result_message,
)

log = logging.getLogger(__name__)


@dataclass
class SimulatedIvtS:
    """Result values in physical units, raised state bits and counters per quantity."""

    values: dict[Quantity, float] = field(default_factory=lambda: {q: 0.0 for q in Quantity})
    state_bits: dict[Quantity, set[str]] = field(default_factory=dict)
    counters: dict[Quantity, int] = field(default_factory=lambda: {q: 0 for q in Quantity})
    running: bool = True
    trigger: dict[Quantity, TriggerMode] = field(
        default_factory=lambda: {q: TriggerMode.CYCLIC for q in Quantity}
    )
    cycle_ms: dict[Quantity, int] = field(default_factory=dict)

    def frame(self, quantity: Quantity) -> tuple[int, bytes]:
        """The next result frame of `quantity` (advances its counter)."""
        bits = self.state_bits.get(quantity, set())
        signals = {
            "MuxID": quantity.value,
            "SystemError": int("SystemError" in bits),
            "MeasurementError": int("MeasurementError" in bits),
            "ChannelError": int("ChannelError" in bits),
            "OverCurrentDetected": int("OverCurrentDetected" in bits),
            "MsgCount": self.counters[quantity],
            "Value": self.values[quantity],
        }
        self.counters[quantity] = (self.counters[quantity] + 1) % 16
        data = result_message(quantity).encode(signals, strict=True)
        return quantity.frame_id, bytes(data)

    def round(self) -> list[tuple[int, bytes]]:
        """One cycle of every cyclic result, or nothing while stopped."""
        if not self.running:
            return []
        return [self.frame(q) for q in Quantity if self.trigger[q] is TriggerMode.CYCLIC]

    def command(self, data: bytes) -> tuple[int, bytes] | None:
        """Apply one command frame; the response frame, or None for a command it ignores."""
        signals = decode_numbers(ivt_s_dbc().get_message_by_frame_id(COMMAND_ID), data)
        command_id = int(signals["CommandID"])
        if command_id == SET_MODE:
            self.running = bool(signals["RunMode"])
        elif SET_CONFIG_RESULT <= command_id < SET_CONFIG_RESULT + 8 and not self.running:
            quantity = Quantity(command_id - SET_CONFIG_RESULT)
            name = quantity.dbc_name.removeprefix("IVT_Msg_Result_")
            self.trigger[quantity] = TriggerMode(int(signals[f"TriggerMode_{name}"]))
            self.cycle_ms[quantity] = int(signals[f"CycleTime_{name}"])
        else:
            return None
        response = ivt_s_dbc().get_message_by_frame_id(RESPONSE_ID)
        return RESPONSE_ID, bytes(response.encode({"ResponseID": command_id | RESPONSE_FLAG}))


def send(bus: can.BusABC, frames: list[tuple[int, bytes]]) -> None:
    for frame_id, data in frames:
        bus.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))


def serve_commands(bus: can.BusABC, sim: SimulatedIvtS, timeout_s: float) -> int:
    """Answer command frames arriving on `bus` within `timeout_s`; how many were applied."""
    applied = 0
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        msg = bus.recv(timeout=left)
        if msg is None or msg.arbitration_id != COMMAND_ID:
            continue
        response = sim.command(bytes(msg.data))
        if response is not None:
            applied += 1
            send(bus, [response])
    return applied


class IvtSCanDevice:
    """A `SimulatedIvtS` on a python-can bus, timed by the plant's clock (`tick(now_s)`).

    Each cyclic result goes out every `cycle_ms` of its own (SET_CONFIG_RESULT's cycle time once
    configured, `default_cycle_ms` before; a cycle time of 0 uses the default); command frames are
    answered on the next tick. `silent` stops every frame (a sensor that dropped off the bus).
    Power, charge and energy are computed from current and U1 like the sensor does.
    """

    def __init__(self, bus: can.BusABC, *, default_cycle_ms: int = 20) -> None:
        if default_cycle_ms < 1:
            raise ValueError(f"default_cycle_ms must be at least 1, got {default_cycle_ms}")
        self.bus = bus
        self.sim = SimulatedIvtS()
        self.default_cycle_ms = default_cycle_ms
        self.silent = False
        self.sent = 0
        self.send_errors = 0
        self.bad_commands = 0
        """Command frames that did not decode (ignored, as the sensor does)."""
        self._due_s: dict[Quantity, float] = {}
        self._last_s: float | None = None

    def _cycle_s(self, quantity: Quantity) -> float:
        return (self.sim.cycle_ms.get(quantity) or self.default_cycle_ms) / 1000.0

    def tick(self, now_s: float, current_a: float | None, u1_v: float, u2_v: float,
             u3_v: float, temperature_c: float) -> int:  # fmt: skip
        """Answer pending commands, update the values, send what is due; frames sent."""
        while (msg := self.bus.recv(timeout=0.0)) is not None:
            if msg.arbitration_id == COMMAND_ID and not msg.is_extended_id:
                try:
                    response = self.sim.command(bytes(msg.data))
                except (KeyError, ValueError):
                    # a malformed command: the real sensor ignores it too
                    self.bad_commands += 1
                    if self.bad_commands == 1:
                        log.warning("IVT-S: malformed command %s ignored (further ones counted)",
                                    bytes(msg.data).hex())  # fmt: skip
                    continue
                if response is not None:
                    self._send([response])
        values = self.sim.values
        dt_s = 0.0 if self._last_s is None else max(now_s - self._last_s, 0.0)
        self._last_s = now_s
        amps = current_a if current_a is not None else 0.0
        values[Quantity.CURRENT_A] = amps
        values[Quantity.U1_V] = u1_v
        values[Quantity.U2_V] = u2_v
        values[Quantity.U3_V] = u3_v
        values[Quantity.TEMPERATURE_C] = temperature_c
        values[Quantity.POWER_W] = amps * u1_v
        values[Quantity.CHARGE_AS] += amps * dt_s
        values[Quantity.ENERGY_WH] += amps * u1_v * dt_s / 3600.0
        if self.silent or current_a is None or not self.sim.running:
            return 0
        frames = []
        for q in Quantity:
            if self.sim.trigger[q] is not TriggerMode.CYCLIC:
                continue
            due = self._due_s.get(q)
            if due is None or now_s >= due:
                frames.append(self.sim.frame(q))
                # Next slot on the sensor's own grid; after a long gap, restart from now.
                nxt = (due if due is not None else now_s) + self._cycle_s(q)
                self._due_s[q] = nxt if nxt > now_s else now_s + self._cycle_s(q)
        self._send(frames)
        return len(frames)

    def _send(self, frames: list[tuple[int, bytes]]) -> None:
        for frame_id, data in frames:
            try:
                self.bus.send(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))
                self.sent += 1
            except can.CanError:
                self.send_errors += 1
