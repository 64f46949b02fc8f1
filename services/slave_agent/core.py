"""The slave agent's decisions, free of I/O: mode, string current, and safe balancing.

Balancing runs only on a fresh command from a master that is still talking, in working mode,
and never on a cell below the minimum voltage or in a module above the temperature limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.slave_agent.driver import ModuleReading
from shared.messages import BalanceCommand, PackState
from shared.messages.slave import SlaveMode


@dataclass(frozen=True)
class BalancingLimits:
    min_cell_voltage_v: float
    max_temperature_c: float
    active: bool
    master_silence_timeout_s: float


@dataclass
class _ModuleCommand:
    discharge: list[bool]
    charge: list[bool]
    expires_at: float


@dataclass(frozen=True)
class BalancingDecision:
    discharge: list[bool]
    charge: list[bool]
    reason: str
    """Why balancing is off or limited ('' when the command runs as given)."""

    @property
    def switched(self) -> list[bool]:
        """Cells with a balancing switch on, either way."""
        return [d or c for d, c in zip(self.discharge, self.charge, strict=True)]


@dataclass
class AgentCore:
    modules: dict[int, int]
    """Hosted module index -> cell count."""
    limits: BalancingLimits
    mode: SlaveMode = "working"
    string_current_a: float = 0.0
    master_seen_s: float | None = None
    _commands: dict[int, _ModuleCommand] = field(default_factory=dict)

    def on_pack_state(self, state: PackState, now_s: float) -> None:
        """Cells in series carry the string current, which flows only with contactors closed."""
        self.master_seen_s = now_s
        flowing = state.contactors in ("closed", "precharge") and state.current is not None
        self.string_current_a = state.current if flowing and state.current is not None else 0.0

    def on_mode(self, mode: SlaveMode, now_s: float) -> bool:
        """Returns True when the mode changed."""
        self.master_seen_s = now_s
        changed = mode != self.mode
        self.mode = mode
        if mode == "standby":
            self._commands.clear()
        return changed

    def on_balance(self, cmd: BalanceCommand, now_s: float) -> str | None:
        """Accept a balancing command, or say why not."""
        cells = self.modules.get(cmd.module)
        if cells is None:
            return f"module {cmd.module} is not hosted here"
        if now_s > cmd.expires_at:
            return f"expired {now_s - cmd.expires_at:.3f} s ago"
        if len(cmd.discharge) != cells or (cmd.charge and len(cmd.charge) != cells):
            return f"module {cmd.module} has {cells} cells, the command lists {len(cmd.discharge)}"
        if any(cmd.charge) and not self.limits.active:
            return "this module balances passively; it cannot charge cells"
        if self.mode == "standby":
            return "standby: balancing is off"
        self.master_seen_s = now_s
        charge = list(cmd.charge) if cmd.charge else [False] * cells
        self._commands[cmd.module] = _ModuleCommand(list(cmd.discharge), charge, cmd.expires_at)
        return None

    def master_silent(self, now_s: float) -> bool:
        if self.master_seen_s is None:
            return True
        return now_s - self.master_seen_s > self.limits.master_silence_timeout_s

    def balancing(self, module: int, reading: ModuleReading, now_s: float) -> BalancingDecision:
        """The switches to set for `module` now, given its latest reading."""
        cells = self.modules[module]
        off = [False] * cells
        cmd = self._commands.get(module)
        if cmd is None:
            return BalancingDecision(off, off, "no command")
        if self.mode == "standby":
            return BalancingDecision(off, off, "standby")
        if now_s > cmd.expires_at:
            del self._commands[module]
            return BalancingDecision(off, off, "command expired")
        if self.master_silent(now_s):
            return BalancingDecision(off, off, "master silent")
        if reading.temp_c and max(reading.temp_c) > self.limits.max_temperature_c:
            return BalancingDecision(off, off, "module too hot")
        min_mv = self.limits.min_cell_voltage_v * 1000.0
        low = [
            mv < min_mv or flags != 0
            for mv, flags in zip(reading.cell_mv, reading.cell_flags, strict=True)
        ]
        discharge = [d and not lo for d, lo in zip(cmd.discharge, low, strict=True)]
        reason = (
            "cells below minimum voltage or flagged are skipped"
            if discharge != cmd.discharge
            else ""
        )
        return BalancingDecision(discharge, list(cmd.charge), reason)
