"""Form fields found by walking `SystemConfig`'s pydantic fields, and their text round trip."""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from services.config_ui.wizard.draft_access import MISSING, chemistry_name, get_path
from services.config_ui.wizard.steps import in_sections, step
from shared.config import (
    ChemistryOverrides,
    ChemistryPreset,
    SystemConfig,
    ThreeLevel,
    get_preset,
)
from shared.config.interfaces import CAN_BITRATES, MODBUS_BAUDRATES

FieldKind = Literal["number", "integer", "text", "select", "checkbox", "multiselect"]


@dataclass(frozen=True)
class FieldSpec:
    """One form field, rendered generically by the web layer."""

    path: str
    label: str
    group: str
    kind: FieldKind
    value: str
    unit: str
    choices: tuple[str, ...] = ()
    optional: bool = False
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    group_path: str = ""
    """Dotted path of the group (e.g. "protection.cell_overvoltage"); errors of the whole group
    are reported at this path."""


# The app sets these; ThreeLevel's direction and unit are fixed by the quantity.
# Chemistry overrides that only seed protection levels (ProtectionConfig.from_chemistry): each
# of those levels lives in one place, the Protection step's cell over-/under-voltage levels,
# which keep the user's values through any later derivation. They stay in the model (imported
# files and the derivation still use them), but the wizard does not show them twice.
LEVEL_OVERRIDES = frozenset(
    f"chemistry_overrides.{name}"
    for name in ("ov_warning_v", "ov_alarm_v", "ov_reset_v", "uv_warning_v", "uv_alarm_v",
                 "uv_reset_v")
)  # fmt: skip
_SKIPPED = frozenset({"system_id", "config_version"}) | LEVEL_OVERRIDES
# Name and help by path, where the field's own name says too little or the same as another's:
# the cell's datasheet limits (Cell data) bound the protection faults (Protection).
_PATH_TEXT: dict[str, tuple[str, str]] = {
    "chemistry_overrides.ov_limit_v": (
        "Absolute maximum voltage",
        "The cell's absolute maximum (datasheet). The cell over-voltage fault threshold "
        "(Protection step) is derived from it and may not be above it.",
    ),
    "chemistry_overrides.uv_limit_v": (
        "Absolute minimum voltage",
        "The cell's absolute minimum (datasheet). The cell under-voltage fault threshold "
        "(Protection step) is derived from it and may not be below it.",
    ),
    "chemistry_overrides.deep_discharge_v": (
        "Damage voltage",
        "Below this the cell is damaged (datasheet). The deep-discharge fault (Protection step) "
        "is derived from it and may not be below it.",
    ),
    "protection.deep_discharge_v": (
        "Deep-discharge fault",
        "A cell below this is damaged: a latched fault, cleared only by a service reset. At "
        "least the cell's damage voltage (Cell data step), at most the cell under-voltage fault "
        "threshold.",
    ),
}
_FIXED_LEVEL_FIELDS = frozenset({"direction", "unit"})
# Fields shown in a smaller unit than the model keeps: (unit shown, model units per shown unit).
# A DC link is a few hundred µF to a few mF: "2 mF", not "0.002 F".
_SHOWN_IN: dict[str, tuple[str, float]] = {"contactors.dc_link_capacitance_f": ("mF", 1e-3)}

_UNIT_SUFFIXES = (
    ("_mohm", "mΩ"),
    ("_ohm", "Ω"),
    ("_ah", "Ah"),
    ("_ma", "mA"),
    ("_ms", "ms"),
    ("_pct", "%"),
    ("_v", "V"),
    ("_a", "A"),
    ("_c", "°C"),
    ("_s", "s"),
    ("_f", "F"),
    ("_days", "days"),
)
UNIT_NAMES = {"degC": "°C"}

_WORDS = {
    "can": "CAN",
    "comm": "communication",
    "dc": "DC",
    "id": "ID",
    "io": "I/O",
    "max": "maximum",
    "min": "minimum",
    "ocv": "OCV",
    "ov": "OV",
    "overcurrent": "over-current",
    "overvoltage": "over-voltage",
    "undervoltage": "under-voltage",
    "rtu": "RTU",
    "soc": "SOC",
    "tcp": "TCP",
    "temp": "temperature",
    "uv": "UV",
}
_TITLES = {
    "cell_overtemp_charge": "Cell over-temperature while charging",
    "cell_overtemp_discharge": "Cell over-temperature while discharging",
    "cell_undertemp_charge": "Cell under-temperature while charging",
    "cell_undertemp_discharge": "Cell under-temperature while discharging",
    "module_cell_counts": "Cells of each module",
    "ocv_table_soc_pct": "OCV table SOC points",
    "ocv_table_v": "OCV table voltages",
    "ocv_charge_v": "OCV charge branch",
    "ocv_discharge_v": "OCV discharge branch",
    "ocv_temperatures_c": "OCV branch temperatures",
    "capacity_temperature_pct": "Capacity at those temperatures",
    "rtu_stop_bits": "RTU stop bits",
}
_LEVEL_TEXT = {
    "warning": "Warning: flag and derate.",
    "alarm": "Alarm: stop charge or discharge (current limit 0).",
    "fault": "Fault: open the contactors.",
}
_LEVEL_ATTR_TEXT = {
    "threshold": "Trips when the value is beyond this for the delay.",
    "release": "Clears once the value is back past this.",
    "delay_s": "How long the value must stay beyond the threshold.",
}
_LEVEL_ATTR_LABEL = {"delay_s": "delay"}
# Validated against a list of rates in the model, not typed as a Literal.
_CHOICE_LISTS: dict[str, tuple[int, ...]] = {
    "interfaces.modbus.rtu_baudrate": MODBUS_BAUDRATES,
    "interfaces.can.bitrate": CAN_BITRATES,
}
# Preset values that an empty override falls back to.
_FALLBACK_MODELS: dict[type[BaseModel], type[BaseModel]] = {ChemistryOverrides: ChemistryPreset}
_SEPARATORS = re.compile(r"[,;\s]+")


def _unit_of(name: str) -> str:
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ""


def humanise(name: str) -> str:
    """'min_cell_voltage' -> 'Minimum cell voltage', 'comm_loss' -> 'Communication loss'."""
    if name in _TITLES:
        return _TITLES[name]
    words = [_WORDS.get(w, w) for w in name.split("_") if w]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _label(name: str) -> str:
    if name in _TITLES:
        return _TITLES[name]
    for suffix, _unit in _UNIT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return humanise(name[: -len(suffix)])
    return humanise(name)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


@dataclass(frozen=True)
class _Leaf:
    """The draft-independent part of a FieldSpec, plus how to parse its form text."""

    path: str
    label: str
    group: str  # "" for top-level settings: the step title is used
    group_path: str
    kind: FieldKind
    unit: str
    unit_path: str  # ThreeLevel thresholds: where the unit is read from the draft
    choices: tuple[str, ...]
    optional: bool
    description: str
    minimum: float | None
    maximum: float | None
    item: Callable[[str], Any]  # parses one value; ValueError carries the message
    sequence: bool
    fallback: str  # chemistry_overrides: preset field shown when empty
    scale: float = 1.0
    """Model units per unit shown (`_SHOWN_IN`): the form shows value / scale."""
    model_unit: str = ""
    """The unit the model keeps the value in (differs from `unit` when scale is not 1)."""


def _to_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_integer():
        raise ValueError(f"{text!r} is not a whole number")
    return int(value)


def _to_str(text: str) -> str:
    return text


def _chooser(values: tuple[Any, ...]) -> Callable[[str], Any]:
    by_text = {str(v): v for v in values}
    by_fold = {str(v).casefold(): v for v in values}

    def choose(text: str) -> Any:
        if text in by_text:
            return by_text[text]
        if text.casefold() in by_fold:
            return by_fold[text.casefold()]
        raise ValueError(f"choose one of {', '.join(by_text)}")

    return choose


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def _kind_of(
    path: str, annotation: Any
) -> tuple[FieldKind, Callable[[str], Any], tuple[str, ...], bool]:
    """(kind, item parser, choices, sequence) of a non-model annotation."""
    if path in _CHOICE_LISTS:
        values: tuple[Any, ...] = _CHOICE_LISTS[path]
        return "select", _chooser(values), tuple(str(v) for v in values), False
    origin = get_origin(annotation)
    if origin is Literal:
        values = get_args(annotation)
        return "select", _chooser(values), tuple(str(v) for v in values), False
    if origin is tuple:
        item = get_args(annotation)[0]
        if get_origin(item) is Literal:
            values = get_args(item)
            return "multiselect", _chooser(values), tuple(str(v) for v in values), True
        parse = _to_int if item is int else _to_float if item is float else _to_str
        return "text", parse, (), True
    if annotation is bool:
        return "checkbox", _to_str, (), False
    if annotation is int:
        return "integer", _to_int, (), False
    if annotation is float:
        return "number", _to_float, (), False
    return "text", _to_str, (), False


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None]:
    """(minimum, maximum) from pydantic's ge/gt/le/lt constraints."""
    low: float | None = None
    high: float | None = None
    for m in metadata:
        for attr in ("ge", "gt", "le", "lt"):
            value = getattr(m, attr, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                if attr in ("ge", "gt"):
                    low = float(value)
                else:
                    high = float(value)
    return low, high


@dataclass(frozen=True)
class _Context:
    group: str = ""
    group_path: str = ""
    level: str = ""  # inside a ThreeLevel: the level being walked ("" for the ThreeLevel itself)
    three_level: str = ""  # path of the enclosing ThreeLevel
    three_level_text: str = ""
    optional: bool = False
    fallback: type[BaseModel] | None = None


def _walk(model: type[BaseModel], prefix: str, ctx: _Context) -> Iterator[_Leaf]:
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if path in _SKIPPED:
            continue
        if issubclass(model, ThreeLevel) and name in _FIXED_LEVEL_FIELDS:
            continue
        annotation, optional = _unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if issubclass(annotation, ThreeLevel):
                child = _Context(
                    group=humanise(name),
                    group_path=path,
                    three_level=path,
                    three_level_text=_clean(info.description),
                )
            elif ctx.three_level:
                child = replace(ctx, level=name)
            else:
                child = _Context(
                    group=humanise(name),
                    group_path=path,
                    optional=ctx.optional or annotation in _FALLBACK_MODELS,
                    fallback=_FALLBACK_MODELS.get(annotation),
                )
            yield from _walk(annotation, path, child)
            continue
        kind, item, choices, sequence = _kind_of(path, annotation)
        low, high = _bounds(info.metadata)
        description = _clean(info.description)
        label = _label(name)
        if path in _PATH_TEXT:
            label, description = _PATH_TEXT[path]
        unit = model_unit = _unit_of(name)
        scale = 1.0
        if path in _SHOWN_IN:
            unit, scale = _SHOWN_IN[path]
            low = None if low is None else _shown(low, scale)
            high = None if high is None else _shown(high, scale)
        unit_path = ""
        fallback = ""
        if ctx.three_level:
            level = ctx.level or name
            label = f"{level} {_LEVEL_ATTR_LABEL.get(name, name)}".capitalize()
            parts = [ctx.three_level_text, _LEVEL_TEXT.get(level, ""), _LEVEL_ATTR_TEXT.get(name)]
            description = description or " ".join(p for p in parts if p)
            if name in ("threshold", "release"):
                unit_path = f"{ctx.three_level}.unit"
        if ctx.fallback is not None and name in ctx.fallback.model_fields:
            description = description or _clean(ctx.fallback.model_fields[name].description)
            fallback = name
        yield _Leaf(
            path=path,
            label=label,
            group=ctx.group,
            group_path=ctx.group_path,
            kind=kind,
            unit=unit,
            unit_path=unit_path,
            choices=choices,
            optional=optional or ctx.optional,
            description=description,
            minimum=low,
            maximum=high,
            item=item,
            sequence=sequence,
            fallback=fallback,
            scale=scale,
            model_unit=model_unit,
        )


@cache
def _leaves() -> tuple[_Leaf, ...]:
    return tuple(_walk(SystemConfig, "", _Context()))


@cache
def step_leaves(key: str) -> tuple[_Leaf, ...]:
    sections = step(key).sections
    # In the order of the step's sections: its main setting (e.g. the chemistry) comes first.
    return tuple(
        leaf for section in sections for leaf in _leaves() if in_sections(leaf.path, (section,))
    )


@cache
def _leaf_index() -> dict[str, _Leaf]:
    return {leaf.path: leaf for leaf in _leaves()}


def leaf_of(path: str) -> _Leaf | None:
    """The form field at `path`, or None if the wizard shows no field there."""
    return _leaf_index().get(path)


def full_label(leaf: _Leaf) -> str:
    """The field's name with its group, as people say it: 'Balancing threshold',
    'Charge over-current fault threshold', 'Cell capacity'."""
    if not leaf.group:
        return leaf.label
    label = leaf.label
    if not label[:2].isupper():  # 'OV warning', 'CAN channel' keep their capitals
        label = label[:1].lower() + label[1:]
    return f"{leaf.group} {label}"


def unit_of(leaf: _Leaf, draft: Mapping[str, Any]) -> str:
    """The field's unit as shown (ThreeLevel thresholds read theirs from the draft)."""
    if not leaf.unit_path:
        return leaf.unit
    raw_unit = get_path(draft, leaf.unit_path)
    return UNIT_NAMES.get(raw_unit, raw_unit) if isinstance(raw_unit, str) else ""


def render_value(leaf: _Leaf, value: Any) -> str:
    """A draft value as the form shows it."""
    return _render(leaf, value)


@cache
def known_paths() -> frozenset[str]:
    """Every field and group path of the model (including the ones the wizard does not show)."""
    out: set[str] = set(SystemConfig.model_fields)
    for leaf in _leaves():
        parts = leaf.path.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(out)


@cache
def hidden_paths() -> frozenset[str]:
    """Fixed ThreeLevel fields: their errors belong to the quantity's group."""
    groups = {leaf.group_path for leaf in _leaves() if leaf.unit_path}
    return frozenset(f"{g}.{f}" for g in groups for f in _FIXED_LEVEL_FIELDS)


# Rendering and parsing form values


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)  # shortest text that parses back to the same float
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _shown(value: float, scale: float) -> float:
    # rounded to drop the binary noise of the division (0.0047 / 1e-3 = 4.699999...)
    return round(value / scale, 9)


def _render(leaf: _Leaf, value: Any) -> str:
    if value is None or value is MISSING:
        return ""
    if leaf.scale != 1.0 and isinstance(value, int | float) and not isinstance(value, bool):
        return _scalar_text(_shown(float(value), leaf.scale))
    if leaf.kind == "checkbox":
        return "true" if value is True else ""
    if isinstance(value, list | tuple):
        joiner = "," if leaf.kind == "multiselect" else ", "
        return joiner.join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def parse_value(leaf: _Leaf, raw: str | None) -> Any:
    """The draft value for the form text `raw` (None: not in the form); ValueError if invalid."""
    if leaf.kind == "checkbox":
        # HTML leaves an unticked checkbox out of the form.
        return raw is not None and raw.strip().casefold() not in ("", "false", "off", "0", "no")
    text = "" if raw is None else raw.strip()
    if leaf.sequence:
        items = [t for t in _SEPARATORS.split(text) if t]
        if not items:
            return None if leaf.optional else []
        values: list[Any] = []
        for t in items:
            try:
                values.append(leaf.item(t))
            except ValueError as exc:
                message = str(exc)
                raise ValueError(message if repr(t) in message else f"{t!r}: {message}") from None
        return values
    if not text:
        if leaf.optional:
            return None
        if leaf.kind == "text":
            return ""
        raise ValueError("a value is required")
    value = leaf.item(text)
    if leaf.scale != 1.0:
        return round(value * leaf.scale, 15)  # 4.7 mF is 0.0047 F, not 0.0047000000000000005
    return value


def _description(leaf: _Leaf, preset: ChemistryPreset | None, unit: str) -> str:
    if not leaf.fallback or preset is None:
        return leaf.description
    value = getattr(preset, leaf.fallback, None)
    if isinstance(value, tuple):
        shown = "the preset's table"
    elif value is None or value == "":
        return leaf.description
    else:
        shown = f"the preset value {_scalar_text(value)}{' ' + unit if unit else ''}"
    return f"{leaf.description} Empty: {shown} is used.".strip()


def fields_for_step(
    key: str, draft: Mapping[str, Any], typed: Mapping[str, str] | None = None
) -> list[FieldSpec]:
    """The form fields of step `key` with their current values from `draft` (may be invalid).

    `typed`: text the user posted that did not parse, shown as typed instead of the draft's
    value (which stays the last valid one), so the error sits beside what it is about.
    """
    title = step(key).title
    chemistry = chemistry_name(draft)
    # the bare preset: an empty override falls back to it, not to the other overrides
    preset = get_preset(chemistry) if chemistry is not None else None
    out: list[FieldSpec] = []
    typed = typed or {}
    for leaf in step_leaves(key):
        unit = unit_of(leaf, draft)
        value = (
            typed[leaf.path] if leaf.path in typed else _render(leaf, get_path(draft, leaf.path))
        )
        out.append(
            FieldSpec(
                path=leaf.path,
                label=leaf.label,
                group=leaf.group or title,
                kind=leaf.kind,
                value=value,
                unit=unit,
                choices=leaf.choices,
                optional=leaf.optional,
                description=_description(leaf, preset, unit),
                minimum=leaf.minimum,
                maximum=leaf.maximum,
                group_path=leaf.group_path,
            )
        )
    return out
