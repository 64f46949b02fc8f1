"""New drafts, and a submitted form applied to a draft (with re-derivation from the preset)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
from shared.config import ChemistryOverrides, ProtectionConfig, SystemConfig


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


def _overrides(draft: Mapping[str, Any]) -> ChemistryOverrides:
    """The draft's chemistry overrides; none while they do not parse (validation reports it)."""
    try:
        return ChemistryOverrides.model_validate(get_path(draft, "chemistry_overrides"))
    except ValueError:  # includes ValidationError, and a missing section
        return ChemistryOverrides()


def _reference(sizing: tuple[str, float, int]) -> dict[str, Any] | None:
    """The derived sections of the bare preset for `sizing`; None if it cannot be built."""
    chem, capacity, cells = sizing
    try:
        # The derived sections depend only on the total cell count, so one module of `cells`
        # also serves strings with module_cell_counts.
        return SystemConfig.from_preset(
            chem, modules=1, cells_per_module=cells, cell_capacity_ah=capacity
        ).model_dump(mode="json")
    except ValueError:  # includes ValidationError: e.g. a capacity outside the model's range
        return None


def _protection(draft: Mapping[str, Any], sizing: tuple[str, float, int]) -> dict[str, Any] | None:
    """Protection derived from the draft's chemistry as overridden; None while the overrides
    are inconsistent with the preset (validation reports that at the overrides)."""
    chem, capacity, cells = sizing
    try:
        bare = SystemConfig.from_preset(
            chem, modules=1, cells_per_module=cells, cell_capacity_ah=capacity
        )
        config = bare.model_copy(update={"chemistry_overrides": _overrides(draft)})
        protection = ProtectionConfig.from_chemistry(
            config.cell_chemistry, cells_in_series=cells, cell_capacity_ah=capacity
        )
    except ValueError:
        return None
    return protection.model_dump(mode="json")


def _differing_leaves(a: Any, b: Any, path: str) -> Iterator[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping) and a.keys() == b.keys():
        for key in a:
            yield from _differing_leaves(a[key], b[key], f"{path}.{key}")
    elif a != b:
        yield path


def _rederive(old: Mapping[str, Any], new: dict[str, Any]) -> bool:
    """Derive the chemistry/size dependent sections again when chemistry or size changed, and
    the protection levels a changed chemistry override moves (keeping the user's other values).
    """
    old_chem, new_chem = chemistry_name(old), chemistry_name(new)
    if new_chem is not None and old_chem != new_chem:
        # Overrides are datasheet values of the previous chemistry's cell.
        new["chemistry_overrides"] = ChemistryOverrides().model_dump(mode="json")
    before, after = _sizing(old), _sizing(new)
    if after is None:
        return False
    if before != after:
        reference = _reference(after)
        if reference is None:
            return False
        reference["protection"] = _protection(new, after) or reference["protection"]
        for path in _DERIVED_PATHS:
            set_path(new, path, get_path(reference, path))
        return True
    if _overrides(old) == _overrides(new):
        return False
    previous, current = _protection(old, after), _protection(new, after)
    if previous is None or current is None:
        return False
    moved = list(_differing_leaves(previous, current, "protection"))
    for path in moved:
        set_path(new, path, get_path({"protection": current}, path))
    return bool(moved)


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
