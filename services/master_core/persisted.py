"""The master's state that outlives a restart: one versioned record per item in the `Store`.

Each item has its own key, version and fit check, so that a record that does not fit takes no
other item with it. What a record that does not fit means is decided per item (`ON_REFUSAL`):

- SOC (`SocRecord`, per cell): another version or cell count is refused; the SOC starts from
  the rested OCV, as on a first start. The SOC an older master stored is taken over. Saving
  stamps it with the save time, so a restart widens its uncertainty by the downtime
  (`PackEstimator.restore`).
- SOH (`SohRecord`, per-cell capacity and resistance estimates): another version, cell count or
  nominal capacity (other cells) is refused; the estimate starts again from the configured
  capacity (SOH 100 %, `estimator.SOH_PRIOR_PCT`) until the estimator measures one.
- Throughput and energy (`ThroughputRecord`) and equivalent cycles (`CyclesRecord`): counters of
  the system, so only another version is refused; a new cell count keeps them.
- Sensor offsets (`OffsetsRecord`): another version is refused, and one learned under another
  current calibration is not taken; the offset is learned again.
- Cell-voltage offsets (`CellOffsetsRecord`, per channel): another version, layout (modules x
  cells per module) or chemistry is refused (other channels, or another OCV table's
  residuals); they are learned again.
- Latched faults (`LatchesRecord`): a record that cannot be read is never dropped: the master
  refuses the configuration and its contactors stay open.
- Automatic recoveries from a communication loss of the last hour (`CommRecoveryRecord`): a
  record that cannot be read counts as the hour's recoveries used up (`comm_recovery`), so a
  restart loop never recovers without limit. A master without it (an older one) starts at 0.

- The OCV capture at commissioning (`OcvCaptureRecord`, and its kept updates in
  `OcvRowsRecord`s of `OCV_ROWS_PER_CHUNK` each): a record that cannot be read, or of another
  cell count or capture parameters (another configuration), is refused and no capture is
  resumed (a running one is reported aborted, `ocv_runner`). The kept updates only grow, so a
  chunk is written again only while it fills (a 40 h capture of 196 cells keeps ~30 MB).

A refused record is logged and counted, and stays stored: the estimator saves nothing before it
has started on the new layout (`PackEstimator.records`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.config import SystemConfig, explain_errors
from shared.event_store import Store
from shared.log_limit import LimitedLog

log = logging.getLogger("master_core.persisted")

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
Unit = Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
OnRefusal = Literal["start_fresh", "refuse_to_run"]


class PersistedRecord(BaseModel):
    """One stored item. JSON floats round-trip exactly, so store -> model is the identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    KEY: ClassVar[str]
    ON_REFUSAL: ClassVar[OnRefusal] = "start_fresh"

    def misfit(self, config: SystemConfig) -> str | None:
        """Why this record does not belong to `config`; None when it does."""
        return None

    def store_key(self) -> str:
        """The key it is stored under: `KEY`, unless the item is stored in parts."""
        return self.KEY

    @classmethod
    def from_legacy(cls, store: Store) -> Self | None:
        """The item as an older master stored it under another key, converted; None when
        there is none. Raises ValidationError when that cannot be read."""
        return None


def _cell_count(name: str, n_stored: int, config: SystemConfig) -> str | None:
    if n_stored != config.total_cells:
        return f"{name} of {n_stored} cells, the configuration has {config.total_cells}"
    return None


def _same_lengths(*lists: list[Any]) -> None:
    lengths = {len(x) for x in lists}
    if len(lengths) != 1:
        raise ValueError(f"per-cell lists of different lengths {sorted(lengths)}")


class SocRecord(PersistedRecord):
    """The coulomb counter: SOC and its 1-sigma uncertainty per cell, in %."""

    KEY: ClassVar[str] = "soc"
    version: Literal[1] = 1
    soc_pct: list[Percent] = Field(min_length=1)
    soc_std_pct: list[Percent] = Field(min_length=1)
    since_anchor_s: NonNegative | None = None
    """Seconds since the last full/empty anchor when saved; None before the first one."""
    saved_wall_s: Finite | None = None
    """Wall-clock time of the save (`save`/`save_all` stamp it with their ts), so a restart
    knows how long the SOC went uncounted; None from a master before this field."""
    hysteresis: list[Unit] | None = None
    """The OCV hysteresis state per cell (-1 discharge branch .. +1 charge branch,
    `estimation/hysteresis.py`) where the configuration gives both branches; None otherwise and
    from a master before this field. It does not move while the master is down (no current)."""

    @model_validator(mode="after")
    def _per_cell(self) -> Self:
        _same_lengths(self.soc_pct, self.soc_std_pct, *(x for x in (self.hysteresis,) if x))
        return self

    def misfit(self, config: SystemConfig) -> str | None:
        return _cell_count("SOC", len(self.soc_pct), config)

    @classmethod
    def from_legacy(cls, store: Store) -> Self | None:
        raw = store.get(_LegacyEstimator.KEY)
        if raw is None:
            return None
        return cls.model_validate(_LegacyEstimator.model_validate(raw).counter.model_dump())


class _LegacyCounter(BaseModel):
    model_config = ConfigDict(extra="ignore")
    soc_pct: list[float]
    soc_std_pct: list[float]


class _LegacyEstimator(BaseModel):
    """What masters before these records stored: the coulomb counter (its SOH was lost)."""

    model_config = ConfigDict(extra="ignore")
    KEY: ClassVar[str] = "estimator"
    version: Literal[1]
    counter: _LegacyCounter


class SohRecord(PersistedRecord):
    """The SOH estimator: weighted capacity sums and R0 estimates per cell (None: unknown).

    The SOC reference points are not stored: the charge moved while the master was down is
    unknown, so a restart starts a new capacity span."""

    KEY: ClassVar[str] = "soh"
    version: Literal[1] = 1
    nominal_capacity_ah: float = Field(gt=0.0, allow_inf_nan=False)
    capacity_num: list[NonNegative] = Field(min_length=1)
    capacity_den: list[NonNegative] = Field(min_length=1)
    capacity_samples: list[Count] = Field(min_length=1)
    resistance_ohm: list[Finite | None] = Field(min_length=1)
    resistance_ref_ohm: list[Finite | None] = Field(min_length=1)
    resistance_samples: list[Count] = Field(min_length=1)

    @model_validator(mode="after")
    def _per_cell(self) -> Self:
        _same_lengths(
            self.capacity_num, self.capacity_den, self.capacity_samples, self.resistance_ohm,
            self.resistance_ref_ohm, self.resistance_samples,
        )  # fmt: skip
        return self

    def misfit(self, config: SystemConfig) -> str | None:
        if self.nominal_capacity_ah != config.cell_capacity_ah:
            return (
                f"SOH of {self.nominal_capacity_ah:g} Ah cells, the configuration has "
                f"{config.cell_capacity_ah:g} Ah cells"
            )
        return _cell_count("SOH", len(self.capacity_num), config)


class ThroughputRecord(PersistedRecord):
    """Charge and energy through the pack since commissioning (positive = into the pack)."""

    KEY: ClassVar[str] = "throughput"
    version: Literal[1] = 1
    charge_in_ah: NonNegative
    charge_out_ah: NonNegative
    energy_in_wh: NonNegative
    energy_out_wh: NonNegative


class CyclesRecord(PersistedRecord):
    """Equivalent full cycles, each counted against the nominal capacity of its time."""

    KEY: ClassVar[str] = "equivalent_cycles"
    version: Literal[1] = 1
    equivalent_cycles: NonNegative


class OffsetsRecord(PersistedRecord):
    """Sensor offsets learned in the field (`sensor_offsets`): the current sensor's zero
    offset left after the calibration, and the sampled time it was learned over."""

    KEY: ClassVar[str] = "sensor_offsets"
    version: Literal[1] = 1
    zero_offset_a: Finite
    zero_evidence_s: NonNegative
    calibration_offset_a: Finite
    calibration_gain: Finite
    """The calibration (`current_sensor.offset_a`, `gain`) it was learned under: under
    another one the learned offset is another sensor's, or already corrected
    (`PackEstimator.restore` does not take it)."""

    def misfit(self, config: SystemConfig) -> str | None:
        sensor = config.current_sensor
        if (self.calibration_offset_a, self.calibration_gain) != (sensor.offset_a, sensor.gain):
            return (
                f"zero offset learned under the calibration offset {self.calibration_offset_a:g} A"
                f", gain {self.calibration_gain:g}; the configuration has {sensor.offset_a:g} A, "
                f"{sensor.gain:g}"
            )
        return None


class CellOffsetsRecord(PersistedRecord):
    """Per-channel cell-voltage offsets learned at full anchors (`estimation.voltage_offsets`):
    each channel's estimate in V and the anchors it was taken at, and the layout and chemistry
    they were learned under."""

    KEY: ClassVar[str] = "cell_voltage_offsets"
    version: Literal[1] = 1
    offset_v: list[Finite] = Field(min_length=1)
    anchors: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    modules: Annotated[int, Field(ge=1)]
    cells_per_module: Annotated[int, Field(ge=1)]
    chemistry: str = Field(max_length=40)

    @model_validator(mode="after")
    def _per_cell(self) -> Self:
        _same_lengths(self.offset_v, self.anchors)
        if len(self.offset_v) != self.modules * self.cells_per_module:
            raise ValueError("one offset per channel of the layout")
        return self

    def misfit(self, config: SystemConfig) -> str | None:
        topo = config.topology
        stored = (self.modules, self.cells_per_module, self.chemistry)
        now = (topo.modules, topo.cells_per_module, str(config.chemistry))
        if stored != now:
            return (
                f"cell-voltage offsets of {self.modules} x {self.cells_per_module} "
                f"{self.chemistry} cells, the configuration has {now[0]} x {now[1]} {now[2]}"
            )
        return None


class LatchedFault(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    value: Finite | None = None
    """The value that tripped it; None when unknown."""


class LatchesRecord(PersistedRecord):
    """The latched protection faults (`Protection.latched_state()`)."""

    KEY: ClassVar[str] = "protection_latched"
    ON_REFUSAL: ClassVar[OnRefusal] = "refuse_to_run"
    version: Literal[1] = 1
    faults: dict[str, LatchedFault]


MAX_RECOVERIES_STORED = 20
"""`comm_loss.auto_recoveries_per_hour` allows at most 20 (shared/config/system.py)."""


class CommRecoveryRecord(PersistedRecord):
    """`comm_recovery.CommLossRecovery`: the automatic recoveries of the last hour, as wall-clock
    times (s since the epoch), and whether the current latch is left to an operator."""

    KEY: ClassVar[str] = "comm_loss_recoveries"
    version: Literal[1] = 1
    recoveries_wall_s: list[Finite] = Field(max_length=MAX_RECOVERIES_STORED)
    exhausted: bool = False


OCV_ROWS_PER_CHUNK = 32
"""Kept updates per `OcvRowsRecord`: 16 minutes at the capture's record period (30 s)."""


class OcvCaptureRecord(PersistedRecord):
    """The OCV capture (`OcvCapture.saved`) but its kept updates; `capture` None: none (none
    started, or a new configuration ended it)."""

    KEY: ClassVar[str] = "ocv_capture"
    version: Literal[1] = 1
    capture_id: Count
    """Numbers the captures started; its rows carry it (rows of an older capture are not its)."""
    params: dict[str, Any] | None = None
    """The capture's parameters (`CaptureParams`, from the configuration and the command)."""
    capture: dict[str, Any] | None = None
    saved_wall_s: Finite | None = None
    """Wall-clock time of the save (stamped as `SocRecord`'s): the downtime at a restart."""

    def misfit(self, config: SystemConfig) -> str | None:
        if self.capture is None:
            return None
        return _cell_count("OCV capture", int(self.capture.get("n_cells", -1)), config)

    def rows_per_phase(self) -> list[int]:
        if self.capture is None:
            return []
        return [int(ph["rows"]) for ph in self.capture["phases"]]


MaybeFinite = Annotated[float | None, Field(allow_inf_nan=False)]


class OcvRowsRecord(PersistedRecord):
    """`OCV_ROWS_PER_CHUNK` kept updates of a phase of the capture (`OcvCapture.saved_rows`):
    chunk `chunk` of phase `phase`; unknown values None."""

    KEY: ClassVar[str] = "ocv_capture_rows"
    version: Literal[1] = 1
    capture_id: Count
    phase: Annotated[int, Field(ge=0, le=1)]
    chunk: Count
    t_s: list[Finite] = Field(max_length=OCV_ROWS_PER_CHUNK)
    ah: list[Finite] = Field(max_length=OCV_ROWS_PER_CHUNK)
    current_a: list[Finite] = Field(max_length=OCV_ROWS_PER_CHUNK)
    cell_v: list[list[MaybeFinite]] = Field(max_length=OCV_ROWS_PER_CHUNK)
    temp_c: list[list[MaybeFinite]] = Field(max_length=OCV_ROWS_PER_CHUNK)

    def store_key(self) -> str:
        return self.key_of(self.phase, self.chunk)

    @classmethod
    def key_of(cls, phase: int, chunk: int) -> str:
        return f"{cls.KEY}.{phase}.{chunk}"

    def rows(self) -> dict[str, list[Any]]:
        return {
            "t_s": self.t_s, "ah": self.ah, "current_a": self.current_a, "cell_v": self.cell_v,
            "temp_c": self.temp_c,
        }  # fmt: skip


@dataclass(frozen=True)
class OcvCaptureStored:
    record: OcvCaptureRecord
    rows: tuple[dict[str, list[Any]], ...]
    """Per phase, all its kept updates (the chunks joined)."""


R = TypeVar("R", bound=PersistedRecord)


@dataclass(frozen=True)
class Loaded(Generic[R]):
    """A stored record, or why it was refused; both None when nothing is stored."""

    record: R | None = None
    refusal: str | None = None


def load(store: Store, cls: type[R], config: SystemConfig) -> Loaded[R]:
    """Read `cls.KEY` and check that it fits `config`; never raises on stored content."""
    raw = store.get(cls.KEY)
    try:
        record = cls.model_validate(raw) if raw is not None else cls.from_legacy(store)
    except ValidationError as exc:
        return Loaded(refusal="; ".join(explain_errors(exc)))
    if record is None:
        return Loaded()
    why = record.misfit(config)
    return Loaded(refusal=why) if why else Loaded(record=record)


def load_ocv_capture(
    store: Store, config: SystemConfig
) -> tuple[OcvCaptureStored | None, str | None]:
    """The stored capture with its rows, or why it was refused (both None: nothing stored).
    Never raises on stored content."""
    loaded = load(store, OcvCaptureRecord, config)
    if loaded.record is None:
        return None, loaded.refusal
    record = loaded.record
    phases: list[dict[str, list[Any]]] = []
    try:
        for phase, count in enumerate(record.rows_per_phase()):
            joined: dict[str, list[Any]] = {
                k: [] for k in ("t_s", "ah", "current_a", "cell_v", "temp_c")
            }
            for chunk in range(-(-count // OCV_ROWS_PER_CHUNK)):
                raw = store.get(OcvRowsRecord.key_of(phase, chunk))
                if raw is None:
                    return None, f"chunk {chunk} of phase {phase} of the OCV capture is missing"
                rows = OcvRowsRecord.model_validate(raw)
                if rows.capture_id != record.capture_id:
                    return None, f"chunk {chunk} of phase {phase} is of another OCV capture"
                for key, values in rows.rows().items():
                    joined[key].extend(values)
            phases.append(joined)
    except ValidationError as exc:
        return None, "; ".join(explain_errors(exc))
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"the OCV capture cannot be read ({exc!r})"
    return OcvCaptureStored(record, tuple(phases)), None


def _stamped(record: PersistedRecord, ts: float) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    if "saved_wall_s" in type(record).model_fields:
        data["saved_wall_s"] = ts
    return data


def save(store: Store, record: PersistedRecord, *, ts: float) -> None:
    store.put(record.store_key(), _stamped(record, ts), ts=ts)


def save_all(store: Store, records: list[PersistedRecord], *, ts: float) -> None:
    """All `records` in one transaction: SOC, SOH, counters and latches always belong together."""
    store.put_many([(r.store_key(), _stamped(r, ts)) for r in records], ts=ts)


WRITE_ERRORS = "persist_errors"
"""The counter of failed writes (`RecordWriter`); only the writer's thread counts it."""


class RecordWriter:
    """Saves records on a thread of its own, so that SQLite never holds up the master's loop
    (issue 19): the loop hands records over (`submit`: a lock and a notification) and goes
    on; the thread turns them into JSON and writes them in one transaction (`save_all`).

    - Order: what was handed over last wins. Records of the same key handed over before the
      thread came round are written once, the newest (the master saves the whole set every
      second, the latches also at once); records of different keys go together.
    - Never lost at a stop: `close` writes everything handed over before it returns (within
      its timeout); a record handed over after `close` is written at once, on the caller.
    - `flush` waits until everything handed over so far is written (a configuration apply
      reads back what the old runtime saved).
    - A failed write is logged (once per `LOG_EVERY_S`) and counted (`errors`, and
      `counters[WRITE_ERRORS]`); it never raises into the loop. Its records stay pending under
      any newer ones and go with the next write (the next hand-over, or `close`).
    """

    LOG_EVERY_S = 10.0

    def __init__(self, store: Store, *, counters: Counter[str] | None = None) -> None:
        self.store = store
        self.counters = counters
        self.errors = 0
        """Failed writes."""
        self.writes = 0
        """Transactions written."""
        self._pending: dict[str, tuple[PersistedRecord, float]] = {}
        self._handed = 0
        """Hand-overs so far; `_done` of them are written (or failed)."""
        self._done = 0
        self._failed_at = -1
        """The hand-over count at the last failed write: its records are tried again after a
        newer hand-over or at `close`, never in a loop."""
        self._closed = False
        self._cond = threading.Condition()
        self._log = LimitedLog(log, every_s=self.LOG_EVERY_S)
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()

    def submit(self, records: list[PersistedRecord], *, ts: float) -> None:
        """Hand `records` over, stamped `ts` (`save_all`); never waits for SQLite."""
        with self._cond:
            if not self._closed:
                self._pending.update((r.store_key(), (r, ts)) for r in records)
                self._handed += 1
                self._cond.notify_all()
                return
        self._write({r.store_key(): (r, ts) for r in records})  # after close: at once, here

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything handed over so far is written; False on timeout or when a
        write failed meanwhile (the records stay pending)."""
        with self._cond:
            target = self._handed
            done = self._cond.wait_for(lambda: self._done >= target, timeout_s)
            return done and not self._pending

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write what was handed over, then stop the thread; False when that did not finish
        within `timeout_s` or a write failed (it is logged)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error(
                "the record writer did not finish within %.1f s: records may be lost", timeout_s
            )
            return False
        with self._cond:
            return not self._pending

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._work)
                if not self._pending:
                    return  # closed, everything written
                batch, self._pending = self._pending, {}
                handed, closing = self._handed, self._closed
            ok = self._write(batch)
            with self._cond:
                if not ok:  # kept for the next write, under anything newer
                    self._pending = batch | self._pending
                self._failed_at = -1 if ok else handed
                self._done = handed
                self._cond.notify_all()
                if closing and not ok:
                    return  # the last try at the stop failed (logged, counted)

    def _work(self) -> bool:
        """Something to do: the stop, or pending records not just failed."""
        return self._closed or (bool(self._pending) and self._handed != self._failed_at)

    def _write(self, batch: dict[str, tuple[PersistedRecord, float]]) -> bool:
        try:
            items = [(key, _stamped(record, ts)) for key, (record, ts) in batch.items()]
            self.store.put_many(items, ts=max(ts for _, ts in batch.values()))
        except (sqlite3.Error, TypeError, ValueError) as exc:
            self.errors += 1
            if self.counters is not None:
                self.counters[WRITE_ERRORS] += 1
            self._log.warning(
                type(exc).__name__, "saving %s failed: %s", ", ".join(sorted(batch)), exc
            )
            return False
        self.writes += 1
        return True
