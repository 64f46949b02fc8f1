"""The fault-injection matrix as data: what `bench/fault_matrix.py` measured, and what it cannot.

`bench/fault_matrix.py` runs a real stack on the simulated plant, injects each fault in an
operating state and writes what the BMS did to `docs/data/fault-matrix.json` (`MatrixResults`).
The docs render that committed file (`python -m shared.docgen`), never a new run, so `--check`
stays deterministic.

`NOT_REACHABLE` is the other half of the evidence: every protection code with no row in the
results says here why no injection reaches it (yet). A test holds the two together: each code
of `CODE_TABLE` is detected by at least one row, or has its reason here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.protection_codes import Level, ProtectionCode

DATA_FILE: Final = Path(__file__).resolve().parent.parent / "docs" / "data" / "fault-matrix.json"

OperatingState = Literal["standby", "precharge", "closed_idle", "charging", "discharging"]
Status = Literal["ok", "not_detected", "unsafe"]
"""ok: an expected code was raised and the row reached its safe state; not_detected: no
expected code within the row's timeout; unsafe: detected, but the safe state was not reached."""

NOT_REACHABLE: Final[dict[ProtectionCode, str]] = {
    ProtectionCode.CONTACTOR_WELDED: (
        "caught first by another code: row weld/discharging welds main positive and opens; main "
        "negative still breaks the string, so no current flows after the open and the DC-link "
        "voltage test is off by default (contactor_weld_discharge_s); the auxiliary contact "
        "disagrees with its coil and contactor_feedback_mismatch trips (safe state reached). "
        "A welded pair is covered by tests/master_core/test_supervisor.py"
    ),
    ProtectionCode.STUCK_TEMPERATURE_CHANNEL: (
        "not reachable within the matrix's time bound: the check needs 600 identical samples "
        "(a minute at 10 Hz) while current flows and the other temperatures of the module move; "
        "cell temperatures move by hundredths of a degree a minute at the matrix's currents"
    ),
}
"""Code -> why no ok row of the matrix raises it: no injection reaches it, or (said so) the
row that injects its cause is caught by another code."""

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
    fault: str
    """The injected fault as given to `python -m services.plant inject` (or a bench action)."""
    state: OperatingState
    expected: list[ProtectionCode]
    level: Level
    """Level the row expects for its codes (fault: open the contactors)."""
    onset: str
    """What starts the reaction clock."""
    configured_delay_s: float | None
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
    status: Status
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
        "and the master with `--hardware devices`. Each row injects one fault into the plant in "
        "one operating state. Reaction: from the first out-of-bounds sample (the plant's truth "
        "crossing the fault threshold, or the injection itself for a discrete fault) to the first "
        "coil-off write the relay module received; `-` where no coil was on (standby). Detection: "
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
        f"Run: `{results.command}`; {results.setup}; {results.duration_s:.0f} s in all.",
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
    lines += [
        "",
        "### Codes no row raises",
        "",
        "| Code | Why |",
        "|---|---|",
        *(f"| `{code}` | {why} |" for code, why in NOT_REACHABLE.items()),
        "",
    ]
    return "\n".join(lines)


def _a(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
