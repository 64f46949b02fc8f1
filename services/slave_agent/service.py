"""The slave agent loop: sample on a fixed schedule, publish telemetry, apply safe balancing.

Wiring only: decisions live in `core.py`, timing in `schedule.py`, hardware behind `Driver`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from services.slave_agent.core import AgentCore, BalancingLimits
from services.slave_agent.driver import Driver, DriverError
from services.slave_agent.settings import SlaveAgentSettings
from services.slave_agent.sim_driver import LOOP_FAULTS, SimulatedDriver, cells_of_module
from services.slave_agent.telemetry import fast_rack_telemetry, telemetry_fields
from shared.bus import BusCore, Delivery
from shared.config import SystemConfig, explain_errors
from shared.config_ack import acknowledge_config
from shared.log_limit import LimitedLog
from shared.messages import (
    BalanceCommand,
    CellTelemetry,
    ConfigMessage,
    GroundTruth,
    PackState,
    SimControl,
    SlaveModeCommand,
    SlaveStatus,
)
from shared.numbering import number_of
from shared.schedule import FixedRateSchedule
from shared.topics import (
    CONFIG,
    PACK_STATE,
    RACK_TELEMETRY,
    SIM_CONTROL,
    SIM_TRUTH,
    SLAVE_BALANCE,
    SLAVE_MODE,
    SLAVE_STATUS,
)

log = logging.getLogger("slave_agent")

STATUS_PERIOD_S = 5.0
"""How often the service status (with its error counters) is refreshed."""

DriverFactory = Callable[[SystemConfig, list[int]], Driver]


@dataclass
class _LoopFault:
    value: float
    until_s: float | None


class SlaveAgent:
    def __init__(
        self,
        settings: SlaveAgentSettings,
        bus: BusCore,
        driver_factory: DriverFactory,
        *,
        on_modules: Callable[[list[int]], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.driver_factory = driver_factory
        self.on_modules = on_modules
        self.monotonic = monotonic
        self.wall = wall
        self.config: SystemConfig | None = None
        self.driver: Driver | None = None
        self.core: AgentCore | None = None
        self.schedule: FixedRateSchedule | None = None
        self.modules: list[int] = []
        self._seq: dict[int, int] = {}
        self._rack_topic = ""
        """The hosted modules' telemetry topic (`slaves/{first-last}/telemetry`)."""
        self._rack_seq = 0
        """Messages on that topic since the start (each sample also counts per module)."""
        self._limited_log = LimitedLog(log, every_s=10.0)
        self.boot_id = uuid.uuid4().hex
        """This start of the agent: the master orders samples by (boot_id, seq)."""
        self._loop_faults: dict[str, _LoopFault] = {}
        self._last_advance_s = monotonic()
        self._last_truth_s = 0.0
        self._last_status_s = monotonic()
        bus.subscribe(CONFIG, self._on_config)
        bus.subscribe(PACK_STATE, self._on_pack_state)
        bus.subscribe(SLAVE_MODE, self._on_mode)
        bus.subscribe(SLAVE_BALANCE, self._on_balance)
        bus.subscribe(SIM_CONTROL, self._on_sim_control)

    # --- configuration ----------------------------------------------------------------------
    def _on_config(self, d: Delivery[ConfigMessage]) -> None:
        config = d.message.config
        errors: list[str] = []
        if self.config != config:
            # the same configuration again (a publisher's reconnect) must not restart the driver
            try:
                self.apply_config(config)
            except (ValueError, DriverError) as exc:
                # one problem per line (a DriverError may list several)
                errors = (
                    explain_errors(exc)
                    if isinstance(exc, ValidationError)
                    else str(exc).splitlines()
                )
        acknowledge_config(self.bus, config.config_version, errors)

    def apply_config(self, config: SystemConfig) -> None:
        modules = self.settings.module_list(config.topology.modules)
        if not modules:
            raise ValueError(f"none of modules {self.settings.modules} exist in this system")
        driver = self.driver_factory(config, modules)
        if self.driver is not None:
            self.driver.close()
        self.config, self.driver, self.modules = config, driver, modules
        cells = {m: cells_of_module(config, m) for m in modules}
        bal = config.balancing
        mode = self.core.mode if self.core else "working"
        self.core = AgentCore(
            cells,
            BalancingLimits(bal.min_cell_voltage_v, bal.max_temperature_c, bal.mode == "active",
                            self.settings.master_silence_timeout_s),
            mode=mode,
        )  # fmt: skip
        self._seq = {m: self._seq.get(m, 0) for m in modules}
        self._rack_topic = RACK_TELEMETRY.topic(
            self.bus.system, modules=self.settings.telemetry_range(config.topology.modules)
        )
        self.schedule = FixedRateSchedule(self._period_s(), self.monotonic())
        self._last_advance_s = self.monotonic()
        for m in modules:
            self.bus.publish(
                SLAVE_STATUS,
                SlaveStatus(module=m, state="online", mode=mode, driver=self.settings.driver,
                            service=self.bus.service),
                module=m,
            )  # fmt: skip
        if self.on_modules is not None:
            self.on_modules(modules)
        log.info("configured: %d modules %s, %s, sampling every %.2f s", len(modules),
                 _ranges(modules), config.chemistry, self._period_s())  # fmt: skip

    def _period_s(self) -> float:
        assert self.config is not None
        timing = self.config.timing
        standby = self.core is not None and self.core.mode == "standby"
        return timing.sample_period_standby_s if standby else timing.sample_period_working_s

    # --- inputs from the master -------------------------------------------------------------
    def _on_pack_state(self, d: Delivery[PackState]) -> None:
        if self.core is not None:
            self.core.on_pack_state(d.message, self.monotonic())

    def _on_mode(self, d: Delivery[SlaveModeCommand]) -> None:
        if self.core is None:
            return
        if self.core.on_mode(d.message.mode, self.monotonic()) and self.schedule is not None:
            self.schedule.retime(self._period_s(), self.monotonic())
            if d.message.mode == "standby" and self.driver is not None:
                for m, cells in self.core.modules.items():
                    self._set_balancing(m, [False] * cells, [False] * cells)
            log.info("mode %s: sampling every %.2f s", d.message.mode, self._period_s())

    def _on_balance(self, d: Delivery[BalanceCommand]) -> None:
        if self.core is None or d.message.module not in self.core.modules:
            return
        # expiry is an absolute wall-clock time; the core works on the monotonic clock
        cmd = d.message
        now_wall, now_mono = self.wall(), self.monotonic()
        local = cmd.model_copy(
            update={"expires_at": max(0.0, cmd.expires_at - now_wall + now_mono)}
        )
        reason = self.core.on_balance(local, now_mono)
        if reason is not None:
            self.bus.counters["balance_refused"] += 1
            log.warning("balancing command for module %d refused: %s", cmd.module, reason)
        else:
            self.bus.counters["balance_accepted"] += 1

    def _on_sim_control(self, d: Delivery[SimControl]) -> None:
        ctrl = d.message
        if ctrl.module is not None and ctrl.module not in self.modules:
            return
        if ctrl.expires_at is not None and self.wall() > ctrl.expires_at:
            log.warning("fault injection %s refused: expired", ctrl.fault)
            return
        log.warning("fault injection: %s module=%s channel=%s (numbered from 1) value=%s "
                    "duration=%s", ctrl.fault, _number(ctrl.module), _number(ctrl.channel),
                    ctrl.value, ctrl.duration_s)  # fmt: skip
        now = self.monotonic()
        if ctrl.fault == "clear":
            self._loop_faults.clear()
        elif ctrl.fault in LOOP_FAULTS:
            until = now + ctrl.duration_s if ctrl.duration_s else None
            self._loop_faults[ctrl.fault] = _LoopFault(ctrl.value or 0.0, until)
            if ctrl.fault == "crash":
                logging.shutdown()
                os._exit(70)  # no goodbye: the broker publishes the last wills
            return
        if isinstance(self.driver, SimulatedDriver):
            try:
                self.driver.inject(ctrl)
            except ValueError as exc:
                self.bus.counters["sim_control_refused"] += 1
                log.warning("fault injection refused: %s", exc)
        else:
            # the cells are real boards (or the plant's): nothing here can change them
            self.bus.counters["sim_control_ignored"] += 1
            log.warning(
                "fault injection %s ignored: this agent reads boards (driver %s); inject cell "
                "faults into the plant: python -m services.plant inject %s ...",
                ctrl.fault, self.settings.driver, ctrl.fault,
            )  # fmt: skip

    # --- the loop ---------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            if self.schedule is None:
                self.bus.process(timeout_s=0.2)
                continue
            wait = self.schedule.deadline_s - self.monotonic()
            if wait > 0:
                self.bus.process(timeout_s=min(wait, 0.2))
                continue
            self.bus.process()
            try:
                self.sample()
            except Exception:  # a bad sample must not stop the module's supervision
                self.bus.counters["sample_errors"] += 1
                log.exception("sampling failed")
            missed = self.schedule.advance(self.monotonic())
            if missed:
                self.bus.counters["overruns"] += missed
                if missed > 1 or self.schedule.overruns % 100 == 1:
                    log.warning("sampling overran: %d slot(s) missed, %d in all", missed,
                                self.schedule.overruns)  # fmt: skip

    def _fault(self, kind: str, now: float) -> _LoopFault | None:
        fault = self._loop_faults.get(kind)
        if fault is not None and fault.until_s is not None and now >= fault.until_s:
            del self._loop_faults[kind]
            return None
        return fault

    def sample(self) -> None:
        assert self.driver is not None and self.core is not None and self.schedule is not None
        now = self.monotonic()
        dt = now - self._last_advance_s
        self._last_advance_s = now
        try:
            self.driver.advance(dt, self.core.string_current_a)
        except DriverError as exc:
            log.error("%s", exc)
        wall = self.wall()
        late = self._fault("late_samples", now)
        dropout = self._fault("dropout", now)
        stamp_ts = self.bus.clock()
        samples: list[dict[str, Any]] = []
        for m in self.modules:
            try:
                reading = self.driver.read(m)
            except DriverError as exc:
                self.bus.counters["read_errors"] += 1
                log.error("module %d: %s", m, exc)
                self._seq[m] += 1
                continue
            decision = self.core.balancing(m, reading, now)
            self._set_balancing(m, decision.discharge, decision.charge)
            seq = self._seq[m]
            self._seq[m] += 1
            if dropout is not None:
                continue
            sample_ts = wall - (late.value if late else 0.0)
            values: dict[str, Any] = dict(
                source=self.bus.service, seq=seq, ts=stamp_ts, module=m,
                mode=self.core.mode, sample_ts=sample_ts,
                cell_mv=reading.cell_mv, cell_flags=reading.cell_flags,
                balancing=decision.switched,
                temp_c=reading.temp_c, temp_flags=reading.temp_flags,
                overruns=self.schedule.overruns, boot_id=self.boot_id,
            )  # fmt: skip
            fields = telemetry_fields(**values)
            if fields is None:
                fields = self._checked_sample(values)
            if fields is not None:
                samples.append(fields)
        if samples:
            self.bus.publish_raw(
                self._rack_topic,
                fast_rack_telemetry(
                    source=self.bus.service, seq=self._rack_seq, ts=stamp_ts, samples=samples
                ),
                qos=RACK_TELEMETRY.qos, retain=RACK_TELEMETRY.retain, spec=RACK_TELEMETRY,
            )  # fmt: skip
            self._rack_seq += 1
        if (
            isinstance(self.driver, SimulatedDriver)
            and now - self._last_truth_s >= self.settings.truth_period_s
        ):
            self._last_truth_s = now
            self._publish_truth(self.driver, wall)
        if now - self._last_status_s >= STATUS_PERIOD_S:
            self._last_status_s = now
            self.bus.publish_status()
        slow = self._fault("slow_samples", now)
        if slow is not None:
            time.sleep(slow.value)

    def _checked_sample(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """A sample the fast path would not take, through the model: its fields when the model
        takes them; else None, counted and logged (the other modules' samples still go out)."""
        envelope = {k: values.pop(k) for k in ("source", "ts")}
        try:
            sample = CellTelemetry(**values)
        except ValidationError as exc:
            self.bus.counters["telemetry_invalid"] += 1
            self._limited_log.log(
                logging.ERROR, "telemetry_invalid", "module %d: sample refused by the contract: %s",
                values["module"], "; ".join(explain_errors(exc)),
            )  # fmt: skip
            return None
        return sample.stamped(source=envelope["source"], seq=values["seq"], ts=envelope["ts"])

    def _set_balancing(self, module: int, discharge: list[bool], charge: list[bool]) -> None:
        assert self.driver is not None
        try:
            self.driver.set_balancing(module, discharge, charge)
        except DriverError as exc:
            self.bus.counters["balance_errors"] += 1
            log.error("module %d: %s", module, exc)

    def _publish_truth(self, driver: SimulatedDriver, wall: float) -> None:
        for m in self.modules:
            t = driver.truth(m)
            # a drifting simulated cell may leave the contract's range; truth is best effort
            np.clip(t.cell_v, 0.0, 6.0, out=t.cell_v)
            self.bus.publish(
                SIM_TRUTH,
                GroundTruth(
                    module=m,
                    sample_ts=wall,
                    soc_pct=t.soc_pct.tolist(),
                    cell_v=t.cell_v.tolist(),
                    temp_c=t.temp_c.tolist(),
                    current_a=float(t.current_a),
                ),
                module=m,
            )  # fmt: skip

    def stop(self) -> None:
        for m in self.modules:
            self.bus.publish(
                SLAVE_STATUS,
                SlaveStatus(
                    module=m, state="offline", driver=self.settings.driver, service=self.bus.service
                ),
                module=m,
            )
        if self.driver is not None:
            self.driver.close()


def _ranges(modules: list[int]) -> str:
    return (
        f"{modules[0]}-{modules[-1]}"
        if modules == list(range(modules[0], modules[-1] + 1))
        else str(modules)
    )


def _number(index: int | None) -> int | str:
    """A module or channel as the person who injected it typed it (from 1); "all" for None."""
    return "all" if index is None else number_of(index)
