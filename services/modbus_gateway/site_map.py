"""The SunSpec chain of a site: parallel strings served as one battery. Pure: no I/O.

A site (`shared.config.site.SiteConfig`) is up to 16 strings in parallel. SunSpec models it
as its 802 specification intends a bank (SunSpec Energy Storage Models, model 802 "Battery
Base": the bank; 804 "Lithium-Ion String": one per string, `Idx` its 1-based position; 805
"Lithium-Ion Module": one per module, `StrIdx`/`ModIdx` its string and module):

* "SunS", model 1 (Common; the serial number is the site id),
* one 802 for the bank: the site's values and limits from `SiteState`; the cell extremes
  over the strings' pack states, with `CellVMaxStr`/`CellVMinStr` naming the string,
* per string in the order of the site configuration: its 804 (from its own `PackState`,
  exactly as a single system serves it; `St` bit 0 STRING_ENABLED = the site has joined it
  to the bus), followed by one 805 per module (from its own `CellSnapshot`),
* the end model.

Points, encoding and "not implemented" values are those of `register_map` (one truth for
both). A string whose configuration is not known yet has an 804 with no module groups and
no 805 (`NMod` 0, the count of groups served, so a client can still scan the chain); the
layout grows when the configuration arrives (clients re-scan). A value the gateway does not
know (no site state yet or a stale one, a stale string, a module that has not reported) reads
"not implemented", never 0; 802/804 `Evt1` has COMMUNICATION_ERROR set while part of it is
unknown. There is no native block. The one writable point is 802 `SetOp` (SunSpec: 1 CONNECT,
2 DISCONNECT), SCADA's connect and disconnect of the whole bank: a write becomes the site
command `site_operation` to the site controller (`decode_site_write`), which decides joins;
every other point is read-only (the master of each string takes its own commands). 802 `State`
(1 DISCONNECTED, 3 CONNECTED, 6 SUSPENDING, 99 FAULT) says what the strings do, `SetOp` reads
2 while the site is disconnected (`SiteState.operation`) or no string is joined, else 1.

SunSpec 802 has no point for the SOC's uncertainty, the age of its anchor or a full-charge
request, so a site serves them where a single system does, in the native block at 1000: the
fields of `SITE_NATIVE_FIELDS` only, each at the address, with the type, units and scale, of
the same field of a system's native header (`register_map.native_header`), and its value
source beside it. The header's other addresses are not served in a site (exception 02): the
site's other values are in 802, with scale factors sized for the site. `Stale` reads 1 while
there is no fresh site state, and the measured fields then read the native "not available".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from services.modbus_gateway.register_map import (
    FIXED_SF,
    IDLE_CURRENT_A,
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    MAX_WRITE_REGISTERS,
    NATIVE_LAYOUT_VERSION,
    Chain,
    Command,
    Identity,
    Point,
    RegisterMap,
    Value,
    WriteError,
    chain_points,
    encode_image,
    fit_sf,
    full_charge_code,
    make_map,
    native_header,
    native_point,
    pack_data_unknown,
    system_values,
)
from services.modbus_gateway.sunspec import load_model
from shared.config.system import SystemConfig
from shared.messages.pack import PACK_AMPS_MAX, CellSnapshot, PackState
from shared.messages.site import SiteState
from shared.protection_codes import EVT1_COMMUNICATION_ERROR, code_bits, evt1_bits

PACK_VOLTS_MAX = 1200.0
"""The highest pack voltage a pack state may carry (`PackVolts`)."""

JOINED = "joined"
"""The membership of a string connected to the site's DC bus (`StringState.membership`)."""


Layout = tuple[tuple[int, ...] | None, ...]
"""Per string in site order: the cells of each module, or None while its topology is unknown."""


@dataclass(frozen=True)
class StringData:
    """What the gateway knows of one string of the site."""

    system_id: str
    config: SystemConfig | None = None
    pack: PackState | None = None
    """None while missing or stale."""
    cells: CellSnapshot | None = None
    """None while missing or stale."""


def layout_of(strings: Sequence[StringData]) -> Layout:
    return tuple(
        None
        if s.config is None
        else tuple(s.config.topology.cells_in_module(m) for m in range(s.config.topology.modules))
        for s in strings
    )


def string_block(index: int) -> str:
    """The 804 block of the string at 1-based `index`; its modules are `<block>.module<m>`."""
    return f"string{index}"


SiteSource = Callable[[SiteState], Value]
"""A typed accessor of the site state: the value source of a point."""


@dataclass(frozen=True)
class SiteNativeField:
    """A field of the site's native block: `name` is a field of a system's native header
    (its address, type, units and scale come from there), `source` where its value comes
    from (None: metadata, valid while the site state is stale)."""

    name: str
    description: str
    source: SiteSource | None


SITE_NATIVE_FIELDS: tuple[SiteNativeField, ...] = (
    SiteNativeField(
        "LayoutVersion",
        "Version of the native layout. A site serves only LayoutVersion, Stale, SoCStd, "
        "SinceAnchor and FullChargeReq here (the site's other values are in model 802).",
        None,
    ),
    SiteNativeField("Stale", "1 = no fresh site state: the values below read not available.", None),
    SiteNativeField(
        "SoCStd",
        "1-sigma uncertainty of the site's SoC (802 SoC), in % SOC: the largest of the joined "
        "strings' (an upper bound of the weighted SOC's). Not available while no string is "
        "joined or a joined string's is unknown.",
        lambda s: s.soc_std,
    ),
    SiteNativeField(
        "SinceAnchor",
        "Seconds since the oldest of the joined strings' last anchors (SOC set at full or "
        "empty). Not available while no string is joined or a joined string has no known "
        "anchor.",
        lambda s: s.since_anchor_s,
    ),
    SiteNativeField(
        "FullChargeReq",
        "Full charge request: 1 = a joined string asks for a full charge, so that its SOC "
        "gets an anchor (the strings in parallel charge together: the site charges to full); "
        "0 = every joined string says it does not. Not available while no string is joined, "
        "or a joined string does not say and none asks.",
        lambda s: full_charge_code(s.full_charge_requested),
    ),
)
"""The site's native block (the module docstring): each field at its system address."""


def site_native_points() -> list[Point]:
    header = native_header()
    return [
        native_point(header[f.name][0], header[f.name][1], f.description, f.source is not None)
        for f in SITE_NATIVE_FIELDS
    ]


@cache
def site_map(layout: Layout) -> RegisterMap:
    """The chain for `layout`, and the site's native block (cached per layout)."""
    chain: Chain = [(1, "common", 0, ""), (802, "battery", 0, "")]
    for s, modules in enumerate(layout, start=1):
        block = string_block(s)
        chain.append((804, block, len(modules or ()), "Mod"))
        chain += [(805, f"{block}.module{m}", n, "Cell") for m, n in enumerate(modules or (), 1)]
    return make_map(chain_points(chain, SITE_WRITABLE) + site_native_points())


SITE_WRITABLE = {802: frozenset({"SetOp"})}
"""The site chain's writable points: the bank's `SetOp` only."""

SITE_OPERATIONS = {1: "connect", 2: "disconnect"}
"""802 `SetOp` (SunSpec: 1 CONNECT, 2 DISCONNECT) to the site command's action."""


def _site_set_op(value: int) -> list[Command] | None:
    action = SITE_OPERATIONS.get(value)
    return (
        None if action is None else [Command("site_operation", {"action": action, "by": "scada"})]
    )


_SITE_DECODERS: dict[str, Callable[[int], list[Command] | None]] = {"battery.SetOp": _site_set_op}


def decode_site_write(address: int, values: Sequence[int]) -> list[Command] | WriteError:
    """The site commands for an FC6/FC16 write of `values` from `address` (0-based): 802
    `SetOp` only (its address does not depend on the layout: models 1 and 802 come first);
    any other register answers exception 02, a value other than 1 or 2 exception 03."""
    if not 1 <= len(values) <= MAX_WRITE_REGISTERS:
        return WriteError(ILLEGAL_DATA_VALUE, f"quantity {len(values)} outside 1..123")
    rmap = site_map(())
    commands: list[Command] = []
    for offset, value in enumerate(values):
        point = rmap.by_address.get(address + offset)
        if point is None or point.access != "RW" or point.address != address + offset:
            return WriteError(
                ILLEGAL_DATA_ADDRESS,
                f"register {address + offset} is not writable in a site (802 SetOp only)",
            )
        decoded = _SITE_DECODERS[point.key](value)
        if decoded is None:
            return WriteError(ILLEGAL_DATA_VALUE, f"{point.key}: value {value} not accepted")
        commands += decoded
    return commands


def _string_values(index: int, s: StringData, membership: str | None) -> dict[str, Value]:
    """The 804 and 805 values of one string: the single-system values, renamed."""
    block = string_block(index)
    out: dict[str, Value] = {f"{block}.Idx": index}
    for name, sf in FIXED_SF.items():
        if any(p.name == name for p in load_model(804).points):
            out[f"{block}.{name}"] = sf
    if s.config is None:
        # A count of the groups served (none yet), so that a client can still scan the chain.
        out[f"{block}.NMod"] = 0
        out[f"{block}.Evt1"] = 1 << EVT1_COMMUNICATION_ERROR
        return out
    single = system_values(s.config, s.pack, s.cells, Identity())
    for key, value in single.items():
        head, _, rest = key.partition(".")
        if head == "string":
            out[f"{block}.{rest}"] = value
        elif head.startswith("module"):
            out[f"{block}.{key}"] = value
    out[f"{block}.Idx"] = index
    for m in range(s.config.topology.modules):
        out[f"{block}.module{m + 1}.StrIdx"] = index
    if s.pack is not None:
        closed = s.pack.contactors == "closed"
        out[f"{block}.St"] = int(membership == JOINED) | (2 if closed else 0)
    return out


def _extremes(strings: Sequence[StringData]) -> dict[str, Value]:
    """802 cell extremes over the strings with fresh data, each with its string and module."""
    out: dict[str, Value] = {}
    packs = [(i, s.pack) for i, s in enumerate(strings, start=1) if s.pack is not None]
    for name, pick in (("CellVMax", max), ("CellVMin", min)):
        attr = "cell_v_max" if name == "CellVMax" else "cell_v_min"
        found = [(getattr(p, attr), i, getattr(p, f"{attr}_at")) for i, p in packs]
        found = [f for f in found if f[0] is not None]
        if not found:
            continue
        best = pick(f[0] for f in found)
        value, index, at = next(f for f in found if f[0] == best)
        out[f"battery.{name}"] = value
        out[f"battery.{name}Str"] = index
        out[f"battery.{name}Mod"] = None if at is None else at.module + 1
    weighted = [
        (p.cell_v_avg, s.config.topology.total_cells)
        for s in strings
        if (p := s.pack) is not None and s.config is not None
    ]
    # (no string known yet, e.g. the site state before the site configuration: no mean)
    if strings and len(weighted) == len(strings) and all(a is not None for a, _ in weighted):
        total = sum(n for _, n in weighted)
        out["battery.CellVAvg"] = sum(avg * n for avg, n in weighted if avg is not None) / total
    return out


def _ratings(strings: Sequence[StringData], identity: Identity) -> dict[str, Value]:
    """Identity, ratings and scale factors: the strings' ratings add up (parallel)."""
    n = len(strings)
    configs = [s.config for s in strings if s.config is not None]
    v: dict[str, Value] = {
        "common.Mn": identity.manufacturer,
        "common.Md": identity.model,
        "common.Opt": identity.options,
        "common.Vr": identity.version,
        "common.SN": identity.serial,
        "common.DA": identity.device_address,
        "battery.LocRemCtl": 0,
    }
    for name, sf in FIXED_SF.items():
        if any(p.name == name for p in load_model(802).points):
            v[f"battery.{name}"] = sf
    # Sized for the most the strings can carry (each at most PACK_AMPS_MAX): they change only
    # with the number of strings, i.e. with the layout.
    amps_max = max(n, 1) * PACK_AMPS_MAX
    v["battery.A_SF"] = fit_sf(amps_max, 0x7FFF)
    v["battery.AMax_SF"] = fit_sf(amps_max, 0xFFFE)
    # Until every string's configuration is known, sized for the highest pack voltage.
    v_max = max((c.cell_chemistry.ov_limit_v * c.topology.total_cells for c in configs), default=0)
    w_max = (v_max if len(configs) == n else PACK_VOLTS_MAX) * amps_max
    v["battery.W_SF"] = fit_sf(max(w_max, 1.0), 0x7FFF)
    if configs:
        v["battery.Typ"] = 99 if all(c.chemistry == "NA_ION" for c in configs) else 4
    ah, wh, w_cha, w_dis = 0.0, 0.0, 0.0, 0.0
    for c in configs:
        nominal_v = c.cell_chemistry.nominal_v * c.topology.total_cells
        ah += c.cell_capacity_ah
        wh += c.cell_capacity_ah * nominal_v
        w_cha += c.protection.charge_overcurrent.warning.threshold * nominal_v
        w_dis += c.protection.discharge_overcurrent.warning.threshold * nominal_v
    v["battery.AHRtg_SF"] = fit_sf(ah, 0xFFFE)
    v["battery.WHRtg_SF"] = fit_sf(wh, 0xFFFE)
    v["battery.WChaDisChaMax_SF"] = fit_sf(max(w_cha, w_dis), 0xFFFE)
    if len(configs) == n:  # a rating over part of the strings is not the site's
        v["battery.AHRtg"] = ah
        v["battery.WHRtg"] = wh
        v["battery.WChaRteMax"] = w_cha
        v["battery.WDisChaRteMax"] = w_dis
    return v


def _cha_st(site: SiteState, joined: bool) -> int | None:
    if not joined:
        return 1  # OFF: no string on the bus
    if site.current_a is None:
        return None
    if site.current_a > IDLE_CURRENT_A:
        return 5 if site.soc is not None and site.soc >= 100.0 else 4
    if site.current_a < -IDLE_CURRENT_A:
        return 2 if site.soc is not None and site.soc <= 0.0 else 3
    return 6


def _bank_state(site: SiteState, joined: bool) -> int:
    """802 `State`: FAULT with a fault; a string still on the bus while the site is
    disconnected: SUSPENDING (its strings are leaving); CONNECTED while one is joined; else
    DISCONNECTED."""
    if site.faults:
        return 99
    if joined:
        return 6 if site.operation == "disconnect" else 3
    return 1


def _site_values(site: SiteState) -> dict[str, Value]:
    """The 802 values of a fresh site state."""
    joined = any(s.membership == JOINED for s in site.strings)
    lim = site.limits
    return {
        "battery.SoC": site.soc,
        "battery.DoD": None if site.soc is None else 100.0 - site.soc,
        "battery.SoH": site.soh,
        "battery.V": site.voltage_v,
        "battery.A": site.current_a,
        "battery.W": site.power_w,
        "battery.VMax": lim.charge_voltage_v,
        "battery.VMin": lim.discharge_voltage_v,
        "battery.AChaMax": lim.charge_current_a,
        "battery.ADisChaMax": lim.discharge_current_a,
        "battery.ChaSt": _cha_st(site, joined),
        "battery.State": _bank_state(site, joined),
        "battery.SetOp": 1 if joined and site.operation == "connect" else 2,
        "battery.Hb": None if site.ts is None else int(site.ts) % 0x10000,
        "battery.CtrlHb": 0,
        "battery.AlmRst": 0,
        "battery.ReqInvState": 0,
        "battery.Evt2": 0,
        "battery.EvtVnd1": code_bits(site.faults),
        "battery.EvtVnd2": code_bits(site.alarms),
        "battery.Evt1": evt1_bits([*site.faults, *site.alarms], site.warnings),
    }


def site_unknown(site: SiteState | None, strings: Sequence[StringData]) -> bool:
    """True while part of the site is unknown: no fresh site state, one of its values, or a
    string's data (SunSpec says so with the 802 Evt1 COMMUNICATION_ERROR bit)."""
    if site is None or None in (site.soc, site.voltage_v, site.current_a):
        return True
    return any(s.config is None or s.pack is None or pack_data_unknown(s.pack) for s in strings)


def site_values(
    site: SiteState | None, strings: Sequence[StringData], identity: Identity
) -> dict[str, Value]:
    """Every value of the site chain, by point key; a key left out reads "not implemented"."""
    v = _ratings(strings, identity)
    membership = {} if site is None else {s.system: s.membership for s in site.strings}
    for i, s in enumerate(strings, start=1):
        v.update(_string_values(i, s, membership.get(s.system_id)))
    v.update(_extremes(strings))
    v["native.LayoutVersion"] = NATIVE_LAYOUT_VERSION
    v["native.Stale"] = 1 if site is None else 0
    if site is not None:
        v.update(_site_values(site))
        v.update({f"native.{f.name}": f.source(site) for f in SITE_NATIVE_FIELDS if f.source})
    comm = (1 << EVT1_COMMUNICATION_ERROR) if site_unknown(site, strings) else 0
    evt1 = v.get("battery.Evt1")
    v["battery.Evt1"] = comm | (evt1 if isinstance(evt1, int) else 0)
    return v


def build_site_image(
    site: SiteState | None,
    strings: Sequence[StringData],
    *,
    identity: Identity,
    refused: list[str] | None = None,
) -> dict[int, int]:
    """Every register of the site chain (0-based address → uint16).

    `site` None: no fresh site state (its values read "not implemented"). A value that does not
    fit its register reads "not implemented" too, and its key is appended to `refused`.
    """
    rmap = site_map(layout_of(strings))
    values = site_values(site, strings, identity)
    unresolved = set(values) - set(rmap.by_key)
    if unresolved:
        raise AssertionError(f"value sources without a point: {sorted(unresolved)}")
    return encode_image(rmap, values, refused)
