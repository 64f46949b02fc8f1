"""A draft checked by the shared configuration model, each problem placed at its field."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from services.config_ui.wizard.fields import (
    full_label,
    hidden_paths,
    known_paths,
    leaf_of,
    unit_of,
)
from services.config_ui.wizard.steps import STEPS, in_sections, step, step_of_path
from shared.config import SystemConfig
from shared.config.errors import explain_error

_PATH = r"[A-Za-z_][A-Za-z0-9_.\[\]]*"
# "path: message", or "path, path, ...: message" for one problem of several settings
_LINE = re.compile(rf"^({_PATH}(?:, {_PATH})*): (.*)$", re.DOTALL)


def _flat_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            yield path
            yield from _flat_keys(v, path)


def _place_one(
    raw: str, message: str, line: str, known: frozenset[str] | set[str]
) -> tuple[str, str]:
    parts = raw.split(".")
    if parts[0] not in known:
        return "", line
    for i in range(len(parts), 0, -1):
        path = ".".join(parts[:i])
        if path in known:
            rest = ".".join(parts[i:])
            return path, f"{rest}: {message}" if rest else message
    return "", line  # unreachable: parts[0] is known


def _place(line: str, known: frozenset[str] | set[str]) -> list[tuple[str, str]]:
    """(path, message) of one `explain_errors` line: one per field a cross-field problem
    names, so it shows at each of them."""
    match = _LINE.match(line)
    if match is None:
        return [("", line)]
    raws, message = match.groups()
    return [_place_one(raw, message, line, known) for raw in raws.split(", ")]


# pydantic's range errors: (words, the bound's key in the error's ctx, input beyond it when)
_RANGES: dict[str, tuple[str, str]] = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("greater than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}
# Units people read in a smaller or larger form: (unit, factor, form), the first that fits.
_FORMS: dict[str, tuple[tuple[float, float, str], ...]] = {
    "V": ((1.0, 1.0, "V"), (0.0, 1e3, "mV")),
    "A": ((1.0, 1.0, "A"), (0.0, 1e3, "mA")),
    "Ω": ((1e6, 1e-6, "MΩ"), (1e3, 1e-3, "kΩ"), (0.0, 1.0, "Ω")),
    "s": ((1.0, 1.0, "s"), (0.0, 1e3, "ms")),
    "F": ((1.0, 1.0, "F"), (1e-3, 1e3, "mF"), (0.0, 1e6, "µF")),
}
_SMALLER = {"V": "mV", "A": "mA", "s": "ms"}


def quantity(value: float, unit: str) -> str:
    """A value with its unit in the form people read: 0.5 V -> '500 mV', 20000 Ω -> '20 kΩ'."""
    if value == 0.0:
        return f"0 {unit}".rstrip()
    for at_least, factor, form in _FORMS.get(unit, ()):
        if abs(value) >= at_least:
            return f"{round(value * factor, 9):g} {form}"
    return f"{value:g} {unit}".rstrip()


def _beyond(value: float, kind: str, bound: float) -> bool:
    return {
        "ge": value < bound, "gt": value <= bound, "le": value > bound, "lt": value >= bound,
    }[kind]  # fmt: skip


def _range_message(err: Any, draft: Mapping[str, Any]) -> str | None:
    """'Balancing threshold must be at most 500 mV (got 20 V; 20 mV is 0.02 V)' for a
    range error at a form field; None for other errors."""
    if err.get("type") not in _RANGES:
        return None
    leaf = leaf_of(".".join(str(part) for part in err["loc"]))
    words, kind = _RANGES[err["type"]]
    bound, got = (err.get("ctx") or {}).get(kind), err.get("input")
    if leaf is None or not isinstance(bound, int | float):
        return None
    # the model's bound and input, in the model's unit (quantity() picks the form people read)
    unit = leaf.model_unit if leaf.scale != 1.0 else unit_of(leaf, draft)
    text = f"{full_label(leaf)} must be {words} {quantity(bound, unit)}"
    if isinstance(got, int | float) and not isinstance(got, bool):
        text += f" (got {quantity(got, unit)}"
        smaller = _SMALLER.get(unit)
        if smaller and not _beyond(got / 1e3, kind, bound):
            # 20 typed for 20 mV: the field is in the larger unit
            text += f"; {got:g} {smaller} is {got / 1e3:g} {unit}"
        text += ")"
    return text


def _explain(err: Any, draft: Mapping[str, Any]) -> list[str]:
    message = _range_message(err, draft)
    if message is None:
        return explain_error(err)
    return [f"{'.'.join(str(part) for part in err['loc'])}: {message}"]


def validate(draft: Mapping[str, Any]) -> tuple[SystemConfig | None, dict[str, list[str]]]:
    """The validated configuration, or None and the problems by field path. Never raises.

    Paths are field paths, group paths ("protection.cell_overvoltage") for problems of a whole
    quantity, section paths, or "" for problems without a path.
    """
    try:
        return SystemConfig.model_validate(draft), {}
    except ValidationError as exc:
        lines = [line for err in exc.errors() for line in _explain(err, draft)]
    except Exception as exc:  # a validator tripping over garbage input; reported, not raised
        lines = [f"the configuration could not be checked: {exc}"]
    known = (set(_flat_keys(draft)) - hidden_paths()) | known_paths()
    errors: dict[str, list[str]] = {}
    for line in lines:
        for path, message in _place(line, known):
            found = errors.setdefault(path, [])
            if message not in found:
                found.append(message)
    return None, errors


def errors_for_step(key: str, errors: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The errors whose path lies in the step's sections.

    The review step, which owns no section, gets the errors no other step shows (system_id,
    unknown keys, problems without a path).
    """
    sections = step(key).sections
    if key == "review":
        return {p: list(m) for p, m in errors.items() if m and step_of_path(p) is None}
    return {p: list(m) for p, m in errors.items() if m and in_sections(p, sections)}


def first_step_with_errors(errors: Mapping[str, list[str]]) -> str | None:
    """The first step showing one of `errors` (the review step for errors of no step)."""
    for s in STEPS:
        if errors_for_step(s.key, errors):
            return s.key
    return None


def problems_once(errors: Mapping[str, list[str]]) -> list[tuple[str, str]]:
    """Each distinct message once, after the paths that show it ("a, b"; "" for none): a
    problem of several settings sits at each field but is one line of a summary."""
    paths: dict[str, list[str]] = {}
    for path, messages in errors.items():
        for message in messages:
            found = paths.setdefault(message, [])
            if path and path not in found:
                found.append(path)
    return [(", ".join(p), message) for message, p in paths.items()]
