"""The fault-injection matrix: each injectable fault, in each operating state, through the plant.

    python bench/fault_matrix.py [--quick] [--rows ID,...] [--reps N] [--out FILE]

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

from services.master_core.contactors import CONTACTORS  # noqa: E402
from services.plant.core import PlantCore, PlantState  # noqa: E402
from services.plant.load_profiles import parse_profile  # noqa: E402
from services.plant.registry import Relay  # noqa: E402
from services.plant.service import PlantService  # noqa: E402
from services.plant.settings import DEFAULT_BOARD_MAP, PlantSettings  # noqa: E402
from shared.broker import MosquittoBroker, find_mosquitto  # noqa: E402
from shared.bus import Delivery, MqttBus  # noqa: E402
from shared.commands import CommandClient  # noqa: E402
from shared.config import SystemConfig  # noqa: E402
from shared.config.protection import INSULATION_DELAYS_S  # noqa: E402
from shared.fault_matrix import (  # noqa: E402
    DATA_FILE,
    KNOWN_GAPS,
    MatrixResults,
    OperatingState,
    Reaction,
    RowResult,
    SafeState,
    dump,
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
    fault: str
    """Arguments of `python -m services.plant inject`, or a bench action in parentheses."""
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
    note: str = ""
    quick: bool = False
    """One of the rows `--quick` runs."""

    def controls(self) -> list[PlantControl]:
        if self.fault.startswith("("):
            return []
        words = self.fault.split()
        fields: dict[str, Any] = {"fault": words[0]}
        for flag, value in zip(words[1::2], words[2::2], strict=True):
            key = flag.removeprefix("--").replace("-", "_")
            fields[key] = value if key in ("target", "contactor") else float(value)
            if key in ("module", "channel"):
                fields[key] = int(value)
        return [PlantControl(**fields)]


def rows_of(config: SystemConfig) -> list[Row]:
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
    return [
        Row("cell_ov/charging", "cell_drift --module 1 --channel 2 --value 1.0", "charging",
            (C.CELL_OVERVOLTAGE,), "fault", cell_v_above(ov.threshold),
            f"true cell voltage > {ov.threshold:g} V", ov.delay_s, quick=True),
        Row("cell_ov/standby", "cell_drift --module 0 --channel 1 --value 0.1", "standby",
            (C.CELL_OVERVOLTAGE,), "fault", cell_v_above(ov.threshold),
            f"true cell voltage > {ov.threshold:g} V", ov.delay_s, reps=1,
            note="slower drift: in standby the boards are read less often, and a cell past "
            "4.95 V reads out of range (measurement_out_of_range) before it reads over-voltage"),
        Row("pack_ov/closed_idle", "cell_drift --value 0.5", "closed_idle",
            (C.PACK_OVERVOLTAGE, C.CELL_OVERVOLTAGE), "fault",
            cell_v_above(ov.threshold), f"true cell voltage > {ov.threshold:g} V", ov.delay_s,
            reps=1, note="every cell drifts up: the pack and the cell thresholds coincide "
            "(8 x 4.25 V = 34.0 V)"),
        Row("cell_uv/discharging", "cell_drift --module 0 --channel 0 --value -1.0",
            "discharging", (C.CELL_UNDERVOLTAGE,), "fault", cell_v_below(uv.threshold),
            f"true cell voltage < {uv.threshold:g} V", uv.delay_s),
        Row("deep_discharge/discharging", "cell_drift --module 1 --channel 1 --value -1.0",
            "discharging", (C.DEEP_DISCHARGE,), "fault", cell_v_below(p.deep_discharge_v),
            f"true cell voltage < {p.deep_discharge_v:g} V", uv.delay_s, reps=1,
            note="at 1 V/s the cell passes 3.0 V and 2.5 V within the under-voltage delay: both "
            "codes latch; cleared by a service reset"),
        Row("pack_uv/closed_idle", "cell_drift --value -0.5", "closed_idle",
            (C.PACK_UNDERVOLTAGE, C.CELL_UNDERVOLTAGE), "fault",
            cell_v_below(uv.threshold), f"true cell voltage < {uv.threshold:g} V", uv.delay_s,
            reps=1, note="every cell drifts down: the pack and the cell thresholds coincide"),
        Row("imbalance/closed_idle", "cell_drift --module 1 --channel 0 --value -0.04",
            "closed_idle", (C.CELL_IMBALANCE,), "fault", cell_spread_above(imb.threshold),
            f"true cell spread > {imb.threshold:g} V", imb.delay_s, timeout_s=25.0, reps=1),
        Row("otc/charging", "over_temperature --module 0 --channel 0 --value 50", "charging",
            (C.CELL_OVERTEMP_CHARGE,), "fault", temp_above(otc.threshold),
            f"true cell temperature > {otc.threshold:g} °C", otc.delay_s, timeout_s=25.0,
            reps=1, temperature=True),
        Row("otd/discharging", "over_temperature --module 1 --channel 1 --value 64",
            "discharging", (C.CELL_OVERTEMP_DISCHARGE,), "fault", temp_above(otd.threshold),
            f"true cell temperature > {otd.threshold:g} °C", otd.delay_s, timeout_s=30.0,
            reps=1, temperature=True),
        Row("utc/charging", "under_temperature --module 0 --channel 1 --value -3", "charging",
            (C.CELL_UNDERTEMP_CHARGE,), "fault", temp_below(utc.threshold),
            f"true cell temperature < {utc.threshold:g} °C", utc.delay_s, timeout_s=25.0,
            reps=1, temperature=True),
        Row("utd/discharging", "under_temperature --module 1 --channel 0 --value -23",
            "discharging", (C.CELL_UNDERTEMP_DISCHARGE,), "fault", temp_below(utd.threshold),
            f"true cell temperature < {utd.threshold:g} °C", utd.delay_s, timeout_s=35.0,
            reps=1, temperature=True),
        Row("spread/closed_idle", "over_temperature --module 0 --channel 0 --value 44",
            "closed_idle", (C.TEMPERATURE_SPREAD,), "alarm", temp_spread_above(spread_c),
            f"true sensor spread > {spread_c:g} °C", None, timeout_s=25.0, reps=1,
            temperature=True),
        Row("chg_oc/charging", f"(load profile {OVERCURRENT_A:g} A; inverter_ignores_limits)",
            "charging", (C.CHARGE_OVERCURRENT,), "fault", current_above(chg.threshold),
            f"true current > {chg.threshold:g} A", chg.delay_s, quick=True),
        Row("dis_oc/discharging",
            f"(load profile -{OVERCURRENT_A:g} A; inverter_ignores_limits)", "discharging",
            (C.DISCHARGE_OVERCURRENT,), "fault", current_above(dis.threshold),
            f"true current > {dis.threshold:g} A", dis.delay_s),
        Row("open_wire/closed_idle", "open_wire --module 1 --channel 3", "closed_idle",
            (C.OPEN_WIRE,), "fault", "injection", "injection", hides_cells_s),
        Row("open_wire/standby", "open_wire --module 0 --channel 2", "standby",
            (C.OPEN_WIRE,), "fault", "injection", "injection", hides_cells_s, reps=1,
            note="standby: the boards are sampled every 2 s"),
        Row("sensor_fault/discharging", "open_wire --module 0 --channel 1 --target temp",
            "discharging", (C.SENSOR_FAULT,), "fault", "injection", "injection", hides_all_s,
            note="an open temperature sensor: the board sets its sensor-fault bit"),
        Row("out_of_range/closed_idle", "noisy_channel --module 1 --channel 1 --value 3.0",
            "closed_idle", (C.MEASUREMENT_OUT_OF_RANGE,), "fault", "injection", "injection",
            hides_all_s, reps=1, note="3 V of noise on one cell: readings outside 1.00-4.95 V"),
        Row("stuck_cell/charging", "stuck_sensor --module 0 --channel 3", "charging",
            (C.STUCK_CELL_VOLTAGE_CHANNEL,), "fault", "injection", "injection", None,
            timeout_s=30.0, reps=1),
        Row("board_dropout/closed_idle", "board_dropout --module 1", "closed_idle",
            (C.COMMUNICATION_LOSS,), "fault", "injection", "injection", comm_s, quick=True,
            note="delay: module_timeout_periods samples, then the ride-through"),
        Row("board_dropout/standby", "board_dropout --module 0", "standby",
            (C.COMMUNICATION_LOSS,), "fault", "injection", "injection", comm_standby_s,
            timeout_s=30.0, reps=1, note="standby: the boards are sampled every 2 s"),
        Row("current_dropout/discharging", "current_dropout", "discharging",
            (C.CURRENT_SENSOR_FAILURE,), "fault", "injection", "injection",
            min(chg.delay_s, dis.delay_s),
            note=f"delay: after the sensor's stale time ({stale_s:g} s)"),
        Row("offset_open/standby", "current_offset --value 5", "standby",
            (C.CURRENT_ON_OPEN_STRING,), "fault", "injection", "injection",
            p.open_string_delay_s, reps=1),
        Row("offset_small/standby", "current_offset --value 0.8", "standby",
            (C.CURRENT_OFFSET_HIGH,), "warning", "injection", "injection",
            p.current_offset_window_s, timeout_s=30.0, reps=1),
        Row("insulation/closed_idle", f"insulation_fault --value {INSULATION_FAULT_OHM:g}",
            "closed_idle", (C.INSULATION_LOW,), "fault", "injection", "injection",
            INSULATION_DELAYS_S[1], timeout_s=30.0, reps=1,
            note="the iso165C reports the resistance in its next cycles; then the fault delay"),
        Row("u1_offset/closed_idle", f"voltage_offset --value {U1_OFFSET_V:g}", "closed_idle",
            (C.PACK_VOLTAGE_PLAUSIBILITY,), "fault", "injection", "injection",
            p.pack_plausibility_delay_s, reps=1,
            note=f"U1 {U1_OFFSET_V:g} V off the sum of the cells (tolerance "
            f"{p.pack_plausibility_tolerance_v:g} V)"),
        Row("iso_silent/closed_idle", "insulation_monitor_silent", "closed_idle",
            (C.INSULATION_MONITOR_FAILURE,), "fault", "injection", "injection",
            p.insulation_monitor_timeout_s, timeout_s=40.0, reps=1,
            note="delay: no good reading for insulation_monitor_timeout_s, counted from the "
            "last info frame (stale after insulation_monitor.can.stale_after_s)"),
        Row("feedback_open/closed_idle", "feedback_stuck --contactor main_positive --value 0",
            "closed_idle", (C.CONTACTOR_FEEDBACK_MISMATCH,), "fault", "injection", "injection",
            config.contactors.feedback_timeout_s, reps=1),
        Row("weld/discharging", "contactor_weld --contactor main_positive", "discharging",
            (C.CONTACTOR_WELDED, C.CONTACTOR_FEEDBACK_MISMATCH), "fault", "open_command",
            "the open command after the weld", config.contactors.feedback_timeout_s, reps=1,
            note="welded while closed, then an operator open command: the coils drop on the "
            "command itself, so only detection is timed"),
        Row("precharge_short/precharge", "precharge_short", "precharge",
            (C.PRECHARGE_FAILURE,), "fault", "precharge_start",
            "the precharge coil's first on-write", None, timeout_s=30.0, reps=1,
            note="reaction: to the precharge coil's first off-write (the try aborted)"),
        Row("relay_silent/closed_idle", "(relay module answers nothing)", "closed_idle",
            (C.CONTACTOR_IO_FAILURE,), "fault", "injection", "the module falls silent",
            p.contactor_io_timeout_s, reps=1,
            note="no plant inject command yet: the bench sets the simulated module silent; "
            "the coil-off write still reaches it"),
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

    def arm(self, probe: Probe | None) -> None:
        self.onset = None
        self.applied.clear()
        self.probe = probe

    def tick(self, now_s: float) -> None:
        super().tick(now_s)
        core = self.core
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
        self.applied[d.message.fault] = (self.monotonic(), self.wall())

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
        done = threading.Event()
        box: list[CommandReply | None] = []

        def got(reply: CommandReply | None) -> None:
            box.append(reply)
            done.set()

        self.client.send(name, args, on_reply=got)
        done.wait(6.0)
        self.client.expire()
        return box[0] if box else None

    def inject(self, control: PlantControl) -> None:
        self.bus.publish(PLANT_CONTROL, control.model_copy(update={"expires_at": time.time() + 10}))

    def coils(self) -> list[bool]:
        io = self.config.contactors.io
        values = self.plant.relay.module.coils()
        return [values[getattr(io, f"coil_{name}")] for name in CONTACTORS]

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
        """Bring the stack into `state` (for precharge: working with the contactors open)."""
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

    def run_rep(self, row: Row) -> Rep:
        s = self.s
        probe = row.onset if callable(row.onset) else None
        s.plant.arm(probe)
        t_start = time.monotonic()
        wall_start = time.time()
        onset: tuple[float, float] | None = None
        for control in row.controls():
            s.inject(control)
        if row.fault.startswith("(load profile"):
            sign = -1.0 if row.state == "discharging" else 1.0
            s.plant.set_profile_a(sign * OVERCURRENT_A)
        elif row.fault.startswith("(relay module"):
            s.plant.relay.module.silent = True
            onset = (time.monotonic(), time.time())
        if row.onset == "open_command":
            wait_until(lambda: "contactor_weld" in s.plant.applied, 5)
            time.sleep(0.3)
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
        rep = Rep(reaction_s=None, detection_s=None)
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
                rep.reaction_s = self._reaction(onset[0], row)
        rep.reached, rep.safe = self._safe(row)
        self.log(
            f"  {row.id}: detected {sorted(rep.detected)} level {rep.level} reaction "
            f"{rep.reaction_s} detection {rep.detection_s} safe {rep.reached} "
            f"(onset {'yes' if onset else 'none'})"
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

    def _reaction(self, onset_s: float, row: Row) -> float | None:
        writes = self.s.coil_writes()
        on: dict[int, bool] = {}
        for t, coil, value in writes:
            if t < onset_s:
                on[coil] = value
        lit = {c for c, v in on.items() if v}
        if not lit:
            return None
        first = next((t for t, c, v in writes if t >= onset_s and c in lit and not v), None)
        return None if first is None else first - onset_s

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
        service = any(SPECS[c].reset == "service" for c in row.expected)
        args: ResetFaultsArgs = (
            ServiceResetArgs(service_override=ServiceOverride(user="matrix",
                                                              reason="fault matrix bench"))
            if service else ResetFaultsArgs()
        )  # fmt: skip
        command = "service_reset" if service else "reset_faults"
        time.sleep(0.5)

        def reset() -> bool:
            st = s.latest()
            if st is not None and not st.faults and st.contactors != "fault":
                return True
            s.command(command, args)
            time.sleep(0.5)
            return False

        return wait_until(reset, 40, step_s=0.5)

    def run_row(self, row: Row, reps: int) -> RowResult:
        self.log(f"{row.id}: {row.fault} in {row.state}")
        results: list[Rep] = []
        for _ in range(reps):
            if not self.establish(row.state):
                self.log(f"  could not establish {row.state} (contactors {self.s.contactors()})")
                break
            results.append(self.run_rep(row))
            if not self.recover(row):
                self.log(f"  reset did not clear: {self.s.latest()}")
        return summarise(row, results)


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


def summarise(row: Row, reps: list[Rep]) -> RowResult:
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
        fault=row.fault,
        state=row.state,
        expected=list(row.expected),
        level=row.level,
        onset=row.onset_text,
        configured_delay_s=row.delay_s,
        repetitions=max(len(reps), 1),
        detected=detected,
        detected_level=top(levels),
        reaction=_stats([r.reaction_s for r in reps if r.reaction_s is not None]),
        detection=_stats([r.detection_s for r in reps if r.detection_s is not None]),
        safe_state=last,
        reached_safe_state=reached,
        status="ok" if hit and reached else ("unsafe" if hit else "not_detected"),
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
            print(f"{r.id:32} {r.state:12} {r.fault}")
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
        "relay polled 50 ms",
        duration_s=round(time.monotonic() - start),
        rows=results,
    )
    dump(out, args.out)
    gaps = [r.id for r in results if r.status != "ok" and r.id in KNOWN_GAPS]
    bad = [r.id for r in results if r.status != "ok" and r.id not in KNOWN_GAPS]
    fixed = [r.id for r in results if r.status == "ok" and r.id in KNOWN_GAPS]
    print(
        f"{len(results)} rows in {out.duration_s:.0f} s; known gaps: {gaps or 'none'}; "
        f"not ok: {bad or 'none'}; gaps now closed (drop from KNOWN_GAPS): {fixed or 'none'}"
    )
    return 0 if not bad else 2


if __name__ == "__main__":
    sys.exit(main())
