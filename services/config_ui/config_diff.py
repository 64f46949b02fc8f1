"""Differences between two configurations, as changed leaf values by dotted path.

Works on JSON-shaped data such as `SystemConfig.model_dump(mode="json")`. Dict keys must not
contain "." or "[" (true of every configuration field), so a path names exactly one value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ChangeKind = Literal["added", "removed", "changed"]

IGNORED_PATHS = frozenset({"config_version"})
"""Top-level keys left out of a diff: the version number changes with every save."""

_INDEX_RE = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class DiffEntry:
    path: str
    """Dotted path, list items as "profiles[1]": "protection.cell_overvoltage.fault.threshold"."""
    old: Any
    """None when added."""
    new: Any
    """None when removed."""
    change: ChangeKind


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _plain(value: Any) -> Any:
    """Tuples become lists (a model dump and its JSON round trip then compare equal)."""
    if _is_list(value):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path.

    Lists holding a dict are indexed ("profiles[0].name"); other lists and tuples stay whole
    values, as lists. Empty dicts are leaves, so `unflatten` restores them.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        _flatten_value(value, path, out)
    return out


def _flatten_value(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        out.update(flatten(value, path))
    elif _is_list(value) and any(isinstance(item, Mapping) for item in value):
        for index, item in enumerate(value):
            _flatten_value(item, f"{path}[{index}]", out)
    else:
        out[path] = _plain(value)


def _parse_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for segment in path.split("."):
        bracket = segment.find("[")
        name, indices = (segment, "") if bracket < 0 else (segment[:bracket], segment[bracket:])
        parts.append(name)
        parts.extend(int(i) for i in _INDEX_RE.findall(indices))
    return parts


def _path_key(path: str) -> tuple[tuple[int, str, int], ...]:
    # list indices sort numerically: profiles[2] before profiles[10]
    return tuple((1, "", p) if isinstance(p, int) else (0, p, 0) for p in _parse_path(path))


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested data back from `flatten` output (indexed list items become lists again)."""
    root: dict[str, Any] = {}
    for path, value in flat.items():
        parts = _parse_path(path)
        node: dict[Any, Any] = root
        # index steps are built as {index: item} and turned into lists at the end
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    result = _lists_from_indices(root)
    assert isinstance(result, dict)
    return result


def _lists_from_indices(node: Any) -> Any:
    if not isinstance(node, dict) or not node:
        return node
    converted = {k: _lists_from_indices(v) for k, v in node.items()}
    if all(isinstance(k, int) for k in converted):
        indices = sorted(converted)
        if indices != list(range(len(indices))):
            raise ValueError(f"list indices {indices} are not 0..{len(indices) - 1}")
        return [converted[i] for i in indices]
    return converted


def _same(a: Any, b: Any) -> bool:
    """Exact equality, but True is not 1 and NaN equals NaN (a leaf that did not change)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a) is not type(b) and not (isinstance(a, int | float) and isinstance(b, int | float)):
        return False
    result: bool = a == b
    return result


def config_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[DiffEntry]:
    """Changed leaves from `old` to `new`, sorted by path; `old` None means all were added.

    The top-level "config_version" is ignored. Floats compare exactly.
    """
    before = {} if old is None else flatten(old)
    after = flatten(new)
    entries: list[DiffEntry] = []
    for path in before.keys() | after.keys():
        if path in IGNORED_PATHS:
            continue
        if path not in before:
            entries.append(DiffEntry(path, None, after[path], "added"))
        elif path not in after:
            entries.append(DiffEntry(path, before[path], None, "removed"))
        elif not _same(before[path], after[path]):
            entries.append(DiffEntry(path, before[path], after[path], "changed"))
    entries.sort(key=lambda e: _path_key(e.path))
    return entries


def apply_diff(data: Mapping[str, Any], entries: Iterable[DiffEntry]) -> dict[str, Any]:
    """`data` with the entries applied: `apply_diff(old, config_diff(old, new))` equals `new`
    (apart from the ignored top-level keys, which keep the value in `data`)."""
    flat = flatten(data)
    for entry in entries:
        if entry.change == "removed":
            flat.pop(entry.path, None)
        else:
            flat[entry.path] = entry.new
    return unflatten(flat)


def format_value(value: Any) -> str:
    """A leaf value as a person reads it: JSON-like, lists in brackets, null for None."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)
