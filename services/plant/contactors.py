"""Simulated contactors, precharge resistor and DC-link capacitor: pure physics, time passed in.

Each contact follows its coil after an actuation time (`close_time_s` / `open_time_s`); a coil
that changes back before the contact moved cancels the move. The DC-link voltage is exact for
piecewise-constant topology (the interval is split where a contact moves):

* main negative and main positive closed: the link is the pack voltage (ideal source);
* main negative and precharge relay closed: RC charge through `precharge_resistor_ohm` into
  `dc_link_capacitance_f`, loaded by `load_ohm` if given (Thevenin source and R∥R_load);
* otherwise: discharge through `load_ohm`; with no load the capacitor holds its voltage.

Fault injection: `weld` (contact closed for good), `stuck_open` (contact open for good),
`precharge_short` (a short across the link: it never rises); `clear_faults` repairs all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.master_core.contactors import CONTACTORS, ContactorFeedback, ContactorName
from services.master_core.hardware import CoilCommands
from shared.config import ContactorConfig

__all__ = ["SimulatedContactors"]


@dataclass(slots=True)
class _Contact:
    coil: bool = False
    closed: bool = False
    move_at_s: float | None = None
    welded: bool = False
    stuck_open: bool = False

    @property
    def target(self) -> bool:
        return self.welded or (self.coil and not self.stuck_open)


class SimulatedContactors:
    """Main positive, main negative and precharge relay with the DC link behind them."""

    def __init__(
        self,
        config: ContactorConfig,
        *,
        close_time_s: float = 0.03,
        open_time_s: float = 0.02,
        load_ohm: float | None = None,
    ) -> None:
        if close_time_s < 0.0 or open_time_s < 0.0:
            raise ValueError("actuation times must not be negative")
        if load_ohm is not None and load_ohm <= 0.0:
            raise ValueError(f"load_ohm must be positive, got {load_ohm:g}")
        self._config = config
        self._close_time_s = close_time_s
        self._open_time_s = open_time_s
        self._load_ohm = load_ohm
        self._contacts: dict[ContactorName, _Contact] = {name: _Contact() for name in CONTACTORS}
        self._time_s = 0.0
        self._bus_v = 0.0
        self._shorted = False

    @property
    def time_s(self) -> float:
        """Simulated time since construction."""
        return self._time_s

    @property
    def bus_voltage_v(self) -> float:
        """DC-link (bus) voltage."""
        return self._bus_v

    @bus_voltage_v.setter
    def bus_voltage_v(self, value: float) -> None:
        # E.g. a link still charged by the inverter side.
        self._bus_v = 0.0 if self._shorted else value

    @property
    def feedback(self) -> ContactorFeedback:
        """Auxiliary contacts: the true positions."""
        c = self._contacts
        return ContactorFeedback(
            main_positive=c["main_positive"].closed,
            main_negative=c["main_negative"].closed,
            precharge=c["precharge"].closed,
        )

    # -- fault injection -----------------------------------------------------------------------

    def weld(self, contactor: ContactorName) -> None:
        """The contact is (and stays) closed whatever the coil does."""
        contact = self._contacts[contactor]
        contact.welded, contact.stuck_open = True, False
        contact.closed, contact.move_at_s = True, None

    def is_welded(self, contactor: ContactorName) -> bool:
        return self._contacts[contactor].welded

    def stuck_open(self, contactor: ContactorName) -> None:
        """The contact is (and stays) open whatever the coil does."""
        contact = self._contacts[contactor]
        contact.stuck_open, contact.welded = True, False
        contact.closed, contact.move_at_s = False, None

    def precharge_short(self) -> None:
        """A short across the DC link: the bus never rises."""
        self._shorted = True
        self._bus_v = 0.0

    def clear_faults(self) -> None:
        """Repair everything; contacts then follow their coils after the actuation time."""
        self._shorted = False
        for contact in self._contacts.values():
            contact.welded = contact.stuck_open = False
            self._schedule(contact)

    # -- physics -------------------------------------------------------------------------------

    def reconfigure(self, config: ContactorConfig) -> None:
        """New precharge resistor or DC-link capacitance; the contacts stay where they are."""
        self._config = config

    def step(self, dt_s: float, outputs: CoilCommands, pack_voltage_v: float) -> ContactorFeedback:
        """Apply the coil outputs at the start of the interval and advance `dt_s` seconds."""
        if dt_s < 0.0:
            raise ValueError(f"dt_s must not be negative, got {dt_s:g}")
        for name, contact in self._contacts.items():
            coil = outputs.commanded(name)
            if coil != contact.coil:
                contact.coil = coil
                self._schedule(contact)
        end_s = self._time_s + dt_s
        while True:
            moves = [c.move_at_s for c in self._contacts.values() if c.move_at_s is not None]
            at_s = min(moves, default=math.inf)
            if at_s > end_s:
                break
            self._advance_bus(max(at_s - self._time_s, 0.0), pack_voltage_v)
            self._time_s = max(self._time_s, at_s)
            for contact in self._contacts.values():
                if contact.move_at_s == at_s:
                    contact.closed, contact.move_at_s = contact.target, None
        self._advance_bus(end_s - self._time_s, pack_voltage_v)
        self._time_s = end_s
        return self.feedback

    def _schedule(self, contact: _Contact) -> None:
        if contact.target == contact.closed:
            contact.move_at_s = None
        else:
            delay = self._close_time_s if contact.target else self._open_time_s
            contact.move_at_s = self._time_s + delay

    def _advance_bus(self, dt_s: float, pack_v: float) -> None:
        if self._shorted:
            self._bus_v = 0.0
            return
        c = self._contacts
        negative = c["main_negative"].closed
        cap = self._config.dc_link_capacitance_f
        load = self._load_ohm
        if negative and c["main_positive"].closed:
            self._bus_v = pack_v
        elif negative and c["precharge"].closed:
            r_pre = self._config.precharge_resistor_ohm
            if load is None:
                v_final, r_eff = pack_v, r_pre
            else:
                v_final = pack_v * load / (r_pre + load)
                r_eff = r_pre * load / (r_pre + load)
            self._bus_v = v_final + (self._bus_v - v_final) * math.exp(-dt_s / (r_eff * cap))
        elif load is not None:
            self._bus_v *= math.exp(-dt_s / (load * cap))
