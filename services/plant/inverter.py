"""A simulated inverter on the BMS's CAN bus (pure core: frames in, current out; no I/O, the
clock passed in). The python-can side is `services.plant.devices.inverter_can`.

It behaves like a real inverter of the chosen CAN profile:
- it decodes what the BMS sends with cantools and the CAN gateway's own DBC files
  (`services.can_gateway.codec.load_dbc`), never a layout of its own: the current and voltage
  limits (CCL/DCL/CVL/DVL), the SOC and the alarm / protection / permission flags;
- it draws the current its load profile asks for (positive = charging), clipped to
  [-DCL, CCL], and nothing while the limits are stale or absent, while the BMS raises an alarm
  or protection flag, or in a direction the BMS forbids;
- it sends what such an inverter sends (keep-alives, or the Pylontech HV 0x4200 requests that
  the battery answers), each at its own period, through `due`.

Profiles (`INVERTER_PROFILES`, keyed like the gateway's registry):

- victron_0x35x: limits 0x351, SOC 0x355; any active 0x35A alarm pair stops it; sends 0x305
  (zeros) and 0x307 ("VIC") every second.
- pylon_v12: limits 0x351, SOC 0x355; any 0x359 protection bit stops it, 0x35C enables each
  direction; sends 0x305 (zeros) every second.
- pylon_hv: limits 0x4220, SOC 0x4210; any 0x4250 protection or error bit stops it, 0x4280
  forbids each direction; sends 0x4200 ensemble requests every second, system requests every
  10 s.
- native: limits 0x601, SOC 0x600; 0x600 DataStale or any 0x604 fault bit stops it; sends
  nothing (a controller that only reads).

Sources (`../shared/reference/can-inverter-protocol.md`):
- Stale limits: "Inverter stops operation if 0x351 is not received within 3 seconds" (Safiery
  manual p.9, reference §1.3.11 and §1.4): 3 s for victron_0x35x. The reference names no value
  for Pylontech LV or HV inverters; they get the same 3 s (three missed 1 s periods). SMA
  Sunny Island waits 60 s (F952, SMA-TI §5.1): pass `timeout_s=60` to play one. The native
  profile sends 0x601 every 100 ms (native.dbc); its controller gives up after 1 s.
- SMA puts the inverter into standby on any 0x35A alarm (SMA-TI §5.3, §7); warnings are only
  logged. The gateway sets a Pylon 0x359 protection bit and a HV 0x4250 protection or error
  bit for every fault "so that every fault stops the inverter"; this inverter does stop.
- 0x35C charge/discharge enable (Pylon v1.2, §1.3.7) and 0x4280 0xAA = forbidden (§1.8)
  block their direction. Until such a frame arrives the limits alone decide.
- Keep-alives: Pylon sends 0x305 with eight 0x00 bytes once a second; Victron sends 0x305 and
  0x307 = 12 34 56 78 56 49 43 00 ("VIC" in bytes 4-6) (§1.3.11). 0x306 has no published
  Victron payload and is not sent. Pylontech HV is request-driven: the inverter sends 0x4200
  byte 0 = 0x00 (ensemble) or 0x02 (system information) (§1.8); the reference gives no request
  period, so ensemble requests go out every second and system requests every 10 s.
- Pylontech HV encoding (byte order, current offset, discharge-limit sign) is not settled
  between implementations (§1.8): the inverter is built with the same `ProtocolOptions` the
  gateway has, as a real inverter is set up to match its battery.

Values are kept per frame with the time they arrived. The limits count only while their frame
is younger than `timeout_s`; so does the SOC. A stop or a forbidden direction stays until a
frame clears it. A not-available raw value (the DBC's `NotAvailableRaw`) reads as None, and
an unknown or negative current limit allows no current in its direction.

Bad input (a frame too short for its DBC message, a non-finite load request) is counted in
`counters`, logged at most once a minute per reason, and never raises.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cantools.database.can import Database, Message
from cantools.database.errors import DecodeError

from services.can_gateway.codec import NOT_AVAILABLE_ATTRIBUTE, Frame, encode, load_dbc
from services.can_gateway.profile import ProtocolOptions, is_extended
from services.can_gateway.pylon_hv import swap_words
from services.plant.load_profiles import LoadProfile, parse_profile
from shared.protection_codes import bits_codes

log = logging.getLogger("plant.inverter")

LOG_INTERVAL_S = 60.0
"""The same bad input is logged at most once a minute (and always counted)."""
PYLON_FORBIDDEN = 0xAA
PAIR_ACTIVE = 1  # 0x35A 2-bit pair value "active" (SMA-TI §7.1)
VICTRON_ID_PAYLOAD = bytes.fromhex("1234567856494300")  # 0x307, bytes 4-6 "VIC" (BYD-RE)


@dataclass(frozen=True)
class Limits:
    """The BMS limits as decoded: positive magnitudes, None where not available."""

    charge_current_a: float | None
    discharge_current_a: float | None
    charge_voltage_v: float | None
    discharge_voltage_v: float | None


@dataclass(frozen=True)
class Status:
    """What the BMS flags say: `stop` names the active alarm / protection / error flags that
    stop the inverter, `warnings` the ones that are only logged; a direction may be forbidden."""

    stop: frozenset[str] = frozenset()
    warnings: frozenset[str] = frozenset()
    charge_allowed: bool = True
    discharge_allowed: bool = True

    def merged(self, other: Status) -> Status:
        return Status(
            self.stop | other.stop,
            self.warnings | other.warnings,
            self.charge_allowed and other.charge_allowed,
            self.discharge_allowed and other.discharge_allowed,
        )


@dataclass(frozen=True)
class BmsReading:
    """What the inverter knows of the BMS at one time."""

    limits: Limits | None
    """None: no limits frame within the timeout (never received, or stale)."""
    limits_age_s: float | None
    """Age of the latest limits frame, also when it is stale; None if none arrived."""
    soc_pct: float | None
    """None: unknown, or its frame is older than the timeout."""
    status: Status

    @property
    def stale(self) -> bool:
        return self.limits is None


@dataclass(frozen=True)
class Decoded:
    """One received frame: raw signal values and physical ones (None = not available)."""

    message: Message
    raw: Mapping[str, int]
    value: Mapping[str, float | None]


@dataclass(frozen=True)
class Sent:
    """A frame the inverter sends every `period_s`; `payload` builds its data."""

    frame_id: int
    payload: Callable[[], bytes]
    period_s: float


def as_sent(frame_id: int, data: bytes, options: ProtocolOptions) -> bytes:
    """The payload as it arrived: already in the DBC's byte order."""
    return data


@dataclass(frozen=True)
class InverterProfile:
    """How an inverter of one CAN profile reads the BMS and what it sends."""

    dbc: str
    limits_id: int
    limits: Callable[[Decoded, ProtocolOptions], Limits]
    soc_id: int
    soc: Callable[[Decoded, ProtocolOptions], float | None]
    status: Mapping[int, Callable[[Decoded, ProtocolOptions], Status]]
    timeout_s: float
    sends: tuple[Sent, ...] = ()
    wire_to_dbc: Callable[[int, bytes, ProtocolOptions], bytes] = as_sent
    """The payload in the DBC's byte order (Pylontech HV may be sent big-endian)."""

    @property
    def reads(self) -> frozenset[int]:
        return frozenset({self.limits_id, self.soc_id, *self.status})

    @property
    def extended(self) -> bool:
        return is_extended(self.limits_id)


# --- decoding ------------------------------------------------------------------------------


def decode(db: Database, frame_id: int, data: bytes) -> Decoded:
    """`data` of `frame_id` decoded with `db`; raises `DecodeError` when it is too short."""
    message = db.get_message_by_frame_id(frame_id)
    if len(data) < message.length:
        raise DecodeError(
            f"frame 0x{frame_id:X} ({message.name}) carries {len(data)} bytes, "
            f"its DBC message {message.length}"
        )
    raw = message.decode(data[: message.length], decode_choices=False, scaling=False)
    if not isinstance(raw, dict):  # a container message; the gateway's DBCs have none
        raise DecodeError(f"frame 0x{frame_id:X} ({message.name}) is not a plain frame")
    ints = {name: int(v) for name, v in raw.items() if isinstance(v, int | float)}
    values: dict[str, float | None] = {}
    for name, r in ints.items():
        signal = message.get_signal_by_name(name)
        attributes = signal.dbc.attributes if signal.dbc is not None else {}
        na = attributes.get(NOT_AVAILABLE_ATTRIBUTE)
        if na is not None and int(na.value) == r:
            values[name] = None
        else:
            values[name] = r * signal.scale + signal.offset
    return Decoded(message, MappingProxyType(ints), MappingProxyType(values))


def _flag(d: Decoded, name: str, value: int = 1) -> bool:
    return d.raw[name] == value


def _names(d: Decoded, active: Callable[[str], bool], value: int = 1) -> frozenset[str]:
    return frozenset(n for n in d.raw if active(n) and _flag(d, n, value))


# --- readers, one per frame role ---------------------------------------------------------------


def _plain_limits(d: Decoded, _: ProtocolOptions) -> Limits:
    """0x351 (victron_0x35x, pylon_v12) and native 0x601 share their signal names."""
    return Limits(
        charge_current_a=d.value["ChargeCurrentLimit"],
        discharge_current_a=d.value["DischargeCurrentLimit"],
        charge_voltage_v=d.value["ChargeVoltageLimit"],
        discharge_voltage_v=d.value["DischargeVoltageLimit"],
    )


_DISCHARGE_SIGN = {"negative": -1.0, "positive": 1.0}


def hv_current_a(d: Decoded, name: str, options: ProtocolOptions) -> float:
    """A Pylontech HV current from its raw value: raw = (I + offset) / 0.1 A, read as signed
    16 bits when the offset is 0 (`interfaces.can.pylon_hv_current_offset_a`, reference §1.8).

    The DBC fixes the offset at 3000 A, so the raw value is taken, not the DBC's physical one.
    """
    raw = d.raw[name]
    offset = options.pylon_hv_current_offset_a
    if offset == 0 and raw >= 0x8000:
        raw -= 0x10000
    return raw * d.message.get_signal_by_name(name).scale - offset


def _hv_limits(d: Decoded, options: ProtocolOptions) -> Limits:
    sign = _DISCHARGE_SIGN[options.pylon_hv_discharge_limit_sign]
    return Limits(
        charge_current_a=hv_current_a(d, "MaxChargeCurrent", options),
        discharge_current_a=sign * hv_current_a(d, "MaxDischargeCurrent", options),
        charge_voltage_v=d.value["ChargeCutoffVoltage"],
        discharge_voltage_v=d.value["DischargeCutoffVoltage"],
    )


def _hv_wire_to_dbc(frame_id: int, data: bytes, options: ProtocolOptions) -> bytes:
    """Big-endian mode swaps every 16-bit word (`pylon_hv.swap_words`, from the DBC)."""
    if options.pylon_hv_byte_order == "little":
        return data
    return swap_words(frame_id, data.ljust(8, b"\0"))[: len(data)]


def _soc(d: Decoded, _: ProtocolOptions) -> float | None:
    return d.value["StateOfCharge"]


def _victron_soc(d: Decoded, _: ProtocolOptions) -> float | None:
    # SMA-TI p.19: the high-resolution SOC is used instead of SOC when it is sent
    hires = d.value.get("StateOfChargeHiRes")
    return hires if hires is not None else d.value["StateOfCharge"]


def _victron_alarms(d: Decoded, _: ProtocolOptions) -> Status:
    return Status(
        stop=_names(d, lambda n: n.startswith("Alarm"), PAIR_ACTIVE),
        warnings=_names(d, lambda n: n.startswith("Warn"), PAIR_ACTIVE),
    )


def _pylon_flags(d: Decoded, _: ProtocolOptions) -> Status:
    return Status(
        stop=_names(d, lambda n: n.startswith("Protect")),
        warnings=_names(d, lambda n: n.startswith("Alarm")),
    )


def _pylon_enable(d: Decoded, _: ProtocolOptions) -> Status:
    return Status(
        charge_allowed=_flag(d, "ChargeEnable"), discharge_allowed=_flag(d, "DischargeEnable")
    )


def _hv_status(d: Decoded, _: ProtocolOptions) -> Status:
    return Status(
        stop=_names(d, lambda n: n.startswith("Protect") or n.endswith("Error")),
        warnings=_names(d, lambda n: n.startswith("Alarm")),
    )


def _hv_forbidden(d: Decoded, _: ProtocolOptions) -> Status:
    return Status(
        charge_allowed=not _flag(d, "ChargeForbidden", PYLON_FORBIDDEN),
        discharge_allowed=not _flag(d, "DischargeForbidden", PYLON_FORBIDDEN),
    )


def _native_status(d: Decoded, _: ProtocolOptions) -> Status:
    return Status(stop=frozenset({"DataStale"}) if _flag(d, "DataStale") else frozenset())


def _native_faults(d: Decoded, _: ProtocolOptions) -> Status:
    faults = bits_codes(d.raw["FaultBits"]).names()
    alarms = bits_codes(d.raw["AlarmBits"]).names()
    return Status(stop=frozenset(faults), warnings=frozenset(alarms))


def _native_warnings(d: Decoded, _: ProtocolOptions) -> Status:
    return Status(warnings=frozenset(bits_codes(d.raw["WarningBits"]).names()))


def _zeros() -> bytes:
    return bytes(8)


def _victron_id() -> bytes:
    return VICTRON_ID_PAYLOAD


def _hv_request(request_type: int) -> Callable[[], bytes]:
    def payload() -> bytes:
        return encode(load_dbc("pylon_hv"), 0x4200, {"RequestType": request_type})[1]

    return payload


STALE_AFTER_S = 3.0
"""Safiery manual p.9: the inverter stops if 0x351 is not received within 3 s."""
KEEPALIVE_PERIOD_S = 1.0

INVERTER_PROFILES: Mapping[str, InverterProfile] = MappingProxyType(
    {
        "victron_0x35x": InverterProfile(
            dbc="victron_0x35x",
            limits_id=0x351,
            limits=_plain_limits,
            soc_id=0x355,
            soc=_victron_soc,
            status={0x35A: _victron_alarms},
            timeout_s=STALE_AFTER_S,
            sends=(
                Sent(0x305, _zeros, KEEPALIVE_PERIOD_S),
                Sent(0x307, _victron_id, KEEPALIVE_PERIOD_S),
            ),
        ),
        "pylon_v12": InverterProfile(
            dbc="pylon_v12",
            limits_id=0x351,
            limits=_plain_limits,
            soc_id=0x355,
            soc=_soc,
            status={0x359: _pylon_flags, 0x35C: _pylon_enable},
            timeout_s=STALE_AFTER_S,
            sends=(Sent(0x305, _zeros, KEEPALIVE_PERIOD_S),),
        ),
        "pylon_hv": InverterProfile(
            dbc="pylon_hv",
            limits_id=0x4220,
            limits=_hv_limits,
            soc_id=0x4210,
            soc=_soc,
            status={0x4250: _hv_status, 0x4280: _hv_forbidden},
            timeout_s=STALE_AFTER_S,
            wire_to_dbc=_hv_wire_to_dbc,
            sends=(
                Sent(0x4200, _hv_request(0x00), KEEPALIVE_PERIOD_S),
                Sent(0x4200, _hv_request(0x02), 10.0),
            ),
        ),
        "native": InverterProfile(
            dbc="native",
            limits_id=0x601,
            limits=_plain_limits,
            soc_id=0x600,
            soc=_soc,
            status={0x600: _native_status, 0x604: _native_faults, 0x605: _native_warnings},
            timeout_s=1.0,
        ),
    }
)


class UnknownInverterProfileError(ValueError):
    pass


def _magnitude(limit_a: float | None) -> float:
    """An unknown or negative limit allows no current."""
    return 0.0 if limit_a is None or limit_a < 0 else limit_a


class SimulatedInverter:
    """One inverter of CAN profile `profile` drawing `load` (see the module docstring).

    `load` is a `LoadProfile` or its spec string (`load_profiles.parse_profile`).
    `options` must match the gateway's (Pylontech HV encoding). `timeout_s` overrides the
    profile's stale-limits timeout. Fault switches, settable at any time: `ignore_limits`
    (draw the load's current whatever the BMS says) and `transmitting` (False: send nothing).
    All times are seconds on one clock, the caller's.
    """

    def __init__(
        self,
        profile: str,
        load: LoadProfile | str = "constant:0",
        *,
        options: ProtocolOptions | None = None,
        timeout_s: float | None = None,
        ignore_limits: bool = False,
    ) -> None:
        spec = INVERTER_PROFILES.get(profile)
        if spec is None:
            raise UnknownInverterProfileError(
                f"inverter profile {profile!r} is not known; "
                f"choose one of {', '.join(INVERTER_PROFILES)}"
            )
        self.profile_name = profile
        self.profile = spec
        self.load = parse_profile(load) if isinstance(load, str) else load
        self.options = options or ProtocolOptions()
        self.timeout_s = spec.timeout_s if timeout_s is None else timeout_s
        self.ignore_limits = ignore_limits
        self.transmitting = True
        self.counters: Counter[str] = Counter()
        self._db = load_dbc(spec.dbc)
        self._frames: dict[int, tuple[float, Decoded]] = {}
        self._next_s: dict[int, float] = {}  # index in `sends` -> when it is due
        self._logged_s: dict[str, float] = {}

    # --- receiving ---------------------------------------------------------------------------
    def receive(
        self, frame_id: int, data: bytes, now_s: float, *, is_extended_id: bool | None = None
    ) -> bool:
        """Read one frame from the BMS; True if it was one this inverter reads and valid.

        Frames of other ids (or of the other id width) are counted as `frames_ignored`, frames
        that do not decode as `frames_bad` (and logged once a minute).
        """
        extended = is_extended(frame_id) if is_extended_id is None else is_extended_id
        if extended != self.profile.extended or frame_id not in self.profile.reads:
            self.counters["frames_ignored"] += 1
            return False
        try:
            if len(data) > 8:
                raise DecodeError(f"frame 0x{frame_id:X} carries {len(data)} bytes (CAN FD)")
            dbc_data = self.profile.wire_to_dbc(frame_id, data, self.options)
            decoded = decode(self._db, frame_id, dbc_data)
        except DecodeError as err:
            self.counters["frames_bad"] += 1
            self._log_limited(f"bad:{frame_id}", now_s, "inverter: frame refused: %s", err)
            return False
        self._frames[frame_id] = (now_s, decoded)
        self.counters["frames_read"] += 1
        return True

    def _fresh(self, frame_id: int, now_s: float) -> Decoded | None:
        latest = self._frames.get(frame_id)
        if latest is None or now_s - latest[0] > self.timeout_s:
            return None
        return latest[1]

    def reading(self, now_s: float) -> BmsReading:
        """What the inverter knows of the BMS at `now_s`."""
        p, o = self.profile, self.options
        latest = self._frames.get(p.limits_id)
        fresh_limits = self._fresh(p.limits_id, now_s)
        fresh_soc = self._fresh(p.soc_id, now_s)
        status = Status()
        for frame_id, reader in p.status.items():
            got = self._frames.get(frame_id)
            if got is not None:
                status = status.merged(reader(got[1], o))
        return BmsReading(
            limits=None if fresh_limits is None else p.limits(fresh_limits, o),
            limits_age_s=None if latest is None else now_s - latest[0],
            soc_pct=None if fresh_soc is None else p.soc(fresh_soc, o),
            status=status,
        )

    # --- drawing current ---------------------------------------------------------------------
    def allowed_a(
        self, now_s: float, *, pack_voltage_v: float | None = None
    ) -> tuple[float, float]:
        """(charge, discharge) current the BMS allows now, as positive magnitudes.

        0 for both with stale or absent limits or a stop flag; 0 for a forbidden direction.
        With `pack_voltage_v`, charging also stops at CVL and discharging at DVL (an unknown
        voltage limit then allows nothing in its direction).
        """
        r = self.reading(now_s)
        if r.limits is None or r.status.stop:
            return 0.0, 0.0
        lim = r.limits
        charge = _magnitude(lim.charge_current_a) if r.status.charge_allowed else 0.0
        discharge = _magnitude(lim.discharge_current_a) if r.status.discharge_allowed else 0.0
        if pack_voltage_v is not None:
            cvl, dvl = lim.charge_voltage_v, lim.discharge_voltage_v
            if cvl is None or pack_voltage_v >= cvl:
                charge = 0.0
            if dvl is None or pack_voltage_v <= dvl:
                discharge = 0.0
        return charge, discharge

    def current_a(
        self,
        t_s: float,
        *,
        soc_pct: float | None,
        cell_v_min: float,
        cell_v_max: float,
        pack_voltage_v: float | None = None,
    ) -> float:
        """The current drawn at `t_s` (positive = charging): the load's request clipped to
        [-DCL, CCL] (see `allowed_a`), or the request itself with `ignore_limits`."""
        request = self.load.current_a(t_s, soc_pct=soc_pct, cell_v_min=cell_v_min,
                                      cell_v_max=cell_v_max)  # fmt: skip
        if not math.isfinite(request):
            self.counters["load_requests_bad"] += 1
            self._log_limited("load", t_s, "inverter: load profile asked for %r A; 0 A drawn",
                              request)  # fmt: skip
            return 0.0
        if self.ignore_limits:
            return request
        charge, discharge = self.allowed_a(t_s, pack_voltage_v=pack_voltage_v)
        return min(max(request, -discharge), charge) + 0.0  # + 0.0: no -0.0

    # --- sending -----------------------------------------------------------------------------
    def due(self, now_s: float) -> list[Frame]:
        """The frames to send at `now_s`: each of the profile's frames once per its period
        (the first at once); nothing while `transmitting` is False."""
        if not self.transmitting:
            self._next_s.clear()  # sent at once when transmitting again
            return []
        out: list[Frame] = []
        for i, sent in enumerate(self.profile.sends):
            next_s = self._next_s.get(i)
            if next_s is not None and now_s < next_s:
                continue
            out.append((sent.frame_id, sent.payload()))
            on_time = next_s is not None and now_s - next_s < sent.period_s
            self._next_s[i] = (next_s if on_time and next_s is not None else now_s) + sent.period_s
        return out

    def _log_limited(self, key: str, now_s: float, text: str, *args: object) -> None:
        last = self._logged_s.get(key)
        if last is None or now_s - last >= LOG_INTERVAL_S or now_s < last:
            self._logged_s[key] = now_s
            log.warning(text, *args)
