"""The three levels of each protection quantity, for one chart per quantity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.config_ui.wizard.draft_access import chemistry_name, get_path, number, total_cells
from services.config_ui.wizard.fields import UNIT_NAMES, humanise
from shared.config import (
    ChemistryOverrides,
    ChemistryPreset,
    ProtectionConfig,
    ThreeLevel,
    get_preset,
)
from shared.config.protection import LEVELS


@dataclass(frozen=True)
class LevelChart:
    """The three levels of one protection quantity, for a chart on the protection step."""

    quantity: str
    title: str
    unit: str
    direction: str
    levels: tuple[tuple[str, float, float, float], ...]
    """(level, threshold, release, delay_s) for warning, alarm and fault."""
    normal: tuple[float, float] | None
    """Normal operating band for context, when known."""
    axis: tuple[float, float]


_CELL_VOLTAGE = frozenset({"cell_overvoltage", "cell_undervoltage"})
_PACK_VOLTAGE = frozenset({"pack_overvoltage", "pack_undervoltage"})


def _three_level_names() -> tuple[str, ...]:
    return tuple(
        name
        for name, info in ProtectionConfig.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, ThreeLevel)
    )


def _preset_of(draft: Mapping[str, Any]) -> ChemistryPreset | None:
    """The draft's chemistry preset with its overrides, or the bare preset if those are invalid."""
    name = chemistry_name(draft)
    if name is None:
        return None
    preset = get_preset(name)
    overrides = get_path(draft, "chemistry_overrides")
    if not isinstance(overrides, Mapping):
        return preset
    try:
        return ChemistryOverrides.model_validate(overrides).apply(preset)
    except ValueError:
        return preset


def _normal_band(quantity: str, draft: Mapping[str, Any]) -> tuple[float, float] | None:
    if quantity in _CELL_VOLTAGE | _PACK_VOLTAGE:
        chem = _preset_of(draft)
        if chem is None:
            return None
        n = 1 if quantity in _CELL_VOLTAGE else total_cells(draft)
        if n is None:
            return None
        # rounded so that 16 x 3.65 V reads 58.4 V, not 58.400000000000006 V
        return round(n * chem.discharge_cutoff_v, 6), round(n * chem.charge_v, 6)
    if quantity == "cell_imbalance":
        # Balancing keeps the spread below its threshold in normal operation.
        try:
            if get_path(draft, "balancing.mode") == "off":
                return None
            return 0.0, number(get_path(draft, "balancing.threshold_v"))
        except ValueError:
            return None
    return None


def _chart(quantity: str, node: Any, draft: Mapping[str, Any]) -> LevelChart:
    if not isinstance(node, Mapping):
        raise ValueError("not a ThreeLevel")
    direction, unit = node.get("direction"), node.get("unit")
    if not isinstance(direction, str) or not isinstance(unit, str):
        raise ValueError("direction or unit missing")
    levels: list[tuple[str, float, float, float]] = []
    for name in LEVELS:
        level = node.get(name)
        if not isinstance(level, Mapping):
            raise ValueError(f"{name} missing")
        levels.append(
            (
                name,
                number(level.get("threshold")),
                number(level.get("release")),
                number(level.get("delay_s")),
            )
        )
    normal = _normal_band(quantity, draft)
    values = [v for _, t, r, _ in levels for v in (t, r)] + list(normal or ())
    low, high = min(values), max(values)
    span = high - low if high > low else max(abs(high), 1.0)
    margin = 0.1 * span
    # Magnitudes (currents, spreads) read best with the axis starting at zero, not below it.
    axis_low = max(0.0, low - margin) if low >= 0.0 else low - margin
    return LevelChart(
        quantity=quantity,
        title=humanise(quantity),
        unit=UNIT_NAMES.get(unit, unit),
        direction=direction,
        levels=tuple(levels),
        normal=normal,
        axis=(axis_low, high + margin),
    )


def level_charts(draft: Mapping[str, Any]) -> list[LevelChart]:
    """One chart per ThreeLevel quantity of `protection`; unreadable quantities are left out."""
    out: list[LevelChart] = []
    for quantity in _three_level_names():
        try:
            out.append(_chart(quantity, get_path(draft, f"protection.{quantity}"), draft))
        except ValueError:
            continue
    return out
