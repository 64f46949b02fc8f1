"""The master's decisions as one pure step: `Supervisor.step(inputs, now) -> outputs`.

No I/O, no clock: the service loop gathers the inputs (pack snapshot, the hardware reading,
the SOC), calls `step`, and carries out the outputs (coils to the relay module, limits and
state to the bus, events to the log). Commands are pure calls too (`close`, `open`, `reset`,
`set_mode`, `heartbeat`), each answering with its outcome; their events come out of the next
`drain_events`.

What is decided here, and nowhere else:

* trips: protection faults, and loss of module communication (`comm_supervision`); the
  telemetry codes are judged in sample time (`SupervisorInputs.sample_time_s`), so the step
  of the sample that completes a delay is the step that trips and drops the coils;
* the contactor sequence and its coils (`contactors`); coils are all off in the same step as
  a trip, and never on while a fault latches (the state machine's own rule);
* auto-close: at start-up once every module reported, back in working mode, and after the
  reset of a trip; never after an operator's open, which holds until a close command;
* resets: a protection reset, then the contactor state machine's own reset once the fault is
  released and the contacts read open; the automatic recovery from a communication loss
  (`comm_recovery`), limited per hour;
* heartbeat loss of the controller: limits fall back to 0 A;
* the start-up and mode-switch graces (`comm_supervision`), and the current sensor's start-up
  grace: a sensor not heard from since the master started is unknown (nothing closes) for
  `CURRENT_SENSOR_START_GRACE_S`, then failed; once it has answered, every lost reading counts
  (current_sensor_failure after its own delay). A master that boots before its sensor (they
  power up together; the master configures the sensor once it answers) latches nothing.

A configuration is adopted in two steps: `prepare(config)` builds its decisions, so the
caller can restore latched faults into them (and refuse the configuration when that fails)
before `adopt` switches over, keeping the contactors where layout and sequence are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from services.master_core.comm_recovery import BrokerOutages, CommLossRecovery
from services.master_core.comm_supervision import (
    CommSupervision,
    CommSupervisionConfig,
    ModuleStatus,
)
from services.master_core.contactors import ContactorOutputs, ContactorStateMachine
from services.master_core.current_calibration import CurrentCalibration
from services.master_core.hardware import (
    CONTACTOR_IO,
    CURRENT_SENSOR,
    INSULATION_MONITOR,
    HardwareReading,
)
from services.master_core.limits import LimitCalculator, LimitInputs
from services.master_core.pack import PackSnapshot
from services.master_core.plausibility import (
    ModuleVectors,
    PlausibilityChecks,
    PlausibilityFacts,
    PlausibilityValues,
)
from services.master_core.protection import (
    Protection,
    ProtectionResult,
    ResetResult,
    Transition,
)
from services.master_core.protection_inputs import ProtectionInputs
from shared.alarm_words import place_of
from shared.config import SystemConfig
from shared.messages import CellLocation, Limits
from shared.messages.events import EventKind, EventLevel
from shared.messages.pack import ContactorState
from shared.messages.slave import SlaveMode
from shared.numbering import number_of
from shared.protection_codes import spec_of

EventValue = str | int | float | bool | None


@dataclass(frozen=True)
class SupervisorEvent:
    """One line for the event log."""

    level: EventLevel
    kind: EventKind
    code: str
    text: str
    values: dict[str, EventValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SupervisorInputs:
    snapshot: PackSnapshot
    modules: ModuleStatus
    """Module freshness, from `module_status(now)` before the snapshot was taken."""
    reading: HardwareReading
    """Raw, as the hardware gave it (the calibration is applied here)."""
    soc_pct: float | None
    broker_connected: bool = True
    """The master's own broker connection (a loss it explains is named as the cause)."""
    sample_time_s: float | None = None
    """When the newest slave sample in the snapshot was taken, on the step's clock: the
    telemetry codes count their delays in this time (`ProtectionInputs.sample_time_s`), so the
    trip, and the coils off, come in the step of the sample that completes the delay."""


@dataclass(frozen=True)
class SupervisorOutputs:
    coils: ContactorOutputs
    limits: Limits
    protection: ProtectionResult
    current_a: float | None
    """Calibrated pack current."""
    pack_voltage_v: float | None
    link_voltage_v: float | None
    plausibility: PlausibilityValues
    stale: bool
    """Supervision incomplete (stale modules or a lost controller heartbeat)."""
    latches_changed: bool
    """A fault latched this step: the caller persists the latches at once."""
    events: tuple[SupervisorEvent, ...]


@dataclass(frozen=True)
class Judgement:
    """What `Supervisor.judge_sample` decided on a fresh sample."""

    protection: ProtectionResult
    tripped: ContactorOutputs | None
    """The coils after a trip this judgement caused (all off); None when nothing tripped."""
    latches_changed: bool
    """A fault latched: the caller persists the latches at once."""
    events: tuple[SupervisorEvent, ...]

    @property
    def changed(self) -> bool:
        """A level was raised or cleared (the caller publishes at once)."""
        return bool(self.protection.transitions)


@dataclass
class Decisions:
    """Everything built from one configuration."""

    config: SystemConfig
    protection: Protection
    contactors: ContactorStateMachine
    limits: LimitCalculator
    calibration: CurrentCalibration
    plausibility: PlausibilityChecks


CURRENT_SENSOR_START_GRACE_S = 10.0
"""How long a current sensor that has not answered since the master started is waited for
(contactors open, current unknown) before current_sensor_failure counts: a sensor powered up
with the master needs its boot and the master's configuration (the IVT-S's cyclic results
start once the master has set them up, about a second). A sensor that never answers still
latches the fault, ten seconds after the start."""
NO_CURRENT_SENSOR_YET = "the current sensor has not answered yet: the current is not supervised"


def unsupervised(stale_modules: tuple[int, ...]) -> str:
    """Why a close is refused while modules are stale (0-based indices; the text numbers them
    from 1, as people count: index 2 is "module 3")."""
    which = ", ".join(str(number_of(m)) for m in stale_modules)
    verb = "module {} has" if len(stale_modules) == 1 else "modules {} have"
    return f"{verb.format(which)} not reported: the pack is not fully supervised"


def _nan_if_unknown(value_v: float | None) -> float:
    return math.nan if value_v is None else value_v


def _evidence(code: str, checks: PlausibilityValues | None) -> str:
    """Where a plausibility fault is: the stuck channels ("M1 · C4", "M2 · T1": numbered from
    1 for people), or why the precharge failed."""
    if checks is None:
        return ""
    stuck = {
        "stuck_cell_voltage_channel": checks.stuck_cell_voltage_channels,
        "stuck_temperature_channel": checks.stuck_temperature_channels,
    }.get(code)
    if stuck:
        sensor = code == "stuck_temperature_channel"
        places = (
            place_of(CellLocation(module=m, index=c), sensor=sensor)[0] for m, c in sorted(stuck)
        )
        return "; channels " + ", ".join(places)
    if code == "precharge_failure" and checks.precharge_reason:
        return f"; {checks.precharge_reason}"
    return ""


JUDGED_BEYOND_RANGE_AT: dict[str, str] = {
    "cell_overvoltage": "cell_v_above_range_at",
    "cell_undervoltage": "cell_v_below_range_at",
}
"""Codes that judge a reading beyond the measurement range before the measured extreme
(`protection_inputs`): that cell is the place of the value judged."""


def _where(code: str, snap: PackSnapshot | None) -> dict[str, EventValue]:
    """The cell or sensor (0-based, as the contract) holding the extreme value the code judged
    when it was raised: later readings may move the extreme (the cell leaves its range)."""
    spec = spec_of(code)
    if snap is None or spec is None or spec.located_at is None:
        return {}
    beyond = JUDGED_BEYOND_RANGE_AT.get(code)
    location = getattr(snap, beyond) if beyond is not None else None
    if location is None:
        location = getattr(snap, spec.located_at)
    if location is None:
        return {}
    return {"module": location.module, "index": location.index}


def _place(code: str, where: dict[str, EventValue]) -> str:
    """ " at M2 · C4" (" at M1 · T2" for a sensor): the place of `_where` in the event's text,
    numbered from 1 for people."""
    spec, module, index = spec_of(code), where.get("module"), where.get("index")
    if spec is None or spec.located_at is None or type(module) is not int or type(index) is not int:
        return ""
    sensor = spec.located_at.startswith("temp")
    return f" at {place_of(CellLocation(module=module, index=index), sensor=sensor)[0]}"


def transition_event(
    t: Transition, checks: PlausibilityValues | None = None, snap: PackSnapshot | None = None
) -> SupervisorEvent:
    verb = "raised" if t.kind == "raise" else "cleared"
    value = "unknown" if t.value is None else f"{t.value:.3f} {t.unit}"
    limits = f"threshold {t.threshold:g} {t.unit}, release {t.release:g}"
    evidence = _evidence(t.code, checks) if t.kind == "raise" else ""
    where = _where(t.code, snap) if t.kind == "raise" else {}
    text = f"{t.code} {t.level} {verb}: {value} ({limits}){_place(t.code, where)}{evidence}"
    return SupervisorEvent(
        t.level, t.kind, t.code, text,
        {"value": t.value, "threshold": t.threshold, "release": t.release, "unit": t.unit,
         **where},
    )  # fmt: skip


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    why: str = ""


class Supervisor:
    """See the module docstring. One per master; it outlives configurations."""

    def __init__(self, *, auto_close: bool, heartbeat_timeout_s: float) -> None:
        self.auto_close_enabled = auto_close
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.mode: SlaveMode = "working"
        self.comm = CommSupervision(mode=self.mode)
        self.d: Decisions | None = None
        self._auto_close = False
        self._held_open = False
        """An operator opened the contactors: nothing closes them again but a close command."""
        self._contactor_reset = False
        self._heartbeat_s: float | None = None
        self._hb_lost_reported = False
        self._contactor_state = "standby"
        self._precharge_wait_reported = False
        self._mismatch_seen = False
        """The state machine saw a contact disagree with its coil: contactor_feedback_mismatch
        is held until protection has latched it (after its trip the contact may agree again,
        and a trip must never stay without its code)."""
        self._events: list[SupervisorEvent] = []
        self.recovery = CommLossRecovery(policy="auto", per_hour=3)
        """Outlives configurations: the hour's recoveries count across them."""
        self.broker = BrokerOutages()
        self._comm_loss_since_s: float | None = None
        self._started_s: float | None = None
        """The first step: the current sensor's start-up grace runs from here."""
        self._current_sensor_seen = False
        """The current sensor has given a good reading since the master started."""
        self._faults_latched = False
        """The last step's protection latched a fault. The close checks it here: the contactor
        state machine learns it only in its own step, which is skipped while the relay module
        gives no feedback (a dead relay module latches contactor_io_failure just so)."""
        self._judged_with: ProtectionInputs | None = None
        """The last step's protection inputs: a sample is judged against these, with its own
        cell and temperature values (`judge_sample`)."""
        self._checks: PlausibilityValues | None = None
        """The last step's plausibility values (the evidence of an event)."""
        self._fed_to: PlausibilityChecks | None = None
        self._fed_snapshot: PackSnapshot | None = None
        """The checks and the snapshot last fed to them (`_facts`)."""

    # --- configuration -------------------------------------------------------------------------
    @staticmethod
    def prepare(config: SystemConfig, *, insulation_monitor: bool) -> Decisions:
        return Decisions(
            config=config,
            protection=Protection.from_system(config, insulation_monitor=insulation_monitor),
            contactors=ContactorStateMachine(config.contactors),
            limits=LimitCalculator(config),
            calibration=CurrentCalibration.from_config(config.current_sensor),
            plausibility=PlausibilityChecks.from_system(
                config, insulation_monitor=insulation_monitor, contactor_io=True
            ),
        )

    def adopt(self, new: Decisions, now_s: float) -> bool:
        """Switch to `new`; returns True when the modules are the same (their samples stay
        valid). A threshold or interface change keeps the contactor sequence (it must not open
        under load); a new layout or sequence starts open and closes again where the old one
        was closed or closing."""
        old = self.d
        if old is not None and (old.config.contactors, old.config.topology) == (
            new.config.contactors,
            new.config.topology,
        ):
            new.contactors = old.contactors
        same_modules = self.comm.configure(CommSupervisionConfig.from_system(new.config), now_s)
        self.recovery.policy = new.config.comm_loss.recovery
        self.recovery.per_hour = new.config.comm_loss.auto_recoveries_per_hour
        self.d = new
        was_closing = old is not None and (
            self._auto_close or old.contactors.state in ("precharge", "closed")
        )
        self._auto_close = self.auto_close_enabled and (old is None or was_closing)
        return same_modules

    # --- queries -------------------------------------------------------------------------------
    def module_status(self, now_s: float) -> ModuleStatus:
        return self.comm.status(now_s)

    @property
    def contactor_state(self) -> ContactorState:
        return self.d.contactors.state if self.d is not None else "standby"

    def drain_events(self) -> tuple[SupervisorEvent, ...]:
        events, self._events = tuple(self._events), []
        return events

    def _emit(
        self, level: EventLevel, kind: EventKind, code: str, text: str, **values: EventValue
    ) -> None:
        self._events.append(SupervisorEvent(level, kind, code, text, values))

    # --- commands ------------------------------------------------------------------------------
    def close(self, now_s: float, why: str) -> CommandResult:
        """Close (command or auto-close). Never over cells nobody measures: a stale module
        refuses the close; the auto-close waits for a complete snapshot, so it never asks."""
        assert self.d is not None
        if self.mode == "standby":
            return CommandResult(False, "standby mode: switch to working first")
        stale = self.comm.status(now_s).stale_modules
        if stale:
            refusal: str | None = unsupervised(stale)
        elif self._faults_latched:
            refusal = "a protection fault is latched"
        elif not self._current_sensor_seen:
            refusal = NO_CURRENT_SENSOR_YET
        else:
            refusal = self.d.contactors.request_close(now_s)
        self._emit(
            "info", "command", "contactors_close",
            f"close ({why})" + (f" refused: {refusal}" if refusal else ""),
        )  # fmt: skip
        if refusal is None and why == "command":
            self._held_open = False
        return CommandResult(refusal is None, refusal or "")

    def open(self, now_s: float) -> None:
        assert self.d is not None
        self._held_open, self._auto_close = True, False
        self.d.contactors.request_open(now_s)
        self._emit("info", "command", "contactors_open", "open (command)")

    def reset(self, now_s: float, *, service_override: bool) -> ResetResult:
        """Reset the protection (the cleared levels' events are emitted)."""
        assert self.d is not None
        result = self.d.protection.reset(now_s, service_override=service_override)
        for t in result.cleared:
            self._events.append(transition_event(t))
        if result.ok:
            self._contactor_reset = self.d.contactors.state == "fault"
            if self._contactor_reset and self.mode == "working" and not self._held_open:
                self._auto_close = self.auto_close_enabled  # a pending start-up close stays
        return result

    def set_mode(self, mode: SlaveMode, now_s: float) -> bool:
        """True when the mode changed."""
        if mode == self.mode:
            return False
        self.mode = mode
        self.comm.on_mode(mode, now_s)
        if mode == "standby" and self.d is not None:
            self.d.contactors.request_open(now_s)
        # back to work closes again where the start-up would
        self._auto_close = self.auto_close_enabled and mode == "working" and not self._held_open
        self._emit("info", "mode", f"mode_{mode}", f"mode {mode}")
        return True

    def heartbeat(self, now_s: float) -> None:
        if self._heartbeat_s is None or now_s - self._heartbeat_s > self.heartbeat_timeout_s > 0:
            self._emit("info", "info", "controller_heartbeat", "controller heartbeat present")
        self._heartbeat_s = now_s

    def heartbeat_lost(self, now_s: float) -> bool:
        timeout = self.heartbeat_timeout_s
        return timeout > 0 and self._heartbeat_s is not None and now_s - self._heartbeat_s > timeout

    # --- the step ------------------------------------------------------------------------------
    def step(self, inputs: SupervisorInputs, now_s: float) -> SupervisorOutputs:
        d = self.d
        assert d is not None, "step before a configuration"
        snap, reading = inputs.snapshot, inputs.reading
        current = d.calibration.measured_a(reading.current_a)
        checks = d.plausibility.update(now_s, self._facts(inputs, current))
        sensor_ok = self._current_sensor_ok(reading, now_s)
        judged = self._protection_inputs(inputs, current, checks, sensor_ok)
        self._judged_with, self._checks = judged, checks
        result = d.protection.evaluate(judged, now_s)
        for t in result.transitions:
            self._events.append(transition_event(t, checks, snap))
        latches_changed = any(t.level == "fault" for t in result.transitions)
        self._note_broker(inputs.broker_connected, now_s)
        if any(t.code == "communication_loss" and t.kind == "raise" and t.level == "fault"
               for t in result.transitions):  # fmt: skip
            self._comm_loss_since_s = now_s
        self._faults_latched = bool(result.faults)
        if "contactor_feedback_mismatch" in result.faults:
            self._mismatch_seen = False

        contactors = d.contactors
        open_for_comm = self.comm.should_open(
            inputs.modules, now_s, last_values_safe=not result.alarms
        )
        trip_reasons = list(result.actions.open_contactors)
        if open_for_comm:
            trip_reasons.append("loss of communication")
        if trip_reasons and contactors.state not in ("fault", "standby"):
            contactors.trip(now_s, ", ".join(trip_reasons))
        if reading.feedback is None:
            # the sequence waits blind (the relay module holds its outputs) until the feedback
            # returns or contactor_io_failure trips; a trip above has already dropped the coils
            if result.faults and contactors.state == "standby":
                # what step() does with a latch: unstepped, standby would hide it
                contactors.trip(now_s, "protection fault latched")
            coils = contactors.outputs
        else:
            coils = contactors.step(
                now_s,
                # unknown is NaN, which the sequence can only time out on (never 0 V: |0 - 0|
                # would read as a finished precharge)
                pack_voltage_v=_nan_if_unknown(reading.pack_voltage_v),
                bus_voltage_v=_nan_if_unknown(reading.link_voltage_v),
                feedback=reading.feedback,
                fault_latched=bool(result.faults),
            )
        self._mismatch_seen = self._mismatch_seen or coils.feedback_mismatch
        self._note_contactors(coils)
        retrying = coils.state == "precharge" and contactors.precharge_phase == "wait"
        if retrying and not self._precharge_wait_reported:
            self._emit("warning", "info", "precharge_retry", coils.reason)
        self._precharge_wait_reported = retrying
        if self._contactor_reset and not result.faults and reading.feedback is not None:
            # the state machine accepts a reset once it has seen the fault released
            refusal = contactors.reset(now_s)
            self._contactor_reset = False
            if refusal:
                self._emit("warning", "command", "contactors_reset", f"refused: {refusal}")
        if (
            self._auto_close
            and snap.complete
            and self._current_sensor_seen
            and not result.faults
            and contactors.state == "standby"
        ):
            self._auto_close = not self.close(now_s, "start-up").ok

        # after the contactor logic: a recovery takes effect from the next step
        latches_changed = self._recover_comm_loss(result, inputs, now_s) or latches_changed

        hb_lost = self.heartbeat_lost(now_s)
        if hb_lost != self._hb_lost_reported:
            self._hb_lost_reported = hb_lost
            if hb_lost:
                self._emit(
                    "warning", "raise", "controller_heartbeat_lost",
                    "no controller heartbeat: limits fall back to 0 A",
                )  # fmt: skip
        stale = bool(snap.stale_modules) or hb_lost
        limits = d.limits.update(
            LimitInputs.from_pack(
                snap,
                soc_pct=inputs.soc_pct,
                actions=result.actions,
                stale=stale,
                contactors_fault=contactors.state == "fault",
                unknown=result.unknown,
            ),
            now_s,
        )
        return SupervisorOutputs(
            coils=coils,
            limits=limits,
            protection=result,
            current_a=current,
            pack_voltage_v=reading.pack_voltage_v,
            link_voltage_v=reading.link_voltage_v,
            plausibility=checks,
            stale=stale,
            latches_changed=latches_changed,
            events=self.drain_events(),
        )

    def judge_sample(
        self, snapshot: PackSnapshot, sample_time_s: float, now_s: float
    ) -> Judgement | None:
        """The per-sample path (issue 19): judge the telemetry codes (`SAMPLED`) of a fresh
        snapshot at its sample time, and trip (every coil off) when that completes a delay.
        Nothing else: the master's own readings, the timeouts, the contactor sequence, the
        limits and the other codes stay with `step` on the periodic grid. The sample is
        judged against the last step's other inputs (the current arms the charge window);
        None before the first step (that step judges it).

        A sample judged here and again by the next `step` counts once (`Protection`): the
        step reaches the same levels with no transition of its own."""
        d, base = self.d, self._judged_with
        if d is None or base is None:
            return None
        inputs = replace(
            base,
            max_cell_v=snapshot.cell_v_max,
            cell_v_above_range=snapshot.cell_v_above_range,
            cell_v_below_range=snapshot.cell_v_below_range,
            min_cell_v=snapshot.cell_v_min,
            max_temp_c=snapshot.temp_max_c,
            min_temp_c=snapshot.temp_min_c,
            cell_spread_v=snapshot.spread_v,
            open_wire=snapshot.open_wire,
            out_of_range=snapshot.out_of_range,
            sensor_fault=snapshot.sensor_fault,
            sample_time_s=sample_time_s,
        )
        self._judged_with = inputs
        result = d.protection.judge_sample(inputs)
        if not result.transitions:
            return Judgement(result, None, False, ())
        for t in result.transitions:
            self._events.append(transition_event(t, self._checks, snapshot))
        self._faults_latched = bool(result.faults)
        tripped = None
        contactors = d.contactors
        reasons = result.actions.open_contactors
        if reasons and contactors.state not in ("fault", "standby"):
            tripped = contactors.trip(now_s, ", ".join(reasons))
            self._note_contactors(tripped)
        latches_changed = any(t.level == "fault" for t in result.transitions)
        return Judgement(result, tripped, latches_changed, self.drain_events())

    def _note_contactors(self, coils: ContactorOutputs) -> None:
        if coils.state != self._contactor_state:
            level: EventLevel = "fault" if coils.state == "fault" else "info"
            self._emit(level, "info", f"contactors_{coils.state}", coils.reason)
            self._contactor_state = coils.state

    def _note_broker(self, connected: bool, now_s: float) -> None:
        edge = self.broker.update(connected, now_s)
        if edge == "lost":
            self._emit(
                "warning",
                "raise",
                "broker_connection_lost",
                "the master lost its broker connection: no module telemetry can arrive",
            )
        elif edge == "back" and self.broker.last_outage is not None:
            start, end = self.broker.last_outage
            self._emit("warning", "clear", "broker_connection_lost",
                       f"broker connection back after {end - start:.1f} s",
                       down_s=round(end - start, 3))  # fmt: skip

    def _recover_comm_loss(
        self, result: ProtectionResult, inputs: SupervisorInputs, now_s: float
    ) -> bool:
        """`comm_recovery`: clear a latched communication loss once every module is back; True
        when a latch was cleared."""
        assert self.d is not None
        verdict = self.recovery.decide(
            now_s,
            latched_faults=result.faults,
            every_module_fresh=inputs.snapshot.complete and not inputs.modules.stale_modules,
        )
        cause = self.broker.cause(self._comm_loss_since_s)
        limit = self.recovery.per_hour
        if verdict == "exhausted":
            self._emit("warning", "info", "communication_loss_recovery_exhausted",
                       f"communication restored ({cause}), but {limit} automatic recoveries in "
                       "the last hour: the fault stays latched until an operator resets it",
                       limit=limit)  # fmt: skip
            return False
        if verdict != "recover":
            return False
        reset = self.d.protection.reset(now_s, codes=frozenset({"communication_loss"}))
        if not reset.cleared:
            return False
        used = self.recovery.recovered(now_s)
        self._events.extend(transition_event(t) for t in reset.cleared)
        self._emit("warning", "info", "communication_loss_recovered",
                   f"communication restored ({cause}): latch cleared automatically, recovery "
                   f"{used} of {limit} allowed per hour", recoveries=used, limit=limit)  # fmt: skip
        self._comm_loss_since_s = None
        self._faults_latched = False  # the only latched fault is gone: a close may go through
        self._contactor_reset = self.d.contactors.state == "fault"
        if self.mode == "working" and not self._held_open:
            self._auto_close = self.auto_close_enabled
        return True

    def _facts(self, inputs: SupervisorInputs, current_a: float | None) -> PlausibilityFacts:
        """The plausibility checks' raw facts; the coils as written after the last cycle."""
        assert self.d is not None
        snap, reading, fb = inputs.snapshot, inputs.reading, inputs.reading.feedback
        out = self.d.contactors.outputs
        insulation_good: bool | None = None  # a monitor starting up: unknown, not failed
        if not reading.device_ok(INSULATION_MONITOR):
            insulation_good = False
        elif reading.insulation_ohm is not None:
            insulation_good = True
        per_module = self.d.config.topology.temp_sensors_per_module
        # the same snapshot object again: no sample arrived and the stale set held
        # (`PackAggregator.snapshot`), so the checks have nothing new to count
        fresh = self._fed_to is not self.d.plausibility or self._fed_snapshot is not snap
        self._fed_to, self._fed_snapshot = self.d.plausibility, snap
        return PlausibilityFacts(
            current_a=current_a,
            pack_v=reading.pack_voltage_v,
            link_v=reading.link_voltage_v,
            feedback_all_open=None if fb is None else fb.all_open,
            commanded_open=out.all_off,
            precharge_commanded=out.main_negative and out.precharge,
            precharge_path_closed=fb is not None
            and fb.main_negative
            and fb.precharge
            and not fb.main_positive,
            precharge_failures=self.d.contactors.precharge_failures,
            cells_by_module=(
                ModuleVectors.of_pack(snap.cell_v, snap.module_of_cell) if fresh else None
            ),
            temps_by_module=(
                ModuleVectors.of_even(snap.temp_c, per_module) if fresh and per_module else None
            ),
            insulation_good=insulation_good,
            contactor_io_good=fb is not None and reading.device_ok(CONTACTOR_IO),
        )

    def _current_sensor_ok(self, reading: HardwareReading, now_s: float) -> bool | None:
        """This step's verdict on the current sensor: None (unknown, not evaluated) while a
        sensor that never answered is still within its start-up grace."""
        if self._started_s is None:
            self._started_s = now_s
        ok = reading.device_ok(CURRENT_SENSOR) and reading.current_a is not None
        self._current_sensor_seen = self._current_sensor_seen or ok
        waiting = now_s - self._started_s < CURRENT_SENSOR_START_GRACE_S
        return None if not self._current_sensor_seen and waiting else ok

    def _protection_inputs(
        self,
        inputs: SupervisorInputs,
        current_a: float | None,
        checks: PlausibilityValues,
        sensor_ok: bool | None,
    ) -> ProtectionInputs:
        assert self.d is not None
        snap, reading = inputs.snapshot, inputs.reading
        return ProtectionInputs(
            max_cell_v=snap.cell_v_max,
            cell_v_above_range=snap.cell_v_above_range,
            cell_v_below_range=snap.cell_v_below_range,
            min_cell_v=snap.cell_v_min,
            pack_v=reading.pack_voltage_v,
            sum_of_cells_v=snap.sum_of_cells_v,
            max_temp_c=snap.temp_max_c,
            min_temp_c=snap.temp_min_c,
            current_a=current_a,
            cell_spread_v=snap.spread_v,
            open_wire=snap.open_wire,
            out_of_range=snap.out_of_range,
            sensor_fault=snap.sensor_fault,
            stale_modules=inputs.modules.lost_modules,
            current_sensor_ok=sensor_ok,
            contactor_mismatch=self.d.contactors.outputs.feedback_mismatch or self._mismatch_seen,
            insulation_ohm=reading.insulation_ohm,
            sample_time_s=inputs.sample_time_s,
            **checks.inputs(),
        )
