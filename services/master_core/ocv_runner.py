"""The master's side of the OCV capture (`estimation/ocv_capture.py`): the `ocv_capture`
command's answers, the cycle's readings handed to the capture, and its changes as events.

Thin: the decisions are the capture's; this builds its parameters from the configuration
(the rated capacity, charge_v, the cut-off, the OCV table's SOC points and the coulomb
counter's anchor margins), maps the snapshot's temperature sensors to cells (the mean of the
cell's module) and words what changed. Pure: the time is passed in.

The capture outlives a restart of the master (`records`, `restore`: the store's
`OcvCaptureRecord` and `OcvRowsRecord`s): a finished result is offered again, a running capture
resumes within its gap rule (else it aborts with "gap", `OcvCapture.restored`). A new
configuration ends it (a running capture is aborted; a finished result is kept until the next
start, or the next configuration).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.master_core.estimation.ocv_capture import (
    RUNNING_STATES,
    CaptureParams,
    CaptureState,
    OcvCapture,
)
from services.master_core.estimation.soc import CoulombParams
from services.master_core.pack import PackSnapshot
from services.master_core.persisted import (
    OCV_ROWS_PER_CHUNK,
    OcvCaptureRecord,
    OcvCaptureStored,
    OcvRowsRecord,
    PersistedRecord,
)
from services.master_core.supervisor import SupervisorEvent
from shared.config import SystemConfig
from shared.messages import OcvCaptureArgs
from shared.messages.events import EventKind, EventLevel

CODE = "ocv_capture"
"""The event code (written out where the event is built: the catalogue test reads it)."""


@dataclass(frozen=True)
class RunnerReply:
    accepted: bool
    reason: str
    result: dict[str, Any]
    events: tuple[SupervisorEvent, ...] = ()


def capture_params(config: SystemConfig, args: OcvCaptureArgs) -> CaptureParams:
    chem = config.cell_chemistry
    counter = CoulombParams()
    return CaptureParams(
        capacity_ah=config.cell_capacity_ah,
        charge_v=chem.charge_v,
        discharge_cutoff_v=chem.discharge_cutoff_v,
        soc_grid_pct=tuple(chem.ocv_table_soc_pct),
        order=args.order,
        max_c_rate=args.max_c_rate,
        full_margin_v=counter.full_margin_v,
        empty_margin_v=counter.empty_margin_v,
        anchor_hold_s=counter.anchor_hold_s,
    )


def cell_temperatures(snap: PackSnapshot) -> NDArray[np.float64]:
    """Each cell's temperature: the mean of its module's known sensors (NaN: none known)."""
    modules = int(snap.module_of_cell.max()) + 1 if snap.module_of_cell.size else 0
    per = snap.temp_c.size // modules if modules else 0
    if per == 0:
        return np.full(snap.cell_v.shape, np.nan)
    temps = snap.temp_c[: per * modules].reshape(modules, per)
    known = np.isfinite(temps)
    count = known.sum(axis=1)
    total = np.where(known, temps, 0.0).sum(axis=1)
    module_c = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    out: NDArray[np.float64] = module_c[snap.module_of_cell]
    return out


def _state(cap: OcvCapture | None) -> str:
    return "idle" if cap is None else cap.state


def _params_of(saved: dict[str, Any]) -> CaptureParams:
    return CaptureParams(**{**saved, "soc_grid_pct": tuple(saved["soc_grid_pct"])})


class OcvRunner:
    def __init__(self) -> None:
        self.capture: OcvCapture | None = None
        self.capture_id = 0
        """Numbers the captures started (the stored rows carry it)."""
        self._handed: dict[tuple[int, int], int] = {}
        """Rows per (phase, chunk) handed to the store for this capture: a chunk is handed
        again only while it fills."""
        self._handed_still: tuple[int, str] | None = None
        """The capture and state last handed when it was not running (none, done, aborted):
        it does not change until the next start, so it is handed once."""

    def records(self, now_s: float) -> list[PersistedRecord]:
        """The capture to store: the state, and the chunks of kept updates that changed."""
        cap = self.capture
        still = None if cap is not None and cap.running else (self.capture_id, _state(cap))
        if still is not None and still == self._handed_still:
            return []
        if cap is None:
            self._handed_still = still
            return [OcvCaptureRecord(capture_id=self.capture_id)]
        saved = cap.saved(now_s)
        out: list[PersistedRecord] = [
            OcvCaptureRecord(
                capture_id=self.capture_id,
                params=dataclasses.asdict(cap.params),
                capture=saved,
            )
        ]
        handed = dict(self._handed)  # taken only once every record is built
        for phase, ph in enumerate(saved["phases"]):
            for chunk, start in enumerate(range(0, ph["rows"], OCV_ROWS_PER_CHUNK)):
                stop = min(start + OCV_ROWS_PER_CHUNK, ph["rows"])
                if handed.get((phase, chunk)) == stop - start:
                    continue
                rows = cap.saved_rows(phase, start, stop)
                out.append(
                    OcvRowsRecord(capture_id=self.capture_id, phase=phase, chunk=chunk, **rows)
                )
                handed[(phase, chunk)] = stop - start
        self._handed, self._handed_still = handed, still
        return out

    def restore(
        self,
        stored: OcvCaptureStored | None,
        refusal: str | None,
        config: SystemConfig,
        now_s: float,
        wall_s: float,
    ) -> tuple[SupervisorEvent, ...]:
        """The capture stored before a restart (`persisted.load_ocv_capture`), `wall_s` -
        its save time later. A running one resumes only with the same capture parameters (a
        refused one is reported aborted); a finished one is kept as it was (its result is the
        cells' measurement). One not taken back stays stored until a new capture starts."""
        if stored is None:
            if refusal is None:
                return ()
            self._keep_stored()
            text = f"ocv capture not resumed after a restart: {refusal}"
            return (self._capture_event("warning", "info", text, "idle", None),)
        record = stored.record
        self.capture_id = record.capture_id
        if record.capture is None or record.params is None:
            return ()
        saved = record.capture
        running = saved.get("state") in RUNNING_STATES
        try:
            params = _params_of(record.params)
            args = OcvCaptureArgs(action="start", order=params.order, max_c_rate=params.max_c_rate)
            if running and capture_params(config, args) != params:
                raise ValueError("the configuration's capture parameters changed")
            down_s = None if record.saved_wall_s is None else wall_s - record.saved_wall_s
            cap = OcvCapture.restored(params, saved, stored.rows, now_s=now_s, down_s=down_s)
        except (KeyError, TypeError, ValueError) as exc:
            self._keep_stored()
            if running:
                text = f"ocv capture not resumed after a restart: {exc}"
                return (self._capture_event("warning", "info", text, "aborted", None),)
            text = f"ocv capture kept before the restart unreadable: {exc}"
            return (self._capture_event("warning", "info", text, "idle", None),)
        self.capture = cap
        self._handed = {
            (phase, chunk): min(OCV_ROWS_PER_CHUNK, count - start)
            for phase, count in enumerate(record.rows_per_phase())
            for chunk, start in enumerate(range(0, count, OCV_ROWS_PER_CHUNK))
        }
        if cap.state != saved["state"]:  # a running capture beyond its gap rule
            text = f"ocv capture aborted ({cap.abort_reason}) after a restart: {cap.reason}"
            return (self._capture_event("warning", "info", text, cap.state, cap.abort_reason),)
        if cap.running:
            text = f"ocv capture resumed after a restart ({cap.state}): {cap.reason}"
            return (self._capture_event("info", "info", text, cap.state, None),)
        return ()

    def _keep_stored(self) -> None:
        """The stored capture was not taken back: no "none" overwrites it (it may be read
        again by a later version or by hand) until a new capture starts."""
        self._handed_still = (self.capture_id, _state(None))

    def configure(self) -> tuple[SupervisorEvent, ...]:
        """A new configuration ends a running capture (its capacity, limits or cells may
        differ) and drops a finished result (it was of the old configuration's table)."""
        cap, self.capture = self.capture, None
        if cap is not None and cap.running:
            text = "ocv capture aborted: a new configuration was applied"
            return (self._capture_event("warning", "info", text, "aborted", "aborted"),)
        return ()

    def command(self, args: OcvCaptureArgs, config: SystemConfig, now_s: float) -> RunnerReply:
        events: tuple[SupervisorEvent, ...] = ()
        if args.action == "start":
            try:
                params = capture_params(config, args)
            except ValueError as exc:
                return RunnerReply(False, f"cannot capture with this configuration: {exc}", {})
            self.capture = OcvCapture(config.total_cells, params)
            self.capture.start(now_s)
            self.capture_id += 1
            self._handed = {}
            text = (
                f"ocv capture started ({args.order}, <= {args.max_c_rate:g} C): "
                f"{self.capture.reason}"
            )
            events = (self._capture_event("info", "command", text, "awaiting_start", None),)
        elif args.action == "abort":
            cap = self.capture
            if cap is None or not cap.running:
                return RunnerReply(False, "no capture is running", self._result(now_s))
            cap.abort()
            text = "ocv capture aborted on request"
            events = (self._capture_event("info", "command", text, "aborted", "aborted"),)
        return RunnerReply(True, "", self._result(now_s), events)

    def step(
        self, snap: PackSnapshot, current_a: float | None, now_s: float
    ) -> tuple[SupervisorEvent, ...]:
        """The cycle's readings to a running capture; its changes of state as events."""
        cap = self.capture
        if cap is None or not cap.running:
            return ()
        before: CaptureState = cap.state
        after = cap.update(now_s, current_a, snap.cell_v, cell_temperatures(snap))
        if after == before:
            return ()
        level: EventLevel
        if after == "aborted":
            level = "warning"
            text = f"ocv capture aborted ({cap.abort_reason}): {cap.reason}"
        elif after == "done" and cap.result is not None:
            level = "info"
            text = (
                f"ocv capture done: capacity {cap.result.capacity_ah:.2f} Ah, cell spread up "
                f"to {1000.0 * cap.result.max_spread_v:.1f} mV"
            )
        else:
            level = "info"
            text = f"ocv capture: {cap.reason}"
        return (self._capture_event(level, "info", text, after, cap.abort_reason),)

    def _result(self, now_s: float) -> dict[str, Any]:
        cap = self.capture
        if cap is None:
            return {"state": "idle", "reason": "no capture started"}
        out: dict[str, Any] = cap.status(now_s).as_dict()
        if cap.result is not None:
            out["csv"] = cap.result.csv()
            out["summary"] = cap.result.summary()
        return out

    @staticmethod
    def _capture_event(
        level: EventLevel, kind: EventKind, text: str, state: str, abort_reason: str | None
    ) -> SupervisorEvent:
        return SupervisorEvent(
            level, kind, "ocv_capture", text, {"state": state, "abort_reason": abort_reason}
        )
