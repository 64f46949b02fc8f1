"""Full charges on request: the SOC gets an anchor before its counting error grows too large.

On a flat OCV curve (LFP's plateau) a rest gives no correction, so between anchors the SOC is
counted and its error grows with the time (issue 18: -18 % for 55 h before the first full
charge). `full_charge.interval_days` of the configuration (the preset's default: LFP 5 days,
other chemistries never) bounds that time: the master asks the inverter for a full charge.

The decision, each cycle (`FullChargeRequest.step`), as `requested`:
- None while the SOC is not estimated (the estimator has not started).
- False when no interval is configured: no full charge is ever asked for.
- False while a fault is active or the charge current limit is 0: the pack cannot take the
  charge, and a request the inverter cannot follow would only make it try.
- Otherwise by the age of the last anchor (`PackState.since_anchor_s`: a full charge, or an
  empty pack, each sets the SOC): True once it reaches the interval, False below. The anchor
  itself ends the request: its age starts again from 0.
- An unknown age (no anchor yet since commissioning, or a restart that could not tell how long
  it was down) is at least the time this master has estimated since without one: True once
  that reaches the interval, None before (the age is unknown, and may or may not be reached).

Events (`shared/event_codes.py`, code `full_charge_request`): raise when the request starts
(True after anything else), clear when it ends (True to False or None), the text saying why.
Pure: no clock or I/O, the time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.master_core.supervisor import SupervisorEvent
from shared.config import SystemConfig
from shared.messages.events import EventValue

DAY_S = 86_400.0
CODE = "full_charge_request"
"""The event code (written out where the events are built: the catalogue test reads them)."""


@dataclass(frozen=True)
class FullChargeInputs:
    estimating: bool
    """The estimator has started: the SOC is known."""
    since_anchor_s: float | None
    """Age of the last anchor (`PackEstimator.since_anchor_s`); None when unknown."""
    fault_active: bool
    charge_limit_a: float
    """The charge current limit the master publishes."""


@dataclass(frozen=True)
class FullChargeStatus:
    requested: bool | None
    reason: str
    """Why, in words (the event text)."""
    events: tuple[SupervisorEvent, ...] = ()


class FullChargeRequest:
    """The request, and its start and end as events (see the module docstring)."""

    def __init__(self, interval_s: float | None = None) -> None:
        self.interval_s = interval_s
        self.requested: bool | None = None
        self._unanchored_since_s: float | None = None
        """When the master first estimated without a known anchor age (None: it knows it)."""

    @staticmethod
    def interval_of(config: SystemConfig) -> float | None:
        days = config.full_charge.interval_days
        return None if days is None else days * DAY_S

    def configure(self, config: SystemConfig) -> None:
        """A new configuration's interval; the request's state carries over (a restart of the
        decision would end and start it again)."""
        self.interval_s = self.interval_of(config)

    def step(self, inputs: FullChargeInputs, now_s: float) -> FullChargeStatus:
        age_s = self._age_s(inputs, now_s)
        requested, reason = self._decide(inputs, age_s)
        before, self.requested = self.requested, requested
        values: dict[str, EventValue] = {"since_anchor_s": age_s, "interval_s": self.interval_s}
        events: tuple[SupervisorEvent, ...] = ()
        if requested is True and before is not True:
            text = f"full charge requested: {reason}"
            events = (SupervisorEvent("info", "raise", "full_charge_request", text, values),)
        elif before is True and requested is not True:
            text = f"full charge request ended: {reason}"
            events = (SupervisorEvent("info", "clear", "full_charge_request", text, values),)
        return FullChargeStatus(requested, reason, events)

    def _age_s(self, inputs: FullChargeInputs, now_s: float) -> float | None:
        """The anchor's age, or the lower bound of an unknown one; None before the SOC is
        estimated."""
        if not inputs.estimating:
            self._unanchored_since_s = None
            return None
        if inputs.since_anchor_s is not None:
            self._unanchored_since_s = None
            return inputs.since_anchor_s
        if self._unanchored_since_s is None:
            self._unanchored_since_s = now_s
        return max(now_s - self._unanchored_since_s, 0.0)

    def _decide(self, inputs: FullChargeInputs, age_s: float | None) -> tuple[bool | None, str]:
        interval = self.interval_s
        if not inputs.estimating:
            return None, "the SOC is not estimated yet"
        if interval is None:
            return False, "no full-charge interval is configured"
        if inputs.fault_active:
            return False, "a fault is active"
        if inputs.charge_limit_a <= 0.0:
            return False, "the charge current limit is 0 A"
        assert age_s is not None  # estimating
        days = f"{age_s / DAY_S:.1f} d"
        limit = f"{interval / DAY_S:g} d"
        if inputs.since_anchor_s is None:
            if age_s >= interval:
                return True, f"no anchor for at least {days} (interval {limit})"
            return None, f"no anchor known; {days} without one so far (interval {limit})"
        if age_s >= interval:
            return True, f"the last anchor is {days} old (interval {limit})"
        return False, f"the last anchor is {days} old, within the interval {limit}"
