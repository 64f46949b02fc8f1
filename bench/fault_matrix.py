"""The fault-injection matrix: each injectable fault, in each operating state, through the plant.

    python bench/fault_matrix.py [--quick] [--rows ID,...] [--reps N] [--out FILE] [--merge]

A grid, as a table (`kinds_of`): every fault kind of `shared.fault_matrix.FAULT_KINDS` gives a
row in each of the five operating states, with what differs per state (e.g. over-temperature
expects the charge code while charging, the discharge code otherwise, as only the latter is
armed at rest), except where `shared.fault_matrix.NOT_APPLICABLE` says why the fault cannot
occur in that state. Row ids are `<kind>/<state>`. Precharge rows really precharge: the DC link
is emptied, the close command sent, and the fault injected once the precharge coil is on (the
matrix's DC link makes that phase about 2.5 s); the rep records whether the plant applied the
fault while precharging. `--merge` puts a re-run of some rows into the existing results.

A real stack in a network namespace of its own (`unshare --net`): mosquitto, the plant, a slave
agent reading the plant's boards over Modbus TCP (`--driver modbus`), and the master with
`--hardware devices` (the IVT-S on CAN udp_multicast, the relay module on Modbus TCP). Per row
the bench brings the stack into the row's operating state (`set_mode`, `contactors` commands
over MQTT; the plant's load profile), injects the fault on the plant's control topic (as
`python -m services.plant inject` does), and measures:

* onset: the first physics step at which the plant's truth is past the fault threshold, or the
  moment the plant applied a discrete fault (an open wire has no threshold to cross);
* reaction: onset -> the first coil-off write the relay module received for a coil that was
  on; detection: onset -> the first pack state carrying an expected code;
* the safe state it ends in (coils, contactor state, limits), then clears the fault and resets
  (`reset_faults`, or `service_reset` for the codes that need it) before the next row.

The plant runs in this process (its service loop on a thread, its devices on their real wire
protocols), so its truth is read every physics step and the relay's coil writes are timed on
the same monotonic clock; everything the BMS sees still crosses the wire. The plant has no
inverter here: it draws its load profile whatever the BMS limits (which is what
`inverter_ignores_limits` plays), so the over-current rows set a profile above the threshold.

Results go to docs/data/fault-matrix.json (`shared/fault_matrix.py`); `python -m shared.docgen`
renders them into docs/fault-matrix.md. Exit code 2: a row outside `KNOWN_GAPS` is not ok;
77: the stack cannot run here (no mosquitto, no network namespace or no multicast), with the
reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.master_core.contactors import CONTACTORS, ContactorName  # noqa: E402
from services.plant.core import PlantCore, PlantState  # noqa: E402
from services.plant.load_profiles import parse_profile  # noqa: E402
from services.plant.registry import Relay  # noqa: E402
from services.plant.service import PlantService  # noqa: E402
from services.plant.settings import DEFAULT_BOARD_MAP, PlantSettings  # noqa: E402
from services.slave_agent.inject import place_indices  # noqa: E402
from shared.broker import MosquittoBroker, find_mosquitto  # noqa: E402
from shared.bus import Delivery, MqttBus  # noqa: E402
from shared.commands import CommandClient  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.config.protection import (  # noqa: E402
    INSULATION_DELAYS_S,
    STUCK_TEMPERATURE_SAMPLES,
)
from shared.fault_matrix import (  # noqa: E402
    DATA_FILE,
    FAULT_KINDS,
    KNOWN_GAPS,
    NOT_APPLICABLE,
    OPERATING_STATES,
    MatrixResults,
    OperatingState,
    Reaction,
    RowResult,
    SafeState,
    dump,
    load,
    merge,
)
from shared.messages import (  # noqa: E402
    CommandArgs,
    CommandReply,
    ConfigMessage,
    ContactorsArgs,
    PackState,
    PlantControl,
    ResetFaultsArgs,
    ServiceOverride,
    ServiceResetArgs,
    SetModeArgs,
)
from shared.protection_codes import SPECS, Level, ProtectionCode  # noqa: E402
from shared.settings import parse_mqtt_url  # noqa: E402
from shared.topics import CONFIG, PACK_STATE, PLANT_CONTROL  # noqa: E402

C = ProtectionCode
SYSTEM = "matrix"
EXIT_SKIP = 77
NETNS_ENV = "BMS_FAULT_MATRIX_NETNS"
BOARDS_PORT = 5120
RELAY_PORT = 5020
IVT_CAN_GROUP = "239.74.200.2"
ISO_CAN_GROUP = "239.74.200.3"
"""The iso165C on a group of its own (the IVT-S's frames would be rejected noise to it)."""
CHARGE_A = 30.0
DISCHARGE_A = -40.0
OVERCURRENT_A = 110.0
INSULATION_FAULT_OHM = 200_000.0
U1_OFFSET_V = 5.0
STATE_PROFILE_A: dict[OperatingState, float] = {
    "standby": 0.0,
    "precharge": 0.0,
    "closed_idle": 0.0,
    "charging": CHARGE_A,
    "discharging": DISCHARGE_A,
}
PRECHARGE_LINK_F = 0.006
PRECHARGE_TIMEOUT_S = 6.0
TEMPERATURE_RATE_C_PER_S = 10.0
"""How fast the bench's temperature faults move the cells (the plant's own rate is 2 °C/s)."""
MATRIX_STUCK_TEMPERATURE_SAMPLES = 50
LEVEL_RANK: dict[Level, int] = {"warning": 0, "alarm": 1, "fault": 2}
AMBIENT_C = 25.0


# --- onsets: when the physical value left its bounds ----------------------------------------
Probe = Callable[[PlantCore, PlantState], bool]


def cell_v_above(v: float) -> Probe:
    return lambda core, _s: any(float(core.truth(m).cell_v.max()) > v for m in core.modules)


def cell_v_below(v: float) -> Probe:
    return lambda core, _s: any(float(core.truth(m).cell_v.min()) < v for m in core.modules)


def cell_spread_above(v: float) -> Probe:
    def probe(core: PlantCore, _s: PlantState) -> bool:
        values = [float(x) for m in core.modules for x in core.truth(m).cell_v]
        return max(values) - min(values) > v

    return probe


def temp_above(c: float) -> Probe:
    return lambda core, _s: any(float(core.truth(m).temp_c.max()) > c for m in core.modules)


def temp_below(c: float) -> Probe:
    return lambda core, _s: any(float(core.truth(m).temp_c.min()) < c for m in core.modules)


def temp_spread_above(c: float) -> Probe:
    def probe(core: PlantCore, _s: PlantState) -> bool:
        for m in core.modules:
            t = core.truth(m).sensor_temp_c
            if float(t.max() - t.min()) > c:
                return True
        return False

    return probe


def current_above(a: float) -> Probe:
    return lambda _c, s: abs(s.current_a) > a


Onset = Probe | Literal["injection", "open_command", "precharge_start"]


@dataclass(frozen=True)
class Row:
    id: str
    kind: str
    fault: str
    """Arguments of `python -m services.plant inject` (several injections joined by ` + `,
    applied in that order), or a bench action in parentheses."""
    state: OperatingState
    expected: tuple[ProtectionCode, ...]
    level: Level
    onset: Onset
    onset_text: str
    delay_s: float | None
    timeout_s: float = 15.0
    reps: int = 3
    temperature: bool = False
    """The fault moved cell temperatures: bring them back to ambient before the reset."""
    profile_a: float | None = None
    """The bench's stand-in for `inverter_ignores_limits`: the load profile jumps to this."""
    relay_silent: bool = False
    """The bench's stand-in for a dead relay module: the simulated module answers nothing."""
    note: str = ""
    quick: bool = False
    """One of the rows `--quick` runs."""
    early_by_s: float = 0.0
    """How much sooner than `delay_s` after the onset a reaction may rightly come: a delay
    counted from the last sample the stack got starts up to one sample period before the
    injection."""

    def controls(self) -> list[PlantControl]:
        if self.fault.startswith("("):
            return []
        controls = []
        for one in self.fault.split(" + "):
            words = one.split()
            fields: dict[str, Any] = {"fault": words[0]}
            for flag, value in zip(words[1::2], words[2::2], strict=True):
                key = flag.removeprefix("--").replace("-", "_")
                fields[key] = value if key in ("target", "contactor") else float(value)
                if key in ("module", "channel"):
                    fields[key] = int(value)
            # 1-based numbers, as a person types them, to the contract's indices
            fields["module"], fields["channel"] = place_indices(
                fields["fault"], fields.get("module"), fields.get("channel"), fields.get("target")
            )
            controls.append(PlantControl(**fields))
        return controls


@dataclass(frozen=True)
class Kind:
    """One fault kind of the grid: its row's fields, and what differs in some states."""

    kind: str
    base: dict[str, Any]
    per_state: dict[OperatingState, dict[str, Any]] = field(default_factory=dict)

    def row(self, state: OperatingState) -> Row:
        fields = {**self.base, **self.per_state.get(state, {})}
        return Row(id=f"{self.kind}/{state}", kind=self.kind, state=state, **fields)


def _k(kind: str, per_state: dict[OperatingState, dict[str, Any]] | None = None,
       **base: Any) -> Kind:  # fmt: skip
    return Kind(kind, base, per_state or {})


def rows_of(config: SystemConfig) -> list[Row]:
    """Every fault kind in every operating state but those of `NOT_APPLICABLE`."""
    rows: list[Row] = []
    kinds = kinds_of(config)
    if [k.kind for k in kinds] != list(FAULT_KINDS):
        raise ValueError("the bench's fault kinds differ from shared.fault_matrix.FAULT_KINDS")
    for k in kinds:
        for state in OPERATING_STATES:
            if (k.kind, state) in NOT_APPLICABLE:
                if state in k.per_state:
                    raise ValueError(f"{k.kind}: a row for {state}, said not applicable")
                continue
            rows.append(k.row(state))
    return rows


def kinds_of(config: SystemConfig) -> list[Kind]:
    p = config.protection
    ov, uv = p.cell_overvoltage.fault, p.cell_undervoltage.fault
    otc, otd = p.cell_overtemp_charge.fault, p.cell_overtemp_discharge.fault
    utc, utd = p.cell_undertemp_charge.fault, p.cell_undertemp_discharge.fault
    imb = p.cell_imbalance.fault
    chg, dis = p.charge_overcurrent.fault, p.discharge_overcurrent.fault
    spread_c = p.temperature_spread_alarm_c
    # A flag that hides quantities trips within their shortest fault delay (protection.HIDES).
    hides_cells_s = min(ov.delay_s, uv.delay_s)
    hides_all_s = min(hides_cells_s, otd.delay_s, utd.delay_s)
    stale_s = config.current_sensor.can.stale_after_s
    # A module is stale after module_timeout_periods samples, then the ride-through.
    periods = p.module_timeout_periods
    comm_s = periods * config.timing.sample_period_working_s + config.comm_loss.ride_through_s
    comm_standby_s = (
        periods * config.timing.sample_period_standby_s + config.comm_loss.ride_through_s
    )
    feedback_s = config.contactors.feedback_timeout_s
    stuck_temp_s = p.stuck_temperature_samples * config.timing.sample_period_working_s
    moved = ("the feedback timeout runs from the command: a contact that moves while its "
             "command holds drops the coils at the next read, the code follows its "
             "debounce")  # fmt: skip
    standby_drift = ("standby: a slower drift, as the boards are read every 2 s; two "
                     "repetitions")  # fmt: skip
    heat = (f"heated (cooled) at {TEMPERATURE_RATE_C_PER_S:g} °C/s, the bench's rate, to keep "
            f"the matrix short")  # fmt: skip
    ov_v = {"onset": cell_v_above(ov.threshold), "delay_s": ov.delay_s,
            "onset_text": f"true cell voltage > {ov.threshold:g} V"}  # fmt: skip
    uv_v = {"onset": cell_v_below(uv.threshold), "delay_s": uv.delay_s,
            "onset_text": f"true cell voltage < {uv.threshold:g} V"}  # fmt: skip
    otd_c = {"onset": temp_above(otd.threshold), "delay_s": otd.delay_s,
             "onset_text": f"true cell temperature > {otd.threshold:g} °C"}  # fmt: skip
    utd_c = {"onset": temp_below(utd.threshold), "delay_s": utd.delay_s,
             "onset_text": f"true cell temperature < {utd.threshold:g} °C"}  # fmt: skip
    temp = {"level": "fault", "timeout_s": 25.0, "temperature": True, "note": heat}
    discrete = {"onset": "injection", "onset_text": "injection", "level": "fault"}
    oc_chg = {"expected": (C.CHARGE_OVERCURRENT,), "level": "fault",
              "onset": current_above(chg.threshold), "delay_s": chg.delay_s,
              "onset_text": f"true current > {chg.threshold:g} A",
              "profile_a": OVERCURRENT_A}  # fmt: skip
    oc_dis = {"expected": (C.DISCHARGE_OVERCURRENT,), "level": "fault",
              "onset": current_above(dis.threshold), "delay_s": dis.delay_s,
              "onset_text": f"true current > {dis.threshold:g} A",
              "profile_a": -OVERCURRENT_A}  # fmt: skip
    return [
        _k("cell_ov", {
            "standby": {"fault": "cell_drift --module 1 --channel 2 --value 0.1", "reps": 2,
                        "timeout_s": 20.0, "note": standby_drift},
            "charging": {"quick": True},
        }, note="0.5 V/s: the delay ends with the cell still within the 1-4.95 V "
           "measurement range (a reading beyond it counts as beyond the threshold too)",
           fault="cell_drift --module 2 --channel 3 --value 0.5", expected=(C.CELL_OVERVOLTAGE,),
           level="fault", **ov_v),
        _k("pack_ov", {
            "standby": {"fault": "cell_drift --value 0.1", "reps": 2, "timeout_s": 20.0,
                        "note": standby_drift},
        }, fault="cell_drift --value 0.5", expected=(C.PACK_OVERVOLTAGE, C.CELL_OVERVOLTAGE),
           level="fault", **ov_v,
           note="every cell drifts up: the pack and the cell thresholds coincide "
           "(8 x 4.25 V = 34.0 V)"),
        _k("cell_uv", {
            "standby": {"fault": "cell_drift --module 1 --channel 1 --value -0.1", "reps": 2,
                        "timeout_s": 20.0, "note": standby_drift},
        }, fault="cell_drift --module 1 --channel 1 --value -0.5",
           expected=(C.CELL_UNDERVOLTAGE,), level="fault", **uv_v,
           note="0.5 V/s: the delay ends with the cell still within the 1-4.95 V "
           "measurement range (a reading beyond it counts as beyond the threshold too)"),
        _k("deep_discharge", {
            "standby": {"fault": "cell_drift --module 2 --channel 2 --value -0.2", "reps": 2,
                        "timeout_s": 25.0, "note": standby_drift},
        }, fault="cell_drift --module 2 --channel 2 --value -1.0", expected=(C.DEEP_DISCHARGE,),
           level="fault", onset=cell_v_below(p.deep_discharge_v),
           onset_text=f"true cell voltage < {p.deep_discharge_v:g} V", delay_s=uv.delay_s,
           note="the cell passes 3.0 V and 2.5 V within the under-voltage delay: both codes "
           "latch; cleared by a service reset"),
        _k("pack_uv", {
            "standby": {"fault": "cell_drift --value -0.1", "reps": 2, "timeout_s": 20.0,
                        "note": standby_drift},
        }, fault="cell_drift --value -0.5", expected=(C.PACK_UNDERVOLTAGE, C.CELL_UNDERVOLTAGE),
           level="fault", **uv_v,
           note="every cell drifts down: the pack and the cell thresholds coincide"),
        _k("imbalance", fault="cell_drift --module 2 --channel 1 --value -0.04",
           expected=(C.CELL_IMBALANCE,), level="fault", onset=cell_spread_above(imb.threshold),
           onset_text=f"true cell spread > {imb.threshold:g} V", delay_s=imb.delay_s,
           timeout_s=30.0, reps=1, note="slow: a 9 s drift, then the 5 s delay; one repetition"),
        _k("over_temp", {
            "charging": {"fault": "over_temperature --module 1 --channel 1 --value 50",
                         "expected": (C.CELL_OVERTEMP_CHARGE,),
                         "onset": temp_above(otc.threshold), "delay_s": otc.delay_s,
                         "onset_text": f"true cell temperature > {otc.threshold:g} °C"},
        }, fault="over_temperature --module 2 --channel 2 --value 64",
           expected=(C.CELL_OVERTEMP_DISCHARGE,), **otd_c, **temp),
        _k("under_temp", {
            "charging": {"fault": "under_temperature --module 1 --channel 2 --value -3",
                         "expected": (C.CELL_UNDERTEMP_CHARGE,),
                         "onset": temp_below(utc.threshold), "delay_s": utc.delay_s,
                         "onset_text": f"true cell temperature < {utc.threshold:g} °C"},
        }, fault="under_temperature --module 2 --channel 1 --value -23",
           expected=(C.CELL_UNDERTEMP_DISCHARGE,), **utd_c, **temp),
        _k("spread", fault="over_temperature --module 1 --channel 1 --value 42",
           expected=(C.TEMPERATURE_SPREAD,), level="alarm",
           onset=temp_spread_above(spread_c), onset_text=f"true sensor spread > {spread_c:g} °C",
           delay_s=None, timeout_s=25.0, temperature=True,
           note=f"{heat}; 42 °C: below the charge over-temperature fault ({otc.threshold:g} °C)"),
        _k("chg_oc", {
            "charging": {"quick": True},
            "discharging": {"note": "the inverter swings from discharging to charging"},
        }, fault=f"(load profile {OVERCURRENT_A:g} A; inverter_ignores_limits)", **oc_chg),
        _k("dis_oc", {
            "charging": {"note": "the inverter swings from charging to discharging"},
        }, fault=f"(load profile -{OVERCURRENT_A:g} A; inverter_ignores_limits)", **oc_dis),
        _k("open_wire", {
            "standby": {"fault": "open_wire --module 1 --channel 3",
                        "note": "standby: the boards are sampled every 2 s"},
        }, fault="open_wire --module 2 --channel 4", expected=(C.OPEN_WIRE,),
           delay_s=hides_cells_s, **discrete),
        _k("sensor_fault", fault="open_wire --module 1 --channel 2 --target temp",
           expected=(C.SENSOR_FAULT,), delay_s=hides_all_s, **discrete,
           note="an open temperature sensor: the board sets its sensor-fault bit"),
        _k("out_of_range", fault="noisy_channel --module 2 --channel 2 --value 3.0",
           expected=(C.MEASUREMENT_OUT_OF_RANGE,), delay_s=hides_all_s, **discrete, reps=2,
           timeout_s=25.0, note="3 V of noise on one cell: readings outside 1.00-4.95 V; two "
           "repetitions (detection waits for enough readings out of range)"),
        _k("stuck_cell", fault="stuck_sensor --module 1 --channel 4",
           expected=(C.STUCK_CELL_VOLTAGE_CHANNEL,), delay_s=None, **discrete,
           timeout_s=30.0, reps=1,
           note="the check needs its samples identical while current flows: one repetition"),
        _k("stuck_temp", fault="stuck_sensor --module 1 --channel 2 --target temp",
           expected=(C.STUCK_TEMPERATURE_CHANNEL,), delay_s=stuck_temp_s, **discrete,
           timeout_s=30.0, reps=1,
           note=f"stuck_temperature_samples set to {p.stuck_temperature_samples} for the matrix "
           f"(default {STUCK_TEMPERATURE_SAMPLES}, a minute at 10 Hz): the check needs that "
           f"many identical samples while current flows and the module's other sensor moves "
           f"(its reading noise, 0.1 °C steps); one repetition"),
        _k("board_dropout", {
            "standby": {"fault": "board_dropout --module 1", "delay_s": comm_standby_s,
                        "early_by_s": config.timing.sample_period_standby_s,
                        "timeout_s": 30.0, "reps": 1,
                        "note": "standby: the boards are sampled every 2 s; one repetition"},
            "closed_idle": {"quick": True},
        }, fault="board_dropout --module 2", expected=(C.COMMUNICATION_LOSS,), delay_s=comm_s,
           early_by_s=config.timing.sample_period_working_s, **discrete,
           note="delay: module_timeout_periods samples, then the ride-through; it runs from "
           "the board's last sample, up to a sample period before the injection"),
        _k("current_dropout", fault="current_dropout", expected=(C.CURRENT_SENSOR_FAILURE,),
           delay_s=min(chg.delay_s, dis.delay_s), **discrete,
           note=f"delay: after the sensor's stale time ({stale_s:g} s)"),
        _k("offset_open", fault="current_offset --value 5", expected=(C.CURRENT_ON_OPEN_STRING,),
           delay_s=p.open_string_delay_s, **discrete),
        _k("offset_small", fault="current_offset --value 0.8",
           expected=(C.CURRENT_OFFSET_HIGH,), onset="injection", onset_text="injection",
           level="warning", delay_s=p.current_offset_window_s, timeout_s=30.0, reps=1,
           note="slow: the offset is the mean over a 10 s window; one repetition"),
        _k("insulation", fault=f"insulation_fault --value {INSULATION_FAULT_OHM:g}",
           expected=(C.INSULATION_LOW,), delay_s=INSULATION_DELAYS_S[1], **discrete,
           timeout_s=30.0,
           note="the iso165C reports the resistance in its next cycles; then the fault delay"),
        _k("u1_offset", fault=f"voltage_offset --value {U1_OFFSET_V:g}",
           expected=(C.PACK_VOLTAGE_PLAUSIBILITY,), delay_s=p.pack_plausibility_delay_s,
           **discrete, note=f"U1 {U1_OFFSET_V:g} V off the sum of the cells (tolerance "
           f"{p.pack_plausibility_tolerance_v:g} V)"),
        _k("iso_silent", fault="insulation_monitor_silent",
           expected=(C.INSULATION_MONITOR_FAILURE,), delay_s=p.insulation_monitor_timeout_s,
           **discrete, timeout_s=40.0, reps=1,
           note="delay: no good reading for insulation_monitor_timeout_s, counted from the "
           "last info frame (stale after insulation_monitor.can.stale_after_s); one repetition"),
        _k("feedback_stuck", {
            "standby": {"fault": "feedback_stuck --contactor main_positive --value 1",
                        "note": "commanded open, reads closed; " + moved},
            "precharge": {"fault": "feedback_stuck --contactor main_positive --value 1",
                          "note": "commanded open while the link charges, reads closed; "
                          + moved},
        }, fault="feedback_stuck --contactor main_positive --value 0",
           expected=(C.CONTACTOR_FEEDBACK_MISMATCH,), delay_s=feedback_s, **discrete,
           note="commanded closed, reads open; " + moved),
        _k("weld", {
            "precharge": {"fault": "contactor_weld --contactor main_negative",
                          "note": "main negative welded while the link charges, then an "
                          "operator open command: only detection is timed"},
        }, fault="contactor_weld --contactor main_positive",
           expected=(C.CONTACTOR_WELDED, C.CONTACTOR_FEEDBACK_MISMATCH), level="fault",
           onset="open_command", onset_text="the open command after the weld",
           delay_s=feedback_s,
           note="welded while closed, then an operator open command: the coils drop on the "
           "command itself, so only detection is timed"),
        _k("weld_pair", fault="contactor_weld --contactor main_positive + contactor_weld "
           "--contactor main_negative", expected=(C.CONTACTOR_WELDED,), level="fault",
           onset="open_command", onset_text="the open command after the weld",
           delay_s=feedback_s, reps=2,
           note="both mains welded while closed, then an operator open command: current keeps "
           "flowing through the welded contacts; the coils drop on the command itself, so only "
           "detection is timed. Safe state: coils off, contactors fault, limits 0/0 A, but the "
           "BMS cannot stop a current through welded contacts (the inverter has to, on the "
           "limits); cleared by a service reset; two repetitions"),
        _k("precharge_short", fault="precharge_short", expected=(C.PRECHARGE_FAILURE,),
           level="fault", onset="precharge_start", onset_text="the precharge coil's first "
           "on-write", delay_s=None, timeout_s=40.0, reps=1,
           note="the short is in place before the close command; reaction: to the coils' "
           "first all-off write (the try aborted); one repetition (the retries are slow)"),
        _k("relay_silent", fault="(relay module answers nothing)",
           expected=(C.CONTACTOR_IO_FAILURE,), level="fault", onset="injection",
           onset_text="the module falls silent", delay_s=p.contactor_io_timeout_s,
           relay_silent=True,
           note="no plant inject command yet: the bench sets the simulated module silent; the "
           "coil-off writes still reach it, each after the timeout of the one before"),
    ]  # fmt: skip


# --- the plant, probed ----------------------------------------------------------------------
class ProbedPlant(PlantService):
    """The plant service, noting the step at which the armed probe first holds and the moment
    each fault was applied (on the plant's thread, on its clock)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe: Probe | None = None
        self.onset: tuple[float, float] | None = None  # (monotonic, wall)
        self.applied: dict[str, tuple[float, float]] = {}
        self.discharge_link = threading.Event()
        """Set: the next step empties the DC link (see `Matrix.start_precharge`)."""

    def arm(self, probe: Probe | None) -> None:
        self.onset = None
        self.applied.clear()
        self.probe = probe

    def tick(self, now_s: float) -> None:
        super().tick(now_s)
        core = self.core
        if core is not None and self.discharge_link.is_set():
            core.contactors.bus_voltage_v = 0.0
            self.discharge_link.clear()
        probe = self.probe
        if (
            probe is not None
            and self.onset is None
            and core is not None
            and probe(core, core.state())
        ):
            self.onset = (now_s, self.wall())

    def _on_control(self, d: Delivery[PlantControl]) -> None:
        super()._on_control(d)
        c = d.message
        core = self.core
        if c.fault in ("over_temperature", "under_temperature") and core is not None:
            # The same fault again at the bench's rate (it replaces the one just started).
            for m in core.modules if c.module is None else [c.module]:
                core.cells.modules[m].faults.activate(
                    c.fault, channel=c.channel, value=c.value, target=c.target,
                    rate_c_per_s=TEMPERATURE_RATE_C_PER_S,
                )  # fmt: skip
        self.applied[c.fault] = (self.monotonic(), self.wall())

    @property
    def relay(self) -> Relay:
        device = self.devices["relay"]
        assert isinstance(device, Relay)
        return device

    def set_profile_a(self, current_a: float) -> None:
        assert self.core is not None
        self.core.profile = parse_profile(f"constant:{current_a:g}")


# --- the stack ------------------------------------------------------------------------------
def matrix_config() -> SystemConfig:
    base = SystemConfig.from_preset("NMC", system_id=SYSTEM, modules=2, cells_per_module=4)
    data = base.model_dump(mode="json")
    data["current_sensor"]["can"] |= {"interface": "udp_multicast", "channel": IVT_CAN_GROUP}
    data["contactors"]["io"] |= {"transport": "tcp", "host": "127.0.0.1", "tcp_port": RELAY_PORT}
    # A precharge of about 2.5 s (tau 0.6 s) instead of 0.8 s: a fault injected once the
    # precharge coil is on lands while the link charges, with time to be caught there.
    data["contactors"] |= {"dc_link_capacitance_f": PRECHARGE_LINK_F,
                           "precharge_timeout_s": PRECHARGE_TIMEOUT_S}  # fmt: skip
    # The stuck-temperature check within the matrix's time bound: 5 s of samples at 10 Hz
    # instead of a minute (row stuck_temp says so).
    data["protection"]["stuck_temperature_samples"] = MATRIX_STUCK_TEMPERATURE_SAMPLES
    data["insulation_monitor"] = {
        "driver": "iso165c",
        "can": {"interface": "udp_multicast", "channel": ISO_CAN_GROUP, "stale_after_s": 2.0},
    }
    return SystemConfig.model_validate(data)


class Process:
    def __init__(self, name: str, url: str, log_dir: Path, **env: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        full = dict(os.environ, BMS_MQTT_URL=url, BMS_SYSTEM=SYSTEM, PYTHONPATH=str(ROOT))
        full.update({f"BMS_{k.upper()}": v for k, v in env.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT, env=full, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


@dataclass
class Rep:
    reaction_s: float | None
    detection_s: float | None
    detected: set[str] = field(default_factory=set)
    level: Level | None = None
    safe: SafeState | None = None
    reached: bool = False
    in_state: bool = True
    """The fault was applied in the row's state (precharge: precharge coil on, main positive
    off)."""


class Stack:
    def __init__(self, url: str, tmp: Path) -> None:
        self.config = matrix_config()
        self.tmp = tmp
        self.bus = MqttBus(parse_mqtt_url(url), system=SYSTEM, service="matrix", kind="bench")
        self.client = CommandClient(self.bus)
        self.states: list[tuple[float, PackState]] = []  # (arrival monotonic, state)
        self.lock = threading.Lock()
        self.bus.subscribe(PACK_STATE, self._on_state)
        self._stop = threading.Event()
        if not self.bus.start(wait_s=10):
            raise RuntimeError(f"no broker at {url}")
        self._pump = threading.Thread(target=self._run_bus, name="matrix-bus", daemon=True)
        self._pump.start()
        self.bus.publish(CONFIG, ConfigMessage(config=self.config))
        settings = PlantSettings(mqtt_url=url, system=SYSTEM, instance="plant",
                                 boards_port=BOARDS_PORT, load_profile="constant:0",
                                 inverter=False,
                                 log_level="WARNING")  # fmt: skip
        self.plant_bus = MqttBus.from_settings(settings, kind="plant")
        self.plant = ProbedPlant(settings, self.plant_bus)
        if not self.plant_bus.start(wait_s=10):
            raise RuntimeError("the plant cannot reach the broker")
        self._plant_thread = threading.Thread(
            target=self.plant.run, args=(self._stop.is_set,), name="plant", daemon=True
        )
        self._plant_thread.start()
        if not wait_until(lambda: "relay" in self.plant.devices, 20):
            raise RuntimeError("the plant did not configure its devices")
        self.agent = Process("slave_agent", url, tmp, driver="modbus",
                             modbus_port=f"tcp://127.0.0.1:{BOARDS_PORT}",
                             modbus_map_file=DEFAULT_BOARD_MAP)  # fmt: skip
        self.master = Process("master_core", url, tmp, hardware="devices",
                              data_dir=str(tmp / "master"))  # fmt: skip

    def _run_bus(self) -> None:
        while not self._stop.is_set():
            self.bus.process(timeout_s=0.02)

    def _on_state(self, d: Delivery[PackState]) -> None:
        with self.lock:
            self.states.append((time.monotonic(), d.message))
            del self.states[:-2000]

    def latest(self) -> PackState | None:
        with self.lock:
            return self.states[-1][1] if self.states else None

    def states_since(self, wall_s: float) -> list[PackState]:
        with self.lock:
            return [s for _, s in self.states if (s.ts or 0.0) >= wall_s]

    def command(self, name: str, args: CommandArgs | None = None) -> CommandReply | None:
        return self.client.request_pumped(name, args)

    def inject(self, control: PlantControl) -> None:
        self.bus.publish(PLANT_CONTROL, control.model_copy(update={"expires_at": time.time() + 10}))

    def coils(self) -> list[bool]:
        io = self.config.contactors.io
        values = self.plant.relay.module.coils()
        return [values[getattr(io, f"coil_{name}")] for name in CONTACTORS]

    def coil(self, name: str) -> bool:
        """What the relay module's coil of contactor `name` holds now."""
        value: bool = self.plant.relay.module.coils()[getattr(self.config.contactors.io,
                                                              f"coil_{name}")]  # fmt: skip
        return value

    def coil_writes(self) -> list[tuple[float, int, bool]]:
        for _ in range(10):
            try:
                return list(self.plant.relay.module.coil_writes)
            except RuntimeError:  # appended to while copied
                continue
        return []

    def contactors(self) -> str | None:
        s = self.latest()
        return None if s is None else s.contactors

    def close(self) -> None:
        self.master.stop()
        self.agent.stop()
        self._stop.set()
        self._plant_thread.join(10)
        self.plant.stop()
        self.plant_bus.stop()
        self.bus.stop()


# --- one row --------------------------------------------------------------------------------
class Matrix:
    def __init__(self, stack: Stack, log: Callable[[str], None]) -> None:
        self.s = stack
        self.log = log

    def establish(self, state: OperatingState) -> bool:
        """Bring the stack into `state`; for precharge: working with the contactors open (the
        rep then issues the close command and injects once the precharge coil is on)."""
        s = self.s
        s.plant.set_profile_a(0.0)
        if s.contactors() == "fault":  # a trip the last row's reset did not clear
            s.command("reset_faults", ResetFaultsArgs())
        if state == "standby":
            s.command("set_mode", SetModeArgs(mode="standby"))
            return wait_until(lambda: s.contactors() == "standby" and not any(s.coils()), 20)
        s.command("set_mode", SetModeArgs(mode="working"))
        if state == "precharge":
            s.command("contactors", ContactorsArgs(action="open"))
            return wait_until(lambda: s.contactors() == "standby" and not any(s.coils()), 20)

        def closed() -> bool:
            if s.contactors() == "closed":
                return True
            if s.contactors() == "standby":
                s.command("contactors", ContactorsArgs(action="close"))
                wait_until(lambda: s.contactors() != "standby", 3)
            return False

        if not wait_until(closed, 40, step_s=0.2):
            return False
        s.plant.set_profile_a(STATE_PROFILE_A[state])
        time.sleep(1.0)  # the current settles before the fault
        return True

    def start_precharge(self) -> bool:
        """Empty the DC link, send the close command and wait for the precharge coil (on the
        module itself). The plant has no inverter here, so nothing discharges an open link:
        without this a close after the last row's would find it charged and finish at once."""
        s = self.s
        for _ in range(3):  # a close right after standby mode may meet modules still stale
            if s.contactors() == "fault":
                s.command("reset_faults", ResetFaultsArgs())
                wait_until(lambda: s.contactors() == "standby", 5)
            if s.contactors() != "standby":
                s.command("contactors", ContactorsArgs(action="open"))
                wait_until(lambda: s.contactors() == "standby" and not any(s.coils()), 10)
            # Only an open link may be emptied, and the master must have read it open: a link
            # falling to 0 V under a precharge path it still reads closed is a short to it
            # (the working mode's start-up close, just opened, leaves the path closing).
            wait_until(self._contacts_open, 5)
            time.sleep(0.3)
            s.plant.discharge_link.set()
            wait_until(lambda: not s.plant.discharge_link.is_set(), 2)
            replies: list[CommandReply | None] = []
            s.client.send("contactors", ContactorsArgs(action="close"), on_reply=replies.append)
            if wait_until(self.precharging, 4, step_s=0.005):
                return True
            self.log(f"  no precharge after the close command: reply {replies}, master log:\n"
                     f"{s.master.tail(1500)}")  # fmt: skip
        return False

    def _contacts_open(self) -> bool:
        core = self.s.plant.core
        return core is not None and core.contactors.feedback.all_open

    def _welded(self, name: ContactorName | None) -> bool:
        core = self.s.plant.core
        return core is not None and name is not None and core.contactors.is_welded(name)

    def precharging(self) -> bool:
        return self.s.coil("precharge") and not self.s.coil("main_positive")

    def run_rep(self, row: Row) -> Rep:
        s = self.s
        probe = row.onset if callable(row.onset) else None
        s.plant.arm(probe)
        t_start = time.monotonic()
        wall_start = time.time()
        onset: tuple[float, float] | None = None
        in_state = True
        if row.state == "precharge" and row.onset != "precharge_start":
            in_state = self.start_precharge()
        for control in row.controls():
            s.inject(control)
        if row.controls() and row.state == "precharge" and row.onset != "precharge_start":
            # the state as the plant applied the fault
            wait_until(lambda: row.controls()[0].fault in s.plant.applied, 2, step_s=0.002)
            in_state = in_state and self.precharging()
            if not in_state:
                self.log(f"  not precharging at the injection: coils {s.coils()}; master log:\n"
                         f"{s.master.tail(3000)}")  # fmt: skip
        if row.profile_a is not None:
            s.plant.set_profile_a(row.profile_a)
        if row.relay_silent:
            in_state = in_state and (row.state != "precharge" or self.precharging())
            s.plant.relay.module.silent = True
            onset = (time.monotonic(), time.time())
        if row.onset == "open_command":
            welded = [c.contactor for c in row.controls() if c.fault == "contactor_weld"]
            wait_until(lambda: all(self._welded(name) for name in welded), 5)
            time.sleep(0.3)
            if row.state == "precharge" and not self.precharging():
                self.log(f"  not precharging at the open command: coils {s.coils()}")
                in_state = False
            onset = (time.monotonic(), time.time())
            s.command("contactors", ContactorsArgs(action="open"))
        elif row.onset == "precharge_start":
            wait_until(lambda: "precharge_short" in s.plant.applied, 5)
            s.command("contactors", ContactorsArgs(action="close"))

        def detected() -> bool:
            return any(self._raised(st, row) for st in s.states_since(wall_start))

        wait_until(detected, row.timeout_s, step_s=0.05)
        # onset
        if row.onset == "injection" and onset is None:
            controls = row.controls()
            if controls:
                onset = s.plant.applied.get(controls[0].fault)
        elif probe is not None:
            onset = s.plant.onset
        elif row.onset == "precharge_start":
            pre = self.s.config.contactors.io.coil_precharge
            on_s = next((t for t, c, v in s.coil_writes() if t >= t_start and c == pre and v),
                        None)  # fmt: skip
            onset = None if on_s is None else (on_s, wall_start + (on_s - t_start))
        rep = Rep(reaction_s=None, detection_s=None, in_state=in_state)
        # the safe state first: it waits for the coils to drop, which may come after the code
        # (a silent relay module takes each write's timeout)
        rep.reached, rep.safe = self._safe(row)
        states = s.states_since(wall_start)
        for st in states:
            rep.detected |= {*st.faults, *st.alarms, *st.warnings}
        levels: list[Level] = [lv for st in states for lv in self._levels(st, row)]
        rep.level = top(levels)
        if onset is not None:
            first = next((st for st in states if self._raised(st, row)), None)
            if first is not None and first.ts is not None:
                rep.detection_s = first.ts - onset[1]
            if row.onset != "open_command":  # there the command itself drops the coils
                rep.reaction_s = self._reaction(onset[0])
                if rep.reaction_s is None and row.level == "fault" and row.state != "standby":
                    after = [(round(t - onset[0], 3), c, v) for t, c, v in s.coil_writes()
                             if t >= onset[0] - 0.5]  # fmt: skip
                    self.log(f"  no reaction timed; coil writes around the onset: {after[:12]}")
        self.log(
            f"  {row.id}: detected {sorted(rep.detected)} level {rep.level} reaction "
            f"{rep.reaction_s} detection {rep.detection_s} safe {rep.reached} "
            f"(onset {'yes' if onset else 'none'}; in state {in_state})"
        )
        return rep

    def _levels(self, st: PackState, row: Row) -> list[Level]:
        found: list[Level] = []
        for level, codes in (("fault", st.faults), ("alarm", st.alarms),
                             ("warning", st.warnings)):  # fmt: skip
            if any(c in codes for c in row.expected):
                found.append(level)  # type: ignore[arg-type]
        return found

    def _raised(self, st: PackState, row: Row) -> bool:
        return any(LEVEL_RANK[lv] >= LEVEL_RANK[row.level] for lv in self._levels(st, row))

    def _reaction(self, onset_s: float) -> float | None:
        """Onset to the first coil write after which every coil is off, when any was on at
        the onset (a finished precharge drops the precharge coil alone: not a reaction)."""
        writes = self.s.coil_writes()
        on: dict[int, bool] = {}
        for t, coil, value in writes:
            if t < onset_s:
                on[coil] = value
        if not any(on.values()):
            return None
        for t, coil, value in writes:
            if t < onset_s:
                continue
            on[coil] = value
            if not value and not any(on.values()):
                return t - onset_s
        return None

    def _safe(self, row: Row) -> tuple[bool, SafeState]:
        s = self.s
        concerns = SPECS[row.expected[0]].concerns

        def check() -> tuple[bool, SafeState]:
            st = s.latest()
            coils_off = not any(s.coils())
            safe = SafeState(
                coils_off=coils_off,
                contactors=None if st is None else st.contactors,
                charge_limit_a=None if st is None else st.limits.charge_current_a,
                discharge_limit_a=None if st is None else st.limits.discharge_current_a,
            )
            if st is None:
                return False, safe
            if row.level == "fault":  # physical: whatever code the master shows (or none)
                ok = coils_off and st.contactors == "fault"
                ok = ok and safe.charge_limit_a == 0.0 and safe.discharge_limit_a == 0.0
            elif not self._raised(st, row):
                ok = False
            elif row.level == "alarm":
                ok = ("charge" not in concerns or safe.charge_limit_a == 0.0) and (
                    "discharge" not in concerns or safe.discharge_limit_a == 0.0
                )
            else:
                ok = True
            return ok, safe

        box: list[tuple[bool, SafeState]] = []

        def done() -> bool:
            box.append(check())
            return box[-1][0]

        wait_until(done, 10, step_s=0.1)
        return box[-1]

    def recover(self, row: Row) -> bool:
        """Clear the fault, bring temperatures back, reset the latches."""
        s = self.s
        s.plant.relay.module.silent = False
        s.plant.set_profile_a(0.0)
        s.inject(PlantControl(fault="clear"))
        if row.temperature:
            control = row.controls()[0]
            back = "under_temperature" if control.fault == "over_temperature" else (
                "over_temperature")  # fmt: skip
            s.inject(control.model_copy(update={"fault": back, "value": AMBIENT_C}))

            def ambient() -> bool:
                core = s.plant.core
                assert core is not None
                t = [float(x) for m in core.modules for x in core.truth(m).temp_c]
                return max(t) < AMBIENT_C + 3 and min(t) > AMBIENT_C - 3

            wait_until(ambient, 60, step_s=0.2)
            s.inject(PlantControl(fault="clear"))
        time.sleep(0.5)

        def reset() -> bool:
            st = s.latest()
            if st is not None and not st.faults and st.contactors != "fault":
                return True
            # A service reset where a latched code needs one (a deep discharge may latch
            # beside an under-voltage whatever the row expected).
            latched = [*row.expected, *(st.faults if st is not None else ())]
            if any(c in SPECS and SPECS[ProtectionCode(c)].reset == "service" for c in latched):
                s.command("service_reset", ServiceResetArgs(service_override=ServiceOverride(
                    user="matrix", reason="fault matrix bench")))  # fmt: skip
            else:
                s.command("reset_faults", ResetFaultsArgs())
            time.sleep(0.5)
            return False

        return wait_until(reset, 40, step_s=0.5)

    def run_row(self, row: Row, reps: int) -> RowResult:
        self.log(f"{row.id}: {row.fault} in {row.state}")
        start_s = time.monotonic()
        results: list[Rep] = []
        for _ in range(reps):
            if not self.establish(row.state):
                self.log(f"  could not establish {row.state} (contactors {self.s.contactors()})")
                break
            results.append(self.run_rep(row))
            if not self.recover(row):
                self.log(f"  reset did not clear: {self.s.latest()}")
        return summarise(row, results, time.monotonic() - start_s)


def top(levels: list[Level]) -> Level | None:
    ranked = sorted(levels, key=LEVEL_RANK.__getitem__)
    return ranked[-1] if ranked else None


def _stats(values: list[float]) -> Reaction:
    if not values:
        return Reaction(n=0, p50_s=None, p99_s=None, max_s=None)
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return Reaction(n=len(ordered), p50_s=round(statistics.median(ordered), 4),
                    p99_s=round(p99, 4), max_s=round(ordered[-1], 4))  # fmt: skip


def summarise(row: Row, reps: list[Rep], duration_s: float) -> RowResult:
    detected = sorted({c for r in reps for c in r.detected})
    levels: list[Level] = [r.level for r in reps if r.level is not None]
    hit = bool(reps) and all(
        r.level is not None and LEVEL_RANK[r.level] >= LEVEL_RANK[row.level] for r in reps
    )
    reached = bool(reps) and all(r.reached for r in reps)
    last = reps[-1].safe if reps and reps[-1].safe else SafeState(
        coils_off=False, contactors=None, charge_limit_a=None, discharge_limit_a=None)  # fmt: skip
    return RowResult(
        id=row.id,
        kind=row.kind,
        fault=row.fault,
        state=row.state,
        expected=list(row.expected),
        level=row.level,
        onset=row.onset_text,
        configured_delay_s=row.delay_s,
        early_by_s=row.early_by_s,
        repetitions=max(len(reps), 1),
        detected=detected,
        detected_level=top(levels),
        reaction=_stats([r.reaction_s for r in reps if r.reaction_s is not None]),
        detection=_stats([r.detection_s for r in reps if r.detection_s is not None]),
        safe_state=last,
        reached_safe_state=reached,
        injected_in_state=bool(reps) and all(r.in_state for r in reps),
        status="ok" if hit and reached else ("unsafe" if hit else "not_detected"),
        duration_s=round(duration_s, 1),
        note=row.note,
    )


# --- the namespace --------------------------------------------------------------------------
def skip(reason: str) -> int:
    print(f"{Path(sys.argv[0]).stem} skipped: {reason}", file=sys.stderr)
    return EXIT_SKIP


def enter_netns(argv: list[str], script: Path | None = None, marker: str = NETNS_ENV) -> int | None:
    """Re-run `script` in a network namespace of its own; None when already inside (the
    variable `marker` says so). bench/chaos.py enters its namespace through here too."""
    if os.environ.get(marker) == "1":
        return None
    unshare = shutil.which("unshare")
    if unshare is None:
        return skip("unshare not found (util-linux)")
    env = dict(os.environ, **{marker: "1"})
    cmd = [sys.executable, str(script or Path(__file__).resolve()), *argv]
    for flags in (["--net", "--map-root-user"], ["--net"]):
        probe = subprocess.run([unshare, *flags, "true"], capture_output=True)
        if probe.returncode == 0:
            return subprocess.run([unshare, *flags, *cmd], env=env).returncode
    return skip("cannot create a network namespace (unshare --net)")


def setup_loopback() -> str | None:
    """Loopback up with a multicast route (udp_multicast CAN); the reason when it fails."""
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "lo", "multicast", "on"],
                ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"]):  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 and "File exists" not in done.stderr:
            return f"{' '.join(cmd)}: {done.stderr.strip()}"
    import can

    try:
        a = can.Bus(interface="udp_multicast", channel=IVT_CAN_GROUP)
        b = can.Bus(interface="udp_multicast", channel=IVT_CAN_GROUP)
    except OSError as exc:
        return f"udp_multicast: {exc}"
    try:
        a.send(can.Message(arbitration_id=1, data=b"x", is_extended_id=False))
        return None if b.recv(timeout=1.0) is not None else "udp_multicast: nothing looped back"
    finally:
        a.shutdown()
        b.shutdown()


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the quick rows, one rep each")
    parser.add_argument("--rows", help="comma-separated row ids (see --list)")
    parser.add_argument("--reps", type=int, help="repetitions per row (default: the row's own)")
    parser.add_argument("--out", type=Path, default=DATA_FILE, help="results JSON")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--merge", action="store_true",
                        help="put the rows run into the existing --out file (a re-run of some "
                        "rows) instead of replacing it")  # fmt: skip
    parser.add_argument(
        "--no-netns",
        action="store_true",
        help="run in this network namespace (ports 5020, 5120 must be free)",
    )
    args = parser.parse_args(args_in)
    config = matrix_config()
    rows = rows_of(config)
    if args.list:
        for r in rows:
            print(f"{r.id:32} {r.reps} {r.fault}")
        print(f"{len(rows)} rows, {sum(r.reps for r in rows)} repetitions")
        return 0
    if not args.no_netns:
        code = enter_netns(args_in)
        if code is not None:
            return code
    if find_mosquitto() is None:
        return skip("mosquitto not installed")
    if (why := setup_loopback()) is not None:
        return skip(why)
    if args.rows:
        wanted = args.rows.split(",")
        unknown = set(wanted) - {r.id for r in rows}
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}")
        rows = [r for r in rows if r.id in wanted]
    elif args.quick:
        rows = [r for r in rows if r.quick]
    start = time.monotonic()
    results: list[RowResult] = []
    with MosquittoBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        stack = Stack(broker.url, Path(tmp))
        try:
            matrix = Matrix(stack, lambda line: print(line, flush=True))
            if not matrix.establish("closed_idle"):
                print(stack.master.tail(), stack.agent.tail(), sep="\n", file=sys.stderr)
                print(f"the stack never closed: {stack.latest()}", file=sys.stderr)
                return 1
            for row in rows:
                reps = args.reps or (1 if args.quick else row.reps)
                results.append(matrix.run_row(row, reps))
        finally:
            stack.close()
    mode = " --quick" if args.quick else ""
    out = MatrixResults(
        command=f"python bench/fault_matrix.py{mode}",
        setup="NMC preset, 2 modules x 4 cells, plant steps 10 ms, boards 100 ms, IVT-S 20 ms, "
        f"relay polled 50 ms, DC link {PRECHARGE_LINK_F * 1000:g} mF (a precharge of about "
        f"2.5 s), temperature faults at {TEMPERATURE_RATE_C_PER_S:g} °C/s",
        duration_s=round(time.monotonic() - start),
        rows=results,
    )
    if args.merge and (old := load(args.out)) is not None:
        out = merge(old, out)
    dump(out, args.out)
    gaps = [r.id for r in results if r.status != "ok" and r.id in KNOWN_GAPS]
    bad = [r.id for r in results if r.status != "ok" and r.id not in KNOWN_GAPS]
    fixed = [r.id for r in results if r.status == "ok" and r.id in KNOWN_GAPS]
    print(
        f"{len(results)} rows run; the results took {out.duration_s:.0f} s in all; "
        f"known gaps: {gaps or 'none'}; "
        f"not ok: {bad or 'none'}; gaps now closed (drop from KNOWN_GAPS): {fixed or 'none'}"
    )
    return 0 if not bad else 2


if __name__ == "__main__":
    sys.exit(main())
