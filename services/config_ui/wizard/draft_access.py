"""Reading and writing a draft (a configuration's JSON form, perhaps invalid) by dotted path."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from shared.config import (
    get_preset,
)
from shared.config.limits import CELLS_IN_SERIES_MAX


class Missing:
    """Marker for a path the draft does not have."""


MISSING = Missing()


def get_path(node: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def set_path(root: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = root
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            # A missing or malformed section is rebuilt so that the form values land somewhere.
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def plain(obj: Any) -> Any:
    """A deep copy with plain dicts, so the caller's draft is never mutated."""
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    return obj


def number(value: Any) -> float:
    """A finite number from the draft; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"not a finite number: {value!r}")
    return result


def same(a: Any, b: Any) -> bool:
    """Equal as form values: lists equal tuples and 100 equals 100.0, but True is not 1."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def chemistry_name(draft: Mapping[str, Any]) -> str | None:
    name = get_path(draft, "chemistry")
    if not isinstance(name, str):
        return None
    try:
        return get_preset(name).name
    except ValueError:
        return None


_OCV_TABLE = ("ocv_table_soc_pct", "ocv_table_v")


def ocv_source(draft: Mapping[str, Any]) -> str:
    """The citation of the draft's OCV table: the override's, else the preset's table's.

    An overridden table without a source of its own has none ('').
    """
    own = get_path(draft, "chemistry_overrides.ocv_source")
    if isinstance(own, str) and own.strip():
        return own.strip()
    overridden = (get_path(draft, f"chemistry_overrides.{k}") for k in _OCV_TABLE)
    chem = chemistry_name(draft)
    if chem is None or any(v not in (None, MISSING) for v in overridden):
        return ""
    return get_preset(chem).ocv_source


def total_cells(draft: Mapping[str, Any]) -> int | None:
    counts = get_path(draft, "topology.module_cell_counts")
    try:
        if isinstance(counts, list | tuple):
            total = sum(int(number(c)) for c in counts)
        else:
            total = int(number(get_path(draft, "topology.modules"))) * int(
                number(get_path(draft, "topology.cells_per_module"))
            )
    except ValueError:
        return None
    return total if 1 <= total <= CELLS_IN_SERIES_MAX else None
