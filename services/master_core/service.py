"""The master loop: aggregate, estimate, protect, switch, limit, balance, publish, persist.

Wiring only: each decision lives in its own pure module (pack, protection, contactors,
estimation, limits, balancing_strategy); this file feeds them and carries out their outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Literal

from prometheus_client import Histogram
from pydantic import ValidationError

from services.master_core.balancing_strategy import BalancingStrategy
from services.master_core.cadence import Cadence
from services.master_core.estimator import EstimatorRecords, PackEstimator
from services.master_core.estimator_feed import EstimatorFeed, EstimatorStep, StringState
from services.master_core.full_charge import FullChargeInputs, FullChargeRequest
from services.master_core.hardware import PackIo, PackIoFactory
from services.master_core.ocv_runner import OcvRunner
from services.master_core.pack import PackAggregator, PackSnapshot
from services.master_core.persisted import (
    CellOffsetsRecord,
    CommRecoveryRecord,
    CyclesRecord,
    LatchesRecord,
    OcvCaptureRecord,
    OffsetsRecord,
    PersistedRecord,
    R,
    RecordWriter,
    SocRecord,
    SohRecord,
    ThroughputRecord,
    load,
    load_ocv_capture,
)
from services.master_core.settings import MasterCoreSettings
from services.master_core.supervisor import (
    Decisions,
    Supervisor,
    SupervisorEvent,
    SupervisorInputs,
    SupervisorOutputs,
)
from shared.bus import BusCore, Delivery
from shared.commands import CommandOutcome, CommandServer
from shared.config import SystemConfig, explain_errors
from shared.config_ack import acknowledge_config
from shared.event_log import EVENTS_REPLY_BUDGET_BYTES as EVENTS_REPLY_BUDGET_BYTES
from shared.event_log import EventLog, EventQueries
from shared.event_log import fit_rows as fit_rows  # older imports name it here
from shared.event_store import Store
from shared.log_limit import LimitedLog
from shared.messages import (
    CellTelemetry,
    CommandArgs,
    ConfigMessage,
    ContactorsArgs,
    Limits,
    OcvCaptureArgs,
    PackState,
    ResetFaultsArgs,
    ServiceResetArgs,
    SetModeArgs,
    SlaveModeCommand,
)
from shared.messages.slave import SlaveMode
from shared.module_samples import subscribe_module_samples
from shared.schedule import FixedRateSchedule
from shared.topics import (
    CONFIG,
    EVENTS,
    PACK_CELLS,
    PACK_STATE,
    SLAVE_BALANCE,
    SLAVE_MODE,
)

CYCLE_SECONDS = Histogram(
    "bms_master_cycle_seconds",
    "Time of one cycle: read, judge, act, publish (bms_bus_overruns_total counts missed slots).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
    registry=None,
)
"""Served by `python -m services.master_core` on BMS_METRICS_PORT."""
log = logging.getLogger("master_core")

PERIOD_S = 0.05
"""The periodic cycle, for what no sample brings: timeouts (module freshness, the controller's
heartbeat, device ages), the master's own readings, the estimator and the limits, and the
periodic work at its rates (`_periodic`). Fresh telemetry is judged at once, besides (see
`run`)."""
PUBLISH_PERIOD_S = 0.1
"""Pack state at 10 Hz, and at once when the contactors change or a protection level is
raised or cleared."""
STATUS_PERIOD_S = 5.0
INBOX_BUDGET_S = 0.02
"""Time the loop spends on waiting messages before it cycles again. Decoding runs on this
thread, so it is bounded: one message costs at most the decoding of the largest valid payload
(topic byte limits, bench/bench_oversize.py), and a burst is cut into slices of this budget."""


@dataclass
class _Runtime:
    """Everything built from one configuration besides the supervisor's decisions."""

    config: SystemConfig
    aggregator: PackAggregator
    estimator: PackEstimator
    balancing: BalancingStrategy
    io: PackIo
    feed: EstimatorFeed[PackSnapshot]
    """When the estimator steps, with the current summed in between (`estimator_feed`)."""


def _estimate(estimator: PackEstimator, step: EstimatorStep[PackSnapshot]) -> None:
    estimator.update(
        step.snapshot, step.current_a, step.dt_s, step.end_s, string_open=step.string_open
    )


class MasterCore:
    def __init__(
        self,
        settings: MasterCoreSettings,
        bus: BusCore,
        store: Store,
        make_io: PackIoFactory,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.make_io = make_io
        self.monotonic = monotonic
        self.wall = wall
        self._limited_log = LimitedLog(log, every_s=10.0)
        self.events = EventLog(store, bus, wall)
        self.writer = RecordWriter(store, counters=bus.counters)
        """Saves the persisted records off the loop: the loop hands them over."""
        self.rt: _Runtime | None = None
        self.supervisor = Supervisor(
            auto_close=settings.auto_close, heartbeat_timeout_s=settings.heartbeat_timeout_s
        )
        self.schedule = FixedRateSchedule(PERIOD_S, monotonic())
        self.last: SupervisorOutputs | None = None
        self.full_charge = FullChargeRequest()
        """Outlives configurations: a new one changes the interval, not the request's state."""
        self.ocv = OcvRunner()
        self._persist_log = LimitedLog(log)
        """A record that cannot be built fails at every save: logged once a minute."""
        """The OCV capture at commissioning (`ocv_capture`); a new configuration ends it."""
        self.cadence = Cadence(
            {
                "state": PUBLISH_PERIOD_S,
                "cells": settings.cells_period_s,
                "balance": settings.balancing_period_s,
                "status": STATUS_PERIOD_S,
                "persist": settings.persist_period_s,
            },
            tolerance_s=PERIOD_S / 2,
            last_s={"status": monotonic(), "persist": monotonic()},
        )
        """Everything the master does periodically besides its step, at its rates (`_periodic`)."""
        self._last_cycle_s = monotonic()
        self.balancing_reason = "no data yet"
        self._balancing_was_running = False
        self._fresh = False
        self._unjudged: set[int] = set()
        """Modules with an admitted sample the protection has not judged yet."""
        self._sample_time_s: float | None = None
        """The newest admitted sample's time on the monotonic clock (it never goes back)."""
        self._published_contactors = ""
        self._levels_changed = False
        """A judgement raised or cleared a level: the cycle right after publishes the state."""
        self.queries = EventQueries(self.events, bus, self.monotonic)
        bus.subscribe(CONFIG, self._on_config)
        subscribe_module_samples(bus, self._on_sample, self._on_sample_refused)
        bus.subscribe(EVENTS, self.events.on_event)
        CommandServer(
            bus,
            {
                "contactors": self._cmd_contactors,
                "reset_faults": self._cmd_reset,
                "service_reset": self._cmd_reset,
                "set_mode": self._cmd_mode,
                "heartbeat": self._cmd_heartbeat,
                "events_query": self._cmd_events,
                "ocv_capture": self._cmd_ocv_capture,
            },
            clock=wall,
            journal=store,
            admit={"events_query": self.queries.admit},
        )

    @property
    def mode(self) -> SlaveMode:
        return self.supervisor.mode

    @property
    def last_limits(self) -> Limits | None:
        return self.last.limits if self.last is not None else None

    def _log_events(self, events: Iterable[SupervisorEvent] | None = None) -> None:
        for e in self.supervisor.drain_events() if events is None else events:
            self.events.emit(e.level, e.kind, e.code, e.text, **e.values)

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
            self._count_pending(old)
            self._persist(old)  # the new runtime restores what the old one has counted so far
            if not self.writer.flush():
                log.error("the old configuration's records are not saved: restoring older ones")
        io = self.make_io(config, old.io if old is not None else None)
        if old is not None and io is not old.io:
            old.io.close()
        decisions = Supervisor.prepare(config, insulation_monitor=io.has_insulation_monitor)
        estimator = PackEstimator(config)
        self._restore(config, decisions, estimator)
        rt = _Runtime(
            config=config,
            aggregator=PackAggregator(config.topology, config.comm_loss.max_sample_age_s),
            estimator=estimator,
            balancing=BalancingStrategy(config),
            io=io,
            feed=EstimatorFeed(),
        )
        if self.supervisor.adopt(decisions, self.monotonic()):
            assert old is not None
            rt.aggregator = old.aggregator  # the same modules: their samples stay valid
        if old is None:  # the supervisor outlives configurations: its count is restored once
            self._restore_recoveries(config)
        self.rt = rt
        self.full_charge.configure(config)
        self._log_events(self.ocv.configure())
        if old is None:  # a capture outlives a restart, not a new configuration
            self._restore_ocv_capture(config)
        else:  # at once: a restart must not resume what the new configuration ended
            self.writer.submit(self._ocv_records(), ts=self.wall())
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

    # --- inputs -----------------------------------------------------------------------------
    def _on_sample_refused(self, kind: str, why: str) -> None:
        self.bus.counters["telemetry_refused"] += 1
        self.bus.counters[kind] += 1
        self._limited_log.warning(kind, "telemetry refused: %s", why)

    def _on_sample(self, msg: CellTelemetry) -> None:
        if self.rt is None:
            return
        if msg.module in self._unjudged:
            # a second sample of a module before its first was judged (the loop fell behind):
            # judge the first now, so that no sample of a stretch beyond a threshold is skipped
            self.bus.counters["telemetry_judged_in_catch_up"] += 1
            self._judge_counted()
        wall, now = self.wall(), self.monotonic()
        reason = self.rt.aggregator.on_telemetry(msg, wall)
        if reason is None:
            self.supervisor.comm.on_sample(msg.module, msg.mode, now)
            # the wall-clock time stamp on the monotonic clock (the clocks are synchronised,
            # `freshness.py`), never later than the arrival: a slave clock running ahead is
            # taken at the arrival, so its correction cannot hold the delays back; a module's
            # older sample arriving late does not turn time back
            sampled_s = min(msg.sample_ts - (wall - now), now)
            if self._sample_time_s is None or sampled_s > self._sample_time_s:
                self._sample_time_s = sampled_s
            self._unjudged.add(msg.module)
            self._fresh = True
            # current for /metrics too, not only in the status every STATUS_PERIOD_S
            self.bus.counters["telemetry_gaps"] = self.rt.aggregator.gaps
        else:
            kind = self.rt.aggregator.last_refusal
            self.bus.counters["telemetry_refused"] += 1
            if kind is not None:
                self.bus.counters[f"telemetry_{kind}"] += 1
            self._limited_log.warning(reason.split(" (")[0], "telemetry refused: %s", reason)

    # --- commands ---------------------------------------------------------------------------
    def _cmd_contactors(self, args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, ContactorsArgs)
        if self.rt is None:
            return CommandOutcome(False, "no configuration yet")
        now = self.monotonic()
        if args.action == "close":
            result = self.supervisor.close(now, "command")
            self._log_events()
            return CommandOutcome(result.ok, result.why)
        self.supervisor.open(now)
        self._log_events()
        return CommandOutcome(True, result={"state": self.supervisor.contactor_state})

    def _cmd_reset(self, args: CommandArgs) -> CommandOutcome:
        """`reset_faults`, and `service_reset` (the same with an override, on a topic the broker
        lets only the web application's admin path publish). After a reset of a trip, the
        contactors close again when `auto_close` is set: the reset is the one operator action."""
        assert isinstance(args, ResetFaultsArgs)
        if self.rt is None or self.supervisor.d is None:
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
        reset = self.supervisor.reset(self.monotonic(), service_override=override is not None)
        self._log_events()
        self._persist_latches()
        if override is not None:
            codes = ", ".join(t.code for t in reset.cleared)
            self.events.emit(
                "warning", "command", "service_reset",
                f"service reset by {override.user} ({override.reason}): "
                f"cleared {codes or 'nothing'}",
                user=override.user, reason=override.reason, cleared=codes,
            )  # fmt: skip
        if not reset.ok:
            why = "; ".join(
                f"{code}: {reason}" for code, reason in sorted(reset.still_latched.items())
            )
            self.events.emit("warning", "command", "reset_faults", f"reset refused: {why}")
            return CommandOutcome(False, f"still latched: {why}")
        self.events.emit("info", "command", "reset_faults", "faults reset")
        return CommandOutcome(True, result={"state": self.supervisor.contactor_state})

    def _cmd_mode(self, args: CommandArgs) -> CommandOutcome:
        assert isinstance(args, SetModeArgs)
        if self.supervisor.set_mode(args.mode, self.monotonic()):
            self.bus.publish(SLAVE_MODE, SlaveModeCommand(mode=args.mode))
            self._log_events()
        return CommandOutcome(True, result={"mode": self.mode})

    def _cmd_heartbeat(self, _args: CommandArgs) -> CommandOutcome:
        self.supervisor.heartbeat(self.monotonic())
        self._log_events()
        return CommandOutcome(True)

    def _cmd_events(self, args: CommandArgs) -> CommandOutcome:
        """`events_query` (`shared.event_log.EventQueries`: page, byte limit, truncation)."""
        return self.queries.answer(args)

    def _cmd_ocv_capture(self, args: CommandArgs) -> CommandOutcome:
        """`ocv_capture`: start, abort or the status (`ocv_runner`; the capture decides)."""
        assert isinstance(args, OcvCaptureArgs)
        if self.rt is None:
            return CommandOutcome(False, "no configuration yet")
        reply = self.ocv.command(args, self.rt.config, self.monotonic())
        self._log_events(reply.events)
        return CommandOutcome(reply.accepted, reply.reason, reply.result)

    # --- the loop ---------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool]) -> None:
        """Judge each fresh sample at once: a wake-up that admitted telemetry judges it right
        after taking what already waits in the inbox (one judgement for them all, within
        `INBOX_BUDGET_S`), with no hold-back. The fixed grid cycles besides (`serve`)."""
        while not should_stop():
            wait_s = self.schedule.deadline_s - self.monotonic()
            if wait_s > 0 and not self._fresh:
                self.bus.process(timeout_s=min(wait_s, 0.2), budget_s=INBOX_BUDGET_S)
            else:
                self.bus.process(budget_s=INBOX_BUDGET_S)
            self.serve()

    def serve(self) -> Literal["cycle", "judge"] | None:
        """What a wake-up of the loop does once it has taken its inbox: the whole cycle when
        the grid's slot is due (it judges any fresh sample too), else the judgement of the
        fresh samples alone (`judge`), else nothing. Returns what ran."""
        if self.monotonic() >= self.schedule.deadline_s:
            self._cycle_counted()
            missed = self.schedule.advance(self.monotonic())
            if missed:
                self.bus.counters["overruns"] += missed
            return "cycle"
        if self._fresh:
            self._judge_counted()
            return "judge"
        return None

    def _cycle_counted(self) -> None:
        """One cycle, timed; a failure is counted and logged (it must not end supervision)."""
        started = perf_counter()
        try:
            self.cycle()
            CYCLE_SECONDS.observe(perf_counter() - started)
        except Exception:
            self.bus.counters["cycle_errors"] += 1
            log.exception("cycle failed")

    def _judge_counted(self) -> None:
        """One judgement; a failure is counted and logged, and the next cycle judges again."""
        try:
            self.judge()
        except Exception as exc:  # at the sample rate: rate-limited, the next cycle judges
            self.bus.counters["judge_errors"] += 1
            self._limited_log.log(logging.ERROR, "judge", "judging a sample failed: %r", exc)

    def judge(self) -> None:
        """The per-sample path (issue 19): the fresh samples' pack picture and the protection
        judgement of the telemetry codes in sample time; a trip drops the coils here, at once
        (`Supervisor.judge_sample`). Nothing else runs per sample. A level raised or cleared
        runs the whole cycle right after, so that the state, the limits and the contactors
        are published at once, as on a trip; every other sample waits for the grid."""
        self._fresh = False
        self._unjudged.clear()
        rt = self.rt
        if rt is None or self._sample_time_s is None:
            return
        now = self.monotonic()
        sup = self.supervisor
        snap = rt.aggregator.snapshot(sup.module_status(now).stale_modules)
        judgement = sup.judge_sample(snap, self._sample_time_s, now)
        if judgement is None or not judgement.changed:
            return
        if judgement.tripped is not None:
            rt.io.write_coils(judgement.tripped, now)
        self._log_events(judgement.events)
        if judgement.latches_changed:
            self._persist_latches()
        self._levels_changed = True
        self._cycle_counted()

    def cycle(self) -> None:
        """The whole cycle: timeouts, the master's own readings, the supervisor's step (every
        protection code, the contactor sequence, the limits), the estimator, and the
        periodic work that is due (`_periodic`)."""
        rt = self.rt
        if rt is None:
            return
        now, wall = self.monotonic(), self.wall()
        dt = now - self._last_cycle_s
        self._last_cycle_s = now
        self._fresh = False
        self._unjudged.clear()
        sup = self.supervisor
        modules = sup.module_status(now)
        snap = rt.aggregator.snapshot(modules.stale_modules)
        reading = rt.io.read(now)
        assert sup.d is not None
        current = sup.d.calibration.measured_a(reading.current_a)
        closed = sup.contactor_state == "closed"
        # No current flows while every contact reads open and every coil is off: the sensor's
        # zero reading then, which the estimator learns its offset from. In between (precharge,
        # opening) the string counts no current, as before.
        fb = reading.feedback
        string_open = (
            not closed and sup.d.contactors.outputs.all_off and fb is not None and fb.all_open
        )
        state: StringState = "counted" if closed else "open" if string_open else "idle"
        for step in rt.feed.add(snap, state, current, dt, now):
            _estimate(rt.estimator, step)
        self._log_events(self.ocv.step(snap, current if closed or string_open else 0.0, now))
        self._watch_zero_offset(rt)
        out = sup.step(
            SupervisorInputs(
                snapshot=snap,
                modules=modules,
                reading=reading,
                soc_pct=rt.estimator.pack_soc_pct,
                broker_connected=self.bus.connected,
                sample_time_s=self._sample_time_s,
            ),
            now,
        )
        rt.io.write_coils(out.coils, now)
        self.last = out
        self._log_events(out.events)
        full = self.full_charge.step(
            FullChargeInputs(
                estimating=rt.estimator.started,
                since_anchor_s=rt.estimator.since_anchor_s,
                fault_active=bool(out.protection.faults),
                charge_limit_a=out.limits.charge_current_a,
            ),
            now,
        )
        self._log_events(full.events)
        if out.latches_changed:
            self._persist_latches()
        self._periodic(rt, snap, out, current or 0.0, wall, now)

    def _watch_zero_offset(self, rt: _Runtime) -> None:
        """A learned zero offset beyond the sensor's specification is not subtracted
        (`sensor_offsets`): counted and logged, so that the sensor is checked."""
        if rt.estimator.zero.beyond_bound:
            self.bus.counters["current_offset_beyond_spec_cycles"] += 1
            self._limited_log.warning(
                "current_offset_beyond_spec",
                "current sensor zero offset %.3f A beyond its specification ±%g A: not "
                "subtracted from the counted current; check the sensor (or a standing load)",
                rt.estimator.zero.learned_a,
                rt.estimator.zero.params.bound_a,
            )

    def _periodic(
        self,
        rt: _Runtime,
        snap: PackSnapshot,
        out: SupervisorOutputs,
        current_a: float,
        wall: float,
        now: float,
    ) -> None:
        """Everything the master does on its own besides its step, each at its configured rate
        (`cadence`), from this one place: the pack state every PUBLISH_PERIOD_S and at once
        when the contactors change or a protection level is raised or cleared, the cells
        every `cells_period_s`, the balancing commands every `balancing_period_s`, the service
        status every STATUS_PERIOD_S, and the save of the estimator's records and the latches
        every `persist_period_s` (handed to the writer thread, `RecordWriter`). The snapshot
        it reads was computed only if something changed (`PackAggregator.snapshot`)."""
        due = self.cadence.due(now)
        contactors = self.supervisor.contactor_state
        changed = self._levels_changed or bool(out.protection.transitions)
        self._levels_changed = False
        if "state" in due or self._published_contactors != contactors or changed:
            self.cadence.ran("state", now)
            self._published_contactors = contactors
            self._publish_state(snap, out)
        if "cells" in due:
            self._publish_cells(snap)
        if "balance" in due:
            self._balance(snap, current_a, wall, now, out.stale)
        if "status" in due:
            self.bus.counters["telemetry_gaps"] = rt.aggregator.gaps
            self.bus.publish_status()
        if "persist" in due:
            self._persist(rt)

    def _latches(self) -> LatchesRecord:
        d = self.supervisor.d
        assert d is not None
        return LatchesRecord.model_validate(d.protection.latched_state())

    def _recoveries(self) -> CommRecoveryRecord:
        times, exhausted = self.supervisor.recovery.stored(self.monotonic(), self.wall())
        return CommRecoveryRecord(recoveries_wall_s=times, exhausted=exhausted)

    def _persist_latches(self) -> None:
        """At once when a latch changes: a recovery clears one, so its count goes with it.
        Handed to the writer thread, which wakes for it at once."""
        self.writer.submit([self._latches(), self._recoveries()], ts=self.wall())

    def _count_pending(self, rt: _Runtime) -> None:
        """The readings summed since the estimator's last step, counted before a final save."""
        step = rt.feed.flush()
        if step is not None:
            _estimate(rt.estimator, step)

    def _persist(self, rt: _Runtime) -> None:
        """The estimator's records (none before it has started) and the latched faults, handed
        to the writer thread, which saves them in one transaction (`RecordWriter`: a failed
        write is logged and counted there). A record that cannot be built is logged and
        counted here; it must stop neither the loop nor a configuration."""
        try:
            records = rt.estimator.records()
            estimated: list[PersistedRecord] = list(records.all()) if records else []
            records_now = [*estimated, self._latches(), self._recoveries()]
        except (ValidationError, TypeError, ValueError) as exc:
            self.bus.counters["persist_build_errors"] += 1
            self._persist_log.log(logging.ERROR, "state", "saving the state failed: %r", exc)
            return
        self.writer.submit([*records_now, *self._ocv_records()], ts=self.wall())

    def _ocv_records(self) -> list[PersistedRecord]:
        """The OCV capture's records, built apart: one that cannot be built must not stop the
        SOC, SOH and latches from being saved (nor a configuration from being applied)."""
        try:
            return self.ocv.records(self.monotonic())
        except (ValidationError, TypeError, ValueError) as exc:
            self.bus.counters["persist_build_errors"] += 1
            self._persist_log.log(logging.ERROR, "ocv", "saving the ocv capture failed: %r", exc)
            return []

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

    def _restore_recoveries(self, config: SystemConfig) -> None:
        recovery = self.supervisor.recovery
        loaded = load(self.store, CommRecoveryRecord, config)
        if loaded.refusal is not None:
            self.bus.counters["persisted_refused"] += 1
            log.error(
                "stored %s refused (%s): this hour's automatic recoveries are taken as used up",
                CommRecoveryRecord.KEY,
                loaded.refusal,
            )
            recovery.spent(self.monotonic())
        elif loaded.record is not None:
            r = loaded.record
            recovery.restore(
                r.recoveries_wall_s, r.exhausted, now_s=self.monotonic(), wall_s=self.wall()
            )
            if r.recoveries_wall_s:
                log.info("restored %d automatic recoveries", recovery.used(self.monotonic()))

    def _restore_ocv_capture(self, config: SystemConfig) -> None:
        stored, refusal = load_ocv_capture(self.store, config)
        if refusal is not None:
            self.bus.counters["persisted_refused"] += 1
            log.warning("stored %s refused (%s)", OcvCaptureRecord.KEY, refusal)
        self._log_events(self.ocv.restore(stored, refusal, config, self.monotonic(), self.wall()))
        if self.ocv.capture is not None:
            log.info("restored the ocv capture (%s)", self.ocv.capture.state)

    def _restore(self, config: SystemConfig, d: Decisions, estimator: PackEstimator) -> None:
        """Latched faults first: one that cannot be read back refuses the configuration, so
        the contactors stay open (never dropped silently)."""
        latches = self._load(LatchesRecord, config)
        if latches is not None and latches.faults:
            try:
                codes = d.protection.restore(latches.model_dump())
            except ValueError as exc:
                self.bus.counters["persisted_refused"] += 1
                log.error("stored %s refused (%s): refusing to run", LatchesRecord.KEY, exc)
                raise
            log.warning("restored latched faults: %s", ", ".join(codes))
        records = EstimatorRecords(
            soc=self._load(SocRecord, config),
            soh=self._load(SohRecord, config),
            throughput=self._load(ThroughputRecord, config),
            cycles=self._load(CyclesRecord, config),
            offsets=self._load(OffsetsRecord, config),
            cell_offsets=self._load(CellOffsetsRecord, config),
        )
        estimator.restore(records, wall_s=self.wall())  # downtime widens the SOC sigma
        if records.all():
            log.info("restored %s", ", ".join(r.KEY for r in records.all()))

    def _publish_state(self, snap: PackSnapshot, out: SupervisorOutputs) -> None:
        rt = self.rt
        assert rt is not None
        result = out.protection
        started = rt.estimator.started
        self.bus.publish(
            PACK_STATE,
            PackState(
                soc=rt.estimator.pack_soc_pct,
                soh=rt.estimator.soh_pct,
                soc_std=rt.estimator.pack_soc_std_pct,
                since_anchor_s=rt.estimator.since_anchor_s,
                full_charge_requested=self.full_charge.requested,
                voltage=out.pack_voltage_v,
                current=out.current_a,
                contactors=self.supervisor.contactor_state,
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
                limits=out.limits,
                faults=list(result.faults),
                alarms=list(result.alarms),
                warnings=list(result.warnings),
                stale_modules=list(snap.stale_modules),
                balancing=self.balancing_reason,
                energy_in_wh=rt.estimator.soh.energy_in_wh if started else None,
                energy_out_wh=rt.estimator.soh.energy_out_wh if started else None,
                equivalent_cycles=rt.estimator.soh.equivalent_cycles if started else None,
                dc_link_voltage=out.link_voltage_v,
                current_offset_a=out.plausibility.current_offset_a,
                current_zero_offset_a=rt.estimator.zero.learned_a,
                cell_voltage_offset_max_v=rt.estimator.cell_offsets.max_abs_correction_v,
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
        """Save the records and wait until they are written (`RecordWriter.close`)."""
        if self.rt is not None:
            self._count_pending(self.rt)
            self._persist(self.rt)
        if not self.writer.close():
            log.error("the last records may not be saved (see above)")
        if self.rt is not None:
            self.rt.io.close()
