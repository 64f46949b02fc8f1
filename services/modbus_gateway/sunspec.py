"""SunSpec model definitions (JSON from sunspec/models), loaded from the package data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

MODEL_IDS = (1, 802, 804, 805)
"""The models this gateway serves, in chain order."""

BASE_ADDRESS = 40000
"""The first base address pysunspec2 tries (0-based PDU address)."""
MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF

# "Not implemented" raw values per type (pysunspec2 sunspec2/mb.py SUNS_UNIMPL_*).
UNIMPLEMENTED: dict[str, int] = {
    "int16": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "sunssf": 0x8000,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "acc16": 0,
    "acc32": 0,
    "pad": 0,
    "string": 0,
}


@dataclass(frozen=True)
class ModelPoint:
    """One point of a model definition, with the schema defaults filled in."""

    name: str
    type: str
    size: int
    units: str
    sf: str | int | None
    access: str
    mandatory: bool
    static: bool
    label: str
    desc: str
    value: int | None


@dataclass(frozen=True)
class ModelDef:
    """A model: its fixed points (ID and L included) and at most one repeating group."""

    id: int
    name: str
    label: str
    points: tuple[ModelPoint, ...]
    group_name: str | None
    group_points: tuple[ModelPoint, ...]

    @property
    def fixed_length(self) -> int:
        """Registers of the fixed part, ID and L included."""
        return sum(p.size for p in self.points)

    @property
    def group_length(self) -> int:
        return sum(p.size for p in self.group_points)

    def length(self, repeats: int = 0) -> int:
        """The model's L: registers after ID and L."""
        return self.fixed_length - 2 + repeats * self.group_length


def _point(raw: dict[str, Any]) -> ModelPoint:
    return ModelPoint(
        name=str(raw["name"]),
        type=str(raw["type"]),
        size=int(raw["size"]),
        units=str(raw.get("units", "")),
        sf=raw.get("sf"),
        access=str(raw.get("access", "R")),
        mandatory=raw.get("mandatory", "O") == "M",
        static=raw.get("static", "D") == "S",
        label=str(raw.get("label", "")),
        desc=str(raw.get("desc", "")),
        value=raw.get("value") if isinstance(raw.get("value"), int) else None,
    )


@cache
def load_model(model_id: int) -> ModelDef:
    """The definition of `model_id` from the JSON shipped in `sunspec_models/`."""
    path = resources.files("services.modbus_gateway") / "sunspec_models" / f"model_{model_id}.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    group = raw["group"]
    groups = group.get("groups", [])
    if len(groups) > 1:
        raise ValueError(f"model {model_id}: more than one repeating group is not supported")
    return ModelDef(
        id=int(raw["id"]),
        name=str(group["name"]),
        label=str(group.get("label", "")),
        points=tuple(_point(p) for p in group["points"]),
        group_name=str(groups[0]["name"]) if groups else None,
        group_points=tuple(_point(p) for p in groups[0]["points"]) if groups else (),
    )
