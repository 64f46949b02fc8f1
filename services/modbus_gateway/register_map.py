"""The Modbus register map: one `Point` list from which the image, the write decoding and the
documentation are all derived. Pure code: no I/O and no Modbus server.

Two areas, both 0-based PDU addresses (register number = address + 1):

* the SunSpec chain at 40000: "SunS", model 1 (Common), 802 (Battery Base), 804 (Lithium-Ion
  String, one module group per module), one 805 (Lithium-Ion Module, one cell group per cell)
  per module, and the end model (0xFFFF, 0);
* the native block at 1000 (fixed addresses, independent of the topology apart from the number
  of cell and temperature registers): status, limits, bit fields, every cell voltage (1100…)
  and every temperature sensor (1300…).

Stale data: when the master's data is stale or missing, every measured point carries the
SunSpec "not implemented" value of its type (0x8000 int16, 0xFFFF uint16/enum16, 0xFFFFFFFF
uint32 …), 802/804 `Evt1` has COMMUNICATION_ERROR set and the native `Stale` register is 1.
Ratings, counts, indices and scale factors stay valid so that a client can still scan the map.
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
from shared.config.protection import PROTECTION_CODES
from shared.config.system import SystemConfig
from shared.messages.pack import CellSnapshot, PackState

Access = Literal["R", "RW"]
Value = int | float | str | None

NATIVE_BASE = 1000
NATIVE_CELLS_BASE = 1100
NATIVE_TEMPS_BASE = 1300
NATIVE_LAYOUT_VERSION = 1
MAX_CELLS = 196

ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
MAX_WRITE_REGISTERS = 123  # FC16 limit

CONTACTOR_STATES = ("standby", "precharge", "closed", "opening", "fault")
MODES = ("standby", "working")

# Bit n of the native (and vendor event) bit fields = PROTECTION_CODES[n].
OTHER_CODE_BIT = 31
"""Set for a code that is not in PROTECTION_CODES (a newer master)."""

IDLE_CURRENT_A = 0.5  # below this the battery counts as holding, not (dis)charging

# SunSpec 802/804 Evt1 bits: (alarm-or-fault bit, warning bit) per protection code.
_EVT1_BITS: dict[str, tuple[int, int]] = {
    "cell_overvoltage": (9, 10),
    "pack_overvoltage": (9, 10),
    "cell_undervoltage": (11, 12),
    "pack_undervoltage": (11, 12),
    "deep_discharge": (11, 12),
    "cell_overtemp_charge": (1, 2),
    "cell_overtemp_discharge": (1, 2),
    "cell_undertemp_charge": (3, 4),
    "cell_undertemp_discharge": (3, 4),
    "charge_overcurrent": (5, 6),
    "discharge_overcurrent": (7, 8),
    "cell_imbalance": (17, 17),  # SunSpec has only a voltage-imbalance warning
    "communication_loss": (0, 0),
    "contactor_feedback_mismatch": (20, 20),
}
EVT1_COMMUNICATION_ERROR = 0
EVT1_OTHER_ALARM = 25
EVT1_OTHER_WARNING = 26

# Points that accept writes; other points that SunSpec marks RW are served read-only.
_SUNSPEC_WRITABLE = {802: frozenset({"SetOp", "AlmRst", "CtrlHb"})}

# Scale factors that do not depend on the configuration.
_FIXED_SF = {
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
    model: ModelDef, block: str, start: int, repeats: int, prefix: str
) -> list[Point]:
    writable = _SUNSPEC_WRITABLE.get(model.id, frozenset())
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


_NATIVE_FIXED: tuple[tuple[str, str, str, int | None, Access, bool, str], ...] = (
    ("LayoutVersion", "uint16", "", None, "R", False, "Version of this native layout."),
    ("Stale", "uint16", "", None, "R", False, "1 = data stale or missing: values are invalid."),
    (
        "Contactors",
        "enum16",
        "",
        None,
        "R",
        True,
        "0=standby; 1=precharge; 2=closed; 3=opening; 4=fault.",
    ),
    (
        "Mode",
        "enum16",
        "",
        None,
        "RW",
        True,
        "0=standby; 1=working. Write: command set_mode {mode}.",
    ),
    ("SoC", "uint16", "%", -1, "R", True, "State of charge."),
    ("SoH", "uint16", "%", -1, "R", True, "State of health."),
    ("V", "uint16", "V", -1, "R", True, "Pack voltage."),
    ("A", "int16", "A", -1, "R", True, "Pack current, positive = charging."),
    ("CVL", "uint16", "V", -1, "R", True, "Charge voltage limit."),
    ("DVL", "uint16", "V", -1, "R", True, "Discharge voltage limit."),
    ("CCL", "uint16", "A", -1, "R", True, "Charge current limit."),
    ("DCL", "uint16", "A", -1, "R", True, "Discharge current limit."),
    ("CellVMin", "uint16", "V", -3, "R", True, "Lowest cell voltage (mV)."),
    ("CellVMax", "uint16", "V", -3, "R", True, "Highest cell voltage (mV)."),
    ("CellVAvg", "uint16", "V", -3, "R", True, "Average cell voltage (mV)."),
    ("TmpMin", "int16", "C", -1, "R", True, "Lowest temperature."),
    ("TmpMax", "int16", "C", -1, "R", True, "Highest temperature."),
    ("NCell", "uint16", "", None, "R", False, "Cells in series (cell registers from 1100)."),
    ("NTmp", "uint16", "", None, "R", False, "Temperature sensors (registers from 1300)."),
    ("NStaleMod", "uint16", "", None, "R", True, "Modules whose telemetry is stale."),
    ("Faults", "bitfield32", "", None, "R", True, "Active faults, one bit per code."),
    ("Alarms", "bitfield32", "", None, "R", True, "Active alarms, one bit per code."),
    ("Warnings", "bitfield32", "", None, "R", True, "Active warnings, one bit per code."),
)


def _native_points(config: SystemConfig) -> list[Point]:
    out: list[Point] = []
    address = NATIVE_BASE
    for name, typ, units, sf, access, measured, desc in _NATIVE_FIXED:
        size = 2 if typ.endswith("32") else 1
        out.append(
            Point("native", None, name, address, size, typ, units, sf, access, desc, measured)
        )
        address += size
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
                f"Cell {i + 1} voltage (mV), series order.",
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
                f"Module {module + 1} sensor {sensor + 1} temperature.",
            )
        )
    return out


def _build_map(config: SystemConfig) -> RegisterMap:
    topo = config.topology
    if topo.total_cells > MAX_CELLS:
        raise ValueError(f"{topo.total_cells} cells: the native block holds at most {MAX_CELLS}")
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
    chain: list[tuple[int, str, int, str]] = [(1, "common", 0, ""), (802, "battery", 0, "")]
    chain.append((804, "string", topo.modules, "Mod"))
    chain += [(805, f"module{m + 1}", topo.cells_in_module(m), "Cell") for m in range(topo.modules)]
    for model_id, block, repeats, prefix in chain:
        model = load_model(model_id)
        points += _model_points(model, block, address, repeats, prefix)
        address += 2 + model.length(repeats)
    points += [
        Point(
            "end",
            None,
            "ID",
            address,
            1,
            "uint16",
            "",
            None,
            "R",
            "End model: 0xFFFF.",
            measured=False,
        ),
        Point(
            "end",
            None,
            "L",
            address + 1,
            1,
            "uint16",
            "",
            None,
            "R",
            "End model: 0.",
            measured=False,
        ),
    ]
    points += _native_points(config)
    by_address = {p.address + i: p for p in points for i in range(p.size)}
    if len(by_address) != sum(p.size for p in points):
        raise AssertionError("overlapping register points")
    return RegisterMap(tuple(points), {p.key: p for p in points}, by_address)


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


def _fit_sf(max_abs: float, limit: int) -> int:
    """The finest exponent (from -3) at which `max_abs` still fits under `limit`."""
    sf = -3
    while max_abs * 10.0 ** (-sf) > limit and sf < 10:
        sf += 1
    return sf


def _to_raw(value: float, sf: int) -> int:
    factor: int = 10 ** abs(sf)
    return round(value * factor) if sf <= 0 else round(value / factor)


def encode_point(point: Point, value: Value, sf: int | None) -> list[int]:
    """The registers of `point` holding `value` (None = "not implemented")."""
    typ = point.type
    if typ == "string":
        text = "" if value is None else str(value)
        data = text.encode("ascii", "replace")[: 2 * point.size].ljust(2 * point.size, b"\0")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if value is None or typ == "pad":
        raw = UNIMPLEMENTED[typ]
    else:
        number = value if isinstance(value, int | float) else float(value)
        scaled = _to_raw(float(number), sf) if sf is not None else round(number)
        raw = _clamp(typ, scaled)
    if point.size == 2:
        return [(raw >> 16) & 0xFFFF, raw & 0xFFFF]
    return [raw & 0xFFFF]


def _clamp(typ: str, raw: int) -> int:
    # Keep clear of the "not implemented" values, which would read as missing data.
    if typ in ("int16", "sunssf"):
        return max(-0x7FFF, min(0x7FFF, raw)) & 0xFFFF
    if typ in ("uint16", "enum16"):
        return max(0, min(0xFFFE, raw))
    if typ == "uint32":
        return max(0, min(0xFFFFFFFE, raw))
    if typ == "bitfield32":
        return raw & 0x7FFFFFFF if raw == 0xFFFFFFFF else raw & 0xFFFFFFFF
    raise ValueError(f"unsupported type {typ}")


def read_raw(image: dict[int, int], point: Point) -> int | str | None:
    """The raw value of `point` in `image`; None for "not implemented"."""
    regs = [image[point.address + i] for i in range(point.size)]
    if point.type == "string":
        return b"".join(r.to_bytes(2, "big") for r in regs).rstrip(b"\0").decode("ascii")
    raw = regs[0] if point.size == 1 else (regs[0] << 16) | regs[1]
    if point.type != "pad" and raw == UNIMPLEMENTED[point.type]:
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


def _bits(codes: Iterable[str]) -> int:
    out = 0
    for code in codes:
        bit = PROTECTION_CODES.index(code) if code in PROTECTION_CODES else OTHER_CODE_BIT
        out |= 1 << bit
    return out


def _evt1(pack: PackState | None) -> int:
    if pack is None:
        return 1 << EVT1_COMMUNICATION_ERROR
    out = 0
    for codes, warning in ((pack.faults, False), (pack.alarms, False), (pack.warnings, True)):
        for code in codes:
            pair = _EVT1_BITS.get(code)
            if pair is None:
                out |= 1 << (EVT1_OTHER_WARNING if warning else EVT1_OTHER_ALARM)
            else:
                out |= 1 << pair[1 if warning else 0]
    return out


def _cha_st(pack: PackState) -> int:
    if pack.contactors != "closed":
        return 1  # OFF
    if pack.current > IDLE_CURRENT_A:
        return 5 if pack.soc >= 100.0 else 4  # FULL / CHARGING
    if pack.current < -IDLE_CURRENT_A:
        return 2 if pack.soc <= 0.0 else 3  # EMPTY / DISCHARGING
    return 6  # HOLDING


def _state(pack: PackState) -> int:
    if pack.faults or pack.contactors == "fault":
        return 99
    return {"closed": 3, "precharge": 2, "opening": 6}.get(pack.contactors, 1)


@dataclass(frozen=True)
class _Cell:
    v: float
    tmp: float | None
    balancing: bool


def _modules(
    config: SystemConfig, pack: PackState | None, cells: CellSnapshot | None
) -> list[list[_Cell] | None]:
    """Cells per module, None where the data is missing, inconsistent or stale."""
    topo = config.topology
    out: list[list[_Cell] | None] = [None] * topo.modules
    if pack is None or cells is None or len(cells.cell_v) != topo.total_cells:
        return out
    if len(cells.module_of_cell) != len(cells.cell_v):
        return out
    temps_ok = len(cells.temp_c) == topo.total_temp_sensors
    per = topo.temp_sensors_per_module
    groups: dict[int, list[int]] = {}
    for i, m in enumerate(cells.module_of_cell):
        groups.setdefault(m, []).append(i)
    for m in range(topo.modules):
        idx = groups.get(m, [])
        if len(idx) != topo.cells_in_module(m) or m in pack.stale_modules:
            continue
        sensors = cells.temp_c[m * per : (m + 1) * per] if temps_ok else [None] * per
        out[m] = [
            _Cell(
                v=cells.cell_v[i],
                tmp=sensors[k * per // len(idx)],
                balancing=i < len(cells.balancing) and cells.balancing[i],
            )
            for k, i in enumerate(idx)
        ]
    return out


def _extreme(values: list[float | None], pick: Callable[..., float]) -> tuple[float, int] | None:
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if not present:
        return None
    best = pick(v for v, _ in present)
    return best, next(i for v, i in present if v == best) + 1


def _module_stats(prefix: str, cells: list[_Cell] | None, out: dict[str, Value]) -> None:
    """CellVMax/Cell, CellVMin/Cell, CellVAvg, CellTmpMax/Cell, … under `prefix`."""
    if cells is None:
        return
    volts: list[float | None] = [c.v for c in cells]
    temps = [c.tmp for c in cells]
    for kind, values in (("CellV", volts), ("CellTmp", temps)):
        for label, pick in (("Max", max), ("Min", min)):
            found = _extreme(values, pick)
            if found:
                out[f"{prefix}{kind}{label}"], out[f"{prefix}{kind}{label}Cell"] = found
        present = [v for v in values if v is not None]
        if present:
            out[f"{prefix}{kind}Avg"] = sum(present) / len(present)


def _values(
    config: SystemConfig, pack: PackState | None, cells: CellSnapshot | None, identity: Identity
) -> dict[str, Value]:
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
        "battery.AHRtg_SF": _fit_sf(config.cell_capacity_ah, 0xFFFE),
        "battery.WHRtg_SF": _fit_sf(wh, 0xFFFE),
        "battery.WChaDisChaMax_SF": _fit_sf(max(w_cha, w_dis), 0xFFFE),
        "battery.W_SF": _fit_sf(w_max, 0x7FFF),
        "battery.LocRemCtl": 0,
        "battery.Typ": 99 if config.chemistry == "NA_ION" else 4,
        "battery.Evt1": _evt1(pack),
        "string.Evt1": _evt1(pack),
        "string.Idx": 1,
        "string.NMod": topo.modules,
        "native.LayoutVersion": NATIVE_LAYOUT_VERSION,
        "native.Stale": 1 if pack is None else 0,
        "native.NCell": topo.total_cells,
        "native.NTmp": topo.total_temp_sensors,
    }
    for block in ("battery", "string", *(f"module{m + 1}" for m in range(topo.modules))):
        for name, sf in _FIXED_SF.items():
            v[f"{block}.{name}"] = sf
    for m in range(topo.modules):
        v[f"string.Mod{m + 1}.ModNCell"] = topo.cells_in_module(m)
        v[f"module{m + 1}.StrIdx"] = 1
        v[f"module{m + 1}.ModIdx"] = m + 1
        v[f"module{m + 1}.NCell"] = topo.cells_in_module(m)
    for block in ("battery", "string"):
        for name in ("Evt2", "EvtVnd1", "EvtVnd2"):
            v[f"{block}.{name}"] = 0
    for name in ("Faults", "Alarms", "Warnings"):
        v[f"native.{name}"] = 0
    if pack is None:
        return v

    modules = _modules(config, pack, cells)
    faults, alarms, warnings = _bits(pack.faults), _bits(pack.alarms), _bits(pack.warnings)
    closed = pack.contactors == "closed"
    lim = pack.limits
    vmax_mod = pack.cell_v_max_at.module + 1 if pack.cell_v_max_at else None
    vmin_mod = pack.cell_v_min_at.module + 1 if pack.cell_v_min_at else None
    balancing = (
        sum(c.balancing for mod in modules if mod for c in mod)
        if all(mod is not None for mod in modules)
        else None
    )
    common = {
        "SoC": pack.soc,
        "DoD": 100.0 - pack.soc,
        "SoH": pack.soh,
        "NCyc": int(pack.equivalent_cycles),
        "A": pack.current,
        "V": pack.voltage,
        "CellVMax": pack.cell_v_max,
        "CellVMin": pack.cell_v_min,
        "CellVAvg": pack.cell_v_avg,
        "EvtVnd1": faults,
        "EvtVnd2": alarms,
        "NCellBal": balancing,
    }
    for name, value in common.items():
        v[f"battery.{name}"] = v[f"string.{name}"] = value
    v.update(
        {
            "battery.ChaSt": _cha_st(pack),
            "battery.Hb": int(pack.ts) % 0x10000 if pack.ts is not None else None,
            "battery.CtrlHb": 0,
            "battery.AlmRst": 0,
            "battery.State": _state(pack),
            "battery.StateVnd": CONTACTOR_STATES.index(pack.contactors),
            "battery.VMax": lim.charge_voltage_v,
            "battery.VMin": lim.discharge_voltage_v,
            "battery.CellVMaxStr": 1,
            "battery.CellVMaxMod": vmax_mod,
            "battery.CellVMinStr": 1,
            "battery.CellVMinMod": vmin_mod,
            "battery.AChaMax": lim.charge_current_a,
            "battery.ADisChaMax": lim.discharge_current_a,
            "battery.W": pack.voltage * pack.current,
            "battery.ReqInvState": 0,
            "battery.SetOp": 1 if closed else 2,
            "string.St": 1 | (2 if closed else 0),
            "string.ConFail": 8 if pack.faults else (6 if pack.contactors == "fault" else 0),
            "string.CellVMaxMod": vmax_mod,
            "string.CellVMinMod": vmin_mod,
            "string.ModTmpMax": pack.temp_max_c,
            "string.ModTmpMaxMod": pack.temp_max_at.module + 1 if pack.temp_max_at else None,
            "string.ModTmpMin": pack.temp_min_c,
            "string.ModTmpMinMod": pack.temp_min_at.module + 1 if pack.temp_min_at else None,
            "string.ModTmpAvg": pack.temp_avg_c,
            "string.ConSt": 1 if closed else 0,
            "native.Contactors": CONTACTOR_STATES.index(pack.contactors),
            "native.Mode": MODES.index(pack.mode),
            "native.SoC": pack.soc,
            "native.SoH": pack.soh,
            "native.V": pack.voltage,
            "native.A": pack.current,
            "native.CVL": lim.charge_voltage_v,
            "native.DVL": lim.discharge_voltage_v,
            "native.CCL": lim.charge_current_a,
            "native.DCL": lim.discharge_current_a,
            "native.CellVMin": pack.cell_v_min,
            "native.CellVMax": pack.cell_v_max,
            "native.CellVAvg": pack.cell_v_avg,
            "native.TmpMin": pack.temp_min_c,
            "native.TmpMax": pack.temp_max_c,
            "native.NStaleMod": len(pack.stale_modules),
            "native.Faults": faults,
            "native.Alarms": alarms,
            "native.Warnings": warnings,
        }
    )
    for m, mod in enumerate(modules):
        block, group = f"module{m + 1}", f"string.Mod{m + 1}."
        stats: dict[str, Value] = {}
        _module_stats("", mod, stats)
        for key, stat in stats.items():
            v[f"{block}.{key}"] = stat
            v[f"{group}Mod{key}"] = stat
        if mod is None:
            continue
        v[f"{block}.V"] = sum(c.v for c in mod)
        v[f"{block}.NCellBal"] = sum(c.balancing for c in mod)
        for i, cell in enumerate(mod):
            v[f"{block}.Cell{i + 1}.CellV"] = cell.v
            v[f"{block}.Cell{i + 1}.CellTmp"] = cell.tmp
            v[f"{block}.Cell{i + 1}.CellSt"] = 1 if cell.balancing else 0
    if cells is not None and len(cells.cell_v) == topo.total_cells:
        for i, volts in enumerate(cells.cell_v):
            v[f"native.CellV{i + 1}"] = volts
    if cells is not None and len(cells.temp_c) == topo.total_temp_sensors:
        for i, temp in enumerate(cells.temp_c):
            v[f"native.Tmp{i + 1}"] = temp
    return v


def build_image(
    config: SystemConfig,
    pack: PackState | None,
    cells: CellSnapshot | None,
    *,
    stale: bool,
    identity: Identity,
) -> dict[int, int]:
    """Every register (0-based address → uint16) of both areas.

    With `stale` or no `pack`, measured points read "not implemented" (module docstring).
    """
    rmap = register_map(config)
    values = _values(config, None if stale else pack, None if stale else cells, identity)
    # The model IDs and lengths come from the layout itself.
    for model_id, block in ((1, "common"), (802, "battery"), (804, "string")):
        values[f"{block}.ID"] = model_id
    for m in range(config.topology.modules):
        values[f"module{m + 1}.ID"] = 805
    image: dict[int, int] = {}
    starts = [p for p in rmap.points if p.name == "ID" and p.model is not None]
    for start, (model_id, length) in zip(starts, model_lengths(config), strict=False):
        values[f"{start.block}.L"] = length
        if model_id != start.model:
            raise AssertionError("model chain out of order")
    for point in rmap.points:
        if point.block == "chain":
            regs = list(MARKER)
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
