"""The configuration wizard: steps, their form fields and the draft configuration they edit.

Pure logic for the web pages. A draft is the JSON form of a configuration
(`SystemConfig.model_dump(mode="json")`) that may be invalid while it is being edited. The form
fields are found by walking `SystemConfig`'s pydantic fields, so a new setting appears in the
step that owns its section without any change here.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from shared.config import (
    ChemistryOverrides,
    ChemistryPreset,
    ProtectionConfig,
    SystemConfig,
    ThreeLevel,
    explain_errors,
    get_preset,
)
from shared.config.interfaces import CAN_BITRATES, MODBUS_BAUDRATES
from shared.config.limits import CELLS_IN_SERIES_MAX
from shared.config.protection import LEVELS

# ---------------------------------------------------------------------------------------------
# Steps


@dataclass(frozen=True)
class WizardStep:
    """One page of the wizard and the configuration sections it edits."""

    key: str
    title: str
    sections: tuple[str, ...]
    """Dotted path prefixes owned by this step."""
    help: str


STEPS: tuple[WizardStep, ...] = (
    WizardStep(
        "chemistry",
        "Chemistry preset",
        ("chemistry", "name"),
        "Choose the cell chemistry: every threshold is pre-filled from its preset. Changing it "
        "later derives protection, balancing and the CAN profile again and clears the overrides.",
    ),
    WizardStep(
        "cells",
        "Cell data",
        ("cell_capacity_ah", "cell_resistance_mohm", "chemistry_overrides"),
        "Enter capacity and resistance from the cell datasheet, and override preset values only "
        "where the datasheet differs (empty = preset value). A new capacity derives the current "
        "thresholds again.",
    ),
    WizardStep(
        "topology",
        "Topology",
        ("topology",),
        f"Modules, cells per module and temperature sensors of the string (at most "
        f"{CELLS_IN_SERIES_MAX} cells in series). A new cell count derives the pack thresholds "
        f"again.",
    ),
    WizardStep(
        "protection",
        "Protection thresholds",
        ("protection",),
        "Each quantity has three levels: a warning derates, an alarm stops charge or discharge, "
        "a fault opens the contactors. The values are pre-filled from the chemistry preset.",
    ),
    WizardStep(
        "balancing",
        "Balancing",
        ("balancing",),
        "When and how hard cells are balanced; a cell is bled only above the minimum voltage and "
        "below the maximum temperature.",
    ),
    WizardStep(
        "contactors",
        "Contactors and precharge",
        ("contactors", "comm_loss"),
        "Precharge circuit and contactor feedback, and what to do when module telemetry is lost.",
    ),
    WizardStep(
        "current_sensor",
        "Current sensor",
        ("current_sensor",),
        "Range and calibration of the pack current sensor (current = gain x raw + offset).",
    ),
    WizardStep(
        "interfaces",
        "Interfaces",
        ("interfaces", "timing"),
        "Modbus RTU and TCP for SCADA, the CAN profile for the inverter, and the cell sampling "
        "periods.",
    ),
    WizardStep(
        "review",
        "Review and apply",
        (),
        "Check the changes against the running configuration, then apply them.",
    ),
)

_STEP_INDEX = {s.key: i for i, s in enumerate(STEPS)}


def step(key: str) -> WizardStep:
    """The step called `key`; KeyError if there is none."""
    return STEPS[_STEP_INDEX[key]]


def next_step(key: str) -> str | None:
    i = _STEP_INDEX[key] + 1
    return STEPS[i].key if i < len(STEPS) else None


def prev_step(key: str) -> str | None:
    i = _STEP_INDEX[key] - 1
    return STEPS[i].key if i >= 0 else None


def _in_sections(path: str, sections: tuple[str, ...]) -> bool:
    return any(path == s or path.startswith(s + ".") for s in sections)


def step_of_path(path: str) -> str | None:
    """The step whose sections contain `path`, or None (e.g. system_id or "")."""
    for s in STEPS:
        if _in_sections(path, s.sections):
            return s.key
    return None


# ---------------------------------------------------------------------------------------------
# Field specs

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
_SKIPPED = frozenset({"system_id", "config_version"})
_FIXED_LEVEL_FIELDS = frozenset({"direction", "unit"})

_UNIT_SUFFIXES = (
    ("_mohm", "mΩ"),
    ("_ohm", "Ω"),
    ("_ah", "Ah"),
    ("_ma", "mA"),
    ("_pct", "%"),
    ("_v", "V"),
    ("_a", "A"),
    ("_c", "°C"),
    ("_s", "s"),
    ("_f", "F"),
)
_UNIT_NAMES = {"degC": "°C"}

_WORDS = {
    "can": "CAN",
    "comm": "communication",
    "dc": "DC",
    "id": "ID",
    "max": "maximum",
    "min": "minimum",
    "ocv": "OCV",
    "ov": "OV",
    "overcurrent": "over-current",
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


def _humanise(name: str) -> str:
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
            return _humanise(name[: -len(suffix)])
    return _humanise(name)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


class _Missing:
    """Marker for a path the draft does not have."""


_MISSING = _Missing()


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


def _to_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a whole number") from None
    if not value.is_integer():
        raise ValueError("not a whole number")
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
                    group=_humanise(name),
                    group_path=path,
                    three_level=path,
                    three_level_text=_clean(info.description),
                )
            elif ctx.three_level:
                child = replace(ctx, level=name)
            else:
                child = _Context(
                    group=_humanise(name),
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
        unit = _unit_of(name)
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
        )


@cache
def _leaves() -> tuple[_Leaf, ...]:
    return tuple(_walk(SystemConfig, "", _Context()))


@cache
def _step_leaves(key: str) -> tuple[_Leaf, ...]:
    sections = step(key).sections
    # In the order of the step's sections: its main setting (e.g. the chemistry) comes first.
    return tuple(
        leaf for section in sections for leaf in _leaves() if _in_sections(leaf.path, (section,))
    )


@cache
def _known_paths() -> frozenset[str]:
    """Every field and group path of the model (including the ones the wizard does not show)."""
    out: set[str] = set(SystemConfig.model_fields)
    for leaf in _leaves():
        parts = leaf.path.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(out)


@cache
def _hidden_paths() -> frozenset[str]:
    """Fixed ThreeLevel fields: their errors belong to the quantity's group."""
    groups = {leaf.group_path for leaf in _leaves() if leaf.unit_path}
    return frozenset(f"{g}.{f}" for g in groups for f in _FIXED_LEVEL_FIELDS)


# ---------------------------------------------------------------------------------------------
# Draft access


def _get(node: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _set(root: dict[str, Any], path: str, value: Any) -> None:
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


def _plain(obj: Any) -> Any:
    """A deep copy with plain dicts, so the caller's draft is never mutated."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def _number(value: Any) -> float:
    """A finite number from the draft; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"not a finite number: {value!r}")
    return result


def _same(a: Any, b: Any) -> bool:
    """Equal as form values: lists equal tuples and 100 equals 100.0, but True is not 1."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


# ---------------------------------------------------------------------------------------------
# Rendering and parsing form values


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)  # shortest text that parses back to the same float
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _render(leaf: _Leaf, value: Any) -> str:
    if value is None or value is _MISSING:
        return ""
    if leaf.kind == "checkbox":
        return "true" if value is True else ""
    if isinstance(value, list | tuple):
        joiner = "," if leaf.kind == "multiselect" else ", "
        return joiner.join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def _parse(leaf: _Leaf, raw: str | None) -> Any:
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
                raise ValueError(f"{t!r}: {exc}") from None
        return values
    if not text:
        if leaf.optional:
            return None
        if leaf.kind == "text":
            return ""
        raise ValueError("a value is required")
    return leaf.item(text)


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


def fields_for_step(key: str, draft: Mapping[str, Any]) -> list[FieldSpec]:
    """The form fields of step `key` with their current values from `draft` (may be invalid)."""
    title = step(key).title
    chemistry = _chemistry_name(draft)
    # the bare preset: an empty override falls back to it, not to the other overrides
    preset = get_preset(chemistry) if chemistry is not None else None
    out: list[FieldSpec] = []
    for leaf in _step_leaves(key):
        unit = leaf.unit
        if leaf.unit_path:
            raw_unit = _get(draft, leaf.unit_path)
            unit = _UNIT_NAMES.get(raw_unit, raw_unit) if isinstance(raw_unit, str) else ""
        out.append(
            FieldSpec(
                path=leaf.path,
                label=leaf.label,
                group=leaf.group or title,
                kind=leaf.kind,
                value=_render(leaf, _get(draft, leaf.path)),
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


# ---------------------------------------------------------------------------------------------
# Drafts


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


def _chemistry_name(draft: Mapping[str, Any]) -> str | None:
    name = _get(draft, "chemistry")
    if not isinstance(name, str):
        return None
    try:
        return get_preset(name).name
    except ValueError:
        return None


def _total_cells(draft: Mapping[str, Any]) -> int | None:
    counts = _get(draft, "topology.module_cell_counts")
    try:
        if isinstance(counts, list | tuple):
            total = sum(int(_number(c)) for c in counts)
        else:
            total = int(_number(_get(draft, "topology.modules"))) * int(
                _number(_get(draft, "topology.cells_per_module"))
            )
    except ValueError:
        return None
    return total if 1 <= total <= CELLS_IN_SERIES_MAX else None


def _sizing(draft: Mapping[str, Any]) -> tuple[str, float, int] | None:
    chem = _chemistry_name(draft)
    cells = _total_cells(draft)
    try:
        capacity = _number(_get(draft, "cell_capacity_ah"))
    except ValueError:
        return None
    if chem is None or cells is None:
        return None
    return chem, capacity, cells


def _rederive(old: Mapping[str, Any], new: dict[str, Any]) -> bool:
    """Derive the chemistry/size dependent sections again when chemistry or size changed."""
    old_chem, new_chem = _chemistry_name(old), _chemistry_name(new)
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
        _set(new, path, _get(reference, path))
    return True


def apply_form(key: str, draft: Mapping[str, Any], form: Mapping[str, str]) -> FormResult:
    """Set the fields of step `key` from the posted form (all values text).

    A checkbox or multiselect missing from the form is unticked / empty (HTML leaves them out);
    other fields missing from the form keep their value. Text that cannot be parsed keeps the
    old value and reports an error at the field's path.
    """
    new: dict[str, Any] = _plain(draft) if isinstance(draft, Mapping) else {}
    errors: dict[str, list[str]] = {}
    for leaf in _step_leaves(key):
        raw = form.get(leaf.path)
        if raw is None and leaf.kind not in ("checkbox", "multiselect"):
            continue
        try:
            value = _parse(leaf, raw)
        except ValueError as exc:
            errors.setdefault(leaf.path, []).append(str(exc))
            continue
        old = _get(new, leaf.path)
        # An unchanged value keeps its original representation (a tuple, an int for a float).
        if old is _MISSING or not _same(old, value):
            _set(new, leaf.path, value)
    rederived = key in _SIZING_STEPS and _rederive(draft, new)
    return FormResult(draft=new, errors=errors, rederived=rederived)


# ---------------------------------------------------------------------------------------------
# Validation

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
    known = (set(_flat_keys(draft)) - _hidden_paths()) | _known_paths()
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
    return {p: list(m) for p, m in errors.items() if m and _in_sections(p, sections)}


def first_step_with_errors(errors: Mapping[str, list[str]]) -> str | None:
    """The first step showing one of `errors` (the review step for errors of no step)."""
    for s in STEPS:
        if errors_for_step(s.key, errors):
            return s.key
    return None


# ---------------------------------------------------------------------------------------------
# Level charts


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
    name = _chemistry_name(draft)
    if name is None:
        return None
    preset = get_preset(name)
    overrides = _get(draft, "chemistry_overrides")
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
        n = 1 if quantity in _CELL_VOLTAGE else _total_cells(draft)
        if n is None:
            return None
        # rounded so that 16 x 3.65 V reads 58.4 V, not 58.400000000000006 V
        return round(n * chem.discharge_cutoff_v, 6), round(n * chem.charge_v, 6)
    if quantity == "cell_imbalance":
        # Balancing keeps the spread below its threshold in normal operation.
        try:
            if _get(draft, "balancing.mode") == "off":
                return None
            return 0.0, _number(_get(draft, "balancing.threshold_v"))
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
                _number(level.get("threshold")),
                _number(level.get("release")),
                _number(level.get("delay_s")),
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
        title=_humanise(quantity),
        unit=_UNIT_NAMES.get(unit, unit),
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
            out.append(_chart(quantity, _get(draft, f"protection.{quantity}"), draft))
        except ValueError:
            continue
    return out
