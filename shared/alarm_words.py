"""Active protection codes in words for people: what it is, where, against what, since when
and what clears it (the web application's alarm list and banner; alerts may use it too).

Pure: from the code table (`shared.protection_codes`), the pack state (which codes are
active) and the event that raised the level (its value, threshold, release and unit, the cell
or sensor that held the extreme then, and its time). Places are numbered from 1 for people:
"M4 · C9" = module 4, cell 9 of that module; the contract keeps 0-based indices. Whatever is
not known is None, never a guess: a code raised before the reader started has no raise event,
so its place, value and start are None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.messages import CellLocation, Event, PackState
from shared.protection_codes import Level, spec_of

LEVELS: tuple[Level, ...] = ("fault", "alarm", "warning")
"""Most severe first: the order of the list and of the banner."""


@dataclass(frozen=True)
class AlarmWords:
    code: str
    level: Level
    title: str
    """ "Cell over-voltage (fault)"."""
    explanation: str
    place: str | None
    """ "M4 · C9" (module and index within it, from 1)."""
    place_detail: str | None
    """ "module 4, cell 9 (cell 51 in series)"."""
    reading: str | None
    """ "3.812 V against its 3.800 V threshold"."""
    since_ts: float | None
    """When this level was raised (the raise event's time), or None when not seen."""
    clears: str


def place_of(
    location: CellLocation, *, sensor: bool, cells_per_module: Sequence[int] = ()
) -> tuple[str, str]:
    """("M4 · C9", "module 4, cell 9 (cell 51 in series)"), or T for a temperature sensor;
    the series number only when `cells_per_module` (from the configuration) covers the module."""
    kind, short = ("sensor", "T") if sensor else ("cell", "C")
    label = f"M{location.module + 1} · {short}{location.index + 1}"
    detail = f"module {location.module + 1}, {kind} {location.index + 1}"
    if not sensor and location.module < len(cells_per_module):
        series = sum(cells_per_module[: location.module]) + location.index
        detail += f" (cell {series + 1} in series)"
    return label, detail


def _raised_at(event: Event | None) -> CellLocation | None:
    """Where the extreme was when the level was raised (the master's raise event): the live
    extreme may have moved since (a runaway cell leaves its measurement range)."""
    if event is None:
        return None
    module, index = event.values.get("module"), event.values.get("index")
    if type(module) is not int or type(index) is not int or module < 0 or index < 0:
        return None
    return CellLocation(module=module, index=index)


def _number(value: float, unit: str) -> str:
    digits = 3 if unit == "V" and abs(value) < 10 else 1
    return f"{value:.{digits}f} {unit}".rstrip()


def _reading(event: Event | None) -> str | None:
    if event is None:
        return None
    value, threshold = event.values.get("value"), event.values.get("threshold")
    unit = event.values.get("unit")
    unit = unit if isinstance(unit, str) else ""
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        return None
    against = f"its {_number(threshold, unit)} threshold"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return f"unknown, against {against}"
    return f"{_number(value, unit)} against {against}"


def _clears(code: str, level: Level, event: Event | None) -> str:
    spec = spec_of(code)
    release = "past its release value"
    if event is not None:
        rel, thr = event.values.get("release"), event.values.get("threshold")
        unit = event.values.get("unit")
        if isinstance(rel, int | float) and isinstance(thr, int | float) and rel != thr:
            side = "below" if rel < thr else "above"
            release = f"{side} {_number(rel, unit if isinstance(unit, str) else '')}"
    if level != "fault":
        return f"Clears by itself {release}."
    if spec is not None and spec.reset == "service":
        return (
            "Latched: needs a service reset by an admin, with a reason (the cell may be damaged)."
        )
    return f"Latched: an operator reset clears it once the value is {release}."


def describe(
    code: str,
    level: Level,
    pack: PackState,
    raised: Event | None = None,
    cells_per_module: Sequence[int] = (),
) -> AlarmWords:
    """One active level of one code in words; `raised`: the event that raised it, if seen."""
    spec = spec_of(code)
    title = spec.title if spec is not None else code.replace("_", " ").capitalize()
    explanation = spec.description if spec is not None else "A code this version does not know."
    place = detail = None
    location = _raised_at(raised)
    if spec is not None and spec.located_at is not None and location is not None:
        sensor = spec.located_at.startswith("temp")
        place, detail = place_of(location, sensor=sensor, cells_per_module=cells_per_module)
    return AlarmWords(
        code=code, level=level, title=f"{title} ({level})", explanation=explanation,
        place=place, place_detail=detail, reading=_reading(raised),
        since_ts=None if raised is None else raised.ts, clears=_clears(code, level, raised),
    )  # fmt: skip


def active_words(
    pack: PackState,
    raised: dict[tuple[str, str], Event],
    cells_per_module: Sequence[int] = (),
) -> list[AlarmWords]:
    """Every active code of `pack`, faults first; `raised[(code, level)]`: its raise event."""
    by_level = {"fault": pack.faults, "alarm": pack.alarms, "warning": pack.warnings}
    return [
        describe(code, level, pack, raised.get((code, level)), cells_per_module)
        for level in LEVELS
        for code in by_level[level]
    ]
