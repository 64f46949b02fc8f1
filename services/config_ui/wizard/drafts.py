"""New drafts, and a submitted form applied to a draft (with re-derivation from the preset)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.config_ui.wizard.derivation import (
    Rederivation,
    follow_bleed_resistor,
    follow_cell_levels,
    rederive,
)
from services.config_ui.wizard.draft_access import MISSING, get_path, plain, same, set_path
from services.config_ui.wizard.fields import parse_value, step_leaves
from shared.config import SystemConfig


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
    """Parse errors by field path; those fields keep their old value in the draft."""
    rederived: bool
    """True when a new chemistry, size or override moved derived fields."""
    changes: tuple[Rederivation, ...] = ()
    """Every derived field moved, or kept because the user set it (see derivation)."""
    edited: frozenset[str] = frozenset()
    """Fields this form changed: the user's values, which a later derivation keeps."""
    typed: dict[str, str] = field(default_factory=dict)
    """The text posted for each field that did not parse, to show it as typed."""


_SIZING_STEPS = frozenset({"chemistry", "cells", "topology"})


def apply_form(
    key: str,
    draft: Mapping[str, Any],
    form: Mapping[str, str],
    *,
    edited: frozenset[str] = frozenset(),
) -> FormResult:
    """Set the fields of step `key` from the posted form (all values text).

    A checkbox or multiselect missing from the form is unticked / empty (HTML leaves them out);
    other fields missing from the form keep their value. Text that cannot be parsed keeps the
    old value and reports an error at the field's path. `edited` are the fields the user set
    earlier: a new chemistry size or override does not derive them again.
    """
    new: dict[str, Any] = plain(draft) if isinstance(draft, Mapping) else {}
    errors: dict[str, list[str]] = {}
    typed: dict[str, str] = {}
    changed: set[str] = set()
    for leaf in step_leaves(key):
        raw = form.get(leaf.path)
        if raw is None and leaf.kind not in ("checkbox", "multiselect"):
            continue
        try:
            value = parse_value(leaf, raw)
        except ValueError as exc:
            errors.setdefault(leaf.path, []).append(str(exc))
            typed[leaf.path] = raw or ""
            continue
        old = get_path(new, leaf.path)
        # An unchanged value keeps its original representation (a tuple, an int for a float).
        if old is MISSING or not same(old, value):
            set_path(new, leaf.path, value)
            changed.add(leaf.path)
    if key in _SIZING_STEPS:
        changes = rederive(draft, new, edited | changed)
    elif key == "protection":
        changes = follow_cell_levels(draft, new, frozenset(changed), edited)
    elif key == "balancing":
        changes = follow_bleed_resistor(draft, new, frozenset(changed), edited)
    else:
        changes = ()
    return FormResult(
        draft=new,
        errors=errors,
        rederived=any(not c.kept for c in changes),
        changes=changes,
        edited=frozenset(changed),
        typed=typed,
    )
