"""The fault-injection matrix as data: what `bench/fault_matrix.py` measured, and what it cannot.

`bench/fault_matrix.py` runs a real stack on the simulated plant, injects each fault in an
operating state and writes what the BMS did to `docs/data/fault-matrix.json` (`MatrixResults`).
The docs render that committed file (`python -m shared.docgen`), never a new run, so `--check`
stays deterministic.

The matrix is a grid: every fault kind of `FAULT_KINDS` (each a fault the plant's `inject`
plays, or a bench action standing in for one) in every operating state of `OPERATING_STATES`.
Each cell of the grid is either a row of the results or a reason in `NOT_APPLICABLE` (why the
fault cannot occur, or cannot be told apart, in that state), never both: a test holds the grid
to that.

The matrix is the evidence for the code table: a test holds every code of `CODE_TABLE` to at
least one ok row that raised it (a row that reached its safe state).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from shared.protection_codes import Level, ProtectionCode

DATA_FILE: Final = Path(__file__).resolve().parent.parent / "docs" / "data" / "fault-matrix.json"

OperatingState = Literal["standby", "precharge", "closed_idle", "charging", "discharging"]
OPERATING_STATES: Final[tuple[OperatingState, ...]] = get_args(OperatingState)
"""The grid's columns. precharge: the close command issued and the precharge coil on (the fault
is injected while the DC link charges); closed idle: contactors closed, no current."""
Status = Literal["ok", "not_detected", "unsafe"]
"""ok: an expected code was raised and the row reached its safe state; not_detected: no
expected code within the row's timeout; unsafe: detected, but the safe state was not reached."""

FAULT_KINDS: Final[dict[str, str]] = {
    "cell_ov": "cell over-voltage: one cell drifts up (`cell_drift`)",
    "pack_ov": "pack over-voltage: every cell drifts up (`cell_drift`)",
    "cell_uv": "cell under-voltage: one cell drifts down (`cell_drift`)",
    "deep_discharge": "deep discharge: one cell drifts below the deep-discharge voltage",
    "pack_uv": "pack under-voltage: every cell drifts down (`cell_drift`)",
    "imbalance": "imbalance: one cell drifts slowly down (`cell_drift`)",
    "over_temp": "over-temperature: one sensor's cells heat (`over_temperature`)",
    "under_temp": "under-temperature: one sensor's cells cool (`under_temperature`)",
    "spread": "temperature spread: one sensor's cells heat, below the over-temperature fault",
    "chg_oc": "charge over-current: the inverter ignores the limits (`inverter_ignores_limits`)",
    "dis_oc": "discharge over-current: the inverter ignores the limits",
    "open_wire": "open cell sense wire (`open_wire`)",
    "sensor_fault": "open temperature sensor (`open_wire --target temp`)",
    "out_of_range": "out-of-range noise on one cell channel (`noisy_channel`)",
    "stuck_cell": "stuck cell voltage channel (`stuck_sensor`)",
    "stuck_temp": "stuck temperature channel (`stuck_sensor --target temp`)",
    "board_dropout": "a slave board stops answering (`board_dropout`)",
    "current_dropout": "the current sensor falls silent (`current_dropout`)",
    "offset_open": "current-sensor offset of 5 A (`current_offset`)",
    "offset_small": "current-sensor offset of 0.8 A (`current_offset`)",
    "insulation": "insulation fault (`insulation_fault`)",
    "u1_offset": "IVT-S U1 off the sum of the cells (`voltage_offset`)",
    "iso_silent": "the iso165C falls silent (`insulation_monitor_silent`)",
    "feedback_stuck": "an auxiliary contact stuck (`feedback_stuck`)",
    "weld": "a welded contactor, then an open command (`contactor_weld`)",
    "weld_pair": "both main contactors welded, then an open command (`contactor_weld` twice)",
    "precharge_short": "a short across the DC link (`precharge_short`)",
    "relay_silent": "the relay module answers nothing (bench: the simulated module falls silent)",
}
"""Fault kind -> what is injected: the grid's rows, in order."""

_OPEN_STRING = (
    "with every contactor open no current flows whatever the inverter asks; a current read "
    "there is the open-string check's (row offset_open in standby)"
)
_PRECHARGE_CURRENT = (
    "main positive is open: only the precharge current (pack - DC link) / R_pre, under 1 A, "
    "flows and the inverter is not connected yet"
)
_OFFSET_OPEN_ONLY = (
    "the check runs only while every contactor reads open: with the string closed (or "
    "precharging) an offset is indistinguishable from a real current, which only this sensor "
    "measures"
)
_STUCK_NEEDS_CURRENT = (
    "the stuck-channel check runs only while |current| > stuck_channel_current_a (5 A): at "
    "rest a cell voltage legitimately holds still"
)
_STUCK_TEMP_NEEDS_CURRENT = (
    "the stuck-channel check runs only while |current| > stuck_channel_current_a (5 A): at "
    "rest a cell temperature legitimately holds still"
)
_WELD_STANDBY = (
    "a contact welds while it closes on or carries current; in standby every contact is "
    "open and stays open (the plant's weld would close it, which no standby fault does)"
)
_WELD_PAIR_NEEDS_CURRENT = (
    "with no current through the string a welded pair shows only as auxiliary contacts that "
    "disagree with their coils (contactor_feedback_mismatch, row weld): the DC-link voltage "
    "test is off by default (contactor_weld_discharge_s) as the link may hold its voltage"
)
_SHORT_ONLY_PRECHARGING = (
    "a short across the DC link shows as such only while precharging: with main positive "
    "closed it is a short of the pack (an over-current: rows chg_oc, dis_oc), with the string "
    "open nothing drives it"
)
NOT_APPLICABLE: Final[dict[tuple[str, OperatingState], str]] = {
    ("chg_oc", "standby"): _OPEN_STRING,
    ("chg_oc", "precharge"): _PRECHARGE_CURRENT,
    ("dis_oc", "standby"): _OPEN_STRING,
    ("dis_oc", "precharge"): _PRECHARGE_CURRENT,
    ("stuck_cell", "standby"): _STUCK_NEEDS_CURRENT,
    ("stuck_cell", "precharge"): _STUCK_NEEDS_CURRENT + "; the precharge current is under 1 A",
    ("stuck_cell", "closed_idle"): _STUCK_NEEDS_CURRENT,
    ("stuck_temp", "standby"): _STUCK_TEMP_NEEDS_CURRENT,
    ("stuck_temp", "precharge"): _STUCK_TEMP_NEEDS_CURRENT + "; the precharge current is under 1 A",
    ("stuck_temp", "closed_idle"): _STUCK_TEMP_NEEDS_CURRENT,
    **{
        ("offset_open", s): _OFFSET_OPEN_ONLY
        for s in ("precharge", "closed_idle", "charging", "discharging")
    },
    **{
        ("offset_small", s): _OFFSET_OPEN_ONLY
        for s in ("precharge", "closed_idle", "charging", "discharging")
    },
    ("weld", "standby"): _WELD_STANDBY,
    ("weld_pair", "standby"): _WELD_STANDBY,
    ("weld_pair", "precharge"): (
        "main positive welding while the link charges bypasses the precharge resistor: the "
        "precharge check (precharge_failure) sees the link jump before any open command; row "
        "weld/precharge welds main negative alone"
    ),
    ("weld_pair", "closed_idle"): _WELD_PAIR_NEEDS_CURRENT,
    **{
        ("precharge_short", s): _SHORT_ONLY_PRECHARGING
        for s in ("standby", "closed_idle", "charging", "discharging")
    },
}
"""(fault kind, state) -> why that fault has no row in that state: it cannot occur there, or
the BMS cannot tell it from normal operation there (and says so by design)."""

KNOWN_GAPS: Final[dict[str, str]] = {}
"""Row id -> why that row, run as it should be, does not (yet) raise its code. A row listed
here is expected not to be ok; once it is, its entry must go (a test says so)."""


class Reaction(BaseModel):
    """Seconds from the first out-of-bounds sample (the plant's truth, or the injection for a
    discrete fault) to the first coil-off write the relay module received."""

    n: int = Field(ge=0)
    p50_s: float | None
    p99_s: float | None
    max_s: float | None


class SafeState(BaseModel):
    coils_off: bool
    """Every coil of the relay module reads off."""
    contactors: str | None
    """The master's contactor state in its pack state."""
    charge_limit_a: float | None
    discharge_limit_a: float | None


class RowResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    """`<kind>/<state>`."""
    kind: str
    """A key of `FAULT_KINDS`."""
    fault: str
    """The injected fault as given to `python -m services.plant inject` (or a bench action)."""
    state: OperatingState
    expected: list[ProtectionCode]
    level: Level
    """Level the row expects for its codes (fault: open the contactors)."""
    onset: str
    """What starts the reaction clock."""
    configured_delay_s: float | None
    early_by_s: float = Field(default=0.0, ge=0.0)
    """How much sooner than the configured delay a reaction may rightly come: a silent board's
    delay counts from the last sample the master got, up to one sample period before the
    injection."""
    repetitions: int = Field(ge=1)
    detected: list[str]
    """Every code raised at any level during the row (union over its repetitions)."""
    detected_level: Level | None
    reaction: Reaction
    detection: Reaction
    """Onset to the first pack state that carries an expected code (wall clock)."""
    safe_state: SafeState
    """As seen at the end of the last repetition, before the clear."""
    reached_safe_state: bool
    injected_in_state: bool
    """Every repetition injected its fault in the row's state (precharge: the precharge coil on
    and main positive off when the plant applied the fault)."""
    status: Status
    duration_s: float = Field(ge=0.0)
    """Wall time of the row, every repetition with its set-up and recovery."""
    note: str = ""


class MatrixResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str
    setup: str
    duration_s: float
    rows: list[RowResult]


def load(path: Path = DATA_FILE) -> MatrixResults | None:
    """The committed results, or None while there are none."""
    if not path.exists():
        return None
    return MatrixResults.model_validate(json.loads(path.read_text()))


def dump(results: MatrixResults, path: Path = DATA_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.model_dump(mode="json"), indent=1) + "\n")


def merge(old: MatrixResults, new: MatrixResults) -> MatrixResults:
    """`old` with the rows of `new` put in (same id: replaced); the durations follow."""
    fresh = {r.id: r for r in new.rows}
    kept = [r for r in old.rows if r.id not in fresh]
    dropped_s = sum(r.duration_s for r in old.rows if r.id in fresh)
    order = {f"{k}/{s}": i for i, (k, s) in enumerate(
        (k, s) for k in FAULT_KINDS for s in OPERATING_STATES)}  # fmt: skip
    rows = sorted([*kept, *new.rows], key=lambda r: order.get(r.id, len(order)))
    duration_s = old.duration_s - dropped_s + sum(r.duration_s for r in new.rows)
    return old.model_copy(update={"rows": rows, "duration_s": round(duration_s)})


def grid(results: MatrixResults) -> dict[tuple[str, OperatingState], RowResult]:
    """(fault kind, state) -> its row (a ValueError for two rows in one cell)."""
    cells: dict[tuple[str, OperatingState], RowResult] = {}
    for r in results.rows:
        key = (r.kind, r.state)
        if key in cells:
            raise ValueError(f"two rows for {r.kind} in {r.state}: {cells[key].id}, {r.id}")
        cells[key] = r
    return cells


def covered_codes(results: MatrixResults) -> set[str]:
    """Codes an ok row raised at its expected level or above."""
    return {c for r in results.rows if r.status == "ok" for c in r.expected if c in r.detected}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def matrix_markdown(results: MatrixResults | None) -> str:
    """The measured half of docs/fault-matrix.md (deterministic: a pure function of the file)."""
    lines = [
        "## Measured through the plant",
        "",
        "Generated from `docs/data/fault-matrix.json`, which `make fault-matrix` "
        "(`bench/fault_matrix.py`) writes: a real broker, the plant, a slave agent on Modbus TCP "
        "and the master with `--hardware devices`. Each row injects one fault kind into the plant "
        "in one operating state, every kind in every state it can occur in (the grid below; "
        "precharge: injected once the precharge coil is on, while the DC link charges). "
        "Reaction: from the first out-of-bounds sample (the plant's truth crossing the fault "
        "threshold, or the injection itself for a discrete fault) to the first coil write the "
        "relay module received after which every coil is off; `-` where no coil was on "
        "(standby). p50 and p99 are over the row's repetitions (n). Detection: "
        "from the same onset to the first pack state carrying the code. Safe state: every coil "
        "off, contactors `fault`, both limits 0 A (for a fault); limits 0 A in the directions "
        "concerned (alarm); the code flagged (warning). A reaction a little shorter than the "
        "configured delay means the measurement crossed before the truth did (noise, a sensor "
        "reading ahead of the cells it sits on). Rows with a known gap ran as they should but "
        "their code did not rise; what they ended in is shown as measured.",
        "",
    ]
    if results is None:
        return "\n".join([*lines, "No results committed yet.", ""])
    lines += [
        f"Run: `{results.command}`; {results.setup}; {results.duration_s:.0f} s in all, "
        f"{len(results.rows)} rows, {sum(r.status == 'ok' for r in results.rows)} ok.",
        "",
        *grid_markdown(results),
        "### Every row",
        "",
        "| Fault | State | Expected | Detected | Level | Delay ms | Reaction p50 / p99 ms (n) "
        "| Detection p50 ms | Safe state | Status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.rows:
        safe = r.safe_state
        limits = f"{_a(safe.charge_limit_a)}/{_a(safe.discharge_limit_a)} A"
        shown = f"coils {'off' if safe.coils_off else 'ON'}, {safe.contactors}, {limits}"
        reaction = (
            f"{_ms(r.reaction.p50_s)} / {_ms(r.reaction.p99_s)} ({r.reaction.n})"
            if r.reaction.n
            else "-"
        )
        status = r.status.replace("_", " ")
        if r.id in KNOWN_GAPS:
            status += f" (known gap: {KNOWN_GAPS[r.id]})"
        if r.note:
            status += f"; {r.note}"
        lines.append(
            f"| `{r.fault}` | {r.state.replace('_', ' ')} | "
            f"{', '.join(f'`{c}`' for c in r.expected)} | "
            f"{', '.join(f'`{c}`' for c in sorted(r.detected)) or '-'} | "
            f"{r.detected_level or '-'} | {_ms(r.configured_delay_s)} | {reaction} | "
            f"{_ms(r.detection.p50_s)} | {shown} | {status} |"
        )
    lines.append("")
    return "\n".join(lines)


def _grid_cell(row: RowResult | None, footnote: int | None) -> str:
    if row is None:
        return "**missing**" if footnote is None else f"n/a [{footnote}]"
    status = row.status.replace("_", " ")
    if row.reaction.n:
        return f"{status}, {_ms(row.reaction.p50_s)} ms"
    if row.detection.n:
        return f"{status}, det. {_ms(row.detection.p50_s)} ms"
    return status


def grid_markdown(results: MatrixResults) -> list[str]:
    """Fault kind x operating state: the status and the reaction p50 (detection p50 where no
    coil was on), or n/a with a numbered reason from `NOT_APPLICABLE`."""
    cells = grid(results)
    reasons: dict[str, int] = {}
    for key in ((k, s) for k in FAULT_KINDS for s in OPERATING_STATES):
        if key not in cells and key in NOT_APPLICABLE:
            reasons.setdefault(NOT_APPLICABLE[key], len(reasons) + 1)
    lines = [
        "### Fault x state",
        "",
        "Each cell: the row's status and its reaction p50 (onset to the coils off), or its "
        "detection p50 (`det.`) where no coil was on; `n/a` cells cannot occur in that state "
        "(the numbered reasons below the grid).",
        "",
        "| Fault | " + " | ".join(s.replace("_", " ") for s in OPERATING_STATES) + " |",
        "|---" * (len(OPERATING_STATES) + 1) + "|",
    ]
    for kind, label in FAULT_KINDS.items():
        shown = []
        for state in OPERATING_STATES:
            why = NOT_APPLICABLE.get((kind, state))
            row = cells.get((kind, state))
            shown.append(_grid_cell(row, None if row is not None or why is None else reasons[why]))
        lines.append(f"| `{kind}`: {label} | " + " | ".join(shown) + " |")
    lines += ["", *(f"{n}. {why}." for why, n in reasons.items()), ""]
    return lines


def _a(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
