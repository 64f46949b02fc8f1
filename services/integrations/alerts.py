"""Alert notifications: which events become a message, and the message in words (pure: the
clock and the latest pack state are passed in; delivery is `notify.py`'s).

A rule names the lowest level it wants (warning, alarm or fault), optionally the codes, a
quiet period and whether a clear is notified. Per rule, system, code and level a raise is
notified at most once per quiet period (a flapping alarm does not flood anyone; one raised
again after it is notified again, as a reminder), and a clear is notified once, and only
after a notified raise, so every notified alarm is seen to end.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.messages import CellLocation, Event, PackState
from shared.protection_codes import spec_of

LEVEL_RANK = {"info": 0, "warning": 1, "alarm": 2, "fault": 3}


class AlertRule(BaseModel):
    """One rule of BMS_ALERT_RULES (a JSON list of these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("alerts", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    urls: list[str] = Field(min_length=1, max_length=20)
    """Apprise URLs (https://github.com/caronc/apprise/wiki): mailto://, json://, ntfy://, ..."""
    min_level: Literal["warning", "alarm", "fault"] = "alarm"
    codes: list[str] = Field(default_factory=list, max_length=200)
    """Only these codes; empty: every code at or above `min_level`."""
    quiet_period_s: float = Field(300.0, ge=0.0, le=7 * 86400)
    notify_clear: bool = True


@dataclass(frozen=True)
class Alert:
    rule: str
    urls: tuple[str, ...]
    system: str
    code: str
    kind: Literal["raise", "clear"]
    level: str
    title: str
    body: str


LOCATION_OF: tuple[tuple[str, str, str], ...] = (
    ("cell_overvoltage", "cell_v_max_at", "cell"),
    ("cell_undervoltage", "cell_v_min_at", "cell"),
    ("overtemp", "temp_max_at", "sensor"),
    ("undertemp", "temp_min_at", "sensor"),
)
"""Code (part) -> the pack state's field locating its extreme, and what sits there."""


def location(code: str, state: PackState | None) -> str:
    for part, attr, what in LOCATION_OF:
        if part in code:
            where: CellLocation | None = getattr(state, attr) if state is not None else None
            if where is None:
                return f"{what} unknown"
            return f"module {where.module + 1}, {what} {where.index + 1} (counted from 1)"
    return "the pack"


def _number(value: object) -> str:
    if value is None:
        return "unknown"
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(system: str, event: Event, state: PackState | None, now_s: float) -> tuple[str, str]:
    """(title, body) in words: system, what, where, the value and the threshold."""
    spec = spec_of(event.code)
    what = spec.description.rstrip(".") if spec is not None else event.code.replace("_", " ")
    verb = "raised" if event.kind == "raise" else "cleared"
    title = f"[BMS {system}] {event.level.upper()} {verb}: {what}"
    when = dt.datetime.fromtimestamp(event.ts or now_s, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"System {system}: {event.level} {verb} - {what} ({event.code}).",
        f"Where: {location(event.code, state)}.",
        f"Value: {_number(event.values.get('value'))}, "
        f"threshold: {_number(event.values.get('threshold'))}.",
        f"Time: {when} UTC.",
    ]
    if event.text:
        lines.append(f"The master says: {event.text}")
    return title, "\n".join(lines)


@dataclass
class AlertPolicy:
    rules: tuple[AlertRule, ...]
    _last_raise: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    _open: set[tuple[str, str, str, str]] = field(default_factory=set)
    suppressed: int = 0

    def consider(
        self, system: str, event: Event, state: PackState | None, now_s: float
    ) -> list[Alert]:
        if event.kind not in ("raise", "clear"):
            return []
        out: list[Alert] = []
        for rule in self.rules:
            if LEVEL_RANK[event.level] < LEVEL_RANK[rule.min_level]:
                continue
            if rule.codes and event.code not in rule.codes:
                continue
            key = (rule.name, system, event.code, event.level)
            if event.kind == "raise":
                last = self._last_raise.get(key)
                if last is not None and 0.0 <= now_s - last < rule.quiet_period_s:
                    self.suppressed += 1
                    continue
                self._last_raise[key] = now_s
                self._open.add(key)
            else:
                if key not in self._open:
                    continue
                self._open.discard(key)
                if not rule.notify_clear:
                    continue
            title, body = describe(system, event, state, now_s)
            out.append(Alert(rule.name, tuple(rule.urls), system, event.code, event.kind,
                             event.level, title, body))  # fmt: skip
        return out
