"""A simulated IVT-S (the plant's current sensor): encodes its result frames with cantools from
the driver's DBC and answers SET_MODE / SET_CONFIG_RESULT commands like the datasheet describes
(response id = command id | 0x80)."""

from __future__ import annotations

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
