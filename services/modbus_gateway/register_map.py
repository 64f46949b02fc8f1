"""The Modbus register map: one `Point` list from which the image, the write decoding and the
documentation are all derived. Pure code: no I/O and no Modbus server.

Two areas, both 0-based PDU addresses (register number = address + 1):

* the SunSpec chain at 40000: "SunS", model 1 (Common), 802 (Battery Base), 804 (Lithium-Ion
  String, one module group per module), one 805 (Lithium-Ion Module, one cell group per cell)
  per module, and the end model (0xFFFF, 0);
* the native block at 1000 (fixed addresses, independent of the topology apart from the number
  of cell and temperature registers): status, limits, bit fields, every cell voltage (1100…)
  and every temperature sensor (1300…).

Unknown data: a value the BMS does not know (stale or missing pack data, a module that has not
reported, a flagged channel, SOC before the estimator starts) reads the SunSpec "not
implemented" value of its type in the chain and `NATIVE_NOT_AVAILABLE` in the native block;
802/804 `Evt1` has COMMUNICATION_ERROR set while any pack data is unknown or stale, and the
native `Stale` register is 1 while the pack data is stale or missing. Each channel keeps its
own register. Ratings, counts, indices and scale factors stay valid so that a client can
still scan the map.

Value sources: the pack-level points declare their source beside them (`NATIVE_FIELDS`,
`BATTERY_SOURCES`, `STRING_SOURCES`, typed accessors of `PackState`); cells and sensors come
from `CellSnapshot.cells()` / `.temperatures()`. `build_image` refuses a value with no point.

Protection codes: the bit fields (native Faults/Alarms/Warnings, 802/804 EvtVnd1/EvtVnd2) and
the code bits of `Evt1` come from the one code table (`shared.protection_codes`); only the
`Evt1` COMMUNICATION_ERROR bit for unknown data is the gateway's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from services.modbus_gateway.sunspec import (
    BASE_ADDRESS,
    END_MODEL_ID,
    MARKER,
    UNIMPLEMENTED,
    ModelDef,
    ModelPoint,
    load_model,
)
from shared.config.system import SystemConfig
from shared.messages.pack import CellLocation, CellSnapshot, PackState
from shared.protection_codes import EVT1_COMMUNICATION_ERROR, code_bits, evt1_bits

Access = Literal["R", "RW"]
Value = int | float | str | None

NATIVE_BASE = 1000
NATIVE_CELLS_BASE = 1100
NATIVE_TEMPS_BASE = 1300
NATIVE_LAYOUT_VERSION = 1
MAX_CELLS = 196

NATIVE_NOT_AVAILABLE: dict[str, int] = {
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "int16": 0x8000,
    "uint32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
}
"""The native block's raw "not available" value per type (documented in the register map)."""

ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
MAX_WRITE_REGISTERS = 123  # FC16 limit

CONTACTOR_STATES = ("standby", "precharge", "closed", "opening", "fault")
MODES = ("standby", "working")

IDLE_CURRENT_A = 0.5  # below this the battery counts as holding, not (dis)charging

# Points that accept writes; other points that SunSpec marks RW are served read-only.
_SUNSPEC_WRITABLE = {802: frozenset({"SetOp", "AlmRst", "CtrlHb"})}

# Scale factors that do not depend on the configuration.
FIXED_SF = {
    "SoC_SF": -1,
    "DoD_SF": -1,
    "SoH_SF": -1,
    "DisChaRte_SF": -1,
    "V_SF": -1,
    "CellV_SF": -3,
    "A_SF": -1,
    "AMax_SF": -1,
    "ModTmp_SF": -1,
    "Tmp_SF": -1,
}

# How the BMS fills points whose meaning the model leaves open.
_NOTES: dict[tuple[int, str], str] = {
    (802, "A"): "Positive = charging.",
    (802, "W"): "V × A; positive = charging.",
    (802, "VMax"): "Charge voltage limit (CVL).",
    (802, "VMin"): "Discharge voltage limit (DVL).",
    (802, "AChaMax"): "Charge current limit (CCL).",
    (802, "ADisChaMax"): "Discharge current limit (DCL).",
    (802, "WChaRteMax"): "Charge over-current warning threshold × nominal pack voltage.",
    (802, "WDisChaRteMax"): "Discharge over-current warning threshold × nominal pack voltage.",
    (802, "Hb"): "Seconds of the master's time stamp, modulo 65536.",
    (802, "CtrlHb"): "Write: forwarded as command heartbeat {counter}.",
    (802, "AlmRst"): "Write 1: command reset_faults; 0 is accepted and ignored.",
    (802, "SetOp"): "Write 1/2: command contactors close/open. Reads 1 while closed.",
    (802, "StateVnd"): "Native contactor state (see the native block).",
    (802, "EvtVnd1"): "Faults: native bit numbers.",
    (802, "EvtVnd2"): "Alarms: native bit numbers.",
    (802, "NCyc"): "Equivalent full cycles.",
    (804, "A"): "Positive = charging.",
    (804, "EvtVnd1"): "Faults: native bit numbers.",
    (804, "EvtVnd2"): "Alarms: native bit numbers.",
    (805, "CellTmp"): "Reading of the module sensor nearest to the cell.",
}


@dataclass(frozen=True)
class Point:
    """One register point: the single source of truth for encoding and documentation."""

    block: str
    """"chain", "common", "battery", "string", "module<n>" (1-based), "end" or "native"."""
    model: int | None
    name: str
    address: int
    """0-based PDU address."""
    size: int
    type: str
    units: str
    sf: str | int | None
    """The name of the scale-factor point of the same block, or a fixed exponent."""
    access: Access
    description: str
    measured: bool = True
    """False for metadata that stays valid while the data is stale."""

    @property
    def register(self) -> int:
        """1-based register number, as written in many manuals (address 40000 = 40001)."""
        return self.address + 1

    @property
    def key(self) -> str:
        return f"{self.block}.{self.name}"


@dataclass(frozen=True)
class Identity:
    """Model 1 contents."""

    manufacturer: str = "Open BMS"
    model: str = "bms-stack"
    version: str = "0.1.0"
    serial: str = ""
    options: str = ""
    device_address: int = 1


@dataclass(frozen=True)
class Command:
    """A command for the master (`shared.messages.commands.COMMAND_ARGS`)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteError:
    """A rejected write: `code` is the Modbus exception code."""

    code: int
    reason: str


@dataclass(frozen=True)
class RegisterMap:
    points: tuple[Point, ...]
    by_key: dict[str, Point]
    by_address: dict[int, Point]
    """Every register address, to the point that covers it."""

    def blocks(self) -> list[str]:
        return list(dict.fromkeys(p.block for p in self.points))


# --- layout -----------------------------------------------------------------------------------

_STATIC_NAMES = frozenset(
    {"ID", "L", "Idx", "NMod", "StrIdx", "ModIdx", "NCell", "ModNCell", "Typ", "LocRemCtl"}
    | {"AHRtg", "WHRtg", "WChaRteMax", "WDisChaRteMax", "Mn", "Md", "Opt", "Vr", "SN", "DA"}
)


def _description(model: ModelDef, mp: ModelPoint, writable: bool) -> str:
    text = mp.label or mp.name
    if mp.desc:
        text = f"{text}: {mp.desc}"
    note = _NOTES.get((model.id, mp.name))
    if note:
        text = f"{text} {note}"
    if mp.access == "RW" and not writable:
        text = f"{text} Read-only here."
    return " ".join(text.split())


def _model_points(
    model: ModelDef,
    block: str,
    start: int,
    repeats: int,
    prefix: str,
    writable_by_model: dict[int, frozenset[str]],
) -> list[Point]:
    writable = writable_by_model.get(model.id, frozenset())
    out: list[Point] = []
    address = start
    members = [("", mp) for mp in model.points]
    members += [(f"{prefix}{i}.", mp) for i in range(1, repeats + 1) for mp in model.group_points]
    for pre, mp in members:
        rw = mp.name in writable
        out.append(
            Point(
                block=block,
                model=model.id,
                name=pre + mp.name,
                address=address,
                size=mp.size,
                type=mp.type,
                units=mp.units,
                sf=mp.sf,
                access="RW" if rw else "R",
                description=_description(model, mp, rw),
                measured=not (
                    mp.type in ("sunssf", "pad") or mp.name in _STATIC_NAMES or mp.static
                ),
            )
        )
        address += mp.size
    return out


PackSource = Callable[[PackState], Value]
"""A typed accessor of the pack state: the value source of a point."""


@dataclass(frozen=True)
class NativeField:
    """A fixed point of the native block and where its value comes from."""

    name: str
    type: str
    units: str
    sf: int | None
    description: str
    source: PackSource | None
    """None: metadata filled from the configuration (valid while the data is stale)."""
    access: Access = "R"


def _contactor_index(state: str) -> int:
    return CONTACTOR_STATES.index(state)


def _mode_index(mode: str) -> int:
    return MODES.index(mode)


def full_charge_code(requested: bool | None) -> int | None:
    """`FullChargeReq`: 1 requested, 0 not, None unknown (reads not available)."""
    return None if requested is None else int(requested)


NATIVE_FIELDS: tuple[NativeField, ...] = (
    NativeField("LayoutVersion", "uint16", "", None, "Version of this native layout.", None),
    NativeField(
        "Stale",
        "uint16",
        "",
        None,
        "1 = pack data stale or missing (or the layout is changing): values read not available.",
        None,
    ),
    NativeField(
        "Contactors",
        "enum16",
        "",
        None,
        "0=standby; 1=precharge; 2=closed; 3=opening; 4=fault.",
        lambda p: _contactor_index(p.contactors),
    ),
    NativeField(
        "Mode",
        "enum16",
        "",
        None,
        "0=standby; 1=working. Write: command set_mode {mode}.",
        lambda p: _mode_index(p.mode),
        "RW",
    ),
    NativeField("SoC", "uint16", "%", -1, "State of charge.", lambda p: p.soc),
    NativeField("SoH", "uint16", "%", -1, "State of health.", lambda p: p.soh),
    NativeField("V", "uint16", "V", -1, "Pack voltage.", lambda p: p.voltage),
    NativeField("A", "int16", "A", -1, "Pack current, positive = charging.", lambda p: p.current),
    NativeField(
        "CVL", "uint16", "V", -1, "Charge voltage limit.", lambda p: p.limits.charge_voltage_v
    ),
    NativeField(
        "DVL", "uint16", "V", -1, "Discharge voltage limit.", lambda p: p.limits.discharge_voltage_v
    ),
    NativeField(
        "CCL", "uint16", "A", -1, "Charge current limit.", lambda p: p.limits.charge_current_a
    ),
    NativeField(
        "DCL", "uint16", "A", -1, "Discharge current limit.", lambda p: p.limits.discharge_current_a
    ),
    NativeField("CellVMin", "uint16", "V", -3, "Lowest cell voltage (mV).", lambda p: p.cell_v_min),
    NativeField(
        "CellVMax", "uint16", "V", -3, "Highest cell voltage (mV).", lambda p: p.cell_v_max
    ),
    NativeField(
        "CellVAvg", "uint16", "V", -3, "Average cell voltage (mV).", lambda p: p.cell_v_avg
    ),
    NativeField("TmpMin", "int16", "C", -1, "Lowest temperature.", lambda p: p.temp_min_c),
    NativeField("TmpMax", "int16", "C", -1, "Highest temperature.", lambda p: p.temp_max_c),
    NativeField("NCell", "uint16", "", None, "Cells in series (cell registers from 1100).", None),
    NativeField("NTmp", "uint16", "", None, "Temperature sensors (registers from 1300).", None),
    NativeField(
        "NStaleMod",
        "uint16",
        "",
        None,
        "Modules whose telemetry is stale.",
        lambda p: len(p.stale_modules),
    ),
    NativeField(
        "Faults",
        "bitfield32",
        "",
        None,
        "Active faults, one bit per code.",
        lambda p: code_bits(p.faults),
    ),
    NativeField(
        "Alarms",
        "bitfield32",
        "",
        None,
        "Active alarms, one bit per code.",
        lambda p: code_bits(p.alarms),
    ),
    NativeField(
        "Warnings",
        "bitfield32",
        "",
        None,
        "Active warnings, one bit per code.",
        lambda p: code_bits(p.warnings),
    ),
    # Appended: the addresses above stay where they were.
    NativeField(
        "SoCStd",
        "uint16",
        "%",
        -1,
        "1-sigma uncertainty of SoC, in % SOC.",
        lambda p: p.soc_std,
    ),
    NativeField(
        "SinceAnchor",
        "uint32",
        "s",
        None,
        "Seconds since the SOC was last set at full or empty.",
        lambda p: p.since_anchor_s,
    ),
    NativeField(
        "FullChargeReq",
        "enum16",
        "",
        None,
        "Full charge request: 1 = the BMS asks for a full charge, so that the SOC gets an "
        "anchor (the last one is full_charge.interval_days old; ends at the next anchor); "
        "0 = no request (no interval configured, a fault, or a charge limit of 0 A). Not "
        "available while the SOC is not estimated, or no anchor is known yet.",
        lambda p: full_charge_code(p.full_charge_requested),
    ),
)


def _na(typ: str) -> str:
    return f"Not available: 0x{NATIVE_NOT_AVAILABLE[typ]:X}."


def native_header() -> dict[str, tuple[NativeField, int]]:
    """Each field of the native header with its address (from `NATIVE_BASE`, in the order of
    `NATIVE_FIELDS`; the header does not depend on the configuration). A site's native block
    (`site_map`) serves its fields at these same addresses."""
    out: dict[str, tuple[NativeField, int]] = {}
    address = NATIVE_BASE
    for f in NATIVE_FIELDS:
        out[f.name] = (f, address)
        address += native_size(f.type)
    return out


def native_size(typ: str) -> int:
    return 2 if typ.endswith("32") else 1


def native_point(f: NativeField, address: int, description: str, measured: bool) -> Point:
    """The point of a native field at `address`; a measured one says its "not available"."""
    text = f"{description} {_na(f.type)}" if measured else description
    return Point(
        "native", None, f.name, address, native_size(f.type), f.type, f.units, f.sf, f.access,
        text, measured,
    )  # fmt: skip


def _native_points(config: SystemConfig) -> list[Point]:
    out = [
        native_point(f, address, f.description, f.source is not None)
        for f, address in native_header().values()
    ]
    topo = config.topology
    for i in range(topo.total_cells):
        out.append(
            Point(
                "native",
                None,
                f"CellV{i + 1}",
                NATIVE_CELLS_BASE + i,
                1,
                "uint16",
                "V",
                -3,
                "R",
                f"Cell {i + 1} voltage (mV), series order. {_na('uint16')}",
            )
        )
    for i in range(topo.total_temp_sensors):
        module, sensor = divmod(i, topo.temp_sensors_per_module)
        out.append(
            Point(
                "native",
                None,
                f"Tmp{i + 1}",
                NATIVE_TEMPS_BASE + i,
                1,
                "int16",
                "C",
                -1,
                "R",
                f"Module {module + 1} sensor {sensor + 1} temperature. {_na('int16')}",
            )
        )
    return out


Chain = list[tuple[int, str, int, str]]
"""The SunSpec models in order: (model ID, block, repeats of its group, group prefix)."""


def chain_points(
    chain: Chain, writable: dict[int, frozenset[str]] = _SUNSPEC_WRITABLE
) -> list[Point]:
    """The "SunS" marker, every model of `chain` in order from 40002, and the end model;
    `writable`: the points of each model that accept writes (the others read-only)."""
    points: list[Point] = [
        Point(
            "chain",
            None,
            "SunS",
            BASE_ADDRESS,
            2,
            "string",
            "",
            None,
            "R",
            'SunSpec marker "SunS" (0x5375 0x6E53).',
            measured=False,
        )
    ]
    address = BASE_ADDRESS + 2
    for model_id, block, repeats, prefix in chain:
        model = load_model(model_id)
        points += _model_points(model, block, address, repeats, prefix, writable)
        address += 2 + model.length(repeats)
    for offset, (name, text) in enumerate((("ID", "End model: 0xFFFF."), ("L", "End model: 0."))):
        points.append(
            Point("end", None, name, address + offset, 1, "uint16", "", None, "R", text,
                  measured=False)
        )  # fmt: skip
    return points


def make_map(points: list[Point]) -> RegisterMap:
    """The map of `points`; refuses overlapping points."""
    by_address = {p.address + i: p for p in points for i in range(p.size)}
    if len(by_address) != sum(p.size for p in points):
        raise AssertionError("overlapping register points")
    return RegisterMap(tuple(points), {p.key: p for p in points}, by_address)


def _build_map(config: SystemConfig) -> RegisterMap:
    topo = config.topology
    if topo.total_cells > MAX_CELLS:
        raise ValueError(f"{topo.total_cells} cells: the native block holds at most {MAX_CELLS}")
    chain: Chain = [(1, "common", 0, ""), (802, "battery", 0, "")]
    chain.append((804, "string", topo.modules, "Mod"))
    chain += [(805, f"module{m + 1}", topo.cells_in_module(m), "Cell") for m in range(topo.modules)]
    return make_map(chain_points(chain) + _native_points(config))


@cache
def _cached_map(config_json: str) -> RegisterMap:
    return _build_map(SystemConfig.model_validate_json(config_json))


def register_map(config: SystemConfig) -> RegisterMap:
    """Every point for `config` (cached per configuration)."""
    return _cached_map(config.model_dump_json())


def model_lengths(config: SystemConfig) -> list[tuple[int, int]]:
    """(model ID, L) of the chain in order, the end model included."""
    topo = config.topology
    out = [(1, load_model(1).length()), (802, load_model(802).length())]
    out.append((804, load_model(804).length(topo.modules)))
    out += [(805, load_model(805).length(topo.cells_in_module(m))) for m in range(topo.modules)]
    return [*out, (END_MODEL_ID, 0)]


# --- encoding ---------------------------------------------------------------------------------


def fit_sf(max_abs: float, limit: int) -> int:
    """The finest exponent (from -3) at which `max_abs` still fits under `limit`."""
    sf = -3
    while max_abs * 10.0 ** (-sf) > limit and sf < 10:
        sf += 1
    return sf


def _to_raw(value: float, sf: int) -> int:
    factor: int = 10 ** abs(sf)
    return round(value * factor) if sf <= 0 else round(value / factor)


def not_available(point: Point) -> int:
    """The raw "not available" value of `point`: SunSpec's unimplemented value of its type in
    the SunSpec chain, `NATIVE_NOT_AVAILABLE` in the native block."""
    if point.block == "native":
        return NATIVE_NOT_AVAILABLE[point.type]
    return UNIMPLEMENTED[point.type]


# The range a raw value may take: the extremes are kept clear of the "not available" values.
_RAW_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-0x7FFF, 0x7FFF),
    "sunssf": (-0x7FFF, 0x7FFF),
    "uint16": (0, 0xFFFE),
    "enum16": (0, 0xFFFE),
    "uint32": (0, 0xFFFFFFFE),
    "bitfield32": (0, 0xFFFFFFFF),
}


def encode_point(point: Point, value: Value, sf: int | None) -> list[int] | None:
    """The registers of `point` holding `value` (None = "not available").

    Returns None when `value` does not fit the register: it is refused, never clamped (the
    caller serves "not available" and says so).
    """
    typ = point.type
    if typ == "string":
        text = "" if value is None else str(value)
        data = text.encode("ascii", "replace")[: 2 * point.size].ljust(2 * point.size, b"\0")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if value is None or typ == "pad":
        raw = not_available(point)
    else:
        number = value if isinstance(value, int | float) else float(value)
        scaled = _to_raw(float(number), sf) if sf is not None else round(number)
        if typ not in _RAW_RANGE:
            raise ValueError(f"unsupported type {typ}")
        low, high = _RAW_RANGE[typ]
        if not low <= scaled <= high:
            return None
        if typ == "bitfield32" and scaled == 0xFFFFFFFF:
            scaled &= 0x7FFFFFFF
        raw = scaled & (0xFFFF if point.size == 1 else 0xFFFFFFFF)
    if point.size == 2:
        return [(raw >> 16) & 0xFFFF, raw & 0xFFFF]
    return [raw & 0xFFFF]


def read_raw(image: dict[int, int], point: Point) -> int | str | None:
    """The raw value of `point` in `image`; None for "not available"."""
    regs = [image[point.address + i] for i in range(point.size)]
    if point.type == "string":
        return b"".join(r.to_bytes(2, "big") for r in regs).rstrip(b"\0").decode("ascii")
    raw = regs[0] if point.size == 1 else (regs[0] << 16) | regs[1]
    if point.type != "pad" and raw == not_available(point):
        return None
    if point.type in ("int16", "sunssf") and raw >= 0x8000:
        raw -= 0x10000
    return raw


def scale_factor(rmap: RegisterMap, image: dict[int, int], point: Point) -> int | None:
    if isinstance(point.sf, int) or point.sf is None:
        return point.sf
    raw = read_raw(image, rmap.by_key[f"{point.block}.{point.sf}"])
    return raw if isinstance(raw, int) else None


def read_value(rmap: RegisterMap, image: dict[int, int], point: Point) -> float | int | str | None:
    """The value of `point` in engineering units (scale factor applied)."""
    raw = read_raw(image, point)
    if raw is None or isinstance(raw, str) or point.sf is None:
        return raw
    sf = scale_factor(rmap, image, point)
    return None if sf is None else raw * 10.0**sf


# --- values -----------------------------------------------------------------------------------


def pack_data_unknown(pack: PackState) -> bool:
    """True while part of the pack is unknown: a module is stale, or a pack measurement or the
    state of charge is not known yet. SunSpec says so with the Evt1 COMMUNICATION_ERROR bit."""
    core = (pack.voltage, pack.current, pack.soc, pack.cell_v_min, pack.cell_v_max, pack.cell_v_avg)
    return bool(pack.stale_modules) or any(v is None for v in core)


def _evt1(pack: PackState) -> int:
    """Each code's `Evt1` bit (the shared table), and COMMUNICATION_ERROR, which the gateway
    sets itself while part of the pack is unknown."""
    comm = 1 << EVT1_COMMUNICATION_ERROR if pack_data_unknown(pack) else 0
    return comm | evt1_bits([*pack.faults, *pack.alarms], pack.warnings)


def _cha_st(pack: PackState) -> int | None:
    if pack.contactors != "closed":
        return 1  # OFF
    if pack.current is None:
        return None
    if pack.current > IDLE_CURRENT_A:
        return 5 if pack.soc is not None and pack.soc >= 100.0 else 4  # FULL / CHARGING
    if pack.current < -IDLE_CURRENT_A:
        return 2 if pack.soc is not None and pack.soc <= 0.0 else 3  # EMPTY / DISCHARGING
    return 6  # HOLDING


def _state(pack: PackState) -> int:
    if pack.faults or pack.contactors == "fault":
        return 99
    return {"closed": 3, "precharge": 2, "opening": 6}.get(pack.contactors, 1)


def _module_number(at: CellLocation | None) -> int | None:
    return None if at is None else at.module + 1


def _string_number(at: CellLocation | None) -> int | None:
    return None if at is None else 1


# Value sources of the pack-level SunSpec points, by point name (tests check every name).
_PACK_COMMON: dict[str, PackSource] = {
    "SoC": lambda p: p.soc,
    "DoD": lambda p: None if p.soc is None else 100.0 - p.soc,
    "SoH": lambda p: p.soh,
    "NCyc": lambda p: None if p.equivalent_cycles is None else int(p.equivalent_cycles),
    "A": lambda p: p.current,
    "V": lambda p: p.voltage,
    "CellVMax": lambda p: p.cell_v_max,
    "CellVMaxMod": lambda p: _module_number(p.cell_v_max_at),
    "CellVMin": lambda p: p.cell_v_min,
    "CellVMinMod": lambda p: _module_number(p.cell_v_min_at),
    "CellVAvg": lambda p: p.cell_v_avg,
    "Evt1": _evt1,
    "Evt2": lambda p: 0,
    "EvtVnd1": lambda p: code_bits(p.faults),
    "EvtVnd2": lambda p: code_bits(p.alarms),
}

BATTERY_SOURCES: dict[str, PackSource] = {
    **_PACK_COMMON,
    "ChaSt": _cha_st,
    "Hb": lambda p: None if p.ts is None else int(p.ts) % 0x10000,
    "CtrlHb": lambda p: 0,
    "AlmRst": lambda p: 0,
    "State": _state,
    "StateVnd": lambda p: _contactor_index(p.contactors),
    "VMax": lambda p: p.limits.charge_voltage_v,
    "VMin": lambda p: p.limits.discharge_voltage_v,
    "CellVMaxStr": lambda p: _string_number(p.cell_v_max_at),
    "CellVMinStr": lambda p: _string_number(p.cell_v_min_at),
    "AChaMax": lambda p: p.limits.charge_current_a,
    "ADisChaMax": lambda p: p.limits.discharge_current_a,
    "W": lambda p: p.power_w,
    "ReqInvState": lambda p: 0,
    "SetOp": lambda p: 1 if p.contactors == "closed" else 2,
}
"""Model 802 points filled from the pack state."""

STRING_SOURCES: dict[str, PackSource] = {
    **_PACK_COMMON,
    "St": lambda p: 1 | (2 if p.contactors == "closed" else 0),
    "ConFail": lambda p: 8 if p.faults else (6 if p.contactors == "fault" else 0),
    "ModTmpMax": lambda p: p.temp_max_c,
    "ModTmpMaxMod": lambda p: _module_number(p.temp_max_at),
    "ModTmpMin": lambda p: p.temp_min_c,
    "ModTmpMinMod": lambda p: _module_number(p.temp_min_at),
    "ModTmpAvg": lambda p: p.temp_avg_c,
    "ConSt": lambda p: 1 if p.contactors == "closed" else 0,
}
"""Model 804 points filled from the pack state (the module groups come from the cells)."""

NOT_SERVED: dict[int, frozenset[str]] = {
    802: frozenset(
        {"DisChaRte", "SoCMax", "SoCMin", "SocRsvMax", "SoCRsvMin", "WarrDt", "ReqW"}
        | {"SetInvState"}
    ),
    804: frozenset({"SetEna", "SetCon", "ModSoC", "ModSoH"}),
    805: frozenset({"SoC", "DoD", "SoH", "NCyc", "SN"}),
}
"""Measured SunSpec points this BMS does not know: they always read "not implemented"."""


def layout_matches(config: SystemConfig, cells: CellSnapshot) -> bool:
    """True when the snapshot has the modules, cells and sensors of `config`'s topology."""
    topo = config.topology
    return len(cells.modules) == topo.modules and all(
        len(m.cell_v) == topo.cells_in_module(m.module)
        and len(m.temp_c) == topo.temp_sensors_per_module
        for m in cells.modules
    )


@dataclass(frozen=True)
class _Cell:
    v: float | None
    tmp: float | None
    balancing: bool | None


def _modules(
    config: SystemConfig, pack: PackState, cells: CellSnapshot | None
) -> list[list[_Cell] | None]:
    """Cells per module (None for a module that is stale or missing), each at its place."""
    topo = config.topology
    if cells is None or not layout_matches(config, cells):
        return [None] * topo.modules
    temps: dict[int, list[float | None]] = {}
    for t in cells.temperatures():
        temps.setdefault(t.module, []).append(t.temp_c)
    volts: dict[int, list[tuple[float | None, bool]]] = {}
    for c in cells.cells():
        volts.setdefault(c.module, []).append((c.voltage_v, c.balancing))
    out: list[list[_Cell] | None] = []
    for m in cells.modules:
        if not m.fresh or m.module in pack.stale_modules:
            out.append(None)
            continue
        sensors, channels = temps[m.module], volts[m.module]
        out.append(
            [
                _Cell(v, sensors[k * len(sensors) // len(channels)], balancing)
                for k, (v, balancing) in enumerate(channels)
            ]
        )
    return out


def _extreme(values: list[float | None], pick: Callable[..., float]) -> tuple[float, int] | None:
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if not present:
        return None
    best = pick(v for v, _ in present)
    return best, next(i for v, i in present if v == best) + 1


def _module_stats(cells: list[_Cell] | None) -> dict[str, Value]:
    """CellVMax/Cell, CellVMin/Cell, CellVAvg, CellTmpMax/Cell, … over the known channels."""
    out: dict[str, Value] = {}
    if cells is None:
        return out
    for kind, values in (("CellV", [c.v for c in cells]), ("CellTmp", [c.tmp for c in cells])):
        for label, pick in (("Max", max), ("Min", min)):
            found = _extreme(values, pick)
            if found:
                out[f"{kind}{label}"], out[f"{kind}{label}Cell"] = found
        present = [v for v in values if v is not None]
        if present:
            out[f"{kind}Avg"] = sum(present) / len(present)
    return out


def _sum_if_known(values: Iterable[float | bool | None]) -> float | None:
    items = list(values)
    if any(v is None for v in items):
        return None
    return float(sum(v for v in items if v is not None))


def _metadata(config: SystemConfig, identity: Identity) -> dict[str, Value]:
    """Identity, ratings, counts and scale factors: valid while the data is stale."""
    topo = config.topology
    chem = config.cell_chemistry
    nominal_v = chem.nominal_v * topo.total_cells
    wh = config.cell_capacity_ah * nominal_v
    w_cha = config.protection.charge_overcurrent.warning.threshold * nominal_v
    w_dis = config.protection.discharge_overcurrent.warning.threshold * nominal_v
    w_max = chem.ov_limit_v * topo.total_cells * config.current_sensor.range_a
    v: dict[str, Value] = {
        "common.Mn": identity.manufacturer,
        "common.Md": identity.model,
        "common.Opt": identity.options,
        "common.Vr": identity.version,
        "common.SN": identity.serial,
        "common.DA": identity.device_address,
        "battery.AHRtg": config.cell_capacity_ah,
        "battery.WHRtg": wh,
        "battery.WChaRteMax": w_cha,
        "battery.WDisChaRteMax": w_dis,
        "battery.AHRtg_SF": fit_sf(config.cell_capacity_ah, 0xFFFE),
        "battery.WHRtg_SF": fit_sf(wh, 0xFFFE),
        "battery.WChaDisChaMax_SF": fit_sf(max(w_cha, w_dis), 0xFFFE),
        "battery.W_SF": fit_sf(w_max, 0x7FFF),
        "battery.LocRemCtl": 0,
        "battery.Typ": 99 if config.chemistry == "NA_ION" else 4,
        "string.Idx": 1,
        "string.NMod": topo.modules,
        "native.LayoutVersion": NATIVE_LAYOUT_VERSION,
        "native.NCell": topo.total_cells,
        "native.NTmp": topo.total_temp_sensors,
    }
    blocks = [("battery", 802), ("string", 804)]
    blocks += [(f"module{m + 1}", 805) for m in range(topo.modules)]
    for block, model_id in blocks:
        names = {p.name for p in load_model(model_id).points}
        for name, sf in FIXED_SF.items():
            if name in names:
                v[f"{block}.{name}"] = sf
    for m in range(topo.modules):
        v[f"string.Mod{m + 1}.ModNCell"] = topo.cells_in_module(m)
        v[f"module{m + 1}.StrIdx"] = 1
        v[f"module{m + 1}.ModIdx"] = m + 1
        v[f"module{m + 1}.NCell"] = topo.cells_in_module(m)
    return v


def system_values(
    config: SystemConfig, pack: PackState | None, cells: CellSnapshot | None, identity: Identity
) -> dict[str, Value]:
    v = _metadata(config, identity)
    v["native.Stale"] = 1 if pack is None else 0
    if pack is None:
        v["battery.Evt1"] = v["string.Evt1"] = 1 << EVT1_COMMUNICATION_ERROR
        return v
    for block, sources in (("battery", BATTERY_SOURCES), ("string", STRING_SOURCES)):
        for name, source in sources.items():
            v[f"{block}.{name}"] = source(pack)
    for f in NATIVE_FIELDS:
        if f.source is not None:
            v[f"native.{f.name}"] = f.source(pack)

    modules = _modules(config, pack, cells)
    known = [mod for mod in modules if mod is not None]
    if len(known) == len(modules):
        v["string.NCellBal"] = _sum_if_known(c.balancing for mod in known for c in mod)
    for m, mod in enumerate(modules):
        block, group = f"module{m + 1}", f"string.Mod{m + 1}."
        for key, stat in _module_stats(mod).items():
            v[f"{block}.{key}"] = stat
            v[f"{group}Mod{key}"] = stat
        if mod is None:
            continue
        v[f"{block}.V"] = _sum_if_known(c.v for c in mod)
        v[f"{block}.NCellBal"] = _sum_if_known(c.balancing for c in mod)
        for i, cell in enumerate(mod):
            v[f"{block}.Cell{i + 1}.CellV"] = cell.v
            v[f"{block}.Cell{i + 1}.CellTmp"] = cell.tmp
            v[f"{block}.Cell{i + 1}.CellSt"] = (
                None if cell.balancing is None else int(cell.balancing)
            )
    if cells is not None and layout_matches(config, cells):
        stale = set(pack.stale_modules)
        for c in cells.cells():
            v[f"native.CellV{c.series_index + 1}"] = None if c.module in stale else c.voltage_v
        for t in cells.temperatures():
            v[f"native.Tmp{t.sensor_index + 1}"] = None if t.module in stale else t.temp_c
    return v


def build_image(
    config: SystemConfig,
    pack: PackState | None,
    cells: CellSnapshot | None,
    *,
    stale: bool,
    identity: Identity,
    refused: list[str] | None = None,
) -> dict[int, int]:
    """Every register (0-based address → uint16) of both areas.

    With `stale` or no `pack`, measured points read "not available" (module docstring). A value
    that does not fit its register reads "not available" too, and its point key is appended to
    `refused`.
    """
    rmap = register_map(config)
    values = system_values(config, None if stale else pack, None if stale else cells, identity)
    unresolved = set(values) - set(rmap.by_key)
    if unresolved:
        raise AssertionError(f"value sources without a point: {sorted(unresolved)}")
    image = encode_image(rmap, values, refused)
    starts = [p for p in rmap.points if p.name == "ID" and p.model is not None]
    lengths = [(p.model, image[p.address + 1]) for p in starts] + [(END_MODEL_ID, 0)]
    if lengths != model_lengths(config):
        raise AssertionError("model chain out of order")
    return image


def encode_image(
    rmap: RegisterMap, values: dict[str, Value], refused: list[str] | None = None
) -> dict[int, int]:
    """Every register of `rmap` holding `values` (by point key; a missing key reads "not
    available"). Each model's ID and L come from the layout itself. A value that does not fit
    its register reads "not available", and its key is appended to `refused`."""
    values = dict(values)
    lengths: dict[str, int] = {}
    for point in rmap.points:
        if point.model is not None:
            lengths[point.block] = lengths.get(point.block, -2) + point.size
            if point.name == "ID":
                values[point.key] = point.model
    for block, length in lengths.items():
        values[f"{block}.L"] = length
    image: dict[int, int] = {}
    for point in rmap.points:
        if point.block == "chain":
            regs: list[int] | None = list(MARKER)
        elif point.block == "end":
            regs = [END_MODEL_ID if point.name == "ID" else 0]
        else:
            sf: int | None = None
            if isinstance(point.sf, int):
                sf = point.sf
            elif isinstance(point.sf, str):
                found = values.get(f"{point.block}.{point.sf}")
                sf = found if isinstance(found, int) else None
            regs = encode_point(point, values.get(point.key), sf)
            if regs is None:
                if refused is not None:
                    refused.append(point.key)
                regs = encode_point(point, None, sf)
        assert regs is not None
        for i, reg in enumerate(regs):
            image[point.address + i] = reg
    return image


# --- writes -----------------------------------------------------------------------------------


def _set_op(value: int) -> list[Command] | None:
    action = {1: "close", 2: "open"}.get(value)
    return None if action is None else [Command("contactors", {"action": action})]


def _alm_rst(value: int) -> list[Command] | None:
    return {0: [], 1: [Command("reset_faults", {})]}.get(value)


def _ctrl_hb(value: int) -> list[Command] | None:
    return [Command("heartbeat", {"counter": value})]


def _mode(value: int) -> list[Command] | None:
    return [Command("set_mode", {"mode": MODES[value]})] if value < len(MODES) else None


_DECODERS: dict[str, Callable[[int], list[Command] | None]] = {
    "battery.SetOp": _set_op,
    "battery.AlmRst": _alm_rst,
    "battery.CtrlHb": _ctrl_hb,
    "native.Mode": _mode,
}


@cache
def writable_points() -> dict[int, Point]:
    """Address → writable point. Model 1 and 802 and the native header do not depend on the
    topology, so neither do these addresses."""
    from shared.config.system import demo_config  # any topology gives the same addresses

    rmap = register_map(demo_config())
    out = {p.address: p for p in rmap.points if p.access == "RW"}
    if {p.key for p in out.values()} != set(_DECODERS):
        raise AssertionError("writable points and decoders disagree")
    return out


def decode_write(address: int, values: Sequence[int]) -> list[Command] | WriteError:
    """The commands for an FC6/FC16 write of `values` from `address` (0-based)."""
    if not 1 <= len(values) <= MAX_WRITE_REGISTERS:
        return WriteError(ILLEGAL_DATA_VALUE, f"quantity {len(values)} outside 1..123")
    writable = writable_points()
    for offset in range(len(values)):
        if address + offset not in writable:
            return WriteError(ILLEGAL_DATA_ADDRESS, f"register {address + offset} is not writable")
    commands: list[Command] = []
    for offset, value in enumerate(values):
        point = writable[address + offset]
        decoded = _DECODERS[point.key](value) if 0 <= value <= 0xFFFF else None
        if decoded is None:
            return WriteError(ILLEGAL_DATA_VALUE, f"{point.key}: value {value} not accepted")
        commands += decoded
    return commands
