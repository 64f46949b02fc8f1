"""New drafts, and a submitted form applied to a draft (with re-derivation from the preset)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.config_ui.wizard.draft_access import (
    MISSING,
    chemistry_name,
    get_path,
    number,
    plain,
    same,
    set_path,
    total_cells,
)
from services.config_ui.wizard.fields import parse_value, step_leaves
from shared.config import (
    ChemistryOverrides,
    SystemConfig,
)


def new_draft(
    system_id: str,
    chemistry: str = "LFP",
    *,
    modules: int = 2,
    cells_per_module: int = 8,
    cell_capacity_ah: float = 100.0,
) -> dict[str, Any]:
    """A complete draft derived from a chemistry preset; ValueError if the arguments are not."""
    config = SystemConfig.from_preset(
        chemistry,
        system_id=system_id,
        modules=modules,
        cells_per_module=cells_per_module,
        cell_capacity_ah=cell_capacity_ah,
    )
    return draft_from_config(config)


def draft_from_config(config: SystemConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


@dataclass(frozen=True)
class FormResult:
    draft: dict[str, Any]
    errors: dict[str, list[str]]
    """Parse errors by field path; those fields keep their old value."""
    rederived: bool
    """True when the chemistry/size dependent sections were derived from the preset again."""


# Sections that follow from chemistry, capacity and cell count (see SystemConfig.from_preset).
_DERIVED_PATHS = (
    "protection",
    "balancing",
    "contactors.precharge_voltage_diff_v",
    "interfaces.can.profiles",
)
_SIZING_STEPS = frozenset({"chemistry", "cells", "topology"})


def _sizing(draft: Mapping[str, Any]) -> tuple[str, float, int] | None:
    chem = chemistry_name(draft)
    cells = total_cells(draft)
    try:
        capacity = number(get_path(draft, "cell_capacity_ah"))
    except ValueError:
        return None
    if chem is None or cells is None:
        return None
    return chem, capacity, cells


def _rederive(old: Mapping[str, Any], new: dict[str, Any]) -> bool:
    """Derive the chemistry/size dependent sections again when chemistry or size changed."""
    old_chem, new_chem = chemistry_name(old), chemistry_name(new)
    if new_chem is not None and old_chem != new_chem:
        # Overrides are datasheet values of the previous chemistry's cell.
        new["chemistry_overrides"] = ChemistryOverrides().model_dump(mode="json")
    before, after = _sizing(old), _sizing(new)
    if after is None or before == after:
        return False
    chem, capacity, cells = after
    try:
        # The derived sections depend only on the total cell count, so one module of `cells`
        # also serves strings with module_cell_counts.
        reference = SystemConfig.from_preset(
            chem, modules=1, cells_per_module=cells, cell_capacity_ah=capacity
        ).model_dump(mode="json")
    except ValueError:  # includes ValidationError: e.g. a capacity outside the model's range
        return False
    for path in _DERIVED_PATHS:
        set_path(new, path, get_path(reference, path))
    return True


def apply_form(key: str, draft: Mapping[str, Any], form: Mapping[str, str]) -> FormResult:
    """Set the fields of step `key` from the posted form (all values text).

    A checkbox or multiselect missing from the form is unticked / empty (HTML leaves them out);
    other fields missing from the form keep their value. Text that cannot be parsed keeps the
    old value and reports an error at the field's path.
    """
    new: dict[str, Any] = plain(draft) if isinstance(draft, Mapping) else {}
    errors: dict[str, list[str]] = {}
    for leaf in step_leaves(key):
        raw = form.get(leaf.path)
        if raw is None and leaf.kind not in ("checkbox", "multiselect"):
            continue
        try:
            value = parse_value(leaf, raw)
        except ValueError as exc:
            errors.setdefault(leaf.path, []).append(str(exc))
            continue
        old = get_path(new, leaf.path)
        # An unchanged value keeps its original representation (a tuple, an int for a float).
        if old is MISSING or not same(old, value):
            set_path(new, leaf.path, value)
    rederived = key in _SIZING_STEPS and _rederive(draft, new)
    return FormResult(draft=new, errors=errors, rederived=rederived)
