"""The chaos suite as data: what `bench/chaos.py` measured when the stack was broken on purpose.

`bench/chaos.py` runs a real stack (mosquitto, slave agent, master, Modbus and CAN gateways)
in a network namespace of its own, kills and cuts its parts, fuzzes its inputs and writes
`docs/data/chaos.json` (`ChaosResults`). The docs render that committed file
(`python -m shared.docgen`), never a new run, so `--check` stays deterministic.

Each figure is None where the scenario does not measure it (rendered `-`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

DATA_FILE: Final = Path(__file__).resolve().parent.parent / "docs" / "data" / "chaos.json"

SOC_ERROR_LIMIT_PCT: Final = 0.05
"""SOC after a master kill vs. the last SOC published before it, in percentage points: at most
one persist period (1 s) of counting may be lost, 0.022 points at 80 A on 100 Ah."""


class ScenarioResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    what: str
    """What the scenario does, in one line."""
    planned: int = Field(ge=0)
    """Repetitions or messages the run asked for."""
    done: int = Field(ge=0)
    bound_s: float
    took_s: float
    back_online_p50_s: float | None = None
    back_online_max_s: float | None = None
    """From the end of the fault (restart, restore, last junk) to contactors closed with no
    fault (for the gateways: their output flowing again)."""
    events_lost: int | None = None
    """Events in the master's SQLite log that the persistent subscriber never received."""
    duplicate_commands_executed: int | None = None
    """Executions of a command beyond its first (resent captured bytes)."""
    max_pack_state_gap_s: float | None = None
    comm_loss_timeout_s: float | None = None
    """The limit the gap must stay under: module_timeout_periods × sample period + ride-through."""
    soc_error_max_pct: float | None = None
    crashes: int = Field(0, ge=0)
    """Service processes that exited without being killed by the bench."""
    modbus_out_of_spec: int | None = None
    counters: dict[str, int] = Field(default_factory=dict)
    """Counters the services published that this scenario moved (deltas)."""
    note: str = ""

    def failures(self) -> list[str]:
        """The must-hold figures that did not hold; empty when the scenario passed."""
        bad = []
        if self.done < self.planned:
            bad.append(f"ran {self.done} of {self.planned} within its bound")
        for name in ("events_lost", "duplicate_commands_executed", "modbus_out_of_spec"):
            value = getattr(self, name)
            if value:
                bad.append(f"{name} = {value}")
        if self.crashes:
            bad.append(f"crashes = {self.crashes}")
        gap, limit = self.max_pack_state_gap_s, self.comm_loss_timeout_s
        if gap is not None and limit is not None and gap >= limit:
            bad.append(f"pack-state gap {gap:.3f} s >= comm-loss timeout {limit:g} s")
        if self.soc_error_max_pct is not None and self.soc_error_max_pct > SOC_ERROR_LIMIT_PCT:
            bad.append(f"SOC error {self.soc_error_max_pct:.4f} % > {SOC_ERROR_LIMIT_PCT} %")
        return bad


class ChaosResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str
    setup: str
    duration_s: float
    scenarios: list[ScenarioResult]


def load(path: Path = DATA_FILE) -> ChaosResults | None:
    """The committed results, or None while there are none."""
    if not path.exists():
        return None
    return ChaosResults.model_validate(json.loads(path.read_text()))


def dump(results: ChaosResults, path: Path = DATA_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.model_dump(mode="json"), indent=1) + "\n")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def chaos_markdown(results: ChaosResults | None) -> str:
    """docs/chaos.md (deterministic: a pure function of the committed file)."""
    lines = [
        "# Chaos suite",
        "",
        "Generated from `docs/data/chaos.json`, which `make chaos` (`bench/chaos.py`) writes; "
        "`python -m shared.docgen` renders it; do not edit by hand.",
        "",
        "A real stack in a network namespace of its own: mosquitto (persistence on), the slave "
        "agent, the master (`BMS_HARDWARE=simulated`, its SQLite log), the Modbus gateway on "
        "TCP and the CAN gateway on an slcan adapter (a socat pty pair); every service reaches "
        "the broker through its own fault proxy (`shared/netfault.py`). Each scenario has a "
        "time bound and starts with a freshly started master (its hourly budget of automatic "
        "recoveries from a communication loss unspent) and from closed contactors with no "
        "fault. Where that budget was spent within a scenario, the bench steps in as the "
        "operator would (`reset_faults` after 10 s) and the note says how often.",
        "",
        "- **Back online**: from the end of the fault (restart, restore) to a pack state with "
        "the contactors closed and no fault; for the gateways, to their output flowing again.",
        "- **Events lost**: events in the master's SQLite log that a persistent MQTT subscriber "
        "(QoS 1, a session that outlives the broker restart) never received. Must be 0.",
        "- **Duplicated commands executed**: captured `contactors close` bytes published again "
        "(at once, after a broker kill, after a master kill); executions counted in the "
        "master's event log. Must be 0.",
        "- **Max pack-state gap**: the longest interval between the time stamps of two "
        "consecutive pack states the master published while the fuzz ran (its loop never "
        "stalled longer); must stay under the comm-loss timeout. The longest gap between their "
        "arrivals at the bench, which also decodes the fuzz sent to `pack/state`, is in the "
        "notes.",
        f"- **SOC error**: the SOC the master publishes after a kill at 80 A against the last "
        f"SOC it published before it, in percentage points; at most {SOC_ERROR_LIMIT_PCT} %.",
        "- **Crashes**: service processes that exited without the bench killing them. Must be 0.",
        "- **Modbus out of spec**: replies that break the Modbus specification for the request "
        "(the oracle: `services/modbus_gateway/conformance.py` for refused requests, the "
        "reply layouts of the specification for served ones), or no reply where one is due. "
        "Must be 0.",
        "",
    ]
    if results is None:
        return "\n".join([*lines, "No results committed yet.", ""])
    lines += [
        f"Run: `{results.command}`; {results.setup}; {results.duration_s:.0f} s in all.",
        "",
        "| Scenario | Done / planned | Took s (bound) | Back online p50 / max s | Events lost "
        "| Duplicated commands executed | Max pack-state gap s (limit) | SOC error % "
        "| Crashes | Modbus out of spec | Result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.scenarios:
        online = (
            "-"
            if r.back_online_p50_s is None
            else f"{_s(r.back_online_p50_s)} / {_s(r.back_online_max_s)}"
        )
        gap = (
            "-"
            if r.max_pack_state_gap_s is None
            else f"{r.max_pack_state_gap_s:.3f} ({r.comm_loss_timeout_s:g})"
        )
        soc = "-" if r.soc_error_max_pct is None else f"{r.soc_error_max_pct:.4f}"
        bad = r.failures()
        result = "ok" if not bad else "**" + "; ".join(bad) + "**"
        lines.append(
            f"| `{r.name}`: {r.what} | {r.done} / {r.planned} | {r.took_s:.0f} ({r.bound_s:.0f}) "
            f"| {online} | {_n(r.events_lost)} | {_n(r.duplicate_commands_executed)} | {gap} "
            f"| {soc} | {r.crashes} | {_n(r.modbus_out_of_spec)} | {result} |"
        )
    lines += ["", "## Notes and counters", ""]
    for r in results.scenarios:
        counters = ", ".join(f"`{k}` {v}" for k, v in sorted(r.counters.items()))
        text = "; ".join(t for t in (r.note, f"counters: {counters}" if counters else "") if t)
        if text:
            lines.append(f"- `{r.name}`: {text}")
    lines.append("")
    return "\n".join(lines)
