"""A draft checked by the shared configuration model, each problem placed at its field."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from services.config_ui.wizard.fields import hidden_paths, known_paths
from services.config_ui.wizard.steps import STEPS, in_sections, step, step_of_path
from shared.config import (
    SystemConfig,
    explain_errors,
)

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]]*): (.*)$", re.DOTALL)


def _flat_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            yield path
            yield from _flat_keys(v, path)


def _place(line: str, known: frozenset[str] | set[str]) -> tuple[str, str]:
    """(path, message) of one `explain_errors` line."""
    match = _LINE.match(line)
    if match is None:
        return "", line
    raw, message = match.groups()
    parts = raw.split(".")
    if parts[0] not in known:
        return "", line
    for i in range(len(parts), 0, -1):
        path = ".".join(parts[:i])
        if path in known:
            rest = ".".join(parts[i:])
            return path, f"{rest}: {message}" if rest else message
    return "", line  # unreachable: parts[0] is known


def validate(draft: Mapping[str, Any]) -> tuple[SystemConfig | None, dict[str, list[str]]]:
    """The validated configuration, or None and the problems by field path. Never raises.

    Paths are field paths, group paths ("protection.cell_overvoltage") for problems of a whole
    quantity, section paths, or "" for problems without a path.
    """
    try:
        return SystemConfig.model_validate(draft), {}
    except ValidationError as exc:
        lines = explain_errors(exc)
    except Exception as exc:  # a validator tripping over garbage input; reported, not raised
        lines = [f"the configuration could not be checked: {exc}"]
    known = (set(_flat_keys(draft)) - hidden_paths()) | known_paths()
    errors: dict[str, list[str]] = {}
    for line in lines:
        path, message = _place(line, known)
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
