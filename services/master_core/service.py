"""The master loop: aggregate, estimate, protect, switch, limit, balance, publish, persist.

Wiring only: each decision lives in its own pure module (pack, protection, contactors,
estimation, limits, balancing_strategy); this file feeds them and carries out their outputs.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from services.master_core.balancing_strategy import BalancingStrategy
from services.master_core.comm_supervision import (
    CommSupervision,
    CommSupervisionConfig,
    ModuleStatus,
)
from services.master_core.contactor_sim import SimulatedContactors
from services.master_core.contactors import ContactorStateMachine
from services.master_core.current_calibration import CurrentCalibration
from services.master_core.estimator import EstimatorRecords, PackEstimator
from services.master_core.events import EventLog
from services.master_core.limits import LimitCalculator, LimitInputs
from services.master_core.load_profiles import parse_profile
from services.master_core.pack import PackAggregator, PackSnapshot
from services.master_core.pack_sensors import InverterState, SimulatedPackSensors
from services.master_core.persisted import (
    CyclesRecord,
    LatchesRecord,
    R,
    SocRecord,
    SohRecord,
    ThroughputRecord,
    load,
    save,
)
from services.master_core.protection import Protection, ProtectionResult, Transition
from services.master_core.protection_inputs import ProtectionInputs
from services.master_core.settings import MasterCoreSettings
from services.master_core.stores import Store
from shared.bus import BusCore, Delivery
from shared.commands import CommandOutcome, CommandServer
from shared.config import SystemConfig, explain_errors
from shared.config_ack import acknowledge_config
from shared.messages import (
    CellTelemetry,
    CommandArgs,
    ConfigMessage,
    ContactorsArgs,
    EventsQueryArgs,
    Limits,
    PackState,
    ResetFaultsArgs,
    ServiceResetArgs,
    SetModeArgs,
    SlaveModeCommand,
)
from shared.messages.events import EventLevel
from shared.messages.slave import SlaveMode
from shared.schedule import FixedRateSchedule
from shared.topics import (
    CONFIG,
    PACK_CELLS,
    PACK_STATE,
    SLAVE_BALANCE,
    SLAVE_MODE,
    SLAVE_TELEMETRY,
)

log = logging.getLogger("master_core")

PERIOD_S = 0.05
"""The fixed grid of the loop; fresh telemetry also starts a cycle (see `run`)."""
MIN_CYCLE_S = 0.02
"""Telemetry of several modules arriving together is judged in one cycle."""
PUBLISH_PERIOD_S = 0.1
"""Pack state at 10 Hz, and at once when the contactors change."""
STATUS_PERIOD_S = 5.0


@dataclass
class _Runtime:
    """Everything built from one configuration."""

    config: SystemConfig
    aggregator: PackAggregator
    protection: Protection
    contactors: ContactorStateMachine
    contactor_sim: SimulatedContactors
    estimator: PackEstimator
    limits: LimitCalculator
    balancing: BalancingStrategy
    sensors: SimulatedPackSensors
    current_calibration: CurrentCalibration


def unsupervised(stale_modules: tuple[int, ...]) -> str:
    """Why a close is refused while modules are stale."""
    which = ", ".join(str(m) for m in stale_modules)
    verb = "module {} has" if len(stale_modules) == 1 else "modules {} have"
    return f"{verb.format(which)} not reported: the pack is not fully supervised"


class MasterCore:
    def __init__(
        self,
        settings: MasterCoreSettings,
        bus: BusCore,
        store: Store,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.monotonic = monotonic
        self.wall = wall
        self.events = EventLog(store, bus, wall)
        self.rt: _Runtime | None = None
        self.mode: SlaveMode = "working"
        self.comm = CommSupervision(mode=self.mode)
        """Module freshness and the grace after transitions; outlives each configuration."""
        self.schedule = FixedRateSchedule(PERIOD_S, monotonic())
        self.last_limits: Limits | None = None
        self._last_cells_s = 0.0
        self._last_balance_s = 0.0
        self._last_persist_s = monotonic()
        self._last_status_s = monotonic()
        self._last_cycle_s = monotonic()
        self._heartbeat_s: float | None = None
        self._contactor_state = "standby"
        self.balancing_reason = "no data yet"
        self._balancing_was_running = False
        self._auto_close = False
        self._held_open = False
        """An operator opened the contactors: nothing closes them again but a close command."""
        self._contactor_reset = False
        self._last_publish_s = 0.0
        self._fresh = False
        self._hb_lost_reported = False
        self._published_contactors = ""
        bus.subscribe(CONFIG, self._on_config)
        bus.subscribe(SLAVE_TELEMETRY, self._on_telemetry)
        CommandServer(
            bus,
            {
                "contactors": self._cmd_contactors,
                "reset_faults": self._cmd_reset,
                "service_reset": self._cmd_reset,
                "set_mode": self._cmd_mode,
                "heartbeat": self._cmd_heartbeat,
                "events_query": self._cmd_events,
            },
            clock=wall,
        )

    # --- configuration ----------------------------------------------------------------------
    def _on_config(self, d: Delivery[ConfigMessage]) -> None:
        config = d.message.config
        errors: list[str] = []
        if config.system_id != self.bus.system:
            errors = [f"configuration is for system {config.system_id!r}, not {self.bus.system!r}"]
        elif self.rt is None or self.rt.config != config:
            # the same configuration again (a publisher's reconnect) must not reset the runtime
            try:
                self.apply_config(config)
            except ValueError as exc:
                errors = explain_errors(exc) if hasattr(exc, "errors") else [str(exc)]  # type: ignore[arg-type]
        acknowledge_config(self.bus, config.config_version, errors)

    def apply_config(self, config: SystemConfig) -> None:
        old = self.rt
        if old is not None:
            self._persist(old)  # the new runtime restores what the old one has counted so far
        rt = _Runtime(
            config=config,
            aggregator=PackAggregator(config.topology),
            # the simulated plant includes an insulation monitor (pack_sensors)
            protection=Protection.from_system(config, insulation_monitor=True),
            contactors=ContactorStateMachine(config.contactors),
            contactor_sim=SimulatedContactors(config.contactors),
            estimator=PackEstimator(config),
            limits=LimitCalculator(config),
            balancing=BalancingStrategy(config),
            sensors=SimulatedPackSensors(
                parse_profile(self.settings.load_profile),
                seed=self.settings.seed,
                calibration=CurrentCalibration.from_config(config.current_sensor),
            ),
            current_calibration=CurrentCalibration.from_config(config.current_sensor),
        )
        self._restore(rt)
        if old is not None:
            rt.contactor_sim = old.contactor_sim
            if (old.config.contactors, old.config.topology) == (config.contactors, config.topology):
                # a threshold or interface change must not open the contactors under load;
                # a new layout or contactor sequence starts open and closes again (auto-close)
                rt.contactors = old.contactors
        if self.comm.configure(CommSupervisionConfig.from_system(config), self.monotonic()):
            assert old is not None
            rt.aggregator = old.aggregator  # the same modules: their samples stay valid
        self.rt = rt
        self.events.emit(
            "info",
            "config",
            "config_applied",
            f"configuration {config.config_version}",
            version=config.config_version,
            chemistry=config.chemistry,
            cells=config.topology.total_cells,
        )
        self.bus.publish(SLAVE_MODE, SlaveModeCommand(mode=self.mode))
        # the new contactor sequence starts open: close again where it was closed or closing
        was_closing = old is not None and (
            self._auto_close or old.contactors.state in ("precharge", "closed")
        )
        self._auto_close = self.settings.auto_close and (old is None or was_closing)

    # --- inputs -----------------------------------------------------------------------------
    def _on_telemetry(self, d: Delivery[CellTelemetry]) -> None:
        if self.rt is None:
            return
        reason = self.rt.aggregator.on_telemetry(d.message)
        if reason is None:
            self.comm.on_sample(d.message.module, d.message.mode, self.monotonic())
            self._fresh = True
        else:
            self.bus.counters["telemetry_refused"] += 1
            log.warning("telemetry refused: %s", reason)

    # --- commands ---------------------------------------------------------------------------
    def _request_close(self, now: float, why: str) -> str | None:
        """Close (command or auto-close); returns why not. Never over cells nobody measures: a
        stale module (not yet seen after a layout change, or silent) refuses the close; the
        auto-close waits for a complete snapshot, so it never asks meanwhile."""
        assert self.rt is not None
        if self.mode == "standby":
            return "standby mode: switch to working first"
        stale = self.comm.status(now).stale_modules
        if stale:
            refusal: str | None = unsupervised(stale)
        else:
            refusal = self.rt.contactors.request_close(now)
        self.events.emit(
            "info",
            "command",
            "contactors_close",
            f"close ({why})" + (f" refused: {refusal}" if refusal else ""),
        )
        return refusal

    def _cmd_contactors(self, args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, ContactorsArgs)
        if self.rt is None:
            return CommandOutcome(False, "no configuration yet")
        now = self.monotonic()
        if args.action == "close":
            refusal = self._request_close(now, "command")
            if refusal is None:
                self._held_open = False
            return CommandOutcome(refusal is None, refusal or "")
        self._held_open, self._auto_close = True, False
        self.rt.contactors.request_open(now)
        self.events.emit("info", "command", "contactors_open", "open (command)")
        return CommandOutcome(True, result={"state": self.rt.contactors.state})

    def _cmd_reset(self, args: CommandArgs) -> CommandOutcome:
        """`reset_faults`, and `service_reset` (the same with an override, on a topic the broker
        lets only the web application's admin path publish). After a reset of a trip, the
        contactors close again when `auto_close` is set: the reset is the one operator action."""
        assert isinstance(args, ResetFaultsArgs)
        if self.rt is None:
            return CommandOutcome(False, "no configuration yet")
        override = args.service_override
        if override is not None and not isinstance(args, ServiceResetArgs):
            why = (
                "a service override is accepted only on cmd/service_reset (admin only); "
                "nothing was reset"
            )
            self.events.emit(
                "warning", "command", "service_reset", f"refused: {why}",
                user=override.user, reason=override.reason,
            )  # fmt: skip
            return CommandOutcome(False, why)
        now = self.monotonic()
        reset = self.rt.protection.reset(now, service_override=override is not None)
        for t in reset.cleared:
            self._emit_transition(t)
        self._persist_latches()
        if override is not None:
            cleared = ", ".join(t.code for t in reset.cleared)
            self.events.emit(
                "warning", "command", "service_reset",
                f"service reset by {override.user} ({override.reason}): "
                f"cleared {cleared or 'nothing'}",
                user=override.user, reason=override.reason, cleared=cleared,
            )  # fmt: skip
        if not reset.ok:
            why = "; ".join(
                f"{code}: {reason}" for code, reason in sorted(reset.still_latched.items())
            )
            self.events.emit("warning", "command", "reset_faults", f"reset refused: {why}")
            return CommandOutcome(False, f"still latched: {why}")
        self._contactor_reset = self.rt.contactors.state == "fault"
        if self._contactor_reset and self.mode == "working" and not self._held_open:
            self._auto_close = self.settings.auto_close  # a pending start-up close stays
        self.events.emit("info", "command", "reset_faults", "faults reset")
        return CommandOutcome(True, result={"state": self.rt.contactors.state})

    def _cmd_mode(self, args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, SetModeArgs)
        if args.mode != self.mode:
            self.mode = args.mode
            self.comm.on_mode(args.mode, self.monotonic())
            if args.mode == "standby" and self.rt is not None:
                self.rt.contactors.request_open(self.monotonic())
            # back to work closes again where the start-up would (simulated inverter)
            self._auto_close = (
                self.settings.auto_close and args.mode == "working" and not self._held_open
            )
            self.bus.publish(SLAVE_MODE, SlaveModeCommand(mode=args.mode))
            self.events.emit("info", "mode", f"mode_{args.mode}", f"mode {args.mode}")
        return CommandOutcome(True, result={"mode": self.mode})

    def _cmd_heartbeat(self, _args: CommandArgs) -> CommandOutcome:
        if (
            self._heartbeat_s is None
            or self.monotonic() - self._heartbeat_s > self.settings.heartbeat_timeout_s > 0
        ):
            self.events.emit("info", "info", "controller_heartbeat", "controller heartbeat present")
        self._heartbeat_s = self.monotonic()
        return CommandOutcome(True)

    def _cmd_events(self, args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, EventsQueryArgs)
        rows = self.store.events(**args.model_dump())
        return CommandOutcome(True, result={"events": rows})

    # --- the loop ---------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool]) -> None:
        """Cycle on the fixed grid, and also as soon as fresh telemetry arrives, so a limit
        crossing is judged within milliseconds of its sample rather than at the next slot."""
        while not should_stop():
            now = self.monotonic()
            wait = self.schedule.deadline_s - now
            fresh = self._fresh and now - self._last_cycle_s >= MIN_CYCLE_S
            if wait > 0 and not fresh:
                timeout = wait if not self._fresh else min(wait, MIN_CYCLE_S)
                self.bus.process(timeout_s=min(timeout, 0.2))
                continue
            self.bus.process()
            self._fresh = False
            try:
                self.cycle()
            except Exception:  # one bad cycle must not end supervision
                self.bus.counters["cycle_errors"] += 1
                log.exception("cycle failed")
            if wait <= 0:
                missed = self.schedule.advance(self.monotonic())
                if missed:
                    self.bus.counters["overruns"] += missed

    def cycle(self) -> None:
        rt = self.rt
        if rt is None:
            return
        now, wall = self.monotonic(), self.wall()
        dt = now - self._last_cycle_s
        self._last_cycle_s = now
        modules = self.comm.status(now)
        snap = rt.aggregator.snapshot(modules.stale_modules)
        closed = rt.contactors.state == "closed"
        limits = self.last_limits
        rt.sensors.update(
            InverterState(
                contactors_closed=closed,
                charge_limit_a=limits.charge_current_a if limits else 0.0,
                discharge_limit_a=limits.discharge_current_a if limits else 0.0,
                soc_pct=rt.estimator.pack_soc_pct,
                cell_v_min=snap.cell_v_min or 0.0,
                cell_v_max=snap.cell_v_max or 0.0,
                sum_of_cells_v=_plant_voltage_v(snap),
                bus_voltage_v=rt.contactor_sim.bus_voltage_v,
            )
        )
        meas = rt.current_calibration.apply(rt.sensors.measure(now))
        current = meas.current_a if meas.current_a is not None else 0.0
        rt.estimator.update(snap, current if closed else 0.0, dt, now)

        result = rt.protection.evaluate(
            self._protection_inputs(
                snap,
                modules,
                meas.current_a,
                meas.pack_voltage_v,
                insulation_ohm=meas.insulation_ohm,
            ),
            now,
        )
        for t in result.transitions:
            self._emit_transition(t)
        if any(t.level == "fault" for t in result.transitions):
            self._persist_latches()
        open_for_comm = self.comm.should_open(modules, now, last_values_safe=not result.alarms)
        if (result.actions.open_contactors or open_for_comm) and rt.contactors.state not in (
            "fault",
            "standby",
        ):
            reason = ", ".join(result.actions.open_contactors) or "loss of communication"
            rt.contactors.trip(now, reason)
        pack_v = meas.pack_voltage_v if meas.pack_voltage_v is not None else 0.0
        outputs = rt.contactors.step(
            now,
            pack_voltage_v=pack_v,
            bus_voltage_v=rt.contactor_sim.bus_voltage_v,
            feedback=rt.contactor_sim.feedback,
            fault_latched=bool(result.faults),
        )
        rt.contactor_sim.step(dt, outputs, pack_v)
        if outputs.state != self._contactor_state:
            level: EventLevel = "fault" if outputs.state == "fault" else "info"
            self.events.emit(level, "info", f"contactors_{outputs.state}", outputs.reason)
            self._contactor_state = outputs.state
        if self._contactor_reset and not result.faults:
            # the state machine accepts a reset once it has seen the fault released
            refusal = rt.contactors.reset(now)
            self._contactor_reset = False
            if refusal:
                self.events.emit("warning", "command", "contactors_reset", f"refused: {refusal}")
        if (
            self._auto_close
            and snap.complete
            and not result.faults
            and rt.contactors.state == "standby"
        ):
            self._auto_close = self._request_close(now, "start-up") is not None
        hb_lost = self._heartbeat_lost(now)
        if hb_lost != self._hb_lost_reported:
            self._hb_lost_reported = hb_lost
            if hb_lost:
                self.events.emit(
                    "warning",
                    "raise",
                    "controller_heartbeat_lost",
                    "no controller heartbeat: limits fall back to 0 A",
                )
        stale = bool(snap.stale_modules) or hb_lost
        self.last_limits = rt.limits.update(
            LimitInputs.from_pack(
                snap, soc_pct=rt.estimator.pack_soc_pct, actions=result.actions, stale=stale
            ),
            now,
        )
        if (
            now - self._last_publish_s >= PUBLISH_PERIOD_S - 0.005
            or self._published_contactors != rt.contactors.state
        ):
            self._last_publish_s = now
            self._published_contactors = rt.contactors.state
            self._publish_state(snap, result, meas.current_a, meas.pack_voltage_v)
        if now - self._last_cells_s >= self.settings.cells_period_s:
            self._last_cells_s = now
            self._publish_cells(snap)
        if now - self._last_balance_s >= self.settings.balancing_period_s:
            self._last_balance_s = now
            self._balance(snap, current, wall, now, stale)
        if now - self._last_persist_s >= self.settings.persist_period_s:
            self._last_persist_s = now
            self._persist(rt)
        if now - self._last_status_s >= STATUS_PERIOD_S:
            self._last_status_s = now
            self.bus.counters["telemetry_gaps"] = rt.aggregator.gaps
            self.bus.publish_status()

    def _emit_transition(self, t: Transition) -> None:
        verb = "raised" if t.kind == "raise" else "cleared"
        value = "unknown" if t.value is None else f"{t.value:.3f} {t.unit}"
        limits = f"threshold {t.threshold:g} {t.unit}, release {t.release:g}"
        text = f"{t.code} {t.level} {verb}: {value} ({limits})"
        self.events.emit(t.level, t.kind, t.code, text, value=t.value, threshold=t.threshold)

    def _heartbeat_lost(self, now: float) -> bool:
        timeout = self.settings.heartbeat_timeout_s
        return timeout > 0 and self._heartbeat_s is not None and now - self._heartbeat_s > timeout

    def _protection_inputs(
        self,
        snap: PackSnapshot,
        modules: ModuleStatus,
        current: float | None,
        pack_v: float | None,
        *,
        insulation_ohm: float | None = None,
    ) -> ProtectionInputs:
        assert self.rt is not None
        return ProtectionInputs(
            max_cell_v=snap.cell_v_max,
            min_cell_v=snap.cell_v_min,
            pack_v=pack_v,
            sum_of_cells_v=snap.sum_of_cells_v,
            max_temp_c=snap.temp_max_c,
            min_temp_c=snap.temp_min_c,
            current_a=current,
            cell_spread_v=snap.spread_v,
            open_wire=snap.open_wire,
            out_of_range=snap.out_of_range,
            sensor_fault=snap.sensor_fault,
            stale_modules=modules.lost_modules,
            current_sensor_ok=current is not None,
            contactor_mismatch=self.rt.contactors.outputs.feedback_mismatch,
            insulation_ohm=insulation_ohm,
        )

    def _persist_latches(self, rt: _Runtime | None = None) -> None:
        rt = rt or self.rt
        assert rt is not None
        latches = LatchesRecord.model_validate(rt.protection.latched_state())
        save(self.store, latches, ts=self.wall())

    def _persist(self, rt: _Runtime) -> None:
        """The estimator's records (none before it has started) and the latched faults. A
        failure is logged and counted; it must stop neither the loop nor a configuration."""
        try:
            records = rt.estimator.records()
            for record in records.all() if records else ():
                save(self.store, record, ts=self.wall())
            self._persist_latches(rt)
        except (ValidationError, sqlite3.Error):
            self.bus.counters["persist_errors"] += 1
            log.exception("saving the state failed")

    def _load(self, cls: type[R], config: SystemConfig) -> R | None:
        """A stored record that fits `config`; a refusal is logged and counted, and where the
        item says so (`ON_REFUSAL`) it refuses the configuration."""
        loaded = load(self.store, cls, config)
        if loaded.refusal is None:
            return loaded.record
        self.bus.counters["persisted_refused"] += 1
        if cls.ON_REFUSAL == "refuse_to_run":
            log.error("stored %s refused (%s): refusing to run", cls.KEY, loaded.refusal)
            raise ValueError(f"stored {cls.KEY} cannot be read ({loaded.refusal})")
        log.warning("stored %s refused (%s): starting it afresh", cls.KEY, loaded.refusal)
        return None

    def _restore(self, rt: _Runtime) -> None:
        """Latched faults first: one that cannot be read back refuses the configuration, so
        the contactors stay open (never dropped silently)."""
        latches = self._load(LatchesRecord, rt.config)
        if latches is not None and latches.faults:
            try:
                codes = rt.protection.restore(latches.model_dump())
            except ValueError as exc:
                self.bus.counters["persisted_refused"] += 1
                log.error("stored %s refused (%s): refusing to run", LatchesRecord.KEY, exc)
                raise
            log.warning("restored latched faults: %s", ", ".join(codes))
        records = EstimatorRecords(
            soc=self._load(SocRecord, rt.config),
            soh=self._load(SohRecord, rt.config),
            throughput=self._load(ThroughputRecord, rt.config),
            cycles=self._load(CyclesRecord, rt.config),
        )
        rt.estimator.restore(records)
        if records.all():
            log.info("restored %s", ", ".join(r.KEY for r in records.all()))

    def _publish_state(
        self,
        snap: PackSnapshot,
        result: ProtectionResult,
        current: float | None,
        pack_v: float | None,
    ) -> None:
        rt = self.rt
        assert rt is not None and self.last_limits is not None
        started = rt.estimator.started
        self.bus.publish(
            PACK_STATE,
            PackState(
                soc=rt.estimator.pack_soc_pct,
                soh=rt.estimator.soh_pct,
                voltage=pack_v,
                current=current,
                contactors=rt.contactors.state,
                mode=self.mode,
                cell_v_min=snap.cell_v_min,
                cell_v_max=snap.cell_v_max,
                cell_v_avg=snap.cell_v_avg,
                cell_v_min_at=snap.cell_v_min_at,
                cell_v_max_at=snap.cell_v_max_at,
                sum_of_cells_v=snap.sum_of_cells_v,
                temp_min_c=snap.temp_min_c,
                temp_max_c=snap.temp_max_c,
                temp_avg_c=snap.temp_avg_c,
                temp_min_at=snap.temp_min_at,
                temp_max_at=snap.temp_max_at,
                limits=self.last_limits,
                faults=list(result.faults),
                alarms=list(result.alarms),
                warnings=list(result.warnings),
                stale_modules=list(snap.stale_modules),
                balancing=self.balancing_reason,
                energy_in_wh=rt.estimator.soh.energy_in_wh if started else None,
                energy_out_wh=rt.estimator.soh.energy_out_wh if started else None,
                equivalent_cycles=rt.estimator.soh.equivalent_cycles if started else None,
            ),
        )

    def _publish_cells(self, snap: PackSnapshot) -> None:
        assert self.rt is not None
        self.bus.publish(PACK_CELLS, self.rt.aggregator.cell_snapshot(snap))

    def _balance(
        self, snap: PackSnapshot, current: float, wall: float, now: float, stale: bool
    ) -> None:
        rt = self.rt
        assert rt is not None
        standby = self.mode == "standby"
        decision = rt.balancing.decide_pack(
            snap, current, rt.estimator.cell_soc_pct, now, stale=stale or standby
        )
        self.balancing_reason = "standby" if standby else decision.reason
        if decision.running or self._balancing_was_running:
            ttl = 3 * self.settings.balancing_period_s
            for cmd in decision.commands(now_wall_s=wall, ttl_s=ttl):
                self.bus.publish(SLAVE_BALANCE, cmd, module=cmd.module)
        self._balancing_was_running = decision.running

    def stop(self) -> None:
        if self.rt is not None:
            self._persist(self.rt)


def _plant_voltage_v(snap: PackSnapshot) -> float | None:
    """What the simulated pack-voltage sensor reads: the whole string, a cell the master cannot
    measure (open sense wire, flagged channel) included; estimated from the known cells."""
    if snap.sum_of_cells_v is not None:
        return snap.sum_of_cells_v
    if snap.cell_v_avg is None:
        return None
    return snap.cell_v_avg * len(snap.cell_v)
