"""Derived settings follow chemistry, capacity and cell count, but never over the user's values.

`SystemConfig.from_preset` derives protection, balancing, the precharge voltage difference,
the full-charge interval and the CAN profile from the chemistry (as overridden by datasheet
values), the capacity and the cell count. When one of those changes, each derived field is
derived again only if the user has not set it: it is not in the draft's edit record and it
still holds what the previous chemistry/size derived (a draft opened from an applied version
has no edit record; its tuned values differ from the derivation). Every field the derivation
moves is reported, old -> new, and either choice can be reversed (`choose`). A new chemistry
derives everything again: a hand-tuned voltage of another chemistry is no setting for this
one; it is listed all the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
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
from shared.config import ChemistryOverrides, SystemConfig, get_preset
from shared.config.system import bleed_current_ma

_CURRENT = "balancing.current_ma"

# Sections that follow from chemistry, capacity and cell count (see SystemConfig.from_preset).
DERIVED_SECTIONS = (
    "protection",
    "balancing",
    "contactors.precharge_voltage_diff_v",
    "interfaces.can.profiles",
    "full_charge",
)
# Fixed by the quantity: never a user's setting, never a difference worth listing.
_FIXED = frozenset({"direction", "unit"})


@dataclass(frozen=True)
class Rederivation:
    """One derived field that a new chemistry, capacity, cell count or override moves."""

    path: str
    old: Any
    """The value before the change."""
    new: Any
    """The value derived for the new chemistry and size."""
    kept: bool
    """True: the field holds `old` (the user's value); False: it holds `new`."""


Sizing = tuple[str, float, int]


def sizing(draft: Mapping[str, Any]) -> Sizing | None:
    """(chemistry, cell capacity, cells in series), or None while one of them is unreadable."""
    chem = chemistry_name(draft)
    cells = total_cells(draft)
    try:
        capacity = number(get_path(draft, "cell_capacity_ah"))
    except ValueError:
        return None
    if chem is None or cells is None:
        return None
    return chem, capacity, cells


def overrides_of(draft: Mapping[str, Any]) -> ChemistryOverrides:
    """The draft's chemistry overrides; none while they do not parse (validation reports it)."""
    try:
        return ChemistryOverrides.model_validate(get_path(draft, "chemistry_overrides"))
    except ValueError:  # includes ValidationError, and a missing section
        return ChemistryOverrides()


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key not in _FIXED:
                yield from _leaves(value, f"{path}.{key}")
    else:
        yield path, node


def derived_values(draft: Mapping[str, Any]) -> tuple[dict[str, Any], bool] | None:
    """Every derived field's value for the draft's chemistry and size, by path, and whether
    the overrides were used (False: they are inconsistent, the bare preset was used instead).
    None if the draft's sizing cannot be derived from (e.g. a capacity out of range)."""
    size = sizing(draft)
    if size is None:
        return None
    chem, capacity, cells = size
    overrides = overrides_of(draft)
    for candidate in (overrides, ChemistryOverrides()):
        try:
            # The derived sections depend only on the total cell count, so one module of
            # `cells` also serves strings with module_cell_counts.
            config = SystemConfig.from_preset(
                chem,
                modules=1,
                cells_per_module=cells,
                cell_capacity_ah=capacity,
                overrides=candidate,
            )
        except ValueError:  # includes ValidationError: inconsistent overrides, a bad capacity
            continue
        reference = config.model_dump(mode="json")
        values = {
            path: value
            for section in DERIVED_SECTIONS
            for path, value in _leaves(get_path(reference, section), section)
        }
        return values, candidate == overrides
    return None


def rederive(
    old: Mapping[str, Any], new: dict[str, Any], edited: frozenset[str]
) -> tuple[Rederivation, ...]:
    """Derive again, in `new`, the fields its chemistry/size/overrides move and that the user
    has not set; report every field moved or kept. `old` is the draft before the form."""
    old_chem, new_chem = chemistry_name(old), chemistry_name(new)
    chemistry_changed = new_chem is not None and old_chem != new_chem
    if chemistry_changed:
        # Overrides are datasheet values of the previous chemistry's cell.
        new["chemistry_overrides"] = ChemistryOverrides().model_dump(mode="json")
    resized = sizing(old) != sizing(new)
    if not (chemistry_changed or resized or overrides_of(old) != overrides_of(new)):
        return ()
    after = derived_values(new)
    if after is None:
        return ()
    target, used_overrides = after
    if not (chemistry_changed or resized or used_overrides):
        return ()  # inconsistent overrides move nothing; validation reports them
    before = None if chemistry_changed else derived_values(old)
    previous = before[0] if before is not None else None
    moved: dict[str, tuple[Any, Any]] = {}
    own: set[str] = set()
    for path, value in target.items():
        current = get_path(new, path)
        if same(current, value):
            continue
        was = MISSING if previous is None else previous.get(path, MISSING)
        if was is not MISSING and same(was, value):
            continue  # the derivation does not move this field
        moved[path] = (current, value)
        if not chemistry_changed and (
            path in edited or (was is not MISSING and not same(current, was))
        ):
            own.add(path)
    # A level's threshold and release are one setting: the user's threshold keeps its release.
    own |= {p for p in moved if _pair_of(p) in own}
    changes: list[Rederivation] = []
    for path, (current, value) in moved.items():
        if path not in own:
            set_path(new, path, plain(value))
        changes.append(Rederivation(path, plain(current), plain(value), kept=path in own))
    return tuple(changes)


_PAIRS = {"threshold": "release", "release": "threshold"}


def _pair_of(path: str) -> str:
    """'protection.x.warning.threshold' -> '...warning.release' and back; '' otherwise."""
    head, _, last = path.rpartition(".")
    return f"{head}.{_PAIRS[last]}" if last in _PAIRS and path.startswith("protection.") else ""


@dataclass(frozen=True)
class Choice:
    draft: dict[str, Any]
    edited: frozenset[str]
    changes: tuple[Rederivation, ...]


def choose(
    draft: Mapping[str, Any],
    edited: frozenset[str],
    changes: tuple[Rederivation, ...],
    path: str,
    *,
    keep_old: bool,
) -> Choice:
    """Set the field at `path` of `changes` to its old value (then it counts as the user's)
    or to the derived one (then it is derived again on the next change); a level's release
    goes with its threshold and back. KeyError if `path` is not among `changes`."""
    if not any(c.path == path for c in changes):
        raise KeyError(path)
    paths = {path, _pair_of(path)} & {c.path for c in changes}
    new = plain(draft)
    for c in changes:
        if c.path in paths:
            set_path(new, c.path, plain(c.old if keep_old else c.new))
    marked = edited | paths if keep_old else edited - paths
    chosen = tuple(replace(c, kept=keep_old) if c.path in paths else c for c in changes)
    return Choice(new, frozenset(marked), chosen)


@dataclass(frozen=True)
class ChangeRow:
    """A Rederivation as the page shows it."""

    path: str
    step: str
    label: str
    unit: str
    old: str
    new: str
    kept: bool


def describe_changes(
    changes: tuple[Rederivation, ...], draft: Mapping[str, Any]
) -> list[ChangeRow]:
    """The changes with the field names, units and values as the form shows them."""
    from services.config_ui.wizard.fields import full_label, leaf_of, render_value, unit_of
    from services.config_ui.wizard.steps import step_of_path

    rows: list[ChangeRow] = []
    for c in changes:
        leaf = leaf_of(c.path)
        if leaf is None:  # not a form field: shown by its path
            rows.append(ChangeRow(c.path, "", c.path, "", str(c.old), str(c.new), c.kept))
            continue
        rows.append(
            ChangeRow(
                path=c.path,
                step=step_of_path(c.path) or "",
                label=full_label(leaf),
                unit=unit_of(leaf, draft),
                old=render_value(leaf, c.old),
                new=render_value(leaf, c.new),
                kept=c.kept,
            )
        )
    return rows


_CELL_TO_PACK = (
    ("protection.cell_overvoltage", "protection.pack_overvoltage"),
    ("protection.cell_undervoltage", "protection.pack_undervoltage"),
)
_LEVEL_ATTRS = tuple(
    f"{level}.{attr}"
    for level in ("warning", "alarm", "fault")
    for attr in ("threshold", "release")
)


def follow_cell_levels(
    old: Mapping[str, Any], new: dict[str, Any], changed: frozenset[str], edited: frozenset[str]
) -> tuple[Rederivation, ...]:
    """A pack voltage level that still is n x its cell level (as the preset derives it) follows
    a new cell level the user set; a pack level the user set stays (and is listed as kept)."""
    n = total_cells(new)
    if n is None:
        return ()
    changes: list[Rederivation] = []
    for cell, pack in _CELL_TO_PACK:
        for attr in _LEVEL_ATTRS:
            cell_path, pack_path = f"{cell}.{attr}", f"{pack}.{attr}"
            if cell_path not in changed or pack_path in changed:
                continue
            try:
                before, after = number(get_path(old, cell_path)), number(get_path(new, cell_path))
                current = number(get_path(new, pack_path))
            except ValueError:
                continue
            target = round(n * after, 3)  # as ProtectionConfig.from_chemistry scales them
            if same(current, target):
                continue
            if pack_path in edited:
                changes.append(Rederivation(pack_path, current, target, kept=True))
            elif abs(current - n * before) <= 5e-4 + 1e-9:  # it followed the cell level
                set_path(new, pack_path, target)
                changes.append(Rederivation(pack_path, current, target, kept=False))
            # else: a pack level set apart from the cells (e.g. an imported file): left alone
    return tuple(changes)


def _nominal_v(draft: Mapping[str, Any]) -> float | None:
    """The cell's nominal voltage (as overridden), or None while the chemistry is unreadable."""
    chem = chemistry_name(draft)
    if chem is None:
        return None
    try:
        return overrides_of(draft).apply(get_preset(chem)).nominal_v
    except ValueError:  # inconsistent overrides: validation reports them
        return get_preset(chem).nominal_v


def follow_bleed_resistor(
    old: Mapping[str, Any], new: dict[str, Any], changed: frozenset[str], edited: frozenset[str]
) -> tuple[Rederivation, ...]:
    """Passive balancing: the bleed resistor sets the current (nominal voltage / R). A current
    that still is what the old resistor gave (as `SystemConfig.from_preset` derives it)
    follows a new resistor; a current the user set stays (listed as kept), and validation
    says when it cannot flow."""
    if "balancing.bleed_resistor_ohm" not in changed or _CURRENT in changed:
        return ()
    if get_path(new, "balancing.mode") != "passive":
        return ()  # active: the converter sets the current; off: nothing flows
    nominal_v = _nominal_v(new)
    try:
        before = number(get_path(old, "balancing.bleed_resistor_ohm"))
        after = number(get_path(new, "balancing.bleed_resistor_ohm"))
        current = number(get_path(new, _CURRENT))
    except ValueError:
        return ()
    if nominal_v is None or before <= 0.0 or after <= 0.0:
        return ()
    target = bleed_current_ma(nominal_v, after)
    if same(current, target):
        return ()
    if _CURRENT in edited:
        return (Rederivation(_CURRENT, current, target, kept=True),)
    if abs(current - bleed_current_ma(nominal_v, before)) > 0.5:
        return ()  # a current set apart from the resistor (e.g. an imported file): left alone
    set_path(new, _CURRENT, target)
    return (Rederivation(_CURRENT, current, target, kept=False),)
